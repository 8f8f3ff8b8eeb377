//! OutputGuard: policy, check() on complete texts, guard_json on bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tollgate_core::guard::{
    guard_json, guard_json_usage, GuardAction, GuardOutcome, JsonGuard, OutputGuard, OutputPolicy, PhraseRule,
};
use tollgate_core::pii::MaskMap;
use tollgate_core::{usage_from_json, ApiKind, Error};

const OPENAI_KEY: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLQ";

fn guard_with(policy: OutputPolicy) -> OutputGuard {
    OutputGuard::new(&policy).unwrap()
}

fn phrase_policy() -> OutputPolicy {
    OutputPolicy {
        phrases: vec![
            PhraseRule { id: "competitor".into(), phrases: vec!["Acme Corp".into()], action: GuardAction::Redact },
            PhraseRule {
                id: "internal".into(),
                phrases: vec!["project nightingale".into()],
                action: GuardAction::Block,
            },
        ],
        ..OutputPolicy::default()
    }
}

#[test]
fn policy_defaults_and_serde() {
    let p: OutputPolicy = serde_json::from_value(json!({})).unwrap();
    assert_eq!(p, OutputPolicy::default());
    assert_eq!(p.window_bytes, 256);
    assert_eq!(p.entities, BTreeMap::from([("SECRET".to_string(), GuardAction::Redact)]));
    let p: OutputPolicy = serde_json::from_value(json!({
        "entities": {"SECRET": "block", "EMAIL_ADDRESS": "redact"},
        "phrases": [{"id": "x", "phrases": ["foo bar"], "action": "redact"}],
        "windowBytes": 64
    }))
    .unwrap();
    assert_eq!(p.entities["SECRET"], GuardAction::Block);
    assert_eq!(p.window_bytes, 64);
    p.validate().unwrap();
    assert!(serde_json::from_value::<OutputPolicy>(json!({"window_bytes": 64})).is_err());
    assert!(serde_json::from_value::<OutputPolicy>(json!({"entities": {"SECRET": "mask"}})).is_err());
}

#[test]
fn policy_validation_names_fields() {
    let path = |p: OutputPolicy| match p.validate() {
        Err(Error::Policy { path, .. }) => path,
        other => panic!("{other:?}"),
    };
    let mut p = OutputPolicy::default();
    p.entities.insert("PERSON".into(), GuardAction::Redact);
    assert_eq!(path(p), "entities.PERSON");
    assert_eq!(path(OutputPolicy { window_bytes: 8, ..OutputPolicy::default() }), "windowBytes");
    assert_eq!(path(OutputPolicy { window_bytes: 65537, ..OutputPolicy::default() }), "windowBytes");
    let rule = |id: &str, ph: &[&str]| PhraseRule {
        id: id.into(),
        phrases: ph.iter().map(|s| s.to_string()).collect(),
        action: GuardAction::Redact,
    };
    let p = OutputPolicy { phrases: vec![rule("a", &["x"]), rule("a", &["y"])], ..OutputPolicy::default() };
    assert_eq!(path(p), "phrases[1].id");
    let p = OutputPolicy { phrases: vec![rule("a", &["x", " "])], ..OutputPolicy::default() };
    assert_eq!(path(p), "phrases[0].phrases[1]");
    let p = OutputPolicy { phrases: vec![rule("a", &[])], ..OutputPolicy::default() };
    assert_eq!(path(p), "phrases[0].phrases");
    assert!(OutputGuard::new(&OutputPolicy { window_bytes: 1, ..OutputPolicy::default() }).is_err());
}

#[test]
fn leaked_keys_are_redacted() {
    let g = guard_with(OutputPolicy::default());
    assert!(g.is_active());
    let text = format!("Use {OPENAI_KEY} and aws {AWS_ID}, then restart.");
    match g.check(&text, &MaskMap::new(4096)) {
        GuardOutcome::Redacted(out, types) => {
            assert_eq!(out, "Use [REDACTED_SECRET] and aws [REDACTED_SECRET], then restart.");
            assert_eq!(types, vec!["SECRET".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.check("nothing to see here", &MaskMap::new(4096)), GuardOutcome::Clean);
    // Email is not configured by default.
    assert_eq!(g.check("mail jane@example.com", &MaskMap::new(4096)), GuardOutcome::Clean);
}

#[test]
fn keys_from_the_request_are_allowed() {
    let g = guard_with(OutputPolicy::default());
    let mut m = MaskMap::new(4096);
    let ph = m.placeholder("SECRET", OPENAI_KEY).unwrap();
    assert_eq!(g.check(&format!("Your key {OPENAI_KEY} works"), &m), GuardOutcome::Clean);
    assert_eq!(g.check(&format!("Your key {ph} works"), &m), GuardOutcome::Clean);
    // A different key is still redacted.
    match g.check(&format!("{OPENAI_KEY} vs {AWS_ID}"), &m) {
        GuardOutcome::Redacted(out, _) => assert_eq!(out, format!("{OPENAI_KEY} vs [REDACTED_SECRET]")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn block_action_on_entities() {
    let mut p = OutputPolicy::default();
    p.entities.insert("SECRET".into(), GuardAction::Block);
    p.entities.insert("EMAIL_ADDRESS".into(), GuardAction::Redact);
    let g = guard_with(p);
    assert_eq!(g.check(&format!("k={AWS_ID}"), &MaskMap::new(4096)), GuardOutcome::Blocked("SECRET".into()));
    match g.check("write to bob@corp.example.org now", &MaskMap::new(4096)) {
        GuardOutcome::Redacted(out, t) => {
            assert_eq!(out, "write to [REDACTED_EMAIL_ADDRESS] now");
            assert_eq!(t, vec!["EMAIL_ADDRESS".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn phrases_redact_and_block() {
    let g = guard_with(phrase_policy());
    match g.check("We beat ACME corp and acme CORP again.", &MaskMap::new(4096)) {
        GuardOutcome::Redacted(out, t) => {
            assert_eq!(out, "We beat [REDACTED] and [REDACTED] again.");
            assert_eq!(t, vec!["competitor".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        g.check("About Project Nightingale: it ships.", &MaskMap::new(4096)),
        GuardOutcome::Blocked("internal".into())
    );
    let inactive = guard_with(OutputPolicy { entities: BTreeMap::new(), ..OutputPolicy::default() });
    assert!(!inactive.is_active());
    assert_eq!(inactive.check(OPENAI_KEY, &MaskMap::new(4096)), GuardOutcome::Clean);
}

fn rewritten(r: JsonGuard) -> (Value, Vec<String>) {
    match r {
        JsonGuard::Rewritten(b, t) => (serde_json::from_slice(&b).unwrap(), t),
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_openai_chat_and_completions() {
    let g = guard_with(phrase_policy());
    let m = MaskMap::new(4096);
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant",
            "content": format!("key {OPENAI_KEY}; Acme Corp"),
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f",
                "arguments": format!("{{\"k\":\"{AWS_ID}\"}}")}}]},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1}
    });
    let (v, t) = rewritten(guard_json(ApiKind::OpenAiChat, &g, &m, body.to_string().as_bytes()));
    assert_eq!(v["choices"][0]["message"]["content"], "key [REDACTED_SECRET]; [REDACTED]");
    let args: Value =
        serde_json::from_str(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
            .unwrap();
    assert_eq!(args, json!({"k": "[REDACTED_SECRET]"}));
    assert_eq!(t, vec!["SECRET".to_string(), "competitor".to_string()]);

    // Parts form.
    let body = json!({"choices": [{"message": {"content": [{"type": "text", "text": OPENAI_KEY}]}}]});
    let (v, _) = rewritten(guard_json(ApiKind::OpenAiChat, &g, &m, body.to_string().as_bytes()));
    assert_eq!(v["choices"][0]["message"]["content"][0]["text"], "[REDACTED_SECRET]");

    let body = json!({"object": "text_completion", "choices": [{"index": 0, "text": format!("x {AWS_ID}")}]});
    let (v, _) = rewritten(guard_json(ApiKind::OpenAiCompletions, &g, &m, body.to_string().as_bytes()));
    assert_eq!(v["choices"][0]["text"], "x [REDACTED_SECRET]");

    let clean = json!({"choices": [{"message": {"content": "hello"}}]}).to_string();
    assert_eq!(guard_json(ApiKind::OpenAiChat, &g, &m, clean.as_bytes()), JsonGuard::Unchanged);
    assert_eq!(guard_json(ApiKind::OpenAiChat, &g, &m, b"not json"), JsonGuard::Unreadable);
    let blocked = json!({"choices": [{"message": {"content": "project NIGHTINGALE"}}]}).to_string();
    assert_eq!(guard_json(ApiKind::OpenAiChat, &g, &m, blocked.as_bytes()), JsonGuard::Blocked("internal".into()));
    // Request fields echoed by the provider are not model output.
    let echo = json!({"choices": [], "metadata": {"k": OPENAI_KEY}}).to_string();
    assert_eq!(guard_json(ApiKind::OpenAiChat, &g, &m, echo.as_bytes()), JsonGuard::Unchanged);
}

#[test]
fn json_anthropic_and_responses() {
    let g = guard_with(OutputPolicy::default());
    let m = MaskMap::new(4096);
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": format!("I saw {AWS_ID}"), "signature": "sig"},
            {"type": "text", "text": format!("Here: {OPENAI_KEY}.")},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"a": [OPENAI_KEY, 1], "b": "ok"}}
        ],
        "stop_reason": "end_turn"
    });
    let (v, t) = rewritten(guard_json(ApiKind::AnthropicMessages, &g, &m, body.to_string().as_bytes()));
    assert_eq!(v["content"][0]["thinking"], "I saw [REDACTED_SECRET]");
    assert_eq!(v["content"][0]["signature"], "sig");
    assert_eq!(v["content"][1]["text"], "Here: [REDACTED_SECRET].");
    assert_eq!(v["content"][2]["input"], json!({"a": ["[REDACTED_SECRET]", 1], "b": "ok"}));
    assert_eq!(t, vec!["SECRET".to_string()]);

    let body = json!({
        "id": "resp_1", "object": "response", "instructions": OPENAI_KEY,
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": format!("k {OPENAI_KEY}"), "annotations": []}]},
            {"type": "function_call", "name": "f", "arguments": format!("{{\"x\":\"{AWS_ID}\"}}")}
        ]
    });
    let (v, _) = rewritten(guard_json(ApiKind::OpenAiResponses, &g, &m, body.to_string().as_bytes()));
    assert_eq!(v["output"][0]["content"][0]["text"], "k [REDACTED_SECRET]");
    assert_eq!(v["output"][1]["arguments"], "{\"x\":\"[REDACTED_SECRET]\"}");
    assert_eq!(v["instructions"], OPENAI_KEY, "request echo untouched");
}

/// The guard reads a JSON answer's usage from its own parse of the body: the
/// same as `usage_from_json` on every recorded answer (OpenAI and
/// Anthropic, success and error), with the guard active and without, and
/// also when it redacts or blocks.
#[test]
fn guard_json_usage_matches_usage_from_json() {
    let active = OutputGuard::new(&OutputPolicy::default()).unwrap();
    let inactive = OutputGuard::new(&OutputPolicy { entities: Default::default(), ..OutputPolicy::default() }).unwrap();
    let m = MaskMap::new(1024);
    let mut bodies: Vec<(ApiKind, Vec<u8>)> = Vec::new();
    for (_, c) in common::cassettes() {
        for it in c.interactions {
            if !it.response.is_sse() {
                bodies.push((common::api_for_url(&it.request.url).unwrap(), it.response.body.into_bytes()));
            }
        }
    }
    for name in ["basic.json", "multiple_text_blocks.json", "thinking.json", "tool.json"] {
        bodies.push((ApiKind::AnthropicMessages, common::anthropic(name)));
    }
    let with_usage = bodies.iter().filter(|(api, b)| usage_from_json(*api, b).unwrap().is_some()).count();
    assert!(with_usage > 5, "{with_usage} recorded answers with usage");
    for (api, body) in &bodies {
        let expected = usage_from_json(*api, body).unwrap();
        assert_eq!(guard_json_usage(*api, &active, &m, body).1, expected);
        assert_eq!(guard_json_usage(*api, &inactive, &m, body).1, expected);
    }
    // A leaked key is redacted, and the usage still comes back.
    let leak = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"}}],
                      "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}});
    let (verdict, usage) = guard_json_usage(ApiKind::OpenAiChat, &active, &m, leak.to_string().as_bytes());
    assert!(matches!(verdict, JsonGuard::Rewritten(..)), "{verdict:?}");
    assert_eq!(usage.map(|u| (u.input_tokens, u.output_tokens)), Some((7, 3)));
    assert_eq!(guard_json_usage(ApiKind::OpenAiChat, &active, &m, b"not json"), (JsonGuard::Unreadable, None));
}
