//! An Anthropic client served by an OpenAI model: the recorded OpenAI chat
//! responses, whole and streamed, translated to Anthropic Messages shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{json, Value};
use tollgate_core::translate::anthropic_to_openai::{self, StreamTranslator};
use tollgate_core::{usage_from_json, ApiKind, SseEvent, StreamUsage, Usage};

const CLIENT_MODEL: &str = "claude-sonnet-4-5";

fn expected_stop(finish: &str) -> &'static str {
    match finish {
        "stop" => "end_turn",
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        other => panic!("unexpected finish reason {other}"),
    }
}

/// Text and tool calls (name, parsed input) of an Anthropic message.
fn message_content(msg: &Value) -> (String, Vec<(String, String, Value)>) {
    let mut text = String::new();
    let mut tools = Vec::new();
    for b in msg["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => text.push_str(b["text"].as_str().unwrap()),
            "tool_use" => {
                tools.push((b["id"].as_str().unwrap().into(), b["name"].as_str().unwrap().into(), b["input"].clone()))
            }
            other => panic!("unexpected block {other}"),
        }
    }
    (text, tools)
}

fn openai_tool_calls(message: &Value) -> Vec<(String, String, Value)> {
    message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["id"].as_str().unwrap().into(),
                c["function"]["name"].as_str().unwrap().into(),
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

fn check_json(name: &str) {
    let it = common::cassette(name);
    assert_eq!(it.response.code, 200);
    let src: Value = serde_json::from_str(&it.response.body).unwrap();
    let out = anthropic_to_openai::response(&src, CLIENT_MODEL).unwrap();
    assert_eq!(out["type"], "message", "{name}");
    assert_eq!(out["role"], "assistant", "{name}");
    assert_eq!(out["model"], CLIENT_MODEL, "{name}");
    assert_eq!(out["id"], src["id"], "{name}");
    assert!(out["stop_sequence"].is_null());
    let message = &src["choices"][0]["message"];
    let (text, tools) = message_content(&out);
    assert_eq!(text, message["content"].as_str().unwrap_or(""), "{name}");
    assert_eq!(tools, openai_tool_calls(message), "{name}");
    assert_eq!(out["stop_reason"], expected_stop(src["choices"][0]["finish_reason"].as_str().unwrap()), "{name}");
    let want = usage_from_json(ApiKind::OpenAiChat, it.response.body.as_bytes()).unwrap().unwrap();
    let got = usage_from_json(ApiKind::AnthropicMessages, out.to_string().as_bytes()).unwrap().unwrap();
    assert_eq!(got, want, "{name}");
}

#[test]
fn named_json_responses_translate() {
    for name in ["chat-basic", "chat-tools", "chat-parallel-tools", "chat-multiturn", "chat-multimodal"] {
        check_json(name);
    }
}

/// Every recorded 200 chat completion, whatever it exercised.
#[test]
fn every_recorded_chat_json_response_translates() {
    let mut checked = 0;
    for (name, c) in common::cassettes() {
        let it = &c.interactions[0];
        if it.response.code == 200
            && !it.response.is_sse()
            && common::api_for_url(&it.request.url) == Some(ApiKind::OpenAiChat)
        {
            check_json(&name);
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
}

#[test]
fn json_details() {
    let it = common::cassette("chat-tools");
    let out = anthropic_to_openai::response(&serde_json::from_str(&it.response.body).unwrap(), CLIENT_MODEL).unwrap();
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_8fxy20OEu9ulvvaa5b5CzVA4", "name": "get_current_weather",
                "input": {"location": "Boston, MA", "unit": "fahrenheit"}}])
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 162, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 287})
    );
    // Cached prompt tokens become cache reads, the rest input.
    let body = json!({"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi",
        "reasoning_content": "think"}, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105, "prompt_tokens_details": {"cached_tokens": 60}}});
    let out = anthropic_to_openai::response(&body, CLIENT_MODEL).unwrap();
    assert_eq!(out["usage"]["input_tokens"], 40);
    assert_eq!(out["usage"]["cache_read_input_tokens"], 60);
    assert_eq!(out["stop_reason"], "refusal");
    assert_eq!(out["content"][0], json!({"type": "thinking", "thinking": "think", "signature": ""}));
    assert_eq!(out["content"][1], json!({"type": "text", "text": "hi"}));
    // Bad tool arguments from the provider are an error, not a guess.
    let body = json!({"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}, "finish_reason": "tool_calls"}]});
    assert!(anthropic_to_openai::response(&body, CLIENT_MODEL).is_err());
}

#[test]
fn recorded_error_bodies_translate() {
    for (name, status, kind) in [
        ("chat-bad-request", 400, "invalid_request_error"),
        ("chat-no-messages", 400, "invalid_request_error"),
        ("chat-unknown-model", 404, "not_found_error"),
    ] {
        let it = common::cassette(name);
        assert_eq!(it.response.code, status, "{name}");
        let src: Value = serde_json::from_str(&it.response.body).unwrap();
        assert!(anthropic_to_openai::response(&src, CLIENT_MODEL).is_err(), "{name}");
        let out = anthropic_to_openai::error(&src, status);
        assert_eq!(out["type"], "error", "{name}");
        assert_eq!(out["error"]["type"], kind, "{name}");
        assert_eq!(out["error"]["message"], src["error"]["message"], "{name}");
    }
    let out = anthropic_to_openai::error(&json!({"error": {"message": "busy", "type": "server_error"}}), 529);
    assert_eq!(out, json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}));
}

// ---------------------------------------------------------------- streams

fn translate_stream(events: &[SseEvent]) -> Vec<SseEvent> {
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    let mut out = Vec::new();
    for e in events {
        out.extend(t.push(e));
    }
    out.extend(t.finish());
    let mut wire = Vec::new();
    for e in &out {
        e.write_to(&mut wire);
    }
    let pieces: Vec<&[u8]> = wire.chunks(3).collect();
    assert_eq!(common::parse_pieces(&pieces), out);
    out
}

#[derive(Debug, Default)]
struct Assembled {
    text: String,
    thinking: String,
    tools: Vec<(String, String, Value)>,
    stop_reason: String,
}

/// Check the event order Anthropic uses and assemble the message:
/// message_start, then per block start / deltas / stop with indices 0, 1, ...,
/// then message_delta and message_stop.
fn assemble(events: &[SseEvent]) -> Assembled {
    let mut a = Assembled::default();
    let mut tool_json: Vec<String> = Vec::new();
    let types: Vec<String> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(types.first().map(String::as_str), Some("message_start"), "{types:?}");
    assert_eq!(&types[types.len() - 2..], ["message_delta", "message_stop"], "{types:?}");
    let mut open: Option<u64> = None;
    let mut next = 0;
    let mut kinds = Vec::new();
    for e in events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"].as_str(), e.event.as_deref(), "event name equals data type");
        match v["type"].as_str().unwrap() {
            "message_start" => {
                assert_eq!(v["message"]["model"], CLIENT_MODEL);
                assert_eq!(v["message"]["content"], json!([]));
                assert!(v["message"]["usage"]["input_tokens"].is_u64());
            }
            "content_block_start" => {
                assert_eq!(open, None, "one block at a time");
                assert_eq!(v["index"], next);
                open = Some(next);
                next += 1;
                let block = &v["content_block"];
                kinds.push(block["type"].as_str().unwrap().to_owned());
                if block["type"] == "tool_use" {
                    a.tools.push((
                        block["id"].as_str().unwrap().into(),
                        block["name"].as_str().unwrap().into(),
                        json!({}),
                    ));
                    tool_json.push(String::new());
                }
            }
            "content_block_delta" => {
                assert_eq!(v["index"].as_u64(), open, "delta for the open block");
                let kind = &kinds[v["index"].as_u64().unwrap() as usize];
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        assert_eq!(kind, "text");
                        a.text.push_str(d["text"].as_str().unwrap())
                    }
                    "thinking_delta" => {
                        assert_eq!(kind, "thinking");
                        a.thinking.push_str(d["thinking"].as_str().unwrap())
                    }
                    "input_json_delta" => {
                        assert_eq!(kind, "tool_use");
                        tool_json.last_mut().unwrap().push_str(d["partial_json"].as_str().unwrap())
                    }
                    other => panic!("delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(v["index"].as_u64(), open);
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None, "blocks closed before message_delta");
                a.stop_reason = v["delta"]["stop_reason"].as_str().unwrap().into();
                assert!(v["usage"]["output_tokens"].is_u64());
            }
            "message_stop" => {}
            other => panic!("event {other}"),
        }
    }
    for (tool, json) in a.tools.iter_mut().zip(tool_json) {
        // A stream cut mid-arguments leaves partial JSON: kept raw.
        tool.2 = if json.is_empty() { json!({}) } else { serde_json::from_str(&json).unwrap_or(Value::String(json)) };
    }
    a
}

/// Content, tool calls and finish reason of an OpenAI chunk stream, read directly.
fn openai_stream_content(events: &[SseEvent]) -> (String, Vec<(String, String, Value)>, String) {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = String::new();
    for e in events.iter().filter(|e| !e.is_done()) {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = call["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    calls.push((
                        call["id"].as_str().unwrap().into(),
                        call["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                calls[i].2.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.into();
            }
        }
    }
    let calls = calls.into_iter().map(|(id, n, a)| (id, n, serde_json::from_str(&a).unwrap())).collect();
    (text, calls, finish)
}

fn stream_usage(api: ApiKind, events: &[SseEvent]) -> Option<Usage> {
    let mut u = StreamUsage::new(api);
    events.iter().for_each(|e| u.observe(e));
    u.usage()
}

fn check_stream(name: &str, src: &[SseEvent]) -> Vec<SseEvent> {
    let out = translate_stream(src);
    let a = assemble(&out);
    let (text, calls, finish) = openai_stream_content(src);
    assert_eq!(a.text, text, "{name}");
    assert_eq!(a.tools, calls, "{name}");
    assert_eq!(a.stop_reason, expected_stop(&finish), "{name}");
    let got = stream_usage(ApiKind::AnthropicMessages, &out).unwrap();
    match stream_usage(ApiKind::OpenAiChat, src) {
        Some(want) => assert_eq!(got, want, "{name}"),
        // Without include_usage OpenAI reports nothing; the client sees zeros.
        None => assert_eq!(got, Usage::default(), "{name}"),
    }
    out
}

#[test]
fn recorded_streams_translate() {
    for name in ["chat-streaming", "chat-streaming-detailed-usage", "chat-streaming-web-search"] {
        let it = common::cassette(name);
        assert!(it.response.is_sse());
        let src = common::parse_all(it.response.body.as_bytes());
        check_stream(name, &src);
    }
    let src = common::parse_all(common::cassette("chat-streaming-detailed-usage").response.body.as_bytes());
    let out = check_stream("detailed", &src);
    // Empty content: no block at all, just start, delta (max_tokens), stop.
    let types: Vec<_> = out.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(types, ["message_start", "message_delta", "message_stop"]);
    let delta: Value = serde_json::from_str(&out[1].data).unwrap();
    assert_eq!(
        delta,
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
               "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 100}})
    );
    let start: Value = serde_json::from_str(&out[0].data).unwrap();
    assert_eq!(start["message"]["id"], "chatcmpl-C4Hq5a6K3RaPMymUv70btQNYv6SvY");
}

fn chunk(delta: Value, finish: Option<&str>) -> SseEvent {
    let data = json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    SseEvent { event: None, data: data.to_string(), id: None }
}

fn usage_chunk() -> SseEvent {
    let data = json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
        "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70, "prompt_tokens_details": {"cached_tokens": 10}}});
    SseEvent { event: None, data: data.to_string(), id: None }
}

fn done() -> SseEvent {
    SseEvent { event: None, data: "[DONE]".into(), id: None }
}

/// The shape OpenAI streams text then parallel tool calls in.
fn tool_stream() -> Vec<SseEvent> {
    vec![
        chunk(json!({"role": "assistant", "content": null}), None),
        chunk(json!({"reasoning_content": "Two cities."}), None),
        chunk(json!({"content": "Checking "}), None),
        chunk(json!({"content": "both."}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), None),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(),
        done(),
    ]
}

#[test]
fn tool_call_stream_translates() {
    let src = tool_stream();
    let out = check_stream("tools", &src);
    let a = assemble(&out);
    assert_eq!(a.thinking, "Two cities.");
    assert_eq!(a.text, "Checking both.");
    assert_eq!(
        a.tools,
        vec![
            ("call_a".to_owned(), "get_weather".to_owned(), json!({"location": "Paris"})),
            ("call_b".to_owned(), "get_weather".to_owned(), json!({"location": "Rome"})),
        ]
    );
    assert_eq!(a.stop_reason, "tool_use");
    let types: Vec<_> = out.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start", // thinking
            "content_block_delta",
            "content_block_stop",
            "content_block_start", // text
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start", // call_a
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start", // call_b
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        stream_usage(ApiKind::AnthropicMessages, &out),
        Some(Usage { input_tokens: 50, output_tokens: 20, cached_tokens: 10, total_tokens: 70 })
    );
}

#[test]
fn message_delta_waits_for_the_usage_chunk() {
    let src = tool_stream();
    let finish_at = src.len() - 3;
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    for e in &src[..finish_at] {
        t.push(e);
    }
    // The finish chunk closes the block; message_delta waits for usage.
    let out = t.push(&src[finish_at]);
    let types: Vec<_> = out.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(types, ["content_block_stop"]);
    let out = t.push(&src[finish_at + 1]);
    let types: Vec<_> = out.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(types, ["message_delta", "message_stop"]);
    assert!(t.push(&src[finish_at + 2]).is_empty());
    assert!(t.finish().is_empty());
}

#[test]
fn truncated_and_failed_streams() {
    let src = tool_stream();
    for cut in 0..src.len() {
        let out = translate_stream(&src[..cut]);
        let a = assemble(&out);
        if cut <= src.len() - 3 {
            // No finish reason seen: the stream is closed as end_turn.
            assert_eq!(a.stop_reason, "end_turn", "cut {cut}");
        }
    }
    // An error chunk becomes an Anthropic error event and ends the stream.
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    let mut out = t.push(&chunk(json!({"role": "assistant", "content": "a"}), None));
    out.extend(t.push(&SseEvent {
        event: None,
        data: r#"{"error":{"message":"rate limited","type":"rate_limit_error","code":null}}"#.into(),
        id: None,
    }));
    let last: Value = serde_json::from_str(&out.last().unwrap().data).unwrap();
    assert_eq!(out.last().unwrap().event.as_deref(), Some("error"));
    assert_eq!(last, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}));
    assert!(t.finish().is_empty());
    assert!(t.push(&done()).is_empty());
}
