//! Provider translation end to end: an OpenAI client served by an Anthropic
//! model and an Anthropic client served by an OpenAI model, through Envoy,
//! the filter and the sidecar, against the mock provider's two APIs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollgate_e2e::{sse_events, Gateway, Options};

async fn gateway() -> Gateway {
    Gateway::start(Options::default()).await.unwrap()
}

/// The JSON body the mock provider received last.
async fn last_body(gw: &Gateway) -> (Value, Value) {
    let seen = gw.mock_requests().await;
    let req = seen.last().unwrap().clone();
    let body = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    (req, body)
}

fn data(events: &[tollgate_core::SseEvent]) -> Vec<Value> {
    events.iter().filter_map(|e| serde_json::from_str(&e.data).ok()).collect()
}

#[tokio::test]
async fn openai_client_served_by_an_anthropic_model() {
    let gw = gateway().await;
    let body = json!({"model": "claude-haiku-4-5", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello to Ada"}]});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(v["model"], "claude-haiku-4-5");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains("Say hello to Ada"), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0 && v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // The provider got an Anthropic Messages request.
    let (req, sent) = last_body(&gw).await;
    assert_eq!(req["path"], "/v1/messages", "{req}");
    assert_eq!(req["headers"]["anthropic-version"], "2023-06-01");
    let system = sent["system"].as_str().map(str::to_string).unwrap_or_else(|| sent["system"][0]["text"].to_string());
    assert!(system.contains("Be brief."), "{sent}");
    assert!(sent["max_tokens"].as_u64().is_some(), "{sent}");

    // Streamed, with a tool call.
    let body = json!({"model": "claude-haiku-4-5", "stream": true, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}],
        "messages": [{"role": "user", "content": "find Ada"}]});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.bytes().await.unwrap());
    assert!(events.last().unwrap().is_done());
    let chunks = data(&events);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    let name =
        chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str()).unwrap();
    assert_eq!(name, "lookup");
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert!(args["query"].as_str().unwrap().contains("find Ada"), "{args}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{chunks:?}");
    // The client did not ask for usage: no usage-only chunk reaches it.
    assert!(!chunks.iter().any(|c| c["choices"].as_array().is_some_and(Vec::is_empty)), "{chunks:?}");
    let (_, sent) = last_body(&gw).await;
    assert_eq!(sent["tool_choice"]["type"], "any", "{sent}");
}

#[tokio::test]
async fn anthropic_client_served_by_an_openai_model() {
    let gw = gateway().await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello to Grace"}]});
    let resp = gw.post_with("/v1/messages", &body, &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant");
    assert!(v["content"][0]["text"].as_str().unwrap().contains("Say hello to Grace"), "{v}");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let (req, sent) = last_body(&gw).await;
    assert_eq!(req["path"], "/v1/chat/completions", "{req}");
    assert!(req["headers"].get("anthropic-version").is_none(), "{req}");
    assert_eq!(sent["messages"][0]["role"], "system", "{sent}");

    // Streamed: Anthropic's event sequence, usage carried over.
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "Say hello to Grace"}]});
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.bytes().await.unwrap());
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"), "{names:?}");
    let text: String = data(&events).iter().filter_map(|d| d["delta"]["text"].as_str().map(str::to_string)).collect();
    assert!(text.contains("Say hello to Grace"), "{text}");
    let delta = data(&events).into_iter().find(|d| d["type"] == "message_delta").unwrap();
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0, "{delta}");
    // Envoy's log shows usage counted from the translated stream.
    let log = gw.access_log(2).await;
    assert!(log.iter().all(|r| r["provider"] == "mock"), "{log:?}");
}

#[tokio::test]
async fn provider_errors_come_back_in_the_clients_shape() {
    let gw = gateway().await;
    let body = json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/chat/completions", &body, &[("x-mock-status", "429")]).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "OpenAI error shape: {v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/messages", &body, &[("x-mock-status", "500")]).await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic error shape: {v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    // A request the other API cannot express is refused before it leaves.
    let body = json!({"model": "claude-haiku-4-5", "n": 3, "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains('n'), "{v}");
}

#[tokio::test]
async fn azure_openai_deployments_api_version_and_api_key() {
    let gw = Gateway::start(Options {
        providers_extra: "  azure: {kind: azure-openai, baseUrl: 'http://{mock}', keyEnv: TOLLGATE_E2E_AZURE_KEY, apiVersion: '2024-12-01-preview', deployments: {gpt-4o-mini: prod-mini}}".into(),
        policy_extra: "models:\n  corp: {targets: [{provider: azure, model: gpt-4o-mini}]}\n".into(),
        sidecar_env: vec![("TOLLGATE_E2E_AZURE_KEY".into(), "azure-secret-1".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let body = json!({"model": "corp", "messages": [{"role": "user", "content": "Hello!"}]});
    let resp = gw.post_with("/v1/chat/completions", &body, &[("authorization", "Bearer client-key")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-backend"], "azure");
    let v: Value = resp.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains("Hello!"), "{v}");
    let (req, sent) = last_body(&gw).await;
    assert_eq!(req["path"], "/openai/deployments/prod-mini/chat/completions?api-version=2024-12-01-preview");
    assert_eq!(req["headers"]["api-key"], "azure-secret-1");
    assert!(req["headers"].get("authorization").is_none(), "the client's key is stripped: {req}");
    assert_eq!(sent["model"], "gpt-4o-mini");
    // An Anthropic client reaches the Azure deployment through translation.
    let body = json!({"model": "corp", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello!"}]});
    let resp = gw.post("/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    let (req, _) = last_body(&gw).await;
    assert!(req["path"].as_str().unwrap().starts_with("/openai/deployments/prod-mini/chat/completions?"), "{req}");
}
