//! The audit log: one tamper-evident JSON line per request, durable on disk.
//!
//! # Layout
//!
//! The log lives in one directory as append-only JSONL segments named
//! `audit-<seq of the segment's first record, 20 digits>.jsonl`, so sorting
//! the names sorts the segments. A new segment starts when the current one
//! would grow past [`AuditOptions::max_segment_bytes`] or is older than
//! [`AuditOptions::max_segment_age`]. Every line is one [`AuditRecord`]
//! ending in `\n`.
//!
//! # The chain
//!
//! The writer numbers records with a global `seq` (1, 2, 3, … across
//! segments) and links each one to its predecessor:
//!
//! - `prev` is the previous record's `hash` (64 zeros for seq 1);
//! - `hash` is the lowercase hex SHA-256 of the record's **canonical line**.
//!
//! The canonical line is `serde_json::to_string` of the record with `hash`
//! set to the empty string, fields in declaration order, no trailing newline.
//! `hash` is the last field, so the canonical line ends in `,"hash":""}` and
//! the stored line is exactly the canonical line with the 64 hex digits
//! written between those two quotes. A verifier therefore needs no JSON
//! re-serialisation: it removes the 64 digits from the stored bytes and
//! hashes what is left, e.g. in Python
//! `hashlib.sha256(line[:-66] + b'"}').hexdigest() == line[-66:-2].decode()`
//! (for a line without its `\n`).
//!
//! Editing, deleting, reordering or inserting a line, or deleting a segment,
//! breaks a hash, a `prev` link or the `seq` sequence, which [`verify()`]
//! reports with the segment, line and seq of the first bad record. Someone
//! who can rewrite the files can also recompute every later hash; anchor the
//! chain by keeping [`VerifyReport::last_hash`] somewhere else.
//!
//! # Modules
//!
//! - [`writer`]: [`AuditWriter`], the concurrent, crash-safe appender;
//! - [`verify`](mod@verify): [`verify()`], the chain checker;
//! - [`query`](mod@query): [`query()`], [`tail()`] and [`records()`] for reading it back.

pub mod inflight;
pub mod query;
pub mod verify;
pub mod writer;

pub use query::{query, records, tail, Filter, Records};
pub use verify::{verify, Broken, Problem, VerifyReport};
pub use writer::{AuditOptions, AuditWriter, FsyncPolicy, TornTail};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `prev` of the first record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// File name prefix and suffix of a segment.
const SEGMENT_PREFIX: &str = "audit-";
const SEGMENT_SUFFIX: &str = ".jsonl";

/// The stored line's ending after the hash digits: `"}`.
const LINE_END: &[u8] = b"\"}";
/// What precedes the hash digits: `,"hash":"`.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Length of a hex SHA-256.
const HASH_HEX_LEN: usize = 64;

/// One request, as the audit log keeps it (JSON, camelCase).
///
/// The request path fills everything but `seq`, `prev` and `hash`, which
/// [`AuditWriter::append`] overwrites. An empty `time` is stamped with the
/// time of writing. Field order is part of the canonical form: do not
/// reorder fields, and keep `hash` last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the log, global across segments, starting at 1 (set by the writer).
    pub seq: u64,
    /// When the request started, RFC 3339 UTC with milliseconds (see [`rfc3339_millis`]).
    pub time: String,
    /// The request id the gateway gave the request (`x-tollgate-request-id`).
    pub request_id: String,
    /// The id the client sent as `x-request-id`, kept apart: clients cannot
    /// choose, spoof or repeat the gateway's ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// The consumer (virtual key owner) the request was identified as.
    pub consumer: String,
    /// The consumer's team.
    pub team: String,
    /// The API called, e.g. `openai.chat`, `anthropic.messages`.
    pub api: String,
    /// The model the client asked for.
    pub requested_model: String,
    /// The model actually called, after routing.
    pub model: String,
    /// The provider that answered.
    pub provider: String,
    /// Upstream attempts (retries and fallbacks included).
    pub attempts: u32,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Whole-request latency in milliseconds.
    pub latency_ms: u64,
    /// Time to first token (streaming), in milliseconds.
    pub ttft_ms: Option<u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
    /// Cache outcome, e.g. `hit`, `semantic-hit`, `miss`; `None` when the cache was not consulted.
    pub cache: Option<String>,
    /// Free-form policy decisions (firewall score, PII findings, limit checks, ...).
    pub decisions: serde_json::Value,
    /// Prompt text as the audit policy allows (`none` → `None`, `masked`, `full`).
    pub prompt: Option<String>,
    /// Response text as the audit policy allows.
    pub response: Option<String>,
    /// Hash of the previous record (set by the writer).
    pub prev: String,
    /// Hash of this record's canonical line (set by the writer). Must stay the last field.
    pub hash: String,
}

impl AuditRecord {
    /// The record's time, if it parses as RFC 3339.
    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.time).ok()
    }
}

/// `2026-11-23T10:15:02.123Z`: the format of [`AuditRecord::time`].
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O operation failed; `action` says what was being done (`create directory`, `write`, ...).
    #[error("audit log: cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    /// The log on disk is not what the writer left there; run `verify`.
    #[error("audit log {path} line {line} is corrupt: {reason} (run the audit verifier)")]
    Corrupt { path: PathBuf, line: usize, reason: String },
    /// A record could not be serialised.
    #[error("audit record cannot be serialised: {0}")]
    Serialize(#[from] serde_json::Error),
    /// An earlier failure left the segment in an unknown state; the writer refuses further records.
    #[error("audit log {path} is unusable after an earlier failure: {reason}")]
    Poisoned { path: PathBuf, reason: String },
    /// The writer's thread has stopped.
    #[error("audit writer for {dir} has stopped")]
    Closed { dir: PathBuf },
}

impl AuditError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        AuditError::Io { action, path: path.to_path_buf(), source }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serialises `record` (with any `hash`) into its stored line, without the
/// `\n`, and returns it with its hash. `record.hash` is left set.
fn seal(record: &mut AuditRecord) -> Result<Vec<u8>, AuditError> {
    record.hash.clear();
    let mut canonical = serde_json::to_vec(record)?;
    let hash = sha256_hex(&canonical);
    // The canonical line ends in `"hash":""}`: put the digits between the quotes.
    let end = canonical.len().saturating_sub(LINE_END.len());
    canonical.truncate(end);
    canonical.extend_from_slice(hash.as_bytes());
    canonical.extend_from_slice(LINE_END);
    record.hash = hash;
    Ok(canonical)
}

/// The hash stored in a line (without `\n`) and the hash recomputed from its
/// canonical bytes, or why the line does not have the stored shape.
fn line_hashes(line: &[u8]) -> Result<(String, String), String> {
    let tail = HASH_KEY.len() + HASH_HEX_LEN + LINE_END.len();
    if line.len() < tail || !line.ends_with(LINE_END) {
        return Err("line does not end with the hash field".to_string());
    }
    let digits_at = line.len() - LINE_END.len() - HASH_HEX_LEN;
    if &line[digits_at - HASH_KEY.len()..digits_at] != HASH_KEY {
        return Err("line does not end with the hash field".to_string());
    }
    let stored = &line[digits_at..digits_at + HASH_HEX_LEN];
    if !stored.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return Err("hash field is not 64 lowercase hex digits".to_string());
    }
    let mut hasher = Sha256::new();
    hasher.update(&line[..digits_at]);
    hasher.update(LINE_END);
    let computed = hex::encode(hasher.finalize());
    Ok((String::from_utf8_lossy(stored).into_owned(), computed))
}

/// Parses one stored line (without `\n`).
fn parse_line(line: &[u8]) -> Result<AuditRecord, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

/// File name of the segment whose first record is `first_seq`.
fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first seq encoded in a segment file name.
fn segment_first_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first, with their first seq.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let entries = std::fs::read_dir(dir).map_err(|e| AuditError::io("read directory", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("read directory", dir, e))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(segment_first_seq) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Splits a segment's bytes into complete lines (without `\n`) and the torn
/// rest after the last `\n` (empty when the segment ends cleanly).
fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (body, rest) = bytes.split_at(complete);
    let lines = if body.is_empty() { Vec::new() } else { body[..body.len() - 1].split(|&b| b == b'\n').collect() };
    (lines, rest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sealed_line_hash_matches_canonical_form() {
        let mut rec = AuditRecord {
            seq: 7,
            time: "2026-01-02T03:04:05.678Z".into(),
            cost_usd: 0.000123,
            decisions: serde_json::json!({"firewall": {"score": 0.2}, "pii": ["EMAIL_ADDRESS"]}),
            prompt: Some("say \"hi\"\n".into()),
            prev: GENESIS_PREV.into(),
            ..Default::default()
        };
        let line = seal(&mut rec).unwrap();
        let mut canonical_rec = rec.clone();
        canonical_rec.hash.clear();
        let canonical = serde_json::to_vec(&canonical_rec).unwrap();
        assert!(canonical.ends_with(b",\"hash\":\"\"}"));
        assert_eq!(rec.hash, sha256_hex(&canonical));
        let (stored, computed) = line_hashes(&line).unwrap();
        assert_eq!(stored, rec.hash);
        assert_eq!(computed, rec.hash);
        assert_eq!(parse_line(&line).unwrap(), rec);
        assert!(!line.contains(&b'\n'));
    }

    #[test]
    fn edited_line_changes_hash() {
        let mut rec = AuditRecord { input_tokens: 10, prev: GENESIS_PREV.into(), ..Default::default() };
        let line = String::from_utf8(seal(&mut rec).unwrap()).unwrap();
        let edited = line.replace("\"inputTokens\":10", "\"inputTokens\":11");
        let (stored, computed) = line_hashes(edited.as_bytes()).unwrap();
        assert_ne!(stored, computed);
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(line_hashes(b"").is_err());
        assert!(line_hashes(b"{\"a\":1}").is_err());
        let upper = format!("{{\"prev\":\"\",\"hash\":\"{}\"}}", "A".repeat(64));
        assert!(line_hashes(upper.as_bytes()).is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "audit-00000000000000000001.jsonl");
        assert_eq!(segment_first_seq(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(segment_first_seq("audit-1.jsonl"), None);
        assert_eq!(segment_first_seq("audit-0000000000000000000x.jsonl"), None);
    }

    #[test]
    fn split_lines_separates_torn_tail() {
        assert_eq!(split_lines(b""), (vec![], &b""[..]));
        assert_eq!(split_lines(b"a\nb\n"), (vec![&b"a"[..], &b"b"[..]], &b""[..]));
        assert_eq!(split_lines(b"a\nb\n{\"se"), (vec![&b"a"[..], &b"b"[..]], &b"{\"se"[..]));
        assert_eq!(split_lines(b"{\"se"), (vec![], &b"{\"se"[..]));
    }

    #[test]
    fn time_format_has_millis() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_767_225_600_123);
        let s = rfc3339_millis(t);
        assert_eq!(s, "2026-01-01T00:00:00.123Z");
        let rec = AuditRecord { time: s, ..Default::default() };
        assert_eq!(rec.timestamp(), Some(t));
    }
}
