//! The Redis counter store, shared by every sidecar replica.
//!
//! Reserve and extend run as one Lua script, so the check of every limited
//! counter and the increments happen atomically however many replicas charge
//! the same budget. Counter keys get a TTL of their window's end plus
//! [`EXPIRY_MARGIN`]. Usage totals live in one hash per day,
//! `{prefix}usage:{day}`, with fields `team␟consumer␟model␟metric`, kept for
//! [`USAGE_RETENTION`]; the set `{prefix}usage:days` lists the days.
//!
//! A Redis that is down or slow gives a [`StoreError`] within about a second:
//! connecting and each reply time out after 500 ms, and every call is bounded.

use super::{
    scope_key, stored_key, Charge, Denied, Reservation, Reserved, StoreError, UsageRecord, UsageRow, Window,
    EXPIRY_MARGIN, USAGE_RETENTION,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Connecting, and waiting for one reply, give up after this long.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// No call waits longer than this, reconnection attempts included.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Separates the parts of a usage hash field.
const SEP: char = '\u{1f}';
const METRICS: [&str; 5] = ["requests", "input", "output", "cached", "cost"];

/// KEYS: stored keys. ARGV, three per key: limit (-1 for none), amount, TTL in ms.
/// Returns `{1, value after, ...}` or `{0, index of the denied key, its value}`.
const CHARGE_LUA: &str = r"
local pending = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local cur = tonumber(redis.call('GET', k) or '0')
  local after = (pending[k] or cur) + tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i - 2])
  if limit >= 0 and after > limit then
    return {0, i, cur}
  end
  pending[k] = after
end
local out = {1}
for i = 1, #KEYS do
  local k = KEYS[i]
  out[i + 1] = redis.call('INCRBY', k, ARGV[3 * i - 1])
  if redis.call('PTTL', k) < 0 then
    redis.call('PEXPIRE', k, ARGV[3 * i])
  end
end
return out
";

/// KEYS: stored keys. ARGV: one delta per key. Keys that no longer exist are
/// left alone; a result below zero becomes zero; the TTL is kept.
const ADJUST_LUA: &str = r"
for i = 1, #KEYS do
  local k = KEYS[i]
  local cur = redis.call('GET', k)
  if cur then
    if tonumber(cur) + tonumber(ARGV[i]) < 0 then
      redis.call('SET', k, '0', 'KEEPTTL')
    else
      redis.call('INCRBY', k, ARGV[i])
    end
  end
end
return 0
";

/// The shared counter store on Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// The server's address without credentials, for messages.
    addr: String,
    charge: Script,
    adjust: Script,
}

/// One counter to charge: a reserve's charge or an extend's entry.
struct Item {
    key: String,
    stored_key: String,
    window: Window,
    limit: Option<u64>,
    amount: u64,
}

impl RedisStore {
    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Connects to `url` (`redis://host:port/db`) and checks the server answers.
    /// Every key this store writes starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url, prefix).await?;
        let mut conn = store.conn.clone();
        store.call(redis::cmd("PING").query_async::<String>(&mut conn)).await?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`] but does not wait for the server: the
    /// first call connects, and fails quickly while Redis is down.
    pub async fn connect_lazy(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let addr = redact(url);
        let client = redis::Client::open(url).map_err(|source| StoreError::RedisUrl { url: addr.clone(), source })?;
        let conn =
            lazy_manager(client).map_err(|source| StoreError::RedisUnreachable { addr: addr.clone(), source })?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            addr,
            charge: Script::new(CHARGE_LUA),
            adjust: Script::new(ADJUST_LUA),
        })
    }

    /// Runs one Redis call with the overall time bound, mapping its errors.
    async fn call<T>(&self, fut: impl Future<Output = Result<T, RedisError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Err(_) => Err(StoreError::RedisTimeout { addr: self.addr.clone(), timeout: CALL_TIMEOUT }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => {
                Err(StoreError::RedisTimeout { addr: self.addr.clone(), timeout: IO_TIMEOUT })
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
                Err(StoreError::RedisUnreachable { addr: self.addr.clone(), source: e })
            }
            Ok(Err(e)) => Err(self.reply_error(e.to_string())),
        }
    }

    fn reply_error(&self, detail: String) -> StoreError {
        StoreError::RedisReply { addr: self.addr.clone(), detail }
    }

    /// See [`super::Store::reserve`].
    pub async fn reserve(
        &self,
        now: SystemTime,
        charges: &[Charge],
    ) -> Result<Result<Reservation, Denied>, StoreError> {
        let items: Vec<Item> = charges
            .iter()
            .map(|c| Item {
                key: c.key.clone(),
                stored_key: stored_key(&self.prefix, &c.key, c.window, now),
                window: c.window,
                limit: c.limit,
                amount: c.amount,
            })
            .collect();
        self.charge(now, items).await
    }

    /// See [`super::Store::extend`].
    pub async fn extend(
        &self,
        now: SystemTime,
        entries: &[(String, Option<u64>, u64, Window)],
    ) -> Result<Result<(), Denied>, StoreError> {
        let items: Vec<Item> = entries
            .iter()
            .map(|(k, limit, amount, window)| Item {
                key: scope_key(&self.prefix, k),
                stored_key: k.clone(),
                window: *window,
                limit: *limit,
                amount: *amount,
            })
            .collect();
        Ok(self.charge(now, items).await?.map(|_| ()))
    }

    async fn charge(&self, now: SystemTime, items: Vec<Item>) -> Result<Result<Reservation, Denied>, StoreError> {
        if items.is_empty() {
            return Ok(Ok(Reservation { entries: vec![] }));
        }
        let mut inv = self.charge.prepare_invoke();
        for item in &items {
            let ttl = item.window.reset_after(now) + EXPIRY_MARGIN;
            // Redis counters are i64: a larger amount or limit (a client's
            // `max_tokens` can be anything) is clamped, never sent to fail INCRBY.
            let limit = item.limit.map_or_else(|| "-1".to_string(), |l| clamp_i64(l).to_string());
            inv.key(&item.stored_key).arg(limit).arg(clamp_i64(item.amount)).arg(ttl.as_millis().max(1) as u64);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.call(inv.invoke_async(&mut conn)).await?;

        match reply.as_slice() {
            [0, index, used] => {
                let item = usize::try_from(*index)
                    .ok()
                    .and_then(|i| items.get(i.wrapping_sub(1)))
                    .ok_or_else(|| self.reply_error(format!("denied index {index} out of range")))?;
                Ok(Err(Denied {
                    key: item.key.clone(),
                    window: item.window,
                    limit: item.limit.unwrap_or_default(),
                    used: u64::try_from(*used).unwrap_or_default(),
                    reset_after: item.window.reset_after(now),
                }))
            }
            [1, values @ ..] if values.len() == items.len() => {
                let entries = items
                    .into_iter()
                    .zip(values)
                    .map(|(item, used_after)| Reserved {
                        reset_after: item.window.reset_after(now),
                        key: item.key,
                        window: item.window,
                        stored_key: item.stored_key,
                        amount: item.amount,
                        limit: item.limit,
                        used_after: u64::try_from(*used_after).unwrap_or_default(),
                    })
                    .collect();
                Ok(Ok(Reservation { entries }))
            }
            other => Err(self.reply_error(format!("charge script returned {other:?}"))),
        }
    }

    /// See [`super::Store::adjust`].
    pub async fn adjust(&self, adjustments: &[(String, i64)]) -> Result<(), StoreError> {
        if adjustments.is_empty() {
            return Ok(());
        }
        let mut inv = self.adjust.prepare_invoke();
        for (k, delta) in adjustments {
            inv.key(k).arg(*delta);
        }
        let mut conn = self.conn.clone();
        self.call(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// See [`super::Store::record_usage`].
    pub async fn record_usage(&self, now: SystemTime, rec: &UsageRecord) -> Result<(), StoreError> {
        let day = super::utc_day(now);
        let hash = format!("{}usage:{day}", self.prefix);
        let base = [&rec.team, &rec.consumer, &rec.model].map(|s| s.replace(SEP, "_")).join(&SEP.to_string());
        let values = [rec.requests, rec.input_tokens, rec.output_tokens, rec.cached_tokens, rec.cost_micros];
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (metric, value) in METRICS.iter().zip(values) {
            pipe.hincr(&hash, format!("{base}{SEP}{metric}"), value).ignore();
        }
        pipe.expire(&hash, USAGE_RETENTION.as_secs() as i64).ignore();
        pipe.sadd(self.days_key(), &day).ignore();
        let mut conn = self.conn.clone();
        self.call(pipe.query_async::<()>(&mut conn)).await
    }

    /// See [`super::Store::usage_report`].
    pub async fn usage_report(&self, since_day: &str, team: Option<&str>) -> Result<Vec<UsageRow>, StoreError> {
        let mut conn = self.conn.clone();
        let mut days: Vec<String> =
            self.call(redis::cmd("SMEMBERS").arg(self.days_key()).query_async(&mut conn)).await?;
        days.retain(|d| d.as_str() >= since_day);
        days.sort();
        if days.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for day in &days {
            pipe.hgetall(format!("{}usage:{day}", self.prefix));
        }
        let hashes: Vec<HashMap<String, u64>> = self.call(pipe.query_async(&mut conn)).await?;

        let mut rows = Vec::new();
        let mut gone = Vec::new();
        for (day, fields) in days.iter().zip(hashes) {
            if fields.is_empty() {
                gone.push(day.clone());
                continue;
            }
            let mut by_name: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
            for (field, value) in fields {
                let parts: Vec<&str> = field.split(SEP).collect();
                let [t, c, m, metric] = parts.as_slice() else {
                    continue;
                };
                if team.is_some_and(|want| want != *t) {
                    continue;
                }
                let row = by_name.entry((t.to_string(), c.to_string(), m.to_string())).or_insert_with(|| UsageRow {
                    day: day.clone(),
                    team: t.to_string(),
                    consumer: c.to_string(),
                    model: m.to_string(),
                    ..UsageRow::default()
                });
                match *metric {
                    "requests" => row.requests = value,
                    "input" => row.input_tokens = value,
                    "output" => row.output_tokens = value,
                    "cached" => row.cached_tokens = value,
                    "cost" => row.cost_micros = value,
                    _ => {}
                }
            }
            rows.extend(by_name.into_values());
        }
        if !gone.is_empty() {
            // Days whose hash expired: forget them.
            self.call(redis::cmd("SREM").arg(self.days_key()).arg(&gone).query_async::<i64>(&mut conn)).await?;
        }
        Ok(rows)
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, stored_key: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let v: Option<u64> = self.call(redis::cmd("GET").arg(stored_key).query_async(&mut conn)).await?;
        Ok(v.unwrap_or(0))
    }

    /// The hash holding namespace `ns`.
    fn values_key(&self, ns: &str) -> String {
        format!("{}values:{ns}", self.prefix)
    }

    /// See [`super::Store::value`].
    pub async fn value(&self, ns: &str, field: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        self.call(redis::cmd("HGET").arg(self.values_key(ns)).arg(field).query_async(&mut conn)).await
    }

    /// See [`super::Store::values`].
    pub async fn values(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let map: std::collections::BTreeMap<String, String> =
            self.call(redis::cmd("HGETALL").arg(self.values_key(ns)).query_async(&mut conn)).await?;
        Ok(map.into_iter().collect())
    }

    /// See [`super::Store::set_value`].
    pub async fn set_value(
        &self,
        ns: &str,
        field: &str,
        value: &str,
        only_if_absent: bool,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.values_key(ns);
        if !only_if_absent {
            let _: i64 = self.call(redis::cmd("HSET").arg(&key).arg(field).arg(value).query_async(&mut conn)).await?;
            return Ok(value.to_string());
        }
        let _: i64 = self.call(redis::cmd("HSETNX").arg(&key).arg(field).arg(value).query_async(&mut conn)).await?;
        let current: Option<String> = self.call(redis::cmd("HGET").arg(&key).arg(field).query_async(&mut conn)).await?;
        current.ok_or_else(|| self.reply_error(format!("{key} {field} vanished after HSETNX")))
    }

    fn days_key(&self) -> String {
        format!("{}usage:days", self.prefix)
    }
}

/// `n` as a Redis integer (Redis counters are signed 64-bit).
fn clamp_i64(n: u64) -> u64 {
    n.min(i64::MAX as u64)
}

/// The URL without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_string(),
    }
}

/// A connection manager that connects on first use, with short timeouts and
/// one quick retry (a Redis that is down fails a call fast, never hangs it).
pub(crate) fn lazy_manager(client: redis::Client) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
}
