//! End-to-end, through a real Envoy, the sidecar and the mock provider: a
//! stream the output guard blocks ends with its error event and end marker,
//! not one byte of the provider's stream after them, and the stream is
//! closed (the provider stops); over `maxResponseBytes` / `maxSseEventBytes`
//! an answer that must be guarded follows `failMode.filter`: `closed` lets
//! nothing unguarded through, `open` passes it whole and counts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_e2e::{read_body, sse_events, Gateway, Options};

/// A key shaped like an OpenAI project key: the output guard's `SECRET`.
const LEAK: &str = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678";

/// What the client receives of a streamed answer: every byte until the
/// stream ends or breaks off, whether it ended cleanly, and how long it took.
struct Received {
    bytes: Vec<u8>,
    clean_end: bool,
    took: Duration,
}

async fn receive(resp: reqwest::Response) -> Received {
    let start = Instant::now();
    let (bytes, clean_end) = read_body(resp).await;
    Received { bytes, clean_end, took: start.elapsed() }
}

async fn send(gw: &Gateway, path: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(format!("{}{path}", gw.url)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// A long answer: the leaked key early, then many words, each its own
/// event, sent one every `delay` ms by the mock.
fn long_tail(words: usize) -> String {
    let tail: Vec<String> = (0..words).map(|i| format!("tailword{i}")).collect();
    format!("the key is {LEAK} and then {}", tail.join(" "))
}

#[tokio::test]
async fn a_blocked_stream_ends_with_its_error_and_nothing_after() {
    let gw = Gateway::start(Options {
        policy_extra: "inspection:\n  output: {entities: {SECRET: block}, windowBytes: 32}\n".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let words = 150;
    let delay_ms = 20;
    let append = long_tail(words);
    for (path, anthropic) in [("/v1/chat/completions", false), ("/v1/messages", true)] {
        let resets_before = gw.envoy_counter(".upstream_rq_tx_reset").await;
        let body = json!({"model": if anthropic { "claude-sonnet-4-5" } else { "gpt-4o-mini" }, "max_tokens": 4000,
            "stream": true, "messages": [{"role": "user", "content": "what is the key?"}]});
        let resp =
            send(&gw, path, &body, &[("x-mock-append", &append), ("x-mock-chunk-delay-ms", &delay_ms.to_string())])
                .await;
        assert_eq!(resp.status(), 200, "{}", gw.log_text());
        let got = receive(resp).await;
        let text = String::from_utf8_lossy(&got.bytes).into_owned();
        assert!(!text.contains("sk-proj"), "{path}: the secret reached the client: {text}");
        // The provider kept sending words after the one that was blocked:
        // not one of them reaches the client.
        assert!(!text.contains("tailword"), "{path}: bytes after the block reached the client: {text}");
        let evs = sse_events(&got.bytes);
        let last = evs.last().unwrap_or_else(|| panic!("{path}: no events: {text}"));
        if anthropic {
            assert_eq!(last.event.as_deref(), Some("error"), "{path}: {text}");
            let v: Value = serde_json::from_str(&last.data).unwrap();
            assert_eq!(v["type"], "error");
            assert!(v["error"]["message"].as_str().unwrap().contains("SECRET"), "{v}");
            assert!(text.ends_with(&format!("data: {}\n\n", last.data)), "{path}: nothing after the error: {text:?}");
        } else {
            assert!(last.is_done(), "{path}: {text}");
            let err: Value = serde_json::from_str(&evs[evs.len() - 2].data).unwrap();
            assert_eq!(err["error"]["code"], "output_blocked", "{path}: {text}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{path}: nothing after [DONE]: {text:?}");
            assert_eq!(text.matches("[DONE]").count(), 1, "{path}: {text}");
        }
        // The stream ended long before the provider would have finished
        // (one word every `delay_ms`), because Envoy reset it: the client's
        // HTTP/1.1 response breaks off after the error (no final chunk) and
        // the upstream request is cancelled.
        let full = Duration::from_millis(words as u64 * delay_ms);
        assert!(got.took < full / 2, "{path}: the stream ran on ({:?} of {full:?})", got.took);
        assert!(!got.clean_end, "{path}: the stream was reset, not ended by the provider");
        let resets = gw.envoy_counter(".upstream_rq_tx_reset").await;
        assert!(resets > resets_before, "{path}: the upstream request was not reset");
    }
    assert!(gw.wait_stat("tollgate_output_blocked_total", 2).await.unwrap() >= 2);
}

/// A gateway with small caps and the given `failMode.filter`.
async fn capped(filter: &str) -> Gateway {
    Gateway::start(Options {
        policy_extra: format!(
            "failMode: {{filter: {filter}}}\ninspection:\n  maxResponseBytes: 2048\n  maxSseEventBytes: 1024\n"
        ),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// An answer over `maxResponseBytes` (JSON), and a stream with one event
/// over `maxSseEventBytes`, the words after it marked.
fn big_word() -> String {
    format!("HUGE{}", "z".repeat(3000))
}

#[tokio::test]
async fn over_a_cap_fail_closed_lets_nothing_unguarded_through() {
    let gw = capped("closed").await;
    let chat = |stream: bool| json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hello"}]});
    let messages = |stream: bool| json!({"model": "claude-sonnet-4-5", "max_tokens": 4000, "stream": stream, "messages": [{"role": "user", "content": "hello"}]});

    // JSON over maxResponseBytes: the body is an error in the client API's shape.
    let long = (0..600).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    for (path, body, anthropic) in
        [("/v1/chat/completions", chat(false), false), ("/v1/messages", messages(false), true)]
    {
        let resp = send(&gw, path, &body, &[("x-mock-append", &long)]).await;
        let text = resp.text().await.unwrap();
        assert!(!text.contains("w599") && !text.contains("Mock reply"), "{path}: the answer passed: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        if anthropic {
            assert_eq!(v["type"], "error", "{text}");
            assert_eq!(v["error"]["type"], "api_error", "{text}");
        } else {
            assert_eq!(v["error"]["code"], "response_too_large", "{text}");
        }
        assert!(text.contains("maxResponseBytes"), "{text}");
    }

    // A streamed event over maxSseEventBytes: what came before it, then the
    // error and the end marker, then nothing.
    let append = format!("before {} AFTERWORD and more", big_word());
    for (path, body, anthropic) in [("/v1/chat/completions", chat(true), false), ("/v1/messages", messages(true), true)]
    {
        let resp = send(&gw, path, &body, &[("x-mock-append", &append), ("x-mock-chunk-delay-ms", "5")]).await;
        assert_eq!(resp.status(), 200);
        let got = receive(resp).await;
        let text = String::from_utf8_lossy(&got.bytes).into_owned();
        assert!(!text.contains("HUGE") && !text.contains("AFTERWORD"), "{path}: unguarded bytes passed: {text}");
        let evs = sse_events(&got.bytes);
        let error = if anthropic {
            let last = evs.last().unwrap();
            assert_eq!(last.event.as_deref(), Some("error"), "{path}: {text}");
            last
        } else {
            assert!(text.ends_with("data: [DONE]\n\n"), "{path}: {text}");
            &evs[evs.len() - 2]
        };
        assert!(error.data.contains("maxSseEventBytes"), "{path}: {text}");
        if !anthropic {
            let v: Value = serde_json::from_str(&error.data).unwrap();
            assert_eq!(v["error"]["code"], "upstream_event_too_large", "{text}");
        }
        assert!(text.contains("Mock reply"), "{path}: what came before the big event is kept: {text}");
    }
    assert_eq!(gw.stat("tollgate_fail_open_total").await.unwrap_or(0), 0);
}

#[tokio::test]
async fn over_a_cap_fail_open_passes_the_answer_whole_and_counts_it() {
    let gw = capped("open").await;
    let long = (0..600).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let resp = send(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}),
        &[("x-mock-append", &long)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().ends_with("w599"), "{v}");

    let append = format!("before {} AFTERWORD and more", big_word());
    let resp = send(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hello"}]}),
        &[("x-mock-append", &append), ("x-mock-chunk-delay-ms", "5")],
    )
    .await;
    let got = receive(resp).await;
    assert!(got.clean_end);
    let evs = sse_events(&got.bytes);
    let text: String = evs
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["choices"].get(0)?["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert!(text.starts_with("Mock reply to: hello"), "{text}");
    assert!(text.ends_with(&append), "the answer passes whole: {text}");
    assert!(evs.last().unwrap().is_done());
    assert!(gw.wait_stat("tollgate_fail_open_total", 2).await.unwrap() >= 2);
}
