//! Applying PII actions: mask_text, mask_request on real-shaped bodies,
//! redact/block/log, custom entities and policy errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;

use serde_json::{json, Value};
use tollgate_core::pii::{needs_rewrite, CustomEntity, Finding, MaskMap, PiiAction, PiiPolicy, PiiScanner};
use tollgate_core::request::parse_request_json;
use tollgate_core::{ApiKind, Error};

fn policy_yaml(yaml: &str) -> Result<PiiPolicy, Error> {
    let de = serde_yaml_ng::Deserializer::from_str(yaml);
    let p: PiiPolicy = tollgate_core::policy::deserialize_named(de)?;
    p.validate()?;
    Ok(p)
}

fn scanner_yaml(yaml: &str) -> PiiScanner {
    PiiScanner::new(&policy_yaml(yaml).unwrap()).unwrap()
}

#[test]
fn text_without_findings_is_borrowed() {
    let s = PiiScanner::new(&PiiPolicy::default()).unwrap();
    let mut m = MaskMap::new(4096);
    let mut r = Vec::new();
    let text = "nothing to see here, version 1.2.3 on 2024-01-15";
    assert!(matches!(s.mask_text(text, &mut m, &mut r).unwrap(), Cow::Borrowed(t) if t == text));
    assert!(r.is_empty() && m.is_empty());
}

#[test]
fn mask_is_reversible_and_stable_across_texts() {
    let s = PiiScanner::new(&PiiPolicy::default()).unwrap();
    let mut m = MaskMap::new(1 << 16);
    let mut r = Vec::new();
    let a = "Write to ana@example.org and bob@example.org about 4111 1111 1111 1111.";
    let b = "Again: bob@example.org — and ana@example.org!";
    let ma = s.mask_text(a, &mut m, &mut r).unwrap().into_owned();
    let mb = s.mask_text(b, &mut m, &mut r).unwrap().into_owned();
    assert_eq!(ma, "Write to <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2> about <CREDIT_CARD_1>.");
    assert_eq!(mb, "Again: <EMAIL_ADDRESS_2> — and <EMAIL_ADDRESS_1>!");
    assert_eq!(m.restore_str(&ma), a);
    assert_eq!(m.restore_str(&mb), b);
    assert_eq!(r.len(), 5);
    assert!(needs_rewrite(&r));
}

#[test]
fn redact_block_log() {
    let s = scanner_yaml("entities: {EMAIL_ADDRESS: redact, US_SSN: block, IP_ADDRESS: log, CREDIT_CARD: mask}");
    let mut m = MaskMap::new(4096);
    let mut r = Vec::new();
    let out = s.mask_text("mail a@b.io from 10.0.0.1 card 5555555555554444", &mut m, &mut r).unwrap();
    assert_eq!(out, "mail [REDACTED_EMAIL_ADDRESS] from 10.0.0.1 card <CREDIT_CARD_1>");
    assert_eq!(m.len(), 1, "redacted values never enter the map");
    let actions: Vec<(String, PiiAction)> = r.iter().map(|f| (f.entity.clone(), f.action)).collect();
    assert_eq!(
        actions,
        [
            ("EMAIL_ADDRESS".into(), PiiAction::Redact),
            ("IP_ADDRESS".into(), PiiAction::Log),
            ("CREDIT_CARD".into(), PiiAction::Mask)
        ]
    );

    // Log only: unchanged and borrowed, but reported.
    let mut r = Vec::new();
    let text = "from 10.0.0.1";
    assert!(matches!(s.mask_text(text, &mut m, &mut r).unwrap(), Cow::Borrowed(_)));
    assert_eq!(r, vec![Finding { entity: "IP_ADDRESS".into(), start: 5, end: 13, action: PiiAction::Log }]);
    assert!(!needs_rewrite(&r));

    // Block: an error naming the type, never the value.
    let mut r = Vec::new();
    let err = s.mask_text("my ssn is 536-90-4399, mail a@b.io", &mut m, &mut r).unwrap_err();
    match &err {
        Error::Blocked { rule, message } => {
            assert_eq!(rule, "US_SSN");
            assert_eq!(message, "request contains us ssn which the policy does not allow");
            assert!(!message.contains("536"));
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert_eq!(err.status(), 403);
    assert!(r.is_empty());
}

#[test]
fn map_bound_is_an_error() {
    let s = PiiScanner::new(&PiiPolicy::default()).unwrap();
    let mut m = MaskMap::new(60);
    let mut r = Vec::new();
    let err = s.mask_text("a@example.com b@example.com c@example.com", &mut m, &mut r).unwrap_err();
    assert_eq!(err, Error::InspectionLimit { limit: 60 });
}

#[test]
fn custom_patterns_and_terms() {
    let s = scanner_yaml(
        r#"
entities: {EMAIL_ADDRESS: mask}
custom:
  - name: EMPLOYEE_ID
    patterns: ['EMP-[0-9]{6}']
    action: mask
  - name: PROJECT
    terms: ["Project Falcon", "bluebird"]
    action: redact
"#,
    );
    let mut m = MaskMap::new(4096);
    let mut r = Vec::new();
    let text = "EMP-004211 on project falcon and BlueBird, not bluebirds or Project Falconry; mail x@y.io";
    let out = s.mask_text(text, &mut m, &mut r).unwrap();
    assert_eq!(
        out,
        "<EMPLOYEE_ID_1> on [REDACTED_PROJECT] and [REDACTED_PROJECT], not bluebirds or Project Falconry; mail <EMAIL_ADDRESS_1>"
    );
    // Terms next to non-ASCII letters are not whole words; next to punctuation they are.
    let f = s.find("überbluebird «bluebird»");
    assert_eq!(f.len(), 1);
    assert_eq!(&"überbluebird «bluebird»"[f[0].start..f[0].end], "bluebird");
}

#[test]
fn policy_errors_name_the_field() {
    let path = |yaml: &str| match policy_yaml(yaml).and_then(|p| PiiScanner::new(&p).map(|_| ())) {
        Err(Error::Policy { path, .. }) => path,
        other => panic!("expected a policy error for {yaml}, got {other:?}"),
    };
    assert_eq!(path("entities: {EMAIL: mask}"), "entities.EMAIL");
    assert_eq!(path("entities: {EMAIL_ADDRESS: hide}"), "entities.EMAIL_ADDRESS");
    assert_eq!(path("entitys: {}"), "entitys");
    assert_eq!(path("custom: [{name: X, patterns: ['ok'], action: mask, extra: 1}]"), "custom[0].extra");
    assert_eq!(path("custom: [{name: x-y, terms: [a], action: mask}]"), "custom[0].name");
    assert_eq!(path("custom: [{name: SECRET, terms: [a], action: mask}]"), "custom[0].name");
    assert_eq!(
        path("custom: [{name: A, terms: [a], action: mask}, {name: A, terms: [b], action: log}]"),
        "custom[1].name"
    );
    assert_eq!(path("custom: [{name: A, action: mask}]"), "custom[0]");
    assert_eq!(path("custom: [{name: A, terms: ['  '], action: mask}]"), "custom[0].terms[0]");
    assert_eq!(path("custom: [{name: A, terms: [a]}]"), "custom[0]");
    assert_eq!(path("custom: [{name: A, patterns: ['ok', 'bad[('], action: mask}]"), "custom[0].patterns[1]");
    assert_eq!(path("custom: [{name: A, patterns: ['x*'], action: mask}]"), "custom[0].patterns[0]");
    // Scanner construction validates too.
    let p = PiiPolicy {
        entities: Default::default(),
        custom: vec![CustomEntity {
            name: "A".into(),
            patterns: vec!["(".into()],
            terms: vec![],
            action: PiiAction::Log,
        }],
    };
    assert!(matches!(PiiScanner::new(&p), Err(Error::Policy { path, .. }) if path == "custom[0].patterns[0]"));
}

#[test]
fn default_policy_round_trips() {
    let p = policy_yaml("{}").unwrap();
    assert_eq!(p, PiiPolicy::default());
    assert_eq!(p.entities.len(), 7);
    assert!(p.entities.values().all(|a| *a == PiiAction::Mask));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["entities"]["SECRET"], "mask");
    let back: PiiPolicy = serde_json::from_value(v).unwrap();
    assert_eq!(back, p);
}

const RAW: &[&str] = &[
    "ana@example.org",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "4111111111111111",
    "536-90-4399",
    "DE89370400440532013000",
    "10.1.2.3",
    "AKIAIOSFODNN7EXAMPLE",
    "bob@example.com",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
];

fn assert_no_raw(body: &str) {
    for raw in RAW {
        assert!(!body.contains(raw), "raw value {raw} left in {body}");
    }
}

#[test]
fn mask_request_openai_chat_with_tool_calls() {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You help ana@example.org."},
            {"role": "user", "content": [
                {"type": "text", "text": "My card is 4111 1111 1111 1111 and my SSN 536-90-4399."},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "send_mail", "arguments": "{\"to\":\"bob@example.com\",\"iban\":\"DE89370400440532013000\",\"note\":\"key AKIAIOSFODNN7EXAMPLE\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sent to bob@example.com from 10.1.2.3"},
            {"role": "user", "content": "Call me: +44 20 7946 0958. Also ana@example.org again."}
        ],
        "stream": true
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut parsed = parse_request_json(ApiKind::OpenAiChat, &bytes).unwrap();
    let s = PiiScanner::new(&PiiPolicy::default()).unwrap();
    let mut m = MaskMap::new(1 << 16);
    let findings = s.mask_request(&mut parsed, &mut m).unwrap();
    assert!(needs_rewrite(&findings));
    let out = serde_json::to_string(&parsed.json).unwrap();
    assert_no_raw(&out);
    // Valid JSON, same shape; the tool-call arguments are still valid JSON.
    let v: Value = serde_json::from_str(&out).unwrap();
    let args: Value =
        serde_json::from_str(v["messages"][2]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["to"], "<EMAIL_ADDRESS_2>");
    assert_eq!(args["note"], "key <SECRET_1>");
    assert_eq!(v["messages"][0]["content"], "You help <EMAIL_ADDRESS_1>.");
    assert_eq!(v["messages"][4]["content"], "Call me: <PHONE_NUMBER_1>. Also <EMAIL_ADDRESS_1> again.");
    assert_eq!(v["messages"][1]["content"][1]["image_url"]["url"], "https://example.com/a.png");
    // The normalized view was refreshed.
    assert!(parsed.request.texts.iter().any(|t| t.text.contains("<CREDIT_CARD_1>")));
    assert!(parsed.request.texts.iter().all(|t| !t.text.contains("4111")));
    // Restoring the whole body gives back the original texts.
    assert_eq!(serde_json::from_str::<Value>(&m.restore_str(&out)).unwrap(), body);
}

#[test]
fn mask_request_anthropic_with_tool_use() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Operator contact: ana@example.org"}],
        "messages": [
            {"role": "user", "content": "Transfer to DE89370400440532013000, my key is sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Sending."},
                {"type": "tool_use", "id": "toolu_1", "name": "transfer",
                 "input": {"iban": "DE89370400440532013000", "amount": 12.5, "meta": {"notify": ["bob@example.com", "ana@example.org"], "ok": true}}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "done from 10.1.2.3"}]},
                {"type": "text", "text": "thanks, card 4111111111111111 next"}
            ]}
        ]
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut parsed = parse_request_json(ApiKind::AnthropicMessages, &bytes).unwrap();
    let s = PiiScanner::new(&PiiPolicy::default()).unwrap();
    let mut m = MaskMap::new(1 << 16);
    let findings = s.mask_request(&mut parsed, &mut m).unwrap();
    let out = serde_json::to_string(&parsed.json).unwrap();
    assert_no_raw(&out);
    let v: Value = serde_json::from_str(&out).unwrap();
    let input = &v["messages"][1]["content"][1]["input"];
    assert_eq!(input["iban"], "<IBAN_CODE_1>");
    assert_eq!(input["amount"], 12.5);
    assert_eq!(input["meta"]["notify"], json!(["<EMAIL_ADDRESS_2>", "<EMAIL_ADDRESS_1>"]));
    assert_eq!(input["meta"]["ok"], true);
    assert_eq!(findings.iter().filter(|f| f.entity == "EMAIL_ADDRESS").count(), 3);
    assert!(parsed.request.texts.iter().all(|t| !t.text.contains("ana@example.org")));
    assert_eq!(serde_json::from_str::<Value>(&m.restore_str(&out)).unwrap(), body);
}

#[test]
fn mask_request_block_and_untouched() {
    let s = scanner_yaml("entities: {SECRET: block, EMAIL_ADDRESS: log}");
    let body = br#"{"model":"m","messages":[{"role":"user","content":"mail a@b.io"}]}"#;
    let mut parsed = parse_request_json(ApiKind::OpenAiChat, body).unwrap();
    let before = parsed.clone();
    let mut m = MaskMap::new(4096);
    let f = s.mask_request(&mut parsed, &mut m).unwrap();
    assert_eq!(f.len(), 1);
    assert!(!needs_rewrite(&f));
    assert_eq!(parsed, before);

    let body = br#"{"model":"m","input":["fine","token ghp_a1B2c3D4e5F6a1B2c3D4e5F6a1B2c3D4e5F6"]}"#;
    let mut parsed = parse_request_json(ApiKind::OpenAiEmbeddings, body).unwrap();
    let err = s.mask_request(&mut parsed, &mut m).unwrap_err();
    assert!(matches!(err, Error::Blocked { ref rule, .. } if rule == "SECRET"));
    assert!(!err.to_string().contains("ghp_"));
}
