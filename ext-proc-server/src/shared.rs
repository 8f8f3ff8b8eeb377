//! What every ext_proc stream shares: the policy, the provider credentials,
//! the virtual keys, the limiter, the cache, the audit sink and the metrics.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_core::policy::Policy;
use tollgate_core::pricing::PriceTable;

use crate::auditing::AuditSink;
use crate::budget::Budget;
use crate::cache::Cache;
use crate::credentials::Credential;
use crate::keys::LiveKeys;
use crate::metrics::Metrics;
use crate::review::Review;
use crate::strategy::Latencies;

/// What every stream shares: the policy, the provider keys, the virtual
/// keys and the limiter.
#[derive(Clone)]
pub struct Shared {
    pub policy: Arc<Policy>,
    pub credentials: Arc<HashMap<String, Credential>>,
    pub keys: LiveKeys,
    /// Limits, budgets and spend records (absent only in handler tests).
    pub budget: Option<Budget>,
    pub prices: Arc<PriceTable>,
    /// Recent latency of alias targets, for the least-latency strategy.
    pub latencies: Arc<Latencies>,
    /// The audit log (absent when the policy turns it off, and in handler tests).
    pub audit: Option<Arc<AuditSink>>,
    pub metrics: Arc<Metrics>,
    /// The response cache (absent unless the policy enables it).
    pub cache: Option<Arc<Cache>>,
    /// OTLP span export (absent unless the policy's `telemetry.otlp` is set).
    pub telemetry: Option<Arc<crate::otel::Telemetry>>,
    /// The filter's prompt checks, run again for per-caller thresholds (and
    /// the audit, when no filter inspected the request).
    pub review: Arc<Review>,
}

impl Shared {
    /// No virtual keys and no limiter.
    pub fn new(policy: Policy, credentials: HashMap<String, Credential>) -> Shared {
        Shared {
            prices: Arc::new(PriceTable::new(&policy.pricing)),
            review: Arc::new(Review::new(&policy)),
            policy: Arc::new(policy),
            credentials: Arc::new(credentials),
            keys: LiveKeys::default(),
            budget: None,
            latencies: Arc::default(),
            audit: None,
            metrics: Arc::default(),
            cache: None,
            telemetry: None,
        }
    }
}
