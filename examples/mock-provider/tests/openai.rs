//! OpenAI-compatible endpoints against the recorded OpenAI fixtures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_same_key_order, assert_same_keys, client, openai_fixture, parse_sse, reply, tokens, Server, Sse};
use futures::StreamExt;
use serde_json::{json, Value};

async fn post_json(server: &Server, path: &str, body: &Value) -> reqwest::Response {
    client().post(server.url(path)).json(body).send().await.unwrap()
}

/// Mirrors the mock's max-tokens rule: at most `max * 4` chars.
fn capped(text: &str, max: u64) -> (String, bool) {
    if tokens(text) > max {
        (text.chars().take((max * 4) as usize).collect(), true)
    } else {
        (text.to_owned(), false)
    }
}

fn data_events(text: &str) -> (Vec<Value>, Vec<Sse>) {
    let events = parse_sse(text);
    assert!(events.iter().all(|e| e.event.is_none()), "OpenAI streams carry data lines only");
    let (done, chunks) = events.split_last().expect("events");
    assert_eq!(done.data, "[DONE]", "stream ends with data: [DONE]");
    (chunks.iter().map(Sse::json).collect(), chunks.to_vec())
}

#[tokio::test]
async fn chat_json_echoes_prompt_with_consistent_usage_and_fixture_shape() {
    let server = Server::default().await;
    let (fixture_req, fixture_resp) = openai_fixture("chat-basic.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    let resp = client()
        .post(server.url("/v1/chat/completions"))
        .header("x-request-id", "req-123")
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-mock-provider"], "mock");
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let body: Value = resp.json().await.unwrap();

    let expected = reply("Hello!");
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-5-nano", "the requested model is echoed");
    assert!(body["system_fingerprint"].is_null());
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() == "chatcmpl-".len() + 29, "{id}");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], tokens(&expected));
    assert_eq!(body["usage"]["total_tokens"], 2 + tokens(&expected));

    let fixture: Value = serde_json::from_str(&fixture_resp).unwrap();
    assert_same_keys("chat.completion", &body, &fixture);

    // Ids are unique per response.
    let again: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_ne!(again["id"], body["id"]);
    assert_eq!(again["choices"][0]["message"]["content"], expected.as_str());
}

#[tokio::test]
async fn chat_counts_every_text_segment_and_echoes_the_last_user_turn() {
    let server = Server::default().await;
    let req = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}, {"type": "text", "text": "Quick."}]}
        ]
    });
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    let expected = reply("And 3+3?\nQuick.");
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
    let prompt =
        tokens("You are terse.") + tokens("What is 2+2?") + tokens("4") + tokens("And 3+3?") + tokens("Quick.");
    assert_eq!(prompt, 12);
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    assert_eq!(body["usage"]["completion_tokens"], tokens(&expected));
}

#[tokio::test]
async fn chat_truncates_long_prompts_on_char_boundaries() {
    let server = Server::default().await;
    let long = "ü".repeat(500);
    let req = json!({"model": "m", "messages": [{"role": "user", "content": long}]});
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, reply(&"ü".repeat(200)));
    assert_eq!(body["usage"]["prompt_tokens"], 125);
    assert_eq!(body["usage"]["completion_tokens"], tokens(content));
}

#[tokio::test]
async fn chat_honours_max_tokens_with_finish_reason_length() {
    let server = Server::default().await;
    for key in ["max_tokens", "max_completion_tokens"] {
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "tell me a long story"}], key: 3});
        let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Mock reply t", "{key}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 3);
    }
    // A generous cap changes nothing.
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000});
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // Stop sequences cut the reply with finish_reason "stop".
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "alpha beta"}], "stop": ["beta"]});
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Mock reply to: alpha ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // Invalid caps are rejected in OpenAI's shape.
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0});
    let resp = post_json(&server, "/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "integer_below_min_value");
    assert_eq!(body["error"]["param"], "max_tokens");
}

#[tokio::test]
async fn chat_stream_matches_fixture_framing_without_usage() {
    let server = Server::default().await;
    let (fixture_req, fixture_resp) = openai_fixture("chat-streaming.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    let resp = post_json(&server, "/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(!text.contains("\"usage\""), "no usage without stream_options.include_usage");
    let (chunks, raw) = data_events(&text);
    let (fx_chunks, fx_raw) = data_events(&fixture_resp);

    let expected = reply("Hello!");
    assert!(chunks.len() >= 5, "role chunk, word chunks, finish chunk: {}", chunks.len());
    let first = &chunks[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
    let content: String =
        chunks[1..chunks.len() - 1].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
    assert_eq!(content, expected);
    assert_eq!(chunks.len() - 2, expected.split_whitespace().count(), "one chunk per word");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    for c in &chunks {
        assert_eq!(c["id"], first["id"]);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-5-nano");
    }
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["choices"][0]["finish_reason"].is_null());
    }

    // Same keys in the same wire order as the recorded chunks of each kind.
    assert_same_key_order("role chunk", &raw[0].data, &fx_raw[0].data);
    assert_same_key_order("content chunk", &raw[1].data, &fx_raw[1].data);
    assert_same_key_order("finish chunk", &raw[raw.len() - 1].data, &fx_raw[fx_raw.len() - 1].data);
    assert_same_keys("finish chunk", last, fx_chunks.last().unwrap());
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_with_a_usage_chunk() {
    let server = Server::default().await;
    let (fixture_req, fixture_resp) = openai_fixture("chat-streaming-detailed-usage.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    assert_eq!(req["stream_options"]["include_usage"], true);
    let text = post_json(&server, "/v1/chat/completions", &req).await.text().await.unwrap();
    let (chunks, raw) = data_events(&text);
    let (_, fx_raw) = data_events(&fixture_resp);

    // Only a developer message: it is what gets echoed.
    let expected = reply("Hello, I'm a developer!");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], tokens("Hello, I'm a developer!"));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], tokens(&expected));
    assert_eq!(usage_chunk["usage"]["total_tokens"], tokens("Hello, I'm a developer!") + tokens(&expected));
    for c in &chunks[..chunks.len() - 1] {
        assert!(c.get("usage").is_some_and(Value::is_null), "usage: null on every other chunk: {c}");
    }
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let content: String =
        chunks[1..chunks.len() - 2].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
    assert_eq!(content, expected);

    assert_same_key_order("role chunk", &raw[0].data, &fx_raw[0].data);
    assert_same_key_order("finish chunk", &raw[raw.len() - 2].data, &fx_raw[fx_raw.len() - 2].data);
    assert_same_key_order("usage chunk", &raw[raw.len() - 1].data, &fx_raw[fx_raw.len() - 1].data);

    // include_usage false behaves like no stream_options.
    let mut off = req.clone();
    off["stream_options"]["include_usage"] = json!(false);
    let text = post_json(&server, "/v1/chat/completions", &off).await.text().await.unwrap();
    assert!(!text.contains("\"usage\""));
}

#[tokio::test]
async fn chat_stream_respects_chunk_delay_with_separate_body_chunks() {
    let server = Server::default().await;
    let req = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});
    let start = Instant::now();
    let resp = client()
        .post(server.url("/v1/chat/completions"))
        .header("x-mock-chunk-delay-ms", "40")
        .json(&req)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(start.elapsed());
        text.extend_from_slice(&chunk);
    }
    let frames = parse_sse(std::str::from_utf8(&text).unwrap()).len();
    // role + 6 words + finish + [DONE]
    assert_eq!(frames, 9);
    assert!(arrivals.len() >= 5, "body arrived in {} pieces", arrivals.len());
    let elapsed = *arrivals.last().unwrap();
    assert!(elapsed >= Duration::from_millis(40 * 8), "{elapsed:?}");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(200), "chunks were spread over time: {spread:?}");
}

fn weather_tools() -> Value {
    let (fixture_req, _) = openai_fixture("chat-tools.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    req["tools"].clone()
}

#[tokio::test]
async fn chat_tool_call_when_the_user_mentions_tool() {
    let server = Server::default().await;
    let (fixture_req, fixture_resp) = openai_fixture("chat-tools.yaml");
    let mut req: Value = serde_json::from_str(&fixture_req).unwrap();

    // The recorded prompt does not say "tool": a text answer.
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());

    let prompt = "Use the weather TOOL for Boston";
    req["messages"][0]["content"] = json!(prompt);
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let message = &body["choices"][0]["message"];
    assert!(message["content"].is_null());
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_current_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments = call["function"]["arguments"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(arguments).unwrap(), json!({"query": prompt}));
    assert_eq!(body["usage"]["completion_tokens"], tokens(arguments));
    let fixture: Value = serde_json::from_str(&fixture_resp).unwrap();
    assert_same_keys("tool call completion", &body, &fixture);
}

#[tokio::test]
async fn chat_tool_choice_rules() {
    let server = Server::default().await;
    let tools = weather_tools();
    let ask = |content: &str, choice: Option<Value>| {
        let mut req = json!({"model": "m", "tools": tools.clone(), "messages": [{"role": "user", "content": content}]});
        if let Some(c) = choice {
            req["tool_choice"] = c;
        }
        req
    };
    let finish = |body: &Value| body["choices"][0]["finish_reason"].as_str().unwrap().to_owned();

    let body: Value =
        post_json(&server, "/v1/chat/completions", &ask("use a tool", Some(json!("none")))).await.json().await.unwrap();
    assert_eq!(finish(&body), "stop", "tool_choice none never calls");
    let body: Value =
        post_json(&server, "/v1/chat/completions", &ask("hello", Some(json!("required")))).await.json().await.unwrap();
    assert_eq!(finish(&body), "tool_calls", "tool_choice required always calls");
    let named = json!({"type": "function", "function": {"name": "other_fn"}});
    let body: Value =
        post_json(&server, "/v1/chat/completions", &ask("hello", Some(named))).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "other_fn");

    // After the tool result comes back, the mock answers in text.
    let req = json!({
        "model": "m", "tools": tools,
        "messages": [
            {"role": "user", "content": "use the tool please"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"query\":\"x\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]
    });
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(finish(&body), "stop");
    assert_eq!(body["choices"][0]["message"]["content"], reply("use the tool please").as_str());
    let prompt = tokens("use the tool please") + tokens("{\"query\":\"x\"}") + tokens("sunny");
    assert_eq!(body["usage"]["prompt_tokens"], prompt);

    // No tools offered: plain text even when "tool" is said.
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "tool"}]});
    let body: Value = post_json(&server, "/v1/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(finish(&body), "stop");
}

#[tokio::test]
async fn chat_tool_call_streams_arguments_in_pieces() {
    let server = Server::default().await;
    let prompt = "please call a tool";
    let req = json!({
        "model": "m", "stream": true, "stream_options": {"include_usage": true},
        "tools": weather_tools(),
        "messages": [{"role": "user", "content": prompt}]
    });
    let text = post_json(&server, "/v1/chat/completions", &req).await.text().await.unwrap();
    let (chunks, _) = data_events(&text);
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(first["content"].is_null());
    let call = &first["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_current_weather");
    assert_eq!(call["function"]["arguments"], "");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));

    let pieces: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert!(pieces.len() >= 2, "arguments streamed in {} pieces", pieces.len());
    let arguments = pieces.concat();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"query": prompt}));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], tokens(&arguments));
}

#[tokio::test]
async fn chat_errors_are_openai_shaped() {
    let server = Server::default().await;
    let shape = |body: &Value| {
        let keys: Vec<&str> = body["error"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{body}");
        for k in ["message", "type", "param", "code"] {
            assert!(body["error"].get(k).is_some(), "{k} in {body}");
        }
        assert_eq!(body["error"]["type"], "invalid_request_error");
    };

    let resp = client()
        .post(server.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-mock-provider"], "mock");
    shape(&resp.json().await.unwrap());

    let resp =
        post_json(&server, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    shape(&body);
    assert!(body["error"]["message"].as_str().unwrap().contains("model"));

    let resp = post_json(&server, "/v1/chat/completions", &json!({"model": "m"})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    shape(&body);
    assert_eq!(body["error"]["param"], "messages");

    // Empty messages: exactly the recorded OpenAI error.
    let (fixture_req, fixture_resp) = openai_fixture("chat-no-messages.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    let resp = post_json(&server, "/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::from_str::<Value>(&fixture_resp).unwrap());

    // Unknown paths get OpenAI's 404 shape.
    let resp = post_json(&server, "/v1/nope", &json!({})).await;
    assert_eq!(resp.status(), 404);
    let (_, unknown_model) = openai_fixture("chat-unknown-model.yaml");
    assert_same_keys("404", &resp.json().await.unwrap(), &serde_json::from_str(&unknown_model).unwrap());
}

#[tokio::test]
async fn completions_json_and_stream_match_fixtures() {
    let server = Server::default().await;
    let (fixture_req, fixture_resp) = openai_fixture("completion-basic.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    let prompt = req["prompt"].as_str().unwrap().to_owned();
    let max = req["max_tokens"].as_u64().unwrap();
    let (expected, cut) = capped(&reply(&prompt), max);

    let body: Value = post_json(&server, "/v1/completions", &req).await.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["choices"][0]["text"], expected.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], if cut { "length" } else { "stop" });
    assert_eq!(body["usage"]["prompt_tokens"], tokens(&prompt));
    assert_eq!(body["usage"]["completion_tokens"], tokens(&expected));
    assert_eq!(body["usage"]["total_tokens"], tokens(&prompt) + tokens(&expected));
    assert_same_keys("text_completion", &body, &serde_json::from_str(&fixture_resp).unwrap());

    // Streamed, without and with usage.
    let (stream_req, stream_resp) = openai_fixture("completion-streaming.yaml");
    let text =
        post_json(&server, "/v1/completions", &serde_json::from_str(&stream_req).unwrap()).await.text().await.unwrap();
    let (chunks, raw) = data_events(&text);
    let (_, fx_raw) = data_events(&stream_resp);
    assert!(chunks.len() >= 4);
    let streamed: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, expected);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], if cut { "length" } else { "stop" });
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert!(!text.contains("\"usage\""));
    assert_same_key_order("completion chunk", &raw[0].data, &fx_raw[0].data);

    let (usage_req, usage_resp) = openai_fixture("completion-streaming-usage.yaml");
    let text =
        post_json(&server, "/v1/completions", &serde_json::from_str(&usage_req).unwrap()).await.text().await.unwrap();
    let (chunks, raw) = data_events(&text);
    let (_, fx_raw) = data_events(&usage_resp);
    assert_same_key_order("completion chunk with usage", &raw[0].data, &fx_raw[0].data);
    assert_same_key_order("completion usage chunk", &raw[raw.len() - 1].data, &fx_raw[fx_raw.len() - 1].data);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], tokens(&expected));
    assert_eq!(usage["prompt_tokens"], tokens(&prompt));
}

#[tokio::test]
async fn completions_batch_prompts_get_one_choice_each() {
    let server = Server::default().await;
    let req = json!({"model": "m", "prompt": ["first one", "second"]});
    let body: Value = post_json(&server, "/v1/completions", &req).await.json().await.unwrap();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["text"], reply("first one").as_str());
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["text"], reply("second").as_str());
    assert_eq!(body["usage"]["prompt_tokens"], tokens("first one") + tokens("second"));
    assert_eq!(body["usage"]["completion_tokens"], tokens(&reply("first one")) + tokens(&reply("second")));

    let resp = post_json(&server, "/v1/completions", &json!({"model": "m"})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "prompt");
}

fn f32s_from_base64(text: &str) -> Vec<f32> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[tokio::test]
async fn embeddings_are_deterministic_and_fixture_shaped() {
    let server = Server::default().await;
    let (fixture_req, fixture_resp) = openai_fixture("embeddings-basic.yaml");
    let req: Value = serde_json::from_str(&fixture_req).unwrap();
    let body: Value = post_json(&server, "/v1/embeddings", &req).await.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    let vector: Vec<f64> =
        body["data"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(vector.len(), 8);
    let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "unit length: {norm}");
    // The recorded usage happens to match the mock's estimate (27 chars -> 7).
    let fixture: Value = serde_json::from_str(&fixture_resp).unwrap();
    assert_eq!(body["usage"], fixture["usage"]);
    assert_same_keys("embeddings", &body, &fixture);

    let again: Value = post_json(&server, "/v1/embeddings", &req).await.json().await.unwrap();
    assert_eq!(again["data"], body["data"], "deterministic");
    let other: Value =
        post_json(&server, "/v1/embeddings", &json!({"model": "e", "input": "How do I reset my passwort?"}))
            .await
            .json()
            .await
            .unwrap();
    assert_ne!(other["data"][0]["embedding"], body["data"][0]["embedding"]);

    // base64: the same floats, little-endian.
    let (b64_req, b64_resp) = openai_fixture("embeddings-base64.yaml");
    let b64: Value =
        post_json(&server, "/v1/embeddings", &serde_json::from_str(&b64_req).unwrap()).await.json().await.unwrap();
    assert_same_keys("embeddings base64", &b64, &serde_json::from_str(&b64_resp).unwrap());
    let decoded = f32s_from_base64(b64["data"][0]["embedding"].as_str().unwrap());
    let floats: Vec<f32> = vector.iter().map(|x| *x as f32).collect();
    assert_eq!(decoded, floats);

    // Batches, dimensions, errors.
    let batch: Value =
        post_json(&server, "/v1/embeddings", &json!({"model": "e", "input": ["a", "bcdef"], "dimensions": 16}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(batch["data"].as_array().unwrap().len(), 2);
    assert_eq!(batch["data"][1]["index"], 1);
    assert_eq!(batch["data"][1]["embedding"].as_array().unwrap().len(), 16);
    assert_eq!(batch["usage"]["prompt_tokens"], 3);
    let resp = post_json(&server, "/v1/embeddings", &json!({"model": "e", "input": "x", "dimensions": -1})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "-1 is less than the minimum of 1 - 'dimensions'");
    let resp =
        post_json(&server, "/v1/embeddings", &json!({"model": "e", "input": "x", "encoding_format": "hex"})).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn responses_api_json_and_stream() {
    let server = Server::default().await;
    let req = json!({"model": "gpt-x", "instructions": "Be brief.", "input": "Say hi"});
    let body: Value = post_json(&server, "/v1/responses", &req).await.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    let item = &body["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    let expected = reply("Say hi");
    assert_eq!(item["content"][0]["text"], expected.as_str());
    assert_eq!(body["usage"]["input_tokens"], tokens("Say hi") + tokens("Be brief."));
    assert_eq!(body["usage"]["output_tokens"], tokens(&expected));
    assert_eq!(body["usage"]["total_tokens"], tokens("Say hi") + tokens("Be brief.") + tokens(&expected));

    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    let text = post_json(&server, "/v1/responses", &stream_req).await.text().await.unwrap();
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        names[names.len() - 4..],
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    );
    let deltas: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, expected);
    for (i, e) in events.iter().enumerate() {
        let j = e.json();
        assert_eq!(j["type"], e.event.as_deref().unwrap());
        assert_eq!(j["sequence_number"], i);
    }
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["usage"]["output_tokens"], tokens(&expected));

    // A function tool call.
    let req = json!({"model": "gpt-x", "input": [{"role": "user", "content": "use a tool"}],
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]});
    let body: Value = post_json(&server, "/v1/responses", &req).await.json().await.unwrap();
    assert_eq!(body["output"][0]["type"], "function_call");
    assert_eq!(body["output"][0]["name"], "lookup");
    let args: Value = serde_json::from_str(body["output"][0]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "use a tool"}));

    // Streamed: argument deltas in pieces, then the finished item.
    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    let events = parse_sse(&post_json(&server, "/v1/responses", &stream_req).await.text().await.unwrap());
    let pieces: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert!(pieces.len() >= 2);
    assert_eq!(serde_json::from_str::<Value>(&pieces.concat()).unwrap(), json!({"query": "use a tool"}));
    let done = events.last().unwrap().json();
    assert_eq!(done["type"], "response.completed");
    assert_eq!(done["response"]["output"][0]["type"], "function_call");
    // Wire order: type and sequence_number first.
    let order = common::key_orders(&events[3].data);
    assert_eq!(order[""][..2], ["type".to_owned(), "sequence_number".to_owned()]);

    // max_output_tokens: an incomplete response.
    let req = json!({"model": "m", "input": "a long question here", "max_output_tokens": 2});
    let body: Value = post_json(&server, "/v1/responses", &req).await.json().await.unwrap();
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(body["output"][0]["content"][0]["text"], "Mock rep");
    assert_eq!(body["usage"]["output_tokens"], 2);

    let resp = post_json(&server, "/v1/responses", &json!({"model": "m"})).await;
    assert_eq!(resp.status(), 400);
}
