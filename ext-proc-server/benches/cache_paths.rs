//! Micro-benchmarks of the response cache's per-request work in the sidecar,
//! next to hashing the request body with the hash the keys use (sha256),
//! measured in the same run:
//!
//! ```sh
//! scripts/microbench.sh --quick      # this bench and the core one, plus the ratio table
//! cargo bench -p tollgate-ext-proc --bench cache_paths
//! ```
//!
//! Per request the sidecar parses the body, computes the tenant scope and
//! the partition and exact keys ([`key::scope`], [`key::keys`]), then looks
//! the exact key up ([`Cache::lookup`] → [`CacheStore::get_exact`], decoding
//! the stored [`Answer`] on a hit). The store is the embedded one, in a
//! temporary directory, filled with 10k entries (about 600 bytes each, 100
//! partitions, no embeddings: the semantic tier and its model are left to
//! `examples/cache_bench.rs`). Store calls are async only for Redis; the
//! embedded backend completes on first poll, so they run under
//! `futures::executor::block_on` here rather than a tokio runtime.
//!
//! Each criterion group holds one request body; its `baseline_sha256_body`
//! row is the reference `scripts/microbench_report.py` divides by.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::executor::block_on;
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tollgate_core::cache::CachePolicy;
use tollgate_core::request::parse_request_json;
use tollgate_core::ApiKind;
use tollgate_ext_proc::cache::key::{self, Tenant};
use tollgate_ext_proc::cache::store::{CacheStore, Key, Limits};
use tollgate_ext_proc::cache::{Answer, Cache, CacheKeys, Control, Decision};
use tollgate_ext_proc::metrics::Metrics;

/// Entries in the store.
const ENTRIES: usize = 10_000;
/// Partitions they are spread over.
const PARTITIONS: usize = 100;
const ROUTE: &str = "openai/gpt-4o-mini";

#[path = "../../core/benches/common/inputs.rs"]
mod inputs;
use inputs::{chat_messages, prose};

/// An OpenAI chat body of about `bytes` (see `chat_messages`), cacheable (temperature 0).
fn chat_body(bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": chat_messages(bytes), "temperature": 0.0})).unwrap()
}

fn policy() -> CachePolicy {
    CachePolicy { enabled: true, ..CachePolicy::default() }
}

fn tenant() -> Tenant<'static> {
    Tenant { consumer: Some("alice"), team: Some("search"), namespace: None }
}

/// What the sidecar computes for a request before the lookup.
fn request_keys(policy: &CachePolicy, body: &[u8]) -> CacheKeys {
    let parsed = parse_request_json(ApiKind::OpenAiChat, body).unwrap();
    let scope = key::scope(policy, &tenant());
    key::keys(policy, ApiKind::OpenAiChat, &parsed.json, &parsed.request, ROUTE, &scope).unwrap()
}

fn digest(parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    parts.iter().for_each(|p| h.update(p));
    h.finalize().into()
}

fn answer(i: usize) -> Vec<u8> {
    Answer {
        model: "gpt-4o-mini-2024-07-18".into(),
        text: prose(480, 1000 + i as u64),
        finish: "stop".into(),
        input_tokens: 120,
        output_tokens: 96,
    }
    .to_bytes()
}

/// An embedded store in `dir` holding `ENTRIES` entries plus the one of `keys`.
fn filled_store(dir: &std::path::Path, keys: &CacheKeys) -> CacheStore {
    let policy = policy();
    let limits = Limits {
        ttl: Duration::from_secs(policy.ttl_seconds),
        max_entries: ENTRIES * 2,
        max_bytes: ENTRIES * 8 * 1024,
    };
    let store = CacheStore::embedded(dir, limits).unwrap();
    block_on(async {
        for i in 0..ENTRIES {
            let partition = digest(&[b"partition", &((i % PARTITIONS) as u64).to_le_bytes()]);
            let exact = digest(&[b"exact", &(i as u64).to_le_bytes()]);
            store.insert(&partition, &exact, None, &answer(i)).await.unwrap();
        }
        store.insert(&keys.partition, &keys.exact, None, &answer(ENTRIES)).await.unwrap();
    });
    assert_eq!(store.stats().map(|s| s.0), Some(ENTRIES + 1));
    store
}

fn bench_keys(c: &mut Criterion) {
    let policy = policy();
    for (name, size) in [("cache_keys_openai_1k", 1024), ("cache_keys_openai_32k", 32 * 1024)] {
        let body = chat_body(size);
        let parsed = parse_request_json(ApiKind::OpenAiChat, &body).unwrap();
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("baseline_sha256_body", |b| b.iter(|| Sha256::digest(black_box(&body))));
        g.bench_function("scope_and_keys", |b| {
            b.iter(|| {
                let scope = key::scope(&policy, &tenant());
                key::keys(&policy, ApiKind::OpenAiChat, black_box(&parsed.json), &parsed.request, ROUTE, &scope)
                    .unwrap()
            })
        });
        g.bench_function("parse_and_keys", |b| b.iter(|| request_keys(&policy, black_box(&body))));
        g.finish();
    }
}

fn bench_lookup(c: &mut Criterion) {
    let policy = policy();
    let body = chat_body(1024);
    let keys = request_keys(&policy, &body);
    let miss = CacheKeys { exact: digest(&[b"not stored"]), ..keys.clone() };

    // The store alone, and the same content behind the sidecar's `Cache`
    // (filled likewise in a second directory, closed, then loaded by `Cache::open`).
    let raw_dir = TempDir::new().unwrap();
    let store = filled_store(raw_dir.path(), &keys);
    let cache_dir = TempDir::new().unwrap();
    drop(filled_store(cache_dir.path(), &keys));
    let cache = block_on(Cache::open(&policy, cache_dir.path(), None, None, Arc::new(Metrics::new()))).unwrap();
    let threshold = policy.semantic.threshold;
    assert!(matches!(block_on(cache.lookup(keys.clone(), threshold, Control::default())), Decision::Hit { .. }));
    assert!(matches!(block_on(cache.lookup(miss.clone(), threshold, Control::default())), Decision::Miss(_)));

    let mut g = c.benchmark_group("cache_lookup_10k");
    g.bench_function("baseline_sha256_body", |b| b.iter(|| Sha256::digest(black_box(&body))));
    g.bench_function("store_get_exact_hit", |b| {
        b.iter(|| block_on(store.get_exact(black_box(&keys.exact))).unwrap().unwrap())
    });
    g.bench_function("store_get_exact_miss", |b| b.iter(|| block_on(store.get_exact(black_box(&miss.exact))).unwrap()));
    g.bench_function("cache_lookup_hit", |b| {
        b.iter(|| block_on(cache.lookup(black_box(keys.clone()), threshold, Control::default())))
    });
    g.bench_function("cache_lookup_miss", |b| {
        b.iter(|| block_on(cache.lookup(black_box(miss.clone()), threshold, Control::default())))
    });
    // Everything the sidecar does for a cached 1 KB request before answering.
    g.bench_function("parse_keys_lookup_hit", |b| {
        b.iter(|| block_on(cache.lookup(request_keys(&policy, black_box(&body)), threshold, Control::default())))
    });
    g.finish();
}

criterion_group!(benches, bench_keys, bench_lookup);
criterion_main!(benches);
