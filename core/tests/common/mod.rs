//! Shared helpers for the fixture-driven tests: loading the recorded OpenAI
//! cassettes and the Anthropic responses copied into `tests/fixtures/`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use tollgate_core::{ApiKind, SseEvent, SseParser};

/// A go-vcr cassette: only the fields the tests read.
#[derive(Debug, Deserialize)]
pub struct Cassette {
    pub interactions: Vec<Interaction>,
}

#[derive(Debug, Deserialize)]
pub struct Interaction {
    pub request: Request,
    pub response: Response,
}

#[derive(Debug, Deserialize)]
pub struct Request {
    pub body: String,
    pub url: String,
}

#[derive(Debug, Deserialize)]
pub struct Response {
    pub body: String,
    pub code: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Response {
    pub fn is_sse(&self) -> bool {
        self.headers.get("Content-Type").and_then(|v| v.first()).is_some_and(|ct| ct.starts_with("text/event-stream"))
    }
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// Every cassette, by file stem (`chat-basic`), sorted.
pub fn cassettes() -> Vec<(String, Cassette)> {
    let dir = fixtures().join("openai-recorded");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no cassettes in {}", dir.display());
    names
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let c: Cassette = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_stem().unwrap().to_string_lossy().into_owned(), c)
        })
        .collect()
}

/// The single interaction of cassette `name`.
pub fn cassette(name: &str) -> Interaction {
    let path = fixtures().join("openai-recorded").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut c: Cassette = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(c.interactions.len(), 1, "{name}");
    c.interactions.remove(0)
}

/// The API a recorded URL belongs to. Azure's deployment URLs
/// (`/openai/deployments/<d>/chat/completions`) count as chat.
pub fn api_for_url(url: &str) -> Option<ApiKind> {
    let path = url.split('?').next().unwrap_or(url);
    if path.ends_with("/chat/completions") {
        Some(ApiKind::OpenAiChat)
    } else if path.ends_with("/completions") {
        Some(ApiKind::OpenAiCompletions)
    } else if path.ends_with("/embeddings") {
        Some(ApiKind::OpenAiEmbeddings)
    } else if path.ends_with("/responses") {
        Some(ApiKind::OpenAiResponses)
    } else if path.ends_with("/messages") {
        Some(ApiKind::AnthropicMessages)
    } else {
        None
    }
}

pub fn anthropic(name: &str) -> Vec<u8> {
    let path = fixtures().join("anthropic-responses").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Anthropic streamed responses (`stream_*.json`, raw SSE text despite the
/// extension), by file name, sorted.
pub fn anthropic_streams() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join("anthropic-responses");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stream_") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    names.into_iter().map(|n| (n.clone(), anthropic(&n))).collect()
}

/// Every recorded stream: (name, API, raw SSE bytes).
pub fn recorded_streams() -> Vec<(String, ApiKind, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, c) in cassettes() {
        for it in c.interactions {
            if it.response.is_sse() {
                let api = api_for_url(&it.request.url).unwrap();
                out.push((name.clone(), api, it.response.body.into_bytes()));
            }
        }
    }
    for (name, bytes) in anthropic_streams() {
        out.push((name, ApiKind::AnthropicMessages, bytes));
    }
    out
}

/// Parse a whole stream in one call.
pub fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    parse_pieces(&[bytes])
}

pub fn parse_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut parser = SseParser::new(1 << 20);
    let mut out = Vec::new();
    for p in pieces {
        parser.feed(p, &mut out).unwrap();
    }
    parser.finish(&mut out).unwrap();
    out
}
