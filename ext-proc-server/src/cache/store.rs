//! Where cached responses live: an exact tier and a semantic tier.
//!
//! **Tiers.** Every entry is stored under its *exact* key (a sha256 computed
//! by the caller from the normalized request). An entry inserted with an
//! embedding is also indexed in its *partition* (another sha256: the scope
//! within which answers may be shared, e.g. team + model); the semantic tier
//! returns the entry of a partition whose embedding has the largest dot
//! product with the query (vectors are unit length, so this is the cosine),
//! when that similarity reaches the caller's threshold.
//!
//! Two backends share this API through [`CacheStore`]:
//!
//! **Embedded** (one sidecar). A map exact key → entry (value, partition,
//! expiry, recency tick) plus, per partition, the embeddings stored
//! contiguously (`Vec<f32>`, one row per entry, and the row's exact key), so a
//! semantic lookup is one linear scan over a flat slice that the compiler
//! vectorizes. Entries expire `ttl` after insertion: they are never returned
//! after that and are swept (oldest expiry first) at every call. `max_entries`
//! and `max_bytes` (value bytes + 4 bytes per embedding dimension) are
//! enforced on insert by evicting the least recently used entries; a hit
//! refreshes recency. An entry larger than `max_bytes` is not stored.
//!
//! Persistence is one append-only file, `cache.log` in the cache directory:
//! a 12-byte header (`TGCACHE\0` and a little-endian `u32` format version,
//! [`LOG_VERSION`]) then records, each `u32 body length`, `u32 FNV-1a checksum
//! of the body`, body. A body is `1` (insert): exact key, partition key,
//! expiry (`u64` epoch milliseconds), embedding dimension `u32` (0: none),
//! the embedding (`f32` little endian), value length `u32`, value; or `2`
//! (remove): exact key. All integers are little endian. Each insert appends
//! its evictions' remove records and its own record in one `write()` (no
//! fsync: the page cache survives a kill of the sidecar). Hits do not write,
//! so recency survives a restart only as of the last compaction. Loading
//! replays the file, skips expired records and stops at the first torn or
//! unreadable record (the tail a kill left behind) with a warning; a file
//! with another header is ignored. The log is compacted (rewritten with only
//! the live entries, least recently used first) when loaded and whenever it
//! grows past twice the live data (and past [`COMPACT_MIN_BYTES`]): the
//! snapshot is taken under the lock, written to `cache.log.tmp` on a
//! background thread, then the records appended meanwhile are copied after it
//! and the file renamed over the log.
//!
//! **Redis** (replicas share one cache). Entry `{prefix}e:{hex exact}` holds
//! the value with `PX = ttl`. The partition index `{prefix}p:{hex partition}`
//! is a hash, field `{hex exact}` → embedding (`f32` little endian), whose
//! expiry is reset to `ttl` at each insert. A semantic lookup reads the whole
//! hash (`HGETALL`), ranks it locally, then `GET`s the best entry; a field
//! whose entry has expired is `HDEL`ed and the next best tried. A partition
//! holds at most `max_entries` fields (random fields are dropped with
//! `HRANDFIELD` + `HDEL` when over); overall memory is Redis's own business
//! (`maxmemory`), and `max_bytes` only bounds the size of one entry.

use redis::aio::ConnectionManager;
use redis::RedisError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A sha256 digest computed by the caller (exact key or partition key).
pub type Key = [u8; 32];

/// How much the cache holds and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries expire this long after they were inserted.
    pub ttl: Duration,
    /// Embedded: entries held at most. Redis: entries per partition index.
    pub max_entries: usize,
    /// Embedded: value bytes + embedding bytes held at most. Redis: the
    /// largest entry stored.
    pub max_bytes: usize,
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Exact,
    Semantic,
}

/// A cache hit.
#[derive(Debug, Clone)]
pub struct Found {
    pub value: Vec<u8>,
    pub tier: Tier,
    /// 1.0 for the exact tier; the dot product for the semantic tier.
    pub similarity: f32,
}

/// A semantic lookup that refuses candidates (see
/// [`CacheStore::get_similar_where`]) looks at this many of the most similar.
pub const MAX_CANDIDATES: usize = 8;

/// Why the cache store failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use cache directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot read cache file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write cache file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot insert an empty embedding into the semantic cache")]
    EmptyEmbedding,
    #[error("invalid redis url {url:?}: {source}")]
    RedisUrl { url: String, source: RedisError },
    #[error("redis at {addr} is unreachable: {source}")]
    RedisUnreachable { addr: String, source: RedisError },
    #[error("redis at {addr} did not answer within {timeout:?}")]
    RedisTimeout { addr: String, timeout: Duration },
    #[error("redis at {addr} returned an unexpected reply: {detail}")]
    RedisReply { addr: String, detail: String },
    #[error("cache state lock is poisoned")]
    Poisoned,
}

/// The response cache's storage. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct CacheStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Embedded(Arc<Mutex<State>>),
    Redis(RedisCache),
}

impl CacheStore {
    /// Embedded store persisted in `dir` (created if missing); loads what a
    /// previous run left (dropping expired entries) and compacts the file.
    pub fn embedded(dir: &Path, limits: Limits) -> Result<CacheStore, CacheError> {
        let shared = Arc::new(Mutex::new(State::load(dir, limits)?));
        compact(&shared)?;
        Ok(CacheStore { backend: Backend::Embedded(shared) })
    }

    /// Shared store in Redis (`redis://host:port/db`); every key starts with
    /// `prefix` (e.g. `"tollgate:cache:"`). Fails when the server does not
    /// answer a `PING`.
    pub async fn redis(url: &str, prefix: &str, limits: Limits) -> Result<CacheStore, CacheError> {
        let cache = RedisCache::connect(url, prefix, limits)?;
        let mut conn = cache.conn.clone();
        cache.call(redis::cmd("PING").query_async::<String>(&mut conn)).await?;
        Ok(CacheStore { backend: Backend::Redis(cache) })
    }

    /// Exact tier: the value stored under `exact`, if present and not expired.
    pub async fn get_exact(&self, exact: &Key) -> Result<Option<Found>, CacheError> {
        match &self.backend {
            Backend::Embedded(shared) => Ok(lock(shared)?.get_exact(exact, now_ms())),
            Backend::Redis(r) => r.get_exact(exact).await,
        }
    }

    /// Semantic tier: the entry of `partition` whose embedding is most similar
    /// (dot product; vectors are unit length) to `embedding`, when that
    /// similarity is at least `threshold`. An embedding whose dimension
    /// differs from the partition's finds nothing.
    pub async fn get_similar(
        &self,
        partition: &Key,
        embedding: &[f32],
        threshold: f32,
    ) -> Result<Option<Found>, CacheError> {
        self.get_similar_where(partition, embedding, threshold, &|_| true).await
    }

    /// Like [`get_similar`](Self::get_similar), but only values that `accept`
    /// takes are found: the most similar accepted one among the
    /// [`MAX_CANDIDATES`] most similar entries at or above `threshold`.
    pub async fn get_similar_where(
        &self,
        partition: &Key,
        embedding: &[f32],
        threshold: f32,
        accept: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<Option<Found>, CacheError> {
        if embedding.is_empty() {
            return Ok(None);
        }
        match &self.backend {
            Backend::Embedded(shared) => {
                Ok(lock(shared)?.get_similar(partition, embedding, threshold, now_ms(), accept))
            }
            Backend::Redis(r) => r.get_similar(partition, embedding, threshold, accept).await,
        }
    }

    /// Stores `value` under `exact`, and when `embedding` is given also
    /// indexes it in `partition` for the semantic tier. A value too large for
    /// the limits is silently not stored.
    ///
    /// Embedded: an entry with the same exact key is replaced; when the
    /// embedding's dimension differs from the partition's, the partition's
    /// older entries (another model's) are dropped. On an error writing the
    /// file the entry is still held in memory but may not survive a restart.
    pub async fn insert(
        &self,
        partition: &Key,
        exact: &Key,
        embedding: Option<&[f32]>,
        value: &[u8],
    ) -> Result<(), CacheError> {
        if embedding.is_some_and(<[f32]>::is_empty) {
            return Err(CacheError::EmptyEmbedding);
        }
        match &self.backend {
            Backend::Embedded(shared) => insert_embedded(shared, partition, exact, embedding, value),
            Backend::Redis(r) => r.insert(partition, exact, embedding, value).await,
        }
    }

    /// Entries held and the bytes they count against `max_bytes` (value +
    /// embedding bytes). Embedded only: Redis gives `None`.
    pub fn stats(&self) -> Option<(usize, usize)> {
        match &self.backend {
            Backend::Embedded(shared) => lock(shared).ok().map(|s| (s.entries.len(), s.bytes)),
            Backend::Redis(_) => None,
        }
    }
}

fn lock(shared: &Mutex<State>) -> Result<MutexGuard<'_, State>, CacheError> {
    shared.lock().map_err(|_| CacheError::Poisoned)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ttl_ms(limits: &Limits) -> u64 {
    u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Whether an entry of this size can be stored at all under `limits`.
fn storable(limits: &Limits, value_len: usize, dim: usize) -> bool {
    let size = value_len.saturating_add(dim.saturating_mul(4));
    !limits.ttl.is_zero()
        && limits.max_entries > 0
        && size <= limits.max_bytes
        && u32::try_from(value_len).is_ok()
        && u32::try_from(dim).is_ok()
}

/// Dot product of two slices of the same length, written so that it
/// vectorizes: independent accumulators over fixed-size chunks.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

// ---------------------------------------------------------------------------
// Embedded backend
// ---------------------------------------------------------------------------

const LOG_FILE: &str = "cache.log";
const TMP_FILE: &str = "cache.log.tmp";
const LOG_MAGIC: &[u8; 8] = b"TGCACHE\0";
/// The version of the log's record format (in its header).
pub const LOG_VERSION: u32 = 1;
const HEADER_LEN: u64 = 12;
/// The log is not compacted while smaller than this.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
const TAG_INSERT: u8 = 1;
const TAG_REMOVE: u8 = 2;
/// Length + checksum before every record body.
const FRAME_LEN: usize = 8;

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(LOG_MAGIC);
    h[8..].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h
}

/// Bytes of an insert record in the log.
fn insert_record_len(dim: usize, value_len: usize) -> u64 {
    (FRAME_LEN + 1 + 32 + 32 + 8 + 4 + dim * 4 + 4 + value_len) as u64
}

/// FNV-1a, 32 bits: enough to tell a torn or garbled record from a good one.
fn checksum(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Starts a record in `out`; returns where it starts, for [`end_record`].
fn begin_record(out: &mut Vec<u8>, tag: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    out.push(tag);
    start
}

/// Fills in the length and checksum of the record begun at `start`.
fn end_record(out: &mut [u8], start: usize) {
    let body = start + FRAME_LEN;
    let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
    let sum = checksum(&out[body..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..body].copy_from_slice(&sum.to_le_bytes());
}

fn encode_insert(out: &mut Vec<u8>, exact: &Key, partition: &Key, expires_ms: u64, embedding: &[f32], value: &[u8]) {
    let start = begin_record(out, TAG_INSERT);
    out.reserve(insert_record_len(embedding.len(), value.len()) as usize);
    out.extend_from_slice(exact);
    out.extend_from_slice(partition);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&u32::try_from(embedding.len()).unwrap_or(0).to_le_bytes());
    for x in embedding {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    end_record(out, start);
}

fn encode_remove(out: &mut Vec<u8>, exact: &Key) {
    let start = begin_record(out, TAG_REMOVE);
    out.extend_from_slice(exact);
    end_record(out, start);
}

/// One decoded log record.
enum Record<'a> {
    Insert { exact: Key, partition: Key, expires_ms: u64, embedding: Vec<f32>, value: &'a [u8] },
    Remove { exact: Key },
}

/// Reads fields off the front of a record body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

fn le_f32s(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(bytes.chunks_exact(4).map(|c| <[u8; 4]>::try_from(c).map_or(0.0, f32::from_le_bytes)));
}

/// The record at the front of `buf` and what follows it; `None` when the
/// record is incomplete or unreadable.
fn next_record(buf: &[u8]) -> Option<(Record<'_>, &[u8])> {
    let mut frame = Cursor(buf);
    let len = usize::try_from(frame.u32()?).ok()?;
    let sum = frame.u32()?;
    let body = frame.take(len)?;
    if checksum(body) != sum {
        return None;
    }
    let mut c = Cursor(body);
    let record = match c.array::<1>()?[0] {
        TAG_INSERT => {
            let exact = c.array()?;
            let partition = c.array()?;
            let expires_ms = c.u64()?;
            let dim = usize::try_from(c.u32()?).ok()?;
            let mut embedding = Vec::new();
            le_f32s(c.take(dim.checked_mul(4)?)?, &mut embedding);
            let value_len = usize::try_from(c.u32()?).ok()?;
            let value = c.take(value_len)?;
            Record::Insert { exact, partition, expires_ms, embedding, value }
        }
        TAG_REMOVE => Record::Remove { exact: c.array()? },
        _ => return None,
    };
    if !c.0.is_empty() {
        return None;
    }
    Some((record, frame.0))
}

struct Entry {
    partition: Key,
    value: Arc<[u8]>,
    expires_ms: u64,
    /// Recency: the key of this entry in [`State::lru`].
    tick: u64,
    /// Row in the partition index, when the entry has an embedding.
    row: Option<usize>,
    dim: usize,
}

impl Entry {
    /// Bytes counted against `max_bytes`.
    fn size(&self) -> usize {
        self.value.len() + self.dim * 4
    }
    fn record_len(&self) -> u64 {
        insert_record_len(self.dim, self.value.len())
    }
}

/// The embeddings of one partition, one row of `dim` floats per entry.
struct Partition {
    dim: usize,
    vectors: Vec<f32>,
    keys: Vec<Key>,
}

/// The append-only file.
struct Log {
    path: PathBuf,
    tmp_path: PathBuf,
    file: File,
    /// Bytes in the file (header included).
    len: u64,
    /// Bytes the live entries' records take (what a compaction would write,
    /// header excluded).
    live: u64,
    /// A compaction has taken its snapshot and not finished yet.
    compacting: bool,
    compact_min: u64,
    /// Records of the current operation, written in one call.
    scratch: Vec<u8>,
}

impl Log {
    fn write_err(&self, source: std::io::Error) -> CacheError {
        CacheError::Write { path: self.path.clone(), source }
    }

    /// Appends the scratch buffer. On failure the file is cut back to its
    /// last complete record, so later records stay readable.
    fn flush(&mut self) -> Result<(), CacheError> {
        if self.scratch.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.scratch);
        let written = self.scratch.len() as u64;
        self.scratch.clear();
        match result {
            Ok(()) => {
                self.len += written;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                Err(self.write_err(source))
            }
        }
    }

    fn compaction_due(&self) -> bool {
        !self.compacting && self.len > self.compact_min && self.len > 2 * (HEADER_LEN + self.live)
    }
}

/// Everything the embedded store holds, behind one mutex.
struct State {
    limits: Limits,
    entries: HashMap<Key, Entry>,
    partitions: HashMap<Key, Partition>,
    /// Recency tick → exact key; the first is the least recently used.
    lru: BTreeMap<u64, Key>,
    /// (expiry, exact key), soonest first.
    expiry: BTreeSet<(u64, Key)>,
    tick: u64,
    /// Value + embedding bytes held.
    bytes: usize,
    log: Log,
}

/// A live entry copied out for a compaction.
struct SnapEntry {
    exact: Key,
    partition: Key,
    expires_ms: u64,
    embedding: Vec<f32>,
    value: Arc<[u8]>,
}

/// What a compaction writes, taken under the lock.
struct CompactJob {
    entries: Vec<SnapEntry>,
    /// The log's length when the snapshot was taken: records after it are
    /// copied over at the end.
    mark: u64,
    tmp_path: PathBuf,
}

impl State {
    /// Reads the log in `dir` (if any) into memory, within `limits`.
    fn load(dir: &Path, limits: Limits) -> Result<State, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Dir { path: dir.to_path_buf(), source })?;
        let path = dir.join(LOG_FILE);
        let tmp_path = dir.join(TMP_FILE);
        // A compaction that a kill interrupted: the log itself is intact.
        let _ = std::fs::remove_file(&tmp_path);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| CacheError::Write { path: path.clone(), source })?;
        let log = Log {
            path,
            tmp_path,
            file,
            len: bytes.len() as u64,
            live: 0,
            compacting: false,
            compact_min: COMPACT_MIN_BYTES,
            scratch: Vec::new(),
        };
        let mut state = State {
            limits,
            entries: HashMap::new(),
            partitions: HashMap::new(),
            lru: BTreeMap::new(),
            expiry: BTreeSet::new(),
            tick: 0,
            bytes: 0,
            log,
        };
        state.replay(&bytes, now_ms());
        Ok(state)
    }

    fn replay(&mut self, bytes: &[u8], now: u64) {
        let path = self.log.path.display().to_string();
        let Some(mut rest) = bytes.strip_prefix(&header()) else {
            if !bytes.is_empty() {
                tracing::warn!(path, "cache file has an unknown header or version; starting with an empty cache");
            }
            return;
        };
        while !rest.is_empty() {
            let Some((record, after)) = next_record(rest) else {
                tracing::warn!(
                    path,
                    ignored_bytes = rest.len(),
                    "ignoring a torn or unreadable record at the end of the cache file"
                );
                return;
            };
            match record {
                Record::Insert { exact, partition, expires_ms, embedding, value } => {
                    let embedding = (!embedding.is_empty()).then_some(embedding.as_slice());
                    if self.put(&partition, &exact, embedding, Arc::from(value), expires_ms, now).is_none() {
                        // Expired, or too big for today's limits: it still
                        // replaced whatever was stored under its key.
                        self.remove(&exact);
                    }
                }
                Record::Remove { exact } => {
                    self.remove(&exact);
                }
            }
            rest = after;
        }
    }

    /// Removes expired entries (soonest expiry first).
    fn sweep(&mut self, now: u64) {
        while let Some(&(expires, key)) = self.expiry.first() {
            if expires > now {
                break;
            }
            if self.remove(&key).is_none() {
                // Not indexed by an entry any more: never happens, but never loop.
                self.expiry.remove(&(expires, key));
            }
        }
    }

    fn touch(&mut self, key: &Key) {
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.tick);
            self.tick += 1;
            e.tick = self.tick;
            self.lru.insert(self.tick, *key);
        }
    }

    /// Removes an entry from every index. Writes nothing.
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.lru.remove(&e.tick);
        self.expiry.remove(&(e.expires_ms, *key));
        self.bytes = self.bytes.saturating_sub(e.size());
        self.log.live = self.log.live.saturating_sub(e.record_len());
        if let Some(row) = e.row {
            self.remove_row(&e.partition, row);
        }
        Some(e)
    }

    /// Removes one row of a partition index (the last row moves into it).
    fn remove_row(&mut self, partition: &Key, row: usize) {
        let Some(p) = self.partitions.get_mut(partition) else {
            return;
        };
        if row >= p.keys.len() {
            return;
        }
        let last = p.keys.len() - 1;
        p.keys.swap_remove(row);
        if row != last {
            p.vectors.copy_within(last * p.dim..(last + 1) * p.dim, row * p.dim);
            if let Some(moved) = p.keys.get(row).and_then(|k| self.entries.get_mut(k)) {
                moved.row = Some(row);
            }
        }
        p.vectors.truncate(last * p.dim);
        if p.keys.is_empty() {
            self.partitions.remove(partition);
        }
    }

    /// Stores an entry, evicting what the limits require. Returns the entries
    /// evicted while still live (to be logged), or `None` when the entry is
    /// not stored at all. Writes nothing.
    fn put(
        &mut self,
        partition: &Key,
        exact: &Key,
        embedding: Option<&[f32]>,
        value: Arc<[u8]>,
        expires_ms: u64,
        now: u64,
    ) -> Option<Vec<Key>> {
        let dim = embedding.map_or(0, <[f32]>::len);
        if !storable(&self.limits, value.len(), dim) || expires_ms <= now {
            return None;
        }
        let size = value.len() + dim * 4;
        self.remove(exact);
        self.sweep(now);

        let mut evicted = Vec::new();
        // Another model's embeddings cannot be compared with this one's.
        if let Some(p) = self.partitions.get(partition).filter(|p| embedding.is_some() && p.dim != dim) {
            evicted.extend(p.keys.iter().copied());
            for k in &evicted {
                self.remove(k);
            }
        }
        while self.entries.len() >= self.limits.max_entries || self.bytes + size > self.limits.max_bytes {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            // `remove` would look the tick up again; it is gone already, harmless.
            self.remove(&oldest);
            evicted.push(oldest);
        }

        let row = embedding.map(|v| {
            let p = self.partitions.entry(*partition).or_insert_with(|| Partition {
                dim,
                vectors: Vec::new(),
                keys: Vec::new(),
            });
            p.vectors.extend_from_slice(v);
            p.keys.push(*exact);
            p.keys.len() - 1
        });
        self.tick += 1;
        let entry = Entry { partition: *partition, value, expires_ms, tick: self.tick, row, dim };
        self.bytes += size;
        self.log.live += entry.record_len();
        self.lru.insert(self.tick, *exact);
        self.expiry.insert((expires_ms, *exact));
        self.entries.insert(*exact, entry);
        Some(evicted)
    }

    fn get_exact(&mut self, exact: &Key, now: u64) -> Option<Found> {
        self.sweep(now);
        let e = self.entries.get(exact)?;
        if e.expires_ms <= now {
            self.remove(exact);
            return None;
        }
        let value = e.value.to_vec();
        self.touch(exact);
        Some(Found { value, tier: Tier::Exact, similarity: 1.0 })
    }

    fn get_similar(
        &mut self,
        partition: &Key,
        query: &[f32],
        threshold: f32,
        now: u64,
        accept: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Found> {
        self.sweep(now);
        let p = self.partitions.get(partition)?;
        if p.dim != query.len() || p.dim == 0 {
            return None;
        }
        let mut candidates: Vec<(f32, Key)> = Vec::new();
        let mut expired = Vec::new();
        for (row, v) in p.vectors.chunks_exact(p.dim).enumerate() {
            let s = dot(v, query);
            if s >= threshold {
                let Some(&key) = p.keys.get(row) else { continue };
                match self.entries.get(&key) {
                    Some(e) if e.expires_ms > now => candidates.push((s, key)),
                    _ => expired.push(key),
                }
            }
        }
        for key in &expired {
            self.remove(key);
        }
        // Most similar first; equal similarities keep their row order.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (key, similarity) = candidates
            .into_iter()
            .take(MAX_CANDIDATES)
            .find_map(|(s, key)| self.entries.get(&key).filter(|e| accept(&e.value)).map(|_| (key, s)))?;
        let value = self.entries.get(&key)?.value.to_vec();
        self.touch(&key);
        Some(Found { value, tier: Tier::Semantic, similarity })
    }

    /// Copies the live entries out, least recently used first.
    fn compact_job(&mut self, now: u64) -> CompactJob {
        self.sweep(now);
        let entries = self
            .lru
            .values()
            .filter_map(|k| {
                let e = self.entries.get(k)?;
                let embedding = match (e.row, self.partitions.get(&e.partition)) {
                    (Some(row), Some(p)) => p.vectors.get(row * p.dim..(row + 1) * p.dim)?.to_vec(),
                    _ => Vec::new(),
                };
                Some(SnapEntry {
                    exact: *k,
                    partition: e.partition,
                    expires_ms: e.expires_ms,
                    embedding,
                    value: e.value.clone(),
                })
            })
            .collect();
        CompactJob { entries, mark: self.log.len, tmp_path: self.log.tmp_path.clone() }
    }

    /// Puts the written snapshot in place of the log: copies the records
    /// appended since the snapshot after it, then renames it over the log.
    fn finish_compaction(&mut self, job: &CompactJob, written: u64) -> Result<(), CacheError> {
        let read_err = |source| CacheError::Read { path: self.log.path.clone(), source };
        let tmp_err = |source| CacheError::Write { path: job.tmp_path.clone(), source };
        let mut tail = Vec::new();
        if self.log.len > job.mark {
            let mut f = File::open(&self.log.path).map_err(read_err)?;
            f.seek(SeekFrom::Start(job.mark)).map_err(read_err)?;
            f.take(self.log.len - job.mark).read_to_end(&mut tail).map_err(read_err)?;
        }
        if !tail.is_empty() {
            let mut tmp = OpenOptions::new().append(true).open(&job.tmp_path).map_err(tmp_err)?;
            tmp.write_all(&tail).map_err(tmp_err)?;
        }
        std::fs::rename(&job.tmp_path, &self.log.path).map_err(|e| self.log.write_err(e))?;
        self.log.file =
            OpenOptions::new().create(true).append(true).open(&self.log.path).map_err(|e| self.log.write_err(e))?;
        self.log.len = written + tail.len() as u64;
        Ok(())
    }
}

/// Writes a compaction's snapshot to its temporary file; returns its length.
fn write_snapshot(job: &CompactJob) -> Result<u64, CacheError> {
    let err = |source| CacheError::Write { path: job.tmp_path.clone(), source };
    let file = File::create(&job.tmp_path).map_err(err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header()).map_err(err)?;
    let mut len = HEADER_LEN;
    let mut buf = Vec::new();
    for e in &job.entries {
        buf.clear();
        encode_insert(&mut buf, &e.exact, &e.partition, e.expires_ms, &e.embedding, &e.value);
        out.write_all(&buf).map_err(err)?;
        len += buf.len() as u64;
    }
    out.flush().map_err(err)?;
    Ok(len)
}

/// Compacts the log now, on this thread (unless a compaction is under way).
fn compact(shared: &Mutex<State>) -> Result<(), CacheError> {
    let job = {
        let mut st = lock(shared)?;
        if st.log.compacting {
            return Ok(());
        }
        st.log.compacting = true;
        st.compact_job(now_ms())
    };
    run_compaction(shared, &job)
}

/// Writes the snapshot without the lock, then swaps it in under the lock.
fn run_compaction(shared: &Mutex<State>, job: &CompactJob) -> Result<(), CacheError> {
    let written = write_snapshot(job);
    let mut st = lock(shared)?;
    st.log.compacting = false;
    let result = written.and_then(|n| st.finish_compaction(job, n));
    if result.is_err() {
        let _ = std::fs::remove_file(&job.tmp_path);
    }
    result
}

fn insert_embedded(
    shared: &Arc<Mutex<State>>,
    partition: &Key,
    exact: &Key,
    embedding: Option<&[f32]>,
    value: &[u8],
) -> Result<(), CacheError> {
    let (result, job) = {
        let mut st = lock(shared)?;
        if !storable(&st.limits, value.len(), embedding.map_or(0, <[f32]>::len)) {
            return Ok(());
        }
        let now = now_ms();
        let expires_ms = now.saturating_add(ttl_ms(&st.limits));
        let Some(evicted) = st.put(partition, exact, embedding, Arc::from(value), expires_ms, now) else {
            return Ok(());
        };
        let mut scratch = std::mem::take(&mut st.log.scratch);
        for k in &evicted {
            encode_remove(&mut scratch, k);
        }
        encode_insert(&mut scratch, exact, partition, expires_ms, embedding.unwrap_or(&[]), value);
        st.log.scratch = scratch;
        let result = st.log.flush();
        let job = if st.log.compaction_due() {
            st.log.compacting = true;
            Some(st.compact_job(now))
        } else {
            None
        };
        (result, job)
    };
    if let Some(job) = job {
        let worker = Arc::clone(shared);
        let spawned = std::thread::Builder::new().name("cache-compact".into()).spawn(move || {
            if let Err(e) = run_compaction(&worker, &job) {
                tracing::warn!(error = %e, "cache file compaction failed; the file keeps growing until the next one");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the cache compaction thread");
            lock(shared)?.log.compacting = false;
        }
    }
    result
}

// ---------------------------------------------------------------------------
// Redis backend
// ---------------------------------------------------------------------------

/// Connecting, and waiting for one reply, give up after this long.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// No call waits longer than this, reconnection attempts included.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// A semantic lookup tries at most this many candidates whose entries expired
/// or were refused.
const MAX_STALE_TRIES: usize = 8;

#[derive(Clone)]
struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    /// The server's address without credentials, for messages.
    addr: String,
    limits: Limits,
}

impl RedisCache {
    fn connect(url: &str, prefix: &str, limits: Limits) -> Result<Self, CacheError> {
        let addr = redact(url);
        let client = redis::Client::open(url).map_err(|source| CacheError::RedisUrl { url: addr.clone(), source })?;
        let conn = crate::limits::redis::lazy_manager(client)
            .map_err(|source| CacheError::RedisUnreachable { addr: addr.clone(), source })?;
        Ok(Self { conn, prefix: prefix.to_string(), addr, limits })
    }

    /// Runs one Redis call with the overall time bound, mapping its errors.
    async fn call<T>(&self, fut: impl Future<Output = Result<T, RedisError>>) -> Result<T, CacheError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Err(_) => Err(CacheError::RedisTimeout { addr: self.addr.clone(), timeout: CALL_TIMEOUT }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => {
                Err(CacheError::RedisTimeout { addr: self.addr.clone(), timeout: IO_TIMEOUT })
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
                Err(CacheError::RedisUnreachable { addr: self.addr.clone(), source: e })
            }
            Ok(Err(e)) => Err(CacheError::RedisReply { addr: self.addr.clone(), detail: e.to_string() }),
        }
    }

    fn entry_key(&self, exact_hex: &str) -> String {
        format!("{}e:{exact_hex}", self.prefix)
    }

    fn partition_key(&self, partition: &Key) -> String {
        format!("{}p:{}", self.prefix, hex::encode(partition))
    }

    async fn get_exact(&self, exact: &Key) -> Result<Option<Found>, CacheError> {
        let mut conn = self.conn.clone();
        let key = self.entry_key(&hex::encode(exact));
        let value: Option<Vec<u8>> = self.call(redis::cmd("GET").arg(key).query_async(&mut conn)).await?;
        Ok(value.map(|value| Found { value, tier: Tier::Exact, similarity: 1.0 }))
    }

    async fn get_similar(
        &self,
        partition: &Key,
        query: &[f32],
        threshold: f32,
        accept: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<Option<Found>, CacheError> {
        let mut conn = self.conn.clone();
        let pkey = self.partition_key(partition);
        let fields: HashMap<String, Vec<u8>> =
            self.call(redis::cmd("HGETALL").arg(&pkey).query_async(&mut conn)).await?;
        let mut row = Vec::with_capacity(query.len());
        let mut candidates: Vec<(f32, String)> = fields
            .into_iter()
            .filter_map(|(field, bytes)| {
                if bytes.len() != query.len() * 4 {
                    return None; // another model's embedding, or garbage
                }
                le_f32s(&bytes, &mut row);
                let s = dot(&row, query);
                (s >= threshold).then_some((s, field))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (similarity, field) in candidates.into_iter().take(MAX_STALE_TRIES.max(MAX_CANDIDATES)) {
            let value: Option<Vec<u8>> =
                self.call(redis::cmd("GET").arg(self.entry_key(&field)).query_async(&mut conn)).await?;
            match value {
                Some(value) if accept(&value) => return Ok(Some(Found { value, tier: Tier::Semantic, similarity })),
                Some(_) => {}
                None => {
                    self.call(redis::cmd("HDEL").arg(&pkey).arg(&field).query_async::<i64>(&mut conn)).await?;
                }
            }
        }
        Ok(None)
    }

    async fn insert(
        &self,
        partition: &Key,
        exact: &Key,
        embedding: Option<&[f32]>,
        value: &[u8],
    ) -> Result<(), CacheError> {
        if !storable(&self.limits, value.len(), embedding.map_or(0, <[f32]>::len)) {
            return Ok(());
        }
        let ttl = ttl_ms(&self.limits).max(1);
        let field = hex::encode(exact);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET").arg(self.entry_key(&field)).arg(value).arg("PX").arg(ttl).ignore();
        let Some(embedding) = embedding else {
            return self.call(pipe.query_async::<()>(&mut conn)).await;
        };
        let pkey = self.partition_key(partition);
        let bytes: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
        pipe.cmd("HSET").arg(&pkey).arg(&field).arg(bytes).ignore();
        pipe.cmd("PEXPIRE").arg(&pkey).arg(ttl).ignore();
        pipe.cmd("HLEN").arg(&pkey);
        let (len,): (usize,) = self.call(pipe.query_async(&mut conn)).await?;
        if len > self.limits.max_entries {
            let excess = len - self.limits.max_entries;
            // One more than needed, so the field just written can be spared.
            let picked: Vec<String> =
                self.call(redis::cmd("HRANDFIELD").arg(&pkey).arg(excess + 1).query_async(&mut conn)).await?;
            let drop: Vec<String> = picked.into_iter().filter(|f| *f != field).take(excess).collect();
            if !drop.is_empty() {
                self.call(redis::cmd("HDEL").arg(&pkey).arg(&drop).query_async::<i64>(&mut conn)).await?;
            }
        }
        Ok(())
    }
}

/// The URL without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_string(),
    }
}

/// The tests' own `redis-server` (shared with the limit-store tests).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]
#[path = "../../tests/common/redis_server.rs"]
mod redis_server;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    const HOUR: Duration = Duration::from_secs(3600);

    fn limits(ttl: Duration, max_entries: usize, max_bytes: usize) -> Limits {
        Limits { ttl, max_entries, max_bytes }
    }

    fn big() -> Limits {
        limits(HOUR, 10_000, 1 << 30)
    }

    fn key(n: u32) -> Key {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k[31] = 0xab;
        k
    }

    /// A unit vector of `dim` dimensions pointing mostly along `axis`, tilted
    /// towards `axis + 1` by `tilt` (so its dot with the pure axis is `cos`).
    fn unit(dim: usize, axis: usize, tilt: f32) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[axis % dim] = tilt.cos();
        v[(axis + 1) % dim] += tilt.sin();
        v
    }

    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn store_is_send_sync_clone() {
        assert_send_sync::<CacheStore>();
    }

    #[test]
    fn dot_matches_naive() {
        for dim in [1, 3, 16, 17, 384] {
            let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "dim {dim}");
        }
    }

    #[tokio::test]
    async fn exact_hit_and_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert!(store.get_exact(&key(1)).await.unwrap().is_none());
        store.insert(&key(100), &key(1), None, b"one").await.unwrap();
        let found = store.get_exact(&key(1)).await.unwrap().unwrap();
        assert_eq!(found.value, b"one");
        assert_eq!(found.tier, Tier::Exact);
        assert_eq!(found.similarity, 1.0);
        assert!(store.get_exact(&key(2)).await.unwrap().is_none());
        // Replacing keeps one entry.
        store.insert(&key(100), &key(1), None, b"uno").await.unwrap();
        assert_eq!(store.get_exact(&key(1)).await.unwrap().unwrap().value, b"uno");
        assert_eq!(store.stats(), Some((1, 3)));
        // Without an embedding nothing is found semantically.
        assert!(store.get_similar(&key(100), &unit(4, 0, 0.0), 0.0).await.unwrap().is_none());
        assert!(matches!(store.insert(&key(100), &key(3), Some(&[]), b"x").await, Err(CacheError::EmptyEmbedding)));
    }

    #[tokio::test]
    async fn a_refused_candidate_gives_way_to_the_next_most_similar() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        let p = key(100);
        store.insert(&p, &key(1), Some(&unit(8, 0, 0.0)), b"closest").await.unwrap();
        store.insert(&p, &key(2), Some(&unit(8, 0, 0.3)), b"next").await.unwrap();
        store.insert(&p, &key(3), Some(&unit(8, 4, 0.0)), b"far").await.unwrap();
        let q = unit(8, 0, 0.0);
        let found = store.get_similar_where(&p, &q, 0.9, &|v| v != b"closest").await.unwrap().unwrap();
        assert_eq!(found.value, b"next");
        assert!(found.similarity < 1.0);
        // Below the threshold stays below it, whatever is refused.
        assert!(store.get_similar_where(&p, &q, 0.9, &|v| v == b"far").await.unwrap().is_none());
        assert!(store.get_similar_where(&p, &q, 0.9, &|_| false).await.unwrap().is_none());
        assert_eq!(store.get_similar(&p, &q, 0.9).await.unwrap().unwrap().value, b"closest");
    }

    #[tokio::test]
    async fn semantic_best_match_threshold_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        let (p, other) = (key(100), key(200));
        store.insert(&p, &key(1), Some(&unit(8, 0, 0.0)), b"axis0").await.unwrap();
        store.insert(&p, &key(2), Some(&unit(8, 0, 0.3)), b"axis0-tilted").await.unwrap();
        store.insert(&p, &key(3), Some(&unit(8, 4, 0.0)), b"axis4").await.unwrap();
        store.insert(&other, &key(4), Some(&unit(8, 2, 0.0)), b"other-partition").await.unwrap();

        // Closest to the tilted one.
        let q = unit(8, 0, 0.25);
        let found = store.get_similar(&p, &q, 0.9).await.unwrap().unwrap();
        assert_eq!(found.value, b"axis0-tilted");
        assert_eq!(found.tier, Tier::Semantic);
        assert!((found.similarity - (0.05f32).cos()).abs() < 1e-5, "{}", found.similarity);

        // Exactly on axis 0.
        let found = store.get_similar(&p, &unit(8, 0, 0.0), 0.9).await.unwrap().unwrap();
        assert_eq!(found.value, b"axis0");
        assert!((found.similarity - 1.0).abs() < 1e-6);

        // Below the threshold: nothing (cos 0.7 ≈ 0.765).
        assert!(store.get_similar(&p, &unit(8, 0, 0.7 + 0.3), 0.9).await.unwrap().is_none());
        let below = store.get_similar(&p, &unit(8, 4, 0.7), 0.9).await.unwrap();
        assert!(below.is_none());
        assert!(store.get_similar(&p, &unit(8, 4, 0.7), 0.7).await.unwrap().is_some());

        // Axis 2 lives in the other partition only.
        assert!(store.get_similar(&p, &unit(8, 2, 0.0), 0.5).await.unwrap().is_none());
        assert_eq!(store.get_similar(&other, &unit(8, 2, 0.0), 0.5).await.unwrap().unwrap().value, b"other-partition");
        assert!(store.get_similar(&key(300), &unit(8, 2, 0.0), 0.0).await.unwrap().is_none());

        // Another dimension finds nothing; inserting it replaces the partition.
        assert!(store.get_similar(&p, &unit(4, 0, 0.0), 0.0).await.unwrap().is_none());
        store.insert(&p, &key(5), Some(&unit(4, 0, 0.0)), b"dim4").await.unwrap();
        assert_eq!(store.get_similar(&p, &unit(4, 0, 0.0), 0.9).await.unwrap().unwrap().value, b"dim4");
        assert!(store.get_exact(&key(1)).await.unwrap().is_none());
        assert_eq!(store.stats().unwrap().0, 2);

        // Removing rows (by replacement) keeps the index consistent.
        store.insert(&other, &key(6), Some(&unit(8, 6, 0.0)), b"six").await.unwrap();
        store.insert(&other, &key(4), None, b"four-no-embedding").await.unwrap();
        assert!(store.get_similar(&other, &unit(8, 2, 0.0), 0.5).await.unwrap().is_none());
        assert_eq!(store.get_similar(&other, &unit(8, 6, 0.0), 0.5).await.unwrap().unwrap().value, b"six");
    }

    #[tokio::test]
    async fn entries_expire_after_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), limits(Duration::from_millis(150), 100, 1 << 20)).unwrap();
        store.insert(&key(100), &key(1), Some(&unit(4, 0, 0.0)), b"soon gone").await.unwrap();
        assert!(store.get_exact(&key(1)).await.unwrap().is_some());
        assert!(store.get_similar(&key(100), &unit(4, 0, 0.0), 0.9).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(store.get_similar(&key(100), &unit(4, 0, 0.0), 0.9).await.unwrap().is_none());
        assert!(store.get_exact(&key(1)).await.unwrap().is_none());
        assert_eq!(store.stats(), Some((0, 0)));
        drop(store);
        // Not loaded back either.
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.stats(), Some((0, 0)));
        // A zero TTL stores nothing.
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), limits(Duration::ZERO, 100, 1 << 20)).unwrap();
        store.insert(&key(100), &key(1), None, b"x").await.unwrap();
        assert!(store.get_exact(&key(1)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lru_eviction_by_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 3, 1 << 20)).unwrap();
        let p = key(100);
        for n in 1..=3 {
            store.insert(&p, &key(n), Some(&unit(8, n as usize, 0.0)), b"v").await.unwrap();
        }
        // Using 1 (exact) and 2 (semantic) makes 3 the least recently used.
        assert!(store.get_exact(&key(1)).await.unwrap().is_some());
        assert!(store.get_similar(&p, &unit(8, 2, 0.0), 0.9).await.unwrap().is_some());
        store.insert(&p, &key(4), Some(&unit(8, 4, 0.0)), b"v").await.unwrap();
        assert!(store.get_exact(&key(3)).await.unwrap().is_none());
        assert!(store.get_similar(&p, &unit(8, 3, 0.0), 0.9).await.unwrap().is_none());
        for n in [1, 2, 4] {
            assert!(store.get_exact(&key(n)).await.unwrap().is_some(), "{n}");
        }
        // Now 1 is the oldest use.
        store.insert(&p, &key(5), None, b"v").await.unwrap();
        assert!(store.get_exact(&key(1)).await.unwrap().is_none());
        assert_eq!(store.stats().unwrap().0, 3);
        drop(store);
        // The evictions are in the file too.
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 3, 1 << 20)).unwrap();
        let mut held = vec![];
        for n in 1..=5 {
            if store.get_exact(&key(n)).await.unwrap().is_some() {
                held.push(n);
            }
        }
        assert_eq!(held, [2, 4, 5]);
    }

    #[tokio::test]
    async fn lru_eviction_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // 100 value bytes + 4 dims * 4 bytes = 116 per embedded entry.
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 1000, 300)).unwrap();
        let p = key(100);
        store.insert(&p, &key(1), Some(&unit(4, 0, 0.0)), &[1; 100]).await.unwrap();
        store.insert(&p, &key(2), Some(&unit(4, 1, 0.0)), &[2; 100]).await.unwrap();
        assert_eq!(store.stats(), Some((2, 232)));
        assert!(store.get_exact(&key(1)).await.unwrap().is_some());
        // 232 + 116 > 300: the least recently used (2) goes.
        store.insert(&p, &key(3), Some(&unit(4, 2, 0.0)), &[3; 100]).await.unwrap();
        assert_eq!(store.stats(), Some((2, 232)));
        assert!(store.get_exact(&key(2)).await.unwrap().is_none());
        assert!(store.get_exact(&key(1)).await.unwrap().is_some());
        assert!(store.get_exact(&key(3)).await.unwrap().is_some());
        // A big one pushes out both.
        store.insert(&p, &key(4), None, &[4; 290]).await.unwrap();
        assert_eq!(store.stats(), Some((1, 290)));
        // Larger than max_bytes: not stored, nothing evicted.
        store.insert(&p, &key(5), None, &[5; 301]).await.unwrap();
        store.insert(&p, &key(6), Some(&unit(4, 0, 0.0)), &[6; 290]).await.unwrap();
        assert!(store.get_exact(&key(5)).await.unwrap().is_none());
        assert!(store.get_exact(&key(6)).await.unwrap().is_none());
        assert_eq!(store.stats(), Some((1, 290)));
    }

    #[tokio::test]
    async fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = key(100);
        {
            let store = CacheStore::embedded(dir.path(), big()).unwrap();
            for n in 0..20u32 {
                let emb = (n % 2 == 0).then(|| unit(16, n as usize, 0.0));
                store.insert(&p, &key(n), emb.as_deref(), format!("value {n}").as_bytes()).await.unwrap();
            }
            store.insert(&p, &key(3), None, b"value 3 again").await.unwrap();
        }
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.stats().unwrap().0, 20);
        for n in 0..20u32 {
            let want = if n == 3 { "value 3 again".to_string() } else { format!("value {n}") };
            assert_eq!(store.get_exact(&key(n)).await.unwrap().unwrap().value, want.as_bytes());
        }
        let found = store.get_similar(&p, &unit(16, 6, 0.1), 0.9).await.unwrap().unwrap();
        assert_eq!(found.value, b"value 6");
        assert!(store.get_similar(&p, &unit(16, 7, 0.0), 0.9).await.unwrap().is_none());
        // Smaller limits on reopen keep the most recent entries.
        drop(store);
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 5, 1 << 20)).unwrap();
        assert_eq!(store.stats().unwrap().0, 5);
        assert!(store.get_exact(&key(19)).await.unwrap().is_some());
        assert!(store.get_exact(&key(0)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn torn_trailing_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        {
            let store = CacheStore::embedded(dir.path(), big()).unwrap();
            store.insert(&key(100), &key(1), Some(&unit(8, 1, 0.0)), b"first").await.unwrap();
            store.insert(&key(100), &key(2), Some(&unit(8, 2, 0.0)), b"second").await.unwrap();
        }
        // A kill in the middle of writing the second record.
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        drop(file);
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.get_exact(&key(1)).await.unwrap().unwrap().value, b"first");
        assert!(store.get_exact(&key(2)).await.unwrap().is_none());
        // The store keeps working, and the compaction on load dropped the tail.
        store.insert(&key(100), &key(3), None, b"third").await.unwrap();
        drop(store);

        // Garbage after the last record (a torn length prefix, random bytes).
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0x20, 0, 0]).unwrap();
        drop(file);
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.stats().unwrap().0, 2);
        assert_eq!(store.get_exact(&key(3)).await.unwrap().unwrap().value, b"third");
        drop(store);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        drop(file);
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.stats().unwrap().0, 2);

        // A file that is not ours: an empty cache, not an error.
        drop(store);
        std::fs::write(&path, b"something else entirely").unwrap();
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.stats(), Some((0, 0)));
        assert_eq!(std::fs::read(&path).unwrap(), header());
    }

    /// Keys held after reopening `dir`, among `0..n`.
    async fn held(dir: &Path, n: u32) -> Vec<u32> {
        let store = CacheStore::embedded(dir, big()).unwrap();
        let mut held = vec![];
        for i in 0..n {
            if store.get_exact(&key(i)).await.unwrap().is_some() {
                held.push(i);
            }
        }
        held
    }

    #[tokio::test]
    async fn compaction_keeps_exactly_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 10, 1 << 20)).unwrap();
        let p = key(100);
        // 30 inserts into a cache of 10: 20 evictions, plus replacements.
        for n in 0..30u32 {
            store.insert(&p, &key(n), Some(&unit(8, n as usize, 0.0)), &[n as u8; 50]).await.unwrap();
        }
        for n in 25..30u32 {
            store.insert(&p, &key(n), None, b"replaced").await.unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        let Backend::Embedded(shared) = &store.backend else { panic!("embedded") };
        compact(shared).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        let live = lock(shared).unwrap().log.live;
        let live_len = 5 * insert_record_len(8, 50) + 5 * insert_record_len(0, 8);
        assert_eq!(live, live_len);
        assert_eq!(after, HEADER_LEN + live_len);
        assert!(after < before / 2, "{after} vs {before}");
        assert_eq!(lock(shared).unwrap().log.len, after);
        // Still appends after the swap.
        store.insert(&p, &key(30), None, b"after").await.unwrap();
        drop(store);
        assert_eq!(held(dir.path(), 40).await, (21..=30).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn log_is_compacted_when_it_doubles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 4, 1 << 20)).unwrap();
        let Backend::Embedded(shared) = &store.backend else { panic!("embedded") };
        lock(shared).unwrap().log.compact_min = 0;
        let mut compactions = 0;
        let mut last_len = 0;
        for n in 0..200u32 {
            store.insert(&key(100), &key(n % 6), None, &[n as u8; 100]).await.unwrap();
            // The compaction runs on its own thread: wait for it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while lock(shared).unwrap().log.compacting {
                assert!(Instant::now() < deadline, "compaction did not finish");
                std::thread::sleep(Duration::from_millis(1));
            }
            let len = std::fs::metadata(&path).unwrap().len();
            let st = lock(shared).unwrap();
            assert_eq!(st.log.len, len);
            // Live data is 4 records of 189 bytes.
            assert_eq!(st.log.live, 4.min(u64::from(n) + 1) * insert_record_len(0, 100));
            assert!(len <= 2 * (HEADER_LEN + st.log.live), "log grew to {len} bytes at insert {n}");
            if len < last_len {
                compactions += 1;
            }
            last_len = len;
        }
        assert!(compactions > 10, "{compactions} compactions");
        drop(store);
        // Inserts 196..199 wrote keys 4, 5, 0, 1.
        assert_eq!(held(dir.path(), 6).await, [0, 1, 4, 5]);
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.get_exact(&key(1)).await.unwrap().unwrap().value, vec![199u8; 100]);
    }

    #[tokio::test]
    async fn writes_during_a_compaction_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::embedded(dir.path(), limits(HOUR, 5, 1 << 20)).unwrap();
        for n in 0..5u32 {
            store.insert(&key(100), &key(n), Some(&unit(8, n as usize, 0.0)), b"before").await.unwrap();
        }
        let Backend::Embedded(shared) = &store.backend else { panic!("embedded") };
        // The snapshot is taken...
        let job = {
            let mut st = lock(shared).unwrap();
            st.log.compacting = true;
            st.compact_job(now_ms())
        };
        // ...then, while it is written, 3 inserts (evicting 0, 1, 2) and a replacement.
        for n in 5..8u32 {
            store.insert(&key(100), &key(n), Some(&unit(8, n as usize, 0.0)), b"during").await.unwrap();
        }
        store.insert(&key(100), &key(4), None, b"replaced during").await.unwrap();
        run_compaction(shared, &job).unwrap();
        assert!(!dir.path().join(TMP_FILE).exists());
        store.insert(&key(100), &key(8), None, b"after").await.unwrap();
        drop(store);
        assert_eq!(held(dir.path(), 10).await, [4, 5, 6, 7, 8]);
        let store = CacheStore::embedded(dir.path(), big()).unwrap();
        assert_eq!(store.get_exact(&key(4)).await.unwrap().unwrap().value, b"replaced during");
        assert_eq!(store.get_similar(&key(100), &unit(8, 6, 0.0), 0.9).await.unwrap().unwrap().value, b"during");
        assert!(store.get_similar(&key(100), &unit(8, 4, 0.0), 0.9).await.unwrap().is_none());
    }

    use super::redis_server::RedisServer;

    #[tokio::test]
    async fn redis_store_is_shared_expires_and_caps_partitions() {
        let server = RedisServer::start();
        let lim = limits(Duration::from_millis(1000), 3, 1 << 20);
        let a = CacheStore::redis(&server.url(), "test:cache:", lim).await.unwrap();
        let b = CacheStore::redis(&server.url(), "test:cache:", lim).await.unwrap();
        let other = CacheStore::redis(&server.url(), "other:", lim).await.unwrap();
        assert_eq!(a.stats(), None);
        let p = key(100);

        // Exact tier, across instances.
        assert!(b.get_exact(&key(1)).await.unwrap().is_none());
        a.insert(&p, &key(1), Some(&unit(8, 1, 0.0)), b"one").await.unwrap();
        let found = b.get_exact(&key(1)).await.unwrap().unwrap();
        assert_eq!((found.value.as_slice(), found.tier, found.similarity), (&b"one"[..], Tier::Exact, 1.0));
        assert!(other.get_exact(&key(1)).await.unwrap().is_none(), "prefixes separate stores");

        // Semantic tier, across instances, best match and threshold.
        b.insert(&p, &key(2), Some(&unit(8, 1, 0.3)), b"one-tilted").await.unwrap();
        b.insert(&key(200), &key(3), Some(&unit(8, 5, 0.0)), b"elsewhere").await.unwrap();
        let found = a.get_similar(&p, &unit(8, 1, 0.25), 0.9).await.unwrap().unwrap();
        assert_eq!(found.value, b"one-tilted");
        assert_eq!(found.tier, Tier::Semantic);
        assert!((found.similarity - (0.05f32).cos()).abs() < 1e-5);
        assert!(a.get_similar(&p, &unit(8, 5, 0.0), 0.5).await.unwrap().is_none());
        assert!(a.get_similar(&p, &unit(8, 1, 1.0), 0.9).await.unwrap().is_none());
        assert!(a.get_similar(&p, &unit(4, 1, 0.0), 0.0).await.unwrap().is_none(), "other dimension");

        // An entry gone from under its field: the field is dropped, the next best found.
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let pkey = format!("test:cache:p:{}", hex::encode(p));
        let _: i64 = redis::cmd("DEL")
            .arg(format!("test:cache:e:{}", hex::encode(key(2))))
            .query_async(&mut conn)
            .await
            .unwrap();
        let found = a.get_similar(&p, &unit(8, 1, 0.25), 0.9).await.unwrap().unwrap();
        assert_eq!(found.value, b"one");
        let fields: i64 = redis::cmd("HLEN").arg(&pkey).query_async(&mut conn).await.unwrap();
        assert_eq!(fields, 1);

        // The partition cap: never more than 3 fields, the newest kept.
        for n in 10..20u32 {
            a.insert(&p, &key(n), Some(&unit(8, n as usize, 0.0)), b"capped").await.unwrap();
            let fields: i64 = redis::cmd("HLEN").arg(&pkey).query_async(&mut conn).await.unwrap();
            assert!(fields <= 3, "{fields} fields after inserting {n}");
            let newest: bool =
                redis::cmd("HEXISTS").arg(&pkey).arg(hex::encode(key(n))).query_async(&mut conn).await.unwrap();
            assert!(newest, "the field just inserted ({n}) was dropped");
        }
        let pttl: i64 = redis::cmd("PTTL").arg(&pkey).query_async(&mut conn).await.unwrap();
        assert!(pttl > 0 && pttl <= 1000, "{pttl}");

        // TTL: gone from both instances.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(b.get_exact(&key(1)).await.unwrap().is_none());
        assert!(a.get_exact(&key(19)).await.unwrap().is_none());
        assert!(b.get_similar(&p, &unit(8, 19, 0.0), 0.5).await.unwrap().is_none());

        // Too big: not stored.
        let small = CacheStore::redis(&server.url(), "test:cache:", limits(HOUR, 3, 10)).await.unwrap();
        small.insert(&p, &key(50), None, &[0; 11]).await.unwrap();
        assert!(small.get_exact(&key(50)).await.unwrap().is_none());
        drop(server);
    }

    #[tokio::test]
    async fn redis_errors_are_clear() {
        let err = CacheStore::redis("not a url", "x:", big()).await.err().unwrap();
        assert!(err.to_string().contains("invalid redis url"), "{err}");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = CacheStore::redis(&format!("redis://127.0.0.1:{port}/"), "x:", big()).await.err().unwrap();
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
