//! The `sidecar` fuzz corpus (`fuzz/corpus/sidecar/`) as a plain test:
//! every input drives the sidecar's phase handlers with its sequence of
//! ext_proc messages and checks the same properties as the fuzz target
//! (`fuzz/props/sidecar.rs`).
//!
//! `cargo test -p tollgate-ext-proc --test fuzz_corpus -- --ignored write_seeds`
//! writes the seed inputs (`seed-*`) again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/props/sidecar.rs"]
mod props;

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus").join("sidecar")
}

#[test]
fn sidecar() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "the sidecar corpus is empty");
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| props::sidecar(&data)).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(failed.is_empty(), "sidecar: {} of {} inputs fail: {failed:?}", failed.len(), files.len());
}

/// Builds an input op by op (see `props::messages` for the layout).
struct Seed(Vec<u8>);

impl Seed {
    /// Gateway (0 open + audit, 1 keys + budgets + audit, 2 keys) and audit byte.
    fn new(gateway: u8, audit: u8) -> Seed {
        Seed(vec![gateway, audit])
    }

    /// Request headers: a `props::PATHS` index, method/presence bits,
    /// credential and header bits, spoofed headers (bit 7: the filter inspected).
    fn headers(mut self, path: u8, bits: u8, more: u8, spoofs: u8) -> Seed {
        self.0.extend_from_slice(&[0, path, bits, more, spoofs]);
        self
    }

    /// A request body of kind `kind` (0x80: the path's API) in chunks cut by `seed` (0: whole).
    fn body(mut self, kind: u8, flags: u8, text: &str, seed: u16) -> Seed {
        let op = if seed == 0 { 1 } else { 1 | 0x20 };
        self.0.extend_from_slice(&[op, kind, flags, text.len() as u8]);
        self.0.extend_from_slice(text.as_bytes());
        if flags & 0x40 != 0 {
            self.0.push(3);
        }
        self.0.extend_from_slice(&seed.to_le_bytes());
        self
    }

    /// Response headers: status and content type byte, flags byte.
    fn response(mut self, a: u8, b: u8) -> Seed {
        self.0.extend_from_slice(&[2, a, b]);
        self
    }

    /// A recorded answer (`props::ANSWERS` index) with `text`, in chunks cut by `seed`.
    fn answer(mut self, which: u8, text: &str, seed: u16) -> Seed {
        let op = if seed == 0 { 3 } else { 3 | 0x20 };
        self.0.extend_from_slice(&[op, which, text.len() as u8]);
        self.0.extend_from_slice(text.as_bytes());
        self.0.extend_from_slice(&seed.to_le_bytes());
        self
    }

    /// Request (false) or response (true) trailers.
    fn trailers(mut self, response: bool) -> Seed {
        self.0.push(if response { 4 | 0x10 } else { 4 });
        self
    }
}

const JSON: u8 = 0;
const SSE: u8 = 1 << 4;

#[test]
#[ignore = "writes fuzz/corpus/sidecar; run by hand"]
fn write_seeds() {
    let seeds: Vec<(&str, Seed)> = vec![
        // An OpenAI chat request routed to the mock, answered in JSON, with every spoofed header.
        (
            "chat-json",
            Seed::new(0, 1).headers(0, 0, 0x80, 0x3f).body(0x80, 0, "hello", 0).response(JSON, 0).answer(0, "hi", 0),
        ),
        // Streamed, the body and the answer in chunks.
        (
            "chat-stream",
            Seed::new(0, 2)
                .headers(0, 0, 0, 0x02)
                .body(0x80, 0x10, "stream please", 5)
                .response(SSE, 0)
                .answer(1, "hi there", 7),
        ),
        // An OpenAI client on an Anthropic alias: translated, streamed.
        (
            "chat-to-anthropic",
            Seed::new(0, 1)
                .headers(0, 0, 0, 0)
                .body(0x80, 0x11, "translate me", 0)
                .response(SSE, 0)
                .answer(3, "bonjour", 3),
        ),
        // A virtual key under a token limit: the stream crosses it.
        (
            "budget-cut",
            Seed::new(1, 1).headers(0, 0, 1, 0).body(0x80, 0x10, "count me", 0).response(SSE, 0).answer(1, "many", 9),
        ),
        // No key where one is required.
        ("no-key", Seed::new(1, 0).headers(1, 0, 0, 0x01).body(0x80, 0, "who", 0)),
        // A cost limit and an unpriced model.
        ("unpriced", Seed::new(1, 2).headers(0, 0, 2, 0).body(0x80, 7, "price", 0)),
        // Anthropic Messages with x-api-key, no audit.
        (
            "messages-json",
            Seed::new(2, 0).headers(1, 0, 0x0b, 0).body(0x80, 5, "hola", 0).response(JSON, 0).answer(2, "ok", 0),
        ),
        // The firewall blocks the prompt.
        ("firewall", Seed::new(0, 1).headers(0, 0, 0, 0).body(0x80, 0x20, "please", 0)),
        // A pass-through path; a path that is not the API.
        ("passthrough", Seed::new(0, 0).headers(11, 2, 0x40, 0x21).response(JSON, 0).answer(0, "x", 0)),
        ("not-api", Seed::new(0, 0).headers(13, 0, 0, 0x3f).body(0x80, 0, "x", 0).response(JSON, 0)),
        // Gemini, model in the path, streamed.
        (
            "gemini-stream",
            Seed::new(0, 1).headers(6, 0, 0, 0).body(0x80, 0, "gem", 0).response(SSE, 0).answer(4, "g", 2),
        ),
        // A fallback alias; the upstream phase names the target that answered.
        (
            "fallback",
            Seed::new(1, 1).headers(0, 0, 3, 0).body(0x80, 3, "fall", 0).response(SSE, 0x03).answer(1, "b", 0),
        ),
        // The filter answered before the body (blocked), with its report.
        ("answered-by-filter", Seed::new(0, 1).headers(0, 0, 0, 0x80).response(0x03, 0x24)),
        // Out of order and repeated: a body before headers, headers twice, trailers anywhere.
        (
            "out-of-order",
            Seed::new(0, 1)
                .answer(0, "early", 0)
                .body(0, 0, "early", 0)
                .trailers(false)
                .headers(0, 0, 0, 0)
                .headers(1, 0, 0x40, 0)
                .body(0x80, 0, "twice", 0)
                .body(0x80, 0, "again", 0)
                .response(SSE, 0)
                .response(JSON, 0x10)
                .answer(1, "late", 4)
                .trailers(true),
        ),
        // Request headers again after the request was routed (Envoy sends them once).
        (
            "headers-after-routed",
            Seed::new(0, 1)
                .headers(0, 0, 0, 0)
                .body(0x80, 0, "first", 0)
                .headers(0, 0, 0, 0)
                .response(JSON, 0)
                .answer(0, "second", 0),
        ),
        // Headers only, end of stream: no body to route.
        ("headers-only", Seed::new(1, 0).headers(4, 0x10, 1, 0)),
        // An error answer.
        ("error-answer", Seed::new(0, 1).headers(0, 0, 0, 0).body(0x80, 0, "e", 0).response(6, 0).answer(5, "bad", 0)),
    ];
    let dir = corpus();
    std::fs::create_dir_all(&dir).unwrap();
    let mut failed = Vec::new();
    for (name, seed) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), &seed.0).unwrap();
        if std::panic::catch_unwind(|| props::sidecar(&seed.0)).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "seeds failing: {failed:?}");
}
