//! End-to-end, through a real Envoy, the sidecar and the mock provider:
//! moderation (`inspection.moderation`) refuses a toxic answer in the
//! client API's shape: a stream ends with one error event (OpenAI: then
//! `data: [DONE]`; Anthropic: `event: error`), a JSON answer becomes the
//! API's error body; the toxic words never reach the client. A harmless
//! answer passes untouched, and a `flag` category is counted and recorded
//! without changing the answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollgate_e2e::{sse_events, Gateway, Options};

/// Harassment, as the model answers it (the mock appends it to its reply).
const INSULT: &str = "You are a worthless, pathetic idiot and a stupid piece of shit.";
const HARMLESS: &str = "The weather in Paris is mild in spring, with occasional rain showers.";

async fn ask(gw: &Gateway, path: &str, stream: bool, append: &str) -> (u16, String) {
    let model = if path == "/v1/messages" { "claude-sonnet-4-5" } else { "gpt-4o-mini" };
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", gw.url))
        .header("x-mock-append", append)
        .json(&json!({"model": model, "max_tokens": 500, "stream": stream,
            "messages": [{"role": "user", "content": "tell me what you think"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_toxic_answer_is_refused_in_the_api_shape_streamed_or_not() {
    let gw = Gateway::start(Options {
        policy_extra: "inspection:\n  moderation: {output: {harassment: block, hate: block, sexual: flag}}\n".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let anthropic = path == "/v1/messages";
        // Streamed: one error event, and for OpenAI `[DONE]` after it.
        let (status, text) = ask(&gw, path, true, INSULT).await;
        assert_eq!(status, 200, "{}", gw.log_text());
        assert!(
            !text.contains("worthless") && !text.contains("idiot"),
            "{path}: the insult reached the client: {text}"
        );
        let evs = sse_events(text.as_bytes());
        let last = evs.last().unwrap_or_else(|| panic!("{path}: no events: {text}"));
        if anthropic {
            assert_eq!(last.event.as_deref(), Some("error"), "{path}: {text}");
            let v: Value = serde_json::from_str(&last.data).unwrap();
            assert_eq!(v["type"], "error", "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("moderation:harassment"), "{v}");
            assert_eq!(evs.iter().filter(|e| e.event.as_deref() == Some("error")).count(), 1, "{text}");
        } else {
            assert!(last.is_done(), "{path}: {text}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{path}: {text:?}");
            assert_eq!(text.matches("[DONE]").count(), 1, "{path}: {text}");
            let err: Value = serde_json::from_str(&evs[evs.len() - 2].data).unwrap();
            assert_eq!(err["error"]["code"], "output_blocked", "{path}: {text}");
            assert!(err["error"]["message"].as_str().unwrap().contains("moderation:harassment"), "{err}");
        }
        // Not streamed: a 502 whose body is the API's error.
        let (status, body) = ask(&gw, path, false, INSULT).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert!(!body.contains("worthless"), "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        if anthropic {
            assert_eq!(v["type"], "error", "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("moderation:harassment"), "{v}");
        } else {
            assert_eq!(v["error"]["code"], "output_blocked", "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("moderation:harassment"), "{v}");
        }
        // A harmless answer passes as the provider sent it.
        for stream in [false, true] {
            let (status, body) = ask(&gw, path, stream, HARMLESS).await;
            assert_eq!(status, 200);
            assert!(!body.contains("output_blocked") && !body.contains("MODERATED"), "{path} {stream}: {body}");
            assert!(body.contains("occasional rain"), "{path} {stream}: {body}");
        }
    }
    // The filter counts the streams it ended; the JSON answers, held whole
    // by the sidecar (the filter fails closed by default) and refused there
    // with a 502, are the sidecar's to count.
    assert!(gw.wait_stat("tollgate_moderation_total.harassment", 2).await.unwrap() >= 2);
    assert!(gw.wait_stat("tollgate_output_blocked_total", 2).await.unwrap() >= 2);
    assert_eq!(gw.sidecar_metric("tollgate_refused_total{reason=\"output_blocked\"}").await, Some(2));
}

#[tokio::test]
async fn redact_and_flag_keep_the_rest_of_the_answer() {
    let gw = Gateway::start(Options {
        policy_extra: "inspection:\n  moderation: {output: {harassment: redact, hate: flag}}\n".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for stream in [false, true] {
        let (status, body) = ask(&gw, "/v1/chat/completions", stream, &format!("{HARMLESS} {INSULT}")).await;
        assert_eq!(status, 200);
        assert!(!body.contains("worthless"), "stream={stream}: {body}");
        assert!(body.contains("[MODERATED:harassment]"), "stream={stream}: {body}");
        assert!(!body.contains("output_blocked"), "stream={stream}: {body}");
    }
    assert!(gw.wait_stat("tollgate_moderation_total.harassment", 2).await.unwrap() >= 2);
}
