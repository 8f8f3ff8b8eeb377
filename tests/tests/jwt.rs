//! Identity from JWTs, end to end: Envoy's `jwt_authn` filter verifies the
//! token against a local JWKS and hands the payload to the sidecar through
//! ext_proc metadata; the sidecar names the consumer and team, applies the
//! team's model grants and answers missing or invalid tokens itself (401 in
//! the client API's shape).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tollgate_e2e::{Gateway, Options};

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "tollgate";
const KID: &str = "tollgate-test-1";
/// The shared HS256 secret the JWKS publishes (32 bytes).
const SECRET: &[u8] = b"tollgate-e2e-hs256-secret-0123456";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact HS256 JWS over `claims`, signed with `secret`.
fn sign(secret: &[u8], claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": KID});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims a well-behaved identity provider would issue, valid for an hour.
fn claims(sub: &str, team: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "team": team, "iat": now(), "exp": now() + 3600})
}

fn token(sub: &str, team: &str) -> String {
    sign(SECRET, &claims(sub, team))
}

/// Write the JWKS (one symmetric key) to a file of its own and return its path.
/// It must exist before Envoy starts: `local_jwks` is read at configuration time.
fn jwks_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-e2e-jwks-{}-{name}.json", std::process::id()));
    let jwks = json!({"keys": [{"kty": "oct", "kid": KID, "alg": "HS256", "k": b64(SECRET)}]});
    std::fs::write(&path, jwks.to_string()).unwrap();
    path
}

fn jwt_section(jwks: &std::path::Path) -> String {
    format!("jwt: {{issuer: '{ISSUER}', audiences: [{AUDIENCE}], jwksFile: '{}'}}", jwks.display())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "Say hello to the team"}]})
}

fn message(model: &str) -> Value {
    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An access-log record of a 200 answer (Envoy may print the code as a number or a string).
fn ok(record: &Value) -> bool {
    record["status"] == 200 || record["status"] == "200"
}

async fn json_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn call(gw: &Gateway, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
    json_body(gw.post_with(path, body, &headers).await).await
}

/// A gateway that requires a JWT; `research` may use gpt-*, `support` claude-*,
/// and dave is pinned to `support` by the policy whatever his token says.
async fn jwt_gateway(name: &str) -> (Gateway, PathBuf) {
    let jwks = jwks_file(name);
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "
access: {{require: jwt, {}}}
teams:
  research: {{models: ['gpt-*']}}
  support: {{models: ['claude-*']}}
consumers:
  dave: {{team: support}}
",
            jwt_section(&jwks)
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    (gw, jwks)
}

#[tokio::test]
async fn a_valid_token_names_consumer_and_team_and_never_reaches_the_provider() {
    let (gw, jwks) = jwt_gateway("valid").await;
    let carol = token("carol", "research");

    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&carol)).await;
    assert_eq!(status, 200, "{body}\n{}", gw.log_text());
    assert!(body["choices"][0]["message"]["content"].is_string(), "{body}");

    // The provider saw neither the token nor any Authorization header.
    let seen = gw.mock_requests().await;
    let last = seen.last().expect("the mock was called");
    assert!(last["headers"].get("authorization").is_none(), "{last}");
    assert!(!last.to_string().contains(&carol), "the token reached the provider: {last}");

    let records = gw.access_log(1).await;
    let record = records.iter().find(|r| ok(r)).expect("an access-log record for the call");
    assert_eq!(record["consumer"], "carol", "{records:?}");
    assert_eq!(record["team"], "research", "{records:?}");
    assert_eq!(record["provider"], "mock", "{records:?}");
    let access = std::fs::read_to_string(&gw.access_log).unwrap();
    assert!(!access.contains(&carol), "the token was written to the access log");
    let _ = std::fs::remove_file(jwks);
}

#[tokio::test]
async fn missing_or_invalid_tokens_get_401_in_each_apis_shape() {
    let (gw, jwks) = jwt_gateway("invalid").await;

    // No token at all: OpenAI's shape on OpenAI paths, Anthropic's on /v1/messages.
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let (status, body) = call(&gw, "/v1/messages", &message("claude-haiku-4-5"), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");

    // Tokens Envoy refuses are let through without a payload; the sidecar answers.
    let expired = {
        let mut c = claims("carol", "research");
        c["iat"] = json!(now() - 7200);
        c["exp"] = json!(now() - 3600);
        sign(SECRET, &c)
    };
    let wrong_signature = sign(b"some-other-secret-of-32-bytes-xx", &claims("carol", "research"));
    let wrong_audience = {
        let mut c = claims("carol", "research");
        c["aud"] = json!("someone-else");
        sign(SECRET, &c)
    };
    let wrong_issuer = {
        let mut c = claims("carol", "research");
        c["iss"] = json!("https://evil.example");
        sign(SECRET, &c)
    };
    let not_yet_valid = {
        let mut c = claims("carol", "research");
        c["nbf"] = json!(now() + 3600);
        sign(SECRET, &c)
    };
    // A valid signature over a payload that was altered afterwards.
    let tampered = {
        let good = token("carol", "research");
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims("mallory", "research");
        c["iat"] = claims("carol", "research")["iat"].clone();
        format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2])
    };
    for (case, bad) in [
        ("expired", &expired),
        ("wrong signature", &wrong_signature),
        ("wrong audience", &wrong_audience),
        ("wrong issuer", &wrong_issuer),
        ("not yet valid", &not_yet_valid),
        ("tampered payload", &tampered),
        ("not a JWT", &"not-a-jwt".to_string()),
    ] {
        let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(bad)).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{case}: {body}");
        let (status, body) = call(&gw, "/v1/messages", &message("claude-haiku-4-5"), Some(bad)).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"]["type"], "authentication_error", "{case}: {body}");
    }

    // A verified token without the consumer claim names nobody.
    let no_sub = {
        let mut c = claims("carol", "research");
        c.as_object_mut().unwrap().remove("sub");
        sign(SECRET, &c)
    };
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&no_sub)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`sub`"), "{body}");

    // None of these reached the provider.
    assert!(gw.mock_requests().await.is_empty(), "a refused request reached the provider");
    // And the control: the same gateway accepts a good token.
    let (status, body) =
        call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&token("carol", "research"))).await;
    assert_eq!(status, 200, "{body}");
    let _ = std::fs::remove_file(jwks);
}

#[tokio::test]
async fn a_tokens_team_grants_only_its_models() {
    let (gw, jwks) = jwt_gateway("grants").await;
    let carol = token("carol", "research");

    // research may use gpt-* only.
    let (status, body) = call(&gw, "/v1/messages", &message("claude-haiku-4-5"), Some(&carol)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    let text = body["error"]["message"].as_str().unwrap();
    assert!(text.contains("`claude-haiku-4-5`") && text.contains("team `research`"), "{body}");
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("claude-haiku-4-5"), Some(&carol)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`claude-haiku-4-5`"), "{body}");

    // A consumer the policy names keeps the policy's team, whatever the claim says.
    let dave = token("dave", "research");
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&dave)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("team `support`"), "{body}");
    let (status, body) = call(&gw, "/v1/messages", &message("claude-haiku-4-5"), Some(&dave)).await;
    assert_eq!(status, 200, "{body}");

    // A token naming no team, or a team the policy does not have, cannot
    // escape grants and limits.
    for team in ["", "marketing"] {
        let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&token("erin", team))).await;
        assert_eq!(status, 403, "team {team:?}: {body}");
        assert_eq!(body["error"]["code"], "blocked_by_policy", "{body}");
    }

    assert_eq!(gw.mock_requests().await.len(), 1, "only the allowed call reached the provider");
    let records = gw.access_log(7).await;
    assert!(records.iter().any(|r| ok(r) && r["consumer"] == "dave" && r["team"] == "support"), "{records:?}");
    let _ = std::fs::remove_file(jwks);
}

#[tokio::test]
async fn key_or_jwt_accepts_a_gateway_key_or_a_token() {
    let jwks = jwks_file("either");
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "
access: {{require: key-or-jwt, keyStore: '{{dir}}/keys.yaml', {}}}
teams:
  research: {{models: ['gpt-*']}}
consumers:
  alice: {{team: research}}
",
            jwt_section(&jwks)
        ),
        ..Default::default()
    })
    .await
    .unwrap();

    // Neither: 401 naming both ways in.
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");

    let alice = gw.create_key("alice").await;
    assert!(alice.starts_with("tg-"), "{alice}");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A gateway key (Envoy's jwt_authn cannot parse it and lets it through).
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        json_body(gw.post_with("/v1/messages", &message("claude-haiku-4-5"), &[("x-api-key", &alice)]).await).await;
    assert_eq!(status, 403, "the key's team grants gpt-* only: {body}");
    // A token.
    let carol = token("carol", "research");
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&carol)).await;
    assert_eq!(status, 200, "{body}");
    // An invalid token is still refused.
    let forged = sign(b"some-other-secret-of-32-bytes-xx", &claims("carol", "research"));
    let (status, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o-mini"), Some(&forged)).await;
    assert_eq!(status, 401, "{body}");

    let seen = gw.mock_requests().await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in &seen {
        assert!(r["headers"].get("authorization").is_none(), "a client credential reached the provider: {r}");
    }
    let records = gw.access_log(5).await;
    let answered: Vec<(&Value, &Value)> =
        records.iter().filter(|r| ok(r)).map(|r| (&r["consumer"], &r["team"])).collect();
    assert_eq!(answered, [(&json!("alice"), &json!("research")), (&json!("carol"), &json!("research"))], "{records:?}");
    let _ = std::fs::remove_file(jwks);
}

/// An MCP POST with the headers given: status, `www-authenticate`, session, body.
async fn mcp_post(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> (u16, String, String, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/mcp/support", gw.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (challenge, session) = (header("www-authenticate"), header("mcp-session-id"));
    let (status, body) = json_body(resp).await;
    (status, challenge, session, body)
}

#[tokio::test]
async fn mcp_callers_present_tokens_and_find_the_resource_metadata() {
    let jwks = jwks_file("mcp");
    let dir = std::env::temp_dir().join(format!("tollgate-e2e-jwt-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let crm = tollgate_e2e::mcp::McpServer::start(&dir, "crm", "crm", None).await.unwrap();
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "
access: {{require: jwt, {}}}
mcp:
  servers:
    crm: {{url: '{}'}}
  virtualServers:
    support: {{tools: ['crm/*']}}
teams:
  support: {{mcp: {{tools: ['crm/lookup_customer']}}}}
  research: {{}}
",
            jwt_section(&jwks),
            crm.url()
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});

    // No token: 401 naming where the resource's metadata is (MCP authorization).
    let (status, challenge, _, body) = mcp_post(&gw, &init, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    let authority = gw.url.trim_start_matches("http://");
    let metadata_url = format!("http://{authority}/.well-known/oauth-protected-resource/mcp/support");
    assert_eq!(challenge, format!("Bearer resource_metadata=\"{metadata_url}\""));
    let metadata: Value = reqwest::get(&metadata_url).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["resource"], format!("{}/mcp/support", gw.url), "{metadata}");
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]), "{metadata}");
    let missing = reqwest::get(format!("{}/.well-known/oauth-protected-resource/mcp/nowhere", gw.url)).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // A verified token names the caller; its team's grant decides the tools.
    let ann = bearer(&token("ann", "support"));
    let (status, _, session, body) = mcp_post(&gw, &init, &[("authorization", &ann)]).await;
    assert_eq!(status, 200, "{body}");
    let (_, _, _, listed) = mcp_post(&gw, &list, &[("authorization", &ann), ("mcp-session-id", &session)]).await;
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["crm_lookup_customer"], "{listed}");

    // Attacks: claims forged in the header Envoy fills (removed before the
    // JWT filter runs), a token signed with another key, and another
    // caller's token on ann's session.
    let forged = b64(claims("ann", "support").to_string().as_bytes());
    let (status, _, _, body) = mcp_post(&gw, &init, &[("x-tollgate-jwt-claims", &forged)]).await;
    assert_eq!(status, 401, "{body}");
    // The single-claim headers (Envoy Gateway's way of forwarding a verified
    // token's consumer and team) are the gateway's too: a client's copies
    // name nobody.
    let single = [("x-tollgate-jwt-consumer", "ann"), ("x-tollgate-jwt-team", "support")];
    let (status, _, _, body) = mcp_post(&gw, &init, &single).await;
    assert_eq!(status, 401, "{body}");
    let wrong = bearer(&sign(b"another-secret-another-secret-012", &claims("ann", "support")));
    let (status, _, _, body) =
        mcp_post(&gw, &init, &[("authorization", &wrong), ("x-tollgate-jwt-claims", &forged)]).await;
    assert_eq!(status, 401, "{body}");
    let bob = bearer(&token("bob", "support"));
    let (status, _, _, body) = mcp_post(&gw, &list, &[("authorization", &bob), ("mcp-session-id", &session)]).await;
    assert_eq!(status, 404, "{body}");
    // A team without an `mcp` grant sees no tools.
    let rae = bearer(&token("rae", "research"));
    let (_, _, session, _) = mcp_post(&gw, &init, &[("authorization", &rae)]).await;
    let (_, _, _, listed) = mcp_post(&gw, &list, &[("authorization", &rae), ("mcp-session-id", &session)]).await;
    assert_eq!(listed["result"]["tools"], json!([]), "{listed}");
    assert!(crm.received().iter().all(|r| r["headers"].get("x-tollgate-jwt-claims").is_none()));
}
