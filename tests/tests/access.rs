//! Identity, model grants, the credential vault, rate limits and budgets,
//! end to end through Envoy, the filter, the sidecar (and Redis where state
//! is shared).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_e2e::{sse_events, Gateway, Options, Redis};

const VAULT_KEY: &str = "sk-vault-7f3a9c";

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 1000, "messages": [{"role": "user", "content": "Say hello to the team"}]})
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn json_body(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn provider_key_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-e2e-vault-{}", std::process::id()));
    std::fs::write(&path, format!("{VAULT_KEY}\n")).unwrap();
    path
}

#[tokio::test]
async fn virtual_keys_grants_and_the_vault() {
    let key_file = provider_key_file();
    let gw = Gateway::start(Options {
        provider_extra: format!("keyFile: '{}'", key_file.display()),
        policy_extra: "
access: {require: key, keyStore: '{dir}/keys.yaml'}
teams:
  research: {models: ['gpt-*', 'claude-*']}
consumers:
  alice: {team: research}
  bob: {team: research, models: [gpt-4o-mini]}
"
        .into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // No key: 401 in each API's own error shape.
    let (status, _, body) = json_body(gw.post("/v1/chat/completions", &chat("gpt-4o-mini", false)).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let msg = json!({"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = json_body(gw.post("/v1/messages", &msg).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    // Keys made while the gateway runs are picked up without a restart.
    let alice = gw.create_key("alice").await;
    let bob = gw.create_key("bob").await;
    assert!(alice.starts_with("tg-"));
    let keys_file = std::fs::read_to_string(gw.dir.join("keys.yaml")).unwrap();
    assert!(!keys_file.contains(alice.rsplit('-').next().unwrap()), "the key store holds a secret");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let resp =
        gw.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&alice))]).await;
    let (status, headers, body) = json_body(resp).await;
    assert_eq!(status, 200, "{body}");
    // The provider got the vault key and never the client's.
    let seen = gw.mock_requests().await;
    let last = seen.last().unwrap();
    assert_eq!(last["headers"]["authorization"], bearer(VAULT_KEY));
    assert!(!last.to_string().contains(&alice), "the gateway key reached the provider");
    // Anthropic clients send x-api-key.
    let (status, _, body) = json_body(gw.post_with("/v1/messages", &msg, &[("x-api-key", &alice)]).await).await;
    assert_eq!(status, 200, "{body}");

    // Grants: the team's and the consumer's must both allow.
    let (status, _, body) = json_body(
        gw.post_with("/v1/chat/completions", &chat("llama3", false), &[("authorization", &bearer(&alice))]).await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("`llama3`"), "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    let (status, _, body) = json_body(
        gw.post_with("/v1/chat/completions", &chat("gpt-4o", false), &[("authorization", &bearer(&bob))]).await,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("consumer `bob`"), "{body}");

    // A wrong secret for a real id, and a non-gateway key.
    let id = alice.split('-').nth(1).unwrap();
    let forged = format!("tg-{id}-{}", "0".repeat(48));
    let (status, _, _) = json_body(
        gw.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&forged))]).await,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, body) = json_body(
        gw.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", "Bearer sk-openai-123")])
            .await,
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // Revocation takes effect without a restart.
    let policy = gw.policy_path.display().to_string();
    gw.tollgate(&["keys", "revoke", "--policy", &policy, id]).await.unwrap();
    let listed = gw.tollgate(&["keys", "list", "--policy", &policy]).await.unwrap();
    assert!(listed.lines().any(|l| l.starts_with(id) && l.ends_with("revoked")), "{listed}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, body) = json_body(
        gw.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&alice))]).await,
    )
    .await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");

    // The vault key shows up nowhere a client or operator reads.
    assert!(!headers.iter().any(|(_, v)| v.to_str().unwrap_or_default().contains(VAULT_KEY)));
    let log = gw.log_text();
    assert!(!log.contains(VAULT_KEY), "the provider key was logged");
    let access = std::fs::read_to_string(&gw.access_log).unwrap();
    assert!(!access.contains(VAULT_KEY) && !access.contains(&alice));
    let records = gw.access_log(9).await;
    assert!(records.iter().any(|r| r["consumer"] == "alice" && r["team"] == "research"), "{records:?}");
    let _ = std::fs::remove_file(key_file);
}

/// Fire `n` requests at once; returns the statuses and the 429 responses' headers and bodies.
async fn burst(
    gw: &Gateway,
    n: usize,
    body: Value,
    headers: Vec<(String, String)>,
) -> (Vec<u16>, Vec<(reqwest::header::HeaderMap, String)>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (url, body, headers) = (gw.url.clone(), body.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = reqwest::Client::new().post(format!("{url}/v1/chat/completions")).json(&body);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let h = resp.headers().clone();
            (status, h, resp.text().await.unwrap())
        }));
    }
    let mut statuses = Vec::new();
    let mut limited = Vec::new();
    for t in tasks {
        let (status, h, text) = t.await.unwrap();
        statuses.push(status);
        if status == 429 {
            limited.push((h, text));
        }
    }
    (statuses, limited)
}

/// Per-minute limits reset on the minute: wait for a fresh minute when fewer
/// than `need` remain in this one, so a burst never straddles two windows.
async fn fresh_minute(need: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(60) - Duration::from_millis((now.as_millis() % 60_000) as u64);
    if left < need {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

fn count(statuses: &[u16], code: u16) -> usize {
    statuses.iter().filter(|&&s| s == code).count()
}

const LIMITED_POLICY: &str = "
access: {require: key, keyStore: '{dir}/keys.yaml'}
limits: {reserveOutputTokens: 16}
pricing:
  gpt-4o-mini: {input: 100, output: 100}
teams:
  research: {limits: {tokensPerMinute: 3500}}
  finance: {limits: {costPerDay: 0.35}}
  ops: {limits: {requestsPerMinute: 4}}
consumers:
  alice: {team: research}
  carol: {team: finance}
  dave: {team: ops}
";

#[tokio::test]
async fn limits_trip_at_the_right_request_under_concurrent_load() {
    let gw = Gateway::start(Options { policy_extra: LIMITED_POLICY.into(), ..Default::default() }).await.unwrap();
    let slow = ("x-mock-latency-ms".to_string(), "1500".to_string());
    for (consumer, stream) in [("alice", false), ("carol", true)] {
        let key = gw.create_key(consumer).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Each request reserves ~1000 output tokens (max_tokens) plus its
        // prompt: 3 fit in 3500 tokens/minute and in $0.35 at $100/1M tokens.
        let auth = ("authorization".to_string(), bearer(&key));
        fresh_minute(Duration::from_secs(5)).await;
        let (statuses, limited) = burst(&gw, 8, chat("gpt-4o-mini", stream), vec![auth, slow.clone()]).await;
        assert_eq!(count(&statuses, 200), 3, "{consumer}: {statuses:?}");
        assert_eq!(count(&statuses, 429), 5, "{consumer}: {statuses:?}");
        let (h, text) = &limited[0];
        let body: Value = serde_json::from_str(text).unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error", "{text}");
        assert!(h.get("retry-after").is_some());
        if consumer == "alice" {
            assert!(body["error"]["message"].as_str().unwrap().contains("team `research`"), "{text}");
            assert_eq!(h["x-ratelimit-limit-tokens"], "3500");
            assert!(h.get("x-ratelimit-reset-tokens").is_some());
        } else {
            assert!(body["error"]["message"].as_str().unwrap().contains("budget"), "{text}");
            assert!(h.get("x-tollgate-budget-remaining-usd").is_some());
        }
    }
    // Requests per minute, with OpenAI's headers on admitted answers.
    let dave = gw.create_key("dave").await;
    fresh_minute(Duration::from_secs(5)).await;
    let (statuses, _) = burst(&gw, 7, chat("gpt-4o-mini", false), vec![("authorization".into(), bearer(&dave))]).await;
    assert_eq!(count(&statuses, 200), 4, "{statuses:?}");
    let resp =
        gw.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&dave))]).await;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "4");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");

    // Spend is reconciled with real usage and reported per consumer and model.
    let rows = gw.usage_rows().await;
    let carol: Vec<&Value> = rows.iter().filter(|r| r["consumer"] == "carol").collect();
    assert_eq!(carol.len(), 1, "{rows:?}");
    assert_eq!(carol[0]["requests"], 3);
    assert_eq!(carol[0]["team"], "finance");
    assert_eq!(carol[0]["model"], "gpt-4o-mini");
    let (input, output) = (carol[0]["input_tokens"].as_u64().unwrap(), carol[0]["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0, "streamed usage counted: {rows:?}");
    // $100 per 1M tokens is 100 micro-dollars per token.
    assert_eq!(carol[0]["cost_micros"].as_u64().unwrap(), (input + output) * 100);
    let out = gw.tollgate(&["usage", "--admin", &gw.sidecar_admin, "--team", "finance"]).await.unwrap();
    assert!(out.contains("carol") && !out.contains("alice"), "{out}");
    assert_eq!(gw.sidecar_metric("tollgate_limited_total").await, Some(5 + 5 + 4));
}

#[tokio::test]
async fn a_budget_crossed_mid_stream_ends_that_stream() {
    let gw = Gateway::start(Options {
        policy_extra: "
access: {require: key, keyStore: '{dir}/keys.yaml'}
limits: {reserveOutputTokens: 16}
pricing:
  gpt-4o-mini: {input: 1000, output: 10000}
teams:
  finance: {limits: {costPerDay: 0.5}}
consumers:
  carol: {team: finance}
"
        .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = gw.create_key("carol").await;
    // $0.01 per output token: the $0.50 budget allows ~50 tokens; the mock is
    // told to answer with ~400 words, streamed.
    let long = "word ".repeat(400);
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    let resp = gw
        .post_with(
            "/v1/chat/completions",
            &body,
            &[("authorization", &bearer(&key)), ("x-mock-append", long.trim()), ("x-mock-chunk-delay-ms", "2")],
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    // Read until the gateway ends the stream (after the final event it resets
    // the stream, so the provider's request is closed too).
    let mut resp = resp;
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        bytes.extend_from_slice(&chunk);
    }
    let events = sse_events(&bytes);
    let last = events.last().unwrap();
    assert!(last.is_done(), "the stream ends well-formed: {last:?}");
    let error = &events[events.len() - 2];
    let error: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("budget"), "{error}");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    let words = text.split_whitespace().count();
    assert!(words > 10 && words < 120, "the stream was cut near the budget, not at its end: {words} words");
    assert_eq!(gw.sidecar_metric("tollgate_streams_cut_total").await, Some(1));
    // The provider was stopped: Envoy closed its request mid-answer, and the
    // spend recorded is what was streamed, not the ~400-word answer.
    let closed = gw.wait_stat("cluster.provider_mock.upstream_cx_destroy_local_with_active_rq", 1).await;
    assert_eq!(closed, Some(1), "the upstream request was closed");
    let rows = gw.usage_rows().await;
    let output = rows.iter().find(|r| r["consumer"] == "carol").unwrap()["output_tokens"].as_u64().unwrap();
    assert!(output < 150, "spend stops near the budget: {output} output tokens");
    // The budget is spent: the next request is refused before it starts.
    let resp = gw.post_with("/v1/chat/completions", &body, &[("authorization", &bearer(&key))]).await;
    assert_eq!(resp.status().as_u16(), 429);
}

#[tokio::test]
async fn spend_survives_a_sidecar_restart() {
    let mut gw = Gateway::start(Options { policy_extra: LIMITED_POLICY.into(), ..Default::default() }).await.unwrap();
    let key = gw.create_key("dave").await;
    fresh_minute(Duration::from_secs(25)).await;
    for _ in 0..3 {
        let resp = gw
            .post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&key))])
            .await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    gw.kill("sidecar").await;
    gw.start_sidecar(&[]).await.unwrap();
    let rows = gw.usage_rows().await;
    assert_eq!(rows.iter().find(|r| r["consumer"] == "dave").unwrap()["requests"], 3, "{rows:?}");
    // 3 of 4 requests this minute were used before the restart.
    let (statuses, _) = burst(&gw, 3, chat("gpt-4o-mini", false), vec![("authorization".into(), bearer(&key))]).await;
    assert_eq!(count(&statuses, 200), 1, "{statuses:?}");
}

#[tokio::test]
async fn two_replicas_share_one_budget_through_redis() {
    let redis = Redis::start().unwrap();
    let policy = format!(
        "
access: {{require: key, keyStore: '{}/shared-keys.yaml'}}
limits: {{store: redis, redis: '{}'}}
teams:
  ops: {{limits: {{requestsPerMinute: 10}}}}
consumers:
  dave: {{team: ops}}
",
        std::env::temp_dir().join(format!("tollgate-e2e-redis-{}", std::process::id())).display(),
        redis.url
    );
    let a = Gateway::start(Options { policy_extra: policy.clone(), ..Default::default() }).await.unwrap();
    let b = Gateway::start(Options { policy_extra: policy, ..Default::default() }).await.unwrap();
    let key = a.create_key("dave").await;
    let auth = vec![("authorization".to_string(), bearer(&key))];
    fresh_minute(Duration::from_secs(8)).await;
    // Replica a spends 4 of the 10 requests first ...
    let (first, _) = burst(&a, 4, chat("gpt-4o-mini", false), auth.clone()).await;
    assert_eq!(count(&first, 200), 4, "{first:?}");
    // ... then both replicas race for the rest: together they admit exactly
    // the 6 left (each alone would admit 10 if the budget were per replica).
    let (sa, sb) = tokio::join!(
        burst(&a, 12, chat("gpt-4o-mini", true), auth.clone()),
        burst(&b, 12, chat("gpt-4o-mini", false), auth.clone())
    );
    let ok = count(&sa.0, 200) + count(&sb.0, 200);
    assert_eq!(ok, 6, "replica a: {:?}, replica b: {:?}", sa.0, sb.0);
    // Replica b refuses now, whichever replica spent the budget.
    let resp =
        b.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&key))]).await;
    assert_eq!(resp.status().as_u16(), 429);

    // Redis down: the default fail mode (open) lets requests through, and says so.
    drop(redis);
    let resp =
        a.post_with("/v1/chat/completions", &chat("gpt-4o-mini", false), &[("authorization", &bearer(&key))]).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(a.sidecar_metric("tollgate_limiter_fail_open_total").await.unwrap_or(0) >= 1);
}

#[tokio::test]
async fn every_api_surface_is_counted_streamed_and_not() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let user = json!([{"role": "user", "content": "Count these tokens please"}]);
    let calls = [
        ("/v1/chat/completions", json!({"model": "gpt-4o-mini", "messages": user})),
        ("/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": true, "messages": user})),
        ("/v1/completions", json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Count these tokens"})),
        ("/v1/completions", json!({"model": "gpt-3.5-turbo-instruct", "stream": true, "prompt": "Count these tokens"})),
        ("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": "Count these tokens"})),
        ("/v1/responses", json!({"model": "gpt-4.1-mini", "input": "Count these tokens"})),
        ("/v1/responses", json!({"model": "gpt-4.1-mini", "stream": true, "input": "Count these tokens"})),
        ("/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 50, "messages": user})),
        ("/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 50, "stream": true, "messages": user})),
    ];
    for (path, body) in &calls {
        let resp = gw.post(path, body).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let _ = resp.bytes().await.unwrap();
    }
    let rows = gw.usage_rows().await;
    for (model, requests, has_output) in [
        ("gpt-4o-mini", 2u64, true),
        ("gpt-3.5-turbo-instruct", 2, true),
        ("text-embedding-3-small", 1, false),
        ("gpt-4.1-mini", 2, true),
        ("claude-haiku-4-5", 2, true),
    ] {
        let row = rows.iter().find(|r| r["model"] == model).unwrap_or_else(|| panic!("{model}: {rows:?}"));
        assert_eq!(row["requests"], requests, "{model}: {row}");
        assert!(row["input_tokens"].as_u64().unwrap() >= requests * 3, "{model}: {row}");
        assert_eq!(row["output_tokens"].as_u64().unwrap() > 0, has_output, "{model}: {row}");
        assert!(row["cost_micros"].as_u64().unwrap() > 0, "{model} is priced: {row}");
        assert_eq!(row["consumer"], "-", "anonymous calls are reported as `-`");
    }
    // Usage also goes to dynamic metadata, for the access log and Envoy's filters.
    let log = gw.access_log(calls.len()).await;
    assert!(log.iter().all(|r| r["input_tokens"].as_f64().is_some_and(|n| n > 0.0)), "{log:?}");
    assert!(log.iter().all(|r| r["cost_usd"].as_f64().is_some_and(|c| c > 0.0)), "{log:?}");
}
