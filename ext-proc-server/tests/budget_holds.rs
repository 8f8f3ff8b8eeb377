//! Budgets hold: an unpriced model is refused under a cost limit, a
//! non-streamed request cannot outgrow its reservation, client- and
//! provider-chosen numbers saturate, and `tollgate check` lists what has no
//! price. The sidecar's phase handlers are driven directly, with an embedded
//! limit store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, HttpBody, ProcessingRequest, ProcessingResponse,
};
use tollgate_ext_proc::budget::{unpriced_models, Budget};
use tollgate_ext_proc::config::parse_policy;
use tollgate_ext_proc::extproc::request_headers;
use tollgate_ext_proc::keys::{KeyFile, LiveKeys};
use tollgate_ext_proc::limits::embedded::EmbeddedStore;
use tollgate_ext_proc::limits::Window;
use tollgate_ext_proc::processor::{handle, StreamState};
use tollgate_ext_proc::shared::Shared;

/// A gateway's shared state on `policy_extra` (teams, consumers, limits,
/// pricing), with a key for each consumer named in `consumers`.
fn gateway(dir: &Path, policy_extra: &str, consumers: &[&str]) -> (Shared, Vec<String>) {
    let key_path = dir.join("keys.yaml");
    let mut file = KeyFile::default();
    let keys = consumers.iter().map(|c| file.create(c, None, SystemTime::now()).unwrap().0).collect();
    file.save(&key_path).unwrap();
    let text = format!(
        "providers:\n  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:1'}}\naccess: {{require: key, keyStore: '{}'}}\n{policy_extra}",
        key_path.display()
    );
    let policy = parse_policy(&text).unwrap();
    policy.validate().unwrap();
    let mut shared = Shared::new(policy, Default::default());
    shared.keys = LiveKeys::open(Some(key_path)).unwrap();
    let store = EmbeddedStore::open(&dir.join("state")).unwrap();
    shared.budget = Some(Budget::new(store.into(), &shared.policy));
    (shared, keys)
}

fn headers_msg(key: &str) -> ProcessingRequest {
    let auth = format!("Bearer {key}");
    let h = request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), ("authorization", &auth)], false);
    ProcessingRequest { request: Some(processing_request::Request::RequestHeaders(h)), ..Default::default() }
}

fn body_msg(body: &str) -> ProcessingRequest {
    let b = HttpBody { body: body.as_bytes().to_vec(), end_of_stream: true, ..Default::default() };
    ProcessingRequest { request: Some(processing_request::Request::RequestBody(b)), ..Default::default() }
}

/// Send one request's headers and body; the body phase's answer.
async fn send(s: &Shared, state: &mut StreamState, key: &str, body: &str) -> ProcessingResponse {
    handle(s, state, headers_msg(key)).await;
    handle(s, state, body_msg(body)).await
}

/// The immediate response's status and body, if the gateway answered itself.
fn immediate(resp: &ProcessingResponse) -> Option<(u32, serde_json::Value)> {
    match resp.response.as_ref()? {
        processing_response::Response::ImmediateResponse(i) => {
            Some((i.status.as_ref().map_or(0, |s| s.code as u32), serde_json::from_slice(&i.body).unwrap()))
        }
        _ => None,
    }
}

/// The request body the provider gets, when the sidecar changed it.
fn new_body(resp: &ProcessingResponse) -> Option<serde_json::Value> {
    let Some(processing_response::Response::RequestBody(b)) = resp.response.as_ref() else { return None };
    match b.response.as_ref()?.body_mutation.as_ref()?.mutation.as_ref()? {
        body_mutation::Mutation::Body(bytes) => Some(serde_json::from_slice(bytes).unwrap()),
        _ => None,
    }
}

fn chat(model: &str, extra: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello there"}}]{extra}}}"#)
}

#[tokio::test]
async fn an_unpriced_model_is_refused_under_a_cost_limit() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "teams:\n  finance: {limits: {costPerDay: 5}}\n  free: {}\nconsumers:\n  fay: {team: finance}\n  bo: {team: free}\n  cy: {team: free, limits: {costPerMonth: 20}}\n";
    let (s, keys) = gateway(dir.path(), policy, &["fay", "bo", "cy"]);

    for key in [&keys[0], &keys[2]] {
        let mut state = StreamState::default();
        let resp = send(&s, &mut state, key, &chat("llama-local", "")).await;
        let (status, body) = immediate(&resp).expect("refused");
        assert_eq!(status, 403, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("llama-local") && message.contains("no price"), "{message}");
        assert!(message.contains("pricing.default"), "{message}");
        assert_eq!(body["error"]["type"], "permission_error");
    }
    // A priced model goes, and so does any model for a caller without a cost limit.
    for (key, model) in [(&keys[0], "gpt-4o-mini"), (&keys[0], "o1-pro"), (&keys[1], "llama-local")] {
        let mut state = StreamState::default();
        let resp = send(&s, &mut state, key, &chat(model, "")).await;
        assert!(immediate(&resp).is_none(), "{model}: {resp:?}");
        assert!(matches!(state, StreamState::Routed(_)));
    }

    // `pricing.default` prices it: admitted, and its reservation costs something.
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = gateway(
        dir.path(),
        &format!("{policy}pricing:\n  default: {{input: 100, output: 400}}\n"),
        &["fay", "bo", "cy"],
    );
    let mut state = StreamState::default();
    let resp = send(&s, &mut state, &keys[0], &chat("llama-local", "")).await;
    assert!(immediate(&resp).is_none(), "{resp:?}");
    let StreamState::Routed(r) = &state else { panic!("{state:?}") };
    assert!(r.held.as_ref().unwrap().cost_reserved > 0);
}

#[tokio::test]
async fn an_alias_with_an_unpriced_fallback_target_is_refused_under_a_cost_limit() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "models:\n  smart: {targets: [{provider: mock, model: gpt-4o-mini}, {provider: mock, model: llama-local}]}\n  safe: {targets: [{provider: mock, model: gpt-4o-mini}, {provider: mock, model: gpt-4o}]}\nteams:\n  finance: {limits: {costPerDay: 5}}\n  free: {}\nconsumers:\n  fay: {team: finance}\n  bo: {team: free}\n";
    let (s, keys) = gateway(dir.path(), policy, &["fay", "bo"]);
    // The first target is priced; an attempt reaching the second would cost nothing.
    let mut state = StreamState::default();
    let resp = send(&s, &mut state, &keys[0], &chat("smart", "")).await;
    let (status, body) = immediate(&resp).expect("refused");
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("llama-local"), "{body}");
    // Every target priced, or no cost limit: routed.
    for (key, model) in [(&keys[0], "safe"), (&keys[1], "smart")] {
        let mut state = StreamState::default();
        let resp = send(&s, &mut state, key, &chat(model, "")).await;
        assert!(immediate(&resp).is_none(), "{model}: {resp:?}");
    }
}

#[tokio::test]
async fn a_non_streamed_request_without_an_output_cap_gets_the_reserved_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "limits: {reserveOutputTokens: 40}\nteams:\n  t: {limits: {tokensPerMinute: 100000}}\n  u: {limits: {requestsPerMinute: 100}}\nconsumers:\n  al: {team: t}\n  ru: {team: u}\n";
    let (s, keys) = gateway(dir.path(), policy, &["al", "ru"]);
    let mut state = StreamState::default();
    let body = new_body(&send(&s, &mut state, &keys[0], &chat("gpt-4o-mini", "")).await).expect("a capped body");
    assert_eq!(body["max_completion_tokens"], 40);
    let StreamState::Routed(r) = &state else { panic!("{state:?}") };
    assert_eq!(r.held.as_ref().unwrap().output_reserved, 40, "the cap is what was reserved");

    // `null` is no cap; it is replaced, not joined by a second field.
    let mut state = StreamState::default();
    let body = new_body(&send(&s, &mut state, &keys[0], &chat("gpt-4o-mini", r#","max_tokens":null"#)).await).unwrap();
    assert_eq!(body["max_completion_tokens"], 40);
    assert!(body.get("max_tokens").is_none(), "{body}");

    // The client's own cap, a stream (metered and cut live), or a caller
    // with no token or cost limit: the body is left alone.
    for (key, extra) in [(&keys[0], r#","max_tokens":7"#), (&keys[0], r#","stream":true"#), (&keys[1], "")] {
        let mut state = StreamState::default();
        let resp = send(&s, &mut state, key, &chat("gpt-4o-mini", extra)).await;
        assert!(immediate(&resp).is_none());
        let body = new_body(&resp);
        assert!(body.as_ref().is_none_or(|b| b.get("max_completion_tokens").is_none()), "{extra}: {body:?}");
    }
}

#[tokio::test]
async fn a_huge_max_tokens_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "teams:\n  t: {limits: {tokensPerMinute: 1000, costPerDay: 1}}\nconsumers:\n  al: {team: t}\n";
    let (s, keys) = gateway(dir.path(), policy, &["al"]);
    for max in [u64::MAX, u64::MAX - 5, i64::MAX as u64 + 1] {
        let mut state = StreamState::default();
        let resp = send(&s, &mut state, &keys[0], &chat("gpt-4o", &format!(r#","max_tokens":{max}"#))).await;
        let (status, body) = immediate(&resp).expect("refused");
        assert_eq!(status, 429, "{max}: {body}");
    }
    // Nothing was charged by the refusals: a normal request still fits.
    let mut state = StreamState::default();
    let resp = send(&s, &mut state, &keys[0], &chat("gpt-4o", r#","max_tokens":10"#)).await;
    assert!(immediate(&resp).is_none(), "{resp:?}");
}

#[tokio::test]
async fn a_providers_huge_usage_saturates_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "teams:\n  t: {limits: {tokensPerMinute: 100000, costPerDay: 1}}\nconsumers:\n  al: {team: t}\n";
    let (s, keys) = gateway(dir.path(), policy, &["al"]);
    let mut state = StreamState::default();
    send(&s, &mut state, &keys[0], &chat("gpt-4o", r#","max_tokens":10"#)).await;
    let h = request_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    handle(
        &s,
        &mut state,
        ProcessingRequest { request: Some(processing_request::Request::ResponseHeaders(h)), ..Default::default() },
    )
    .await;
    let max = u64::MAX;
    let answer = format!(
        r#"{{"id":"x","object":"chat.completion","choices":[],"usage":{{"prompt_tokens":{max},"completion_tokens":{max}}}}}"#
    );
    let b = HttpBody { body: answer.into_bytes(), end_of_stream: true, ..Default::default() };
    handle(
        &s,
        &mut state,
        ProcessingRequest { request: Some(processing_request::Request::ResponseBody(b)), ..Default::default() },
    )
    .await;
    let budget = s.budget.as_ref().unwrap();
    let now = SystemTime::now();
    let tokens = budget.store.get(&budget.store.key_at("team:t:tokens", Window::Minute, now)).await.unwrap();
    let cost = budget.store.get(&budget.store.key_at("team:t:cost", Window::Day, now)).await.unwrap();
    assert!(tokens >= i64::MAX as u64, "the counter took the whole usage, not a wrapped one: {tokens}");
    assert!(cost >= i64::MAX as u64, "{cost}");
    // And the next request is refused: the budget is spent.
    let mut state = StreamState::default();
    let resp = send(&s, &mut state, &keys[0], &chat("gpt-4o", r#","max_tokens":10"#)).await;
    assert_eq!(immediate(&resp).expect("refused").0, 429);
}

#[test]
fn check_lists_the_granted_models_without_a_price() {
    let text = "providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}\n\
        models:\n  local: {targets: [{provider: mock, model: llama-local}]}\n  fast: {targets: [{provider: mock, model: gpt-4o-mini}]}\n\
        teams:\n  finance: {models: [local, fast, my-finetune, gpt-4o], limits: {costPerDay: 5}}\n  lab: {models: ['mistral-*']}\n  ops: {limits: {costPerMonth: 9}}\n\
        consumers:\n  fay: {team: finance}\n  li: {team: lab, models: [other-model], limits: {costPerDay: 1}}\n";
    let policy = parse_policy(text).unwrap();
    let found = unpriced_models(&policy);
    let names: Vec<(&str, &str)> = found.iter().map(|u| (u.model.as_str(), u.via.as_str())).collect();
    assert!(names.contains(&("llama-local", "alias `local`")), "{found:?}");
    assert!(names.contains(&("my-finetune", "grant")), "{found:?}");
    assert!(names.contains(&("*", "grant `mistral-*`")), "{found:?}");
    assert!(names.contains(&("*", "every model (no grant list)")), "ops may use anything: {found:?}");
    assert!(!names.iter().any(|(m, _)| ["gpt-4o-mini", "gpt-4o", "other-model"].contains(m)), "{found:?}");
    let llama = found.iter().find(|u| u.model == "llama-local").unwrap();
    assert!(llama.scopes.contains(&"team `finance`".to_string()), "{llama:?}");

    // With `pricing.default` nothing is unpriced.
    let priced = parse_policy(&format!("{text}pricing:\n  default: {{input: 1, output: 1}}\n")).unwrap();
    assert!(unpriced_models(&priced).is_empty());

    // The command prints them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--policy"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("without a price"), "{stdout}");
    assert!(stdout.contains("llama-local (alias `local`) for team `finance`"), "{stdout}");
    assert!(stdout.contains("my-finetune (grant)"), "{stdout}");
}
