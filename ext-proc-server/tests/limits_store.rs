//! The limits store (rate limits and budgets): shared behaviour checked on
//! both backends, then what only the embedded journal or only Redis promises.
//! The Redis tests start their own `redis-server` on a Unix socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tollgate_ext_proc::limits::embedded::{EmbeddedOptions, EmbeddedStore};
use tollgate_ext_proc::limits::redis::RedisStore;
use tollgate_ext_proc::limits::{stored_key, Charge, Denied, Store, StoreError, UsageRecord, UsageRow, Window};

/// 2026-11-23T16:34:44Z: 44 s into its minute.
const T0: u64 = 1_795_451_684;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

// ---------------------------------------------------------------- fixtures

#[path = "common/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Redis,
}

/// A store of one backend and what keeps it alive.
struct Fixture {
    store: Arc<Store>,
    prefix: String,
    _dir: Option<TempDir>,
    _redis: Option<RedisServer>,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let store = EmbeddedStore::open(dir.path()).unwrap();
                Self { store: Arc::new(store.into()), prefix: String::new(), _dir: Some(dir), _redis: None }
            }
            Backend::Redis => {
                let server = RedisServer::start();
                let prefix = "tg:".to_string();
                let store = RedisStore::connect(&server.url(), &prefix).await.unwrap();
                Self { store: Arc::new(store.into()), prefix, _dir: None, _redis: Some(server) }
            }
        }
    }

    fn key(&self, key: &str, window: Window, now: SystemTime) -> String {
        stored_key(&self.prefix, key, window, now)
    }
}

fn charge(key: &str, window: Window, limit: Option<u64>, amount: u64) -> Charge {
    Charge { key: key.into(), window, limit, amount }
}

/// Runs a shared check on each backend as its own test.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name(super::Fixture::new(super::Backend::Embedded).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$name(super::Fixture::new(super::Backend::Redis).await).await;
            }
        }
    )*};
}

on_both_backends!(
    all_or_nothing,
    window_rollover,
    adjust_reconciles_and_clamps,
    extend_denies_without_changing,
    concurrent_reserves_never_exceed,
    usage_totals_per_day,
);

// ------------------------------------------------------- shared behaviour

async fn all_or_nothing(fx: Fixture) {
    let now = at(T0);
    let store = &fx.store;
    let first = [
        charge("team:demo:tokens", Window::Day, Some(1000), 300),
        charge("team:demo:requests", Window::Minute, Some(3), 1),
        charge("team:demo:spend", Window::Month, None, 5_000_000),
    ];
    let res = store.reserve(now, &first).await.unwrap().unwrap();
    let used: Vec<u64> = res.entries.iter().map(|e| e.used_after).collect();
    assert_eq!(used, [300, 1, 5_000_000]);
    assert_eq!(res.entries[0].stored_key, fx.key("team:demo:tokens", Window::Day, now));
    assert_eq!(res.entries[0].remaining(), Some(700));
    assert_eq!(res.entries[2].remaining(), None);
    assert_eq!(res.entries[1].reset_after, Duration::from_secs(16));

    store.reserve(now, &[charge("team:demo:requests", Window::Minute, Some(3), 2)]).await.unwrap().unwrap();

    // The second charge is over its limit: nothing at all changes.
    let over = [
        charge("team:demo:tokens", Window::Day, Some(1000), 300),
        charge("team:demo:requests", Window::Minute, Some(3), 1),
        charge("team:demo:spend", Window::Month, None, 1),
    ];
    let denied = store.reserve(now, &over).await.unwrap().unwrap_err();
    assert_eq!(
        denied,
        Denied {
            key: "team:demo:requests".into(),
            window: Window::Minute,
            limit: 3,
            used: 3,
            reset_after: Duration::from_secs(16),
        }
    );
    assert!(denied.reset_after <= Duration::from_secs(60));
    assert_eq!(store.get(&fx.key("team:demo:tokens", Window::Day, now)).await.unwrap(), 300);
    assert_eq!(store.get(&fx.key("team:demo:requests", Window::Minute, now)).await.unwrap(), 3);
    assert_eq!(store.get(&fx.key("team:demo:spend", Window::Month, now)).await.unwrap(), 5_000_000);

    // Exactly up to the limit is allowed; one more is not.
    let res = store.reserve(now, &[charge("team:demo:tokens", Window::Day, Some(1000), 700)]).await.unwrap();
    assert_eq!(res.unwrap().entries[0].used_after, 1000);
    let denied = store.reserve(now, &[charge("team:demo:tokens", Window::Day, Some(1000), 1)]).await.unwrap();
    let denied = denied.unwrap_err();
    assert_eq!((denied.used, denied.limit, denied.window), (1000, 1000, Window::Day));
    assert_eq!(denied.reset_after, Window::Day.reset_after(now));

    // The same counter charged twice in one reserve counts twice.
    let twice = [
        charge("consumer:a:tokens", Window::Minute, Some(10), 6),
        charge("consumer:a:tokens", Window::Minute, Some(10), 6),
    ];
    let denied = store.reserve(now, &twice).await.unwrap().unwrap_err();
    assert_eq!(denied.used, 0);
    assert_eq!(store.get(&fx.key("consumer:a:tokens", Window::Minute, now)).await.unwrap(), 0);
}

async fn window_rollover(fx: Fixture) {
    let store = &fx.store;
    for window in [Window::Minute, Window::Day, Window::Month] {
        let now = at(T0);
        let key = format!("roll:{window}");
        store.reserve(now, &[charge(&key, window, Some(10), 10)]).await.unwrap().unwrap();
        assert!(store.reserve(now, &[charge(&key, window, Some(10), 1)]).await.unwrap().is_err());

        // The last instant of the window is still the same window.
        let last = now + window.reset_after(now) - Duration::from_millis(1);
        assert_eq!(window.id(last), window.id(now));
        assert!(store.reserve(last, &[charge(&key, window, Some(10), 1)]).await.unwrap().is_err());

        let next = now + window.reset_after(now);
        assert_ne!(window.id(next), window.id(now));
        let res = store.reserve(next, &[charge(&key, window, Some(10), 1)]).await.unwrap().unwrap();
        assert_eq!(res.entries[0].used_after, 1, "{window}: the next window starts from zero");
        assert_eq!(store.get(&fx.key(&key, window, now)).await.unwrap(), 10);
    }
    assert_eq!(Window::Month.id(at(T0)), "M2026-11");
    assert_eq!(Window::Month.id(at(T0) + Window::Month.reset_after(at(T0))), "M2026-12");
}

async fn adjust_reconciles_and_clamps(fx: Fixture) {
    let now = at(T0);
    let store = &fx.store;
    let res = store.reserve(now, &[charge("c:tokens", Window::Day, Some(100), 50)]).await.unwrap().unwrap();
    let key = res.entries[0].stored_key.clone();

    store.adjust(&[(key.clone(), -20)]).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), 30, "reconciled down to real usage");
    store.adjust(&[(key.clone(), 15)]).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), 45, "reconciled up to real usage");
    store.adjust(&[(key.clone(), -1000)]).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), 0, "clamped at zero");

    // Adjust never denies, even past the limit.
    store.adjust(&[(key.clone(), 150)]).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), 150);

    // Several keys at once, and a key with no counter (its window expired) is left alone.
    let gone = fx.key("c:tokens", Window::Day, at(T0 - 7 * 86_400));
    store.adjust(&[(key.clone(), -50), (gone.clone(), 5), (key.clone(), -25)]).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), 75);
    assert_eq!(store.get(&gone).await.unwrap(), 0);
    store.adjust(&[]).await.unwrap();
}

async fn extend_denies_without_changing(fx: Fixture) {
    let now = at(T0);
    let store = &fx.store;
    let res = store
        .reserve(
            now,
            &[charge("s:tokens", Window::Minute, Some(100), 50), charge("s:spend", Window::Day, Some(1000), 10)],
        )
        .await
        .unwrap()
        .unwrap();
    let tokens = res.entries[0].stored_key.clone();
    let spend = res.entries[1].stored_key.clone();

    store.extend(now, &[(tokens.clone(), Some(100), 40, Window::Minute)]).await.unwrap().unwrap();
    assert_eq!(store.get(&tokens).await.unwrap(), 90);

    let both = [(spend.clone(), Some(1000), 20, Window::Day), (tokens.clone(), Some(100), 20, Window::Minute)];
    let denied = store.extend(now, &both).await.unwrap().unwrap_err();
    assert_eq!(
        denied,
        Denied {
            key: "s:tokens".into(),
            window: Window::Minute,
            limit: 100,
            used: 90,
            reset_after: Duration::from_secs(16),
        }
    );
    assert_eq!(store.get(&tokens).await.unwrap(), 90, "denied extend changes nothing");
    assert_eq!(store.get(&spend).await.unwrap(), 10, "denied extend changes nothing");

    // Unlimited entries always extend.
    store.extend(now, &[(spend.clone(), None, 5000, Window::Day)]).await.unwrap().unwrap();
    assert_eq!(store.get(&spend).await.unwrap(), 5010);
}

async fn concurrent_reserves_never_exceed(fx: Fixture) {
    let now = at(T0);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = fx.store.clone();
            tokio::spawn(async move {
                store.reserve(now, &[charge("hot:tokens", Window::Minute, Some(200), 10)]).await.unwrap().is_ok()
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 20);
    assert_eq!(fx.store.get(&fx.key("hot:tokens", Window::Minute, now)).await.unwrap(), 200);
}

fn usage(team: &str, consumer: &str, model: &str, input: u64, cost: u64) -> UsageRecord {
    UsageRecord {
        team: team.into(),
        consumer: consumer.into(),
        model: model.into(),
        requests: 1,
        input_tokens: input,
        output_tokens: input / 2,
        cached_tokens: 1,
        cost_micros: cost,
    }
}

fn row(day: &str, team: &str, consumer: &str, model: &str, requests: u64, input: u64, cost: u64) -> UsageRow {
    UsageRow {
        day: day.into(),
        team: team.into(),
        consumer: consumer.into(),
        model: model.into(),
        requests,
        input_tokens: input,
        output_tokens: input / 2,
        cached_tokens: requests,
        cost_micros: cost,
    }
}

async fn usage_totals_per_day(fx: Fixture) {
    let store = &fx.store;
    let day1 = at(T0 - 86_400);
    let day2 = at(T0);
    store.record_usage(day1, &usage("search", "api", "gpt-4o-mini", 100, 15)).await.unwrap();
    store.record_usage(day2, &usage("search", "api", "gpt-4o-mini", 100, 15)).await.unwrap();
    store.record_usage(day2, &usage("search", "api", "gpt-4o-mini", 200, 30)).await.unwrap();
    store.record_usage(day2, &usage("search", "batch", "gpt-4o-mini", 10, 2)).await.unwrap();
    store.record_usage(day2, &usage("ads", "web", "claude", 40, 1_000_000)).await.unwrap();

    let all = store.usage_report("2026-11-22", None).await.unwrap();
    assert_eq!(
        all,
        [
            row("2026-11-22", "search", "api", "gpt-4o-mini", 1, 100, 15),
            row("2026-11-23", "ads", "web", "claude", 1, 40, 1_000_000),
            row("2026-11-23", "search", "api", "gpt-4o-mini", 2, 300, 30 + 15),
            row("2026-11-23", "search", "batch", "gpt-4o-mini", 1, 10, 2),
        ]
    );
    let search_today = store.usage_report("2026-11-23", Some("search")).await.unwrap();
    assert_eq!(search_today, all[2..]);
    assert!(store.usage_report("2026-11-24", None).await.unwrap().is_empty());
    assert!(store.usage_report("2026-01-01", Some("nobody")).await.unwrap().is_empty());
}

// ------------------------------------------------------- embedded journal

fn open(dir: &Path) -> Store {
    EmbeddedStore::open(dir).unwrap().into()
}

/// Drops the store without running any destructor, as a killed process would.
fn kill(store: Store) {
    std::mem::forget(store);
}

#[tokio::test]
async fn embedded_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let month = stored_key("", "team:t:spend", Window::Month, now);
    let day = stored_key("", "team:t:tokens", Window::Day, now);
    {
        let store = open(dir.path());
        store
            .reserve(
                now,
                &[
                    charge("team:t:spend", Window::Month, Some(10_000), 700),
                    charge("team:t:tokens", Window::Day, None, 40),
                ],
            )
            .await
            .unwrap()
            .unwrap();
        store.adjust(&[(month.clone(), -200)]).await.unwrap();
        store.extend(now, &[(day.clone(), None, 2, Window::Day)]).await.unwrap().unwrap();
        store.record_usage(now, &usage("t", "c", "m", 10, 99)).await.unwrap();
        kill(store);
    }
    let store = open(dir.path());
    assert_eq!(store.get(&month).await.unwrap(), 500);
    assert_eq!(store.get(&day).await.unwrap(), 42);
    let rows = store.usage_report("2000-01-01", None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].input_tokens, rows[0].cost_micros), (10, 99));

    // And again after the reopen compacted the journal into a snapshot.
    store.record_usage(now, &usage("t", "c", "m", 10, 1)).await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(&month).await.unwrap(), 500);
    assert_eq!(store.usage_report("2000-01-01", Some("t")).await.unwrap()[0].cost_micros, 100);
}

#[tokio::test]
async fn embedded_skips_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let key = stored_key("", "k", Window::Month, now);
    let store = open(dir.path());
    store.reserve(now, &[charge("k", Window::Month, Some(100), 30)]).await.unwrap().unwrap();
    store.record_usage(now, &usage("t", "c", "m", 5, 5)).await.unwrap();
    kill(store);

    let journal = dir.path().join("limits.journal");
    let mut f = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    f.write_all(br#"{"c":[["k:M20"#).unwrap();
    drop(f);

    let store = open(dir.path());
    assert_eq!(store.get(&key).await.unwrap(), 30);
    assert_eq!(store.usage_report("2000-01-01", None).await.unwrap().len(), 1);
    // The store keeps working and journaling after the torn line.
    store.reserve(now, &[charge("k", Window::Month, Some(100), 30)]).await.unwrap().unwrap();
    kill(store);
    let store = open(dir.path());
    assert_eq!(store.get(&key).await.unwrap(), 60);
}

#[tokio::test]
async fn embedded_drops_expired_counters_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let old = at(1_577_836_800); // 2020-01-01
    let store = open(dir.path());
    store
        .reserve(old, &[charge("k", Window::Minute, None, 7), charge("k", Window::Month, None, 8)])
        .await
        .unwrap()
        .unwrap();
    store.reserve(now, &[charge("k", Window::Month, None, 9)]).await.unwrap().unwrap();
    store.record_usage(old, &usage("t", "c", "m", 1, 1)).await.unwrap();
    assert_eq!(store.get(&stored_key("", "k", Window::Minute, old)).await.unwrap(), 7);
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.get(&stored_key("", "k", Window::Minute, old)).await.unwrap(), 0);
    assert_eq!(store.get(&stored_key("", "k", Window::Month, old)).await.unwrap(), 0);
    assert_eq!(store.get(&stored_key("", "k", Window::Month, now)).await.unwrap(), 9);
    // Usage rows are kept for reports.
    assert_eq!(store.usage_report("2020-01-01", None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn embedded_compacts_a_long_journal() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let opts = EmbeddedOptions { fsync: true, compact_after_lines: 5 };
    let store: Store = EmbeddedStore::open_with(dir.path(), opts.clone()).unwrap().into();
    for _ in 0..12 {
        store.reserve(now, &[charge("k", Window::Day, None, 1)]).await.unwrap().unwrap();
    }
    let lines = std::fs::read_to_string(dir.path().join("limits.journal")).unwrap().lines().count();
    assert!(lines < 5, "journal has {lines} lines after compaction");
    kill(store);
    let store: Store = EmbeddedStore::open_with(dir.path(), opts).unwrap().into();
    assert_eq!(store.get(&stored_key("", "k", Window::Day, now)).await.unwrap(), 12);
}

#[test]
fn embedded_unusable_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("state");
    let err = EmbeddedStore::open(&bad).err().expect("opening under a file must fail");
    assert!(matches!(err, StoreError::Dir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
}

// ------------------------------------------------------------------ redis

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_replicas_share_one_budget() {
    let server = RedisServer::start();
    let a: Arc<Store> = Arc::new(RedisStore::connect(&server.url(), "tg:").await.unwrap().into());
    let b: Arc<Store> = Arc::new(RedisStore::connect(&server.url(), "tg:").await.unwrap().into());
    let now = at(T0);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let charges = [
                    charge("team:x:tokens", Window::Day, Some(200), 10),
                    charge("team:x:requests", Window::Minute, Some(25), 1),
                ];
                store.reserve(now, &charges).await.unwrap().is_ok()
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 20);
    let tokens = stored_key("tg:", "team:x:tokens", Window::Day, now);
    assert_eq!(a.get(&tokens).await.unwrap(), 200);
    assert_eq!(b.get(&tokens).await.unwrap(), 200);
    assert_eq!(b.get(&stored_key("tg:", "team:x:requests", Window::Minute, now)).await.unwrap(), 20);

    // Another prefix is another budget.
    let other: Store = RedisStore::connect(&server.url(), "other:").await.unwrap().into();
    assert_eq!(other.get(&stored_key("other:", "team:x:tokens", Window::Day, now)).await.unwrap(), 0);
    other.reserve(now, &[charge("team:x:tokens", Window::Day, Some(200), 10)]).await.unwrap().unwrap();
}

#[tokio::test]
async fn redis_counters_expire_after_their_window() {
    let server = RedisServer::start();
    let store: Store = RedisStore::connect(&server.url(), "tg:").await.unwrap().into();
    let now = at(T0);
    store.reserve(now, &[charge("k", Window::Minute, None, 1)]).await.unwrap().unwrap();
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(server.socket())
        .args(["PTTL", &stored_key("tg:", "k", Window::Minute, now)])
        .output()
        .expect("redis-cli (installed with redis-server) must be on PATH");
    let ttl: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // 16 s left in the minute plus the margin.
    assert!((16_000..=16_000 + 120_000).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn redis_not_listening_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/");

    let started = Instant::now();
    let err = RedisStore::connect(&url, "tg:").await.err().expect("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1") && (msg.contains("unreachable") || msg.contains("did not answer")), "{msg}");

    let store: Store = RedisStore::connect_lazy(&url, "tg:").await.unwrap().into();
    for _ in 0..3 {
        let started = Instant::now();
        let res = store.reserve(at(T0), &[charge("k", Window::Minute, Some(1), 1)]).await;
        assert!(res.is_err(), "{res:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn redis_going_down_fails_fast_and_recovers() {
    let server = RedisServer::start();
    let url = server.url();
    let store: Store = RedisStore::connect(&url, "tg:").await.unwrap().into();
    store.reserve(at(T0), &[charge("k", Window::Minute, None, 1)]).await.unwrap().unwrap();
    let dir = server.stop();

    for _ in 0..3 {
        let started = Instant::now();
        let res = store.reserve(at(T0), &[charge("k", Window::Minute, None, 1)]).await;
        assert!(res.is_err(), "{res:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        let res = store.record_usage(at(T0), &usage("t", "c", "m", 1, 1)).await;
        assert!(res.is_err());
    }

    // A new server on the same address: the store reconnects by itself.
    let _server = RedisServer::start_in(dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if store.reserve(at(T0), &[charge("k", Window::Minute, None, 1)]).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "store did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
