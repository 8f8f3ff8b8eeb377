//! Fallback across an alias's targets, end to end: Envoy's retries walk the
//! targets in order after a 429, a 5xx, a reset or a refused connection; the
//! sidecar, as an upstream filter, shapes each attempt for its target
//! (translating when the target speaks the other API). A stream that has
//! started is never retried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_e2e::{sse_events, test_port, Gateway, Options};

async fn gateway() -> Gateway {
    let dead = test_port().unwrap();
    Gateway::start(Options {
        providers_extra: format!("  dead: {{kind: openai, baseUrl: 'http://127.0.0.1:{dead}'}}"),
        policy_extra: "
models:
  smart: {targets: [{provider: mock, model: gpt-4o}, {provider: mock, model: claude-haiku-4-5}]}
  resilient: {targets: [{provider: dead, model: gpt-4o}, {provider: mock, model: gpt-4o-mini}]}
"
        .into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// (path, model) of every request the mock received, in order.
async fn attempts(gw: &Gateway) -> Vec<(String, String)> {
    gw.mock_requests()
        .await
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            (r["path"].as_str().unwrap().to_string(), body["model"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_429_or_5xx_moves_to_the_next_target_translated_if_needed() {
    let gw = gateway().await;
    // Healthy first target: one attempt.
    let resp = gw.post("/v1/chat/completions", &chat("smart", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-envoy-attempt-count"], "1");
    assert_eq!(attempts(&gw).await, vec![("/v1/chat/completions".into(), "gpt-4o".into())]);

    // The first target rate-limits: the Claude target answers, in OpenAI's shape.
    for (status, stream) in [("429", false), ("500", true), ("503", false)] {
        let _ = reqwest::Client::new().delete(format!("http://{}/mock/requests", gw.mock)).send().await;
        let resp = gw
            .post_with(
                "/v1/chat/completions",
                &chat("smart", stream),
                &[("x-mock-fail-model", &format!("gpt-4o={status}"))],
            )
            .await;
        assert_eq!(resp.status(), 200, "after a {status}");
        assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
        assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
        let body = resp.bytes().await.unwrap();
        let text = if stream {
            let events = sse_events(&body);
            assert!(events.last().unwrap().is_done());
            events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                .collect::<String>()
        } else {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["object"], "chat.completion");
            v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
        };
        assert!(text.contains("Say hello"), "{text}");
        assert_eq!(
            attempts(&gw).await,
            vec![("/v1/chat/completions".into(), "gpt-4o".into()), ("/v1/messages".into(), "claude-haiku-4-5".into())],
            "after a {status}"
        );
    }
    // Every target fails: the client gets the last error, in its own shape.
    let resp = gw
        .post_with(
            "/v1/chat/completions",
            &chat("smart", false),
            &[("x-mock-fail-model", "gpt-4o=429,claude-haiku-4-5=429")],
        )
        .await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    // The access log names the target that answered.
    let log = gw.access_log(5).await;
    assert!(log.iter().any(|r| r["upstream_model"] == "claude-haiku-4-5"), "{log:?}");
}

#[tokio::test]
async fn a_refused_connection_or_reset_moves_to_the_next_target() {
    let gw = gateway().await;
    let resp = gw.post("/v1/chat/completions", &chat("resilient", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini", "{v}");
    // A connection reset before any answer.
    let resp =
        gw.post_with("/v1/chat/completions", &chat("smart", true), &[("x-mock-fail-model", "gpt-4o=reset")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
    assert!(sse_events(&resp.bytes().await.unwrap()).last().unwrap().is_done());
}

#[tokio::test]
async fn a_stream_that_started_is_never_retried() {
    let mut gw = gateway().await;
    let long = "word ".repeat(300);
    let mut resp = gw
        .post_with(
            "/v1/chat/completions",
            &chat("smart", true),
            &[("x-mock-append", long.trim()), ("x-mock-chunk-delay-ms", "20")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // The provider dies mid-answer.
    gw.kill("mock").await;
    let mut rest = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        rest.extend_from_slice(&chunk);
    }
    let all = [first.to_vec(), rest].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(!text.contains("data: [DONE]"), "a broken stream is not completed from another target");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.stat("cluster.target_smart_0.upstream_rq_total").await, Some(1));
    assert_eq!(gw.stat("cluster.target_smart_1.upstream_rq_total").await.unwrap_or(0), 0, "no second attempt");
}

/// A gateway whose aliases use each strategy, all on the one mock.
async fn strategies() -> Gateway {
    Gateway::start(Options {
        policy_extra: "
models:
  split: {strategy: weighted, targets: [{provider: mock, model: gpt-4o, weight: 3}, {provider: mock, model: gpt-4o-mini}]}
  quick: {strategy: least-latency, targets: [{provider: mock, model: gpt-4o}, {provider: mock, model: gpt-4o-mini}]}
  cheap: {strategy: cost, targets: [{provider: mock, model: gpt-4o}, {provider: mock, model: gpt-4o-mini, contextTokens: 200}]}
  patient: {attemptTimeoutMs: 400, targets: [{provider: mock, model: gpt-4o}, {provider: mock, model: gpt-4o-mini}]}
"
        .into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn answered_by(gw: &Gateway, alias: &str, prompt: &str, headers: &[(&str, &str)]) -> String {
    let body = json!({"model": alias, "max_tokens": 50, "messages": [{"role": "user", "content": prompt}]});
    let resp = gw.post_with("/v1/chat/completions", &body, headers).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["model"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn strategies_pick_the_first_target() {
    let gw = strategies().await;
    // Weighted 3:1 over many requests, within a tolerance.
    let mut heavy = 0;
    for _ in 0..120 {
        if answered_by(&gw, "split", "hi", &[]).await == "gpt-4o" {
            heavy += 1;
        }
    }
    assert!((75..=105).contains(&heavy), "weighted 3:1 gave {heavy}/120 to the heavy target");

    // Least latency: both are tried, then the fast one is preferred.
    let slow = [("x-mock-fail-model", "gpt-4o=delay300")];
    let first = answered_by(&gw, "quick", "hi", &slow).await;
    let second = answered_by(&gw, "quick", "hi", &slow).await;
    assert_eq!((first.as_str(), second.as_str()), ("gpt-4o", "gpt-4o-mini"), "untried targets go first");
    for _ in 0..3 {
        assert_eq!(answered_by(&gw, "quick", "hi", &slow).await, "gpt-4o-mini");
    }

    // Cost: the cheapest target whose context (200 tokens) fits the prompt
    // plus max_tokens; a long prompt skips it.
    assert_eq!(answered_by(&gw, "cheap", "hi", &[]).await, "gpt-4o-mini");
    let long = "many words ".repeat(200);
    assert_eq!(answered_by(&gw, "cheap", &long, &[]).await, "gpt-4o");
}

#[tokio::test]
async fn a_slow_target_times_out_into_the_next() {
    let gw = strategies().await;
    let slow = [("x-mock-fail-model", "gpt-4o=delay3000")];
    let started = std::time::Instant::now();
    assert_eq!(answered_by(&gw, "patient", "hi", &slow).await, "gpt-4o-mini");
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

/// Claude on Bedrock as a later target for an Anthropic client: the attempt
/// goes out through InvokeModel (Anthropic's request in Bedrock's envelope,
/// signed for it), its answer and its stream come back as Anthropic's.
#[tokio::test]
async fn claude_on_bedrock_takes_a_fallback_attempt_through_invoke_model() {
    let dead = test_port().unwrap();
    let gw = Gateway::start(Options {
        providers_extra: format!(
            "  dead: {{kind: anthropic, baseUrl: 'http://127.0.0.1:{dead}'}}\n  aws: {{kind: bedrock, baseUrl: 'http://{{mock}}', region: us-east-1, keyEnv: BEDROCK_KEY}}"
        ),
        policy_extra: "
models:
  claude: {targets: [{provider: dead, model: claude-haiku-4-5}, {provider: aws, model: anthropic.claude-3-5-haiku-20241022-v1:0}]}
"
        .into(),
        sidecar_env: vec![("BEDROCK_KEY".into(), "ABSK-test-bedrock-key".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let ask = |stream: bool| {
        json!({"model": "claude", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "Say hello to Ada"}]})
    };
    let resp = gw.post("/v1/messages", &ask(false)).await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!((&body["type"], &body["model"]), (&json!("message"), &json!("claude")), "{body}");
    assert!(body["content"][0]["text"].as_str().unwrap().contains("Say hello to Ada"), "{body}");

    let resp = gw.post("/v1/messages", &ask(true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let names: Vec<String> = sse_events(text.as_bytes()).iter().filter_map(|e| e.event.clone()).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"), "{text}");
    assert_eq!(names.last().map(String::as_str), Some("message_stop"), "{text}");

    let seen = gw.mock_requests().await;
    let ops: Vec<&str> = seen.iter().filter_map(|r| r["bedrock"]["operation"].as_str()).collect();
    assert_eq!(ops, ["InvokeModel", "InvokeModelWithResponseStream"], "{seen:?}");
    for r in &seen {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["anthropic_version"], "bedrock-2023-05-31", "{body}");
        assert!(body.get("model").is_none() && body.get("stream").is_none(), "{body}");
        assert_eq!(r["headers"]["authorization"], "Bearer ABSK-test-bedrock-key");
    }
}

/// Bedrock regions are targets of their own: with the first region's
/// endpoint down, the attempt goes to the next one, signed (SigV4) for that
/// provider's region.
#[tokio::test]
async fn a_bedrock_region_that_is_down_falls_back_to_the_next_region() {
    let dead = test_port().unwrap();
    let gw = Gateway::start(Options {
        providers_extra: format!(
            "  aws-us: {{kind: bedrock, baseUrl: 'http://127.0.0.1:{dead}', region: us-east-1}}\n  aws-eu: {{kind: bedrock, baseUrl: 'http://{{mock}}', region: eu-west-1}}"
        ),
        policy_extra: "
models:
  nova: {targets: [{provider: aws-us, model: us.amazon.nova-pro-v1:0}, {provider: aws-eu, model: eu.amazon.nova-pro-v1:0}]}
"
        .into(),
        sidecar_env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "AKIDEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    for stream in [false, true] {
        let resp = gw.post("/v1/chat/completions", &chat("nova", stream)).await;
        assert_eq!(resp.status(), 200, "{}", gw.log_text());
        assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
        assert_eq!(resp.headers()["x-tollgate-backend"], "aws-eu");
        let text = resp.text().await.unwrap();
        assert!(text.contains("Say hello"), "{text}");
    }
    let seen = gw.mock_requests().await;
    let calls: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|r| {
            let b = &r["bedrock"];
            (b["modelId"].as_str().unwrap(), b["operation"].as_str().unwrap(), b["auth"]["region"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("eu.amazon.nova-pro-v1:0", "Converse", "eu-west-1"),
            ("eu.amazon.nova-pro-v1:0", "ConverseStream", "eu-west-1")
        ]
    );
}
