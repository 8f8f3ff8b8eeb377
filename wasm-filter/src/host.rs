//! What the filter needs from its host, as a trait: the proxy-wasm adapter
//! implements it with host calls, tests implement it with a recording mock.

/// Counters with one label, named `family.tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaggedMetric {
    /// Values found, by PII type.
    PiiByType,
    /// Requests blocked, by firewall rule.
    BlockedByRule,
    /// Moderation findings in answers (any action), by category.
    ModerationByCategory,
}

impl TaggedMetric {
    pub fn name(self) -> &'static str {
        match self {
            TaggedMetric::PiiByType => "tollgate_pii_found_by_type_total",
            TaggedMetric::BlockedByRule => "tollgate_firewall_blocked_by_rule_total",
            TaggedMetric::ModerationByCategory => "tollgate_moderation_total",
        }
    }

    /// The full counter name; the tag is kept to `[A-Za-z0-9_-]` so it stays one name segment.
    pub fn counter(self, tag: &str) -> String {
        let tag: String = tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("{}.{tag}", self.name())
    }
}

/// Counters the filter publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// AI requests parsed and forwarded.
    Requests,
    /// AI requests the filter answered itself (bad input, too large).
    Rejected,
    InputTokens,
    OutputTokens,
    CachedTokens,
    /// AI responses whose usage could not be read (no usage, over the cap, malformed).
    UsageMissing,
    /// Requests let through uninspected because of the open fail mode.
    FailOpen,
    /// PII findings in requests (all types and actions).
    PiiFound,
    FirewallBlocked,
    FirewallFlagged,
    /// Responses in which masked values could not be restored (over the cap, bad stream).
    RestoreSkipped,
    /// Output-guard findings redacted from answers.
    OutputRedacted,
    /// Answers withheld by the output guard.
    OutputBlocked,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::Requests,
        Metric::Rejected,
        Metric::InputTokens,
        Metric::OutputTokens,
        Metric::CachedTokens,
        Metric::UsageMissing,
        Metric::FailOpen,
        Metric::PiiFound,
        Metric::FirewallBlocked,
        Metric::FirewallFlagged,
        Metric::RestoreSkipped,
        Metric::OutputRedacted,
        Metric::OutputBlocked,
    ];

    /// The name Envoy shows (under its `wasmcustom.` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "tollgate_requests_total",
            Metric::Rejected => "tollgate_rejected_total",
            Metric::InputTokens => "tollgate_input_tokens_total",
            Metric::OutputTokens => "tollgate_output_tokens_total",
            Metric::CachedTokens => "tollgate_cached_tokens_total",
            Metric::UsageMissing => "tollgate_usage_missing_total",
            Metric::FailOpen => "tollgate_fail_open_total",
            Metric::PiiFound => "tollgate_pii_found_total",
            Metric::FirewallBlocked => "tollgate_firewall_blocked_total",
            Metric::FirewallFlagged => "tollgate_firewall_flagged_total",
            Metric::RestoreSkipped => "tollgate_restore_skipped_total",
            Metric::OutputRedacted => "tollgate_output_redacted_total",
            Metric::OutputBlocked => "tollgate_output_blocked_total",
        }
    }
}

/// Host operations for one HTTP stream. Failures are absorbed by the
/// implementation (logged), never panicked on; getters return `None`.
pub trait Host {
    fn request_header(&self, name: &str) -> Option<String>;
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn set_response_header(&mut self, name: &str, value: &str);
    fn response_header(&self, name: &str) -> Option<String>;
    fn remove_response_header(&mut self, name: &str);
    /// Replace the buffered request body.
    fn set_request_body(&mut self, body: &[u8]);
    /// Replace the current response body chunk (or the buffered body).
    fn set_response_body(&mut self, body: &[u8]);
    /// The buffered request body (`len` bytes).
    fn request_body(&self, len: usize) -> Option<Vec<u8>>;
    /// The current response body chunk (`len` bytes).
    fn response_body(&self, len: usize) -> Option<Vec<u8>>;
    /// Answer locally; the request goes no further.
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    /// Reset the HTTP stream, both ways: the upstream request is cancelled
    /// (the provider stops) and the client's response ends where it is
    /// (HTTP/1.1: the connection closes without the final chunk; HTTP/2: a
    /// stream reset). Envoy acts after the callback returns, before the
    /// chunk in hand moves on: that chunk never reaches the client.
    fn reset_stream(&mut self);
    /// Publish a value to Envoy's filter state (`wasm.<name>`).
    fn set_property(&mut self, name: &str, value: &[u8]);
    fn increment(&mut self, metric: Metric, by: u64);
    /// Add to the counter `family.tag`; Envoy's stats tags (rendered in the
    /// bootstrap) turn the tag into a label (`pii_type`, `rule`).
    fn increment_tagged(&mut self, family: TaggedMetric, tag: &str, by: u64);
    /// A fresh identifier when the request carries no `x-request-id`.
    fn new_request_id(&mut self) -> String;
}
