//! `parse_request` on every request body recorded from OpenAI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::Value;
use tollgate_core::request::{parse_request_json, TextKind};
use tollgate_core::{parse_request, ApiKind, Error, LlmRequest};

fn request(name: &str) -> (ApiKind, String) {
    let it = common::cassette(name);
    (common::api_for_url(&it.request.url).unwrap(), it.request.body)
}

fn parse(name: &str) -> LlmRequest {
    let (api, body) = request(name);
    parse_request(api, body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn texts(r: &LlmRequest) -> Vec<(&str, &str)> {
    r.texts.iter().map(|t| (t.role.as_str(), t.text.as_str())).collect()
}

fn tools(r: &LlmRequest) -> Vec<&str> {
    r.tools.iter().map(|t| t.name.as_str()).collect()
}

fn all_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| all_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| all_strings(v, out)),
        _ => {}
    }
}

/// Requests OpenAI itself rejected for a reason Tollgate also checks.
const REJECTED: [(&str, &str); 2] = [
    ("chat-no-messages", "`messages` must not be empty"),
    ("completion-bad-request", "`max_tokens` must be a non-negative integer"),
];

/// Requests whose prompt is only token ids (or null content): no text at all.
const NO_TEXT: [&str; 5] =
    ["chat-bad-request", "completion-token", "completion-token-batch", "embeddings-bad-request", "embeddings-tokens"];

#[test]
fn every_recorded_request_parses_consistently() {
    let mut per_api = std::collections::BTreeMap::new();
    for (name, cassette) in common::cassettes() {
        for it in cassette.interactions {
            let api = common::api_for_url(&it.request.url).unwrap_or_else(|| panic!("{name}: {}", it.request.url));
            *per_api.entry(api.as_str()).or_insert(0) += 1;
            let body = it.request.body.as_bytes();
            let json: Value = serde_json::from_slice(body).unwrap();
            let result = parse_request_json(api, body);
            if let Some((_, want)) = REJECTED.iter().find(|(n, _)| *n == name) {
                match result {
                    Err(Error::InvalidRequest(m)) => assert_eq!(&m, want, "{name}"),
                    other => panic!("{name}: expected a rejection, got {other:?}"),
                }
                continue;
            }
            let parsed = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let r = &parsed.request;
            assert_eq!(parsed.json, json, "{name}");
            assert_eq!(parse_request(api, body).unwrap(), *r, "{name}");
            assert_eq!(r.api, api);
            assert_eq!(Some(r.model.as_str()), json["model"].as_str(), "{name}");
            assert_eq!(r.stream, json["stream"].as_bool().unwrap_or(false), "{name}");
            assert_eq!(r.include_usage, json["stream_options"]["include_usage"].as_bool().unwrap_or(false), "{name}");
            assert_eq!(r.texts.is_empty(), NO_TEXT.contains(&name.as_str()), "{name}: {:?}", r.texts);
            // Every text is a string of the body, found where its pointer says.
            let mut strings = Vec::new();
            all_strings(&json, &mut strings);
            assert_eq!(parsed.text_pointers.len(), r.texts.len(), "{name}");
            for ((t, ptr), kind) in r.texts.iter().zip(&parsed.text_pointers).zip(&parsed.text_kinds) {
                if *kind == TextKind::Json {
                    // A tool's parameter schema: its keys and strings, found where the pointer says.
                    let v = json.pointer(ptr).unwrap_or_else(|| panic!("{name}: {ptr}"));
                    assert!(v.is_object(), "{name}: {ptr}");
                    let mut inner = Vec::new();
                    all_strings(v, &mut inner);
                    assert!(inner.iter().all(|s| t.text.contains(s)), "{name}: {ptr}: {:?}", t.text);
                    continue;
                }
                assert!(strings.contains(&t.text.as_str()), "{name}: {:?}", t.text);
                assert_eq!(json.pointer(ptr).and_then(Value::as_str), Some(t.text.as_str()), "{name}: {ptr}");
            }
            // Tools: one per `tools[]` / `functions[]` entry in these recordings.
            let offered =
                json["tools"].as_array().map_or(0, Vec::len) + json["functions"].as_array().map_or(0, Vec::len);
            assert_eq!(r.tools.len(), offered, "{name}");
        }
    }
    let per_api: Vec<_> = per_api.into_iter().collect();
    assert_eq!(per_api, vec![("openai-chat", 21), ("openai-completions", 9), ("openai-embeddings", 10)]);
}

#[test]
fn chat_basic_and_azure() {
    for name in ["chat-basic", "azure-chat-basic"] {
        let r = parse(name);
        assert_eq!(r.api, ApiKind::OpenAiChat);
        assert_eq!(r.model, "gpt-5-nano");
        assert!(!r.stream && !r.include_usage);
        assert_eq!(r.max_tokens, None);
        assert_eq!(texts(&r), vec![("user", "Hello!")]);
        assert!(r.tools.is_empty());
    }
}

#[test]
fn chat_multiturn_keeps_roles_in_order() {
    let r = parse("chat-multiturn");
    assert_eq!(
        texts(&r),
        vec![
            ("developer", "You are a helpful assistant."),
            ("user", "Hello!"),
            ("assistant", "Hello! How can I assist you today?"),
            ("user", "Answer in up to 5 words: What's the weather like?"),
        ]
    );
}

#[test]
fn chat_streaming_options() {
    let r = parse("chat-streaming-detailed-usage");
    assert!(r.stream && r.include_usage);
    assert_eq!(r.max_tokens, Some(100));
    assert_eq!(texts(&r), vec![("developer", "Hello, I'm a developer!")]);
    let r = parse("chat-streaming");
    assert!(r.stream && !r.include_usage);
    let r = parse("chat-streaming-web-search");
    assert_eq!(r.model, "gpt-4o-mini-search-preview");
    assert!(r.stream && !r.include_usage);
}

#[test]
fn chat_tools() {
    let r = parse("chat-tools");
    assert_eq!(tools(&r), ["get_current_weather"]);
    let (defs, said): (Vec<_>, Vec<_>) = texts(&r).into_iter().partition(|(role, _)| *role == "tools");
    assert_eq!(said, vec![("user", "What is the weather like in Boston today?")]);
    // The tool's definition is read too: its description and its schema.
    assert!(defs.iter().any(|(_, t)| t.contains("Get the current weather")), "{defs:?}");
    assert!(defs.iter().any(|(_, t)| t.contains("The city and state")), "{defs:?}");
    let r = parse("chat-parallel-tools");
    assert_eq!(tools(&r), ["get_current_weather"]);
    let r = parse("chat-text-to-image-tool");
    assert_eq!(tools(&r), ["generate_image"]);
    assert_eq!(r.max_tokens, Some(150));
    // Two messages, then the tool's definition.
    assert_eq!(r.texts.len(), 4);
    assert!(r.texts[2..].iter().all(|t| t.role == "tools"));
    assert_eq!(r.texts[0].role, "system");
    assert!(r.texts[0].text.starts_with("You are an AI assistant that generates simple, sketch-style images"));
    assert_eq!(r.texts[1].role, "user");
}

#[test]
fn chat_media_parts_are_skipped() {
    let r = parse("chat-image-to-text");
    assert_eq!(texts(&r), vec![("user", "Answer in up to 5 words: What's in this image?")]);
    let r = parse("chat-audio-to-text");
    assert_eq!(texts(&r), vec![("user", "Answer in up to 5 words: What do you hear in this audio?")]);
    let r = parse("chat-multimodal");
    assert_eq!(texts(&r), vec![("user", "What is in this image?")]);
    assert_eq!(r.max_tokens, Some(100));
    let r = parse("chat-text-to-audio");
    assert_eq!(r.model, "gpt-4o-mini-audio-preview");
    assert_eq!(texts(&r), vec![("user", "Say a single short 'beep' sound, as brief as possible.")]);
}

#[test]
fn chat_null_content_and_zero_max_tokens() {
    let r = parse("chat-bad-request");
    assert!(r.texts.is_empty());
    assert_eq!(r.max_tokens, Some(0));
}

#[test]
fn completions() {
    let r = parse("completion-basic");
    assert_eq!(r.api, ApiKind::OpenAiCompletions);
    assert_eq!(r.model, "babbage-002");
    assert_eq!(r.max_tokens, Some(25));
    assert_eq!(
        texts(&r),
        vec![("user", "def fib(n):\n    if n <= 1:\n        return n\n    else:\n        return fib(n-1) + fib(n-2)")]
    );
    let r = parse("completion-text-batch");
    assert_eq!(r.texts.len(), 2);
    assert_eq!(r.texts[1].text, "def fib(n):\n    if n <= 1:\n        return n\n    else:");
    let r = parse("completion-suffix");
    assert_eq!(r.model, "gpt-3.5-turbo-instruct");
    assert_eq!(r.texts.len(), 2);
    assert_eq!(r.texts[1].text, "\nprint(fib(10))");
    let r = parse("completion-streaming-usage");
    assert!(r.stream && r.include_usage);
    let r = parse("completion-token-batch");
    assert!(r.texts.is_empty());
    assert_eq!(r.max_tokens, Some(25));
}

#[test]
fn embeddings() {
    let r = parse("embeddings-basic");
    assert_eq!(r.api, ApiKind::OpenAiEmbeddings);
    assert_eq!(r.model, "text-embedding-3-small");
    assert_eq!(texts(&r), vec![("input", "How do I reset my password?")]);
    assert_eq!(r.max_tokens, None);
    let r = parse("embeddings-mixed-batch");
    assert_eq!(r.texts.len(), 5);
    assert!(r.texts.iter().all(|t| t.role == "input"));
    assert_eq!(r.texts[0].text, "Hello 世界! 🌍");
    assert_eq!(r.texts[2].text, "مرحبا بالعالم");
    let r = parse("embeddings-whitespace");
    assert_eq!(r.texts.len(), 5);
    assert_eq!(r.texts[3].text, "\tTabs\tand\nnewlines\r\neverywhere");
    assert_eq!(r.texts[4].text, "  \n  \t  ");
    let r = parse("embeddings-unknown-model");
    assert_eq!(r.model, "text-embedding-4-ultra");
    assert!(parse("embeddings-tokens").texts.is_empty());
}

#[test]
fn mutated_recorded_bodies_are_rejected_with_the_field_named() {
    let (api, body) = request("chat-basic");
    let json: Value = serde_json::from_str(&body).unwrap();

    let mut v = json.clone();
    v.as_object_mut().unwrap().remove("model");
    match parse_request(api, v.to_string().as_bytes()) {
        Err(Error::InvalidRequest(m)) => assert_eq!(m, "`model` is required"),
        other => panic!("{other:?}"),
    }
    let mut v = json.clone();
    v["model"] = Value::from(4);
    match parse_request(api, v.to_string().as_bytes()) {
        Err(Error::InvalidRequest(m)) => assert_eq!(m, "`model` must be a string"),
        other => panic!("{other:?}"),
    }
    let mut v = json.clone();
    v["messages"] = Value::from("Hello!");
    match parse_request(api, v.to_string().as_bytes()) {
        Err(Error::InvalidRequest(m)) => assert_eq!(m, "`messages` must be an array"),
        other => panic!("{other:?}"),
    }
    let mut v = json.clone();
    v.as_object_mut().unwrap().remove("messages");
    match parse_request(api, v.to_string().as_bytes()) {
        Err(Error::InvalidRequest(m)) => assert_eq!(m, "`messages` is required"),
        other => panic!("{other:?}"),
    }
    // Every strict prefix of the body is invalid JSON.
    for cut in [0, 1, body.len() / 2, body.len() - 1] {
        match parse_request(api, &body.as_bytes()[..cut]) {
            Err(Error::InvalidJson(m)) => assert!(m.contains("EOF"), "{m}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    match parse_request(api, b"[\"Hello!\"]") {
        Err(Error::InvalidJson(m)) => assert!(m.contains("invalid type"), "{m}"),
        other => panic!("{other:?}"),
    }
}
