//! Rate limits and budgets over the shared counter store.
//!
//! Before a request goes upstream, every limit of the caller's consumer and
//! team is charged an estimate at once (all or nothing): one request, the
//! prompt's tokens plus the output it may produce, and that estimate's
//! cost. A stream that produces more output than reserved grows its
//! reservation step by step; when a step is refused the stream is ended.
//! When the answer ends, the reservation is reconciled with the provider's
//! real usage and the spend is recorded for reports.
//!
//! What holds (the README's "Identity, limits and budgets" states it for
//! operators):
//! - a model without a price is refused to a caller under a cost limit
//!   (unless `pricing.default` prices it), so nothing is spent uncounted;
//! - a non-streamed answer cannot outgrow its reservation: a request that
//!   sets no output cap gets one ([`Budget::output_cap`]), so the whole
//!   estimate is reserved before the request goes;
//! - so with N requests in flight, spend passes a limit by at most one
//!   reservation each (see [`Budget::reserve`]);
//! - a cache hit is one request on the request limits ([`Budget::count_hit`]);
//! - every token and cost sum saturates (counts and `max_tokens` come from
//!   clients and providers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tollgate_core::access::Limits;
use tollgate_core::policy::{FailMode, Policy};
use tollgate_core::pricing::{micros, usd, PriceTable, DEFAULT_KEY};
use tollgate_core::usage::Usage;
use tollgate_core::{ApiKind, Error, LlmRequest};

use crate::identity::Identity;
use crate::limits::{Charge, Denied, Reservation, Store, StoreError, UsageRecord, Window};

/// Counters of the limiter's own health, shown on the admin `/metrics`.
#[derive(Debug, Default)]
pub struct LimiterStats {
    /// Requests let through unlimited because the store was unreachable.
    pub fail_open: AtomicU64,
    /// Requests refused because the store was unreachable (fail mode closed).
    pub fail_closed: AtomicU64,
    /// Requests refused by a limit.
    pub limited: AtomicU64,
    /// Streams ended because they crossed a budget.
    pub streams_cut: AtomicU64,
    /// Store errors while reconciling or recording.
    pub store_errors: AtomicU64,
}

/// The limiter every stream shares.
#[derive(Clone)]
pub struct Budget {
    pub store: Store,
    pub prices: Arc<PriceTable>,
    pub stats: Arc<LimiterStats>,
    fail_mode: FailMode,
    step: u64,
}

/// A refused request: the error and the headers that explain it.
#[derive(Debug)]
pub struct Refused {
    pub error: Error,
    pub headers: Vec<(String, String)>,
}

/// One request's live reservation and what it was for.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub team: String,
    pub consumer: String,
    /// The upstream model (what the provider bills).
    pub model: String,
    pub input_tokens: u64,
    /// Output tokens covered by the reservation so far.
    pub output_reserved: u64,
    /// Tokens and micro-dollars reserved so far.
    pub tokens_reserved: u64,
    pub cost_reserved: u64,
    pub reservation: Option<Reservation>,
}

impl Budget {
    /// The same store and counters under a new policy's settings.
    pub fn with_policy(&self, policy: &Policy) -> Budget {
        Budget {
            store: self.store.clone(),
            prices: Arc::new(PriceTable::new(&policy.pricing)),
            stats: Arc::clone(&self.stats),
            fail_mode: policy.limits.fail_mode,
            step: policy.limits.reserve_output_tokens,
        }
    }

    pub fn new(store: Store, policy: &Policy) -> Budget {
        Budget {
            store,
            prices: Arc::new(PriceTable::new(&policy.pricing)),
            stats: Arc::new(LimiterStats::default()),
            fail_mode: policy.limits.fail_mode,
            step: policy.limits.reserve_output_tokens,
        }
    }

    fn cost(&self, model: &str, input: u64, output: u64) -> u64 {
        self.prices.cost_micros(
            model,
            &Usage {
                input_tokens: input,
                output_tokens: output,
                cached_tokens: 0,
                total_tokens: input.saturating_add(output),
            },
        )
    }

    /// The output cap a request must carry upstream so its answer cannot
    /// outgrow its reservation: `Some(reserveOutputTokens)` for a
    /// non-streamed request that sets none, from a caller under a token or
    /// cost limit. A stream needs none (it is metered and cut live).
    pub fn output_cap(&self, policy: &Policy, who: Option<&Identity>, request: &LlmRequest) -> Option<u64> {
        let applies = charges(policy, who, 0, 0).iter().any(|c| kind(&c.key) != Kind::Requests);
        let capped = request.stream || request.max_tokens.is_some() || !request.api.answers_text();
        (applies && !capped).then_some(self.step)
    }

    /// Count a request answered from the cache: one request on the caller's
    /// request limits (no tokens, no cost; the spend report, which counts
    /// what providers were asked, leaves it out: the cache's own metrics
    /// count hits). `Err` when a request limit is reached (a 429 like any
    /// request's) or the store is down under `failMode: closed`.
    pub async fn count_hit(&self, policy: &Policy, who: Option<&Identity>, now: SystemTime) -> Result<(), Refused> {
        let charges: Vec<Charge> =
            charges(policy, who, 0, 0).into_iter().filter(|c| kind(&c.key) == Kind::Requests).collect();
        if charges.is_empty() {
            return Ok(());
        }
        match self.store.reserve(now, &charges).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(denied)) => {
                self.stats.limited.fetch_add(1, Ordering::Relaxed);
                Err(refusal(&denied))
            }
            Err(err) => self.store_down(err),
        }
    }

    /// Whether a request of `who` is charged on any limit (and so needs its
    /// prompt counted before it goes).
    pub fn limits(&self, policy: &Policy, who: Option<&Identity>) -> bool {
        !charges(policy, who, 0, 0).is_empty()
    }

    /// Reserve the estimate for a request of `who` on `model`: the prompt
    /// plus `max_output` (else `reserveOutputTokens`), and its cost.
    ///
    /// The store admits a reservation only if it fits under every limit, so
    /// reservations alone never pass one. Spend passes a limit only where a
    /// request uses more than it reserved: a stream by at most the step it
    /// was refused (it is cut), a non-streamed request by at most the error
    /// of the prompt estimate (its output is capped by [`Budget::output_cap`]).
    /// With N requests in flight that is at most one reservation each.
    ///
    /// Every model a request may reach (each target of an alias with
    /// fallback) must have a price when a cost limit applies to `who`: an
    /// attempt answered by an unpriced target would cost nothing.
    pub fn check_prices<'m>(
        &self,
        policy: &Policy,
        who: Option<&Identity>,
        models: impl IntoIterator<Item = &'m str>,
    ) -> Result<(), Refused> {
        self.refuse_unpriced(&charges(policy, who, 0, 0), models)
    }

    /// `Err` for the first of `models` without a price when `charges`
    /// include a cost limit.
    fn refuse_unpriced<'m>(
        &self,
        charges: &[Charge],
        models: impl IntoIterator<Item = &'m str>,
    ) -> Result<(), Refused> {
        let Some(cost) = charges.iter().find(|c| kind(&c.key) == Kind::Cost) else { return Ok(()) };
        match models.into_iter().find(|m| self.prices.price(m).is_none()) {
            Some(model) => Err(unpriced(model, &cost.key)),
            None => Ok(()),
        }
    }

    /// A model with no price is refused when a cost limit applies to `who`.
    pub async fn reserve(
        &self,
        policy: &Policy,
        who: Option<&Identity>,
        model: &str,
        input_tokens: u64,
        max_output: Option<u64>,
        now: SystemTime,
    ) -> Result<Held, Refused> {
        let output = max_output.unwrap_or(self.step);
        let mut held = Held {
            team: who.map(|w| w.team.clone()).unwrap_or_default(),
            consumer: who.map(|w| w.consumer.clone()).unwrap_or_default(),
            model: model.to_string(),
            input_tokens,
            output_reserved: output,
            tokens_reserved: input_tokens.saturating_add(output),
            cost_reserved: self.cost(model, input_tokens, output),
            reservation: None,
        };
        let charges = charges(policy, who, held.tokens_reserved, held.cost_reserved);
        if charges.is_empty() {
            return Ok(held);
        }
        self.refuse_unpriced(&charges, [model])?;
        match self.store.reserve(now, &charges).await {
            Ok(Ok(reservation)) => {
                held.reservation = Some(reservation);
                Ok(held)
            }
            Ok(Err(denied)) => {
                self.stats.limited.fetch_add(1, Ordering::Relaxed);
                Err(refusal(&denied))
            }
            Err(err) => self.store_down(err).map(|()| held),
        }
    }

    fn store_down(&self, err: StoreError) -> Result<(), Refused> {
        match self.fail_mode {
            FailMode::Open => {
                self.stats.fail_open.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "limit store unreachable: request let through unlimited (fail open)");
                Ok(())
            }
            FailMode::Closed => {
                self.stats.fail_closed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "limit store unreachable: request refused (fail closed)");
                Err(Refused {
                    error: Error::Unavailable("the gateway cannot check its limits right now; retry shortly".into()),
                    headers: vec![("retry-after".into(), "1".into())],
                })
            }
        }
    }

    /// The stream has produced `output_so_far` tokens: grow the reservation
    /// when it is exceeded. `Err` means a limit refused the growth and the
    /// stream must end.
    pub async fn grow(&self, held: &mut Held, output_so_far: u64, now: SystemTime) -> Result<(), Refused> {
        if output_so_far <= held.output_reserved {
            return Ok(());
        }
        let steps = (output_so_far - held.output_reserved).div_ceil(self.step.max(1));
        let tokens = steps.saturating_mul(self.step);
        let cost = self.cost(&held.model, 0, tokens);
        held.output_reserved = held.output_reserved.saturating_add(tokens);
        held.tokens_reserved = held.tokens_reserved.saturating_add(tokens);
        held.cost_reserved = held.cost_reserved.saturating_add(cost);
        let Some(reservation) = &held.reservation else { return Ok(()) };
        let entries: Vec<(String, Option<u64>, u64, Window)> = reservation
            .entries
            .iter()
            .filter_map(|e| {
                let amount = match kind(&e.key) {
                    Kind::Tokens => tokens,
                    Kind::Cost => cost,
                    Kind::Requests => return None,
                };
                Some((e.stored_key.clone(), e.limit, amount, e.window))
            })
            .collect();
        match self.store.extend(now, &entries).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(denied)) => {
                // Nothing was charged for the refused step.
                held.tokens_reserved = held.tokens_reserved.saturating_sub(tokens);
                held.cost_reserved = held.cost_reserved.saturating_sub(cost);
                self.stats.streams_cut.fetch_add(1, Ordering::Relaxed);
                Err(refusal(&denied))
            }
            Err(err) => {
                held.tokens_reserved = held.tokens_reserved.saturating_sub(tokens);
                held.cost_reserved = held.cost_reserved.saturating_sub(cost);
                self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                self.store_down(err)
            }
        }
    }

    /// The answer ended with `usage`: put the difference to the reservation
    /// on every counter and record the spend. Returns the cost in micro-dollars.
    pub async fn settle(&self, held: &Held, usage: &Usage, now: SystemTime) -> u64 {
        let cost = self.prices.cost_micros(&held.model, usage);
        if let Some(reservation) = &held.reservation {
            let used = usage.total_tokens.max(usage.input_tokens.saturating_add(usage.output_tokens));
            let d_tokens = delta(used, held.tokens_reserved);
            let d_cost = delta(cost, held.cost_reserved);
            let adjustments: Vec<(String, i64)> = reservation
                .entries
                .iter()
                .filter_map(|e| match kind(&e.key) {
                    Kind::Tokens if d_tokens != 0 => Some((e.stored_key.clone(), d_tokens)),
                    Kind::Cost if d_cost != 0 => Some((e.stored_key.clone(), d_cost)),
                    _ => None,
                })
                .collect();
            if !adjustments.is_empty() {
                if let Err(err) = self.store.adjust(&adjustments).await {
                    self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, "could not reconcile a reservation");
                }
            }
        }
        let record = UsageRecord {
            team: or_dash(&held.team),
            consumer: or_dash(&held.consumer),
            model: held.model.clone(),
            requests: 1,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_tokens,
            cost_micros: cost,
        };
        if let Err(err) = self.store.record_usage(now, &record).await {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "could not record usage");
        }
        cost
    }
}

/// `after - before` as a signed adjustment, saturating at `i64`'s ends.
fn delta(after: u64, before: u64) -> i64 {
    if after >= before {
        i64::try_from(after - before).unwrap_or(i64::MAX)
    } else {
        i64::try_from(before - after).map_or(i64::MIN, |d| -d)
    }
}

/// The refusal of a model without a price for a caller under the cost limit `key`.
fn unpriced(model: &str, key: &str) -> Refused {
    Refused {
        error: Error::ModelNotAllowed {
            model: model.to_string(),
            who: format!(
                "{} under a cost limit: the model has no price, so its cost cannot be counted \
                 (set `pricing.{model}` or `pricing.{DEFAULT_KEY}` in the policy)",
                scope_words(key)
            ),
        },
        headers: Vec::new(),
    }
}

/// Set the output cap `tokens` in a request body of `api` that has none
/// (see [`Budget::output_cap`]). Returns whether the body changed.
pub fn cap_output(api: ApiKind, json: &mut Value, tokens: u64) -> bool {
    let nested = match api {
        ApiKind::GeminiGenerate => Some(("generationConfig", "maxOutputTokens")),
        ApiKind::BedrockConverse => Some(("inferenceConfig", "maxTokens")),
        _ => None,
    };
    if let Some((config, cap)) = nested {
        let Some(obj) = json.as_object_mut() else { return false };
        let config = obj.entry(config).or_insert_with(|| Value::Object(Default::default()));
        let Some(config) = config.as_object_mut() else { return false };
        if config.get(cap).is_some_and(|v| !v.is_null()) {
            return false;
        }
        config.insert(cap.into(), Value::from(tokens));
        return true;
    }
    let field = match api {
        ApiKind::OpenAiChat => "max_completion_tokens",
        ApiKind::OpenAiCompletions | ApiKind::AnthropicMessages => "max_tokens",
        ApiKind::OpenAiResponses => "max_output_tokens",
        _ => return false,
    };
    let Some(obj) = json.as_object_mut() else { return false };
    let caps = ["max_tokens", "max_completion_tokens", "max_output_tokens"];
    if caps.iter().any(|k| obj.get(*k).is_some_and(|v| !v.is_null())) {
        return false;
    }
    // An explicit `null` is no cap (and some APIs refuse two cap fields).
    obj.retain(|k, _| !caps.contains(&k.as_str()));
    obj.insert(field.into(), Value::from(tokens));
    true
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requests,
    Tokens,
    Cost,
}

fn kind(key: &str) -> Kind {
    if key.ends_with(":tokens") {
        Kind::Tokens
    } else if key.ends_with(":cost") {
        Kind::Cost
    } else {
        Kind::Requests
    }
}

/// Every counter a request of `who` is charged on.
fn charges(policy: &Policy, who: Option<&Identity>, tokens: u64, cost: u64) -> Vec<Charge> {
    let Some(who) = who else { return Vec::new() };
    let mut scopes: Vec<(String, Limits)> = Vec::new();
    if let Some(c) = policy.consumers.get(&who.consumer) {
        scopes.push((format!("consumer:{}", who.consumer), c.limits));
    }
    if let Some(t) = policy.teams.get(&who.team) {
        scopes.push((format!("team:{}", who.team), t.limits));
    }
    let mut out = Vec::new();
    for (scope, l) in scopes {
        if let Some(limit) = l.requests_per_minute {
            out.push(Charge {
                key: format!("{scope}:requests"),
                window: Window::Minute,
                limit: Some(limit),
                amount: 1,
            });
        }
        if let Some(limit) = l.tokens_per_minute {
            out.push(Charge {
                key: format!("{scope}:tokens"),
                window: Window::Minute,
                limit: Some(limit),
                amount: tokens,
            });
        }
        if let Some(limit) = l.cost_per_day {
            out.push(Charge {
                key: format!("{scope}:cost"),
                window: Window::Day,
                limit: Some(micros(limit)),
                amount: cost,
            });
        }
        if let Some(limit) = l.cost_per_month {
            out.push(Charge {
                key: format!("{scope}:cost"),
                window: Window::Month,
                limit: Some(micros(limit)),
                amount: cost,
            });
        }
    }
    out
}

/// A model a caller under a cost limit may ask for that has no price (what
/// `tollgate check` lists): such requests are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpriced {
    /// The model the provider would bill (`*` for "any model a glob or an
    /// empty grant allows that the price table does not know").
    pub model: String,
    /// How it is reached: `alias `smart`` or the grant entry.
    pub via: String,
    /// The scopes under a cost limit that may ask for it (`team `finance``).
    pub scopes: Vec<String>,
}

/// The models callers under a cost limit may use and the price table
/// cannot price (empty when `pricing.default` is set).
pub fn unpriced_models(policy: &Policy) -> Vec<Unpriced> {
    use tollgate_core::access::grants;
    let prices = PriceTable::new(&policy.pricing);
    if prices.default_price().is_some() {
        return Vec::new();
    }
    let costly = |l: &Limits| l.cost_per_day.is_some() || l.cost_per_month.is_some();
    // (scope words, the grant lists that apply there).
    let mut scopes: Vec<(String, Vec<&[String]>)> = Vec::new();
    for (name, team) in &policy.teams {
        if costly(&team.limits) {
            scopes.push((format!("team `{name}`"), vec![team.models.as_slice()]));
        }
    }
    for (name, c) in &policy.consumers {
        let team = policy.teams.get(&c.team);
        if costly(&c.limits) || team.is_some_and(|t| costly(&t.limits)) {
            let mut lists = vec![c.models.as_slice()];
            lists.extend(team.map(|t| t.models.as_slice()));
            scopes.push((format!("consumer `{name}`"), lists));
        }
    }
    let mut found: Vec<Unpriced> = Vec::new();
    let mut add =
        |model: &str, via: String, scope: &str| match found.iter_mut().find(|u| u.model == model && u.via == via) {
            Some(u) if !u.scopes.iter().any(|s| s == scope) => u.scopes.push(scope.to_string()),
            Some(_) => {}
            None => found.push(Unpriced { model: model.to_string(), via, scopes: vec![scope.to_string()] }),
        };
    for (scope, lists) in &scopes {
        let allowed = |model: &str| lists.iter().all(|l| grants(l, model));
        for (alias, route) in &policy.models {
            if allowed(alias) {
                for t in route.targets.iter().filter(|t| prices.price(&t.model).is_none()) {
                    add(&t.model, format!("alias `{alias}`"), scope);
                }
            }
        }
        for list in lists {
            for entry in list.iter().filter(|g| !policy.models.contains_key(*g)) {
                let glob = entry.contains(['*', '?', '[']);
                if glob {
                    add("*", format!("grant `{entry}`"), scope);
                } else if allowed(entry) && prices.price(entry).is_none() {
                    add(entry, "grant".into(), scope);
                }
            }
        }
        if lists.iter().all(|l| l.is_empty()) {
            add("*", "every model (no grant list)".into(), scope);
        }
    }
    found
}

/// OpenAI-style reset duration: `1s`, `6m0s`, `3h2m1s`.
pub fn reset_text(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn scope_words(key: &str) -> String {
    // `team:demo:tokens` → `team `demo``
    let mut parts = key.splitn(3, ':');
    match (parts.next(), parts.next()) {
        (Some(kind), Some(name)) => format!("{kind} `{name}`"),
        _ => key.to_string(),
    }
}

/// The 429 for a refused charge, with OpenAI's `x-ratelimit-*` headers.
pub fn refusal(d: &Denied) -> Refused {
    let retry = d.reset_after.as_secs().max(1).to_string();
    let who = scope_words(&d.key);
    let mut headers = vec![("retry-after".to_string(), retry)];
    let message = match kind(&d.key) {
        Kind::Requests | Kind::Tokens => {
            let unit = if kind(&d.key) == Kind::Requests { "requests" } else { "tokens" };
            headers.push((format!("x-ratelimit-limit-{unit}"), d.limit.to_string()));
            headers.push((format!("x-ratelimit-remaining-{unit}"), d.limit.saturating_sub(d.used).to_string()));
            headers.push((format!("x-ratelimit-reset-{unit}"), reset_text(d.reset_after)));
            format!(
                "rate limit reached for {who}: {} {unit} per minute (used {}); retry in {}",
                d.limit,
                d.used,
                reset_text(d.reset_after)
            )
        }
        Kind::Cost => {
            let period = if d.window == Window::Day { "day" } else { "month" };
            headers.push(("x-tollgate-budget-limit-usd".into(), format!("{:.6}", usd(d.limit))));
            headers.push((
                "x-tollgate-budget-remaining-usd".into(),
                format!("{:.6}", usd(d.limit.saturating_sub(d.used))),
            ));
            headers.push(("x-tollgate-budget-reset".into(), reset_text(d.reset_after)));
            format!(
                "budget exhausted for {who}: ${:.2} per {period} (spent ${:.4}); resets in {}",
                usd(d.limit),
                usd(d.used),
                reset_text(d.reset_after)
            )
        }
    };
    Refused { error: Error::RateLimited(message), headers }
}

/// `x-ratelimit-*` headers for an admitted request: per unit, the scope with
/// the least room left.
pub fn admitted_headers(reservation: &Reservation) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (unit, want) in [("requests", Kind::Requests), ("tokens", Kind::Tokens)] {
        let tightest = reservation
            .entries
            .iter()
            .filter(|e| kind(&e.key) == want)
            .filter_map(|e| Some((e, e.remaining()?)))
            .min_by_key(|(_, remaining)| *remaining);
        if let Some((e, remaining)) = tightest {
            out.push((format!("x-ratelimit-limit-{unit}"), e.limit.unwrap_or_default().to_string()));
            out.push((format!("x-ratelimit-remaining-{unit}"), remaining.to_string()));
            out.push((format!("x-ratelimit-reset-{unit}"), reset_text(e.reset_after)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_texts() {
        assert_eq!(reset_text(Duration::from_millis(300)), "1s");
        assert_eq!(reset_text(Duration::from_secs(59)), "59s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3 * 3600 + 121)), "3h2m1s");
    }

    #[test]
    fn refusal_names_scope_and_sets_openai_headers() {
        let d = Denied {
            key: "team:demo:tokens".into(),
            window: Window::Minute,
            limit: 1000,
            used: 990,
            reset_after: Duration::from_secs(12),
        };
        let r = refusal(&d);
        assert_eq!(r.error.status(), 429);
        assert!(r.error.to_string().contains("team `demo`"), "{}", r.error);
        assert!(r.headers.contains(&("x-ratelimit-remaining-tokens".into(), "10".into())));
        assert!(r.headers.contains(&("retry-after".into(), "12".into())));
        let d = Denied {
            key: "consumer:al:cost".into(),
            window: Window::Day,
            limit: 1_000_000,
            used: 1_000_000,
            reset_after: Duration::from_secs(7200),
        };
        let r = refusal(&d);
        assert!(r.error.to_string().contains("per day"), "{}", r.error);
        assert!(r.headers.contains(&("x-tollgate-budget-reset".into(), "2h0m0s".into())));
    }
}
