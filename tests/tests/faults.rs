//! Faults, end to end through a real Envoy, the sidecar and a provider that
//! misbehaves on purpose (`tollgate_e2e::faulty`): a provider that stalls
//! before or after its headers, resets mid-stream, sends an event that is
//! not JSON, cuts its stream short, sends an error event, labels its answer
//! with the wrong content type or answers with something that is not JSON;
//! a client that uploads its body one byte a second, leaves mid-stream, or
//! sets Envoy's own control headers. Each test says what the client sees,
//! what the audit record holds and what the counters say.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tollgate_e2e::faulty::{FaultyProvider, LEAK};
use tollgate_e2e::{read_body, sse_events, Gateway, Options};

/// The gateway's timeouts in these tests (ms).
const ATTEMPT_MS: u64 = 1500;
const DEFAULT_ATTEMPT_MS: u64 = 2000;
const IDLE_MS: u64 = 4000;
const REQUEST_MS: u64 = 3000;

async fn gateway(faulty: &FaultyProvider, filter: &str) -> Gateway {
    let inspection = "
inspection:
  pii: {entities: {EMAIL_ADDRESS: mask}}
  output: {entities: {SECRET: block}}
";
    gateway_with(faulty, filter, inspection).await
}

async fn gateway_with(faulty: &FaultyProvider, filter: &str, inspection: &str) -> Gateway {
    Gateway::start(Options {
        providers_extra: format!(
            "  faulty: {{kind: openai, baseUrl: 'http://{0}'}}\n  faulty-claude: {{kind: anthropic, baseUrl: 'http://{0}'}}",
            faulty.addr
        ),
        policy_extra: format!(
            "
failMode: {{filter: {filter}}}
timeouts: {{requestMs: {REQUEST_MS}, attemptMs: {DEFAULT_ATTEMPT_MS}, idleMs: {IDLE_MS}}}
models:
  flaky: {{attemptTimeoutMs: {ATTEMPT_MS}, targets: [{{provider: faulty, model: gpt-4o-mini}}]}}
  flaky-claude: {{attemptTimeoutMs: {ATTEMPT_MS}, targets: [{{provider: faulty-claude, model: claude-haiku-4-5}}]}}
  plain: {{targets: [{{provider: faulty, model: gpt-4o-mini}}]}}
  plain-claude: {{targets: [{{provider: faulty-claude, model: claude-haiku-4-5}}]}}
{inspection}"
        ),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The path and body of a request for `model` (an alias named `*claude*`
/// speaks Anthropic's Messages API).
fn request(model: &str, stream: bool) -> (&'static str, Value) {
    let messages = json!([{"role": "user", "content": "Say something"}]);
    if model.contains("claude") {
        ("/v1/messages", json!({"model": model, "stream": stream, "max_tokens": 50, "messages": messages}))
    } else {
        ("/v1/chat/completions", json!({"model": model, "stream": stream, "messages": messages}))
    }
}

/// What the client got.
struct Got {
    status: u16,
    request_id: String,
    body: Vec<u8>,
    /// The body ended cleanly (not reset).
    clean_end: bool,
    took: Duration,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

async fn call(gw: &Gateway, model: &str, stream: bool, fault: &str) -> Got {
    let (path, body) = request(model, stream);
    let start = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", gw.url))
        .header("x-fault", fault)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let request_id = resp.headers().get("x-tollgate-request-id").map_or("", |v| v.to_str().unwrap()).to_string();
    let (body, clean_end) = read_body(resp).await;
    Got { status, request_id, body, clean_end, took: start.elapsed() }
}

/// The error shape of each API: OpenAI's `{"error": {...}}`, Anthropic's
/// `{"type": "error", "error": {...}}`.
fn assert_error_shape(model: &str, v: &Value) {
    if model.contains("claude") {
        assert_eq!(v["type"], "error", "{v}");
        assert!(v["error"]["type"].is_string() && v["error"]["message"].is_string(), "{v}");
    } else {
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{v}");
    }
}

/// The audit record of a request, once written.
async fn record(gw: &Gateway, request_id: &str) -> Value {
    for _ in 0..100 {
        if let Some(r) = gw.audit_records().into_iter().find(|r| r["requestId"] == request_id) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit record for {request_id}: {:?}", gw.audit_records());
}

/// The sidecar's `tollgate_provider_problems_total` for `provider`, `problem`.
async fn problems(gw: &Gateway, provider: &str, problem: &str) -> u64 {
    let (_, body) = tollgate_ext_proc::cli::launch::http_get(&gw.sidecar_admin, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with("tollgate_provider_problems_total{"))
        .filter(|l| l.contains(&format!("provider=\"{provider}\"")) && l.contains(&format!("problem=\"{problem}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_provider_that_never_answers_gets_a_504_in_the_clients_shape_within_the_attempt_timeout() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    // An alias's own attemptTimeoutMs (one target), and the policy's
    // timeouts.attemptMs on the provider's shared route.
    for (model, limit) in [("flaky", ATTEMPT_MS), ("flaky-claude", ATTEMPT_MS), ("plain", DEFAULT_ATTEMPT_MS)] {
        for stream in [false, true] {
            let got = call(&gw, model, stream, "stall-before-headers").await;
            assert_eq!(got.status, 504, "{model} stream={stream}: {}", got.text());
            let v = got.json();
            assert_error_shape(model, &v);
            let took = got.took.as_millis() as u64;
            assert!(took >= limit && took < limit + 3000, "{model}: 504 after {took} ms (timeout {limit} ms)");
            let rec = record(&gw, &got.request_id).await;
            assert_eq!(rec["status"], 504, "{rec}");
        }
    }
    // The provider saw each request given up (its connection closed), and
    // Envoy counted the attempts that timed out.
    let gone = faulty.received().iter().filter(|r| r.fault == "stall-before-headers" && r.cancelled).count();
    assert_eq!(gone, 6, "{:?}", faulty.received());
    assert!(gw.envoy_counter(".upstream_rq_per_try_timeout").await >= 6);
}

#[tokio::test]
async fn a_stall_or_a_reset_after_the_headers_ends_the_clients_stream_and_the_record_says_incomplete() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    for model in ["flaky", "flaky-claude"] {
        let provider = if model == "flaky" { "faulty" } else { "faulty-claude" };
        for (fault, within) in [("stall-after-headers", IDLE_MS + 3000), ("reset-mid-stream", 3000)] {
            let before = problems(&gw, provider, "incomplete").await;
            let got = call(&gw, model, true, fault).await;
            // The answer had started: Envoy can write nothing more, so the
            // client's stream is reset (never left hanging).
            assert_eq!(got.status, 200);
            assert!(!got.clean_end, "{model} {fault}: the stream ended as if complete: {}", got.text());
            assert!(got.took.as_millis() < u128::from(within), "{model} {fault}: took {:?}", got.took);
            if fault == "stall-after-headers" {
                assert!(got.took.as_millis() >= u128::from(IDLE_MS), "{model}: reset before the idle timeout");
            }
            let rec = record(&gw, &got.request_id).await;
            assert_eq!(rec["decisions"]["incomplete"], true, "{model} {fault}: {rec}");
            assert_eq!(problems(&gw, provider, "incomplete").await, before + 1, "{model} {fault}");
        }
    }
    // A complete answer is not marked.
    let got = call(&gw, "flaky", true, "ok").await;
    assert!(got.clean_end && got.text().ends_with("data: [DONE]\n\n"), "{}", got.text());
    let rec = record(&gw, &got.request_id).await;
    assert!(rec["decisions"].get("incomplete").is_none(), "{rec}");
}

/// The events of an SSE body, and the error events among them.
fn errors(got: &Got) -> (Vec<tollgate_core::SseEvent>, Vec<Value>) {
    let events = sse_events(&got.body);
    let errors = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|v| v.get("error").is_some_and(Value::is_object))
        .collect();
    (events, errors)
}

#[tokio::test]
async fn a_broken_stream_ends_with_one_error_event_and_the_end_marker_and_nothing_unread_passes() {
    let faulty = FaultyProvider::start().await.unwrap();
    // With the restorer and the guard reading every event, and with nothing
    // to restore or guard (the events are still read before they pass).
    let guarded = gateway(&faulty, "closed").await;
    broken_streams(&guarded).await;
    drop(guarded);
    let unguarded = gateway_with(&faulty, "closed", "\ninspection:\n  output: {entities: {}}\n").await;
    broken_streams(&unguarded).await;
}

async fn broken_streams(gw: &Gateway) {
    for model in ["flaky", "flaky-claude"] {
        for (fault, code) in [
            ("invalid-json-event", Some("upstream_invalid_event")),
            // Half an event at the end is an event that is not JSON.
            ("truncated-sse", Some("upstream_invalid_event")),
            ("cut-at-event", Some("upstream_stream_truncated")),
            ("provider-error-event", None),
        ] {
            let got = call(gw, model, true, fault).await;
            assert_eq!(got.status, 200, "{model} {fault}");
            let text = got.text();
            // Nothing the gateway could not read reaches the client: not the
            // event that is not JSON ("leak"), not the half event ("jum").
            assert!(!text.contains("leak") && !text.contains("jum"), "{model} {fault}: {text}");
            let (events, errors) = errors(&got);
            assert_eq!(errors.len(), 1, "{model} {fault}: one error event: {text}");
            if let Some(code) = code {
                // Anthropic's error events carry no code: the message says it.
                let said = match code {
                    "upstream_invalid_event" => "not JSON",
                    _ => "ended before the answer was complete",
                };
                assert!(
                    text.contains(code) || model.contains("claude") && text.contains(said),
                    "{model} {fault}: {text}"
                );
            } else {
                // The provider's own error is what the client gets.
                assert!(text.contains("server had an error") || text.contains("Overloaded"), "{text}");
            }
            // The words before the fault were let through (restored and
            // guarded, or as they came).
            let said: String = events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                .filter_map(|v| {
                    let delta = v["choices"][0]["delta"]["content"].as_str().or(v["delta"]["text"].as_str());
                    delta.map(str::to_string)
                })
                .collect();
            assert!(said.contains("The quick"), "{model} {fault}: {text}");
            if model == "flaky" {
                assert!(events.last().unwrap().is_done(), "{model} {fault}: ends with [DONE]: {text}");
                assert_eq!(events.iter().filter(|e| e.is_done()).count(), 1, "{text}");
            } else {
                assert_eq!(events.last().unwrap().event.as_deref(), Some("error"), "{model} {fault}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn an_answer_the_guard_cannot_read_is_withheld_failing_closed_and_a_label_never_skips_the_guard() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    for model in ["flaky", "flaky-claude"] {
        // Not JSON (cut short): a 502 in the client's shape in its place.
        let before = problems(&gw, if model == "flaky" { "faulty" } else { "faulty-claude" }, "invalid_answer").await;
        let got = call(&gw, model, false, "invalid-json").await;
        assert_eq!(got.status, 502, "{}", got.text());
        let after = problems(&gw, if model == "flaky" { "faulty" } else { "faulty-claude" }, "invalid_answer").await;
        assert_eq!(after, before + 1);
        assert_eq!(record(&gw, &got.request_id).await["status"], 502);
        let v = got.json();
        assert_error_shape(model, &v);
        assert!(got.text().contains("upstream_invalid_response") || v["error"]["type"] == "api_error", "{v}");
        assert!(!got.text().contains("The quick"), "{}", got.text());
        // A secret in an answer labelled HTML, or in a stream labelled plain
        // text, is still caught by the guard.
        for (fault, stream) in [("leak-json", false), ("leak-as-html", false), ("leak-stream-as-text", true)] {
            let got = call(&gw, model, stream, fault).await;
            assert!(!got.text().contains(LEAK), "{model} {fault}: {}", got.text());
            let text = got.text();
            let said = ["output guard", "output_blocked", "blocked by output policy"];
            assert!(said.iter().any(|s| text.contains(s)), "{model} {fault}: {text}");
            if !stream {
                // Held whole while the guard is on and the filter fails
                // closed: the blocked answer is a 502 in the client's shape,
                // and so recorded.
                assert_eq!(got.status, 502, "{model} {fault}: {text}");
                assert_error_shape(model, &got.json());
                assert_eq!(record(&gw, &got.request_id).await["status"], 502, "{model} {fault}");
            }
        }
    }
    // Failing open, the unreadable answer passes as it came, counted.
    let faulty = FaultyProvider::start().await.unwrap();
    let open = gateway(&faulty, "open").await;
    let before = open.envoy_counter("tollgate_fail_open_total").await;
    let got = call(&open, "flaky", false, "invalid-json").await;
    assert!(got.text().contains("\"content\":\"The quick"), "{}", got.text());
    assert_eq!(open.envoy_counter("tollgate_fail_open_total").await, before + 1);
}

#[tokio::test]
async fn envoys_own_errors_reach_the_client_in_its_apis_shape() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    // A provider that closes the connection before answering: Envoy's 503.
    for model in ["flaky", "plain-claude"] {
        let got = call(&gw, model, false, "close-before-headers").await;
        assert_eq!(got.status, 503, "{}", got.text());
        let v = got.json();
        assert_error_shape(model, &v);
        assert!(got.text().contains("upstream"), "{v}");
    }
}

#[tokio::test]
async fn a_body_uploaded_one_byte_a_second_gets_408_and_never_reaches_a_provider() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    let (_, body) = request("flaky", false);
    let body = body.to_string();
    let addr = gw.url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nx-fault: ok\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let (mut rd, mut wr) = conn.into_split();
    let bytes = body.into_bytes();
    let writer = tokio::spawn(async move {
        for b in bytes {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut answer)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let took = start.elapsed().as_millis() as u64;
    assert!((REQUEST_MS..REQUEST_MS + 3000).contains(&took), "408 after {took} ms");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.contains("\"error\"") && body.contains("request_timeout"), "{text}");
    assert!(faulty.received().is_empty(), "{:?}", faulty.received());
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_stops_the_provider_and_pays_for_what_was_streamed() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    let (path, body) = request("flaky", true);
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", gw.url))
        .header("x-fault", "long-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    let mut chunks = resp.bytes_stream();
    let mut got = Vec::new();
    // Read a second of the answer (about ten words), then leave.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), chunks.next()).await {
            Ok(Some(Ok(c))) => got.extend_from_slice(&c),
            _ => break,
        }
    }
    drop(chunks);
    // The provider's request is cancelled: its connection closed long
    // before its 300 words were out.
    let r = faulty.ended("long-stream", Duration::from_secs(10)).await.expect("the provider was never stopped");
    assert!(r.cancelled, "{r:?}");
    assert!(r.events_sent < 100, "the provider went on for {} words", r.events_sent);
    // The record says the answer was incomplete and counts what was streamed.
    let rec = record(&gw, &request_id).await;
    assert_eq!(rec["decisions"]["incomplete"], true, "{rec}");
    let output = rec["outputTokens"].as_u64().unwrap();
    assert!(output >= 3 && output <= r.events_sent as u64 + 2, "{output} tokens for {} words sent", r.events_sent);
    // The spend report agrees.
    let rows = gw.usage_rows().await;
    let spent: u64 = rows.iter().filter_map(|r| r["output_tokens"].as_u64()).sum();
    assert!(spent >= output, "{rows:?}");
}

#[tokio::test]
async fn envoy_control_headers_from_a_client_change_nothing() {
    let faulty = FaultyProvider::start().await.unwrap();
    let gw = gateway(&faulty, "closed").await;
    // A client asking Envoy to retry a failing provider: one attempt only
    // (retries would bill the provider several times for one reservation).
    let (path, body) = request("plain", false);
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", gw.url))
        .header("x-fault", "fail-500")
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-max-retries", "3")
        .header("x-envoy-retriable-status-codes", "500")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(faulty.received().len(), 1, "{:?}", faulty.received());
    // Nor can a client shorten or lengthen the gateway's timeouts.
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", gw.url))
        .header("x-fault", "ok")
        .header("x-envoy-upstream-rq-timeout-ms", "1")
        .header("x-envoy-upstream-rq-per-try-timeout-ms", "1")
        .json(&json!({"model": "plain", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn with_nothing_to_inspect_a_stream_cut_short_still_ends_with_an_error_and_its_end_marker() {
    let faulty = FaultyProvider::start().await.unwrap();
    // No output guard, and a prompt with nothing to mask.
    let gw = gateway_with(&faulty, "closed", "inspection:\n  output: {entities: {}}\n").await;
    for model in ["flaky", "flaky-claude"] {
        for fault in ["cut-at-event", "truncated-sse"] {
            let got = call(&gw, model, true, fault).await;
            let text = got.text();
            // The words as the provider sent them (nothing held back) ...
            assert!(text.contains("\"The \"") || text.contains("\"text\":\"The \""), "{model} {fault}: {text}");
            // ... then one error event and the end marker.
            let (events, errors) = errors(&got);
            assert_eq!(errors.len(), 1, "{model} {fault}: {text}");
            // A stream cut at an event's edge is truncated; one cut inside an
            // event ends with half an event, which is not JSON.
            let said = match fault {
                "cut-at-event" => ["upstream_stream_truncated", "ended before the answer"],
                _ => ["upstream_invalid_event", "not JSON"],
            };
            assert!(said.iter().any(|s| text.contains(s)), "{model} {fault}: {text}");
            assert!(fault != "truncated-sse" || !text.contains("jum"), "half an event passed: {text}");
            if model == "flaky" {
                assert!(events.last().unwrap().is_done(), "{text}");
            } else {
                assert_eq!(events.last().unwrap().event.as_deref(), Some("error"), "{text}");
            }
        }
        // A complete stream is left alone.
        let got = call(&gw, model, true, "ok").await;
        assert!(!got.text().contains("upstream_stream_truncated"), "{}", got.text());
        assert!(errors(&got).1.is_empty(), "{}", got.text());
    }
}
