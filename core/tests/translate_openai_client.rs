//! An OpenAI client served by an Anthropic model: the recorded Anthropic
//! responses, whole and streamed, translated to OpenAI chat shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{json, Value};
use tollgate_core::translate::openai_to_anthropic::{self, StreamTranslator};
use tollgate_core::usage::is_usage_only_chunk;
use tollgate_core::{usage_from_json, ApiKind, SseEvent, StreamUsage, Usage};

const CLIENT_MODEL: &str = "gpt-4o-mini";

fn anthropic_json(name: &str) -> Value {
    serde_json::from_slice(&common::anthropic(name)).unwrap()
}

/// Text and tool calls (name, parsed input) of an Anthropic message.
fn anthropic_content(msg: &Value) -> (String, Vec<(String, Value)>, String) {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut tools = Vec::new();
    for b in msg["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => text.push_str(b["text"].as_str().unwrap()),
            "thinking" => thinking.push_str(b["thinking"].as_str().unwrap()),
            "tool_use" => tools.push((b["name"].as_str().unwrap().to_owned(), b["input"].clone())),
            other => panic!("unexpected block {other}"),
        }
    }
    (text, tools, thinking)
}

fn expected_finish(stop_reason: &str) -> &'static str {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        other => panic!("unexpected stop reason {other}"),
    }
}

#[test]
fn json_responses_translate() {
    for name in ["basic.json", "multiple_text_blocks.json", "tool.json", "thinking.json"] {
        let src = anthropic_json(name);
        let out = openai_to_anthropic::response(&src, CLIENT_MODEL).unwrap();
        assert_eq!(out["object"], "chat.completion", "{name}");
        assert_eq!(out["model"], CLIENT_MODEL, "{name}");
        assert_eq!(out["id"], src["id"], "{name}");
        let choices = out["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1, "{name}");
        let choice = &choices[0];
        assert_eq!(choice["index"], 0);
        let msg = &choice["message"];
        assert_eq!(msg["role"], "assistant");

        let (text, tools, thinking) = anthropic_content(&src);
        if text.is_empty() && !tools.is_empty() {
            assert!(msg["content"].is_null(), "{name}");
        } else {
            assert_eq!(msg["content"].as_str().unwrap(), text, "{name}");
        }
        // Thinking goes to the non-standard reasoning_content field.
        if thinking.is_empty() {
            assert!(msg.get("reasoning_content").is_none(), "{name}");
        } else {
            assert_eq!(msg["reasoning_content"].as_str().unwrap(), thinking, "{name}");
        }
        let calls: Vec<(String, Value)> = msg["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        assert_eq!(c["type"], "function");
                        assert!(c["id"].as_str().unwrap().starts_with("toolu_"));
                        let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                        (c["function"]["name"].as_str().unwrap().to_owned(), args)
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(calls, tools, "{name}");
        assert_eq!(choice["finish_reason"], expected_finish(src["stop_reason"].as_str().unwrap()), "{name}");

        // The usage the gateway would read is the same on both sides.
        let want = usage_from_json(ApiKind::AnthropicMessages, &common::anthropic(name)).unwrap().unwrap();
        let got = usage_from_json(ApiKind::OpenAiChat, out.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn json_usage_numbers() {
    let out = openai_to_anthropic::response(&anthropic_json("basic.json"), CLIENT_MODEL).unwrap();
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 40, "completion_tokens": 21, "total_tokens": 61, "prompt_tokens_details": {"cached_tokens": 12}})
    );
    let out = openai_to_anthropic::response(&anthropic_json("tool.json"), CLIENT_MODEL).unwrap();
    assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn other_stop_reasons_and_errors() {
    let msg = |reason: &str| json!({"id": "m", "type": "message", "content": [{"type": "text", "text": "x"}], "stop_reason": reason});
    for (reason, want) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        let out = openai_to_anthropic::response(&msg(reason), CLIENT_MODEL).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], want, "{reason}");
    }
    let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert!(openai_to_anthropic::response(&err, CLIENT_MODEL).is_err());
    assert_eq!(
        openai_to_anthropic::error(&err, 529),
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
    );
    let err = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}});
    assert_eq!(openai_to_anthropic::error(&err, 429)["error"]["type"], "rate_limit_error");
    let err = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}});
    assert_eq!(openai_to_anthropic::error(&err, 400)["error"]["type"], "invalid_request_error");
    // Not the Anthropic shape at all: a fallback message, still OpenAI-shaped.
    let out = openai_to_anthropic::error(&Value::from("<html>bad gateway</html>"), 502);
    assert_eq!(out["error"]["message"], "<html>bad gateway</html>");
    assert_eq!(out["error"]["type"], "server_error");
    let out = openai_to_anthropic::error(&json!({}), 503);
    assert_eq!(out["error"]["message"], "provider returned status 503");
}

/// Translate a whole Anthropic stream; the result is also serialised and
/// re-parsed (byte by byte) to prove each event is well formed.
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
    let pieces: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(common::parse_pieces(&pieces), out);
    out
}

/// What an OpenAI client assembles from a chunk stream.
#[derive(Debug, Default)]
struct Assembled {
    text: String,
    reasoning: String,
    /// (id, name, arguments) by tool call index.
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
}

/// Check the OpenAI chunk stream's shape and assemble it.
fn assemble(events: &[SseEvent]) -> Assembled {
    let mut a = Assembled::default();
    let (last, rest) = events.split_last().unwrap();
    assert!(last.is_done(), "stream must end with [DONE]");
    let (usage_chunk, rest) = rest.split_last().unwrap();
    assert!(is_usage_only_chunk(usage_chunk), "usage-only chunk before [DONE]: {}", usage_chunk.data);
    let usage: Value = serde_json::from_str(&usage_chunk.data).unwrap();
    a.usage = Some(usage["usage"].clone());
    for (i, e) in rest.iter().enumerate() {
        assert_eq!(e.event, None);
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], CLIENT_MODEL);
        let choice = &v["choices"][0];
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
        let delta = &choice["delta"];
        if i == 0 {
            assert_eq!(delta["role"], "assistant", "role chunk first");
        } else {
            assert!(delta.get("role").is_none());
        }
        assert!(a.finish.is_none(), "nothing after the finish chunk but usage");
        if let Some(f) = choice["finish_reason"].as_str() {
            a.finish = Some(f.to_owned());
        }
        if let Some(t) = delta["content"].as_str() {
            a.text.push_str(t);
        }
        if let Some(t) = delta["reasoning_content"].as_str() {
            a.reasoning.push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let idx = call["index"].as_u64().unwrap() as usize;
            if let Some(id) = call["id"].as_str() {
                assert_eq!(idx, a.calls.len(), "new tool calls get the next index");
                a.calls.push((id.to_owned(), call["function"]["name"].as_str().unwrap().to_owned(), String::new()));
                assert_eq!(call["type"], "function");
            }
            a.calls[idx].2.push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    assert!(a.finish.is_some(), "a finish chunk");
    a
}

/// Text, thinking and tool calls of an Anthropic stream, read directly.
fn anthropic_stream_content(events: &[SseEvent]) -> (String, String, Vec<(String, String, Value)>, String) {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut tools: Vec<(String, String, String)> = Vec::new();
    let mut stop = String::new();
    for e in events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        match v["type"].as_str().unwrap() {
            "content_block_start" if v["content_block"]["type"] == "tool_use" => tools.push((
                v["content_block"]["id"].as_str().unwrap().into(),
                v["content_block"]["name"].as_str().unwrap().into(),
                String::new(),
            )),
            "content_block_delta" => match v["delta"]["type"].as_str().unwrap() {
                "text_delta" => text.push_str(v["delta"]["text"].as_str().unwrap()),
                "thinking_delta" => thinking.push_str(v["delta"]["thinking"].as_str().unwrap()),
                "input_json_delta" => {
                    tools.last_mut().unwrap().2.push_str(v["delta"]["partial_json"].as_str().unwrap())
                }
                _ => {}
            },
            "message_delta" => stop = v["delta"]["stop_reason"].as_str().unwrap().into(),
            _ => {}
        }
    }
    let tools = tools
        .into_iter()
        .map(|(id, name, json)| {
            let input = if json.is_empty() { json!({}) } else { serde_json::from_str(&json).unwrap() };
            (id, name, input)
        })
        .collect();
    (text, thinking, tools, stop)
}

fn stream_usage(api: ApiKind, events: &[SseEvent]) -> Option<Usage> {
    let mut u = StreamUsage::new(api);
    events.iter().for_each(|e| u.observe(e));
    u.usage()
}

#[test]
fn streams_translate() {
    let names = [
        "stream_basic.json",
        "stream_tool.json",
        "stream_tool_empty_args.json",
        "stream_thinking.json",
        "stream_message_delta_usage.json",
    ];
    for name in names {
        let src = common::parse_all(&common::anthropic(name));
        let out = translate_stream(&src);
        let a = assemble(&out);
        let (text, thinking, tools, stop) = anthropic_stream_content(&src);
        assert_eq!(a.text, text, "{name}");
        assert_eq!(a.reasoning, thinking, "{name}");
        let calls: Vec<(String, String, Value)> =
            a.calls.iter().map(|(id, n, args)| (id.clone(), n.clone(), serde_json::from_str(args).unwrap())).collect();
        assert_eq!(calls, tools, "{name}");
        assert_eq!(a.finish.as_deref(), Some(expected_finish(&stop)), "{name}");
        // The chunk id is the Anthropic message id.
        let first: Value = serde_json::from_str(&out[0].data).unwrap();
        let start: Value = serde_json::from_str(&src[0].data).unwrap();
        assert_eq!(first["id"], start["message"]["id"], "{name}");

        let want = stream_usage(ApiKind::AnthropicMessages, &src);
        assert!(want.is_some(), "{name}");
        assert_eq!(stream_usage(ApiKind::OpenAiChat, &out), want, "{name}");
    }
}

#[test]
fn stream_details() {
    let out = translate_stream(&common::parse_all(&common::anthropic("stream_tool_empty_args.json")));
    // A tool call whose input was empty gets "{}" so the client can parse it.
    let a = assemble(&out);
    assert_eq!(a.calls, vec![("toolu_01A".to_owned(), "get_time".to_owned(), "{}".to_owned())]);

    let out = translate_stream(&common::parse_all(&common::anthropic("stream_message_delta_usage.json")));
    let a = assemble(&out);
    assert_eq!(
        a.usage.unwrap(),
        json!({"prompt_tokens": 34347, "completion_tokens": 49, "total_tokens": 34396, "prompt_tokens_details": {"cached_tokens": 30464}})
    );
    assert_eq!(a.text, "");
    assert_eq!(a.finish.as_deref(), Some("stop"));

    // ping produces nothing; the role chunk comes from message_start alone.
    let src = common::parse_all(&common::anthropic("stream_basic.json"));
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    assert_eq!(t.push(&src[0]).len(), 1);
    let ping = src.iter().find(|e| e.event.as_deref() == Some("ping")).unwrap();
    assert!(t.push(ping).is_empty());
}

#[test]
fn truncated_streams_still_end_well_formed() {
    for (name, _) in common::anthropic_streams() {
        let src = common::parse_all(&common::anthropic(&name));
        // Cut before message_delta (and, separately, before message_stop).
        for cut_at in ["message_delta", "message_stop"] {
            let cut = src.iter().position(|e| e.event.as_deref() == Some(cut_at)).unwrap_or(src.len());
            let out = translate_stream(&src[..cut]);
            let a = assemble(&out);
            if cut_at == "message_delta" {
                assert_eq!(a.finish.as_deref(), Some("stop"), "{name}");
            }
            assert!(a.usage.is_some(), "{name}");
        }
    }
    // Nothing at all from the provider: still role, finish, usage, [DONE].
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    let out = t.finish();
    assert_eq!(out.len(), 4);
    assemble(&out);
    // finish() after a complete stream adds nothing, and later events are ignored.
    assert!(t.finish().is_empty());
    assert!(t.push(&SseEvent { event: None, data: "{\"type\":\"message_stop\"}".into(), id: None }).is_empty());
}

#[test]
fn stream_error_event() {
    let src = common::parse_all(&common::anthropic("stream_basic.json"));
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    let mut out = t.push(&src[0]);
    out.extend(t.push(&SseEvent {
        event: Some("error".into()),
        data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into(),
        id: None,
    }));
    assert_eq!(out.len(), 3);
    let err: Value = serde_json::from_str(&out[1].data).unwrap();
    assert_eq!(
        err,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
    );
    assert!(out[2].is_done());
    assert!(t.finish().is_empty());
    // Data that is not JSON is ignored.
    let mut t = StreamTranslator::new(CLIENT_MODEL);
    assert!(t.push(&SseEvent { event: None, data: "not json".into(), id: None }).is_empty());
}
