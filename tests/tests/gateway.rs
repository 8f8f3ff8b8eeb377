//! End-to-end: a real Envoy loading the built filter, the real sidecar and
//! the mock provider on loopback ports chosen at run time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_e2e::{run_envoy_expecting_exit, sse_events, Gateway, Options};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    gw.post(path, body).await
}

#[tokio::test]
async fn openai_chat_json_is_counted_routed_and_published() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    let request_id = resp.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    assert!(!request_id.is_empty());
    assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
    let body: Value = resp.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().contains("hello there"));
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = body["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0 && completion > 0);

    assert_eq!(gw.wait_stat("tollgate_input_tokens_total", prompt).await, Some(prompt));
    assert_eq!(gw.wait_stat("tollgate_output_tokens_total", completion).await, Some(completion));
    assert_eq!(gw.stat("tollgate_requests_total").await, Some(1));

    let log = gw.access_log(1).await;
    let rec = &log[0];
    assert_eq!(rec["model"], "gpt-4o-mini", "{rec}");
    assert_eq!(rec["api"], "openai-chat");
    assert_eq!(rec["provider"], "mock");
    assert_eq!(rec["upstream"], "provider_mock");
    let usage: Value = serde_json::from_str(rec["usage"].as_str().unwrap()).unwrap();
    assert_eq!(usage["input_tokens"], prompt);
    assert_eq!(usage["output_tokens"], completion);

    // The routing header stays inside the gateway.
    let seen = gw.mock_requests().await;
    let headers = &seen.last().unwrap()["headers"];
    assert!(headers.get("x-tollgate-provider").is_none(), "routing header leaked upstream: {headers}");
    assert_eq!(headers["x-tollgate-request-id"], request_id.as_str());
}

#[tokio::test]
async fn openai_chat_stream_counts_usage_from_the_final_chunk() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({
            "model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream me a few words please"}]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(resp.headers().contains_key("x-tollgate-request-id"));
    let events = sse_events(&resp.bytes().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events.iter().filter_map(|e| serde_json::from_str(&e.data).ok()).collect();
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_string)).collect();
    assert!(text.contains("stream me a few words please"), "{text}");
    let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap()["usage"].clone();
    let (input, output) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert_eq!(gw.wait_stat("tollgate_output_tokens_total", output).await, Some(output));
    assert_eq!(gw.stat("tollgate_input_tokens_total").await, Some(input));
    assert_eq!(gw.stat("tollgate_usage_missing_total").await.unwrap_or(0), 0);
}

#[tokio::test]
async fn anthropic_messages_json_and_stream() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let resp = post(
        &gw,
        "/v1/messages",
        &json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "system": "terse",
            "messages": [{"role": "user", "content": "ping from anthropic client"}]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    let json_in = body["usage"]["input_tokens"].as_u64().unwrap();
    let json_out = body["usage"]["output_tokens"].as_u64().unwrap();

    let resp = post(
        &gw,
        "/v1/messages",
        &json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "stream from anthropic client"}]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.bytes().await.unwrap());
    let kinds: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));
    let start: Value = serde_json::from_str(&events[0].data).unwrap();
    let delta: Value = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("message_delta"))
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .next_back()
        .unwrap();
    let stream_in = start["message"]["usage"]["input_tokens"].as_u64().unwrap();
    let stream_out = delta["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(gw.wait_stat("tollgate_output_tokens_total", json_out + stream_out).await, Some(json_out + stream_out));
    assert_eq!(gw.stat("tollgate_input_tokens_total").await, Some(json_in + stream_in));
    let log = gw.access_log(2).await;
    assert!(log.iter().all(|r| r["api"] == "anthropic-messages"), "{log:?}");
}

#[tokio::test]
async fn non_ai_traffic_passes_only_where_the_policy_says() {
    // Refused by default: 404 in the provider's shape, nothing reaches it.
    let gw = Gateway::start(Options::default()).await.unwrap();
    let resp = client().get(format!("{}/v1/models", gw.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_path", "{v}");
    let resp = client().post(format!("{}/upload", gw.url)).body("not json at all").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(gw.mock_requests().await.is_empty());
    drop(gw);

    // Listed as pass-through: forwarded as is, not inspected.
    let gw = Gateway::start(Options {
        policy_extra: "access: {passthrough: ['/v1/models', '/upload']}\n".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let resp = client().get(format!("{}/v1/models", gw.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-tollgate-request-id"));
    assert!(!resp.headers().contains_key("x-tollgate-backend"));
    let resp = client().post(format!("{}/upload", gw.url)).body("not json at all").send().await.unwrap();
    assert!(!resp.headers().contains_key("x-tollgate-request-id"));
    let seen = gw.mock_requests().await;
    let upload = seen.iter().find(|r| r["path"] == "/upload").expect("mock saw /upload");
    assert_eq!(upload["body"], "not json at all");
    assert!(upload["headers"].get("x-tollgate-request-id").is_none());
    assert_eq!(gw.stat("tollgate_requests_total").await.unwrap_or(0), 0);
}

#[tokio::test]
async fn oversize_body_gets_413_in_the_provider_shape() {
    let gw =
        Gateway::start(Options { policy_extra: "inspection: {maxBodyBytes: 4096}\n".into(), ..Options::default() })
            .await
            .unwrap();
    let big = "x".repeat(8000);
    let resp =
        post(&gw, "/v1/chat/completions", &json!({"model": "m", "messages": [{"role": "user", "content": big}]})).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("4096"));

    let resp = post(
        &gw,
        "/v1/messages",
        &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "request_too_large");

    // Chunked, with no content-length: caught while buffering.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(r#"{"model":"m","messages":[{"role":"user","content":""#.to_string()),
        Ok(big.clone()),
        Ok(r#""}]}"#.to_string()),
    ];
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Nothing oversize reached the provider.
    assert!(gw
        .mock_requests()
        .await
        .iter()
        .all(|r| r["path"] != "/v1/chat/completions" && r["path"] != "/v1/messages"));
    assert_eq!(gw.stat("tollgate_rejected_total").await, Some(3));
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_in_the_provider_shape() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_json");

    // A gzip body cannot be inspected: 415, never passed on unseen.
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f_u8, 0x8b, 0x08, 0x00, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    // Not UTF-8: a clear 400.
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let resp = post(&gw, "/v1/messages", &json!({"max_tokens": 5, "messages": []})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap().contains("model"), "{body}");
}

#[tokio::test]
async fn model_alias_is_rewritten_and_provider_key_injected() {
    let gw = Gateway::start(Options {
        policy_extra: "models:\n  fast: {targets: [{provider: mock, model: mock-small}]}\n".into(),
        provider_extra: "keyEnv: TOLLGATE_E2E_MOCK_KEY".into(),
        sidecar_env: vec![("TOLLGATE_E2E_MOCK_KEY".into(), "sk-provider-secret".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth("client-key")
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    let text = resp.text().await.unwrap();
    assert!(!text.contains("sk-provider-secret"));
    let seen = gw.mock_requests().await;
    let req = seen.iter().find(|r| r["path"] == "/v1/chat/completions").unwrap();
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["model"], "mock-small");
    assert_eq!(req["headers"]["authorization"], "Bearer sk-provider-secret");
    assert!(!gw.log_text().contains("sk-provider-secret"), "the key was logged");
    let log = gw.access_log(1).await;
    assert_eq!(log[0]["model"], "fast");
    assert_eq!(log[0]["upstream_model"], "mock-small");
}

#[tokio::test]
async fn sidecar_down_fail_open_still_answers() {
    let gw = Gateway::start(Options {
        policy_extra: "failMode: {sidecar: open}\n".into(),
        sidecar: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert!(!resp.headers().contains_key("x-tollgate-backend"));
    // The filter still inspected and counted it.
    assert!(resp.headers().contains_key("x-tollgate-request-id"));
    let body: Value = resp.json().await.unwrap();
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(gw.wait_stat("tollgate_input_tokens_total", prompt).await, Some(prompt));
}

#[tokio::test]
async fn sidecar_down_fail_closed_rejects_and_nothing_reaches_the_provider() {
    let gw = Gateway::start(Options {
        policy_extra: "failMode: {sidecar: closed}\n".into(),
        sidecar: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(resp.status().is_server_error(), "got {}", resp.status());
    assert!(gw.mock_requests().await.iter().all(|r| r["path"] != "/v1/chat/completions"));
}

#[tokio::test]
async fn sidecar_killed_mid_run_follows_fail_open() {
    let mut gw = Gateway::start(Options { policy_extra: "failMode: {sidecar: open}\n".into(), ..Options::default() })
        .await
        .unwrap();
    let req = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let resp = post(&gw, "/v1/chat/completions", &req).await;
    assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
    gw.kill("sidecar").await;
    let resp = post(&gw, "/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-tollgate-backend"));
}

#[tokio::test]
async fn invalid_plugin_configuration_is_rejected_with_a_logged_reason() {
    let (code, log) = run_envoy_expecting_exit(
        Options { plugin_config: Some(r#"{"failMode":"sometimes"}"#.into()), sidecar: false, ..Options::default() },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(code.is_some_and(|c| c != 0), "envoy kept running with a bad plugin configuration: {code:?}\n{log}");
    assert!(log.contains("invalid plugin configuration"), "{log}");
    assert!(log.contains("failMode"), "the reason names the field: {log}");
}

#[tokio::test]
async fn streamed_usage_is_counted_even_when_the_client_did_not_ask() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({
            "model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": "count me without asking"}]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.bytes().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events.iter().filter_map(|e| serde_json::from_str(&e.data).ok()).collect();
    assert!(chunks.iter().all(|c| !c["usage"].is_object()), "the client got a usage chunk it did not ask for");
    assert!(chunks.iter().all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())));
    // The provider was asked for usage, and the gateway counted it.
    let seen = gw.mock_requests().await;
    let sent: Value = serde_json::from_str(seen.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert!(gw.wait_stat("tollgate_output_tokens_total", 1).await.unwrap() > 0);
    assert_eq!(gw.stat("tollgate_usage_missing_total").await.unwrap_or(0), 0);
}

/// Header values may carry bytes that are not UTF-8 (HTTP allows obs-text):
/// the filter reads them without failing, and keeps serving.
#[tokio::test]
async fn header_values_that_are_not_utf8_do_not_break_the_filter() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(Options::default()).await.unwrap();
    let addr = gw.url.trim_start_matches("http://").to_string();
    let body = br#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}"#;
    // The request id, the response's content type and the refused encoding
    // are all read by the filter.
    for (header, expect) in [
        (&b"x-request-id: caf\xe9-\xff\r\n"[..], &["HTTP/1.1 200 OK"][..]),
        (&b"content-encoding: gz\xe9ip\r\n"[..], &["HTTP/1.1 415 Unsupported Media Type"][..]),
        // A name that is not UTF-8: Envoy's codec refuses it (closing the
        // connection), never the filter's VM.
        (&b"x-caf\xe9: 1\r\n"[..], &["", "HTTP/1.1 400 Bad Request"][..]),
    ] {
        let mut raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(header);
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&raw).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&answer);
        let answered = |e: &&str| if e.is_empty() { text.is_empty() } else { text.starts_with(e) };
        assert!(expect.iter().any(answered), "{text}\n{}", gw.log_text());
    }
    // The filter's VM is still there: the next request is inspected as usual.
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-tollgate-request-id"), "{}", gw.log_text());
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}

/// The bootstrap without the wasm filter: an ext_proc-only gateway.
fn without_the_filter(_: &tollgate_core::policy::Policy, mut bootstrap: Value) -> Value {
    let hcm = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    if let Some(filters) = hcm["http_filters"].as_array_mut() {
        filters.retain(|f| f["name"] != "tollgate.wasm");
    }
    bootstrap
}

/// Without the filter in front, the sidecar asks an OpenAI stream for its
/// usage and drops the extra chunk: the client gets the stream it asked
/// for, and the spend uses the provider's count.
#[tokio::test]
async fn without_the_filter_the_sidecar_asks_a_stream_for_its_usage() {
    let gw = Gateway::start(Options { envoy_edit: Some(without_the_filter), ..Options::default() }).await.unwrap();
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Count the harbour boats returning before dawn, please."}]});
    let resp = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert!(resp.headers().get("x-tollgate-request-id").is_none(), "no filter in front");
    assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
    let text = resp.text().await.unwrap();
    let events = sse_events(text.as_bytes());
    assert!(!events.is_empty());
    assert!(!events.iter().any(tollgate_core::usage::is_usage_only_chunk), "{text}");
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"), "{text}");
    // The provider was asked for its usage, and its count is what was recorded.
    let seen = gw.mock_requests().await;
    let sent: Value = serde_json::from_str(seen.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    let direct = client().post(format!("http://{}/v1/chat/completions", gw.mock)).json(&sent).send().await.unwrap();
    let direct = direct.text().await.unwrap();
    let usage: Value = sse_events(direct.as_bytes())
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .find(|v| v["usage"].is_object())
        .expect("the mock reports usage when asked")["usage"]
        .clone();
    let log = gw.access_log(1).await;
    assert_eq!(log[0]["input_tokens"], usage["prompt_tokens"], "{log:?}");
    assert_eq!(log[0]["output_tokens"], usage["completion_tokens"], "{log:?}");
}
