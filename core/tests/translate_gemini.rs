//! OpenAI and Anthropic clients served by a Gemini model: requests into
//! Gemini's `generateContent` body, Gemini answers (whole, streamed, errors)
//! back into the client's shape, the routing that picks Gemini, and usage.
//! The Gemini payloads follow the shapes of the Gemini API reference
//! (https://ai.google.dev/api/generate-content).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollgate_core::policy::Policy;
use tollgate_core::translate::{openai_to_gemini, Direction};
use tollgate_core::{usage_from_json, ApiKind, SseEvent, StreamUsage, Usage};

fn event(data: &Value) -> SseEvent {
    SseEvent { event: None, data: data.to_string(), id: None }
}

fn json_of(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap_or(Value::Null)
}

fn translate_stream(dir: Direction, events: &[Value]) -> Vec<SseEvent> {
    let mut t = dir.stream("client-model");
    let mut out: Vec<SseEvent> = events.iter().flat_map(|e| t.push(&event(e))).collect();
    out.extend(t.finish());
    assert!(t.finish().is_empty(), "a finished stream adds nothing");
    out
}

#[test]
fn an_openai_request_becomes_a_generate_content_body() {
    let req = json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and what is the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0_ts_c2lnbmF0dXJl", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_x", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_0_ts_c2lnbmF0dXJl", "content": "{\"temp_c\": 21}"},
            {"role": "tool", "tool_call_id": "call_x", "content": "noon"},
            {"role": "user", "content": "Thanks. And tomorrow?"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": false}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 1.5, "top_p": 0.9, "max_completion_tokens": 200, "stop": "END", "seed": 7, "n": 2,
        "presence_penalty": 0.5, "frequency_penalty": 0.25,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "stream": true, "stream_options": {"include_usage": true}, "user": "u-1", "parallel_tool_calls": false
    });
    let out = Direction::OpenAiToGemini.request(&req, "gemini-2.5-flash").unwrap();
    assert_eq!(
        out,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this picture, and what is the weather in Paris?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
                    {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
                    {"text": "Thanks. And tomorrow?"}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
            "tools": [{"functionDeclarations": [{
                "name": "get_weather", "description": "Weather for a city",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                         "required": ["city"], "additionalProperties": false}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "temperature": 1.5, "topP": 0.9, "presencePenalty": 0.5, "frequencyPenalty": 0.25, "seed": 7,
                "maxOutputTokens": 200, "candidateCount": 2, "stopSequences": ["END"],
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}
            }
        })
    );
}

#[test]
fn requests_gemini_cannot_take_are_refused_naming_the_field() {
    let base = |extra: Value| {
        let mut req = json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    };
    for (extra, field) in [
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"functions": []}), "functions"),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (json!({"n": 0}), "n"),
        (json!({"response_format": {"type": "xml"}}), "response_format.type"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}), "messages[0].tool_call_id"),
        (json!({"messages": [{"role": "function", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": []}), "messages"),
    ] {
        let err = Direction::OpenAiToGemini.request(&base(extra.clone()), "m").unwrap_err().to_string();
        assert!(err.contains(&format!("`{field}")), "{extra}: {err}");
    }
    // Harmless hints are dropped, not refused; only system text becomes the user turn.
    let only_system = json!({"model": "m", "messages": [{"role": "system", "content": "Say hi"}],
        "logprobs": false, "logit_bias": {}, "reasoning_effort": "low"});
    let out = Direction::OpenAiToGemini.request(&only_system, "m").unwrap();
    assert_eq!(out, json!({"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}));
}

#[test]
fn a_gemini_answer_becomes_a_chat_completion() {
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Let me think.", "thought": true},
                {"text": "It is "}, {"text": "sunny."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "ab+/cd=="}
            ]},
            "finishReason": "STOP", "index": 0,
            "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}]
        }],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 22,
                          "thoughtsTokenCount": 7, "cachedContentTokenCount": 4},
        "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"
    });
    let out = Direction::OpenAiToGemini.response(&body, "gpt-alias").unwrap();
    assert_eq!(out["id"], "resp-1");
    assert_eq!(out["model"], "gpt-alias");
    let choice = &out["choices"][0];
    assert_eq!(choice["message"]["content"], "It is sunny.");
    assert_eq!(choice["message"]["reasoning_content"], "Let me think.");
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    // The thought signature survives the client's round trip in the id.
    let id = call["id"].as_str().unwrap();
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{id}");
    let back = json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}]});
    let req = Direction::OpenAiToGemini.request(&back, "m").unwrap();
    assert_eq!(req["contents"][1]["parts"][0]["thoughtSignature"], "ab+/cd==");
    assert_eq!(req["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
               "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 7}})
    );
    // The gateway's usage reading of the raw Gemini body agrees.
    let usage = usage_from_json(ApiKind::GeminiGenerate, body.to_string().as_bytes()).unwrap();
    assert_eq!(usage, Some(Usage { input_tokens: 10, output_tokens: 12, cached_tokens: 4, total_tokens: 22 }));
}

#[test]
fn finish_reasons_and_a_blocked_prompt_keep_the_client_shape() {
    for (reason, expected) in
        [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("OTHER", "stop")]
    {
        let body =
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]});
        let out = Direction::OpenAiToGemini.response(&body, "m").unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], expected, "{reason}");
    }
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                         "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}});
    let out = Direction::OpenAiToGemini.response(&blocked, "m").unwrap();
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert!(choice["message"]["refusal"].as_str().unwrap().contains("SAFETY"));
    // Through the Anthropic client's eyes: a refusal stop with no text.
    let anthropic = Direction::AnthropicToGemini.response(&blocked, "claude-alias").unwrap();
    assert_eq!(anthropic["type"], "message");
    assert_eq!(anthropic["stop_reason"], "refusal");
}

#[test]
fn gemini_errors_become_the_clients_errors() {
    let body = json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                                "status": "RESOURCE_EXHAUSTED"}});
    let openai = Direction::OpenAiToGemini.error(&body, 429);
    assert_eq!(openai["error"]["type"], "rate_limit_error");
    assert_eq!(openai["error"]["code"], "RESOURCE_EXHAUSTED");
    assert!(openai["error"]["message"].as_str().unwrap().contains("exhausted"));
    let anthropic = Direction::AnthropicToGemini.error(&body, 429);
    assert_eq!(anthropic["type"], "error");
    assert_eq!(anthropic["error"]["type"], "rate_limit_error");
    assert!(anthropic["error"]["message"].as_str().unwrap().contains("exhausted"));
    // An error body is not an answer.
    assert!(Direction::OpenAiToGemini.response(&body, "m").is_err());
}

fn gemini_stream() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "The weather"}]}, "index": 0}],
               "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "responseId": "r-9",
               "modelVersion": "gemini-2.5-flash"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " is"}, {"text": " fine."}]}, "index": 0}],
               "responseId": "r-9"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
                   {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
                               "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15},
               "responseId": "r-9"}),
    ]
}

#[test]
fn a_gemini_stream_becomes_chat_completion_chunks() {
    let out = translate_stream(Direction::OpenAiToGemini, &gemini_stream());
    let chunks: Vec<Value> = out.iter().map(json_of).collect();
    assert_eq!(out.last().unwrap().data, "[DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, "The weather is fine.");
    assert!(chunks.iter().all(|c| c["id"] == "r-9" || c == &Value::Null), "{chunks:?}");
    let call = chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).unwrap();
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 9);
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    // The meter reads the raw Gemini stream's usage: the last event's.
    let mut meter = StreamUsage::new(ApiKind::GeminiGenerate);
    for e in gemini_stream() {
        meter.observe(&event(&e));
    }
    assert_eq!(meter.usage(), Some(Usage { input_tokens: 9, output_tokens: 6, cached_tokens: 0, total_tokens: 15 }));
}

#[test]
fn a_gemini_stream_reaches_an_anthropic_client_as_messages_events() {
    let out = translate_stream(Direction::AnthropicToGemini, &gemini_stream());
    let names: Vec<&str> = out.iter().map(|e| e.event.as_deref().unwrap_or("")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let text: String = out
        .iter()
        .map(json_of)
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(text, "The weather is fine.");
    let tool = out.iter().map(json_of).find(|v| v["content_block"]["type"] == "tool_use").unwrap();
    assert_eq!(tool["content_block"]["name"], "get_weather");
    let delta = out.iter().map(json_of).find(|v| v["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 6);
}

#[test]
fn a_stream_error_or_a_cut_stream_still_ends_well_formed() {
    let error = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
    let out = translate_stream(Direction::OpenAiToGemini, &[gemini_stream()[0].clone(), error]);
    let last_two: Vec<&str> = out[out.len() - 2..].iter().map(|e| e.data.as_str()).collect();
    assert!(last_two[0].contains("overloaded") && last_two[0].contains("server_error"), "{last_two:?}");
    assert_eq!(last_two[1], "[DONE]");
    // No finishReason (the provider's stream was cut): a stop, the usage and [DONE].
    let out = translate_stream(Direction::OpenAiToGemini, &gemini_stream()[..1]);
    let finish = out.iter().map(json_of).find(|c| !c["choices"][0]["finish_reason"].is_null()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(out.last().unwrap().data, "[DONE]");
    // An Anthropic client gets an error event.
    let out = translate_stream(
        Direction::AnthropicToGemini,
        &[json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}})],
    );
    assert!(out.iter().any(|e| e.event.as_deref() == Some("error")), "{out:?}");
}

#[test]
fn an_anthropic_request_reaches_gemini_through_the_openai_shape() {
    let req = json!({
        "model": "gemini-2.5-pro", "max_tokens": 64, "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "stop_sequences": ["X"], "stream": true
    });
    let out = Direction::AnthropicToGemini.request(&req, "gemini-2.5-pro").unwrap();
    assert_eq!(out["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert_eq!(out["contents"], json!([{"role": "user", "parts": [{"text": "Hi"}]}]));
    assert_eq!(out["generationConfig"]["maxOutputTokens"], 64);
    assert_eq!(out["generationConfig"]["stopSequences"], json!(["X"]));
}

#[test]
fn gemini_models_route_to_a_gemini_provider_or_the_mock() {
    let policy = yaml(
        "providers:\n  g: {kind: gemini, baseUrl: 'https://generativelanguage.googleapis.com', keyEnv: GEMINI_API_KEY}\n  o: {kind: openai, baseUrl: 'https://api.openai.com'}\n",
    );
    let r = policy.route(ApiKind::OpenAiChat, "gemini-2.5-flash").unwrap();
    assert_eq!((r.provider, r.api), ("g", ApiKind::GeminiGenerate));
    assert_eq!(policy.translation(ApiKind::OpenAiChat, r.provider, r.api), Some(Direction::OpenAiToGemini));
    let r = policy.route(ApiKind::AnthropicMessages, "gemini-2.5-flash").unwrap();
    assert_eq!(policy.translation(ApiKind::AnthropicMessages, r.provider, r.api), Some(Direction::AnthropicToGemini));
    assert_eq!(policy.route(ApiKind::OpenAiChat, "gpt-4o").unwrap().provider, "o");
    // Embeddings are not translated: a Gemini model's goes to an OpenAI-API provider unchanged.
    assert_eq!(policy.route(ApiKind::OpenAiEmbeddings, "gemini-embedding-001").unwrap().provider, "o");
    let g = &policy.providers["g"];
    assert_eq!(
        g.request_path(ApiKind::GeminiGenerate, "models/gemini-2.5-flash", false),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        g.request_path(ApiKind::GeminiGenerate, "gemini-2.5-flash/../x?y", true),
        "/v1beta/models/gemini-2.5-flash..xy:streamGenerateContent?alt=sse"
    );
    let mock = yaml("providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}\n");
    assert_eq!(policy_reach(&mock, "gemini-2.5-flash"), Some(ApiKind::GeminiGenerate));
    assert_eq!(policy_reach(&mock, "gpt-4o"), Some(ApiKind::OpenAiChat));
}

fn yaml(s: &str) -> Policy {
    Policy::deserialize(serde_yaml_ng::Deserializer::from_str(s)).unwrap()
}

fn policy_reach(p: &Policy, model: &str) -> Option<ApiKind> {
    p.reach(ApiKind::OpenAiChat, "mock", model)
}

#[test]
fn unreadable_events_are_passed_over_not_invented() {
    let mut t = openai_to_gemini::StreamTranslator::new("m");
    assert!(t.push(&SseEvent { event: None, data: "not json".into(), id: None }).is_empty());
    assert!(t.push(&event(&json!({"candidates": []}))).is_empty());
    let end = t.finish();
    assert_eq!(end.last().unwrap().data, "[DONE]");
}
