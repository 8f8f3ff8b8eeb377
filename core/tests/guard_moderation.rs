//! Moderation inside the output guard: a streamed answer gets the verdicts
//! of the same answer sent whole (whatever its split into deltas), a
//! `block` ends the stream before any of the segment leaves, `redact`
//! replaces the segment, `flag` / `log` only record, and harmless answers
//! pass untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_core::guard::{guard_json, JsonGuard, OutputGuard, OutputPolicy};
use tollgate_core::moderation::{Category, ModerationAction, ModerationPolicy, Moderator};
use tollgate_core::pii::MaskMap;
use tollgate_core::restore::SseRestorer;
use tollgate_core::{ApiKind, SseEvent, SseParser};

const INSULT: &str = "You are a worthless, pathetic idiot and a stupid piece of shit.";
const HARMLESS: &str = "The weather in Paris is mild in spring, with occasional rain showers.";

fn guard(actions: &[(Category, ModerationAction)], window: usize) -> Arc<OutputGuard> {
    let policy = ModerationPolicy { output: actions.iter().copied().collect(), ..ModerationPolicy::default() };
    let output = OutputPolicy { entities: BTreeMap::new(), window_bytes: window, ..OutputPolicy::default() };
    Arc::new(OutputGuard::new(&output).unwrap().with_moderation(Moderator::new(&policy).unwrap()))
}

fn chat_json(text: &str) -> Vec<u8> {
    json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
    .to_string()
    .into_bytes()
}

fn stream(pieces: &[&str]) -> Vec<SseEvent> {
    let mut out: Vec<SseEvent> = pieces
        .iter()
        .map(|p| SseEvent {
            data: json!({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0,
                "delta": {"content": p}, "finish_reason": null}]})
            .to_string(),
            ..SseEvent::default()
        })
        .collect();
    out.push(SseEvent { data: "[DONE]".into(), ..SseEvent::default() });
    out
}

/// The stream's bytes and its concatenated content.
fn run(g: &Arc<OutputGuard>, pieces: &[&str]) -> (String, String, SseRestorer) {
    let map = MaskMap::new(0);
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(g.clone());
    let mut out = Vec::new();
    for e in stream(pieces) {
        r.on_event(&map, &e, &mut out);
    }
    r.finish(&map, &mut out);
    let mut p = SseParser::new(1 << 20);
    let mut evs = Vec::new();
    p.feed(&out, &mut evs).unwrap();
    let mut content = String::new();
    for e in evs.iter().filter(|e| !e.is_done()) {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
    }
    (String::from_utf8(out).unwrap(), content, r)
}

/// A long answer: harmless sentences, the insult, harmless sentences.
fn long_answer() -> String {
    let calm = format!("{HARMLESS} ").repeat(6);
    format!("{calm}{INSULT} {calm}")
}

#[test]
fn block_ends_the_stream_before_the_insult_leaves_at_every_split() {
    let g = guard(&[(Category::Harassment, ModerationAction::Block)], 256);
    let text = long_answer();
    assert_eq!(
        guard_json(ApiKind::OpenAiChat, &g, &MaskMap::new(0), &chat_json(&text)),
        JsonGuard::Blocked("moderation:harassment".into())
    );
    let at = text.find(INSULT).unwrap();
    for cut in (at.saturating_sub(40)..at + INSULT.len()).step_by(7) {
        let words: Vec<&str> = text[..cut].split_inclusive(' ').chain(text[cut..].split_inclusive(' ')).collect();
        let (bytes, content, r) = run(&g, &words);
        assert_eq!(r.blocked(), Some("moderation:harassment"), "cut {cut}");
        assert!(!content.contains("worthless") && !content.contains("idiot"), "cut {cut}: {content}");
        assert!(bytes.ends_with("data: [DONE]\n\n") && bytes.contains("output_blocked"), "{bytes}");
        // Text before the insult's segment may have left, nothing of it did.
        assert!(text.starts_with(&content), "cut {cut}: {content}");
    }
}

#[test]
fn redact_gives_the_same_text_streamed_or_whole() {
    let g = guard(&[(Category::Harassment, ModerationAction::Redact)], 256);
    let text = long_answer();
    let JsonGuard::Rewritten(body, labels) = guard_json(ApiKind::OpenAiChat, &g, &MaskMap::new(0), &chat_json(&text))
    else {
        panic!("not redacted")
    };
    assert!(labels.contains(&"moderation:harassment".to_string()), "{labels:?}");
    let whole: Value = serde_json::from_slice(&body).unwrap();
    let whole = whole["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(whole.contains("[MODERATED:harassment]") && !whole.contains("worthless"), "{whole}");
    assert!(whole.contains("occasional rain"), "the harmless sentences stay: {whole}");
    for size in [1, 3, 8, 40, 300] {
        let pieces: Vec<&str> = text.as_bytes().chunks(size).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let (_, content, r) = run(&g, &pieces);
        assert_eq!(content, whole, "deltas of {size} bytes");
        assert!(r.blocked().is_none());
        assert!(r.guard_hits().contains(&"moderation:harassment".to_string()));
    }
}

#[test]
fn flag_and_log_record_without_changing_the_answer() {
    let g = guard(&[(Category::Harassment, ModerationAction::Flag), (Category::Hate, ModerationAction::Log)], 256);
    let text = long_answer();
    match guard_json(ApiKind::OpenAiChat, &g, &MaskMap::new(0), &chat_json(&text)) {
        JsonGuard::Flagged(labels) => assert!(labels.contains(&"moderation:harassment".to_string()), "{labels:?}"),
        other => panic!("{other:?}"),
    }
    let (_, content, r) = run(&g, &text.split_inclusive(' ').collect::<Vec<_>>());
    assert_eq!(content, text);
    assert!(r.guard_hits().contains(&"moderation:harassment".to_string()), "{:?}", r.guard_hits());
    // A harmless answer records nothing.
    let calm = format!("{HARMLESS} ").repeat(8);
    assert_eq!(guard_json(ApiKind::OpenAiChat, &g, &MaskMap::new(0), &chat_json(&calm)), JsonGuard::Unchanged);
    let (_, content, r) = run(&g, &calm.split_inclusive(' ').collect::<Vec<_>>());
    assert_eq!(content, calm);
    assert!(r.guard_hits().is_empty());
}

#[test]
fn a_redaction_inside_tool_arguments_blocks_and_windows_bound_segments() {
    let g = guard(&[(Category::Harassment, ModerationAction::Redact)], 256);
    let body = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
        "content": null, "tool_calls": [{"id": "t", "type": "function",
        "function": {"name": "post", "arguments": json!({"text": INSULT}).to_string()}}]}, "finish_reason": "tool_calls"}]});
    assert_eq!(
        guard_json(ApiKind::OpenAiChat, &g, &MaskMap::new(0), body.to_string().as_bytes()),
        JsonGuard::Blocked("moderation:harassment".into())
    );
    // A small window keeps segments within it: the stream still never
    // releases the insult.
    let small = guard(&[(Category::Harassment, ModerationAction::Block)], 32);
    let text = long_answer();
    let (_, content, r) = run(&small, &text.split_inclusive(' ').collect::<Vec<_>>());
    assert!(!content.contains("idiot"), "{content}");
    assert_eq!(r.blocked(), Some("moderation:harassment"));
}

/// Whether a policy can refuse a whole answer (the sidecar holds JSON
/// answers back only for such policies).
#[test]
fn a_guard_may_block_only_when_its_policy_says_block() {
    assert!(!guard(&[(Category::Hate, ModerationAction::Flag)], 256).may_block());
    assert!(guard(&[(Category::Hate, ModerationAction::Block)], 256).may_block());
    assert!(!OutputGuard::new(&OutputPolicy::default()).unwrap().may_block(), "the default only redacts");
    let blocks_secrets: OutputPolicy = serde_json::from_value(json!({"entities": {"SECRET": "block"}})).unwrap();
    assert!(OutputGuard::new(&blocks_secrets).unwrap().may_block());
    let phrase: OutputPolicy =
        serde_json::from_value(json!({"phrases": [{"id": "p", "phrases": ["bluebird"], "action": "block"}]})).unwrap();
    assert!(OutputGuard::new(&phrase).unwrap().may_block());
}
