//! The response cache's own costs, measured in one run: sentence-embedding
//! latency per prompt, and lookup latency in the embedded store at 10k and
//! 100k entries. Part of `scripts/cache-bench.sh` (which adds the end-to-end
//! hit vs miss latency through Envoy, `bench/cache_bench.py`); on its own:
//!
//! ```sh
//! cargo run --release -p tollgate-ext-proc --example cache_bench -- --out target/bench/cache-store.json
//! ```
//!
//! **Embedding.** A few hundred prompts generated deterministically
//! (templates × topics): short ones (~10 words) and long ones (~60 words).
//! Each is embedded alone with [`Embedder::embed_whole`], as the sidecar does
//! for every cacheable request (tokenization, the length check, the 6-layer
//! encoder, pooling), after a warm-up. The model is the installed
//! all-MiniLM-L6-v2 ([`default_model_dir`], or `--model-dir`).
//!
//! **Lookups.** A [`CacheStore::embedded`] in a scratch directory is filled
//! with N entries: random unit vectors of dimension 384 (the model's; real
//! embeddings of 100k prompts would take minutes to compute and cost the
//! scan exactly the same) and values of 1–2 KB (an answer record's size).
//! Two layouts: all entries in one partition (the worst case for the
//! semantic tier: one tenant, one model, one system prompt) and spread over
//! 100 partitions. Timed per call: `get_exact` hit and miss, `get_similar`
//! hit (a stored vector with a little noise, similarity ~0.995) and miss (a
//! fresh random vector: nothing reaches the threshold, so the whole
//! partition is scanned and nothing copied). The baseline, measured in the
//! same run and interleaved call by call with the lookups, is a bare
//! dot-product scan of one partition's worth of the same vectors held in a
//! plain `Vec<f32>` split the same way (so it is as cold in the CPU caches as
//! the store's partition): the floor a linear scan reaches on this machine.
//! `get_similar` miss is reported as a ratio to it. Last, the store is
//! dropped and reopened from its file (read, replay, and the compaction
//! [`CacheStore::embedded`] runs at start).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tollgate_ext_proc::cache::store::{CacheStore, Key, Limits, Tier};
use tollgate_ext_proc::embed::{default_model_dir, Embedder};

const DIM: usize = 384;
const THRESHOLD: f32 = 0.95;

// ------------------------------------------------------------------ helpers

/// SplitMix64: deterministic, fast, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Standard normal (Box–Muller).
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    fn key(&mut self) -> Key {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        k
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for x in v {
        *x /= n;
    }
}

/// A uniformly distributed unit vector.
fn random_unit(rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.gauss()).collect();
    normalize(&mut v);
    v
}

/// Entry `i`'s exact key and vector, regenerated on demand from `i`.
fn entry_key(seed: u64, i: usize) -> Key {
    Rng(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).key()
}
fn entry_vector(seed: u64, i: usize) -> Vec<f32> {
    random_unit(&mut Rng(!seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}
fn partition_key(p: usize) -> Key {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(p as u64 + 1).to_le_bytes());
    k[8..16].copy_from_slice(b"bench-pt");
    k
}

/// Latency summary of per-call samples.
#[derive(Clone, Copy)]
struct Stats {
    n: usize,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if ms.is_empty() {
            return f64::NAN;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[rank.clamp(1, ms.len()) - 1]
    };
    Stats {
        n: ms.len(),
        mean: if ms.is_empty() { f64::NAN } else { ms.iter().sum::<f64>() / ms.len() as f64 },
        p50: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
    }
}

fn stats_json(s: &Stats) -> Value {
    let r = |x: f64| (x * 10_000.0).round() / 10_000.0;
    json!({"n": s.n, "mean_ms": r(s.mean), "p50_ms": r(s.p50), "p90_ms": r(s.p90), "p99_ms": r(s.p99)})
}

/// Milliseconds, or microseconds below 1 ms.
fn t(ms: f64) -> String {
    if ms.is_nan() {
        "–".into()
    } else if ms < 1.0 {
        format!("{:.1} µs", ms * 1000.0)
    } else {
        format!("{ms:.2} ms")
    }
}

// ------------------------------------------------------------------ prompts

const TOPICS: &[&str] = &[
    "a sourdough starter",
    "the French Revolution",
    "photosynthesis in desert plants",
    "a Rust borrow checker error",
    "compound interest on a savings account",
    "training for a first marathon",
    "the causes of inflation",
    "a leaking kitchen faucet",
    "black holes and event horizons",
    "writing a cover letter",
    "the rules of chess castling",
    "Kubernetes pod scheduling",
    "a vegetarian lasagna recipe",
    "the water cycle",
    "learning to play the guitar",
    "the history of the printing press",
    "a slow home Wi-Fi network",
    "how vaccines train the immune system",
    "renewable energy storage",
    "a job interview for a data analyst role",
    "the plot of Hamlet",
    "SQL joins and indexes",
    "growing tomatoes on a balcony",
    "the migration of monarch butterflies",
    "budgeting for a family holiday",
];

const SHORT: &[&str] = &[
    "Can you explain {} in simple terms for me?",
    "What are the most important facts about {}?",
    "Give me three practical tips about {} please.",
    "How would you describe {} to a ten year old?",
    "What is a common misconception about {} today?",
    "Write a short summary of {} for beginners.",
    "Why do people find {} so confusing at first?",
    "List the key steps involved in {} quickly.",
];

const LONG_OPENERS: &[&str] = &[
    "I have been reading about {} for a few weeks now and I still feel that I am missing the bigger picture.",
    "My team asked me to prepare a short presentation on {} for our next meeting on Thursday afternoon.",
    "A friend of mine keeps asking me questions about {} and I would like to give her a clear answer.",
    "I am writing a blog post for a general audience and one of the sections is about {} in particular.",
];

const LONG_MIDDLES: &[&str] = &[
    "Could you explain the main ideas step by step, starting from the basics and then moving on to the details \
     that experts usually care about, with one concrete example along the way?",
    "Please describe the usual pitfalls, what people tend to get wrong, and how to avoid those mistakes, keeping \
     the tone friendly and the explanation reasonably short and easy to follow.",
    "I would appreciate a structured answer with a short introduction, a few key points, and a brief conclusion \
     that I can reuse almost as is, avoiding jargon wherever possible.",
];

const LONG_CLOSERS: &[&str] = &[
    "Thank you in advance, and feel free to suggest further reading.",
    "Please keep it under three hundred words if you can.",
    "If anything is ambiguous, state your assumptions clearly.",
];

/// `n` short and `n` long prompts, deterministic, all different.
fn prompts(n: usize) -> (Vec<String>, Vec<String>) {
    let mut short = Vec::with_capacity(n);
    let mut long = Vec::with_capacity(n);
    let mut i = 0usize;
    while short.len() < n {
        let topic = TOPICS[i % TOPICS.len()];
        let tpl = SHORT[(i / TOPICS.len()) % SHORT.len()];
        let mut p = tpl.replace("{}", topic);
        if i >= TOPICS.len() * SHORT.len() {
            write!(p, " (variant {})", i / (TOPICS.len() * SHORT.len())).ok();
        }
        short.push(p);
        i += 1;
    }
    i = 0;
    while long.len() < n {
        let topic = TOPICS[i % TOPICS.len()];
        let k = i / TOPICS.len();
        let p = format!(
            "{} {} {}",
            LONG_OPENERS[k % LONG_OPENERS.len()].replace("{}", topic),
            LONG_MIDDLES[(k / LONG_OPENERS.len()) % LONG_MIDDLES.len()],
            LONG_CLOSERS[(k + i) % LONG_CLOSERS.len()],
        );
        long.push(p);
        i += 1;
    }
    (short, long)
}

fn words(texts: &[String]) -> f64 {
    texts.iter().map(|t| t.split_whitespace().count()).sum::<usize>() as f64 / texts.len().max(1) as f64
}

// ---------------------------------------------------------------- embedding

fn bench_embedding(model_dir: &Path, per_kind: usize, report: &mut String) -> Result<Value> {
    let started = Instant::now();
    let embedder =
        Embedder::load(model_dir).with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (short, long) = prompts(per_kind);
    // Warm-up: allocator, caches, lazily initialised kernels.
    for p in short.iter().take(10).chain(long.iter().take(10)) {
        black_box(embedder.embed_whole(p)?);
    }
    let mut out = json!({"model_dir": model_dir.display().to_string(), "model_load_ms": load_ms.round(), "dims": embedder.dims()});
    let _ = writeln!(report, "\n## Embedding latency per prompt (all-MiniLM-L6-v2, one prompt per call)\n");
    let _ = writeln!(report, "model loaded in {load_ms:.0} ms; {} dims\n", embedder.dims());
    let _ = writeln!(report, "| prompts | n | words (mean) | mean | p50 | p90 | p99 | prompts/s |");
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for (name, set) in [("short", &short), ("long", &long)] {
        let mut samples = Vec::with_capacity(set.len());
        let wall = Instant::now();
        for p in set.iter() {
            let t0 = Instant::now();
            let v = embedder.embed_whole(p)?;
            samples.push(t0.elapsed());
            match v {
                Some(v) if v.len() == embedder.dims() => {}
                _ => bail!("embed_whole gave no vector of {} dims for {p:?}", embedder.dims()),
            }
        }
        let wall = wall.elapsed().as_secs_f64();
        all.extend_from_slice(&samples);
        let s = stats(&samples);
        let rate = set.len() as f64 / wall;
        let w = words(set);
        let _ = writeln!(
            report,
            "| {name} | {} | {w:.0} | {} | {} | {} | {} | {rate:.0} |",
            s.n,
            t(s.mean),
            t(s.p50),
            t(s.p90),
            t(s.p99)
        );
        out[name] = json!({"latency": stats_json(&s), "words_mean": w, "prompts_per_s": (rate * 10.0).round() / 10.0});
    }
    let s = stats(&all);
    let _ = writeln!(
        report,
        "| all | {} | {:.0} | {} | {} | {} | {} | {:.0} |",
        s.n,
        (words(&short) + words(&long)) / 2.0,
        t(s.mean),
        t(s.p50),
        t(s.p90),
        t(s.p99),
        1000.0 / s.mean
    );
    out["all"] = json!({"latency": stats_json(&s)});
    Ok(out)
}

// ------------------------------------------------------------------ lookups

struct Layout {
    name: &'static str,
    partitions: usize,
}

/// The baseline: best dot product over `rows` vectors in a flat slice.
fn bare_scan(flat: &[f32], query: &[f32]) -> f32 {
    let mut best = f32::MIN;
    for v in flat.chunks_exact(DIM) {
        let s: f32 = {
            // Same shape as the store's kernel: 16 independent accumulators.
            let mut acc = [0.0f32; 16];
            for (x, y) in v.chunks_exact(16).zip(query.chunks_exact(16)) {
                for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
                    *a += x * y;
                }
            }
            acc.iter().sum()
        };
        best = best.max(s);
    }
    best
}

async fn bench_store(work: &Path, n: usize, layout: &Layout, seed: u64) -> Result<Value> {
    let dir = work.join(format!("store-{n}-{}", layout.partitions));
    let _ = std::fs::remove_dir_all(&dir);
    let limits = Limits { ttl: Duration::from_secs(24 * 3600), max_entries: n * 2, max_bytes: n * 8 * 1024 };
    let store = CacheStore::embedded(&dir, limits)?;
    let mut rng = Rng(seed);
    const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyz {}\":,0123456789";
    let payload: Vec<u8> = (0..2048).map(|i| FILLER[i % FILLER.len()]).collect();

    // Fill.
    let fill = Instant::now();
    let mut value_bytes = 0usize;
    for i in 0..n {
        let len = 1024 + rng.below(1025);
        value_bytes += len;
        let v = entry_vector(seed, i);
        store.insert(&partition_key(i % layout.partitions), &entry_key(seed, i), Some(&v), &payload[..len]).await?;
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let (held, bytes) = store.stats().unwrap_or((0, 0));
    if held != n {
        bail!("the store holds {held} entries after inserting {n}");
    }
    let rows = n / layout.partitions;

    // The number of calls per measurement: scans are timed fewer times.
    let scans = (20_000_000 / rows.max(1)).clamp(100, 1000);
    let exacts = 2000;

    // Hits, misses and the baseline are interleaved call by call, so that
    // they see the same machine (background writeback of the file just
    // written, other processes).
    let mut exact_hit = Vec::with_capacity(exacts);
    let mut exact_miss = Vec::with_capacity(exacts);
    for _ in 0..exacts {
        let (hit_key, miss_key) = (entry_key(seed, rng.below(n)), rng.key());
        let t0 = Instant::now();
        let found = store.get_exact(&hit_key).await?;
        exact_hit.push(t0.elapsed());
        if !matches!(found, Some(ref f) if f.tier == Tier::Exact) {
            bail!("get_exact missed a stored entry");
        }
        let t0 = Instant::now();
        let found = store.get_exact(&miss_key).await?;
        exact_miss.push(t0.elapsed());
        if found.is_some() {
            bail!("get_exact hit an unknown key");
        }
    }

    // The baseline: the same vectors in a plain slice, partition by partition
    // (so a partition is as cold in the CPU caches as the store's).
    let flat: Vec<f32> = (0..rows * layout.partitions).flat_map(|i| entry_vector(seed, i)).collect();
    let mut similar_hit = Vec::with_capacity(scans);
    let mut similar_miss = Vec::with_capacity(scans);
    let mut bare = Vec::with_capacity(scans);
    let mut similarity_sum = 0.0f64;
    for _ in 0..scans {
        // A stored vector plus noise of norm ~0.1 (similarity ~0.995).
        let i = rng.below(n);
        let mut hit_query = entry_vector(seed, i);
        for x in hit_query.iter_mut() {
            *x += 0.1 / (DIM as f32).sqrt() * rng.gauss();
        }
        normalize(&mut hit_query);
        // A fresh random vector: nothing reaches the threshold.
        let (p, miss_query) = (rng.below(layout.partitions), random_unit(&mut rng));

        let t0 = Instant::now();
        let found = store.get_similar(&partition_key(i % layout.partitions), &hit_query, THRESHOLD).await?;
        similar_hit.push(t0.elapsed());
        match found {
            Some(f) if f.tier == Tier::Semantic => similarity_sum += f64::from(f.similarity),
            _ => bail!("get_similar missed a stored vector"),
        }
        let t0 = Instant::now();
        let found = store.get_similar(&partition_key(p), &miss_query, THRESHOLD).await?;
        similar_miss.push(t0.elapsed());
        if let Some(f) = found {
            bail!("get_similar hit a random vector (similarity {})", f.similarity);
        }
        let slice = &flat[p * rows * DIM..(p + 1) * rows * DIM];
        let t0 = Instant::now();
        black_box(bare_scan(black_box(slice), &miss_query));
        bare.push(t0.elapsed());
    }
    drop(flat);

    // Reopen from the file.
    drop(store);
    let file_bytes = std::fs::metadata(dir.join("cache.log")).map(|m| m.len()).unwrap_or(0);
    let t0 = Instant::now();
    let reopened = CacheStore::embedded(&dir, limits)?;
    let reopen_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let (held_after, _) = reopened.stats().unwrap_or((0, 0));
    if held_after != n {
        bail!("the reopened store holds {held_after} entries, not {n}");
    }
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);

    let (eh, em, sh, sm, b) =
        (stats(&exact_hit), stats(&exact_miss), stats(&similar_hit), stats(&similar_miss), stats(&bare));
    Ok(json!({
        "entries": n,
        "layout": layout.name,
        "partitions": layout.partitions,
        "rows_per_partition": rows,
        "dims": DIM,
        "value_bytes_mean": value_bytes / n.max(1),
        "store_bytes": bytes,
        "file_bytes": file_bytes,
        "fill_s": (fill_s * 1000.0).round() / 1000.0,
        "insert_us_mean": (fill_s * 1e6 / n as f64 * 10.0).round() / 10.0,
        "get_exact_hit": stats_json(&eh),
        "get_exact_miss": stats_json(&em),
        "get_similar_hit": stats_json(&sh),
        "get_similar_hit_similarity_mean": similarity_sum / scans as f64,
        "get_similar_miss": stats_json(&sm),
        "bare_scan_baseline": stats_json(&b),
        "get_similar_miss_vs_bare_scan_p50": sm.p50 / b.p50,
        "scan_gb_per_s_p50": (rows * DIM * 4) as f64 / (sm.p50 / 1000.0) / 1e9,
        "reopen_ms": reopen_ms.round(),
    }))
}

fn lookup_table(report: &mut String, rows: &[Value]) {
    let _ = writeln!(report, "\n## Lookup latency in the embedded store (per call, p50 / p99)\n");
    let _ = writeln!(
        report,
        "Random unit vectors of {DIM} dims, values of 1–2 KB; threshold {THRESHOLD}. Baseline: a bare dot-product \
         scan of one partition's worth of the same vectors in a plain slice, interleaved with the lookups.\n"
    );
    let _ = writeln!(
        report,
        "| entries | layout | rows scanned | get_exact hit | get_exact miss | get_similar hit | get_similar miss \
         | bare scan (baseline) | miss / baseline | scan GB/s | insert (mean) | reopen |"
    );
    let _ = writeln!(report, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let pp = |k: &str| {
            format!(
                "{} / {}",
                t(r[k]["p50_ms"].as_f64().unwrap_or(f64::NAN)),
                t(r[k]["p99_ms"].as_f64().unwrap_or(f64::NAN))
            )
        };
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2}× | {:.1} | {:.1} µs | {} ms |",
            r["entries"],
            r["layout"].as_str().unwrap_or(""),
            r["rows_per_partition"],
            pp("get_exact_hit"),
            pp("get_exact_miss"),
            pp("get_similar_hit"),
            pp("get_similar_miss"),
            pp("bare_scan_baseline"),
            r["get_similar_miss_vs_bare_scan_p50"].as_f64().unwrap_or(f64::NAN),
            r["scan_gb_per_s_p50"].as_f64().unwrap_or(f64::NAN),
            r["insert_us_mean"].as_f64().unwrap_or(f64::NAN),
            r["reopen_ms"],
        );
    }
    // Growth from 10k to 100k, per layout.
    let mut lines = Vec::new();
    for layout in ["one partition", "100 partitions"] {
        let find = |n: u64| rows.iter().find(|r| r["entries"].as_u64() == Some(n) && r["layout"] == layout);
        if let (Some(a), Some(b)) = (find(10_000), find(100_000)) {
            let ratio =
                |k: &str| b[k]["p50_ms"].as_f64().unwrap_or(f64::NAN) / a[k]["p50_ms"].as_f64().unwrap_or(f64::NAN);
            lines.push(format!(
                "- {layout}, 100k vs 10k (p50): get_exact hit {:.2}×, get_similar hit {:.2}×, get_similar miss {:.2}×",
                ratio("get_exact_hit"),
                ratio("get_similar_hit"),
                ratio("get_similar_miss")
            ));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(report);
        for l in lines {
            let _ = writeln!(report, "{l}");
        }
    }
}

// --------------------------------------------------------------------- main

struct Args {
    out: Option<PathBuf>,
    md: Option<PathBuf>,
    model_dir: Option<PathBuf>,
    work: Option<PathBuf>,
    prompts: usize,
    sizes: Vec<usize>,
    skip_embedding: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        out: None,
        md: None,
        model_dir: None,
        work: None,
        prompts: 200,
        sizes: vec![10_000, 100_000],
        skip_embedding: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => a.out = Some(val()?.into()),
            "--md" => a.md = Some(val()?.into()),
            "--model-dir" => a.model_dir = Some(val()?.into()),
            "--work" => a.work = Some(val()?.into()),
            "--prompts" => a.prompts = val()?.parse().context("--prompts")?,
            "--sizes" => {
                a.sizes =
                    val()?.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>().context("--sizes")?
            }
            "--skip-embedding" => a.skip_embedding = true,
            "-h" | "--help" => {
                println!(
                    "cache_bench [--out FILE.json] [--md FILE.md] [--model-dir DIR] [--work DIR] \
                     [--prompts N per kind, default 200] [--sizes 10000,100000] [--skip-embedding]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(a)
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "loadavg_at_start": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let mut report = String::from("# Tollgate response cache: embedding and store\n");
    let mut out = json!({"machine": machine()});
    let m = &out["machine"];
    let _ = writeln!(
        report,
        "\nMachine: {} CPUs, {}; load average {} at the start. Release build.",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?")
    );

    if !args.skip_embedding {
        let dir = match args.model_dir.clone().or_else(default_model_dir) {
            Some(d) => d,
            None => bail!("no embedding model: run scripts/install.sh, or pass --model-dir"),
        };
        eprintln!("cache_bench: embedding {} short and {} long prompts", args.prompts, args.prompts);
        out["embedding"] = bench_embedding(&dir, args.prompts, &mut report)?;
    }

    let work = args
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("tollgate-cache-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let layouts = [Layout { name: "one partition", partitions: 1 }, Layout { name: "100 partitions", partitions: 100 }];
    let mut rows = Vec::new();
    let result: Result<()> = rt.block_on(async {
        for &n in &args.sizes {
            for layout in &layouts {
                eprintln!("cache_bench: store, {n} entries, {}", layout.name);
                rows.push(bench_store(&work, n, layout, 0x7011_6a7e ^ n as u64).await?);
            }
        }
        Ok(())
    });
    if args.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result?;
    lookup_table(&mut report, &rows);
    out["store"] = Value::Array(rows);
    out["threshold"] = json!(THRESHOLD);
    out["wall_time_s"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    let _ = writeln!(report, "\n({:.0} s)", started.elapsed().as_secs_f64());

    print!("{report}");
    if let Some(path) = &args.out {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(path, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.md {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
