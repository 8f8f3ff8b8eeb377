//! The latency the limiter adds to one request, embedded store and Redis,
//! against no limiter, measured in one run:
//!
//! ```sh
//! cargo bench -p tollgate-ext-proc --bench limiter
//! ```
//!
//! One request is what the sidecar runs for it around the upstream call:
//! [`Budget::reserve`] when the body arrives, then [`Budget::settle`] with the
//! provider's usage when the answer ends. The caller is a consumer of a team,
//! and both scopes have a requests-per-minute, a tokens-per-minute, a
//! cost-per-day and a cost-per-month limit, so every request charges eight
//! counters; the limits are far too high to ever be hit.
//!
//! Rows:
//! - `none (baseline)`: see [`baseline_request`];
//! - `embedded, no limits` / `redis, no limits`: the same consumer and team
//!   without limits. Nothing is reserved, but `settle` still records the
//!   usage for reports: what a sidecar with a store and no limits pays;
//! - `embedded, 8 limits` / `redis, 8 limits`: the full limiter path.
//!
//! Each request is timed on its own (one `Instant` pair, ~tens of ns, is
//! included in every row alike) inside criterion's `iter_custom`, on a tokio
//! worker thread as in the sidecar; the table printed at the end (and written
//! to `target/bench/limiter.md`) gives the median and p99 of those
//! per-request times, from a uniform sample of every request criterion ran.
//! Redis rows need `redis-server` on the PATH (a private one is started on a
//! free loopback port, no persistence); without it they are skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tollgate_core::policy::Policy;
use tollgate_core::usage::Usage;
use tollgate_ext_proc::budget::Budget;
use tollgate_ext_proc::config::parse_policy;
use tollgate_ext_proc::identity::{Identity, Via};
use tollgate_ext_proc::limits::embedded::EmbeddedStore;
use tollgate_ext_proc::limits::redis::RedisStore;
use tollgate_ext_proc::limits::Store;

/// The upstream model (in the built-in price table, so cost limits charge).
const MODEL: &str = "gpt-4o-mini";
/// Prompt tokens of the request; it sets no `max_tokens`, so the reservation
/// covers `reserveOutputTokens` (512) of output.
const INPUT_TOKENS: u64 = 200;
/// What the provider reports at the end.
const USAGE: Usage = Usage { input_tokens: 200, output_tokens: 150, cached_tokens: 0, total_tokens: 350 };

/// Per-request samples kept per row (a uniform sample of all requests).
const RESERVOIR: usize = 200_000;
/// Requests run before measuring (connections, scripts, allocations).
const PREWARM: u64 = 2_000;

const PROVIDERS: &str = "providers:\n  openai: {kind: openai, baseUrl: 'https://api.openai.com'}\n";

/// Limits that are never hit: 1e12 requests and tokens a minute, $1e9 a day and a month.
const HUGE: &str =
    "{requestsPerMinute: 1000000000000, tokensPerMinute: 1000000000000, costPerDay: 1.0e9, costPerMonth: 1.0e9}";

/// Fail closed, so a store error refuses the request (and the bench stops)
/// instead of letting it through unmeasured.
fn policy(limited: bool) -> Policy {
    let limits = if limited { HUGE } else { "{}" };
    let text = format!(
        "{PROVIDERS}limits: {{failMode: closed}}\nteams:\n  research: {{limits: {limits}}}\n\
         consumers:\n  alice: {{team: research, limits: {limits}}}\n"
    );
    parse_policy(&text).expect("bench policy")
}

fn caller() -> Identity {
    Identity { consumer: "alice".into(), team: "research".into(), via: Via::Key }
}

/// One configuration under measurement.
#[derive(Clone)]
struct Case {
    budget: Budget,
    policy: Arc<Policy>,
    who: Identity,
    /// Whether every request must hold a reservation (checked each time).
    limited: bool,
    /// The baseline: see [`baseline_request`].
    baseline: bool,
}

/// The full limiter path of one request: reserve, then settle the usage.
async fn limited_request(case: &Case) -> u64 {
    let held = case
        .budget
        .reserve(&case.policy, Some(&case.who), MODEL, INPUT_TOKENS, None, SystemTime::now())
        .await
        .unwrap_or_else(|r| panic!("request refused: {}", r.error));
    assert_eq!(held.reservation.is_some(), case.limited, "the store must charge exactly when limits are set");
    case.budget.settle(&held, &USAGE, SystemTime::now()).await
}

/// The baseline, "no limiter": the same code path minus the store.
///
/// A sidecar without a limiter does nothing here at all, which would make
/// every ratio a division by ~0. So the baseline keeps all of the limiter's
/// per-request work that does not touch the store: the real
/// `Budget::reserve` for a caller whose consumer and team have no limits
/// (it builds the `Held`, prices the estimate and finds no counter to charge,
/// so it returns without calling the store), then what `settle` computes
/// before it writes, the cost of the real usage. Only `settle`'s store writes
/// (the reconciliation, none here, and the usage record) are left out. Rows
/// above it therefore show what the store adds, and "added" is a slight
/// underestimate of the limiter's whole cost (by the baseline itself).
async fn baseline_request(case: &Case) -> u64 {
    let held = case
        .budget
        .reserve(&case.policy, Some(&case.who), MODEL, INPUT_TOKENS, None, SystemTime::now())
        .await
        .unwrap_or_else(|r| panic!("request refused: {}", r.error));
    assert!(held.reservation.is_none(), "the baseline must not reach the store");
    black_box(SystemTime::now());
    case.budget.prices.cost_micros(&held.model, &USAGE)
}

/// Runs `iters` requests on a tokio worker, timing each; returns the total
/// and the per-request times in nanoseconds.
fn run(rt: &Runtime, case: &Case, iters: u64, keep: bool) -> (Duration, Vec<u64>) {
    let case = case.clone();
    let task = rt.spawn(async move {
        let mut total = Duration::ZERO;
        let mut samples = Vec::with_capacity(if keep { iters as usize } else { 0 });
        for _ in 0..iters {
            let start = Instant::now();
            let cost = if case.baseline { baseline_request(&case).await } else { limited_request(&case).await };
            let took = start.elapsed();
            black_box(cost);
            total += took;
            if keep {
                samples.push(took.as_nanos() as u64);
            }
        }
        (total, samples)
    });
    rt.block_on(task).expect("benchmark task")
}

/// A uniform sample of a stream of per-request times (algorithm R).
struct Reservoir {
    kept: Vec<u64>,
    seen: u64,
    rng: u64,
}

impl Reservoir {
    fn new() -> Self {
        Self { kept: Vec::with_capacity(RESERVOIR), seen: 0, rng: 0x9E37_79B9_7F4A_7C15 }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn add(&mut self, sample: u64) {
        self.seen += 1;
        if self.kept.len() < RESERVOIR {
            self.kept.push(sample);
        } else {
            let j = self.next() % self.seen;
            if (j as usize) < RESERVOIR {
                self.kept[j as usize] = sample;
            }
        }
    }

    /// (median, p99) in nanoseconds.
    fn percentiles(&self) -> Option<(u64, u64)> {
        if self.kept.is_empty() {
            return None;
        }
        let mut v = self.kept.clone();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

/// A `redis-server` of our own on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// `Err` says why there is no Redis to measure.
    fn start() -> Result<Self, String> {
        match Command::new("redis-server").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`redis-server --version` failed: {}", out.status)),
            Err(e) => {
                return Err(format!(
                    "redis-server cannot be run ({e}); install it with `apt-get install -y redis-server`"
                ))
            }
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server on port {port} exited early: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {port} did not start in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, port, _dir: dir })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A row of the table: its name and its case (`Err`: skipped, with why).
struct Row {
    name: &'static str,
    case: Result<Case, String>,
    samples: Arc<Mutex<Reservoir>>,
}

fn case(store: &Store, limited: bool, baseline: bool) -> Case {
    let policy = policy(limited);
    Case { budget: Budget::new(store.clone(), &policy), policy: Arc::new(policy), who: caller(), limited, baseline }
}

/// `target/bench` of this workspace (or of `CARGO_TARGET_DIR`).
fn out_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().map_or_else(|| manifest.join("target"), |workspace| workspace.join("target"))
        }
    };
    target.join("bench")
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // criterion runs each benchmark once as a smoke test, and no table is
    // written from that.
    let measuring = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    let dir = tempfile::tempdir().expect("temp dir");
    let embedded: Store = EmbeddedStore::open(dir.path()).expect("embedded store").into();
    let redis_server = RedisServer::start();
    let redis: Result<Store, String> = match &redis_server {
        Ok(server) => rt
            .block_on(RedisStore::connect(&server.url(), "tollgate:"))
            .map(Store::from)
            .map_err(|e| format!("cannot connect to the bench's redis-server: {e}")),
        Err(why) => Err(why.clone()),
    };
    if let Err(why) = &redis {
        eprintln!("limiter bench: skipping the Redis rows: {why}");
    }

    let rows: Vec<Row> = [
        // The baseline's store is never called (checked per request).
        ("none (baseline)", Ok(case(&embedded, false, true))),
        ("embedded, no limits", Ok(case(&embedded, false, false))),
        ("embedded, 8 limits", Ok(case(&embedded, true, false))),
        ("redis, no limits", redis.clone().map(|s| case(&s, false, false))),
        ("redis, 8 limits", redis.clone().map(|s| case(&s, true, false))),
    ]
    .into_iter()
    .map(|(name, case)| Row { name, case, samples: Arc::new(Mutex::new(Reservoir::new())) })
    .collect();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    for row in &rows {
        let Ok(case) = &row.case else { continue };
        run(&rt, case, if measuring { PREWARM } else { 1 }, false);
        let samples = row.samples.clone();
        c.bench_function(&format!("limiter/{}", row.name), |b| {
            b.iter_custom(|iters| {
                let (total, times) = run(&rt, case, iters, true);
                let mut kept = samples.lock().expect("samples");
                times.into_iter().for_each(|t| kept.add(t));
                total
            });
        });
        // Fail closed turns reserve errors into refusals (a panic above);
        // settle's errors are only counted, so check them here.
        let errors = case.budget.stats.store_errors.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(errors, 0, "{}: {errors} store errors while settling", row.name);
    }
    c.final_summary();

    // (median, p99) and the number of requests seen, per row.
    let summary = |row: &Row| {
        let s = row.samples.lock().expect("samples");
        (s.percentiles(), s.seen)
    };
    let base = rows.first().and_then(|r| summary(r).0);
    let mut table = String::new();
    table.push_str(
        "| configuration | requests | median µs | p99 µs | median × baseline | p99 × baseline | added median µs |\n",
    );
    table.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for row in &rows {
        let (p, seen) = summary(row);
        match (p, base, &row.case) {
            (Some((med, p99)), Some((bmed, bp99)), _) => {
                let _ = writeln!(
                    table,
                    "| {} | {seen} | {:.2} | {:.2} | {:.1} | {:.1} | {:+.2} |",
                    row.name,
                    us(med),
                    us(p99),
                    med as f64 / bmed.max(1) as f64,
                    p99 as f64 / bp99.max(1) as f64,
                    us(med) - us(bmed),
                );
            }
            (_, _, Err(why)) => {
                let _ = writeln!(table, "| {} | skipped: {} | | | | | |", row.name, why.replace('|', "/"));
            }
            _ => {
                let _ = writeln!(table, "| {} | not run | | | | | |", row.name);
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let note = format!(
        "\nPer request: `Budget::reserve` + `Budget::settle` (consumer + team, each with requests/min, \
         tokens/min, cost/day, cost/month limits never hit), timed one by one on a tokio worker; {cpus} CPUs. \
         Baseline: the same reserve for a caller without limits plus settle's pricing, without any store call.\n"
    );
    if !measuring {
        println!("limiter bench: test mode (no `--bench`): each configuration ran once; no table");
        return;
    }
    println!("\nLimiter latency per request\n\n{table}{note}");
    let out = out_dir();
    let path = out.join("limiter.md");
    let written = std::fs::create_dir_all(&out)
        .and_then(|()| std::fs::write(&path, format!("# Limiter latency per request\n\n{table}{note}")));
    match written {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    // The Redis server (a local) is stopped when `main` returns, after the stores.
}
