//! The embedded counter store: in-process maps made durable by a journal.
//!
//! Every mutation appends one JSON line to `limits.journal` in the state
//! directory before the call returns. A line holds the new absolute values
//! of what it changed, so replaying it twice is harmless. The write reaches
//! the operating system, which keeps it across a kill of the sidecar; with
//! [`EmbeddedOptions::fsync`] it also reaches the disk before returning.
//!
//! Opening loads `limits.snapshot.json`, replays the journal (a torn last
//! line from a crash is skipped), drops expired counters, writes a fresh
//! snapshot and empties the journal. The same compaction runs when the
//! journal grows past [`EmbeddedOptions::compact_after_lines`].

use super::{
    scope_key, stored_key, Charge, Denied, Reservation, Reserved, StoreError, UsageRecord, UsageRow, Window,
    EXPIRY_MARGIN,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

const JOURNAL: &str = "limits.journal";
const SNAPSHOT: &str = "limits.snapshot.json";

/// How the embedded store writes its journal.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// `fsync` the journal after every write (survives power loss, not only a
    /// process kill). Off by default.
    pub fsync: bool,
    /// Compact (snapshot + empty journal) after this many journal lines.
    pub compact_after_lines: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { fsync: false, compact_after_lines: 10_000 }
    }
}

/// The single-process counter store. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Counter {
    value: u64,
    /// Epoch seconds after which the counter is dropped.
    expires: u64,
}

type UsageKey = (String, String, String, String);

/// One journal line.
#[derive(Serialize, Deserialize)]
enum Line {
    /// New values of counters: (stored key, value, expires at epoch seconds).
    #[serde(rename = "c")]
    Counters(Vec<(String, u64, u64)>),
    /// The new totals of one usage row.
    #[serde(rename = "u")]
    Usage(UsageRow),
    /// A value set in a namespace: (namespace, field, value).
    #[serde(rename = "v")]
    Value(String, String, String),
}

#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    counters: Vec<(String, u64, u64)>,
    usage: Vec<UsageRow>,
    #[serde(default)]
    values: Vec<(String, String, String)>,
}

type Values = BTreeMap<(String, String), String>;

struct Inner {
    journal_path: PathBuf,
    snapshot_path: PathBuf,
    journal: File,
    lines: usize,
    opts: EmbeddedOptions,
    counters: HashMap<String, Counter>,
    usage: BTreeMap<UsageKey, UsageRow>,
    values: Values,
}

/// One counter to charge: a reserve's charge or an extend's entry.
struct Item {
    key: String,
    stored_key: String,
    window: Window,
    limit: Option<u64>,
    amount: u64,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` with the default options.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    /// Opens (or creates) the store in `dir`, recovering the snapshot and journal.
    pub fn open_with(dir: &Path, opts: EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
        let journal_path = dir.join(JOURNAL);
        let snapshot_path = dir.join(SNAPSHOT);

        let mut counters = HashMap::new();
        let mut usage = BTreeMap::new();
        let mut values = Values::new();
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snap: Snapshot = serde_json::from_slice(&bytes)
                    .map_err(|source| StoreError::CorruptSnapshot { path: snapshot_path.clone(), source })?;
                for (k, value, expires) in snap.counters {
                    counters.insert(k, Counter { value, expires });
                }
                for row in snap.usage {
                    usage.insert(usage_key(&row), row);
                }
                for (ns, field, value) in snap.values {
                    values.insert((ns, field), value);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Snapshot { path: snapshot_path, source }),
        }
        match std::fs::read(&journal_path) {
            Ok(bytes) => replay(&bytes, &journal_path, &mut counters, &mut usage, &mut values),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Journal { path: journal_path, source }),
        }

        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|source| StoreError::Journal { path: journal_path.clone(), source })?;
        let mut inner = Inner { journal_path, snapshot_path, journal, lines: 0, opts, counters, usage, values };
        inner.compact()?;
        Ok(Self { inner: Arc::new(Mutex::new(inner)) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }

    /// See [`super::Store::reserve`].
    pub fn reserve(&self, now: SystemTime, charges: &[Charge]) -> Result<Result<Reservation, Denied>, StoreError> {
        let items: Vec<Item> = charges
            .iter()
            .map(|c| Item {
                key: c.key.clone(),
                stored_key: stored_key("", &c.key, c.window, now),
                window: c.window,
                limit: c.limit,
                amount: c.amount,
            })
            .collect();
        self.lock()?.charge(now, items)
    }

    /// See [`super::Store::extend`].
    pub fn extend(
        &self,
        now: SystemTime,
        entries: &[(String, Option<u64>, u64, Window)],
    ) -> Result<Result<(), Denied>, StoreError> {
        let items: Vec<Item> = entries
            .iter()
            .map(|(k, limit, amount, window)| Item {
                key: scope_key("", k),
                stored_key: k.clone(),
                window: *window,
                limit: *limit,
                amount: *amount,
            })
            .collect();
        Ok(self.lock()?.charge(now, items)?.map(|_| ()))
    }

    /// See [`super::Store::adjust`].
    pub fn adjust(&self, adjustments: &[(String, i64)]) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let mut next: HashMap<&str, Counter> = HashMap::new();
        for (k, delta) in adjustments {
            let Some(current) = next.get(k.as_str()).or_else(|| inner.counters.get(k)).copied() else {
                continue; // expired or never reserved: nothing to reconcile
            };
            let value = if *delta < 0 {
                current.value.saturating_sub(delta.unsigned_abs())
            } else {
                current.value.saturating_add(delta.unsigned_abs())
            };
            next.insert(k, Counter { value, ..current });
        }
        if next.is_empty() {
            return Ok(());
        }
        let changes: Vec<(String, u64, u64)> =
            next.into_iter().map(|(k, c)| (k.to_string(), c.value, c.expires)).collect();
        inner.apply_counters(changes)
    }

    /// See [`super::Store::record_usage`].
    pub fn record_usage(&self, now: SystemTime, rec: &UsageRecord) -> Result<(), StoreError> {
        let day = super::utc_day(now);
        let key: UsageKey = (day.clone(), rec.team.clone(), rec.consumer.clone(), rec.model.clone());
        let mut inner = self.lock()?;
        let mut row = inner.usage.get(&key).cloned().unwrap_or_else(|| UsageRow {
            day,
            team: rec.team.clone(),
            consumer: rec.consumer.clone(),
            model: rec.model.clone(),
            ..UsageRow::default()
        });
        row.add(rec);
        inner.append(&Line::Usage(row.clone()))?;
        inner.usage.insert(key, row);
        Ok(())
    }

    /// See [`super::Store::usage_report`].
    pub fn usage_report(&self, since_day: &str, team: Option<&str>) -> Result<Vec<UsageRow>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .usage
            .values()
            .filter(|r| r.day.as_str() >= since_day && team.is_none_or(|t| r.team == t))
            .cloned()
            .collect())
    }

    /// See [`super::Store::get`].
    pub fn get(&self, stored_key: &str) -> Result<u64, StoreError> {
        Ok(self.lock()?.counters.get(stored_key).map_or(0, |c| c.value))
    }

    /// See [`super::Store::value`].
    pub fn value(&self, ns: &str, field: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.values.get(&(ns.to_string(), field.to_string())).cloned())
    }

    /// See [`super::Store::values`].
    pub fn values(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.values.iter().filter(|((n, _), _)| n == ns).map(|((_, f), v)| (f.clone(), v.clone())).collect())
    }

    /// See [`super::Store::set_value`].
    pub fn set_value(&self, ns: &str, field: &str, value: &str, only_if_absent: bool) -> Result<String, StoreError> {
        let mut inner = self.lock()?;
        let key = (ns.to_string(), field.to_string());
        if only_if_absent {
            if let Some(v) = inner.values.get(&key) {
                return Ok(v.clone());
            }
        }
        inner.append(&Line::Value(key.0.clone(), key.1.clone(), value.to_string()))?;
        inner.values.insert(key, value.to_string());
        Ok(value.to_string())
    }

    /// Writes a snapshot and empties the journal now.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.lock()?.compact()
    }
}

impl Inner {
    /// Checks every limited item, then charges all of them, or none.
    fn charge(&mut self, now: SystemTime, items: Vec<Item>) -> Result<Result<Reservation, Denied>, StoreError> {
        // Running values per stored key, so a key charged twice is counted twice.
        let mut running: HashMap<&str, u64> = HashMap::new();
        let mut entries = Vec::with_capacity(items.len());
        for item in &items {
            let current = self.counters.get(&item.stored_key).map_or(0, |c| c.value);
            let pending = running.entry(&item.stored_key).or_insert(current);
            let used_after = pending.saturating_add(item.amount);
            if let Some(limit) = item.limit {
                if used_after > limit {
                    return Ok(Err(Denied {
                        key: item.key.clone(),
                        window: item.window,
                        limit,
                        used: current,
                        reset_after: item.window.reset_after(now),
                    }));
                }
            }
            *pending = used_after;
            entries.push(Reserved {
                key: item.key.clone(),
                window: item.window,
                stored_key: item.stored_key.clone(),
                amount: item.amount,
                limit: item.limit,
                used_after,
                reset_after: item.window.reset_after(now),
            });
        }

        let changes = entries
            .iter()
            .filter_map(|e| {
                // One change per stored key, carrying its final value.
                let value = running.remove(e.stored_key.as_str())?;
                let window_end = e.window.end_secs(now) + EXPIRY_MARGIN.as_secs();
                let expires = self.counters.get(&e.stored_key).map_or(window_end, |c| c.expires.max(window_end));
                Some((e.stored_key.clone(), value, expires))
            })
            .collect();
        self.apply_counters(changes)?;
        Ok(Ok(Reservation { entries }))
    }

    /// Journals new counter values, then applies them.
    fn apply_counters(&mut self, changes: Vec<(String, u64, u64)>) -> Result<(), StoreError> {
        let line = Line::Counters(changes);
        self.append(&line)?;
        if let Line::Counters(changes) = line {
            for (k, value, expires) in changes {
                self.counters.insert(k, Counter { value, expires });
            }
        }
        Ok(())
    }

    /// Appends one line to the journal (one write), compacting when it grew long.
    fn append(&mut self, line: &Line) -> Result<(), StoreError> {
        let mut buf = serde_json::to_vec(line)
            .map_err(|e| StoreError::Journal { path: self.journal_path.clone(), source: e.into() })?;
        buf.push(b'\n');
        let journal_err = |source| StoreError::Journal { path: self.journal_path.clone(), source };
        self.journal.write_all(&buf).map_err(journal_err)?;
        if self.opts.fsync {
            self.journal.sync_data().map_err(journal_err)?;
        }
        self.lines += 1;
        if self.lines >= self.opts.compact_after_lines {
            // The change is already journaled; a failed compaction only delays the next one.
            if let Err(e) = self.compact() {
                tracing::warn!(error = %e, "limits store compaction failed");
            }
        }
        Ok(())
    }

    /// Drops expired counters, writes a snapshot atomically and empties the journal.
    fn compact(&mut self) -> Result<(), StoreError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        self.counters.retain(|_, c| c.expires > now);
        let snap = Snapshot {
            counters: self.counters.iter().map(|(k, c)| (k.clone(), c.value, c.expires)).collect(),
            usage: self.usage.values().cloned().collect(),
            values: self.values.iter().map(|((n, f), v)| (n.clone(), f.clone(), v.clone())).collect(),
        };
        let snap_err = |source| StoreError::Snapshot { path: self.snapshot_path.clone(), source };
        let bytes = serde_json::to_vec(&snap).map_err(|e| snap_err(e.into()))?;
        let tmp = self.snapshot_path.with_extension("json.tmp");
        let mut file = File::create(&tmp).map_err(snap_err)?;
        file.write_all(&bytes).map_err(snap_err)?;
        file.sync_all().map_err(snap_err)?;
        drop(file);
        std::fs::rename(&tmp, &self.snapshot_path).map_err(snap_err)?;
        if let Some(dir) = self.snapshot_path.parent() {
            // Make the rename itself durable; not every filesystem allows this.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.journal.set_len(0).map_err(|source| StoreError::Journal { path: self.journal_path.clone(), source })?;
        self.lines = 0;
        Ok(())
    }
}

/// Applies journal lines over the snapshot's state. Unreadable lines (a torn
/// write at the end after a crash) are skipped with a warning.
fn replay(
    bytes: &[u8],
    path: &Path,
    counters: &mut HashMap<String, Counter>,
    usage: &mut BTreeMap<UsageKey, UsageRow>,
    values: &mut Values,
) {
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(raw) {
            Ok(Line::Counters(changes)) => {
                for (k, value, expires) in changes {
                    counters.insert(k, Counter { value, expires });
                }
            }
            Ok(Line::Usage(row)) => {
                usage.insert(usage_key(&row), row);
            }
            Ok(Line::Value(ns, field, value)) => {
                values.insert((ns, field), value);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), line = n + 1, error = %e,
                    "skipping unreadable limits journal line");
            }
        }
    }
}

fn usage_key(row: &UsageRow) -> UsageKey {
    (row.day.clone(), row.team.clone(), row.consumer.clone(), row.model.clone())
}
