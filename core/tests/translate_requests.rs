//! Request translation both ways: the recorded OpenAI requests to Anthropic,
//! round trips back to OpenAI, hand-built requests covering every mapped
//! field, and the fields that cannot be translated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{json, Map, Value};
use tollgate_core::translate::{anthropic_to_openai, openai_to_anthropic, Direction};
use tollgate_core::{ApiFamily, ApiKind, Error};

fn recorded_request(name: &str) -> Value {
    serde_json::from_str(&common::cassette(name).request.body).unwrap()
}

fn to_anthropic(req: &Value) -> Value {
    openai_to_anthropic::request(req, "claude-haiku-4-5").unwrap_or_else(|e| panic!("{e}: {req}"))
}

fn invalid_field(result: Result<Value, Error>, field: &str) {
    match result {
        Err(Error::InvalidRequest(msg)) => {
            assert!(msg.contains(field), "`{msg}` should name `{field}`")
        }
        other => panic!("expected InvalidRequest naming `{field}`, got {other:?}"),
    }
}

/// An OpenAI request reduced to what a translation must keep, with the
/// documented normalisations applied: `developer` is `system`, the token
/// limit is `max_completion_tokens` (default 4096), `stop` is a list, tool
/// arguments are parsed, default-valued and dropped fields are removed.
fn normalize(req: &Value) -> Value {
    let obj = req.as_object().unwrap();
    let mut out = Map::new();
    let messages: Vec<Value> = obj["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut m = m.as_object().unwrap().clone();
            if m["role"] == "developer" {
                m.insert("role".into(), "system".into());
            }
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for c in calls {
                    let args = c["function"]["arguments"].as_str().unwrap().to_owned();
                    c["function"]["arguments"] = serde_json::from_str(&args).unwrap();
                }
            }
            // Image `detail` has no Anthropic counterpart (documented as dropped).
            if let Some(Value::Array(parts)) = m.get_mut("content") {
                for p in parts {
                    if let Some(img) = p.get_mut("image_url").and_then(Value::as_object_mut) {
                        img.remove("detail");
                    }
                }
            }
            if m.get("content") == Some(&Value::Null) && !m.contains_key("tool_calls") {
                m.remove("content");
            }
            Value::Object(m)
        })
        .collect();
    out.insert("messages".into(), Value::Array(messages));
    let max = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .cloned()
        .unwrap_or(json!(openai_to_anthropic::DEFAULT_MAX_TOKENS));
    out.insert("max_completion_tokens".into(), max);
    match obj.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop".into(), json!([s]));
        }
        Some(v @ Value::Array(_)) => {
            out.insert("stop".into(), v.clone());
        }
        _ => {}
    }
    for k in ["temperature", "top_p", "stream", "user", "tool_choice"] {
        if let Some(v) = obj.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(Value::Array(tools)) = obj.get("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut t = t.clone();
                if let Some(f) = t["function"].as_object_mut() {
                    f.remove("strict");
                }
                t
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Value::Object(out)
}

fn round_trip(req: &Value) -> Value {
    let anthropic = to_anthropic(req);
    let back = anthropic_to_openai::request(&anthropic, "gpt-upstream").unwrap_or_else(|e| panic!("{e}: {anthropic}"));
    assert_eq!(back["model"], "gpt-upstream");
    if back["stream"] == true {
        assert_eq!(back["stream_options"], json!({"include_usage": true}));
    }
    back
}

// ------------------------------------------------------- recorded requests

const TRANSLATABLE: [&str; 13] = [
    "azure-chat-basic",
    "chat-basic",
    "chat-detailed-usage",
    "chat-image-to-text",
    "chat-multimodal",
    "chat-multiturn",
    "chat-parallel-tools",
    "chat-reasoning",
    "chat-streaming",
    "chat-streaming-detailed-usage",
    "chat-text-to-image-tool",
    "chat-tools",
    "chat-unknown-model",
];

const REFUSED: [(&str, &str); 8] = [
    ("chat-audio-to-text", "input_audio"),
    ("chat-bad-request", "messages[0].content"),
    ("chat-json-mode", "response_format"),
    ("chat-no-messages", "messages"),
    ("chat-openai-agents-python", "response_format"),
    ("chat-streaming-web-search", "web_search_options"),
    ("chat-text-to-audio", "modalities"),
    ("chat-web-search", "web_search_options"),
];

#[test]
fn every_recorded_chat_request_translates_or_names_the_field() {
    let mut seen = 0;
    for (name, c) in common::cassettes() {
        let it = &c.interactions[0];
        if common::api_for_url(&it.request.url) != Some(ApiKind::OpenAiChat) {
            continue;
        }
        seen += 1;
        let req: Value = serde_json::from_str(&it.request.body).unwrap();
        let result = openai_to_anthropic::request(&req, "claude-haiku-4-5");
        if let Some((_, field)) = REFUSED.iter().find(|(n, _)| *n == name) {
            invalid_field(result, field);
            continue;
        }
        assert!(TRANSLATABLE.contains(&name.as_str()), "{name} is in neither list");
        let out = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out["model"], "claude-haiku-4-5");
        assert!(out["max_tokens"].as_u64().unwrap() > 0, "{name}");
        let msgs = out["messages"].as_array().unwrap();
        assert!(!msgs.is_empty(), "{name}");
        for m in msgs {
            assert!(m["role"] == "user" || m["role"] == "assistant", "{name}: system pulled out");
        }
        assert!(out.get("stream_options").is_none(), "{name}");
    }
    assert_eq!(seen, TRANSLATABLE.len() + REFUSED.len());
}

#[test]
fn recorded_requests_map_as_expected() {
    assert_eq!(
        to_anthropic(&recorded_request("chat-multiturn")),
        json!({
            "model": "claude-haiku-4-5",
            "system": "You are a helpful assistant.",
            "messages": [
                {"role": "user", "content": "Hello!"},
                {"role": "assistant", "content": "Hello! How can I assist you today?"},
                {"role": "user", "content": "Answer in up to 5 words: What's the weather like?"},
            ],
            "max_tokens": 4096,
            "temperature": 1,
        })
    );
    let tools = to_anthropic(&recorded_request("chat-tools"));
    let src = recorded_request("chat-tools");
    assert_eq!(
        tools["tools"],
        json!([{
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "input_schema": src["tools"][0]["function"]["parameters"],
        }])
    );
    assert_eq!(tools["tool_choice"], json!({"type": "auto"}));
    let named = to_anthropic(&recorded_request("chat-text-to-image-tool"));
    assert_eq!(named["tool_choice"], json!({"type": "tool", "name": "generate_image"}));
    assert_eq!(named["max_tokens"], 150);
    assert!(named["system"].as_str().unwrap().starts_with("You are an AI assistant"));
    // parallel_tool_calls: true is Anthropic's default.
    let parallel = to_anthropic(&recorded_request("chat-parallel-tools"));
    assert_eq!(parallel["tool_choice"], json!({"type": "auto"}));

    let multimodal = to_anthropic(&recorded_request("chat-multimodal"));
    assert_eq!(multimodal["max_tokens"], 100);
    let blocks = &multimodal["messages"][0]["content"];
    assert_eq!(blocks[0], json!({"type": "text", "text": "What is in this image?"}));
    assert_eq!(blocks[1]["type"], "image");
    assert_eq!(blocks[1]["source"]["type"], "url");
    assert!(blocks[1]["source"]["url"].as_str().unwrap().starts_with("https://upload.wikimedia.org/"));

    let inline = to_anthropic(&recorded_request("chat-image-to-text"));
    let image = &inline["messages"][0]["content"][1];
    assert_eq!(image["source"]["type"], "base64");
    assert_eq!(image["source"]["media_type"], "image/png");
    assert!(image["source"]["data"].as_str().unwrap().starts_with("iVBORw0KGgo"));

    let streaming = to_anthropic(&recorded_request("chat-streaming"));
    assert_eq!(streaming["stream"], true);
    // Only a developer message: it becomes the user turn.
    let dev = to_anthropic(&recorded_request("chat-streaming-detailed-usage"));
    assert!(dev.get("system").is_none());
    assert_eq!(
        dev["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hello, I'm a developer!"}]}])
    );
    assert_eq!(dev["max_tokens"], 100);
}

#[test]
fn recorded_requests_round_trip() {
    for name in TRANSLATABLE {
        if name.contains("detailed-usage") {
            continue; // developer-only: becomes a user turn, checked above
        }
        let req = recorded_request(name);
        assert_eq!(normalize(&round_trip(&req)), normalize(&req), "{name}");
    }
}

// ------------------------------------------------------ hand-built requests

fn full_openai_request() -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here and in Rome?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"days\":[1,2]}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Thanks. And tomorrow?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_3", "content": "20C"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 300,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "user-42",
        "seed": 7,
        "frequency_penalty": 0.1,
        "n": 1,
        "logprobs": false,
    })
}

#[test]
fn full_request_to_anthropic() {
    let out = to_anthropic(&full_openai_request());
    assert_eq!(
        out,
        json!({
            "model": "claude-haiku-4-5",
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here and in Rome?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome", "days": [1, 2]}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
                ]},
                {"role": "user", "content": "Thanks. And tomorrow?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_3", "name": "get_weather", "input": {}},
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_3", "content": "20C"}]},
            ],
            "max_tokens": 300,
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_p": 0.9,
            "stream": true,
            "metadata": {"user_id": "user-42"},
            "tools": [
                {"name": "get_weather", "description": "Weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
        })
    );
}

#[test]
fn full_request_round_trips() {
    let req = full_openai_request();
    let back = round_trip(&req);
    assert_eq!(normalize(&back), normalize(&req));
    // The exact shape of the way back, for the fields normalize relaxes.
    assert_eq!(back["max_completion_tokens"], 300);
    assert_eq!(back["stop"], json!(["END"]));
    assert_eq!(back["messages"][1]["role"], "system");
    assert_eq!(back["messages"][3]["tool_calls"][1]["function"]["arguments"], "{\"city\":\"Rome\",\"days\":[1,2]}");
    assert_eq!(back["parallel_tool_calls"], false);
    for dropped in ["seed", "frequency_penalty", "n", "logprobs"] {
        assert!(back.get(dropped).is_none(), "{dropped}");
    }
}

#[test]
fn tool_choice_both_ways() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    for (openai, anthropic) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (json!({"type": "function", "function": {"name": "f"}}), json!({"type": "tool", "name": "f"})),
    ] {
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": openai});
        let out = to_anthropic(&req);
        assert_eq!(out["tool_choice"], anthropic);
        let back = anthropic_to_openai::request(&out, "m").unwrap();
        assert_eq!(back["tool_choice"], openai);
    }
    // Without tools there is nothing to choose from.
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "none"});
    assert!(to_anthropic(&req).get("tool_choice").is_none());
}

#[test]
fn tool_ids_are_made_acceptable_consistently() {
    let req = json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "functions.get:0", "type": "function", "function": {"name": "get", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "functions.get:0", "content": "ok"},
    ]});
    let out = to_anthropic(&req);
    assert_eq!(out["messages"][1]["content"][0]["id"], "functions_get_0");
    assert_eq!(out["messages"][1]["content"][0]["input"], json!({}));
    assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "functions_get_0");
}

#[test]
fn file_parts_become_documents_and_back() {
    let req = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "text", "text": "Summarise."},
    ]}]});
    let out = to_anthropic(&req);
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}, "title": "a.pdf"})
    );
    assert_eq!(normalize(&round_trip(&req)), normalize(&req));
}

#[test]
fn openai_fields_without_counterpart_are_refused() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let with = |k: &str, v: Value| {
        let mut r = base();
        r[k] = v;
        openai_to_anthropic::request(&r, "c")
    };
    invalid_field(with("n", json!(2)), "n");
    invalid_field(with("logprobs", json!(true)), "logprobs");
    invalid_field(with("top_logprobs", json!(3)), "top_logprobs");
    invalid_field(with("modalities", json!(["text", "audio"])), "modalities");
    invalid_field(with("audio", json!({"voice": "alloy", "format": "wav"})), "audio");
    invalid_field(with("response_format", json!({"type": "json_object"})), "response_format");
    invalid_field(with("logit_bias", json!({"50256": -100})), "logit_bias");
    invalid_field(with("web_search_options", json!({})), "web_search_options");
    invalid_field(with("functions", json!([{"name": "f"}])), "functions");
    invalid_field(with("function_call", json!("auto")), "function_call");
    invalid_field(with("temperature", json!(1.5)), "temperature");
    invalid_field(with("stop", json!(5)), "stop");
    invalid_field(with("tools", json!([{"type": "custom", "custom": {"name": "g"}}])), "tools[0].type");
    // Accepted: harmless or default values.
    for (k, v) in [
        ("n", json!(1)),
        ("logprobs", json!(false)),
        ("modalities", json!(["text"])),
        ("response_format", json!({"type": "text"})),
        ("logit_bias", json!({})),
        ("seed", json!(1)),
        ("reasoning_effort", json!("low")),
        ("store", json!(true)),
        ("unknown_future_field", json!({"a": 1})),
    ] {
        let out = with(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(out.get(k).is_none(), "{k} dropped");
    }

    let msg = |m: Value| openai_to_anthropic::request(&json!({"model": "m", "messages": [m]}), "c");
    invalid_field(
        msg(
            json!({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}),
        ),
        "messages[0].content[0]",
    );
    invalid_field(
        msg(json!({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]})),
        "file_id",
    );
    invalid_field(
        msg(json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]})),
        "image_url",
    );
    invalid_field(msg(json!({"role": "function", "name": "f", "content": "x"})), "messages[0].role");
    invalid_field(msg(json!({"role": "robot", "content": "x"})), "messages[0].role");
    invalid_field(
        msg(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]})),
        "messages[0].tool_calls[0].function.arguments",
    );
    invalid_field(
        msg(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]})),
        "messages[0].tool_calls[0].function.arguments",
    );
    invalid_field(openai_to_anthropic::request(&json!([1]), "c"), "JSON object");
    invalid_field(openai_to_anthropic::request(&json!({"model": "m"}), "c"), "messages");
}

// ------------------------------------------- Anthropic client to OpenAI

#[test]
fn anthropic_request_to_openai() {
    let req = json!({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Metric."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "One."},
                {"type": "text", "text": "Two."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "also this"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}], "is_error": false},
            ]},
        ],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "max_tokens": 1024,
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_p": 0.8,
        "top_k": 40,
        "stream": true,
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 2000},
    });
    let out = anthropic_to_openai::request(&req, "gpt-4o").unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "Metric."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "text", "text": "plain doc"},
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
                 "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"a\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "found"}]},
                {"role": "user", "content": [{"type": "text", "text": "also this"}]},
            ],
            "max_completion_tokens": 1024,
            "stop": ["\n\nHuman:"],
            "temperature": 0.5,
            "top_p": 0.8,
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        })
    );
    // And forward again: the Anthropic request comes back, less what has no
    // OpenAI counterpart (thinking, top_k, cache_control, is_error).
    let again = openai_to_anthropic::request(&out, "claude-sonnet-4-5").unwrap();
    assert_eq!(again["system"], json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Metric."}]));
    assert_eq!(again["messages"][1]["content"][2], req["messages"][1]["content"][3]);
    assert_eq!(again["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
    assert_eq!(again["max_tokens"], 1024);
    assert_eq!(again["metadata"], req["metadata"]);
}

#[test]
fn anthropic_fields_without_counterpart_are_refused() {
    let base = || json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let with = |k: &str, v: Value| {
        let mut r = base();
        r[k] = v;
        anthropic_to_openai::request(&r, "g")
    };
    invalid_field(with("mcp_servers", json!([{"type": "url", "url": "https://x", "name": "x"}])), "mcp_servers");
    invalid_field(with("container", json!("c")), "container");
    invalid_field(with("tools", json!([{"type": "web_search_20250305", "name": "web_search"}])), "tools[0].type");
    let msg = |content: Value| {
        anthropic_to_openai::request(&json!({"model": "m", "messages": [{"role": "user", "content": content}]}), "g")
    };
    invalid_field(
        msg(json!([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
        "messages[0].content[0].source.type",
    );
    invalid_field(
        msg(json!([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}])),
        "messages[0].content[0].source.type",
    );
    invalid_field(
        msg(
            json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}]),
        ),
        "messages[0].content[0].content[0]",
    );
    invalid_field(msg(json!([{"type": "tool_use", "id": "t", "name": "n", "input": {}}])), "messages[0].content[0]");
    invalid_field(
        anthropic_to_openai::request(&json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}), "g"),
        "messages[0].role",
    );
    // Harmless: dropped.
    for (k, v) in [("top_k", json!(5)), ("thinking", json!({"type": "disabled"})), ("service_tier", json!("auto"))] {
        let out = with(k, v).unwrap();
        assert!(out.get(k).is_none(), "{k}");
    }
}

#[test]
fn anthropic_request_round_trips_through_openai() {
    let req = json!({
        "model": "claude",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
        ],
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"},
        "max_tokens": 512,
        "stop_sequences": ["STOP"],
        "temperature": 0.3,
        "stream": false,
        "metadata": {"user_id": "u"},
    });
    let openai = anthropic_to_openai::request(&req, "gpt").unwrap();
    let mut back = openai_to_anthropic::request(&openai, "claude").unwrap();
    // `stream: false` survives both ways.
    assert_eq!(back["stream"], false);
    back["stream"] = json!(false);
    assert_eq!(back, req);
}

#[test]
fn directions() {
    assert_eq!(Direction::for_pair(ApiFamily::OpenAi, ApiFamily::Anthropic), Some(Direction::OpenAiToAnthropic));
    assert_eq!(Direction::for_pair(ApiFamily::Anthropic, ApiFamily::OpenAi), Some(Direction::AnthropicToOpenAi));
    assert_eq!(Direction::for_pair(ApiFamily::OpenAi, ApiFamily::OpenAi), None);
    assert_eq!(Direction::for_pair(ApiFamily::Anthropic, ApiFamily::Anthropic), None);
    for d in [Direction::OpenAiToAnthropic, Direction::AnthropicToOpenAi] {
        assert_eq!(Direction::for_pair(d.client(), d.provider()), Some(d));
        assert_eq!(d.client_api().family(), d.client());
        assert_eq!(d.provider_api().family(), d.provider());
    }
    // Dispatch goes to the direction's functions.
    let req = recorded_request("chat-basic");
    assert_eq!(Direction::OpenAiToAnthropic.request(&req, "c").unwrap(), to_anthropic(&req).tap_model("c"));
    let mut s = Direction::AnthropicToOpenAi.stream("claude");
    let out = s.finish();
    assert_eq!(out.last().unwrap().event.as_deref(), Some("message_stop"));
    let mut s = Direction::OpenAiToAnthropic.stream("gpt");
    assert!(s.finish().last().unwrap().is_done());
    let err = Direction::AnthropicToOpenAi.error(&json!({"error": {"message": "m"}}), 500);
    assert_eq!(err["error"]["type"], "api_error");
}

trait TapModel {
    fn tap_model(self, model: &str) -> Value;
}

impl TapModel for Value {
    fn tap_model(mut self, model: &str) -> Value {
        self["model"] = json!(model);
        self
    }
}
