//! The shared counter store behind rate limits and budgets.
//!
//! Limits count in fixed UTC windows ([`Window`]). A counter is named by a
//! scope key chosen by the caller (`"team:demo:tokens"`) plus the window it
//! falls in; the stored key is `{prefix}{key}:{window_id}`, e.g.
//! `team:demo:tokens:d2026-11-23`. Counters and cost are integers (cost in
//! micro-dollars) so Redis can update them atomically with `INCRBY`.
//!
//! Two backends share one API through [`Store`]:
//! - [`embedded::EmbeddedStore`]: in-process, made durable by an append-only
//!   journal, for a single sidecar;
//! - [`redis::RedisStore`]: Redis with Lua scripts, shared by many replicas.
//!
//! Counter keys expire after their window ends (plus [`EXPIRY_MARGIN`]);
//! usage rows for reports are kept per day.

pub mod embedded;
pub mod redis;

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a counter outlives its window, so late reconciliations still land.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// How long usage rows are kept (Redis expires the per-day hash after this).
pub const USAGE_RETENTION: Duration = Duration::from_secs(400 * 86_400);

/// A fixed UTC window a counter is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// The epoch minute (`m29012345`).
    Minute,
    /// The UTC date (`d2026-11-23`).
    Day,
    /// The UTC year and month (`M2026-11`).
    Month,
}

impl Window {
    /// The window's id at `now`, the suffix of the stored key.
    pub fn id(self, now: SystemTime) -> String {
        let secs = epoch_secs(now);
        match self {
            Window::Minute => format!("m{}", secs / 60),
            Window::Day => format!("d{}", utc_day(now)),
            Window::Month => {
                let (y, m, _) = civil_from_days(secs.div_euclid(86_400) as i64);
                format!("M{y:04}-{m:02}")
            }
        }
    }

    /// The time left until the window that holds `now` ends.
    pub fn reset_after(self, now: SystemTime) -> Duration {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let end = Duration::from_secs(self.end_secs(now));
        end.saturating_sub(since_epoch)
    }

    /// Epoch seconds at which the window holding `now` ends.
    pub fn end_secs(self, now: SystemTime) -> u64 {
        let secs = epoch_secs(now);
        match self {
            Window::Minute => (secs / 60 + 1) * 60,
            Window::Day => (secs / 86_400 + 1) * 86_400,
            Window::Month => {
                let (y, m, _) = civil_from_days((secs / 86_400) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                // Dates before the epoch are clamped to it above, so this is never negative.
                days_from_civil(ny, nm, 1).max(0) as u64 * 86_400
            }
        }
    }

    /// The name used in messages (`minute`, `day`, `month`).
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter to charge in a [`Store::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The scope key chosen by the caller, e.g. `team:demo:tokens`.
    pub key: String,
    pub window: Window,
    /// `None` counts without limiting.
    pub limit: Option<u64>,
    pub amount: u64,
}

/// A reserve or extend that would take a counter past its limit. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The scope key of the first charge that would exceed its limit.
    pub key: String,
    pub window: Window,
    pub limit: u64,
    /// The counter's value before the denied charge.
    pub used: u64,
    /// Time until the window ends and the counter starts again from zero.
    pub reset_after: Duration,
}

/// What a successful [`Store::reserve`] charged, one entry per charge in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub entries: Vec<Reserved>,
}

/// One charge of a [`Reservation`]. `stored_key` fixes the window at reserve
/// time: reconcile with [`Store::adjust`] and grow with [`Store::extend`] on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub key: String,
    pub window: Window,
    pub stored_key: String,
    pub amount: u64,
    pub limit: Option<u64>,
    /// The counter's value after this reservation.
    pub used_after: u64,
    pub reset_after: Duration,
}

impl Reserved {
    /// What is left under the limit after this reservation (`None` if unlimited).
    pub fn remaining(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.used_after))
    }
}

/// One request's spend, added to the day's totals by [`Store::record_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecord {
    pub team: String,
    pub consumer: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: u64,
}

/// Totals of one (day, team, consumer, model), as [`Store::usage_report`] returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub day: String,
    pub team: String,
    pub consumer: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: u64,
}

impl UsageRow {
    fn add(&mut self, rec: &UsageRecord) {
        self.requests = self.requests.saturating_add(rec.requests);
        self.input_tokens = self.input_tokens.saturating_add(rec.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(rec.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(rec.cached_tokens);
        self.cost_micros = self.cost_micros.saturating_add(rec.cost_micros);
    }
}

/// Why the store could not answer. The caller decides whether to fail open or closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use state directory {path}: {source}")]
    Dir { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot write state journal {path}: {source}")]
    Journal { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot write state snapshot {path}: {source}")]
    Snapshot { path: std::path::PathBuf, source: std::io::Error },
    #[error("state snapshot {path} is corrupt: {source}")]
    CorruptSnapshot { path: std::path::PathBuf, source: serde_json::Error },
    #[error("invalid redis url {url:?}: {source}")]
    RedisUrl { url: String, source: ::redis::RedisError },
    #[error("redis at {addr} is unreachable: {source}")]
    RedisUnreachable { addr: String, source: ::redis::RedisError },
    #[error("redis at {addr} did not answer within {timeout:?}")]
    RedisTimeout { addr: String, timeout: Duration },
    #[error("redis at {addr} returned an unexpected reply: {detail}")]
    RedisReply { addr: String, detail: String },
    #[error("internal state lock is poisoned")]
    Poisoned,
}

/// The counter store: one of the two backends.
#[derive(Clone)]
pub enum Store {
    Embedded(embedded::EmbeddedStore),
    Redis(redis::RedisStore),
}

impl Store {
    /// Charges every counter, or none: if any limited charge would take its
    /// counter past the limit, nothing changes and the first such charge is
    /// reported as [`Denied`].
    pub async fn reserve(
        &self,
        now: SystemTime,
        charges: &[Charge],
    ) -> Result<Result<Reservation, Denied>, StoreError> {
        match self {
            Store::Embedded(s) => s.reserve(now, charges),
            Store::Redis(s) => s.reserve(now, charges).await,
        }
    }

    /// Adds `delta` (possibly negative) to stored keys of earlier reservations,
    /// clamping at 0. Never denies. A key whose window has expired is left alone.
    pub async fn adjust(&self, adjustments: &[(String, i64)]) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.adjust(adjustments),
            Store::Redis(s) => s.adjust(adjustments).await,
        }
    }

    /// Grows a reservation during a stream: charges `amount` more on each
    /// stored key `(stored_key, limit, amount, window)` only if every limited
    /// one stays within its limit; otherwise changes nothing and returns [`Denied`].
    pub async fn extend(
        &self,
        now: SystemTime,
        entries: &[(String, Option<u64>, u64, Window)],
    ) -> Result<Result<(), Denied>, StoreError> {
        match self {
            Store::Embedded(s) => s.extend(now, entries),
            Store::Redis(s) => s.extend(now, entries).await,
        }
    }

    /// Adds a request's spend to the day's totals of (team, consumer, model).
    pub async fn record_usage(&self, now: SystemTime, rec: &UsageRecord) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.record_usage(now, rec),
            Store::Redis(s) => s.record_usage(now, rec).await,
        }
    }

    /// Totals per (day, team, consumer, model) for days `>= since_day`
    /// (`YYYY-MM-DD`), optionally for one team, sorted by day, team, consumer, model.
    pub async fn usage_report(&self, since_day: &str, team: Option<&str>) -> Result<Vec<UsageRow>, StoreError> {
        match self {
            Store::Embedded(s) => s.usage_report(since_day, team),
            Store::Redis(s) => s.usage_report(since_day, team).await,
        }
    }

    /// The stored key of a scope key in the window holding `now`, for this backend.
    pub fn key_at(&self, key: &str, window: Window, now: SystemTime) -> String {
        match self {
            Store::Embedded(_) => stored_key("", key, window, now),
            Store::Redis(s) => stored_key(s.prefix(), key, window, now),
        }
    }

    /// The current value of a stored key (0 if missing or expired).
    pub async fn get(&self, stored_key: &str) -> Result<u64, StoreError> {
        match self {
            Store::Embedded(s) => s.get(stored_key),
            Store::Redis(s) => s.get(stored_key).await,
        }
    }
}

/// Small named values shared by every replica (the MCP gateway's session
/// key and tool pins): one namespace holds fields, each a text value.
impl Store {
    /// The value of `field` in namespace `ns`.
    pub async fn value(&self, ns: &str, field: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Embedded(s) => s.value(ns, field),
            Store::Redis(s) => s.value(ns, field).await,
        }
    }

    /// Every field of namespace `ns`, with its value.
    pub async fn values(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Store::Embedded(s) => s.values(ns),
            Store::Redis(s) => s.values(ns).await,
        }
    }

    /// Sets `field` (or, with `only_if_absent`, sets it only when it has no
    /// value yet); returns the value it holds afterwards. Replicas racing to
    /// set a field first all get the winner's value.
    pub async fn set_value(
        &self,
        ns: &str,
        field: &str,
        value: &str,
        only_if_absent: bool,
    ) -> Result<String, StoreError> {
        match self {
            Store::Embedded(s) => s.set_value(ns, field, value, only_if_absent),
            Store::Redis(s) => s.set_value(ns, field, value, only_if_absent).await,
        }
    }
}

impl From<embedded::EmbeddedStore> for Store {
    fn from(s: embedded::EmbeddedStore) -> Self {
        Store::Embedded(s)
    }
}

impl From<redis::RedisStore> for Store {
    fn from(s: redis::RedisStore) -> Self {
        Store::Redis(s)
    }
}

/// The stored key of a scope key in the window holding `now`.
pub fn stored_key(prefix: &str, key: &str, window: Window, now: SystemTime) -> String {
    format!("{prefix}{key}:{}", window.id(now))
}

/// The scope key back from a stored key (drops the prefix and the window suffix).
pub(crate) fn scope_key(prefix: &str, stored_key: &str) -> String {
    let without_prefix = stored_key.strip_prefix(prefix).unwrap_or(stored_key);
    match without_prefix.rsplit_once(':') {
        Some((key, _window)) => key.to_string(),
        None => without_prefix.to_string(),
    }
}

/// The UTC date (`YYYY-MM-DD`) holding `now`.
pub fn utc_day(now: SystemTime) -> String {
    let (y, m, d) = civil_from_days((epoch_secs(now) / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

fn epoch_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01; the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn civil_round_trips() {
        for days in [-1_000_000, -1, 0, 1, 59, 365, 10_957, 20_415, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn window_ids_and_resets() {
        // 2026-11-23T16:34:44Z
        let now = at(1_795_451_684);
        assert_eq!(Window::Minute.id(now), format!("m{}", 1_795_451_684 / 60));
        assert_eq!(Window::Day.id(now), "d2026-11-23");
        assert_eq!(Window::Month.id(now), "M2026-11");
        assert_eq!(Window::Minute.reset_after(now), Duration::from_secs(16));
        assert_eq!(Window::Day.reset_after(now), Duration::from_secs(7 * 3600 + 25 * 60 + 16));
        // December rolls into the next year.
        let dec = at(1_798_761_600 - 1); // 2026-12-31T23:59:59Z
        assert_eq!(Window::Month.id(dec), "M2026-12");
        assert_eq!(Window::Month.reset_after(dec), Duration::from_secs(1));
        assert_eq!(Window::Month.id(at(1_798_761_600)), "M2027-01");
    }

    #[test]
    fn scope_key_strips_prefix_and_window() {
        assert_eq!(scope_key("tg:", "tg:team:demo:tokens:d2026-11-23"), "team:demo:tokens");
        assert_eq!(scope_key("", "a:m5"), "a");
    }
}
