//! TextRestorer at every split point, JSON-fragment escaping and restore_json
//! on recorded non-streamed bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::Value;
use tollgate_core::pii::MaskMap;
use tollgate_core::restore::{restore_json, TextRestorer};
use tollgate_core::ApiKind;

const EMAIL: &str = "jane@example.com";
const PERSON: &str = "Ann \"Q\" \\ Lee\n";
const PHONE: &str = "+1 555 0100";
const CITY: &str = "Zoë Ünal ✓";

fn map() -> MaskMap {
    let mut m = MaskMap::new(4096);
    assert_eq!(m.placeholder("EMAIL_ADDRESS", EMAIL).unwrap(), "<EMAIL_ADDRESS_1>");
    assert_eq!(m.placeholder("PERSON", PERSON).unwrap(), "<PERSON_1>");
    assert_eq!(m.placeholder("PHONE_NUMBER", PHONE).unwrap(), "<PHONE_NUMBER_1>");
    assert_eq!(m.placeholder("LOCATION", CITY).unwrap(), "<LOCATION_1>");
    m
}

fn boundaries(s: &str) -> Vec<usize> {
    (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect()
}

/// Feed `pieces` and check the streaming invariants after each push.
fn run(map: &MaskMap, mut r: TextRestorer, pieces: &[&str], want: &str) -> String {
    let mut out = String::new();
    for p in pieces {
        r.push(map, p, &mut out);
        assert!(want.starts_with(&out), "emitted {out:?} is not a prefix of {want:?}");
        assert!(r.held().len() < map.max_placeholder_len().max(1), "held {:?}", r.held());
        assert!(r.held().is_empty() || r.held().starts_with('<'));
    }
    r.flush(map, &mut out);
    assert!(!r.is_holding());
    out
}

const TEXT: &str = "Hi <EMAIL_ADDRESS_1>, ring <PHONE_NUMBER_1><PERSON_1> if a<b or <EMAIL_ADDRESS_9> — \
                    ünïcode ✓ <LOCATION_1><<PERSON_1>> <PERSON_ and <EMAIL_ADDRESS_1";

fn text_want() -> String {
    format!(
        "Hi {EMAIL}, ring {PHONE}{PERSON} if a<b or <EMAIL_ADDRESS_9> — ünïcode ✓ {CITY}<{PERSON}> <PERSON_ and <EMAIL_ADDRESS_1"
    )
}

#[test]
fn whole_text_matches_restore_str() {
    let m = map();
    assert_eq!(m.restore_str(TEXT), text_want());
    assert_eq!(run(&m, TextRestorer::new(), &[TEXT], &text_want()), text_want());
}

#[test]
fn every_split_pair() {
    let m = map();
    let want = text_want();
    let b = boundaries(TEXT);
    for (x, &i) in b.iter().enumerate() {
        for &j in &b[x..] {
            let pieces = [&TEXT[..i], &TEXT[i..j], &TEXT[j..]];
            assert_eq!(run(&m, TextRestorer::new(), &pieces, &want), want, "split at {i},{j}");
        }
    }
}

#[test]
fn char_by_char() {
    let m = map();
    let want = text_want();
    let pieces: Vec<String> = TEXT.chars().map(String::from).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    assert_eq!(run(&m, TextRestorer::new(), &refs, &want), want);
}

#[test]
fn holds_only_possible_prefixes() {
    let m = map();
    let mut r = TextRestorer::new();
    let mut out = String::new();
    r.push(&m, "a <b> <FOO", &mut out);
    assert_eq!(out, "a <b> <FOO");
    assert!(!r.is_holding());
    r.push(&m, " x <EMAIL_", &mut out);
    assert_eq!(out, "a <b> <FOO x ");
    assert_eq!(r.held(), "<EMAIL_");
    r.push(&m, "ADDRESS_1> thanks", &mut out);
    assert_eq!(out, format!("a <b> <FOO x {EMAIL} thanks"));
    assert!(!r.is_holding());
    // Empty map: nothing is ever held.
    let empty = MaskMap::new(4096);
    let mut out = String::new();
    r.push(&empty, "<EMAIL_", &mut out);
    assert_eq!(out, "<EMAIL_");
    assert!(!r.is_holding());
}

#[test]
fn json_fragment_every_split_parses() {
    let m = map();
    let src = r#"{"who":"<PERSON_1>","mail":"<EMAIL_ADDRESS_1>","tags":["<LOCATION_1>","<PHONE_NUMBER_1>x","<X_1>"]}"#;
    let b = boundaries(src);
    for (x, &i) in b.iter().enumerate() {
        for &j in b[x..].iter().step_by(3) {
            let mut r = TextRestorer::json_fragment();
            assert!(r.is_json_fragment());
            let mut out = String::new();
            for p in [&src[..i], &src[i..j], &src[j..]] {
                r.push(&m, p, &mut out);
            }
            r.flush(&m, &mut out);
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{i},{j}: {e}: {out}"));
            assert_eq!(v["who"], PERSON);
            assert_eq!(v["mail"], EMAIL);
            assert_eq!(v["tags"][0], CITY);
            assert_eq!(v["tags"][1], format!("{PHONE}x"));
            assert_eq!(v["tags"][2], "<X_1>");
        }
    }
}

#[test]
fn flush_emits_incomplete_verbatim() {
    let m = map();
    let mut r = TextRestorer::json_fragment();
    let mut out = String::new();
    r.push(&m, "\"<PERSON", &mut out);
    assert_eq!(out, "\"");
    r.flush(&m, &mut out);
    assert_eq!(out, "\"<PERSON");
}

#[test]
fn restore_json_openai_chat_tool_call() {
    let m = map();
    let it = common::cassette("chat-tools");
    let mut v: Value = serde_json::from_str(&it.response.body).unwrap();
    let msg = &mut v["choices"][0]["message"];
    msg["content"] = Value::from("Mail <EMAIL_ADDRESS_1> or <X_1>");
    msg["tool_calls"][0]["function"]["arguments"] =
        Value::from(r#"{"location":"<LOCATION_1>","who":"<PERSON_1>","unit":"fahrenheit"}"#);
    let body = serde_json::to_vec(&v).unwrap();
    let out = restore_json(ApiKind::OpenAiChat, &m, &body).expect("changed");
    let got: Value = serde_json::from_slice(&out).unwrap();
    let msg = &got["choices"][0]["message"];
    assert_eq!(msg["content"], format!("Mail {EMAIL} or <X_1>"));
    let args: Value = serde_json::from_str(msg["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["location"], CITY);
    assert_eq!(args["who"], PERSON);
    assert_eq!(args["unit"], "fahrenheit");
    // Everything else unchanged.
    let mut back = got.clone();
    back["choices"][0]["message"] = v["choices"][0]["message"].clone();
    assert_eq!(back, v);
    // The unmodified recorded body has nothing to restore.
    assert_eq!(restore_json(ApiKind::OpenAiChat, &m, it.response.body.as_bytes()), None);
}

#[test]
fn restore_json_anthropic_tool_use() {
    let m = map();
    let raw = common::anthropic("tool.json");
    let mut v: Value = serde_json::from_slice(&raw).unwrap();
    // The recorded text has `<thinking>` tags: not placeholders, kept.
    let text = v["content"][0]["text"].as_str().unwrap().to_owned();
    v["content"][0]["text"] = Value::from(format!("{text} for <PERSON_1>"));
    v["content"][1]["input"]["location"] = Value::from("<LOCATION_1>");
    v["content"][1]["input"]["arguments"] = Value::from("<PERSON_1>");
    let out = restore_json(ApiKind::AnthropicMessages, &m, &serde_json::to_vec(&v).unwrap()).expect("changed");
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got["content"][0]["text"], format!("{text} for {PERSON}"));
    assert_eq!(got["content"][1]["input"]["location"], CITY);
    // Plain strings in Anthropic, even under a key named `arguments`.
    assert_eq!(got["content"][1]["input"]["arguments"], PERSON);
    assert_eq!(restore_json(ApiKind::AnthropicMessages, &m, &raw), None);
}

#[test]
fn restore_json_responses_and_edge_cases() {
    let m = map();
    let body = serde_json::json!({
        "object": "response",
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "to <EMAIL_ADDRESS_1>"}]},
            {"type": "function_call", "name": "f", "arguments": "{\"p\":\"<PERSON_1>\"}"}
        ]
    });
    let out = restore_json(ApiKind::OpenAiResponses, &m, &serde_json::to_vec(&body).unwrap()).unwrap();
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got["output"][0]["content"][0]["text"], format!("to {EMAIL}"));
    let args: Value = serde_json::from_str(got["output"][1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["p"], PERSON);
    // `\u003c`-escaped placeholders (Go encoders) are found too.
    let out = restore_json(ApiKind::OpenAiChat, &m, br#"{"a":"\u003cPHONE_NUMBER_1\u003e"}"#).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["a"], PHONE);
    assert_eq!(restore_json(ApiKind::OpenAiChat, &m, b"not json <PERSON_1>"), None);
    assert_eq!(restore_json(ApiKind::OpenAiChat, &MaskMap::new(64), br#"{"a":"<PERSON_1>"}"#), None);
    assert_eq!(restore_json(ApiKind::OpenAiChat, &m, br#"{"a":"<PERSON_2>"}"#), None);
}
