//! `tollgate embed --jsonl`: the sidecar's sentence embedding of every text of a JSONL stream, for
//! the quality measurements that train or test a head on it (scripts/*_quality.py).
//!
//! Each input line is `{"id": …, "text": …}`; each output line `{"id": …, "vectors": [[…], …]}`,
//! one vector per window of [`windows`] (so the end of a long text is embedded too). Lines that
//! are not valid JSON are reported on standard error and skipped.

use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::json;

use crate::embed::Embedder;

/// Words per window: about 200 word pieces for English prose, inside the model's 256.
pub const WINDOW_WORDS: usize = 160;

/// The windows a text is embedded in: the whole text when it has at most [`WINDOW_WORDS`]
/// words, else runs of that many words overlapping by half, the last one ending with the text.
pub fn windows(text: &str) -> Vec<&str> {
    let starts: Vec<usize> = text
        .char_indices()
        .filter(|&(i, c)| !c.is_whitespace() && (i == 0 || text[..i].ends_with(char::is_whitespace)))
        .map(|(i, _)| i)
        .collect();
    if starts.len() <= WINDOW_WORDS {
        return vec![text];
    }
    let step = WINDOW_WORDS / 2;
    let mut out = Vec::new();
    let mut first = 0;
    loop {
        let last = first + WINDOW_WORDS;
        if last >= starts.len() {
            out.push(&text[starts[starts.len().saturating_sub(WINDOW_WORDS)]..]);
            return out;
        }
        out.push(&text[starts[first]..starts[last]]);
        first += step;
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    id: serde_json::Value,
    text: String,
}

/// How many windows are embedded in one batch.
const BATCH: usize = 32;

/// Embeds every line of `input` into `output`; returns (lines embedded, lines skipped).
pub fn run(embedder: &Embedder, input: impl BufRead, mut output: impl Write) -> anyhow::Result<(usize, usize)> {
    let (mut ok, mut bad) = (0, 0);
    let mut pending: Vec<Line> = Vec::with_capacity(BATCH);
    let mut pending_windows = 0;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(&line) {
            Ok(line) => {
                pending_windows += windows(&line.text).len();
                pending.push(line);
            }
            Err(e) => {
                eprintln!("line {}: {e}", n + 1);
                bad += 1;
            }
        }
        if pending_windows >= BATCH {
            ok += flush(embedder, &mut pending, &mut output)?;
            pending_windows = 0;
        }
    }
    ok += flush(embedder, &mut pending, &mut output)?;
    output.flush()?;
    Ok((ok, bad))
}

/// Embeds the pending lines' windows in one batch and writes one output line per input line.
fn flush(embedder: &Embedder, pending: &mut Vec<Line>, output: &mut impl Write) -> anyhow::Result<usize> {
    let per_line: Vec<Vec<&str>> = pending.iter().map(|l| windows(&l.text)).collect();
    let all: Vec<&str> = per_line.iter().flatten().copied().collect();
    let mut vectors = embedder.embed(&all)?.into_iter();
    for (line, w) in pending.iter().zip(&per_line) {
        let mine: Vec<Vec<f32>> = vectors.by_ref().take(w.len()).collect();
        writeln!(output, "{}", json!({"id": line.id, "vectors": mine}))?;
    }
    let n = pending.len();
    pending.clear();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_one_window_and_long_ones_overlap_to_the_end() {
        assert_eq!(windows("a b c"), vec!["a b c"]);
        let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let w = windows(&text);
        assert!(w.len() >= 4);
        assert!(w[0].starts_with("w0 ") && w[1].starts_with("w80 "));
        assert!(w.iter().all(|x| x.split_whitespace().count() <= WINDOW_WORDS));
        assert!(w.last().is_some_and(|x| x.ends_with("w399")));
    }
}
