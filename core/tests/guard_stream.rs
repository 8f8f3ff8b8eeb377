//! SseRestorer with an OutputGuard: secrets split across deltas are redacted,
//! blocks end the stream with one error event, no guard changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_core::guard::{GuardAction, OutputGuard, OutputPolicy, PhraseRule};
use tollgate_core::pii::MaskMap;
use tollgate_core::restore::SseRestorer;
use tollgate_core::{ApiKind, SseEvent, SseParser};

const KEY: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";

fn guard(window: usize) -> Arc<OutputGuard> {
    let policy = OutputPolicy {
        phrases: vec![PhraseRule {
            id: "internal".into(),
            phrases: vec!["project nightingale".into()],
            action: GuardAction::Block,
        }],
        window_bytes: window,
        ..OutputPolicy::default()
    };
    Arc::new(OutputGuard::new(&policy).unwrap())
}

fn ev(data: String) -> SseEvent {
    SseEvent { data, ..SseEvent::default() }
}

fn named(name: &str, data: Value) -> SseEvent {
    SseEvent { event: Some(name.into()), data: data.to_string(), id: None }
}

const HEAD: &str = r#""id":"chatcmpl-T","object":"chat.completion.chunk","created":1,"model":"m""#;

fn openai_stream(pieces: &[&str], args: &[&str]) -> Vec<SseEvent> {
    let mut out = vec![ev(format!(
        r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#
    ))];
    for p in pieces {
        out.push(ev(format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}]}}"#,
            Value::from(*p)
        )));
    }
    for a in args {
        out.push(ev(format!(
            r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}},"finish_reason":null}}]}}"#,
            Value::from(*a)
        )));
    }
    out.push(ev(format!(r#"{{{HEAD},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#)));
    out.push(ev("[DONE]".into()));
    out
}

fn anthropic_stream(pieces: &[&str], json_pieces: &[&str]) -> Vec<SseEvent> {
    let mut out = vec![
        named("message_start", json!({"type": "message_start", "message": {"id": "msg", "content": []}})),
        named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for p in pieces {
        out.push(named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    out.push(named("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    if !json_pieces.is_empty() {
        out.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        ));
        for p in json_pieces {
            out.push(named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}),
            ));
        }
        out.push(named("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
    }
    out.push(named("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}})));
    out.push(named("message_stop", json!({"type": "message_stop"})));
    out
}

fn run(_api: ApiKind, r: &mut SseRestorer, map: &MaskMap, events: &[SseEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        r.on_event(map, e, &mut out);
    }
    r.finish(map, &mut out);
    out
}

fn parse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new(1 << 20);
    let mut out = Vec::new();
    p.feed(bytes, &mut out).unwrap();
    let before = out.len();
    p.finish(&mut out).unwrap();
    assert_eq!(out.len(), before, "output ends with a complete event");
    out
}

/// Concatenated text per channel; asserts every event is JSON or [DONE].
fn texts(api: ApiKind, bytes: &[u8]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for e in parse(bytes) {
        if e.is_done() {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("not JSON: {}", e.data));
        match api {
            ApiKind::AnthropicMessages => {
                if v["type"] == "content_block_delta" {
                    let d = &v["delta"];
                    if let Some(t) = d["text"].as_str().or(d["partial_json"].as_str()).or(d["thinking"].as_str()) {
                        m.entry(format!("{}", v["index"])).or_default().push_str(t);
                    }
                }
            }
            _ => {
                for c in v["choices"].as_array().into_iter().flatten() {
                    if let Some(t) = c["delta"]["content"].as_str() {
                        m.entry("content".into()).or_default().push_str(t);
                    }
                    for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                        if let Some(t) = call["function"]["arguments"].as_str() {
                            m.entry("args".into()).or_default().push_str(t);
                        }
                    }
                }
            }
        }
    }
    m
}

fn split3(s: &str, i: usize, j: usize, k: usize) -> Vec<&str> {
    vec![&s[..i], &s[i..j], &s[j..k], &s[k..]]
}

#[test]
fn secret_split_across_deltas_is_redacted_openai() {
    let prefix = "Sure. ".repeat(12); // longer than the window: text is released mid-stream
    let text = format!("{prefix}Your key is {KEY} and it works.");
    let args = format!("{{\"key\":\"{KEY}\",\"n\":1}}");
    let start = prefix.len() + "Your key is ".len();
    let expected = format!("{prefix}Your key is [REDACTED_SECRET] and it works.");
    let expected_args = "{\"key\":\"[REDACTED_SECRET]\",\"n\":1}";
    let g = guard(32);
    let map = MaskMap::new(4096);
    let mut n = 0;
    for i in (start - 3..start + KEY.len()).step_by(3) {
        for j in (i + 1..start + KEY.len() + 3).step_by(4) {
            let k = (j + 5).min(text.len() - 1);
            let pieces = split3(&text, i, j, k);
            let ai = (i + 8).saturating_sub(start).clamp(1, args.len() - 3);
            let apieces = split3(&args, ai, ai + 1, ai + 2);
            let events = openai_stream(&pieces, &apieces);
            let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(g.clone());
            let out = run(ApiKind::OpenAiChat, &mut r, &map, &events);
            let s = String::from_utf8(out.clone()).unwrap();
            assert!(!s.contains(&KEY[..24]), "leaked at {i},{j},{k}: {s}");
            let t = texts(ApiKind::OpenAiChat, &out);
            assert_eq!(t["content"], expected, "split {i},{j},{k}");
            assert_eq!(t["args"], expected_args, "split {i},{j},{k}");
            assert_eq!(r.guard_hits(), ["SECRET".to_string()]);
            assert!(r.blocked().is_none());
            assert!(!r.is_holding());
            assert!(s.ends_with("data: [DONE]\n\n"));
            n += 1;
        }
    }
    assert!(n > 50);
}

#[test]
fn secret_split_across_deltas_is_redacted_anthropic() {
    let text = format!("Key: {KEY}\nDone, and some more trailing words here to pass the window.");
    let args = format!("{{\"key\": \"{KEY}\"}}");
    let expected = text.replace(KEY, "[REDACTED_SECRET]");
    let g = guard(24);
    let map = MaskMap::new(4096);
    for i in 1..KEY.len() + 4 {
        for j in (i + 1..KEY.len() + 8).step_by(5) {
            let k = j + 3;
            let events = anthropic_stream(&split3(&text, i, j, k), &split3(&args, i.min(20), j.min(30), k.min(35)));
            let mut r = SseRestorer::new(ApiKind::AnthropicMessages).with_guard(g.clone());
            let out = run(ApiKind::AnthropicMessages, &mut r, &map, &events);
            let s = String::from_utf8(out.clone()).unwrap();
            assert!(!s.contains(&KEY[..24]), "leaked at {i},{j}: {s}");
            let t = texts(ApiKind::AnthropicMessages, &out);
            assert_eq!(t["0"], expected, "split {i},{j}");
            assert_eq!(t["1"], "{\"key\": \"[REDACTED_SECRET]\"}", "split {i},{j}");
            // Every event in order, the stream's structure kept.
            let names: Vec<_> = parse(&out).into_iter().map(|e| e.event.unwrap()).collect();
            assert_eq!(names.last().unwrap(), "message_stop");
            assert_eq!(names.iter().filter(|n| *n == "content_block_stop").count(), 2);
        }
    }
}

#[test]
fn request_secret_is_restored_not_redacted() {
    let mut map = MaskMap::new(4096);
    let ph = map.placeholder("SECRET", KEY).unwrap();
    let text = format!("Your key {ph} is set.");
    let cut = "Your key ".len() + 4;
    let events = openai_stream(&[&text[..cut], &text[cut..cut + 3], &text[cut + 3..]], &[]);
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(guard(24));
    let out = run(ApiKind::OpenAiChat, &mut r, &map, &events);
    assert_eq!(texts(ApiKind::OpenAiChat, &out)["content"], format!("Your key {KEY} is set."));
    assert!(r.guard_hits().is_empty());
}

#[test]
fn block_mid_stream_openai() {
    let pieces = ["Hello there. ", "About Project Night", "ingale: it ", "ships soon.", " More text."];
    let events = openai_stream(&pieces, &[]);
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(guard(24));
    let out = run(ApiKind::OpenAiChat, &mut r, &MaskMap::new(4096), &events);
    assert_eq!(r.blocked(), Some("internal"));
    let s = String::from_utf8(out.clone()).unwrap();
    assert!(!s.to_lowercase().contains("nightingale"), "{s}");
    let evs = parse(&out);
    let errors: Vec<usize> = (0..evs.len()).filter(|&i| evs[i].data.contains("\"error\"")).collect();
    assert_eq!(errors.len(), 1, "{s}");
    let e = errors[0];
    assert_eq!(e + 2, evs.len(), "only [DONE] after the error: {s}");
    assert!(evs[e + 1].is_done());
    let v: Value = serde_json::from_str(&evs[e].data).unwrap();
    assert_eq!(v["error"]["code"], "output_blocked");
    assert_eq!(v["error"]["type"], "server_error");
    for x in &evs[..e] {
        serde_json::from_str::<Value>(&x.data).unwrap();
    }
    // Later events and finish stay silent.
    let mut more = Vec::new();
    r.on_event(&MaskMap::new(4096), &events[1], &mut more);
    r.finish(&MaskMap::new(4096), &mut more);
    assert!(more.is_empty());
}

#[test]
fn block_mid_stream_anthropic_and_responses() {
    let events = anthropic_stream(&["Hi. ", "project night", "ingale", " is ", "secret stuff and more"], &[]);
    let mut r = SseRestorer::new(ApiKind::AnthropicMessages).with_guard(guard(24));
    let out = run(ApiKind::AnthropicMessages, &mut r, &MaskMap::new(4096), &events);
    let evs = parse(&out);
    assert_eq!(r.blocked(), Some("internal"));
    let last = evs.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(evs.iter().filter(|e| e.event.as_deref() == Some("error")).count(), 1);
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(!String::from_utf8(out).unwrap().contains("ingale"));

    let delta = |d: &str| {
        named(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": d}),
        )
    };
    let events = vec![
        named(
            "response.created",
            json!({"type": "response.created", "response": {"object": "response", "output": []}}),
        ),
        delta("ok then "),
        delta("Project Nigh"),
        delta("tingale"),
        delta(" and lots of trailing text"),
        named(
            "response.output_text.done",
            json!({"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": "x"}),
        ),
        named("response.completed", json!({"type": "response.completed", "response": {"object": "response"}})),
    ];
    let mut r = SseRestorer::new(ApiKind::OpenAiResponses).with_guard(guard(24));
    let out = run(ApiKind::OpenAiResponses, &mut r, &MaskMap::new(4096), &events);
    let evs = parse(&out);
    assert_eq!(evs.last().unwrap().event.as_deref(), Some("error"));
    assert_eq!(evs.iter().filter(|e| e.event.as_deref() == Some("error")).count(), 1);
    let v: Value = serde_json::from_str(&evs.last().unwrap().data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "output_blocked");
}

#[test]
fn responses_done_events_are_guarded() {
    let delta = |d: &str| {
        named(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": d}),
        )
    };
    let full = format!("k={KEY}!");
    let events = vec![
        delta("k="),
        delta(&KEY[..10]),
        delta(&KEY[10..30]),
        delta(&format!("{}!", &KEY[30..])),
        named(
            "response.output_text.done",
            json!({"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": full}),
        ),
        named(
            "response.completed",
            json!({"type": "response.completed", "response": {"object": "response", "output": [{"type": "message", "content": [{"type": "output_text", "text": full}]}]}}),
        ),
    ];
    let mut r = SseRestorer::new(ApiKind::OpenAiResponses).with_guard(guard(24));
    let out = run(ApiKind::OpenAiResponses, &mut r, &MaskMap::new(4096), &events);
    let s = String::from_utf8(out.clone()).unwrap();
    assert!(!s.contains(&KEY[..20]), "{s}");
    let mut deltas = String::new();
    for e in parse(&out) {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if let Some(d) = v["delta"].as_str() {
            deltas.push_str(d);
        }
    }
    assert_eq!(deltas, "k=[REDACTED_SECRET]!");
    assert_eq!(s.matches("[REDACTED_SECRET]").count(), 3);
}

#[test]
fn no_guard_or_inactive_guard_is_byte_identical() {
    let inactive =
        Arc::new(OutputGuard::new(&OutputPolicy { entities: BTreeMap::new(), ..OutputPolicy::default() }).unwrap());
    let mut map = MaskMap::new(4096);
    map.placeholder("EMAIL_ADDRESS", "jane@example.com").unwrap();
    let mut seen = 0;
    for (name, api, bytes) in common::recorded_streams() {
        let events = common::parse_all(&bytes);
        for m in [MaskMap::new(4096), map.clone()] {
            let plain = run(api, &mut SseRestorer::new(api), &m, &events);
            let with = run(api, &mut SseRestorer::new(api).with_guard(inactive.clone()), &m, &events);
            assert_eq!(plain, with, "{name}");
            if m.is_empty() {
                let mut wire = Vec::new();
                for e in &events {
                    e.write_to(&mut wire);
                }
                assert_eq!(plain, wire, "{name}: no map, no guard = input");
            }
            // An active guard that finds nothing keeps every channel's text.
            if matches!(api, ApiKind::OpenAiChat | ApiKind::AnthropicMessages) {
                let active = run(api, &mut SseRestorer::new(api).with_guard(guard(24)), &m, &events);
                assert_eq!(texts(api, &active), texts(api, &plain), "{name}");
            }
        }
        seen += 1;
    }
    assert!(seen > 3);
}

/// A stream of few-byte deltas is released in steps of an eighth of the
/// window, never byte by byte (each release scans the whole window), and
/// never with less than the window held back before the end.
#[test]
fn guarded_text_is_released_in_steps() {
    let window = 64;
    let words: Vec<String> = (0..120).map(|i| format!("w{:02} ", i % 100)).collect();
    let pieces: Vec<&str> = words.iter().map(String::as_str).collect();
    let events = openai_stream(&pieces, &[]);
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(guard(window));
    let map = MaskMap::new(1024);
    let (mut sent, mut received, mut releases) = (0usize, 0usize, 0usize);
    for e in &events[..events.len() - 2] {
        let mut out = Vec::new();
        r.on_event(&map, e, &mut out);
        let mut wire = Vec::new();
        e.write_to(&mut wire);
        sent += texts(ApiKind::OpenAiChat, &wire).get("content").map_or(0, String::len);
        let got = texts(ApiKind::OpenAiChat, &out).get("content").map_or(0, String::len);
        if got > 0 {
            releases += 1;
            assert!(got >= window / 8, "released {got} bytes at once");
        }
        received += got;
        assert!(sent - received >= window.min(sent), "only {} bytes held back", sent - received);
        assert!(sent - received < window + window / 8 + 4, "{} bytes held back", sent - received);
    }
    let total = words.concat().len();
    assert_eq!(sent, total);
    assert!(releases > 10 && releases < total / (window / 8), "{releases} releases");
    let rest = run(ApiKind::OpenAiChat, &mut r, &map, &events[events.len() - 2..]);
    assert_eq!(received + texts(ApiKind::OpenAiChat, &rest)["content"].len(), total);
}

#[test]
fn end_with_error_flushes_guarded_text_then_ends_the_stream() {
    let map = MaskMap::new(4096);
    // OpenAI: text still held in the guard's window comes out (redacted),
    // then the error and `[DONE]`; nothing after.
    let events = openai_stream(&["Hello there, the key is ", KEY, " and then more"], &[]);
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(guard(64));
    let mut out = Vec::new();
    for e in &events[..3] {
        r.on_event(&map, e, &mut out);
    }
    assert!(r.is_holding() && !r.is_ended());
    r.end_with_error(&map, "the answer could not be inspected", "upstream_event_too_large", &mut out);
    assert!(r.is_ended());
    assert_eq!(r.blocked(), None);
    let s = String::from_utf8(out.clone()).unwrap();
    assert!(!s.contains(KEY) && s.contains("[REDACTED_SECRET]"), "held text is flushed, guarded: {s}");
    let evs = parse(&out);
    let n = evs.len();
    assert!(evs[n - 1].is_done(), "{s}");
    let v: Value = serde_json::from_str(&evs[n - 2].data).unwrap();
    assert_eq!(v["error"]["code"], "upstream_event_too_large", "{s}");
    assert_eq!(v["error"]["message"], "the answer could not be inspected");
    // Later events, finish and a second end write nothing.
    let mut more = Vec::new();
    for e in &events[3..] {
        r.on_event(&map, e, &mut more);
    }
    r.finish(&map, &mut more);
    r.end_with_error(&map, "again", "again", &mut more);
    assert!(more.is_empty(), "{}", String::from_utf8_lossy(&more));

    // A block hit in the held text ends the stream with the block event instead (one error only).
    let events = anthropic_stream(&["Hi. ", "project night", "ingale"], &[]);
    let mut r = SseRestorer::new(ApiKind::AnthropicMessages).with_guard(guard(64));
    let mut out = Vec::new();
    for e in &events[..5] {
        r.on_event(&map, e, &mut out);
    }
    r.end_with_error(&map, "cut", "upstream_event_too_large", &mut out);
    assert_eq!(r.blocked(), Some("internal"));
    let evs = parse(&out);
    assert_eq!(evs.iter().filter(|e| e.event.as_deref() == Some("error")).count(), 1);
    let last = evs.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert!(last.data.contains("output policy"), "{}", last.data);
    assert!(!String::from_utf8(out).unwrap().contains("ingale"));
}
