//! Control headers, failure injection, recording, models, health and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{client, reply, Server};
use serde_json::{json, Value};
use tollgate_mock::MockConfig;

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

fn messages() -> Value {
    json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post_with(server: &Server, path: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(server.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn x_mock_status_gives_provider_shaped_errors() {
    let server = Server::default().await;

    let resp = post_with(&server, "/v1/chat/completions", &chat(), &[("x-mock-status", "429")]).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["x-mock-provider"], "mock");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("Rate limit"));
    assert!(body["error"].get("param").is_some());

    let resp = post_with(&server, "/v1/chat/completions", &chat(), &[("x-mock-status", "503")]).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");

    let resp = post_with(&server, "/v1/embeddings", &json!({}), &[("x-mock-status", "500")]).await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");

    let anthropic = [
        ("429", "rate_limit_error"),
        ("529", "overloaded_error"),
        ("500", "api_error"),
        ("401", "authentication_error"),
        ("400", "invalid_request_error"),
    ];
    for (status, kind) in anthropic {
        let resp = post_with(&server, "/v1/messages", &messages(), &[("x-mock-status", status)]).await;
        assert_eq!(resp.status().as_str(), status);
        assert_eq!(resp.headers().contains_key("retry-after"), status == "429");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], kind, "{status}");
        assert!(body["error"]["message"].is_string());
    }

    // Not an error status: ignored.
    let resp = post_with(&server, "/v1/chat/completions", &chat(), &[("x-mock-status", "200")]).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn latency_flag_and_header_delay_the_first_byte() {
    let server = Server::start(MockConfig { latency_ms: 250, ..MockConfig::default() }).await;
    let start = Instant::now();
    let resp = post_with(&server, "/v1/chat/completions", &chat(), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());

    let start = Instant::now();
    let resp = post_with(&server, "/v1/messages", &messages(), &[("x-mock-latency-ms", "600")]).await;
    assert_eq!(resp.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(600), "{:?}", start.elapsed());

    // The header overrides the flag downwards too; health is never delayed.
    let start = Instant::now();
    post_with(&server, "/v1/chat/completions", &chat(), &[("x-mock-latency-ms", "0")]).await;
    client().get(server.url("/healthz")).send().await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(250), "{:?}", start.elapsed());
}

#[tokio::test]
async fn chunk_delay_flag_spreads_stream_chunks() {
    let server = Server::start(MockConfig { chunk_delay_ms: 30, ..MockConfig::default() }).await;
    let mut req = messages();
    req["stream"] = json!(true);
    let start = Instant::now();
    let text = post_with(&server, "/v1/messages", &req, &[]).await.text().await.unwrap();
    // message_start, block start, ping, 4 deltas, block stop, message_delta, message_stop: 9 gaps
    assert_eq!(common::parse_sse(&text).len(), 10);
    assert!(start.elapsed() >= Duration::from_millis(9 * 30), "{:?}", start.elapsed());
}

#[tokio::test]
async fn fail_every_and_rate_limit_every_count_api_posts() {
    let server = Server::start(MockConfig { fail_every: 3, rate_limit_every: 4, ..MockConfig::default() }).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        // GETs and health checks are not counted.
        client().get(server.url("/v1/models")).send().await.unwrap();
        client().get(server.url("/healthz")).send().await.unwrap();
        let (path, body) = if i % 2 == 0 { ("/v1/chat/completions", chat()) } else { ("/v1/messages", messages()) };
        let resp = post_with(&server, path, &body, &[]).await;
        let status = resp.status().as_u16();
        if status == 429 {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        if status == 500 && path == "/v1/messages" {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["type"], "api_error");
        }
        statuses.push(status);
    }
    // Request n: 429 when n % 4 == 0 (checked first), else 500 when n % 3 == 0.
    assert_eq!(statuses, [200, 200, 500, 429, 200, 500, 200, 429, 500, 200, 200, 429]);
}

#[tokio::test]
async fn x_mock_reset_drops_the_connection_without_a_response() {
    let server = Server::default().await;
    let start = Instant::now();
    let err = client()
        .post(server.url("/v1/chat/completions"))
        .header("x-mock-reset", "1")
        .json(&chat())
        .send()
        .await
        .expect_err("no response on a reset connection");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert!(start.elapsed() < Duration::from_secs(5), "dropped promptly: {:?}", start.elapsed());

    // The server keeps serving, and the reset request was recorded.
    let resp = post_with(&server, "/v1/chat/completions", &chat(), &[]).await;
    assert_eq!(resp.status(), 200);
    let seen: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["headers"]["x-mock-reset"], "1");
}

#[tokio::test]
async fn recording_keeps_the_last_hundred_requests() {
    let server = Server::default().await;
    let raw = r#"{"model":"m","messages":[{"role":"user","content":"recorded"}]}"#;
    let resp = client()
        .post(server.url("/v1/chat/completions?trace=1"))
        .header("content-type", "application/json")
        .header("x-request-id", "rid-1")
        .header("x-custom", "a")
        .header("x-custom", "b")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "rid-1");
    // Non-API paths are recorded too (and answered 404).
    let resp = client().post(server.url("/upload")).body("not json").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    client().get(server.url("/healthz")).send().await.unwrap();

    let seen: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["method"], "POST");
    assert_eq!(seen[0]["path"], "/v1/chat/completions?trace=1", "the query is recorded too");
    assert_eq!(seen[0]["body"], raw);
    assert_eq!(seen[0]["headers"]["x-request-id"], "rid-1");
    assert_eq!(seen[0]["headers"]["x-custom"], "a, b");
    assert_eq!(seen[0]["headers"]["content-type"], "application/json");
    assert_eq!(seen[1]["path"], "/upload");
    assert_eq!(seen[1]["body"], "not json");

    let resp = client().delete(server.url("/mock/requests")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let seen: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    assert!(seen.is_empty());

    for i in 0..105 {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("n{i}")}]});
        post_with(&server, "/v1/chat/completions", &body, &[]).await;
    }
    let seen: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.len(), 100);
    let first: Value = serde_json::from_str(seen[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(first["messages"][0]["content"], "n5");
    let last: Value = serde_json::from_str(seen[99]["body"].as_str().unwrap()).unwrap();
    assert_eq!(last["messages"][0]["content"], "n104");
}

#[tokio::test]
async fn name_models_health_and_request_id_on_every_response() {
    let server = Server::start(MockConfig { name: "acme".into(), ..MockConfig::default() }).await;
    let check = |resp: &reqwest::Response| {
        assert_eq!(resp.headers()["x-mock-provider"], "acme", "{}", resp.url());
        assert_eq!(resp.headers()["x-request-id"], "rid-9", "{}", resp.url());
    };
    let get = |path: &str| client().get(server.url(path)).header("x-request-id", "rid-9");

    let resp = get("/healthz").send().await.unwrap();
    check(&resp);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    let resp = get("/v1/models").send().await.unwrap();
    check(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme-chat", "acme-embedding"]);
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(body["data"][0]["owned_by"], "acme");

    let resp = get("/v1/models").header("anthropic-version", "2023-06-01").send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"][0]["type"], "model");
    assert_eq!(body["has_more"], false);
    assert_eq!(body["first_id"], "acme-chat");

    let resp = get("/mock/requests").send().await.unwrap();
    check(&resp);
    let resp = get("/nowhere").send().await.unwrap();
    check(&resp);
    assert_eq!(resp.status(), 404);
    let resp = get("/v1/chat/completions").send().await.unwrap();
    check(&resp);
    assert_eq!(resp.status(), 405);
    let resp = client()
        .post(server.url("/v1/messages"))
        .header("x-request-id", "rid-9")
        .header("x-mock-status", "529")
        .json(&messages())
        .send()
        .await
        .unwrap();
    check(&resp);
    assert_eq!(resp.status(), 529);
    let mut streamed = messages();
    streamed["stream"] = json!(true);
    let resp =
        client().post(server.url("/v1/messages")).header("x-request-id", "rid-9").json(&streamed).send().await.unwrap();
    check(&resp);
}

#[tokio::test]
async fn router_works_in_process_with_axum_serve() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tollgate_mock::router(MockConfig::default());
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let resp = client().post(format!("http://{addr}/v1/chat/completions")).json(&chat()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], reply("hi").as_str());
    // Without serve()'s connection handling a reset aborts the body instead.
    let result = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-mock-reset", "1")
        .json(&chat())
        .send()
        .await;
    if let Ok(resp) = result {
        assert!(resp.bytes().await.is_err(), "body must fail");
    }
    task.abort();
}

#[tokio::test]
async fn serve_returns_after_shutdown_even_mid_stream() {
    let server = Server::default().await;
    let mut req = chat();
    req["stream"] = json!(true);
    let resp = client()
        .post(server.url("/v1/chat/completions"))
        .header("x-mock-chunk-delay-ms", "100")
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move { resp.text().await });
    let base = server.base.clone();
    let start = Instant::now();
    server.stop().await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(8));
    // The in-flight stream was allowed to finish.
    let text = reader.await.unwrap().unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // And the port no longer accepts requests.
    assert!(client().get(format!("{base}/healthz")).send().await.is_err());
}
