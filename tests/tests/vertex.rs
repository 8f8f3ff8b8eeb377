//! Gemini on Vertex AI through a real Envoy and the real sidecar: the
//! sidecar signs a service-account JWT, exchanges it at the (mock's) OAuth
//! token endpoint, calls the project's publisher model path with the access
//! token, and renews the token before it expires (the mock refuses expired
//! ones). The service account key is made by `openssl` for the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_e2e::{Gateway, Options};

/// A service account key file with a fresh RSA key; its path.
fn service_account(dir: &std::path::Path) -> String {
    let pem = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&pem)
        .status()
        .expect("openssl");
    assert!(made.success());
    let account = json!({
        "type": "service_account", "project_id": "demo-proj", "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "client_email": "gateway@demo-proj.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join("sa.json");
    std::fs::write(&path, account.to_string()).unwrap();
    path.display().to_string()
}

async fn vertex_gateway(dir: &std::path::Path, ttl_secs: u64) -> Gateway {
    let key = service_account(dir);
    Gateway::start(Options {
        providers_extra: format!(
            "  vertex: {{kind: vertex-ai, baseUrl: 'http://{{mock}}', project: demo-proj, location: us-central1, credentialsFile: '{key}', tokenUrl: 'http://{{mock}}/token'}}"
        ),
        policy_extra: "models:\n  vgem: {targets: [{provider: vertex, model: gemini-2.5-flash}]}\n".into(),
        mock_args: vec!["--token-ttl-secs".into(), ttl_secs.to_string()],
        ..Options::default()
    })
    .await
    .unwrap()
}

/// The Vertex requests and token exchanges the mock received.
async fn seen(gw: &Gateway) -> (Vec<Value>, usize) {
    let all = gw.mock_requests().await;
    let tokens = all.iter().filter(|r| r["path"] == "/token").count();
    (all.into_iter().filter(|r| r["path"] != "/token").collect(), tokens)
}

fn bearer(req: &Value) -> String {
    req["headers"]["authorization"].as_str().unwrap_or_else(|| panic!("no authorization: {req}")).to_string()
}

#[tokio::test]
async fn vertex_gemini_with_a_service_account_token_renewed_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let gw = vertex_gateway(dir.path(), 4).await;
    let ask = |text: &str, stream: bool| json!({"model": "vgem", "stream": stream, "messages": [{"role": "user", "content": text}]});

    let resp = gw.post("/v1/chat/completions", &ask("Say hello to Ada", false)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "vgem", "{body}");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().contains("Say hello to Ada"), "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{body}");

    let resp = gw.post("/v1/chat/completions", &ask("Say hello to Grace", true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("Grace") && text.trim_end().ends_with("data: [DONE]"), "{text}");

    let (calls, exchanges) = seen(&gw).await;
    assert_eq!(exchanges, 1, "one token serves both calls");
    let base = "/v1/projects/demo-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash";
    assert_eq!(calls[0]["path"], format!("{base}:generateContent"), "{}", calls[0]);
    assert_eq!(calls[1]["path"], format!("{base}:streamGenerateContent?alt=sse"), "{}", calls[1]);
    let first = bearer(&calls[0]);
    assert!(first.starts_with("Bearer mock-token-"), "{first}");
    assert_eq!(bearer(&calls[1]), first);

    // In the token's last quarter (4 s life) a request gets a new one first.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let resp = gw.post("/v1/chat/completions", &ask("Say hello to Hopper", false)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    // And after it expired altogether (the mock refuses an expired token).
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let resp = gw.post("/v1/chat/completions", &ask("Say hello to Lovelace", false)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    let (calls, exchanges) = seen(&gw).await;
    assert_eq!(exchanges, 3, "renewed before expiry, then again after it");
    let tokens: Vec<String> = calls.iter().map(bearer).collect();
    assert_ne!(tokens[2], tokens[1]);
    assert_ne!(tokens[3], tokens[2]);
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_is_a_503_in_the_clients_shape() {
    let dir = tempfile::tempdir().unwrap();
    let key = service_account(dir.path());
    let gw = Gateway::start(Options {
        // A token endpoint that answers 404 (the mock has no such path).
        providers_extra: format!(
            "  vertex: {{kind: vertex-ai, baseUrl: 'http://{{mock}}', project: demo-proj, location: us-central1, credentialsFile: '{key}', tokenUrl: 'http://{{mock}}/no-token-here'}}"
        ),
        policy_extra: "models:\n  vgem: {targets: [{provider: vertex, model: gemini-2.5-flash}]}\n".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let resp = gw
        .post("/v1/chat/completions", &json!({"model": "vgem", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("no access token"), "{body}");
    let (calls, _) = seen(&gw).await;
    assert!(
        calls.iter().all(|r| !r["path"].as_str().unwrap_or("").contains("publishers")),
        "never sent without a token"
    );
}

#[tokio::test]
async fn claude_on_vertex_through_raw_predict_for_openai_and_anthropic_clients() {
    let dir = tempfile::tempdir().unwrap();
    let key = service_account(dir.path());
    let gw = Gateway::start(Options {
        providers_extra: format!(
            "  vertex: {{kind: vertex-ai, baseUrl: 'http://{{mock}}', project: demo-proj, location: us-east5, credentialsFile: '{key}', tokenUrl: 'http://{{mock}}/token'}}"
        ),
        policy_extra: "models:\n  vclaude: {targets: [{provider: vertex, model: 'claude-sonnet-4-5@20250929'}]}\n".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    // An OpenAI client: translated to Anthropic Messages, sent as rawPredict.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "vclaude", "messages": [{"role": "user", "content": "Say hello to Ada"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().contains("Say hello to Ada"), "{body}");
    // An Anthropic client, streamed: streamRawPredict, Anthropic's events back.
    let resp = gw
        .post_with(
            "/v1/messages",
            &json!({"model": "vclaude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Say hello to Grace"}]}),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_stop") && text.contains("Grace"), "{text}");

    let (calls, exchanges) = seen(&gw).await;
    assert_eq!(exchanges, 1);
    let base = "/v1/projects/demo-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929";
    assert_eq!(calls[0]["path"], format!("{base}:rawPredict"), "{}", calls[0]);
    assert_eq!(calls[1]["path"], format!("{base}:streamRawPredict"), "{}", calls[1]);
    for call in &calls {
        let body: Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16", "{body}");
        assert!(body.get("model").is_none() && body["messages"].is_array(), "{body}");
        assert!(bearer(call).starts_with("Bearer mock-token-"), "{call}");
        assert!(
            call["headers"].get("anthropic-version").is_none() || call["headers"]["anthropic-version"] == "2023-06-01"
        );
    }
}

/// Regions are targets of their own: with the first region's endpoint down,
/// the alias's attempt goes to the next region's publisher path, with that
/// provider's own access token.
#[tokio::test]
async fn a_region_that_is_down_falls_back_to_the_next_region() {
    let dir = tempfile::tempdir().unwrap();
    let key = service_account(dir.path());
    let dead = tollgate_e2e::test_port().unwrap();
    let gw = Gateway::start(Options {
        providers_extra: format!(
            "  vertex-us: {{kind: vertex-ai, baseUrl: 'http://127.0.0.1:{dead}', project: demo-proj, location: us-central1, credentialsFile: '{key}', tokenUrl: 'http://{{mock}}/token'}}\n  vertex-eu: {{kind: vertex-ai, baseUrl: 'http://{{mock}}', project: demo-proj, location: europe-west4, credentialsFile: '{key}', tokenUrl: 'http://{{mock}}/token'}}"
        ),
        policy_extra: "models:\n  vgem: {targets: [{provider: vertex-us, model: gemini-2.5-flash}, {provider: vertex-eu, model: gemini-2.5-flash}]}\n".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    for stream in [false, true] {
        let ask =
            json!({"model": "vgem", "stream": stream, "messages": [{"role": "user", "content": "Say hello to Ada"}]});
        let resp = gw.post("/v1/chat/completions", &ask).await;
        assert_eq!(resp.status(), 200, "{}", gw.log_text());
        assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
        assert_eq!(resp.headers()["x-tollgate-backend"], "vertex-eu");
        let text = resp.text().await.unwrap();
        assert!(text.contains("Say hello to Ada"), "{text}");
    }
    let (calls, exchanges) = seen(&gw).await;
    assert_eq!(exchanges, 2, "each region's provider mints its own token");
    let base = "/v1/projects/demo-proj/locations/europe-west4/publishers/google/models/gemini-2.5-flash";
    let paths: Vec<&str> = calls.iter().filter_map(|c| c["path"].as_str()).collect();
    assert_eq!(paths, [format!("{base}:generateContent"), format!("{base}:streamGenerateContent?alt=sse")]);
    assert!(calls.iter().all(|c| bearer(c).starts_with("Bearer ")));
}

/// A Gemini-native client's `countTokens` and `embedContent` reach Vertex
/// AI's publisher path for the alias's model, with the minted token;
/// counting spends nothing.
#[tokio::test]
async fn native_token_counts_and_embeddings_reach_vertex_with_the_minted_token() {
    let dir = tempfile::tempdir().unwrap();
    let gw = vertex_gateway(dir.path(), 3600).await;
    let ask = json!({"contents": [{"role": "user", "parts": [{"text": "How many tokens is this?"}]}]});
    let resp = gw.post("/v1beta/models/vgem:countTokens", &ask).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["totalTokens"].as_u64().unwrap() > 0, "{body}");
    let (calls, exchanges) = seen(&gw).await;
    assert_eq!(exchanges, 1);
    let base = "/v1/projects/demo-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash";
    assert_eq!(calls[0]["path"], format!("{base}:countTokens"), "{}", calls[0]);
    assert!(bearer(&calls[0]).starts_with("Bearer mock-token-"));
    let records = gw.audit_records();
    let counted = records.iter().find(|r| r["api"] == "gemini-count-tokens").unwrap();
    assert_eq!((counted["status"].as_u64(), counted["inputTokens"].as_u64()), (Some(200), Some(0)), "{counted}");

    // embedContent too (Vertex AI's `PredictionService.EmbedContent`): it spends its input.
    let embed = json!({"content": {"parts": [{"text": "Embed this sentence."}]}, "outputDimensionality": 8});
    let resp = gw.post("/v1beta/models/vgem:embedContent", &embed).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["embedding"]["values"].as_array().map(Vec::len), Some(8), "{body}");
    let (calls, _) = seen(&gw).await;
    assert_eq!(calls[1]["path"], format!("{base}:embedContent"), "{}", calls[1]);
    let records = gw.audit_records();
    let embedded = records.iter().find(|r| r["api"] == "gemini-embed-content").unwrap();
    assert!(embedded["inputTokens"].as_u64().unwrap() > 0 && embedded["outputTokens"] == 0, "{embedded}");
}
