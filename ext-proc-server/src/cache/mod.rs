//! The response cache: an exact tier (hash of the normalized request) and a
//! semantic tier (sentence embeddings of the last user message, compared
//! only within one partition).
//!
//! - [`key`]: which requests are cacheable, and their partition and keys;
//! - [`answer`]: recording an answer as the client got it, replaying it;
//! - [`check`]: the second check a semantic candidate must pass (order,
//!   negation, numbers, names) before it is served;
//! - [`store`]: where entries live (embedded and persisted, or Redis);
//! - [`quality`]: hit and false-hit rates on a labelled paraphrase corpus.
//!
//! The sidecar sees requests after the filter masked them, so entries hold
//! placeholders, never the PII itself; the filter restores each request's
//! own values in the replayed answer. A cache that fails (Redis down, the
//! model erroring) never fails a request: it counts as a miss and is logged.

pub mod answer;
pub mod check;
pub mod key;
pub mod quality;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::cache::CachePolicy;

use crate::embed::Embedder;
use crate::metrics::Metrics;
pub use answer::{Answer, Recorder};
pub use key::{CacheKeys, Skip};
use store::{CacheError, CacheStore, Found, Limits, Tier};

/// Request header naming a namespace the client keeps its entries in.
pub const NAMESPACE_HEADER: &str = "x-tollgate-cache-namespace";
/// Response header: `hit`, `miss` or `skip`.
pub const STATUS_HEADER: &str = "x-tollgate-cache";
/// Response header on hits: the similarity of the cached prompt (1 for exact hits).
pub const SIMILARITY_HEADER: &str = "x-tollgate-cache-similarity";
/// Response header on hits: `exact` or `semantic`.
pub const TIER_HEADER: &str = "x-tollgate-cache-tier";

/// The client's `Cache-Control` wishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// `no-cache`: don't answer from the cache.
    pub no_cache: bool,
    /// `no-store`: don't keep this answer.
    pub no_store: bool,
}

impl Control {
    pub fn parse(header: Option<&str>) -> Control {
        let mut c = Control::default();
        for directive in header.unwrap_or("").split(',') {
            match directive.trim().to_ascii_lowercase().as_str() {
                "no-cache" => c.no_cache = true,
                "no-store" => c.no_store = true,
                _ => {}
            }
        }
        c
    }
}

/// A request the cache did not answer, and will keep the answer of.
#[derive(Debug)]
pub struct Pending {
    keys: CacheKeys,
    embedding: Option<Vec<f32>>,
    /// Records the answer as it passes (set once the answer starts).
    pub recorder: Option<Recorder>,
}

/// What the cache made of a request.
#[derive(Debug)]
pub enum Decision {
    Hit {
        answer: Answer,
        tier: Tier,
        similarity: f32,
    },
    /// Looked up, not found; the answer is kept when `Some` (not with `no-store`).
    Miss(Option<Box<Pending>>),
    /// Not looked up; the answer is kept when `Some`.
    Skip(Skip, Option<Box<Pending>>),
}

pub struct Cache {
    pub policy: CachePolicy,
    store: CacheStore,
    embedder: Option<Arc<Embedder>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("semantic", &self.embedder.is_some()).finish_non_exhaustive()
    }
}

impl Cache {
    /// Open the store the policy names: embedded under `dir`, or Redis at `redis`.
    pub async fn open(
        policy: &CachePolicy,
        dir: &Path,
        redis: Option<&str>,
        embedder: Option<Arc<Embedder>>,
        metrics: Arc<Metrics>,
    ) -> Result<Cache, CacheError> {
        let limits = Limits {
            ttl: Duration::from_secs(policy.ttl_seconds),
            max_entries: policy.max_entries,
            max_bytes: policy.max_bytes,
        };
        let store = match redis {
            Some(url) => CacheStore::redis(url, "tollgate:cache:", limits).await?,
            None => CacheStore::embedded(dir, limits)?,
        };
        Ok(Cache { policy: policy.clone(), store, embedder, metrics })
    }

    /// The same store, model and metrics under new settings (a policy reload).
    pub fn with_policy(&self, policy: &CachePolicy) -> Cache {
        Cache {
            policy: policy.clone(),
            store: self.store.clone(),
            embedder: self.embedder.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Whether the semantic tier runs (it needs the model).
    pub fn semantic(&self) -> bool {
        self.policy.semantic.enabled && self.embedder.is_some()
    }

    /// Look a cacheable request up. `threshold` is the route's.
    pub async fn lookup(&self, keys: CacheKeys, threshold: f64, control: Control) -> Decision {
        let started = Instant::now();
        let decision = self.decide(keys, threshold, control).await;
        self.metrics.cache_lookup.observe(started.elapsed().as_secs_f64());
        match &decision {
            Decision::Hit { tier, .. } => self.metrics.cache_result("hit", tier_name(*tier)),
            Decision::Miss(_) => self.metrics.cache_result("miss", "-"),
            Decision::Skip(reason, _) => self.metrics.cache_result("skip", reason.as_str()),
        }
        decision
    }

    async fn decide(&self, mut keys: CacheKeys, threshold: f64, control: Control) -> Decision {
        if !self.semantic() {
            keys.semantic_text = None;
        }
        let pending = |keys, embedding| Box::new(Pending { keys, embedding, recorder: None });
        match (control.no_cache, control.no_store) {
            (true, true) => return Decision::Skip(Skip::Client, None),
            (true, false) => return Decision::Skip(Skip::Client, Some(pending(keys, None))),
            _ => {}
        }
        if self.policy.exact {
            match self.store.get_exact(&keys.exact).await {
                Ok(Some(found)) => {
                    if let Some(hit) = hit(found) {
                        return hit;
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "cache lookup failed; treated as a miss"),
            }
        }
        let mut embedding = None;
        if let Some(text) = keys.semantic_text.clone() {
            embedding = self.embed(text.clone()).await;
            if let Some(v) = &embedding {
                // The question is read once for all the candidates it is compared with.
                let question = check::Question::new(&text);
                let accept = |value: &[u8]| same_question(&question, value);
                match self.store.get_similar_where(&keys.partition, v, threshold as f32, &accept).await {
                    Ok(Some(found)) => {
                        if let Some(hit) = hit(found) {
                            return hit;
                        }
                    }
                    Ok(None) => {}
                    Err(err) => tracing::warn!(error = %err, "cache lookup failed; treated as a miss"),
                }
            }
        }
        Decision::Miss((!control.no_store).then(|| pending(keys, embedding)))
    }

    async fn embed(&self, text: String) -> Option<Vec<f32>> {
        let embedder = self.embedder.clone()?;
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || embedder.embed_whole(&text)).await;
        self.metrics.cache_embedding.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => v,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "embedding failed; semantic tier skipped for this request");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "embedding task failed");
                None
            }
        }
    }

    /// Keep `answer` for the request `pending` stands for. Awaited before
    /// the answer's last bytes go out, so the client's next request sees it.
    pub async fn store(&self, pending: Pending, answer: &Answer) {
        let Pending { keys, mut embedding, .. } = pending;
        if embedding.is_none() {
            if let Some(text) = keys.semantic_text.clone() {
                embedding = self.embed(text).await;
            }
        }
        let value = stored_value(answer, keys.semantic_text.as_deref());
        if let Err(err) = self.store.insert(&keys.partition, &keys.exact, embedding.as_deref(), &value).await {
            tracing::warn!(error = %err, "cache store failed");
        }
    }

    /// A request the cache may not serve (counted like every decision).
    pub fn skipped(&self, skip: Skip) -> Decision {
        self.metrics.cache_result("skip", skip.as_str());
        Decision::Skip(skip, None)
    }

    /// Entries and bytes held, when the store knows cheaply.
    pub fn stats(&self) -> Option<(usize, usize)> {
        self.store.stats()
    }
}

/// What an entry holds: the answer, and the prompt it answers when the
/// semantic tier may compare it (for the second check). Older entries have
/// no prompt; [`Answer::from_bytes`] ignores the extra field.
fn stored_value(answer: &Answer, prompt: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::to_value(answer).unwrap_or_default();
    if let (Some(prompt), Some(map)) = (prompt, v.as_object_mut()) {
        map.insert("prompt".into(), prompt.into());
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Whether the cached entry answers `question`: it must hold its prompt, and the
/// two prompts must pass [`check::compare`]. An entry without its prompt
/// cannot be checked, so it is not served semantically.
fn same_question(question: &check::Question, value: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Prompt {
        prompt: Option<String>,
    }
    let Some(cached) = serde_json::from_slice::<Prompt>(value).ok().and_then(|p| p.prompt) else {
        tracing::debug!("semantic candidate without its prompt; not served");
        return false;
    };
    let differences = question.compare(&cached);
    if let Some(reason) = differences.reason() {
        tracing::debug!(reason, "semantic candidate differs from the question; not served");
        return false;
    }
    true
}

fn hit(found: Found) -> Option<Decision> {
    let answer = Answer::from_bytes(&found.value)?;
    Some(Decision::Hit { answer, tier: found.tier, similarity: found.similarity })
}

pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Exact => "exact",
        Tier::Semantic => "semantic",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn keys(exact: u8) -> CacheKeys {
        CacheKeys { partition: [1; 32], exact: [exact; 32], semantic_text: None }
    }

    #[test]
    fn a_semantic_candidate_is_served_only_for_the_same_question() {
        let answer = Answer {
            model: "m".into(),
            text: "1 dollar is 0.92 euros".into(),
            finish: "stop".into(),
            input_tokens: 1,
            output_tokens: 1,
        };
        let value = stored_value(&answer, Some("Convert dollars to euros"));
        assert_eq!(Answer::from_bytes(&value), Some(answer.clone()), "the prompt does not change the answer");
        assert!(same_question(&check::Question::new("Please convert dollars to euros"), &value));
        assert!(!same_question(&check::Question::new("Convert euros to dollars"), &value));
        // An entry kept without its prompt (before the check existed) cannot be checked.
        assert!(!same_question(&check::Question::new("Convert dollars to euros"), &answer.to_bytes()));
        assert!(!same_question(&check::Question::new("Convert dollars to euros"), &stored_value(&answer, None)));
    }

    #[tokio::test]
    async fn new_settings_keep_the_open_store() {
        let dir = tempfile::tempdir().unwrap();
        let policy = CachePolicy { enabled: true, ..Default::default() };
        let cache = Cache::open(&policy, dir.path(), None, None, Arc::default()).await.unwrap();
        let answer = Answer {
            model: "m".into(),
            text: "hello".into(),
            finish: "stop".into(),
            input_tokens: 1,
            output_tokens: 1,
        };
        cache.store(Pending { keys: keys(7), embedding: None, recorder: None }, &answer).await;
        let reloaded = cache.with_policy(&CachePolicy { max_temperature: 1.0, ..policy });
        assert_eq!(reloaded.policy.max_temperature, 1.0);
        match reloaded.lookup(keys(7), 0.9, Control::default()).await {
            Decision::Hit { answer: found, .. } => assert_eq!(found, answer),
            other => panic!("the reloaded cache lost its entries: {other:?}"),
        }
        assert_eq!(reloaded.stats(), cache.stats(), "one store, not two");
    }
}
