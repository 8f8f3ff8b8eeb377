//! The sidecar's Prometheus metrics (OpenMetrics text on the admin port's
//! `/metrics`). Names follow the OpenTelemetry GenAI semantic conventions
//! where one exists (`gen_ai_client_token_usage`,
//! `gen_ai_server_request_duration`, `gen_ai_server_time_to_first_token`);
//! the rest are `tollgate_*`.
//!
//! **Bounded labels.** Every label value a client could choose is checked
//! against the policy, so no request can add series: a `model` label is an
//! alias, a model an alias targets, a model named in `pricing` (not the
//! `*` patterns or `default`) or in a team's or consumer's grant (not the
//! globs), or a model of the built-in price table; a `team` is a team of the
//! policy (`-` for none); a `provider` is a provider of the policy (or
//! `cache`); a `status` is an HTTP status (100-599). Anything else is
//! [`OTHER`].

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tollgate_core::policy::Policy;

/// The label value of everything the policy does not name.
pub const OTHER: &str = "other";

/// The label values the policy allows (see the module docs).
#[derive(Debug, Default)]
pub struct KnownLabels {
    models: HashSet<String>,
    teams: HashSet<String>,
    providers: HashSet<String>,
}

impl KnownLabels {
    pub fn new(policy: &Policy) -> KnownLabels {
        let exact = |m: &&String| !m.contains(['*', '?', '[']);
        let mut models: HashSet<String> = tollgate_core::pricing::builtin_models().map(str::to_string).collect();
        for (alias, route) in &policy.models {
            models.insert(alias.clone());
            models.extend(route.targets.iter().map(|t| t.model.clone()));
        }
        models.extend(
            policy.pricing.keys().filter(|k| exact(k) && k.as_str() != tollgate_core::pricing::DEFAULT_KEY).cloned(),
        );
        let grants =
            policy.teams.values().flat_map(|t| &t.models).chain(policy.consumers.values().flat_map(|c| &c.models));
        models.extend(grants.filter(exact).cloned());
        KnownLabels {
            models,
            teams: policy.teams.keys().cloned().collect(),
            providers: policy.providers.keys().cloned().collect(),
        }
    }

    /// The `model` label of `model`.
    pub fn model<'a>(&self, model: &'a str) -> &'a str {
        if self.models.contains(model) {
            model
        } else {
            OTHER
        }
    }

    /// The `team` label of `team` (`-` for none).
    pub fn team<'a>(&self, team: &'a str) -> &'a str {
        if team.is_empty() {
            "-"
        } else if self.teams.contains(team) {
            team
        } else {
            OTHER
        }
    }

    /// The `provider` label of `provider`.
    pub fn provider<'a>(&self, provider: &'a str) -> &'a str {
        if provider == "cache" || self.providers.contains(provider) {
            provider
        } else {
            OTHER
        }
    }

    /// The `status` label of `status`.
    pub fn status(status: u16) -> String {
        if (100..=599).contains(&status) {
            status.to_string()
        } else {
            OTHER.to_string()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub token_type: &'static str,
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub provider: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub model: String,
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: String,
}

/// A provider answer the gateway could not pass on as it came.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderProblemLabels {
    pub provider: String,
    /// `unreadable_stream` (a bad or truncated Bedrock event-stream frame),
    /// `safety_block` (the provider refused to answer on safety grounds),
    /// `incomplete` (the exchange ended before the answer did: a reset, a
    /// stall past the idle timeout, or the client gone), `invalid_answer`
    /// (a JSON answer that is not JSON, refused with a 502).
    pub problem: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamLabels {
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit`, `miss` or `skip`.
    pub result: &'static str,
    /// `exact` or `semantic` for hits; the skip reason for skips; `-` for misses.
    pub tier: &'static str,
}

/// Buckets (seconds) for the cache's own work: lookups and embeddings.
const FAST_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5];

/// Buckets (seconds) for MCP tool calls: from the gateway's own sub-millisecond
/// answers to slow tools.
const MCP_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Token-count buckets of the GenAI conventions (powers of 4).
fn token_buckets() -> impl Iterator<Item = f64> {
    (0..14).map(|i| 4f64.powi(i))
}

/// Duration buckets (seconds) of the GenAI conventions.
const DURATION_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub tokens: Family<TokenLabels, Histogram>,
    pub duration: Family<RequestLabels, Histogram>,
    pub ttft: Family<ModelLabels, Histogram>,
    pub cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    pub refused: Family<RefusalLabels, Counter>,
    pub provider_problems: Family<ProviderProblemLabels, Counter>,
    pub fallbacks: Counter,
    pub budget_remaining: Family<TeamLabels, Gauge<f64, AtomicU64>>,
    pub cache: Family<CacheLabels, Counter>,
    pub cache_lookup: Histogram,
    pub cache_embedding: Histogram,
    pub cache_tokens_saved: Counter,
    pub cache_cost_saved: Counter<f64, AtomicU64>,
    /// Policy file changes applied (`ok`) or refused (`rejected`).
    pub reloads: Family<ReloadLabels, Counter>,
    /// MCP tool calls by server, tool and result.
    pub mcp_calls: Family<McpLabels, Counter>,
    /// MCP tool call duration by server, tool and result.
    pub mcp_duration: Family<McpLabels, Histogram>,
    /// Tool definitions found poisoned or changed (counted once per definition).
    pub mcp_tools_withheld: Family<McpToolLabels, Counter>,
    /// Requests upstream servers sent the client, by what became of them.
    pub mcp_server_requests: Family<McpServerRequestLabels, Counter>,
    /// The label values of the policy last seen (built again when it changes).
    known: RwLock<Option<(Arc<Policy>, Arc<KnownLabels>)>>,
}

/// An MCP tool call: `server` is a server of the policy, `tool` a tool that
/// server listed (or [`OTHER`]), `result` one of a fixed set (`ok`,
/// `tool_error`, `refused`, `blocked`, `rate_limited`, `upstream_error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    pub server: String,
    pub tool: String,
    pub result: &'static str,
}

/// A tool definition the gateway withheld: `reason` is `poisoned` or `changed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpToolLabels {
    pub server: String,
    pub reason: &'static str,
}

/// A request an upstream server sent the client: `method` one of
/// `sampling/createMessage`, `roots/list`, `elicitation/create`, `ping` or
/// [`OTHER`]; `result` one of `relayed`, `answered` (by the gateway),
/// `refused`, `blocked` (by the firewall or as asking for a secret).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpServerRequestLabels {
    pub server: String,
    pub method: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let tokens = Family::<TokenLabels, Histogram>::new_with_constructor(|| Histogram::new(token_buckets()));
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let ttft = Family::<ModelLabels, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let cost = Family::<CostLabels, Counter<f64, AtomicU64>>::default();
        let refused = Family::<RefusalLabels, Counter>::default();
        let provider_problems = Family::<ProviderProblemLabels, Counter>::default();
        let fallbacks = Counter::default();
        let budget_remaining = Family::<TeamLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per request, by model, token type and team",
            tokens.clone(),
        );
        registry.register(
            "gen_ai_server_request_duration_seconds",
            "Time from the request to the end of the answer",
            duration.clone(),
        );
        registry.register("gen_ai_server_time_to_first_token_seconds", "Time to the answer's first byte", ttft.clone());
        registry.register("tollgate_cost_usd", "Spend in USD by model and team", cost.clone());
        registry.register("tollgate_refused", "Requests the gateway refused, by reason", refused.clone());
        registry.register(
            "tollgate_provider_problems",
            "Provider answers that could not be passed on as they came, by provider and problem",
            provider_problems.clone(),
        );
        registry.register("tollgate_fallbacks", "Requests answered after more than one attempt", fallbacks.clone());
        registry.register("tollgate_budget_remaining_usd", "Daily budget left per team", budget_remaining.clone());
        let cache = Family::<CacheLabels, Counter>::default();
        let cache_lookup = Histogram::new(FAST_BUCKETS);
        let cache_embedding = Histogram::new(FAST_BUCKETS);
        let cache_tokens_saved = Counter::default();
        let cache_cost_saved = Counter::<f64, AtomicU64>::default();
        registry.register(
            "tollgate_cache_requests",
            "Cache decisions by result and tier (or skip reason)",
            cache.clone(),
        );
        registry.register(
            "tollgate_cache_lookup_seconds",
            "Time to look a request up in the cache (embedding included)",
            cache_lookup.clone(),
        );
        registry.register(
            "tollgate_cache_embedding_seconds",
            "Time to embed one prompt for the semantic tier",
            cache_embedding.clone(),
        );
        registry.register(
            "tollgate_cache_tokens_saved",
            "Input and output tokens answered from the cache",
            cache_tokens_saved.clone(),
        );
        registry.register(
            "tollgate_cache_cost_saved_usd",
            "USD the answers served from the cache would have cost",
            cache_cost_saved.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("tollgate_policy_reloads", "Policy file changes applied or rejected", reloads.clone());
        let mcp_calls = Family::<McpLabels, Counter>::default();
        let mcp_duration = Family::<McpLabels, Histogram>::new_with_constructor(|| Histogram::new(MCP_BUCKETS));
        let mcp_tools_withheld = Family::<McpToolLabels, Counter>::default();
        registry.register("tollgate_mcp_calls", "MCP tool calls by server, tool and result", mcp_calls.clone());
        registry.register(
            "tollgate_mcp_call_duration_seconds",
            "Time from an MCP tool call to its answer, by server, tool and result",
            mcp_duration.clone(),
        );
        registry.register(
            "tollgate_mcp_tools_withheld",
            "Tool definitions hidden as poisoned or quarantined as changed, by server and reason",
            mcp_tools_withheld.clone(),
        );
        let mcp_server_requests = Family::<McpServerRequestLabels, Counter>::default();
        registry.register(
            "tollgate_mcp_server_requests",
            "Requests upstream MCP servers sent the client (elicitation, roots, sampling), by server, method and result",
            mcp_server_requests.clone(),
        );
        Metrics {
            mcp_calls,
            mcp_duration,
            mcp_tools_withheld,
            mcp_server_requests,
            known: RwLock::default(),
            reloads,
            registry,
            tokens,
            duration,
            ttft,
            cost,
            refused,
            provider_problems,
            fallbacks,
            budget_remaining,
            cache,
            cache_lookup,
            cache_embedding,
            cache_tokens_saved,
            cache_cost_saved,
        }
    }

    /// The label values `policy` allows.
    pub fn known(&self, policy: &Arc<Policy>) -> Arc<KnownLabels> {
        if let Ok(guard) = self.known.read() {
            if let Some((seen, known)) = guard.as_ref() {
                if Arc::ptr_eq(seen, policy) {
                    return Arc::clone(known);
                }
            }
        }
        let known = Arc::new(KnownLabels::new(policy));
        if let Ok(mut guard) = self.known.write() {
            *guard = Some((Arc::clone(policy), Arc::clone(&known)));
        }
        known
    }

    /// One finished request, under `policy` (which bounds the labels).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        policy: &Arc<Policy>,
        model: &str,
        provider: &str,
        team: &str,
        status: u16,
        took: Duration,
        ttft: Option<Duration>,
        input: u64,
        output: u64,
        cost_usd: f64,
        attempts: u32,
    ) {
        let known = self.known(policy);
        let (model, provider, team) = (known.model(model), known.provider(provider), known.team(team));
        for (token_type, n) in [("input", input), ("output", output)] {
            self.tokens
                .get_or_create(&TokenLabels { model: model.into(), token_type, team: team.into() })
                .observe(n as f64);
        }
        let labels =
            RequestLabels { model: model.into(), provider: provider.into(), status: KnownLabels::status(status) };
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
        if let Some(t) = ttft {
            self.ttft.get_or_create(&ModelLabels { model: model.into() }).observe(t.as_secs_f64());
        }
        if cost_usd > 0.0 {
            self.cost.get_or_create(&CostLabels { model: model.into(), team: team.into() }).inc_by(cost_usd);
        }
        if attempts > 1 {
            self.fallbacks.inc();
        }
    }

    pub fn cache_result(&self, result: &'static str, tier: &'static str) {
        self.cache.get_or_create(&CacheLabels { result, tier }).inc();
    }

    pub fn refusal(&self, reason: &str) {
        self.refused.get_or_create(&RefusalLabels { reason: reason.into() }).inc();
    }

    /// A provider's event stream could not be read: its client's stream was
    /// ended with an error event.
    pub fn provider_stream_unreadable(&self, provider: &str) {
        let labels = ProviderProblemLabels { provider: provider.into(), problem: "unreadable_stream" };
        self.provider_problems.get_or_create(&labels).inc();
    }

    /// A provider answer that should be JSON and is not (refused).
    pub fn provider_invalid_answer(&self, provider: &str) {
        let labels = ProviderProblemLabels { provider: provider.into(), problem: "invalid_answer" };
        self.provider_problems.get_or_create(&labels).inc();
    }

    /// An answer that never reached its end.
    pub fn incomplete_answer(&self, provider: &str) {
        let labels = ProviderProblemLabels { provider: provider.into(), problem: "incomplete" };
        self.provider_problems.get_or_create(&labels).inc();
    }

    /// A provider refused to answer on safety grounds (a Gemini safety block).
    pub fn provider_safety_block(&self, provider: &str) {
        let labels = ProviderProblemLabels { provider: provider.into(), problem: "safety_block" };
        self.provider_problems.get_or_create(&labels).inc();
    }

    /// OpenMetrics text, with `extra` (other counters, already in text form) before the end marker.
    pub fn encode(&self, extra: &str) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return extra.to_string();
        }
        match out.strip_suffix("# EOF\n") {
            Some(body) => format!("{body}{extra}# EOF\n"),
            None => format!("{out}{extra}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy() -> Arc<Policy> {
        Arc::new(
            crate::config::parse_policy(
                "providers:\n  openai: {kind: openai, baseUrl: 'http://127.0.0.1:1'}\nteams:\n  research: {}\n",
            )
            .unwrap(),
        )
    }

    #[test]
    fn exports_genai_names_with_labels() {
        let m = Metrics::new();
        let p = policy();
        m.observe(&p, "gpt-4o", "openai", "research", 200, Duration::from_millis(300), None, 10, 20, 0.5, 2);
        m.refusal("rate_limit_exceeded");
        let text = m.encode("tollgate_extra_total 1\n");
        assert!(
            text.contains(r#"gen_ai_client_token_usage_count{model="gpt-4o",token_type="output",team="research"} 1"#),
            "{text}"
        );
        assert!(text.contains("gen_ai_server_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"tollgate_cost_usd_total{model="gpt-4o",team="research"} 0.5"#), "{text}");
        assert!(text.contains(r#"tollgate_refused_total{reason="rate_limit_exceeded"} 1"#), "{text}");
        assert!(text.contains("tollgate_fallbacks_total 1"), "{text}");
        assert!(text.ends_with("tollgate_extra_total 1\n# EOF\n"), "{text}");
    }

    #[test]
    fn labels_a_client_chooses_are_bounded_by_the_policy() {
        let m = Metrics::new();
        let p = Arc::new(
            crate::config::parse_policy(
                "providers:\n  openai: {kind: openai, baseUrl: 'http://127.0.0.1:1'}\n\
                 models:\n  smart: {targets: [{provider: openai, model: my-finetune}]}\n\
                 pricing:\n  llama3: {input: 1}\n  'mistral-*': {input: 1}\n\
                 teams:\n  research: {models: [granted-model, 'gpt-*']}\n",
            )
            .unwrap(),
        );
        let took = Duration::from_millis(5);
        for i in 0..50 {
            let model = format!("flood-{i}");
            m.observe(&p, &model, "openai", &format!("team-{i}"), 200, took, Some(took), 1, 1, 0.1, 1);
            m.observe(&p, "gpt-4o", &format!("evil-{i}"), "research", 1000 + i, took, None, 1, 1, 0.0, 1);
        }
        for model in ["smart", "my-finetune", "llama3", "granted-model", "gpt-4o-mini"] {
            m.observe(&p, model, "cache", "", 200, took, None, 1, 1, 0.0, 1);
        }
        let text = m.encode("");
        for leaked in ["flood-", "team-", "evil-", r#"status="1000""#, "mistral-*", "gpt-*"] {
            assert!(!text.contains(leaked), "{leaked}: {text}");
        }
        for kept in [
            r#"model="other",token_type="input",team="other""#,
            r#"model="gpt-4o",provider="other",status="other""#,
            r#"model="smart""#,
            r#"model="my-finetune""#,
            r#"model="llama3""#,
            r#"model="granted-model""#,
            r#"model="gpt-4o-mini",provider="cache""#,
            r#"tollgate_cost_usd_total{model="other",team="other"}"#,
        ] {
            assert!(text.contains(kept), "{kept}: {text}");
        }
        // Under another policy the labels follow it.
        let q = Arc::new(
            crate::config::parse_policy("providers:\n  openai: {kind: openai, baseUrl: 'http://127.0.0.1:1'}\n")
                .unwrap(),
        );
        assert_eq!(m.known(&q).model("llama3"), OTHER);
        assert_eq!(m.known(&p).model("llama3"), "llama3");
    }
}
