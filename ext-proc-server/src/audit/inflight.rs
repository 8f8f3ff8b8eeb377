//! Requests routed and not yet recorded, journaled beside the audit log
//! (`inflight.jsonl`), so that a sidecar killed with requests in flight
//! records them as incomplete when it starts again.
//!
//! Each routed request appends a `begin` line, and its audit record (or the
//! attempt at one) an `end` line. Lines are written, not fsynced: they
//! survive the process being killed (the kernel holds them), which is what
//! they are for; a machine that loses power loses the answers in flight
//! with them. The journal is rewritten with only the open requests when it
//! grows past [`COMPACT_LINES`], and emptied at start once the requests it
//! left open are recorded.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The journal's file name in the audit directory.
pub const FILE: &str = "inflight.jsonl";

/// Lines after which the journal is rewritten with the open requests only.
pub const COMPACT_LINES: usize = 20_000;

/// What the record of a request cut off by a restart can say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Begun {
    pub request_id: String,
    pub time: String,
    pub api: String,
    pub consumer: String,
    pub team: String,
    pub requested_model: String,
    pub model: String,
    pub provider: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Begin(Begun),
    End(String),
}

struct Journal {
    file: File,
    lines: usize,
    open: HashMap<String, Begun>,
}

/// The journal of requests in flight.
pub struct InFlight {
    path: PathBuf,
    journal: Mutex<Journal>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("path", &self.path).finish()
    }
}

impl InFlight {
    /// Opens the journal in `dir` and returns the requests a previous run
    /// left in flight (begun, never ended), oldest first; the journal then
    /// starts empty. Unreadable lines (a torn last line) are skipped.
    pub fn open(dir: &Path) -> std::io::Result<(InFlight, Vec<Begun>)> {
        let path = dir.join(FILE);
        let mut left: Vec<Begun> = Vec::new();
        if let Ok(file) = File::open(&path) {
            let mut ended = std::collections::HashSet::new();
            for line in BufReader::new(file).lines() {
                match serde_json::from_str::<Line>(&line?) {
                    Ok(Line::Begin(b)) => left.push(b),
                    Ok(Line::End(id)) => _ = ended.insert(id),
                    Err(_) => {}
                }
            }
            left.retain(|b| !ended.contains(&b.request_id));
        }
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        let journal = Journal { file, lines: 0, open: HashMap::new() };
        Ok((InFlight { path, journal: Mutex::new(journal) }, left))
    }

    /// A request was routed: journal it before it goes upstream.
    pub fn begin(&self, begun: Begun) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.open.insert(begun.request_id.clone(), begun.clone());
        write_line(&mut j, &Line::Begin(begun), &self.path);
    }

    /// The request's record was written (or could not be): it is no longer
    /// in flight.
    pub fn end(&self, request_id: &str) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if j.open.remove(request_id).is_none() {
            return;
        }
        write_line(&mut j, &Line::End(request_id.to_string()), &self.path);
        if j.lines >= COMPACT_LINES {
            compact(&mut j, &self.path);
        }
    }
}

fn write_line(j: &mut Journal, line: &Line, path: &Path) {
    let Ok(mut text) = serde_json::to_vec(line) else { return };
    text.push(b'\n');
    if let Err(e) = j.file.write_all(&text) {
        tracing::warn!(path = %path.display(), error = %e, "in-flight journal not written");
    }
    j.lines += 1;
}

/// Rewrite the journal with the open requests only (write a new file, then
/// rename it over the old one).
fn compact(j: &mut Journal, path: &Path) {
    let tmp = path.with_extension("jsonl.tmp");
    let rewritten = (|| -> std::io::Result<File> {
        let mut file = File::create(&tmp)?;
        for b in j.open.values() {
            let mut text = serde_json::to_vec(&Line::Begin(b.clone())).map_err(std::io::Error::other)?;
            text.push(b'\n');
            file.write_all(&text)?;
        }
        std::fs::rename(&tmp, path)?;
        OpenOptions::new().append(true).open(path)
    })();
    match rewritten {
        Ok(file) => {
            j.file = file;
            j.lines = j.open.len();
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "in-flight journal not compacted"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn begun(id: &str) -> Begun {
        Begun { request_id: id.into(), api: "openai.chat".into(), model: "gpt-4o-mini".into(), ..Default::default() }
    }

    #[test]
    fn requests_left_open_by_a_killed_run_come_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let (j, left) = InFlight::open(dir.path()).unwrap();
        assert!(left.is_empty());
        for id in ["a", "b", "c"] {
            j.begin(begun(id));
        }
        j.end("b");
        j.end("zzz");
        drop(j); // as if killed: nothing else happens
                 // A torn last line is skipped.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(b"{\"begin\":{\"requestId\":\"d\"").unwrap();
        let (j, left) = InFlight::open(dir.path()).unwrap();
        assert_eq!(left.iter().map(|b| b.request_id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(left[0], begun("a"));
        drop(j);
        let (_, left) = InFlight::open(dir.path()).unwrap();
        assert!(left.is_empty(), "reported once: {left:?}");
    }

    #[test]
    fn the_journal_is_compacted_to_the_open_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = InFlight::open(dir.path()).unwrap();
        j.begin(begun("kept"));
        for i in 0..COMPACT_LINES {
            let id = format!("r{i}");
            j.begin(begun(&id));
            j.end(&id);
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE)).unwrap().lines().count();
        assert!(lines < COMPACT_LINES, "{lines} lines");
        j.begin(begun("late"));
        drop(j);
        let (_, left) = InFlight::open(dir.path()).unwrap();
        let mut ids: Vec<_> = left.iter().map(|b| b.request_id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["kept", "late"]);
    }
}
