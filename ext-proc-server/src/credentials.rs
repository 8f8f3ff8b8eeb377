//! Provider credentials, held only in memory and never printed: a key sent
//! in a header, access tokens minted from a service account (Vertex AI), or
//! keys that sign each request (Bedrock, SigV4).

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_core::policy::Policy;
use tollgate_core::Error;

/// A provider credential, held only in memory and never printed.
#[derive(Clone)]
pub struct Credential {
    /// Header the provider expects (`authorization` or `x-api-key`).
    pub header: &'static str,
    pub value: String,
    /// Vertex AI: access tokens minted from a service account; the header
    /// is then `authorization: Bearer <token>` and `value` is unused.
    pub tokens: Option<Arc<crate::vertex::AccessTokens>>,
    /// Bedrock: keys that sign each request (SigV4) in place of a header.
    pub aws: Option<Arc<crate::aws::AwsKeys>>,
}

impl Credential {
    pub fn new(header: &'static str, value: String) -> Credential {
        Credential { header, value, tokens: None, aws: None }
    }

    /// The header's value now: the key, or the held access token (`None`
    /// when there is none that still works, and for SigV4, which signs the
    /// request instead).
    pub fn header_value(&self) -> Option<String> {
        match (&self.tokens, &self.aws) {
            (_, Some(_)) => None,
            (Some(tokens), None) => tokens.current().map(|t| format!("Bearer {t}")),
            (None, None) => Some(self.value.clone()),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: <redacted>)", self.header)
    }
}

/// Renew the access tokens (Vertex AI) of `provider`, or of every target of
/// the alias `model`, that are missing or near their end.
pub async fn fresh_tokens(
    policy: &Policy,
    credentials: &HashMap<String, Credential>,
    provider: &str,
    model: &str,
) -> Result<(), Error> {
    let targets: Vec<&str> = match policy.fallback(model) {
        Some(alias) => alias.targets.iter().map(|t| t.provider.as_str()).collect(),
        None => vec![provider],
    };
    for name in targets {
        if let Some(tokens) = credentials.get(name).and_then(|c| c.tokens.as_ref()) {
            if let Err(message) = tokens.fresh().await {
                tracing::warn!(provider = name, error = %message, "no access token");
                return Err(Error::Unavailable(format!("provider `{name}` has no access token: {message}")));
            }
        }
    }
    Ok(())
}
