//! The `filter` fuzz corpus (`fuzz/corpus/filter/`) as a plain test: every
//! input drives the filter's state machine through a mock host and checks
//! the same properties as the fuzz target (`fuzz/props/filter.rs`).
//!
//! `cargo test -p tollgate-filter --test fuzz_corpus -- --ignored write_seeds`
//! writes the seed inputs (`seed-*`) again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/props/filter.rs"]
mod props;

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus").join("filter")
}

#[test]
fn filter() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "the filter corpus is empty");
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| props::filter(&data)).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(failed.is_empty(), "filter: {} of {} inputs fail: {failed:?}", failed.len(), files.len());
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures").join(rel)).unwrap()
}

/// An arbitrary-traffic input: configuration bits, scenario (path and
/// answer content type), chunk seeds, the request and the answer.
fn arbitrary(cfg: u8, scenario: u8, seeds: (u16, u16), request: &[u8], answer: &[u8]) -> Vec<u8> {
    let mut v = vec![cfg, scenario];
    v.extend_from_slice(&seeds.0.to_le_bytes());
    v.extend_from_slice(&seeds.1.to_le_bytes());
    v.extend_from_slice(&(request.len() as u16).to_le_bytes());
    v.extend_from_slice(request);
    v.extend_from_slice(answer);
    v
}

/// Scenario byte: path index (see `PATHS`) and content type index (see `CONTENT_TYPES`).
fn scenario(path: u8, content_type: u8) -> u8 {
    path + 8 * content_type
}

#[test]
#[ignore = "writes fuzz/corpus/filter; run by hand"]
fn write_seeds() {
    const CHAT: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"mail jane@example.com, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"}]}"#;
    const CHAT_JSON: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"call +1 415 555 0100"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#;
    const MESSAGES: &str = r#"{"model":"claude-haiku-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"card 4111 1111 1111 1111 please"}]}"#;
    let chat_stream = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"to <EMAIL_ADDRESS_1> ok\"}}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" leaked sk-proj-Zb3dEf6hIj9kLm2nOp5qRs8tUv1wXy4q\"},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n\
data: [DONE]\n\n";
    let chat_json = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"call <PHONE_NUMBER_1>"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;
    let anthropic_stream = fixture("anthropic-responses/stream_basic.json");
    let anthropic_json = fixture("anthropic-responses/basic.json");

    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for cfg in [0u8, 1, 2, 3, 4, 8] {
        seeds.push((
            format!("seed-chat-sse-{cfg}"),
            arbitrary(cfg, scenario(0, 1), (0, 7), CHAT.as_bytes(), chat_stream),
        ));
        seeds.push((
            format!("seed-chat-json-{cfg}"),
            arbitrary(cfg, scenario(0, 0), (5, 3), CHAT_JSON.as_bytes(), chat_json),
        ));
        seeds.push((
            format!("seed-messages-sse-{cfg}"),
            arbitrary(cfg, scenario(1, 2), (0, 13), MESSAGES.as_bytes(), &anthropic_stream),
        ));
        seeds.push((
            format!("seed-messages-json-{cfg}"),
            arbitrary(cfg, scenario(1, 0) | 0x40, (2, 0), MESSAGES.as_bytes(), &anthropic_json),
        ));
    }
    seeds.push(("seed-not-ai".into(), arbitrary(0, scenario(6, 0), (0, 0), b"{}", b"{}")));
    seeds.push(("seed-bad-json".into(), arbitrary(0, scenario(0, 0), (1, 0), b"{\"model\":", b"")));
    seeds.push(("seed-empty".into(), arbitrary(0, scenario(3, 1), (0, 0), b"", b"")));
    let text = "Mail jane.doe@example.com or call +1 (415) 555-0100, card 4111 1111 1111 1111, key \
        sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z, <b>tags</b> and \"quotes\" \\ Zoë.";
    for (i, (cfg, scenario)) in
        [(0u8, 0x80u8), (0, 0x81), (0, 0x82), (0, 0x83), (2, 0x81), (3, 0x81), (1, 0x80)].iter().enumerate()
    {
        let mut v = vec![*cfg, *scenario, 3, 0, 17, 0];
        v.extend_from_slice(text.as_bytes());
        seeds.push((format!("seed-echo-{i}"), v));
    }
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, data) in seeds {
        std::fs::write(corpus().join(name), data).unwrap();
    }
}
