//! Who may call, which models they may use, and what they may spend: the
//! policy's `access`, `teams`, `consumers` and `limits` sections.
//!
//! Identity itself (virtual keys, JWT claims) is resolved by the sidecar;
//! this module only holds the policy shape and the pure decisions on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::policy::values::FailMode;

/// How callers prove who they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Access {
    /// What a request must carry (default `none`: anonymous calls allowed).
    #[serde(default)]
    pub require: Require,
    /// File of virtual keys (salted hashes only), managed by `tollgate keys`.
    /// Relative paths are relative to the policy file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_store: Option<String>,
    /// Identity from a JWT validated by Envoy's `jwt_authn` filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPolicy>,
    /// Paths outside the AI APIs the gateway forwards (to the default
    /// provider, with its key), still only for callers that pass `require`:
    /// exact paths or prefixes ending in `*`, e.g. `/v1/models*`. Any other
    /// path is refused with 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough: Vec<String>,
}

impl Access {
    /// Whether `path` (query string ignored) is one the policy forwards as is.
    pub fn passes_through(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.passthrough.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Require {
    /// Anonymous calls allowed; a presented key is still checked.
    #[default]
    None,
    /// A valid virtual key.
    Key,
    /// A JWT validated by Envoy.
    Jwt,
    /// Either a virtual key or a JWT.
    KeyOrJwt,
}

/// JWT validation settings, rendered into Envoy's `jwt_authn` filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtPolicy {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Local JWKS file (relative to the policy file), read by Envoy.
    pub jwks_file: String,
    /// Claim naming the consumer (default `sub`).
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claim naming the team (default `team`).
    #[serde(default = "default_team_claim")]
    pub team_claim: String,
}

fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_team_claim() -> String {
    "team".into()
}

/// A team: models it may use and limits shared by its consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Team {
    /// Model names or globs (`gpt-*`) the team may use; empty: every model.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// The team's prompt-firewall thresholds (over the route's and the policy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<crate::firewall::Thresholds>,
    /// MCP tools the team may use; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::mcp::policy::McpGrant>,
}

/// A consumer: a person or application, member of one team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Consumer {
    pub team: String,
    /// Narrows the team's models (both grants must allow); empty: the team's.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// The consumer's prompt-firewall thresholds (over the team's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<crate::firewall::Thresholds>,
    /// Narrows the team's MCP tools (both grants must allow); absent: the team's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::mcp::policy::McpGrant>,
}

/// Limits for one consumer or team. Absent means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// USD per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_day: Option<f64>,
    /// USD per UTC month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_month: Option<f64>,
    /// MCP tool calls per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_per_minute: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.cost_per_day.is_none()
            && self.cost_per_month.is_none()
            && self.tool_calls_per_minute.is_none()
    }
}

/// Where limit counters live and what happens when that store is down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitStore {
    #[serde(default)]
    pub store: StoreKind,
    /// Directory of the embedded store (default: `state/` beside the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Redis URL for the shared store (`redis://host:port/db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// When the store cannot be reached: `open` lets requests through
    /// unlimited (and counts it in metrics), `closed` answers 503.
    #[serde(default = "open")]
    pub fail_mode: FailMode,
    /// Output tokens reserved when a request sets no `max_tokens`; a stream
    /// that goes further grows its reservation in steps of this size.
    #[serde(default = "default_reserve_output")]
    pub reserve_output_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Embedded,
    Redis,
}

fn open() -> FailMode {
    FailMode::Open
}
fn default_reserve_output() -> u64 {
    512
}

impl Default for LimitStore {
    fn default() -> Self {
        LimitStore {
            store: StoreKind::Embedded,
            dir: None,
            redis: None,
            fail_mode: FailMode::Open,
            reserve_output_tokens: default_reserve_output(),
        }
    }
}

/// Whether `model` matches a grant: an exact name, or a glob where `*`
/// matches any run of characters and `?` one character.
pub fn glob_match(pattern: &str, model: &str) -> bool {
    let (p, m): (Vec<char>, Vec<char>) = (pattern.chars().collect(), model.chars().collect());
    // Iterative wildcard matching with one backtrack point.
    let (mut pi, mut mi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while mi < m.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, mi));
                pi += 1;
            }
            Some(&c) if c == '?' || c == m[mi] => {
                pi += 1;
                mi += 1;
            }
            _ => match star {
                Some((sp, sm)) => {
                    pi = sp + 1;
                    mi = sm + 1;
                    star = Some((sp, sm + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether a grant list allows `model` (an empty list allows everything).
pub fn grants(list: &[String], model: &str) -> bool {
    list.is_empty() || list.iter().any(|g| glob_match(g, model))
}

/// Check the access sections against each other.
pub fn validate(
    access: &Access,
    teams: &BTreeMap<String, Team>,
    consumers: &BTreeMap<String, Consumer>,
    store: &LimitStore,
) -> Result<(), Error> {
    let err = |path: String, message: &str| Err(Error::Policy { path, message: message.to_string() });
    if matches!(access.require, Require::Jwt | Require::KeyOrJwt) && access.jwt.is_none() {
        return err("access.jwt".into(), "required when access.require is `jwt` or `key-or-jwt`");
    }
    if matches!(access.require, Require::Key | Require::KeyOrJwt) && access.key_store.is_none() {
        return err("access.keyStore".into(), "required when access.require is `key` or `key-or-jwt`");
    }
    if let Some(jwt) = &access.jwt {
        if jwt.jwks_file.is_empty() {
            return err("access.jwt.jwksFile".into(), "must not be empty");
        }
        if jwt.issuer.is_empty() {
            return err("access.jwt.issuer".into(), "must not be empty");
        }
    }
    for (name, team) in teams {
        check_grants(&format!("teams.{name}.models"), &team.models)?;
        check_limits(&format!("teams.{name}.limits"), &team.limits)?;
    }
    for (name, consumer) in consumers {
        if !teams.contains_key(&consumer.team) {
            return err(format!("consumers.{name}.team"), &format!("unknown team `{}`", consumer.team));
        }
        check_grants(&format!("consumers.{name}.models"), &consumer.models)?;
        check_limits(&format!("consumers.{name}.limits"), &consumer.limits)?;
    }
    if store.store == StoreKind::Redis && store.redis.is_none() {
        return err("limits.redis".into(), "required when limits.store is `redis`");
    }
    if store.reserve_output_tokens == 0 {
        return err("limits.reserveOutputTokens".into(), "must be positive");
    }
    Ok(())
}

fn check_grants(path: &str, list: &[String]) -> Result<(), Error> {
    for (i, g) in list.iter().enumerate() {
        if g.is_empty() || g.chars().any(char::is_whitespace) {
            return Err(Error::Policy {
                path: format!("{path}[{i}]"),
                message: "a model name or glob without spaces".into(),
            });
        }
    }
    Ok(())
}

fn check_limits(path: &str, l: &Limits) -> Result<(), Error> {
    for (field, v) in [("costPerDay", l.cost_per_day), ("costPerMonth", l.cost_per_month)] {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::Policy {
                    path: format!("{path}.{field}"),
                    message: "a non-negative number of USD".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("gpt-*", "gpt-4o-mini"));
        assert!(glob_match("gpt-4o", "gpt-4o"));
        assert!(!glob_match("gpt-4o", "gpt-4o-mini"));
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("claude-*-4-?", "claude-sonnet-4-5"));
        assert!(!glob_match("claude-*", "gpt-4o"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(grants(&[], "anything"));
        assert!(!grants(&["gpt-*".into()], "claude-3"));
    }
}
