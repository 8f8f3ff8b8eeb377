//! [`verify()`]: checks the whole chain, segment by segment.
//!
//! For every line, in segment order: the line has the stored shape and
//! parses, its hash matches its canonical bytes, its `seq` is the previous
//! one plus 1 (the first is 1), its `prev` is the previous record's hash, and
//! the first record of a segment carries the seq in the segment's name. The
//! first failure is reported with the segment, 1-based line and seq; records
//! after it are not examined. A partial last line in the last segment (a crash
//! mid-write, cut away when the writer next opens) is reported as
//! [`VerifyReport::torn_tail`], not as a break.
//!
//! A log whose oldest segments were removed (retention) no longer starts at
//! seq 1 and is reported as a [`Problem::MissingSeq`] at its first record.

use super::{line_hashes, list_segments, parse_line, split_lines, AuditError, TornTail, GENESIS_PREV};
use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with the first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The line is not a stored record (bad JSON, hash field missing or malformed, torn).
    Unreadable { reason: String },
    /// The record was edited: its hash does not match its content.
    HashMismatch { stored: String, computed: String },
    /// The record does not link to the one before it.
    BrokenLink { expected_prev: String, found_prev: String },
    /// Records are missing: `expected` does not appear where it should (deleted line or segment).
    MissingSeq { expected: u64, found: u64 },
    /// Records are out of order or repeated.
    OutOfOrder { expected: u64, found: u64 },
    /// The segment's name does not match the seq of its first record.
    SegmentName { named: u64, first_seq: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { reason } => write!(f, "unreadable line: {reason}"),
            Problem::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch (record edited): stored {stored}, computed {computed}")
            }
            Problem::BrokenLink { expected_prev, found_prev } => {
                write!(f, "broken link: prev is {found_prev}, the previous record's hash is {expected_prev}")
            }
            Problem::MissingSeq { expected, found } => {
                write!(f, "missing seq: expected {expected}, found {found} (records deleted)")
            }
            Problem::OutOfOrder { expected, found } => {
                write!(f, "out of order: expected seq {expected}, found {found} (records reordered or repeated)")
            }
            Problem::SegmentName { named, first_seq } => {
                write!(f, "segment is named for seq {named} but starts at seq {first_seq}")
            }
        }
    }
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub segment: PathBuf,
    /// 1-based line in `segment`.
    pub line: usize,
    /// The record's seq, when the line could be read.
    pub seq: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.segment.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What [`verify()`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments in the directory.
    pub segments: usize,
    /// Records verified good (all of them when [`VerifyReport::is_ok`]; those before the break otherwise).
    pub records: u64,
    /// Seq of the last good record (0 when there is none).
    pub last_seq: u64,
    /// Hash of the last good record ([`GENESIS_PREV`] when there is none): keep it elsewhere to anchor the chain.
    pub last_hash: String,
    /// A partial last line in the last segment (harmless; the writer removes it on open).
    pub torn_tail: Option<TornTail>,
    /// The first bad record, if any.
    pub broken: Option<Broken>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            None => write!(
                f,
                "ok: {} records in {} segments, last seq {}, last hash {}",
                self.records, self.segments, self.last_seq, self.last_hash
            )?,
            Some(broken) => write!(f, "broken at {broken}; {} records verified before it", self.records)?,
        }
        if let Some(torn) = &self.torn_tail {
            write!(
                f,
                "; torn last line: {} bytes at offset {} of {}",
                torn.bytes,
                torn.offset,
                torn.segment.display()
            )?;
        }
        Ok(())
    }
}

/// Checks every record of the log in `dir`. `Err` only when the log cannot
/// be read; a broken chain is an `Ok` report with [`VerifyReport::broken`] set.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, AuditError> {
    let dir = dir.as_ref();
    let segments = list_segments(dir)?;
    let mut report = VerifyReport {
        segments: segments.len(),
        records: 0,
        last_seq: 0,
        last_hash: GENESIS_PREV.to_string(),
        torn_tail: None,
        broken: None,
    };
    for (index, (named, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| AuditError::io("read segment", path, e))?;
        let (lines, rest) = split_lines(&bytes);
        for (i, line) in lines.iter().enumerate() {
            match check_line(&report, *named, i == 0, line, &lines[i + 1..]) {
                Ok((seq, hash)) => {
                    report.records += 1;
                    report.last_seq = seq;
                    report.last_hash = hash;
                }
                Err((problem, seq)) => {
                    report.broken = Some(Broken { segment: path.clone(), line: i + 1, seq, problem });
                    return Ok(report);
                }
            }
        }
        if !rest.is_empty() {
            let offset = (bytes.len() - rest.len()) as u64;
            if index + 1 == segments.len() {
                report.torn_tail = Some(TornTail { segment: path.clone(), offset, bytes: rest.len() as u64 });
            } else {
                report.broken = Some(Broken {
                    segment: path.clone(),
                    line: lines.len() + 1,
                    seq: None,
                    problem: Problem::Unreadable { reason: "partial line in a segment that is not the last".into() },
                });
                return Ok(report);
            }
        }
    }
    Ok(report)
}

/// Checks one line against the chain so far and, when good, advances `report`.
fn check_line(
    report: &VerifyReport,
    named: u64,
    first_in_segment: bool,
    line: &[u8],
    later: &[&[u8]],
) -> Result<(u64, String), (Problem, Option<u64>)> {
    let (stored, computed) = line_hashes(line).map_err(|reason| (Problem::Unreadable { reason }, None))?;
    let record = parse_line(line).map_err(|reason| (Problem::Unreadable { reason }, None))?;
    let seq = Some(record.seq);
    if stored != computed {
        return Err((Problem::HashMismatch { stored, computed }, seq));
    }
    let expected = report.last_seq + 1;
    if record.seq != expected {
        let found = record.seq;
        let reordered =
            found < expected || later.iter().any(|l| parse_line(l).map(|r| r.seq == expected).unwrap_or(false));
        let problem =
            if reordered { Problem::OutOfOrder { expected, found } } else { Problem::MissingSeq { expected, found } };
        return Err((problem, seq));
    }
    if record.prev != report.last_hash {
        return Err((Problem::BrokenLink { expected_prev: report.last_hash.clone(), found_prev: record.prev }, seq));
    }
    if first_in_segment && named != record.seq {
        return Err((Problem::SegmentName { named, first_seq: record.seq }, seq));
    }
    Ok((record.seq, record.hash))
}
