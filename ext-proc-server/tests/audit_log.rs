//! The audit log's storage: chaining, rotation, recovery, verification and queries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tollgate_ext_proc::audit::{
    self, query, tail, verify, AuditError, AuditOptions, AuditRecord, AuditWriter, Filter, FsyncPolicy, Problem,
    GENESIS_PREV,
};

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        time: audit::rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + i * 60)),
        request_id: format!("req-{i}"),
        consumer: if i.is_multiple_of(2) { "alice".into() } else { "bob".into() },
        team: if i.is_multiple_of(3) { "search".into() } else { "ads".into() },
        api: "openai.chat".into(),
        requested_model: "smart".into(),
        model: if i.is_multiple_of(2) { "gpt-4o-mini".into() } else { "claude-sonnet-4-5".into() },
        provider: "openai".into(),
        attempts: 1,
        status: 200,
        latency_ms: 120 + i,
        ttft_ms: Some(40),
        input_tokens: 1000 + i,
        output_tokens: 200,
        cached_tokens: 0,
        cost_usd: 0.000_345 * i as f64,
        cache: Some("miss".into()),
        decisions: if i.is_multiple_of(5) {
            serde_json::json!({"firewall": {"action": "flag", "score": 0.61}})
        } else {
            serde_json::json!({"pii": ["EMAIL_ADDRESS"]})
        },
        prompt: Some(format!("question {i} from <EMAIL_ADDRESS_1>")),
        response: Some("answer".into()),
        ..AuditRecord::default()
    }
}

/// Small segments so a few records rotate.
fn small() -> AuditOptions {
    AuditOptions { max_segment_bytes: 2_000, max_segment_age: Duration::from_secs(3600), fsync: FsyncPolicy::Every }
}

async fn write_n(dir: &Path, options: AuditOptions, range: std::ops::RangeInclusive<u64>) -> AuditWriter {
    let writer = AuditWriter::open(dir, options).unwrap();
    for i in range {
        assert_eq!(writer.append(record(i)).await.unwrap(), i);
    }
    writer
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn assert_ok(dir: &Path, records: u64) -> audit::VerifyReport {
    let report = verify(dir).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, records, "{report}");
    assert_eq!(report.last_seq, records);
    report
}

#[tokio::test]
async fn chain_spans_rotated_segments() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), small(), 1..=20).await);
    let segs = segments(dir.path());
    assert!(segs.len() >= 5, "expected rotation, got {segs:?}");

    let mut expected_seq = 1;
    let mut prev = GENESIS_PREV.to_string();
    for seg in &segs {
        assert!(std::fs::metadata(seg).unwrap().len() <= 2_000);
        let name = seg.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name, format!("audit-{expected_seq:020}.jsonl"));
        for line in lines(seg) {
            let rec: AuditRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(rec.seq, expected_seq);
            assert_eq!(rec.prev, prev);
            assert_eq!(rec.request_id, format!("req-{expected_seq}"));
            // The JSON is camelCase.
            assert!(line.contains("\"requestId\":") && line.contains("\"costUsd\":") && line.contains("\"ttftMs\":40"));
            prev = rec.hash;
            expected_seq += 1;
        }
    }
    assert_eq!(expected_seq, 21);
    let report = assert_ok(dir.path(), 20);
    assert_eq!(report.last_hash, prev);
    assert_eq!(report.segments, segs.len());
}

#[tokio::test]
async fn rotation_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions { max_segment_age: Duration::from_millis(50), ..AuditOptions::default() };
    let writer = write_n(dir.path(), options, 1..=2).await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(writer.append(record(3)).await.unwrap(), 3);
    drop(writer);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert!(segs[1].ends_with("audit-00000000000000000003.jsonl"));
    assert_ok(dir.path(), 3);
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), small(), 1..=7).await);
    let writer = write_n(dir.path(), small(), 8..=12).await;
    assert!(writer.torn_tail().is_none());
    drop(writer);
    // A third generation, with a different policy and bigger segments.
    let options = AuditOptions { fsync: FsyncPolicy::Never, ..AuditOptions::default() };
    let writer = write_n(dir.path(), options, 13..=14).await;
    writer.sync().await.unwrap();
    drop(writer);
    assert_ok(dir.path(), 14);
}

#[tokio::test]
async fn verify_detects_an_edited_field() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), small(), 1..=12).await);
    let seg = segments(dir.path())[1].clone();
    let mut content = lines(&seg);
    let target = content[1].clone();
    let rec: AuditRecord = serde_json::from_str(&target).unwrap();
    let from = format!("\"inputTokens\":{}", rec.input_tokens);
    let to = format!("\"inputTokens\":{}", rec.input_tokens - 1);
    content[1] = target.replace(&from, &to);
    assert_ne!(content[1], target);
    write_lines(&seg, &content);

    let report = verify(dir.path()).unwrap();
    let broken = report.broken.clone().expect("edit not detected");
    assert_eq!(broken.segment, seg);
    assert_eq!(broken.line, 2);
    assert_eq!(broken.seq, Some(rec.seq));
    assert!(matches!(broken.problem, Problem::HashMismatch { .. }), "{broken}");
    assert_eq!(report.records, rec.seq - 1);
    assert!(report.to_string().contains("hash mismatch"), "{report}");
}

#[tokio::test]
async fn verify_detects_a_rehashed_edit_by_its_link() {
    // Editing a record and recomputing its own hash still breaks the next link.
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), AuditOptions::default(), 1..=4).await);
    let seg = segments(dir.path())[0].clone();
    let mut content = lines(&seg);
    let mut rec: AuditRecord = serde_json::from_str(&content[1]).unwrap();
    rec.cost_usd = 0.0;
    rec.hash.clear();
    let canonical = serde_json::to_string(&rec).unwrap();
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(canonical.as_bytes()));
    rec.hash = hash;
    content[1] = serde_json::to_string(&rec).unwrap();
    write_lines(&seg, &content);

    let broken = verify(dir.path()).unwrap().broken.expect("not detected");
    assert_eq!((broken.line, broken.seq), (3, Some(3)));
    assert!(matches!(broken.problem, Problem::BrokenLink { .. }), "{broken}");
}

#[tokio::test]
async fn verify_detects_a_deleted_line() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), AuditOptions::default(), 1..=6).await);
    let seg = segments(dir.path())[0].clone();
    let mut content = lines(&seg);
    content.remove(3); // seq 4
    write_lines(&seg, &content);

    let report = verify(dir.path()).unwrap();
    let broken = report.broken.expect("deletion not detected");
    assert_eq!((broken.segment.as_path(), broken.line, broken.seq), (seg.as_path(), 4, Some(5)));
    assert_eq!(broken.problem, Problem::MissingSeq { expected: 4, found: 5 });
    assert_eq!(report.records, 3);
}

#[tokio::test]
async fn verify_detects_a_reordered_line() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), AuditOptions::default(), 1..=6).await);
    let seg = segments(dir.path())[0].clone();
    let mut content = lines(&seg);
    content.swap(2, 3); // seq 3 and 4
    write_lines(&seg, &content);

    let broken = verify(dir.path()).unwrap().broken.expect("reorder not detected");
    assert_eq!((broken.line, broken.seq), (3, Some(4)));
    assert_eq!(broken.problem, Problem::OutOfOrder { expected: 3, found: 4 });
}

#[tokio::test]
async fn verify_detects_a_deleted_segment() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), small(), 1..=20).await);
    let segs = segments(dir.path());
    let removed_first = lines(&segs[2]).len() as u64;
    let first_of = |p: &Path| -> u64 {
        let rec: AuditRecord = serde_json::from_str(&lines(p)[0]).unwrap();
        rec.seq
    };
    let (gone, next) = (first_of(&segs[2]), first_of(&segs[3]));
    assert_eq!(next - gone, removed_first);
    std::fs::remove_file(&segs[2]).unwrap();

    let report = verify(dir.path()).unwrap();
    let broken = report.broken.expect("deleted segment not detected");
    assert_eq!((broken.segment.as_path(), broken.line, broken.seq), (segs[3].as_path(), 1, Some(next)));
    assert_eq!(broken.problem, Problem::MissingSeq { expected: gone, found: next });
    assert_eq!(report.records, gone - 1);

    // Deleting the oldest segment is caught too: the log must start at seq 1.
    std::fs::remove_file(&segs[0]).unwrap();
    let broken = verify(dir.path()).unwrap().broken.expect("deleted first segment not detected");
    assert_eq!(broken.segment, segs[1]);
    assert!(matches!(broken.problem, Problem::MissingSeq { expected: 1, .. }), "{broken}");
}

#[tokio::test]
async fn verify_reports_an_unreadable_line() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), AuditOptions::default(), 1..=3).await);
    let seg = segments(dir.path())[0].clone();
    let mut content = lines(&seg);
    content[1] = "not json at all".into();
    write_lines(&seg, &content);
    let broken = verify(dir.path()).unwrap().broken.expect("garbage not detected");
    assert_eq!((broken.line, broken.seq), (2, None));
    assert!(matches!(broken.problem, Problem::Unreadable { .. }), "{broken}");
}

#[tokio::test]
async fn torn_last_line_is_cut_away_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), small(), 1..=9).await);
    let last = segments(dir.path()).pop().unwrap();
    let clean_len = std::fs::metadata(&last).unwrap().len();
    // A crash in the middle of writing record 10.
    let mut partial = record(10);
    partial.seq = 10;
    let torn = serde_json::to_string(&partial).unwrap();
    let torn = &torn[..torn.len() / 2];
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(torn.as_bytes()).unwrap();
    }

    // verify sees it as a torn tail, not as tampering.
    let report = verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    let seen = report.torn_tail.clone().unwrap();
    assert_eq!((seen.segment.as_path(), seen.offset, seen.bytes), (last.as_path(), clean_len, torn.len() as u64));
    // Reading skips it.
    assert_eq!(tail(dir.path(), 1).unwrap()[0].seq, 9);

    // Reopening truncates it, says so, and continues at seq 10.
    let writer = AuditWriter::open(dir.path(), small()).unwrap();
    let cut = writer.torn_tail().unwrap().clone();
    assert_eq!((cut.segment.as_path(), cut.offset, cut.bytes), (last.as_path(), clean_len, torn.len() as u64));
    assert!(cut.to_string().contains("torn"));
    assert_eq!(std::fs::metadata(&last).unwrap().len(), clean_len);
    assert_eq!(writer.append(record(10)).await.unwrap(), 10);
    drop(writer);
    let report = assert_ok(dir.path(), 10);
    assert!(report.torn_tail.is_none());
}

#[tokio::test]
async fn corrupt_last_record_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), AuditOptions::default(), 1..=3).await);
    let seg = segments(dir.path())[0].clone();
    let mut content = lines(&seg);
    content[2] = content[2].replace("\"status\":200", "\"status\":500");
    write_lines(&seg, &content);
    let err = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap_err();
    match &err {
        AuditError::Corrupt { path, line, reason } => {
            assert_eq!((path, *line), (&seg, 3));
            assert!(reason.contains("hash mismatch"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_contiguous_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions { max_segment_bytes: 20_000, ..AuditOptions::default() };
    let writer = AuditWriter::open(dir.path(), options).unwrap();
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..10u64 {
                let mut rec = record(t * 100 + i);
                rec.request_id = format!("task-{t}-{i}");
                seqs.push(writer.append(rec).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        // One task's records keep their order.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=500).collect::<Vec<u64>>());
    drop(writer);
    assert_ok(dir.path(), 500);
    assert!(segments(dir.path()).len() > 1);
    // Every request has exactly one record.
    let mut ids: Vec<String> =
        query(dir.path(), &Filter::default()).unwrap().into_iter().map(|r| r.request_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500);
}

#[tokio::test]
async fn unwritable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("audit");
    let err = AuditWriter::open(&target, AuditOptions::default()).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&target.display().to_string()), "{msg}");
    assert!(msg.contains("create directory"), "{msg}");

    // A directory without write permission (meaningless as root, who may write anyway).
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"").is_err() {
        let err = AuditWriter::open(&ro, AuditOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("create segment") && msg.contains(&ro.display().to_string()), "{msg}");
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn full_disk_is_a_clear_error() {
    // /dev/full accepts opens and fails every write with ENOSPC; a segment
    // symlinked to it stands in for a full disk.
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("audit-00000000000000000001.jsonl")).unwrap();
    let writer =
        AuditWriter::open(dir.path(), AuditOptions { fsync: FsyncPolicy::Never, ..AuditOptions::default() }).unwrap();
    let err = writer.append(record(1)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AuditError::Io { action: "write", .. }), "{msg}");
    assert!(msg.contains("audit-00000000000000000001.jsonl"), "{msg}");
    assert!(msg.to_lowercase().contains("no space"), "{msg}");
}

#[tokio::test]
async fn queries_filter_records() {
    let dir = tempfile::tempdir().unwrap();
    drop(write_n(dir.path(), small(), 1..=30).await);
    let seqs = |f: &Filter| query(dir.path(), f).unwrap().into_iter().map(|r| r.seq).collect::<Vec<_>>();

    assert_eq!(seqs(&Filter::default()).len(), 30);
    let alice = seqs(&Filter { consumer: Some("alice".into()), ..Filter::default() });
    assert_eq!(alice, (1..=30u64).filter(|i| i.is_multiple_of(2)).collect::<Vec<_>>());
    let search = seqs(&Filter { team: Some("search".into()), ..Filter::default() });
    assert_eq!(search, (1..=30u64).filter(|i| i.is_multiple_of(3)).collect::<Vec<_>>());
    let both = seqs(&Filter { consumer: Some("alice".into()), team: Some("search".into()), ..Filter::default() });
    assert_eq!(both, vec![6, 12, 18, 24, 30]);
    // Resolved or requested model.
    let claude = seqs(&Filter { model: Some("claude-sonnet-4-5".into()), ..Filter::default() });
    assert_eq!(claude, (1..=30u64).filter(|i| !i.is_multiple_of(2)).collect::<Vec<_>>());
    assert_eq!(seqs(&Filter { model: Some("smart".into()), ..Filter::default() }).len(), 30);
    assert!(seqs(&Filter { model: Some("gpt-5".into()), ..Filter::default() }).is_empty());
    // Time window: record i is at base + i minutes; since inclusive, until exclusive.
    let at = |i: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + i * 60);
    let window = seqs(&Filter { since: Some(at(10)), until: Some(at(13)), ..Filter::default() });
    assert_eq!(window, vec![10, 11, 12]);
    let flagged = seqs(&Filter { decision_contains: Some("\"action\":\"flag\"".into()), ..Filter::default() });
    assert_eq!(flagged, vec![5, 10, 15, 20, 25, 30]);

    let last = tail(dir.path(), 4).unwrap().into_iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(last, vec![27, 28, 29, 30]);
    assert_eq!(tail(dir.path(), 100).unwrap().len(), 30);
    assert!(tail(dir.path(), 0).unwrap().is_empty());
}

#[tokio::test]
async fn empty_log_verifies_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let writer = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap();
    drop(writer);
    let report = assert_ok(dir.path(), 0);
    assert_eq!(report.last_hash, GENESIS_PREV);
    assert!(query(dir.path(), &Filter::default()).unwrap().is_empty());
    assert!(tail(dir.path(), 5).unwrap().is_empty());
    // And the next writer starts at 1.
    let writer = AuditWriter::open(dir.path(), AuditOptions::default()).unwrap();
    assert_eq!(writer.append(record(1)).await.unwrap(), 1);
}
