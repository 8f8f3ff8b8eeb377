//! Budgets hold, end to end through a real Envoy, the real sidecar and the
//! mock provider: a model without a price is refused under a cost limit,
//! cache hits count against the request limit, concurrent requests sharing
//! a budget in Redis pass it by at most one reservation each, and a flood of
//! model names adds no metric series.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_e2e::{Gateway, Options, Redis};
use tollgate_ext_proc::cli::launch::http_get;

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

async fn status_and_body(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Sleep into the next minute when fewer than `need` are left of this one
/// (per-minute counters start again at every minute).
async fn fresh_minute(need: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(60) - Duration::from_millis((now.as_millis() % 60_000) as u64);
    if left < need {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

const COST_LIMITED: &str = "
access: {require: key, keyStore: '{dir}/keys.yaml'}
teams:
  finance: {limits: {costPerDay: 5}}
consumers:
  fay: {team: finance}
";

#[tokio::test]
async fn a_model_without_a_price_is_refused_under_a_cost_limit() {
    let gw = Gateway::start(Options { policy_extra: COST_LIMITED.into(), ..Default::default() }).await.unwrap();
    let key = gw.create_key("fay").await;
    let auth = bearer(&key);
    let headers = [("authorization", auth.as_str())];
    // `o1-pro` is priced on its own (not as `o1`); `llama-local` has no price.
    let (status, _, body) =
        status_and_body(gw.post_with("/v1/chat/completions", &chat("o1-pro", "hi"), &headers).await).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) =
        status_and_body(gw.post_with("/v1/chat/completions", &chat("llama-local", "hi"), &headers).await).await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("llama-local") && message.contains("no price"), "{message}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    let anthropic = json!({"model": "llama-local", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = status_and_body(
        gw.post_with("/v1/messages", &anthropic, &[("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")])
            .await,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "error", "the Anthropic shape: {body}");
    assert!(
        !gw.mock_requests().await.iter().any(|r| r.to_string().contains("llama-local")),
        "the provider never saw the unpriced model"
    );
    let out = gw.tollgate(&["check", "--policy", &gw.policy_path.display().to_string()]).await.unwrap();
    assert!(out.contains("without a price") && out.contains("team `finance`"), "{out}");

    // With `pricing.default` the same request goes, and costs that price.
    let priced = format!("{COST_LIMITED}pricing:\n  default: {{input: 1000, output: 1000}}\n");
    let gw = Gateway::start(Options { policy_extra: priced, ..Default::default() }).await.unwrap();
    let key = gw.create_key("fay").await;
    let auth = bearer(&key);
    let (status, _, body) = status_and_body(
        gw.post_with("/v1/chat/completions", &chat("llama-local", "hi"), &[("authorization", auth.as_str())]).await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rows = gw.usage_rows().await;
    let row = rows.iter().find(|r| r["model"] == "llama-local").unwrap_or_else(|| panic!("{rows:?}"));
    let tokens = row["input_tokens"].as_u64().unwrap() + row["output_tokens"].as_u64().unwrap();
    assert_eq!(row["cost_micros"].as_u64().unwrap(), tokens * 1000, "{row}");
}

#[tokio::test]
async fn cache_hits_count_against_requests_per_minute() {
    let gw = Gateway::start(Options {
        policy_extra: "
access: {require: key, keyStore: '{dir}/keys.yaml'}
cache: {enabled: true}
teams:
  ops: {limits: {requestsPerMinute: 3}}
consumers:
  dave: {team: ops}
"
        .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = gw.create_key("dave").await;
    let auth = bearer(&key);
    let body = chat("gpt-4o-mini", "What is the capital of France?");
    fresh_minute(Duration::from_secs(15)).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (status, headers, answer) =
            status_and_body(gw.post_with("/v1/chat/completions", &body, &[("authorization", auth.as_str())]).await)
                .await;
        let cache = headers.get("x-tollgate-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        seen.push((status, cache, answer));
    }
    let statuses: Vec<(u16, &str)> = seen.iter().map(|(s, c, _)| (*s, c.as_str())).collect();
    assert_eq!(&statuses[..3], &[(200, "miss"), (200, "hit"), (200, "hit")], "{seen:?}");
    assert_eq!(statuses[3].0, 429, "the fourth request in the minute is over the limit, cached or not: {seen:?}");
    assert_eq!(statuses[4].0, 429, "{seen:?}");
    assert_eq!(seen[3].2["error"]["type"], "rate_limit_error", "{seen:?}");
    assert_eq!(gw.mock_requests().await.len(), 1, "only the miss reached the provider");
}

/// The price of the budget test's model: USD per 1M tokens, so 1000
/// micro-dollars a token.
const PRICE_PER_TOKEN_MICROS: u64 = 1000;
/// The team's daily budget, in micro-dollars (1000 tokens).
const LIMIT_MICROS: u64 = 1_000_000;
/// `reserveOutputTokens`.
const RESERVE_OUTPUT: u64 = 50;

#[tokio::test]
async fn concurrent_requests_pass_a_shared_budget_by_at_most_one_reservation_each() {
    let redis = Redis::start().unwrap();
    let keys = std::env::temp_dir().join(format!("tollgate-e2e-budget-keys-{}", std::process::id()));
    let policy = format!(
        "
access: {{require: key, keyStore: '{}'}}
limits: {{store: redis, redis: '{}', reserveOutputTokens: {RESERVE_OUTPUT}}}
pricing:
  budget-model: {{input: 1000, output: 1000}}
teams:
  t: {{limits: {{costPerDay: 1}}}}
consumers:
  ann: {{team: t}}
",
        keys.display(),
        redis.url
    );
    let a = Gateway::start(Options { policy_extra: policy.clone(), ..Default::default() }).await.unwrap();
    let b = Gateway::start(Options { policy_extra: policy, ..Default::default() }).await.unwrap();
    let key = a.create_key("ann").await;

    // Each request asks for no output cap and the provider would answer at
    // length (~600 tokens); all are in flight together.
    let prompt = "Write me a long story about the sea";
    let long_answer = "and the waves rolled on ".repeat(100);
    let mut tasks = Vec::new();
    for (i, gw) in std::iter::repeat_n(&a, 10).chain(std::iter::repeat_n(&b, 10)).enumerate() {
        let mut body = chat("budget-model", prompt);
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("authorization", bearer(&key))
            .header("x-mock-latency-ms", "700")
            .header("x-mock-append", long_answer.clone());
        // A few streams among them: they grow their reservation as they go,
        // a few tokens a chunk as providers send them, and are cut at the
        // first step the budget refuses.
        if i % 5 == 0 {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
            req = req.header("x-mock-chunk-delay-ms", "3");
        }
        let req = req.json(&body);
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count() as u64;
    assert!(admitted >= 1 && statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");

    // One reservation: the prompt as counted for it, plus the reserved output.
    let request =
        tollgate_core::request::request_from_json(tollgate_core::ApiKind::OpenAiChat, &chat("budget-model", prompt))
            .unwrap();
    let reservation_tokens = tollgate_ext_proc::tokens::prompt_tokens("budget-model", &request) + RESERVE_OUTPUT;
    let reservation = reservation_tokens * PRICE_PER_TOKEN_MICROS;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = a.usage_rows().await;
    let spent: u64 = rows.iter().filter(|r| r["consumer"] == "ann").map(|r| r["cost_micros"].as_u64().unwrap()).sum();
    let bound = LIMIT_MICROS + admitted * reservation;
    assert!(
        spent <= bound,
        "spent {spent} micro-dollars over a {LIMIT_MICROS} budget with {admitted} admitted requests \
         (one reservation: {reservation}); the documented bound is {bound}: {statuses:?} {rows:?}"
    );
    // Non-streamed answers were capped at what they reserved.
    let sent: Vec<Value> = a
        .mock_requests()
        .await
        .into_iter()
        .chain(b.mock_requests().await)
        .filter_map(|r| serde_json::from_str(r["body"].as_str()?).ok())
        .collect();
    assert_eq!(sent.len() as u64, admitted, "{sent:?}");
    for body in sent.iter().filter(|b| b["stream"] != json!(true)) {
        assert_eq!(body["max_completion_tokens"], RESERVE_OUTPUT, "{body}");
    }
}

/// Sample lines of the sidecar's metrics that carry a `model` label.
async fn model_series(gw: &Gateway) -> Vec<String> {
    let (_, text) = http_get(&gw.sidecar_admin, "/metrics").await.unwrap();
    text.lines().filter(|l| !l.starts_with('#') && l.contains("model=\"")).map(str::to_string).collect()
}

#[tokio::test]
async fn a_flood_of_model_names_adds_no_metric_series() {
    let gw = Gateway::start(Options {
        policy_extra: "models:\n  fast: {targets: [{provider: mock, model: gpt-4o-mini}]}\n".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for model in ["fast", "gpt-4o-mini", "flood-model-0"] {
        let resp = gw.post("/v1/chat/completions", &chat(model, "hi")).await;
        assert_eq!(resp.status().as_u16(), 200, "{model}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = model_series(&gw).await;
    for i in 1..40 {
        let resp = gw.post("/v1/chat/completions", &chat(&format!("flood-model-{i}"), "hi")).await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = model_series(&gw).await;
    assert!(!after.iter().any(|l| l.contains("flood-model")), "{after:#?}");
    assert!(after.iter().any(|l| l.contains(r#"model="other""#)), "{after:#?}");
    assert!(after.iter().any(|l| l.contains(r#"model="gpt-4o-mini""#)), "a configured model keeps its name");
    let series = |lines: &[String]| {
        lines.iter().map(|l| l.rsplit_once(' ').map_or(l.as_str(), |(name, _)| name).to_string()).collect::<Vec<_>>()
    };
    assert_eq!(series(&before), series(&after), "no new series, only new counts");
}

/// The current minute since the epoch (per-minute counters' window).
fn minute() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60
}

/// Statuses of `n` requests sent by four workers at once.
async fn load(gw: &Gateway, key: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (url, auth) = (gw.url.clone(), bearer(key));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut out = Vec::new();
            for i in (w..n).step_by(4) {
                let mut body = chat("gpt-4o-mini", &format!("request {i}"));
                body["stream"] = json!(i % 2 == 0);
                let resp = client
                    .post(format!("{url}/v1/chat/completions"))
                    .header("authorization", &auth)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                if status != 200 {
                    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
                    assert!(v["error"]["message"].is_string(), "{status}: {v}");
                }
                out.push(status);
            }
            out
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    statuses
}

/// Redis killed under load and started again empty: while it is down the
/// limiter follows `limits.failMode` (closed: 503 in the API's shape and
/// nothing reaches the provider; open: answered and counted); once it is
/// back the limits hold again, counted from zero, each request once.
#[tokio::test]
async fn redis_killed_and_restarted_under_load_follows_the_fail_mode_and_the_limits_recover() {
    for mode in ["closed", "open"] {
        let mut redis = Redis::start().unwrap();
        let keys = std::env::temp_dir().join(format!("tollgate-e2e-redis-restart-{}-{mode}", std::process::id()));
        let policy = format!(
            "
access: {{require: key, keyStore: '{}'}}
limits: {{store: redis, redis: '{}', failMode: {mode}}}
teams:
  ops: {{limits: {{requestsPerMinute: 40}}}}
consumers:
  dora: {{team: ops}}
",
            keys.display(),
            redis.url
        );
        let gw = Gateway::start(Options { policy_extra: policy, ..Default::default() }).await.unwrap();
        let key = gw.create_key("dora").await;
        fresh_minute(Duration::from_secs(40)).await;
        let before = load(&gw, &key, 8).await;
        assert!(before.iter().all(|&s| s == 200), "{before:?}");

        // Down, under load.
        let (statuses, ()) = tokio::join!(load(&gw, &key, 16), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            redis.kill();
        });
        assert!(statuses.iter().all(|s| [200, 503].contains(s)), "{statuses:?}");
        let sent = gw.mock_requests().await.len();
        let down = load(&gw, &key, 8).await;
        if mode == "closed" {
            assert!(down.iter().all(|&s| s == 503), "{down:?}");
            assert_eq!(gw.mock_requests().await.len(), sent, "nothing reaches the provider");
        } else {
            assert!(down.iter().all(|&s| s == 200), "{down:?}");
            assert!(gw.sidecar_metric("tollgate_limiter_fail_open_total").await.unwrap_or(0) >= 8);
        }

        // Back, empty: the limit holds again from zero, each request once.
        redis.restart().unwrap();
        // Back means a request admitted by the store, not failing open.
        let mut recovered = None;
        for _ in 0..50 {
            let open_before = gw.sidecar_metric("tollgate_limiter_fail_open_total").await.unwrap_or(0);
            let resp = gw
                .post_with(
                    "/v1/chat/completions",
                    &chat("gpt-4o-mini", "are you back"),
                    &[("authorization", &bearer(&key))],
                )
                .await;
            let open_after = gw.sidecar_metric("tollgate_limiter_fail_open_total").await.unwrap_or(0);
            if resp.status() == 200 && open_after == open_before {
                recovered = Some(minute());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let probe_minute = recovered.unwrap_or_else(|| panic!("{mode}: the limiter never came back"));
        fresh_minute(Duration::from_secs(25)).await;
        let spent = if minute() == probe_minute { 1 } else { 0 };
        let after = load(&gw, &key, 48).await;
        let admitted = after.iter().filter(|&&s| s == 200).count();
        assert!(after.iter().all(|s| [200, 429].contains(s)), "{after:?}");
        // 40 a minute, less the probe's when it counted in this minute.
        assert_eq!(admitted, 40 - spent, "{mode}: {after:?}");
    }
}
