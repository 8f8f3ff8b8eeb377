//! The demo MCP server at `/mcp` over HTTP: a session from `initialize` to
//! `DELETE`, tools listed and called, errors, recording, and the model
//! APIs' failure flags left out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{client, Server};
use serde_json::{json, Value};
use tollgate_mock::MockConfig;

async fn post(server: &Server, session: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = client().post(server.url("/mcp")).header("accept", "application/json, text/event-stream").json(body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s).header("mcp-protocol-version", "2025-06-18");
    }
    req.send().await.unwrap()
}

async fn initialize(server: &Server) -> String {
    let resp = post(
        server,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let session = resp.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    session
}

#[tokio::test]
async fn a_session_lists_and_calls_the_demo_tools() {
    // Every model API POST would fail: the MCP server is not one of them.
    let server = Server::start(MockConfig { fail_every: 1, latency_ms: 5_000, ..MockConfig::default() }).await;
    let session = initialize(&server).await;
    let resp = post(&server, Some(&session), &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.text().await.unwrap().is_empty());

    let resp = post(&server, Some(&session), &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let names: Vec<&str> =
        body["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["get_forecast", "lookup_order", "echo"]);

    let call = json!({"jsonrpc": "2.0", "id": "c", "method": "tools/call",
        "params": {"name": "get_forecast", "arguments": {"city": "Lisbon", "days": 2}}});
    let body: Value = post(&server, Some(&session), &call).await.json().await.unwrap();
    assert_eq!(body["id"], "c");
    assert_eq!(body["result"]["isError"], false);
    assert!(body["result"]["content"][0]["text"].as_str().unwrap().starts_with("Forecast for Lisbon"));
    assert_eq!(body["result"]["structuredContent"]["days"].as_array().unwrap().len(), 2);

    let unknown = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm", "arguments": {}}});
    let body: Value = post(&server, Some(&session), &unknown).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32602);

    // Recorded like every request.
    let seen: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|r| r["path"] == "/mcp"));
    assert!(seen[4]["body"].as_str().unwrap().contains("\"rm\""));

    // The client ends the session; it is gone.
    let end = |s: &str| client().delete(server.url("/mcp")).header("mcp-session-id", s.to_string()).send();
    assert_eq!(end(&session).await.unwrap().status(), 200);
    assert_eq!(end(&session).await.unwrap().status(), 404);
    let resp = post(&server, Some(&session), &json!({"jsonrpc": "2.0", "id": 4, "method": "ping"})).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);
}

#[tokio::test]
async fn transport_errors() {
    let server = Server::default().await;
    let resp = client().post(server.url("/mcp")).body("{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": body["error"]["message"]}})
    );

    let resp = post(&server, None, &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
    assert_eq!(resp.status(), 400, "no session");

    let resp = client().get(server.url("/mcp")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST, DELETE");

    let resp = client()
        .post(server.url("/mcp"))
        .header("origin", "https://evil.example")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("mcp-session-id").is_none());
}
