//! SseRestorer on the recorded streams, rewritten so the model "says"
//! placeholders split across events, fed through SseParser at many chunk
//! splits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;
use tollgate_core::guard::{OutputGuard, OutputPolicy};
use tollgate_core::pii::MaskMap;
use tollgate_core::restore::SseRestorer;
use tollgate_core::{ApiKind, SseEvent, SseParser};

const EMAIL: &str = "jane@example.com";
const PERSON: &str = "Ann \"Q\" \\ Lee";
const CITY: &str = "Zoë Ünal ✓";
const PHS: [&str; 3] = ["<EMAIL_ADDRESS_1>", "<PERSON_1>", "<LOCATION_1>"];

fn map() -> MaskMap {
    let mut m = MaskMap::new(4096);
    m.placeholder("EMAIL_ADDRESS", EMAIL).unwrap();
    m.placeholder("PERSON", PERSON).unwrap();
    m.placeholder("LOCATION", CITY).unwrap();
    m
}

/// Every text slot of an event: (channel key, text, is JSON fragment).
fn slots(api: ApiKind, v: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let s = |x: &Value| x.as_str().map(str::to_owned);
    match api {
        ApiKind::AnthropicMessages => {
            if v["type"] == "content_block_delta" {
                let d = &v["delta"];
                let (field, json) = match d["type"].as_str().unwrap_or("") {
                    "text_delta" => ("text", false),
                    "thinking_delta" => ("thinking", false),
                    "input_json_delta" => ("partial_json", true),
                    _ => return out,
                };
                out.push((format!("{}/{field}", v["index"]), s(&d[field]).unwrap(), json));
            }
        }
        _ => {
            for c in v["choices"].as_array().into_iter().flatten() {
                let i = &c["index"];
                if let Some(t) = s(&c["text"]) {
                    out.push((format!("{i}/text"), t, false));
                }
                if let Some(t) = s(&c["delta"]["content"]) {
                    out.push((format!("{i}/content"), t, false));
                }
                for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    if let Some(t) = s(&call["function"]["arguments"]) {
                        out.push((format!("{i}/tool/{}", call["index"]), t, true));
                    }
                }
            }
        }
    }
    out
}

/// The one text slot of an event, mutable (fixtures carry one per event).
fn slot_mut(api: ApiKind, v: &mut Value) -> Option<&mut String> {
    let target = match api {
        ApiKind::AnthropicMessages => {
            let field = match v["delta"]["type"].as_str()? {
                "text_delta" => "text",
                "thinking_delta" => "thinking",
                _ => return None,
            };
            &mut v["delta"][field]
        }
        ApiKind::OpenAiCompletions => v.get_mut("choices")?.get_mut(0)?.get_mut("text")?,
        _ => v.get_mut("choices")?.get_mut(0)?.get_mut("delta")?.get_mut("content")?,
    };
    match target {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Make the model say placeholders: in every third text delta, start a
/// placeholder and finish it in the next delta (at a varying cut), and end
/// the channel with an incomplete one that is held until the channel ends.
fn inject(api: ApiKind, events: &mut [SseEvent]) {
    let idx: Vec<usize> = events
        .iter_mut()
        .enumerate()
        .filter_map(|(i, e)| {
            let mut v: Value = serde_json::from_str(&e.data).ok()?;
            slot_mut(api, &mut v).map(|_| i)
        })
        .collect();
    assert!(idx.len() >= 3, "{api:?}: too few text deltas");
    let edit = |e: &mut SseEvent, f: &dyn Fn(&mut String)| {
        let mut v: Value = serde_json::from_str(&e.data).unwrap();
        f(slot_mut(api, &mut v).unwrap());
        e.data = serde_json::to_string(&v).unwrap();
    };
    let mut k = 0;
    while k + 1 < idx.len() {
        let ph = PHS[k % PHS.len()];
        let cut = 1 + k % (ph.len() - 1);
        edit(&mut events[idx[k]], &|s| s.push_str(&format!(" <{}", &ph[1..cut])));
        edit(&mut events[idx[k + 1]], &|s| s.insert_str(0, &ph[cut..]));
        k += 3;
    }
    let last = *idx.last().unwrap();
    edit(&mut events[last], &|s| s.push_str(" <PERSON"));
}

fn to_wire(events: &[SseEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        e.write_to(&mut out);
    }
    out
}

/// Feed `wire` in the given pieces through parser + restorer.
fn restore(api: ApiKind, map: &MaskMap, wire: &[u8], cuts: &[usize]) -> Vec<u8> {
    restore_with(SseRestorer::new(api), map, wire, cuts)
}

fn restore_with(mut r: SseRestorer, map: &MaskMap, wire: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut parser = SseParser::new(1 << 20);
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(wire.len())).collect();
    cuts.sort_unstable();
    cuts.push(wire.len());
    for c in cuts {
        parser.feed(&wire[start..c], &mut events).unwrap();
        start = c;
        for e in events.drain(..) {
            r.on_event(map, &e, &mut out);
        }
    }
    parser.finish(&mut events).unwrap();
    for e in events.drain(..) {
        r.on_event(map, &e, &mut out);
    }
    r.finish(map, &mut out);
    assert!(!r.is_holding());
    assert_eq!(r.held_bytes(), 0);
    out
}

fn kind(api: ApiKind, e: &SseEvent) -> String {
    if e.is_done() {
        return "[DONE]".into();
    }
    let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("not json: {err}: {}", e.data));
    match api {
        ApiKind::AnthropicMessages => v["type"].as_str().unwrap().to_owned(),
        _ => "chunk".into(),
    }
}

/// An event with its text slots removed, to match output to input events.
fn normalized(e: &SseEvent) -> Option<Value> {
    let mut v: Value = serde_json::from_str(&e.data).ok()?;
    if let Some(d) = v.get_mut("delta").and_then(Value::as_object_mut) {
        for k in ["text", "thinking", "partial_json"] {
            d.remove(k);
        }
    }
    for c in v.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
        c.as_object_mut()?.remove("text");
        let Some(d) = c.get_mut("delta").and_then(Value::as_object_mut) else { continue };
        d.remove("content");
        d.remove("refusal");
        if let Some(calls) = d.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for call in calls.iter_mut() {
                if let Some(f) = call.get_mut("function").and_then(Value::as_object_mut) {
                    f.remove("arguments");
                }
            }
            calls.retain(|c| {
                c.as_object().is_some_and(|o| o.len() > 2 || !o["function"].as_object().is_some_and(|f| f.is_empty()))
            });
            if calls.is_empty() {
                d.remove("tool_calls");
            }
        }
    }
    Some(v)
}

fn channels(api: ApiKind, events: &[SseEvent]) -> BTreeMap<String, (String, bool)> {
    let mut out: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.is_done()) {
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else { continue };
        for (k, t, json) in slots(api, &v) {
            let entry = out.entry(k).or_default();
            entry.0.push_str(&t);
            entry.1 = json;
        }
    }
    out
}

/// Every property of one restored stream.
fn check(api: ApiKind, map: &MaskMap, input: &[SseEvent], output: &[u8]) {
    let out = common::parse_all(output);
    // Event types: the input's, in order, plus synthesized deltas only.
    let mut want = input.iter().peekable();
    for e in &out {
        let k = kind(api, e);
        match want.peek() {
            Some(w) if kind(api, w) == k && normalized(w) == normalized(e) => {
                assert_eq!(e.event, w.event);
                want.next();
            }
            _ => {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                match api {
                    ApiKind::AnthropicMessages => {
                        assert_eq!(k, "content_block_delta", "unexpected {}", e.data);
                        assert_eq!(e.event.as_deref(), Some("content_block_delta"));
                    }
                    _ => {
                        assert_eq!(k, "chunk", "unexpected {}", e.data);
                        assert!(v["choices"].as_array().unwrap().iter().all(|c| c["finish_reason"].is_null()));
                        assert!(v["id"].is_string() && v["model"].is_string());
                    }
                }
            }
        }
    }
    assert!(want.next().is_none(), "input events missing from output");
    // Channel texts: the input's with placeholders restored.
    let before = channels(api, input);
    let after = channels(api, &out);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (k, (text, json)) in &before {
        let got = &after[k].0;
        if *json {
            let v: Value = serde_json::from_str(got).unwrap_or_else(|e| panic!("{k}: {e}: {got}"));
            assert!(!v.to_string().contains("_1>"), "{k}: {got}");
        } else {
            assert_eq!(got, &map.restore_str(text), "{k}");
        }
    }
    // No complete placeholder anywhere; every event sits inside its channel.
    let mut open = BTreeMap::new();
    for e in &out {
        for (p, _) in map.entries() {
            assert!(!e.data.contains(p), "{p} left in {}", e.data);
        }
        if e.is_done() {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        match api {
            ApiKind::AnthropicMessages => match v["type"].as_str().unwrap() {
                "content_block_start" => assert!(open.insert(v["index"].to_string(), true).is_none()),
                "content_block_delta" => assert_eq!(open.get(&v["index"].to_string()), Some(&true), "{}", e.data),
                "content_block_stop" => assert_eq!(open.insert(v["index"].to_string(), false), Some(true)),
                _ => {}
            },
            _ => {
                for c in v["choices"].as_array().into_iter().flatten() {
                    let i = c["index"].to_string();
                    assert!(!open.contains_key(&i), "delta after finish: {}", e.data);
                    if !c["finish_reason"].is_null() {
                        open.insert(i, false);
                    }
                }
            }
        }
    }
    if out.iter().any(SseEvent::is_done) {
        assert!(out.last().unwrap().is_done());
    }
}

fn openai(name: &str) -> (ApiKind, Vec<SseEvent>) {
    let it = common::cassette(name);
    let api = common::api_for_url(&it.request.url).unwrap();
    (api, common::parse_all(it.response.body.as_bytes()))
}

/// An OpenAI chat stream with two parallel tool calls whose argument deltas
/// carry placeholders split across chunks.
fn openai_tool_stream() -> Vec<SseEvent> {
    let head = r#""id":"chatcmpl-T","object":"chat.completion.chunk","created":1755137933,"model":"gpt-5-nano""#;
    let call = |i: u32, args: &str| {
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{i},"function":{{"arguments":{}}}}}]}},"finish_reason":null}}]}}"#,
            Value::from(args)
        )
    };
    let data = vec![
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":null,"tool_calls":[{{"index":0,"id":"call_a","type":"function","function":{{"name":"send","arguments":""}}}}]}},"finish_reason":null}}]}}"#
        ),
        call(0, r#"{"to":"<EMAIL_ADD"#),
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":1,"id":"call_b","type":"function","function":{{"name":"greet","arguments":"{{\"who\":\"<PER"}}}}]}},"finish_reason":null}}]}}"#
        ),
        call(0, r#"RESS_1>","cc":"<LOCATION_1>"}"#),
        call(1, r#"SON_1> & <"#),
        call(1, r#"LOCATION_1>"}"#),
        format!(r#"{{{head},"choices":[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}]}}"#),
        "[DONE]".to_owned(),
    ];
    data.into_iter().map(|data| SseEvent { data, ..SseEvent::default() }).collect()
}

/// The streams under test, with placeholders injected.
fn streams() -> Vec<(String, ApiKind, Vec<SseEvent>)> {
    let mut out = Vec::new();
    for name in ["chat-streaming", "chat-streaming-web-search", "completion-streaming", "completion-streaming-usage"] {
        let (api, mut events) = openai(name);
        inject(api, &mut events);
        out.push((name.to_owned(), api, events));
    }
    for name in ["stream_basic.json", "stream_thinking.json"] {
        let mut events = common::parse_all(&common::anthropic(name));
        inject(ApiKind::AnthropicMessages, &mut events);
        out.push((name.to_owned(), ApiKind::AnthropicMessages, events));
    }
    // Anthropic tool use: the location argument names placeholders, split.
    let mut events = common::parse_all(&common::anthropic("stream_tool.json"));
    let deltas: Vec<usize> = (0..events.len()).filter(|&i| events[i].data.contains("input_json_delta")).collect();
    assert_eq!(deltas.len(), 2);
    events[deltas[0]].data = events[deltas[0]].data.replace(r#"{\"location\":"#, r#"{\"location\":\"<PERS"#);
    events[deltas[1]].data = events[deltas[1]].data.replace(r#"\"San Francisco\"}"#, r#"ON_1> in <LOCATION_1>\"}"#);
    out.push(("stream_tool.json".into(), ApiKind::AnthropicMessages, events));
    out.push(("openai-tools".into(), ApiKind::OpenAiChat, openai_tool_stream()));
    out
}

#[test]
fn injected_streams_restore_in_one_chunk() {
    let m = map();
    for (name, api, events) in streams() {
        let wire = to_wire(&events);
        let out = restore(api, &m, &wire, &[]);
        check(api, &m, &events, &out);
        assert_ne!(out, wire, "{name}: nothing restored");
    }
}

#[test]
fn tool_arguments_restored_as_json() {
    let m = map();
    let all = streams();
    let (_, _, events) = all.iter().find(|s| s.0 == "stream_tool.json").unwrap();
    let out = common::parse_all(&restore(ApiKind::AnthropicMessages, &m, &to_wire(events), &[]));
    let ch = channels(ApiKind::AnthropicMessages, &out);
    let args: Value = serde_json::from_str(&ch["0/partial_json"].0).unwrap();
    assert_eq!(args["location"], format!("{PERSON} in {CITY}"));

    let events = openai_tool_stream();
    let out = common::parse_all(&restore(ApiKind::OpenAiChat, &m, &to_wire(&events), &[]));
    let ch = channels(ApiKind::OpenAiChat, &out);
    let a: Value = serde_json::from_str(&ch["0/tool/0"].0).unwrap();
    let b: Value = serde_json::from_str(&ch["0/tool/1"].0).unwrap();
    assert_eq!(a, serde_json::json!({"to": EMAIL, "cc": CITY}));
    assert_eq!(b, serde_json::json!({"who": format!("{PERSON} & {CITY}")}));
}

#[test]
fn anthropic_text_split_across_events_restores() {
    let m = map();
    let mut events = common::parse_all(&common::anthropic("stream_basic.json"));
    inject(ApiKind::AnthropicMessages, &mut events);
    let out = common::parse_all(&restore(ApiKind::AnthropicMessages, &m, &to_wire(&events), &[]));
    let text = &channels(ApiKind::AnthropicMessages, &out)["0/text"].0;
    assert!(text.contains(EMAIL), "{text}");
    // The trailing incomplete `<PERSON` was held and flushed verbatim before
    // content_block_stop.
    assert!(text.ends_with(" <PERSON"), "{text}");
}

#[test]
fn every_split_point_small_stream() {
    let m = map();
    let all = streams();
    for name in ["stream_tool.json", "openai-tools"] {
        let (_, api, events) = all.iter().find(|s| s.0 == name).unwrap();
        let wire = to_wire(events);
        let whole = restore(*api, &m, &wire, &[]);
        for cut in 0..=wire.len() {
            assert_eq!(restore(*api, &m, &wire, &[cut]), whole, "{name} split at {cut}");
        }
    }
}

#[test]
fn truncated_stream_flushes_on_finish() {
    let m = map();
    for (name, api, mut events) in streams() {
        // Cut the stream right after a delta that leaves text held.
        let mut r = SseRestorer::new(api);
        let mut sink = Vec::new();
        let Some(stop) = (0..events.len()).find(|&i| {
            r.on_event(&m, &events[i], &mut sink);
            r.is_holding()
        }) else {
            continue;
        };
        events.truncate(stop + 1);
        let out = restore(api, &m, &to_wire(&events), &[]);
        let got = channels(api, &common::parse_all(&out));
        let want = channels(api, &events);
        for (k, (text, json)) in &want {
            if !json {
                assert_eq!(got[k].0, m.restore_str(text), "{name} {k}");
            }
        }
    }
}

#[test]
fn recorded_streams_unchanged_without_placeholders() {
    let m = map();
    for (name, api, wire) in common::recorded_streams() {
        let input = common::parse_all(&wire);
        assert_eq!(common::parse_all(&restore(api, &m, &wire, &[])), input, "{name}");
        assert_eq!(common::parse_all(&restore(api, &MaskMap::new(64), &wire, &[])), input, "{name}");
    }
}

#[test]
fn empty_map_passes_through_and_non_json_ends_the_stream() {
    let all = streams();
    for (name, api, events) in &all {
        let wire = to_wire(events);
        assert_eq!(restore(*api, &MaskMap::new(64), &wire, &[]), wire, "{name}");
    }
    // An event that cannot be read is never passed on: one error event and
    // the end marker instead, then nothing.
    let m = map();
    let e = SseEvent { event: Some("x".into()), data: "not json <EMAIL_ADDRESS_1>".into(), id: Some("7".into()) };
    let mut out = Vec::new();
    let mut r = SseRestorer::new(ApiKind::OpenAiChat);
    r.on_event(&m, &e, &mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("upstream_invalid_event") && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("not json"), "{text}");
    assert!(r.is_ended());
    r.on_event(&m, &SseEvent { event: None, data: "{}".into(), id: None }, &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), text);
    // The same with no placeholder in the event (which the restorer would
    // otherwise pass as it came) and with nothing masked at all: an event
    // is read before it is passed on, whatever the restorer has to do.
    for m in [map(), MaskMap::new(64)] {
        let mut out = Vec::new();
        let mut r = SseRestorer::new(ApiKind::AnthropicMessages);
        let bad = SseEvent { event: Some("content_block_delta".into()), data: "<html>502</html>".into(), id: None };
        let keep_alive = SseEvent { event: Some("ping".into()), data: String::new(), id: None };
        r.on_event(&m, &keep_alive, &mut out);
        r.on_event(&m, &bad, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: ping\n"), "a keep-alive passes: {text}");
        assert!(text.contains("event: error") && text.contains("not JSON"), "{text}");
        assert!(!text.contains("<html>") && r.is_ended(), "{text}");
    }
}

/// The default output guard (the events are then all read).
fn guarded() -> std::sync::Arc<OutputGuard> {
    std::sync::Arc::new(OutputGuard::new(&OutputPolicy::default()).unwrap())
}

#[test]
fn a_provider_error_ends_the_stream_and_a_missing_end_marker_is_reported() {
    let m = map();
    let chunk = |s: &str| SseEvent {
        event: None,
        data: serde_json::json!({"choices": [{"index": 0, "delta": {"content": s}}]}).to_string(),
        id: None,
    };
    // An OpenAI error event: passed on after the text before it, then [DONE].
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(guarded());
    let mut out = Vec::new();
    r.on_event(&m, &chunk("Hello "), &mut out);
    let error =
        SseEvent { event: None, data: serde_json::json!({"error": {"message": "overloaded"}}).to_string(), id: None };
    r.on_event(&m, &error, &mut out);
    r.on_event(&m, &chunk("after"), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Hello") && text.contains("overloaded") && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("after"), "{text}");
    // A stream that ends without [DONE] was cut short: the client is told.
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(guarded());
    let mut out = Vec::new();
    r.on_event(&m, &chunk("partial"), &mut out);
    assert!(r.end_of_stream(&m, &mut out));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("partial") && text.contains("upstream_stream_truncated"), "{text}");
    // With its end marker, nothing is added; Gemini streams have none.
    for (api, last) in [
        (ApiKind::OpenAiChat, SseEvent { event: None, data: "[DONE]".into(), id: None }),
        (
            ApiKind::AnthropicMessages,
            SseEvent {
                event: Some("message_stop".into()),
                data: serde_json::json!({"type": "message_stop"}).to_string(),
                id: None,
            },
        ),
        (
            ApiKind::GeminiGenerate,
            SseEvent { event: None, data: serde_json::json!({"candidates": []}).to_string(), id: None },
        ),
    ] {
        let mut r = SseRestorer::new(api);
        let mut out = Vec::new();
        r.on_event(&m, &last, &mut out);
        assert!(!r.end_of_stream(&m, &mut out), "{api:?}");
        assert_eq!(out, last.to_bytes(), "{api:?}");
    }
}

#[test]
fn responses_api_deltas_and_done_events() {
    let m = map();
    let ev = |ty: &str, v: Value| SseEvent { event: Some(ty.into()), data: v.to_string(), id: None };
    let input = vec![
        ev(
            "response.output_text.delta",
            serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi <EMAIL_"}),
        ),
        ev(
            "response.output_text.delta",
            serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"ADDRESS_1> <LOC"}),
        ),
        ev(
            "response.output_text.done",
            serde_json::json!({"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi <EMAIL_ADDRESS_1> <LOC"}),
        ),
        ev(
            "response.function_call_arguments.delta",
            serde_json::json!({"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":1,"delta":"{\"p\":\"<PERS"}),
        ),
        ev(
            "response.function_call_arguments.delta",
            serde_json::json!({"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":1,"delta":"ON_1>\"}"}),
        ),
        ev(
            "response.function_call_arguments.done",
            serde_json::json!({"type":"response.function_call_arguments.done","item_id":"fc_1","output_index":1,"arguments":"{\"p\":\"<PERSON_1>\"}"}),
        ),
    ];
    let out = common::parse_all(&restore(ApiKind::OpenAiResponses, &m, &to_wire(&input), &[]));
    let types: Vec<&str> = out.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done"
        ]
    );
    let vals: Vec<Value> = out.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let text: String = vals[..3].iter().map(|v| v["delta"].as_str().unwrap()).collect();
    assert_eq!(text, format!("Hi {EMAIL} <LOC"));
    assert_eq!(vals[2]["item_id"], "msg_1");
    assert_eq!(vals[3]["text"], format!("Hi {EMAIL} <LOC"));
    let args: String = vals[4..6].iter().map(|v| v["delta"].as_str().unwrap()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap()["p"], PERSON);
    let done: Value = serde_json::from_str(vals[6]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(done["p"], PERSON);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_splits_match_one_chunk(cuts in proptest::collection::vec(0usize..40_000, 0..40)) {
        let m = map();
        for (name, api, events) in streams() {
            let wire = to_wire(&events);
            let whole = restore(api, &m, &wire, &[]);
            let split = restore(api, &m, &wire, &cuts);
            prop_assert_eq!(&split, &whole, "{}", name);
            check(api, &m, &events, &split);
        }
    }
}

/// Events as (name, JSON data) so that key order does not count: the
/// general path writes keys sorted, the splicing path keeps the provider's.
fn as_values(wire: &[u8]) -> Vec<(Option<String>, Value)> {
    common::parse_all(wire)
        .into_iter()
        .map(|e| {
            let v = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone()));
            (e.event, v)
        })
        .collect()
}

/// Text deltas take a splicing path (no JSON tree); every other event the
/// general one. Both must give the same answer, with and without the output
/// guard (which shifts text across events), at any chunking.
#[test]
fn splicing_path_matches_general_path() {
    let m = map();
    const LEAK: &str = " key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z ok";
    for window in [None, Some(16), Some(256)] {
        let guard = window.map(|w| {
            let policy = OutputPolicy { window_bytes: w, ..OutputPolicy::default() };
            std::sync::Arc::new(OutputGuard::new(&policy).unwrap())
        });
        for (name, api, mut events) in streams() {
            // A secret the model "leaks", split over two text deltas.
            let texts: Vec<usize> = (0..events.len())
                .filter(|&i| events[i].data.contains("content\":\"") || events[i].data.contains("\"text\":\""))
                .collect();
            if let [a, b, ..] = texts[..] {
                for (i, part) in [(a, &LEAK[..20]), (b, &LEAK[20..])] {
                    let mut v: Value = serde_json::from_str(&events[i].data).unwrap();
                    if let Some(s) = slot_mut(api, &mut v) {
                        s.push_str(part);
                        events[i].data = serde_json::to_string(&v).unwrap();
                    }
                }
            }
            let wire = to_wire(&events);
            let make = |general: bool| {
                let r = SseRestorer::new(api);
                let r = match &guard {
                    Some(g) => r.with_guard(std::sync::Arc::clone(g)),
                    None => r,
                };
                if general {
                    r.general_path_only()
                } else {
                    r
                }
            };
            for cuts in [vec![], vec![wire.len() / 3, 2 * wire.len() / 3], (1..wire.len()).step_by(7).collect()] {
                let fast = restore_with(make(false), &m, &wire, &cuts);
                let general = restore_with(make(true), &m, &wire, &cuts);
                assert_eq!(as_values(&fast), as_values(&general), "{name}, window {window:?}, {} cuts", cuts.len());
                if window.is_some() && texts.len() >= 2 {
                    let all = String::from_utf8_lossy(&fast).to_string();
                    assert!(!all.contains("sk-proj-Ab3d"), "{name}: secret leaked");
                }
            }
        }
    }
}
