//! Reading the log back: [`records()`], [`query()`] and [`tail()`].
//!
//! These read; they do not verify hashes or links (that is [`verify()`](super::verify())).
//! A partial last line (a crash mid-write) is skipped; any other line that does not
//! parse is an [`AuditError::Corrupt`] naming the segment and line.

use super::{list_segments, parse_line, split_lines, AuditError, AuditRecord};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which records [`query()`] returns. Unset fields match everything; set ones must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact consumer.
    pub consumer: Option<String>,
    /// Exact team.
    pub team: Option<String>,
    /// Exact model, matched against both the resolved and the requested model.
    pub model: Option<String>,
    /// Records at or after this time.
    pub since: Option<SystemTime>,
    /// Records before this time.
    pub until: Option<SystemTime>,
    /// Substring of the decisions' compact JSON, e.g. `firewall` or `"action":"block"`.
    pub decision_contains: Option<String>,
}

impl Filter {
    /// Whether `record` passes the filter. A record whose time does not parse
    /// fails any time bound.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let exact = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if !exact(&self.consumer, &record.consumer) || !exact(&self.team, &record.team) {
            return false;
        }
        if let Some(model) = &self.model {
            if *model != record.model && *model != record.requested_model {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = record.timestamp() else { return false };
            if self.since.is_some_and(|since| t < since) || self.until.is_some_and(|until| t >= until) {
                return false;
            }
        }
        if let Some(needle) = &self.decision_contains {
            if !record.decisions.to_string().contains(needle.as_str()) {
                return false;
            }
        }
        true
    }
}

/// Every record in `dir`, oldest first, read one segment at a time.
pub fn records(dir: impl AsRef<Path>) -> Result<Records, AuditError> {
    let segments = list_segments(dir.as_ref())?;
    Ok(Records { segments: segments.into_iter().map(|(_, p)| p).collect::<Vec<_>>().into_iter(), current: None })
}

/// The records in `dir` that pass `filter`, oldest first.
pub fn query(dir: impl AsRef<Path>, filter: &Filter) -> Result<Vec<AuditRecord>, AuditError> {
    let mut found = Vec::new();
    for record in records(dir)? {
        let record = record?;
        if filter.matches(&record) {
            found.push(record);
        }
    }
    Ok(found)
}

/// The last `n` records in `dir`, oldest first. Reads segments from the newest back.
pub fn tail(dir: impl AsRef<Path>, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
    let mut newest_first = Vec::new();
    for (_, path) in list_segments(dir.as_ref())?.iter().rev() {
        if newest_first.len() >= n {
            break;
        }
        let bytes = std::fs::read(path).map_err(|e| AuditError::io("read segment", path, e))?;
        let (lines, _) = split_lines(&bytes);
        for (i, line) in lines.iter().enumerate().rev() {
            if newest_first.len() >= n {
                break;
            }
            newest_first.push(parse_at(path, i + 1, line)?);
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// Iterator over the records of a log ([`records()`]).
pub struct Records {
    segments: std::vec::IntoIter<PathBuf>,
    current: Option<Segment>,
}

struct Segment {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Offset of the next line.
    pos: usize,
    /// 1-based number of the next line.
    line: usize,
}

impl Iterator for Records {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(seg) = &mut self.current {
                let rest = &seg.bytes[seg.pos..];
                if let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    let line = &rest[..end];
                    let line_no = seg.line;
                    seg.pos += end + 1;
                    seg.line += 1;
                    return Some(parse_at(&seg.path, line_no, line));
                }
                // What is left has no newline: a torn last line, skipped.
                self.current = None;
            }
            let path = self.segments.next()?;
            match std::fs::read(&path) {
                Ok(bytes) => self.current = Some(Segment { path, bytes, pos: 0, line: 1 }),
                Err(e) => return Some(Err(AuditError::io("read segment", &path, e))),
            }
        }
    }
}

fn parse_at(path: &Path, line: usize, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    parse_line(bytes).map_err(|reason| AuditError::Corrupt { path: path.to_path_buf(), line, reason })
}
