//! Vertex AI access tokens from a service account: the sidecar signs a JWT
//! (RS256) with the account's private key, exchanges it at the OAuth token
//! endpoint (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`) for an
//! access token, keeps it, and gets a new one before it expires.
//!
//! The request path awaits [`AccessTokens::fresh`], which exchanges only
//! when the held token is missing or near its end (one exchange at a time;
//! callers waiting meanwhile share its result). The fallback attempts,
//! which cannot wait, read [`AccessTokens::current`]: the downstream phase
//! of the same request has just made it fresh.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Google's OAuth token endpoint, when neither the policy nor the key file names one.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The scope Vertex AI's API takes.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_SECS: u64 = 3600;
/// The most time before expiry a token is renewed; a short-lived token is
/// renewed in the last quarter of its life.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The fields of a service account key file the exchange needs.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Clone)]
struct Token {
    value: String,
    /// When it stops working, and when to renew it.
    expires: Instant,
    renew: Instant,
}

/// One service account's access tokens.
pub struct AccessTokens {
    email: String,
    key: jsonwebtoken::EncodingKey,
    key_id: Option<String>,
    token_url: String,
    client: reqwest::Client,
    held: std::sync::RwLock<Option<Token>>,
    /// Serializes exchanges.
    exchange: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessTokens({} at {})", self.email, self.token_url)
    }
}

impl AccessTokens {
    /// Read a service account key file; `token_url` overrides its `token_uri`.
    pub fn load(path: &str, token_url: Option<&str>) -> Result<AccessTokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|e| format!("`{path}` is not a service account key file: {e}"))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|e| format!("`{path}`: the private_key is not an RSA key in PEM: {e}"))?;
        let token_url = token_url.map(str::to_owned).or(file.token_uri).unwrap_or_else(|| GOOGLE_TOKEN_URL.to_owned());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(AccessTokens {
            email: file.client_email,
            key,
            key_id: file.private_key_id,
            token_url,
            client,
            held: std::sync::RwLock::new(None),
            exchange: tokio::sync::Mutex::new(()),
        })
    }

    /// The held token while it still works.
    pub fn current(&self) -> Option<String> {
        let held = self.held.read().ok()?;
        held.as_ref().filter(|t| Instant::now() < t.expires).map(|t| t.value.clone())
    }

    /// A token that is not about to expire: the held one, or a new one.
    pub async fn fresh(&self) -> Result<String, String> {
        if let Some(token) = self.usable() {
            return Ok(token);
        }
        let _one_at_a_time = self.exchange.lock().await;
        if let Some(token) = self.usable() {
            return Ok(token); // another caller just renewed it
        }
        let token = self.exchange_assertion().await?;
        let value = token.value.clone();
        if let Ok(mut held) = self.held.write() {
            *held = Some(token);
        }
        Ok(value)
    }

    fn usable(&self) -> Option<String> {
        let held = self.held.read().ok()?;
        held.as_ref().filter(|t| Instant::now() < t.renew).map(|t| t.value.clone())
    }

    /// The signed JWT asserting the service account, issued `now`.
    fn assertion(&self, now: u64) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims =
            Claims { iss: &self.email, scope: SCOPE, aud: &self.token_url, iat: now, exp: now + ASSERTION_SECS };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("cannot sign the assertion: {e}"))
    }

    async fn exchange_assertion(&self) -> Result<Token, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let assertion = self.assertion(now)?;
        let started = Instant::now();
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
        let resp = self
            .client
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("token endpoint {} unreachable: {e}", self.token_url))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("token endpoint {}: {e}", self.token_url))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("token endpoint {} answered {status}: {text}", self.token_url));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| format!("token endpoint {} sent no access token: {e}", self.token_url))?;
        let life = Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_SECS));
        tracing::info!(account = self.email, expires_in = life.as_secs(), "Vertex AI access token obtained");
        Ok(Token {
            value: answer.access_token,
            expires: started + life,
            renew: started + life.saturating_sub(RENEW_BEFORE.min(life / 4)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A throwaway RSA key made by `openssl` for this test only.
    fn test_key(dir: &std::path::Path) -> String {
        let key = dir.join("key.pem");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key)
            .status()
            .expect("openssl");
        assert!(made.success());
        std::fs::read_to_string(key).unwrap()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_the_public_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let pem = test_key(dir.path());
        let file = dir.path().join("sa.json");
        let account = serde_json::json!({
            "type": "service_account", "client_email": "gw@p.iam.gserviceaccount.com",
            "private_key": pem, "private_key_id": "k1", "token_uri": "https://example.test/token"
        });
        std::fs::write(&file, account.to_string()).unwrap();
        let tokens = AccessTokens::load(file.to_str().unwrap(), None).unwrap();
        assert_eq!(tokens.token_url, "https://example.test/token");
        let jwt = tokens.assertion(1_700_000_000).unwrap();
        // Verify with the public half, as Google does.
        let public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(dir.path().join("key.pem"))
            .output()
            .unwrap();
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public.stdout).unwrap();
        let mut check = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        check.set_audience(&["https://example.test/token"]);
        check.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &check).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        assert_eq!(data.claims["iss"], "gw@p.iam.gserviceaccount.com");
        assert_eq!(data.claims["scope"], SCOPE);
        assert_eq!(data.claims["exp"], 1_700_003_600u64);
        // The policy's token URL wins over the file's.
        let other = AccessTokens::load(file.to_str().unwrap(), Some("http://127.0.0.1:9/token")).unwrap();
        assert_eq!(other.token_url, "http://127.0.0.1:9/token");
    }

    #[test]
    fn a_bad_key_file_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sa.json");
        std::fs::write(&file, r#"{"client_email": "x", "private_key": "not a key"}"#).unwrap();
        let err = AccessTokens::load(file.to_str().unwrap(), None).unwrap_err();
        assert!(err.contains("RSA key"), "{err}");
        std::fs::write(&file, "{}").unwrap();
        assert!(AccessTokens::load(file.to_str().unwrap(), None).unwrap_err().contains("service account"));
        assert!(AccessTokens::load("/nonexistent/sa.json", None).unwrap_err().contains("cannot read"));
    }
}
