//! [`AuditWriter`]: appends chained records to the segments, from any number
//! of tasks at once.
//!
//! # Concurrency: one writer thread, group commit
//!
//! [`AuditWriter::open`] recovers the log's head and starts one dedicated OS
//! thread that owns the open segment. Handles ([`AuditWriter`] is `Clone`)
//! send records over a bounded channel, each with a oneshot for the answer.
//! The thread takes every record already queued (up to [`MAX_BATCH`]),
//! numbers and chains them in arrival order, writes them with one `write`,
//! fsyncs once per the [`FsyncPolicy`], and only then answers each sender
//! with its `seq`. So:
//!
//! - `seq` and `prev` are assigned in exactly one place: no lock, no races,
//!   contiguous under any number of concurrent tasks;
//! - with [`FsyncPolicy::Every`], `append(..).await` returning `Ok(seq)` means
//!   the record is on stable storage, and concurrent requests share fsyncs;
//! - blocking file I/O never runs on a tokio worker, and a full queue makes
//!   `append` wait (backpressure) rather than grow memory;
//! - a caller that stops waiting (request cancelled) does not lose its
//!   record once it has been queued.
//!
//! The thread ends, after a final fsync, when the last handle is dropped.
//!
//! # Failures
//!
//! A failed write (disk full, I/O error) is rolled back by truncating the
//! segment to its last complete record; the records of that write get an
//! [`AuditError::Io`] naming the segment, their seqs are reused, and later
//! appends are tried again. If the rollback or an fsync fails, the segment's
//! state is unknown and the writer answers every later append with
//! [`AuditError::Poisoned`]; reopening recovers (a torn last line is cut
//! away, see [`TornTail`]).

use super::{
    line_hashes, list_segments, parse_line, rfc3339_millis, seal, segment_name, split_lines, AuditError, AuditRecord,
    GENESIS_PREV,
};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// Most records written (and fsynced) together.
pub const MAX_BATCH: usize = 1024;

/// Records that may wait in the queue before `append` waits for room.
const QUEUE: usize = 4096;

/// When the writer makes written records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging (shared by all records written together).
    Every,
    /// Acknowledge once written to the OS; fsync at most this many ms later.
    /// A crash of the machine (not just the process) can lose that window.
    IntervalMs(u64),
    /// Leave it to the OS.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// `every` (also `always`, `batch`: records written together share one
    /// fsync), `never` (also `off`), or a duration such as `100ms` / `1s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "every" | "always" | "batch" => Ok(FsyncPolicy::Every),
            "never" | "off" => Ok(FsyncPolicy::Never),
            other => match humantime::parse_duration(other) {
                Ok(d) => Ok(FsyncPolicy::IntervalMs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
                Err(_) => Err(format!("invalid fsync policy {other:?}: expected every, batch, never or a duration")),
            },
        }
    }
}

/// How the writer rotates and syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// A new segment starts before a record would make the current one larger than this.
    pub max_segment_bytes: u64,
    /// A new segment starts when the current one is older than this (checked on append).
    pub max_segment_age: Duration,
    pub fsync: FsyncPolicy,
}

impl Default for AuditOptions {
    /// 64 MiB or one day per segment, fsync before every acknowledgement.
    fn default() -> Self {
        AuditOptions {
            max_segment_bytes: 64 * 1024 * 1024,
            max_segment_age: Duration::from_secs(86_400),
            fsync: FsyncPolicy::Every,
        }
    }
}

/// A partial last line (left by a crash mid-write) that opening cut away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the segment now ends.
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes: u64,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "removed a torn last line ({} bytes at offset {}) from {}: a record interrupted by a crash",
            self.bytes,
            self.offset,
            self.segment.display()
        )
    }
}

enum Msg {
    Append { record: Box<AuditRecord>, ack: oneshot::Sender<Result<u64, AuditError>> },
    Sync { ack: oneshot::Sender<Result<(), AuditError>> },
    Tick,
}

/// A handle on the audit log's writer thread. Cheap to clone; the thread
/// stops after the last clone is dropped.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    dir: Arc<PathBuf>,
    torn_tail: Option<Arc<TornTail>>,
}

impl fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditWriter").field("dir", &self.dir).field("torn_tail", &self.torn_tail).finish()
    }
}

impl AuditWriter {
    /// Opens (creating it if needed) the log in `dir`, continues its chain and
    /// starts the writer thread.
    ///
    /// A torn last line is truncated away, logged with `tracing::warn!` and
    /// reported by [`AuditWriter::torn_tail`]. A last complete record that does
    /// not verify is an [`AuditError::Corrupt`]: the writer never chains onto
    /// garbage. Directory or file problems are an [`AuditError::Io`] naming the path.
    pub fn open(dir: impl AsRef<Path>, options: AuditOptions) -> Result<Self, AuditError> {
        let dir = dir.as_ref().to_path_buf();
        let (state, torn_tail) = State::recover(dir.clone(), options.clone())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("tollgate-audit".into())
            .spawn(move || state.run(rx))
            .map_err(|e| AuditError::io("start the writer thread for", &dir, e))?;
        if let FsyncPolicy::IntervalMs(ms) = options.fsync {
            if ms > 0 {
                start_ticker(&tx, Duration::from_millis(ms), &dir)?;
            }
        }
        if let Some(torn) = &torn_tail {
            tracing::warn!(segment = %torn.segment.display(), bytes = torn.bytes, "audit log: {torn}");
        }
        Ok(AuditWriter { tx, dir: Arc::new(dir), torn_tail: torn_tail.map(Arc::new) })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The torn line [`AuditWriter::open`] removed, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_deref()
    }

    /// Appends `record` and returns its `seq` once it is written (and
    /// fsynced, per the policy). `seq`, `prev` and `hash` are overwritten; an
    /// empty `time` is stamped now.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (ack, answer) = oneshot::channel();
        self.tx.send(Msg::Append { record: Box::new(record), ack }).await.map_err(|_| self.closed())?;
        answer.await.map_err(|_| self.closed())?
    }

    /// [`AuditWriter::append`] for synchronous code. Must not be called from
    /// an async context (it blocks the thread).
    pub fn append_blocking(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (ack, answer) = oneshot::channel();
        self.tx.blocking_send(Msg::Append { record: Box::new(record), ack }).map_err(|_| self.closed())?;
        answer.blocking_recv().map_err(|_| self.closed())?
    }

    /// fsyncs everything appended so far (for [`FsyncPolicy::IntervalMs`] and
    /// [`FsyncPolicy::Never`], e.g. on shutdown).
    pub async fn sync(&self) -> Result<(), AuditError> {
        let (ack, answer) = oneshot::channel();
        self.tx.send(Msg::Sync { ack }).await.map_err(|_| self.closed())?;
        answer.await.map_err(|_| self.closed())?
    }

    fn closed(&self) -> AuditError {
        AuditError::Closed { dir: self.dir.as_ref().clone() }
    }
}

/// Wakes the writer every `every` so interval fsyncs happen when idle too.
/// Holds only a weak sender, so it ends with the writer.
fn start_ticker(tx: &mpsc::Sender<Msg>, every: Duration, dir: &Path) -> Result<(), AuditError> {
    let weak = tx.downgrade();
    std::thread::Builder::new()
        .name("tollgate-audit-tick".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match weak.upgrade() {
                Some(tx) => {
                    // A full queue means the writer is busy and will sync on its own.
                    let _ = tx.try_send(Msg::Tick);
                }
                None => break,
            }
        })
        .map(|_| ())
        .map_err(|e| AuditError::io("start the fsync timer for", dir, e))
}

/// The segment being appended to.
struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes of complete, committed records.
    bytes: u64,
    /// Age origin for rotation.
    started: SystemTime,
}

/// The writer thread's state.
struct State {
    dir: PathBuf,
    options: AuditOptions,
    segment: Segment,
    /// Head after the records queued in the current batch.
    next_seq: u64,
    prev: String,
    /// Head after the last committed write (for rollback).
    committed_seq: u64,
    committed_prev: String,
    /// Written since the last fsync.
    dirty: bool,
    last_sync: Instant,
    poisoned: Option<String>,
}

impl State {
    /// Finds the log's head in `dir` (creating the directory and the first
    /// segment when needed) and opens the last segment for appending.
    fn recover(dir: PathBuf, options: AuditOptions) -> Result<(State, Option<TornTail>), AuditError> {
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io("create directory", &dir, e))?;
        let segments = list_segments(&dir)?;
        let durable = options.fsync != FsyncPolicy::Never;
        let Some((last_first, last_path)) = segments.last().cloned() else {
            let segment = create_segment(&dir, 1, durable)?;
            return Ok((State::new(dir, options, segment, 1, GENESIS_PREV.to_string()), None));
        };

        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&last_path)
            .map_err(|e| AuditError::io("open segment", &last_path, e))?;
        // Read only what the file holds now (a device would never end).
        let len = file.metadata().map_err(|e| AuditError::io("read segment", &last_path, e))?.len();
        let mut bytes = Vec::new();
        (&mut file).take(len).read_to_end(&mut bytes).map_err(|e| AuditError::io("read segment", &last_path, e))?;
        let (lines, rest) = split_lines(&bytes);
        let complete = (bytes.len() - rest.len()) as u64;
        let torn_tail = if rest.is_empty() {
            None
        } else {
            file.set_len(complete).map_err(|e| AuditError::io("truncate the torn last line of", &last_path, e))?;
            if durable {
                file.sync_all().map_err(|e| AuditError::io("sync", &last_path, e))?;
            }
            Some(TornTail { segment: last_path.clone(), offset: complete, bytes: rest.len() as u64 })
        };

        let (next_seq, prev, started) = match lines.last() {
            Some(line) => {
                let record = checked_record(&last_path, lines.len(), line)?;
                if record.seq < last_first {
                    return Err(AuditError::Corrupt {
                        path: last_path,
                        line: lines.len(),
                        reason: format!("seq {} is below the segment's first seq {last_first}", record.seq),
                    });
                }
                let started = lines
                    .first()
                    .and_then(|l| parse_line(l).ok())
                    .and_then(|r| r.timestamp())
                    .unwrap_or_else(SystemTime::now);
                (record.seq.saturating_add(1), record.hash, started)
            }
            None => {
                // An empty segment (created just before a crash): the head is
                // the last record of an earlier segment.
                let prev = previous_head(&segments[..segments.len() - 1], last_first, &last_path)?;
                (last_first, prev, SystemTime::now())
            }
        };
        let segment = Segment { path: last_path, file, bytes: complete, started };
        Ok((State::new(dir, options, segment, next_seq, prev), torn_tail))
    }

    fn new(dir: PathBuf, options: AuditOptions, segment: Segment, next_seq: u64, prev: String) -> Self {
        State {
            dir,
            options,
            segment,
            next_seq,
            committed_seq: next_seq,
            committed_prev: prev.clone(),
            prev,
            dirty: false,
            last_sync: Instant::now(),
            poisoned: None,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            self.handle(batch);
        }
        if self.dirty && self.poisoned.is_none() {
            if let Err(e) = self.sync_now() {
                tracing::error!("audit log: final sync failed: {e}");
            }
        }
    }

    fn handle(&mut self, batch: Vec<Msg>) {
        let mut buf = Vec::new();
        let mut pending = Vec::new();
        let mut syncs = Vec::new();
        for msg in batch {
            match msg {
                Msg::Append { record, ack } => self.queue(*record, ack, &mut buf, &mut pending),
                Msg::Sync { ack } => syncs.push(ack),
                // Only wakes the thread for the interval check below.
                Msg::Tick => {}
            }
        }
        self.commit(&mut buf, &mut pending);

        if !syncs.is_empty() {
            let result = match &self.poisoned {
                Some(reason) => Err(self.poison_error(reason)),
                None if self.dirty => self.sync_now(),
                None => Ok(()),
            };
            for ack in syncs {
                let _ = ack.send(result.as_ref().map(|_| ()).map_err(duplicate));
            }
        }
        if let FsyncPolicy::IntervalMs(ms) = self.options.fsync {
            let due = self.last_sync.elapsed() >= Duration::from_millis(ms);
            if self.dirty && self.poisoned.is_none() && due {
                if let Err(e) = self.sync_now() {
                    tracing::error!("audit log: {e}");
                }
            }
        }
    }

    /// Numbers, chains and serialises one record into `buf`, rotating first if needed.
    fn queue(
        &mut self,
        mut record: AuditRecord,
        ack: oneshot::Sender<Result<u64, AuditError>>,
        buf: &mut Vec<u8>,
        pending: &mut Vec<(oneshot::Sender<Result<u64, AuditError>>, u64)>,
    ) {
        if let Some(reason) = &self.poisoned {
            let _ = ack.send(Err(self.poison_error(reason)));
            return;
        }
        if record.time.is_empty() {
            record.time = rfc3339_millis(SystemTime::now());
        }
        record.seq = self.next_seq;
        record.prev = self.prev.clone();
        let line = match seal(&mut record) {
            Ok(line) => line,
            Err(e) => {
                let _ = ack.send(Err(e));
                return;
            }
        };
        let size = self.segment.bytes + buf.len() as u64;
        let added = line.len() as u64 + 1;
        let too_big = size + added > self.options.max_segment_bytes;
        let too_old =
            SystemTime::now().duration_since(self.segment.started).unwrap_or_default() >= self.options.max_segment_age;
        if size > 0 && (too_big || too_old) {
            self.commit(buf, pending);
            if let Some(reason) = &self.poisoned {
                let _ = ack.send(Err(self.poison_error(reason)));
                return;
            }
            if let Err(e) = self.rotate() {
                let _ = ack.send(Err(e));
                return;
            }
            // The rollback in `commit` may have moved the head back: chain again.
            record.seq = self.next_seq;
            record.prev = self.prev.clone();
            record.hash.clear();
            return self.queue(record, ack, buf, pending);
        }
        buf.extend_from_slice(&line);
        buf.push(b'\n');
        self.next_seq += 1;
        self.prev = record.hash;
        pending.push((ack, record.seq));
    }

    /// Writes `buf` to the segment, syncs per policy and answers `pending`.
    fn commit(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<(oneshot::Sender<Result<u64, AuditError>>, u64)>) {
        if buf.is_empty() {
            return;
        }
        let written = self.segment.file.write_all(buf);
        let result = match written {
            Ok(()) => {
                self.segment.bytes += buf.len() as u64;
                self.dirty = true;
                let synced = if self.options.fsync == FsyncPolicy::Every { self.sync_now() } else { Ok(()) };
                match synced {
                    Ok(()) => {
                        self.committed_seq = self.next_seq;
                        self.committed_prev = self.prev.clone();
                        Ok(())
                    }
                    Err(e) => {
                        // After a failed fsync the file's durable content is unknown.
                        self.poisoned = Some(e.to_string());
                        Err(e)
                    }
                }
            }
            Err(e) => {
                let err = AuditError::io("write", &self.segment.path, e);
                if let Err(trunc) = self.segment.file.set_len(self.segment.bytes) {
                    self.poisoned = Some(format!("{err}; then cannot truncate the partial write: {trunc}"));
                }
                self.next_seq = self.committed_seq;
                self.prev = self.committed_prev.clone();
                Err(err)
            }
        };
        for (ack, seq) in pending.drain(..) {
            let _ = ack.send(result.as_ref().map(|_| seq).map_err(duplicate));
        }
        buf.clear();
    }

    /// Closes the current segment (durably) and starts the next at `next_seq`.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let durable = self.options.fsync != FsyncPolicy::Never;
        if durable && self.dirty {
            self.sync_now()?;
        }
        self.segment = create_segment(&self.dir, self.next_seq, durable)?;
        self.dirty = false;
        Ok(())
    }

    fn sync_now(&mut self) -> Result<(), AuditError> {
        self.segment.file.sync_data().map_err(|e| AuditError::io("sync", &self.segment.path, e))?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn poison_error(&self, reason: &str) -> AuditError {
        AuditError::Poisoned { path: self.segment.path.clone(), reason: reason.to_string() }
    }
}

/// Creates the segment starting at `first_seq`.
fn create_segment(dir: &Path, first_seq: u64, durable: bool) -> Result<Segment, AuditError> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| AuditError::io("create segment", &path, e))?;
    if durable {
        // Make the new name itself durable.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| AuditError::io("sync directory", dir, e))?;
    }
    Ok(Segment { path, file, bytes: 0, started: SystemTime::now() })
}

/// Parses the record on `line` (1-based `line_no`) and checks its own hash.
fn checked_record(path: &Path, line_no: usize, line: &[u8]) -> Result<AuditRecord, AuditError> {
    let corrupt = |reason: String| AuditError::Corrupt { path: path.to_path_buf(), line: line_no, reason };
    let (stored, computed) = line_hashes(line).map_err(&corrupt)?;
    if stored != computed {
        return Err(corrupt(format!("hash mismatch: stored {stored}, computed {computed}")));
    }
    parse_line(line).map_err(corrupt)
}

/// `prev` for a segment starting at `first_seq` with no records yet: the
/// hash of the last record in the earlier segments.
fn previous_head(earlier: &[(u64, PathBuf)], first_seq: u64, path: &Path) -> Result<String, AuditError> {
    for (_, seg) in earlier.iter().rev() {
        let bytes = std::fs::read(seg).map_err(|e| AuditError::io("read segment", seg, e))?;
        let (lines, rest) = split_lines(&bytes);
        if !rest.is_empty() {
            return Err(AuditError::Corrupt {
                path: seg.clone(),
                line: lines.len() + 1,
                reason: "torn line in a segment that is not the last".to_string(),
            });
        }
        if let Some(line) = lines.last() {
            let record = checked_record(seg, lines.len(), line)?;
            if record.seq.checked_add(1) != Some(first_seq) {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    line: 0,
                    reason: format!(
                        "empty segment starts at seq {first_seq} but the previous record is {}",
                        record.seq
                    ),
                });
            }
            return Ok(record.hash);
        }
    }
    if first_seq == 1 {
        Ok(GENESIS_PREV.to_string())
    } else {
        Err(AuditError::Corrupt {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("empty segment starts at seq {first_seq} but no earlier record exists"),
        })
    }
}

/// A copy of `e` for the other records of a failed write.
fn duplicate(e: &AuditError) -> AuditError {
    match e {
        AuditError::Io { action, path, source } => {
            AuditError::Io { action, path: path.clone(), source: io::Error::new(source.kind(), source.to_string()) }
        }
        AuditError::Corrupt { path, line, reason } => {
            AuditError::Corrupt { path: path.clone(), line: *line, reason: reason.clone() }
        }
        AuditError::Poisoned { path, reason } => AuditError::Poisoned { path: path.clone(), reason: reason.clone() },
        AuditError::Closed { dir } => AuditError::Closed { dir: dir.clone() },
        AuditError::Serialize(inner) => {
            AuditError::Poisoned { path: PathBuf::new(), reason: format!("serialisation failed: {inner}") }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses() {
        assert_eq!("every".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Every));
        assert_eq!("batch".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Every));
        assert_eq!("never".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Never));
        assert_eq!("250ms".parse::<FsyncPolicy>(), Ok(FsyncPolicy::IntervalMs(250)));
        assert_eq!("1s".parse::<FsyncPolicy>(), Ok(FsyncPolicy::IntervalMs(1000)));
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn blocking_append_outside_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap();
        assert_eq!(writer.append_blocking(AuditRecord::default()).unwrap(), 1);
        assert_eq!(writer.append_blocking(AuditRecord::default()).unwrap(), 2);
        drop(writer);
        let bytes = std::fs::read(dir.path().join(segment_name(1))).unwrap();
        let (lines, rest) = split_lines(&bytes);
        assert_eq!(lines.len(), 2);
        assert!(rest.is_empty());
        let first = parse_line(lines[0]).unwrap();
        assert!(!first.time.is_empty());
        assert_eq!(first.prev, GENESIS_PREV);
        assert_eq!(parse_line(lines[1]).unwrap().prev, first.hash);
    }

    #[test]
    fn empty_last_segment_continues_from_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap();
        writer.append_blocking(AuditRecord::default()).unwrap();
        drop(writer);
        // A crash right after rotation leaves an empty segment behind.
        std::fs::write(dir.path().join(segment_name(2)), b"").unwrap();
        let writer = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap();
        assert_eq!(writer.append_blocking(AuditRecord::default()).unwrap(), 2);
        drop(writer);
        let report = crate::audit::verify(dir.path()).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 2);
    }

    #[test]
    fn empty_segment_after_a_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(5)), b"").unwrap();
        let err = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn interval_policy_syncs_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let options = AuditOptions { fsync: FsyncPolicy::IntervalMs(10), ..AuditOptions::default() };
        let writer = AuditWriter::open(dir.path(), options).unwrap();
        assert_eq!(writer.append_blocking(AuditRecord::default()).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(writer.append_blocking(AuditRecord::default()).unwrap(), 2);
    }
}
