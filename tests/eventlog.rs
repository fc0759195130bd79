//! The event log as a specification: what verifies, what tampering is caught where, what survives.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tgingest::codec::{decode, encode};
use tgingest::eventlog::{
    Anchor, AuditEntry, Checkpoint, Durability, EventLog, EventLogError, EventLogOptions, Record,
    RecordKind, VerifyReport, verify_dir, verify_entries,
};

const KEY: [u8; 32] = [0x5a; 32];
const OTHER_KEY: [u8; 32] = [0xa5; 32];

fn entry(i: u64) -> AuditEntry {
    let mut details = BTreeMap::new();
    details.insert("i".to_string(), i.to_string());
    AuditEntry {
        action: "account.state".into(),
        actor: "node-1".into(),
        account_id: i.is_multiple_of(2).then(|| format!("acct-{}", i % 5)),
        details,
    }
}

fn cp(account: &str, scope: &str, position: u64) -> Checkpoint {
    Checkpoint {
        account_id: account.into(),
        scope: scope.into(),
        position: format!("pts={position}"),
    }
}

/// Appends `n` records: mostly lazy audits, some flushed audits, every third a checkpoint.
async fn fill(log: &EventLog, n: u64) {
    for i in 0..n {
        match i % 3 {
            0 => {
                log.checkpoint(&cp("acct-1", "updates", i)).await.unwrap();
            }
            1 => {
                log.audit(&entry(i), Durability::Lazy).await.unwrap();
            }
            _ => {
                log.audit(&entry(i), Durability::Flushed).await.unwrap();
            }
        }
    }
    log.flush().await.unwrap();
}

/// A closed log of `n` records in a fresh temp dir, and its head.
async fn closed_log(n: u64) -> (tempfile::TempDir, Anchor) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), KEY).unwrap();
    fill(&log, n).await;
    let head = log.head();
    drop(log);
    (dir, head)
}

/// Opens the log's sled database directly, waiting out the lock that sled's IO threads can hold
/// for a moment after the event log was dropped.
fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e)) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            db => return db.unwrap(),
        }
    }
}

/// Changes the `log` tree behind the event log's back, as someone with file access could.
fn tamper(dir: &Path, change: impl FnOnce(&sled::Tree)) {
    let db = open_sled(dir);
    let log = db.open_tree("log").unwrap();
    change(&log);
    db.flush().unwrap();
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn stored(tree: &sled::Tree, seq: u64) -> Record {
    decode(&tree.get(key(seq)).unwrap().unwrap()).unwrap()
}

fn raw_entries(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = open_sled(dir);
    let log = db.open_tree("log").unwrap();
    log.iter()
        .map(|kv| kv.unwrap())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

#[tokio::test]
async fn untouched_log_of_mixed_records_verifies_with_the_right_count_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), KEY).unwrap();
    assert_eq!(log.head(), Anchor::EMPTY);
    assert_eq!(log.verify(), VerifyReport::passed(0));
    let debug = format!("{log:?}");
    assert!(
        !debug.contains("chain_key") && !debug.contains("90, 90, 90"),
        "{debug}"
    );
    fill(&log, 150).await;
    drop(log);

    let log = EventLog::open(dir.path(), KEY).unwrap();
    assert_eq!(log.head().seq, 150);
    fill(&log, 151).await;
    assert_eq!(log.verify(), VerifyReport::passed(301));
    assert_eq!(log.verify_against(&log.head()), VerifyReport::passed(301));

    let records: Vec<Record> = log.records().map(Result::unwrap).collect();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=301).collect::<Vec<_>>()
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.kind == RecordKind::Checkpoint)
            .count(),
        50 + 51
    );
    assert_eq!(records[0].prev_hash, [0; 32]);
    assert!(records.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    drop(log);
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::passed(301)
    );
}

#[tokio::test]
async fn every_flipped_bit_and_byte_of_every_record_is_caught_at_that_records_seq() {
    let (dir, head) = closed_log(6).await;
    let entries = raw_entries(dir.path());
    assert_eq!(entries.len(), 6);
    assert_eq!(
        verify_entries(&KEY, entries.clone().into_iter(), Some(&head)),
        VerifyReport::passed(6)
    );

    let mut cases = 0;
    for (i, (_, value)) in entries.iter().enumerate() {
        let seq = i as u64 + 1;
        let masks = (0..8).map(|bit| 1u8 << bit).chain([0xff]);
        for (pos, mask) in (0..value.len()).flat_map(|pos| masks.clone().map(move |m| (pos, m))) {
            let mut tampered = entries.clone();
            tampered[i].1[pos] ^= mask;
            let report = verify_entries(&KEY, tampered.into_iter(), Some(&head));
            assert!(
                !report.ok,
                "record {seq}, byte {pos} ^ {mask:#04x} went unnoticed"
            );
            assert_eq!(
                (report.first_bad_seq, report.verified),
                (Some(seq), seq - 1),
                "record {seq}, byte {pos} ^ {mask:#04x}: {report:?}"
            );
            cases += 1;
        }
    }
    assert!(
        cases > 6 * 9 * 60,
        "only {cases} cases: records are suspiciously small"
    );
}

#[tokio::test]
async fn a_body_byte_changed_on_disk_is_caught_at_its_seq() {
    let (dir, _) = closed_log(8).await;
    tamper(dir.path(), |log| {
        let mut record = stored(log, 3);
        record.body[2] ^= 0x01;
        log.insert(key(3), encode(&record).unwrap()).unwrap();
    });
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::failed(3, "hash mismatch")
    );
}

#[tokio::test]
async fn a_hash_byte_changed_on_disk_is_caught_at_its_seq() {
    let (dir, _) = closed_log(8).await;
    tamper(dir.path(), |log| {
        let mut record = stored(log, 5);
        record.hash[31] ^= 0x80;
        log.insert(key(5), encode(&record).unwrap()).unwrap();
    });
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::failed(5, "hash mismatch")
    );
}

#[tokio::test]
async fn a_raw_stored_byte_flipped_on_disk_is_caught_at_its_seq() {
    let (dir, _) = closed_log(8).await;
    tamper(dir.path(), |log| {
        let mut value = log.get(key(7)).unwrap().unwrap().to_vec();
        value[0] ^= 0xff;
        log.insert(key(7), value).unwrap();
    });
    let report = verify_dir(dir.path(), KEY).unwrap();
    assert_eq!(
        (report.ok, report.first_bad_seq, report.verified),
        (false, Some(7), 6)
    );
    assert!(
        report
            .reason
            .unwrap()
            .starts_with("record does not decode: ")
    );
}

#[tokio::test]
async fn a_deleted_record_is_reported_as_missing_at_its_seq() {
    let (dir, _) = closed_log(8).await;
    tamper(dir.path(), |log| {
        log.remove(key(4)).unwrap().unwrap();
    });
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::failed(4, "missing record 4")
    );
}

#[tokio::test]
async fn two_swapped_records_are_caught_at_the_earlier_seq() {
    let (dir, _) = closed_log(8).await;
    tamper(dir.path(), |log| {
        let (second, sixth) = (
            log.get(key(2)).unwrap().unwrap(),
            log.get(key(6)).unwrap().unwrap(),
        );
        log.insert(key(2), sixth).unwrap();
        log.insert(key(6), second).unwrap();
    });
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::failed(2, "seq 6 stored under key 2")
    );
}

#[tokio::test]
async fn a_truncated_tail_is_caught_against_the_head_in_meta_and_blocks_appending() {
    let (dir, _) = closed_log(8).await;
    tamper(dir.path(), |log| {
        for seq in 6..=8 {
            log.remove(key(seq)).unwrap().unwrap();
        }
    });
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::failed(6, "log truncated: head says 8")
    );
    let err = EventLog::open(dir.path(), KEY).unwrap_err();
    assert!(
        matches!(
            err,
            EventLogError::Inconsistent {
                head_seq: 8,
                last_seq: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_appended_forgery_past_the_head_in_meta_is_caught() {
    let (dir, _) = closed_log(4).await;
    tamper(dir.path(), |log| {
        // A correctly chained record (the forger has the key), written without updating meta.
        let last = stored(log, 4);
        let next = Record::next(&KEY, &last.anchor(), 0, RecordKind::Audit, vec![1]).unwrap();
        log.insert(key(5), encode(&next).unwrap()).unwrap();
    });
    assert_eq!(
        verify_dir(dir.path(), KEY).unwrap(),
        VerifyReport::failed(5, "record 5 is past the head in meta (seq 4)")
    );
}

#[tokio::test]
async fn verify_against_an_anchor_catches_a_log_rewritten_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), KEY).unwrap();
    fill(&log, 5).await;
    let early = log.head();
    fill(&log, 5).await;
    let anchor = log.head();
    assert_eq!(log.verify_against(&early), VerifyReport::passed(10));
    assert_eq!(log.verify_against(&anchor), VerifyReport::passed(10));
    drop(log);

    // A forger without the key rewrites the directory with as many records.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let forged = EventLog::open(dir.path(), OTHER_KEY).unwrap();
    fill(&forged, 10).await;
    assert_eq!(
        forged.verify(),
        VerifyReport::passed(10),
        "the forgery is self-consistent"
    );
    drop(forged);
    let log = EventLog::open(dir.path(), KEY).unwrap();
    assert_eq!(
        log.verify_against(&anchor),
        VerifyReport::failed(1, "hash mismatch")
    );
    drop(log);

    // Someone with the key rewrites it with other content of the same length: only the anchor,
    // kept in another trust domain, shows it.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let rewritten = EventLog::open(dir.path(), KEY).unwrap();
    fill(&rewritten, 10).await;
    assert_eq!(rewritten.verify(), VerifyReport::passed(10));
    assert_eq!(
        rewritten.verify_against(&anchor),
        VerifyReport::failed(10, "hash differs from the anchor")
    );
    drop(rewritten);

    // Or shorter than the anchor.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let shorter = EventLog::open(dir.path(), KEY).unwrap();
    fill(&shorter, 7).await;
    assert_eq!(
        shorter.verify_against(&anchor),
        VerifyReport::failed(8, "log truncated: head says 10")
    );
}

#[tokio::test]
async fn a_wrong_chain_key_fails_verification_at_seq_1() {
    let (dir, _) = closed_log(5).await;
    assert_eq!(
        verify_dir(dir.path(), OTHER_KEY).unwrap(),
        VerifyReport::failed(1, "hash mismatch")
    );
    let log = EventLog::open(dir.path(), OTHER_KEY).unwrap();
    assert_eq!(log.verify(), VerifyReport::failed(1, "hash mismatch"));
    assert_eq!(
        verify_entries(&OTHER_KEY, std::iter::empty(), None),
        VerifyReport::passed(0)
    );
}

#[tokio::test]
async fn checkpoint_index_holds_the_latest_per_account_and_scope_and_can_be_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), KEY).unwrap();
    let accounts = ["1", "12", "acct-x"];
    let scopes = ["backfill:-100", "updates", "zz"];
    let mut expected = BTreeMap::new();
    for round in 0..20u64 {
        for (a, account) in accounts.iter().enumerate() {
            for (s, scope) in scopes.iter().enumerate() {
                // Uneven rounds per key, so "latest" is not the same round everywhere.
                if (round + a as u64 + s as u64) % 4 == 3 {
                    continue;
                }
                let checkpoint = cp(account, scope, round * 100 + (a * 10 + s) as u64);
                log.checkpoint(&checkpoint).await.unwrap();
                expected.insert((account.to_string(), scope.to_string()), checkpoint);
            }
        }
        log.audit(&entry(round), Durability::Lazy).await.unwrap();
    }

    let check = |log: &EventLog| {
        for ((account, scope), checkpoint) in &expected {
            assert_eq!(
                log.latest_checkpoint(account, scope).unwrap().as_ref(),
                Some(checkpoint)
            );
        }
        for account in accounts {
            let all: Vec<Checkpoint> = expected
                .iter()
                .filter(|((a, _), _)| a == account)
                .map(|(_, c)| c.clone())
                .collect();
            assert_eq!(
                log.checkpoints_of(account).unwrap(),
                all,
                "account {account}"
            );
        }
        assert_eq!(log.latest_checkpoint("1", "nope").unwrap(), None);
        assert_eq!(log.latest_checkpoint("nobody", "updates").unwrap(), None);
        assert!(log.checkpoints_of("nobody").unwrap().is_empty());
    };
    check(&log);
    assert!(matches!(
        log.latest_checkpoint("a\0b", "x"),
        Err(EventLogError::BadAccountId(_))
    ));
    assert!(matches!(
        log.checkpoint(&cp("a\0b", "x", 1)).await,
        Err(EventLogError::BadAccountId(_))
    ));
    assert!(matches!(
        log.append(
            RecordKind::Checkpoint,
            b"not a checkpoint".to_vec(),
            Durability::Lazy
        )
        .await,
        Err(EventLogError::NotACheckpoint(_))
    ));
    drop(log);

    let log = EventLog::open(dir.path(), KEY).unwrap();
    check(&log);
    drop(log);

    let db = open_sled(dir.path());
    db.open_tree("checkpoint_index").unwrap().clear().unwrap();
    db.flush().unwrap();
    drop(db);
    let log = EventLog::open(dir.path(), KEY).unwrap();
    assert_eq!(
        log.latest_checkpoint("1", "updates").unwrap(),
        None,
        "the index was cleared"
    );
    assert_eq!(log.rebuild_checkpoint_index().unwrap(), expected.len());
    check(&log);
    assert_eq!(
        log.rebuild_checkpoint_index().unwrap(),
        expected.len(),
        "rebuilding is idempotent"
    );
    check(&log);
    assert!(log.verify().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_many_tasks_yield_one_contiguous_verifying_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EventLog::open(dir.path(), KEY).unwrap());
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25u64 {
                    let seq = match i % 4 {
                        0 => log.checkpoint(&cp(&format!("t{task}"), "updates", i)).await,
                        1 => log.audit(&entry(i), Durability::Flushed).await,
                        _ => log.audit(&entry(i), Durability::Lazy).await,
                    };
                    seqs.push(seq.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    assert_eq!(log.head().seq, 400);
    assert_eq!(log.verify(), VerifyReport::passed(400));
    for task in 0..16 {
        let latest = log
            .latest_checkpoint(&format!("t{task}"), "updates")
            .unwrap()
            .unwrap();
        assert_eq!(latest.position, "pts=24");
    }
}

const CHILD_DIR_ENV: &str = "TGINGEST_TEST_EVENTLOG_CHILD_DIR";
const CHILD_RECORDS: u64 = 5;

/// In the child: append flushed records, then die without any clean-up.
fn append_flushed_then_abort(dir: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // No background flushing: only what `append` itself flushed can reach the disk.
        let options = EventLogOptions {
            background_flush_ms: None,
        };
        let log = EventLog::open_with(dir, KEY, &options).unwrap();
        for i in 0..CHILD_RECORDS - 1 {
            log.audit(&entry(i), Durability::Flushed).await.unwrap();
        }
        log.checkpoint(&cp("acct-1", "updates", 42)).await.unwrap();
        // Before `log` is dropped: sled flushes on drop, which would hide a missing flush.
        std::process::abort()
    })
}

#[test]
fn appends_that_returned_flushed_survive_an_abort_right_after() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        append_flushed_then_abort(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "appends_that_returned_flushed_survive_an_abort_right_after",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "the child must die by abort(), not finish: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Without the flush in `append` this fails in most runs: the same child appending with
    // `Durability::Lazy` left 0, 1 or 4 of its 5 records on disk in trials, rarely all 5.
    let log = EventLog::open(dir.path(), KEY).unwrap();
    assert_eq!(log.verify(), VerifyReport::passed(CHILD_RECORDS));
    assert_eq!(
        log.latest_checkpoint("acct-1", "updates").unwrap(),
        Some(cp("acct-1", "updates", 42))
    );
}

const OPEN_DIR_ENV: &str = "TGINGEST_TEST_EVENTLOG_OPEN_DIR";

#[tokio::test]
async fn opening_a_dir_that_is_open_gives_a_clear_in_use_error_in_this_and_another_process() {
    let test_name =
        "opening_a_dir_that_is_open_gives_a_clear_in_use_error_in_this_and_another_process";
    if let Some(dir) = std::env::var_os(OPEN_DIR_ENV) {
        // In the child: report what opening the parent's log gives.
        match EventLog::open(Path::new(&dir), KEY) {
            Err(err @ EventLogError::InUse { .. }) => println!("CHILD-RESULT: {err}"),
            other => panic!("expected InUse, got {other:?}"),
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), KEY).unwrap();
    log.audit(&entry(1), Durability::Flushed).await.unwrap();
    let expected = format!(
        "event log at {} is in use by another process",
        dir.path().display()
    );

    let err = EventLog::open(dir.path(), KEY).unwrap_err();
    assert!(matches!(err, EventLogError::InUse { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&expected), "{err}");
    assert!(matches!(
        verify_dir(dir.path(), KEY),
        Err(EventLogError::InUse { .. })
    ));

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(OPEN_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("CHILD-RESULT: {expected}")),
        "{stdout}"
    );

    drop(log);
    assert_eq!(
        EventLog::open(dir.path(), KEY).unwrap().verify(),
        VerifyReport::passed(1)
    );
}

#[test]
fn verify_dir_refuses_a_dir_without_a_log_instead_of_creating_one() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nope");
    let err = verify_dir(&missing, KEY).unwrap_err();
    assert!(err.to_string().contains("no such directory"), "{err}");
    assert!(!missing.exists(), "verify_dir created the directory");

    let err = verify_dir(parent.path(), KEY).unwrap_err();
    assert!(matches!(err, EventLogError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("holds no sled database"), "{err}");

    let other = parent.path().join("other-sled");
    sled::open(&other).unwrap().flush().unwrap();
    let err = verify_dir(&other, KEY).unwrap_err();
    assert!(
        err.to_string().contains("no `log` and `meta` trees"),
        "{err}"
    );
}

#[test]
fn metrics_count_appends_and_flushes_and_track_head_and_verify() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let log = EventLog::open(dir.path(), KEY).unwrap();
            log.audit(&entry(1), Durability::Lazy).await.unwrap();
            log.audit(&entry(2), Durability::Flushed).await.unwrap();
            log.checkpoint(&cp("a", "updates", 1)).await.unwrap();
            assert!(log.verify().ok);
        });
    });
    // (name, labels, value) of every metric recorded.
    type Observed = (String, Vec<(String, String)>, DebugValue);
    let values: Vec<Observed> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            (key.name().to_string(), labels, value)
        })
        .collect();
    let find = |name: &str, label: Option<&str>| {
        values
            .iter()
            .find(|(n, labels, _)| {
                n == name && label.is_none_or(|v| labels.contains(&("kind".into(), v.into())))
            })
            .map(|(_, _, value)| value)
            .unwrap_or_else(|| panic!("no metric {name} {label:?} in {values:?}"))
    };
    assert_eq!(
        find("tgingest_eventlog_appends_total", Some("audit")),
        &DebugValue::Counter(2)
    );
    assert_eq!(
        find("tgingest_eventlog_appends_total", Some("checkpoint")),
        &DebugValue::Counter(1)
    );
    assert!(matches!(find("tgingest_eventlog_head_seq", None), DebugValue::Gauge(v) if v.0 == 3.0));
    assert!(
        matches!(find("tgingest_eventlog_verify_ok", None), DebugValue::Gauge(v) if v.0 == 1.0)
    );
    assert!(
        matches!(find("tgingest_eventlog_flush_seconds", None), DebugValue::Histogram(v) if v.len() == 2)
    );

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let log = EventLog::open(dir.path(), OTHER_KEY).unwrap();
        assert!(!log.verify().ok);
    });
    let failed = snapshotter.snapshot().into_vec();
    assert!(failed.iter().any(|(key, _, _, value)| key.key().name()
        == "tgingest_eventlog_verify_ok"
        && matches!(value, DebugValue::Gauge(v) if v.0 == 0.0)));
}

#[tokio::test]
async fn incremental_verification_goes_on_from_the_last_check_and_holds_the_log_to_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), KEY).unwrap();
    fill(&log, 5).await;
    let (report, first) = log.verify_since(&Anchor::EMPTY, None);
    assert_eq!(report, VerifyReport::passed(5));
    assert_eq!(first, log.head());

    fill(&log, 5).await;
    let (report, second) = log.verify_since(&first, Some(&first));
    assert_eq!(
        report,
        VerifyReport::passed(10),
        "records 6 to 10, anchor at 5"
    );
    let (report, _) = log.verify_since(&second, Some(&second));
    assert_eq!(report, VerifyReport::passed(10), "nothing new");

    // A check that went on from a head the log does not chain to fails at the next record.
    let forged = |seq| Anchor { seq, hash: [7; 32] };
    let (report, _) = log.verify_since(&forged(5), None);
    assert_eq!(
        report,
        VerifyReport::failed(6, "prev_hash does not match record 5")
    );

    // An anchor in the part verified before is looked up; a longer one means a truncated log.
    let (report, _) = log.verify_since(&second, Some(&forged(3)));
    assert_eq!(
        report,
        VerifyReport::failed(3, "hash differs from the anchor")
    );
    let (report, _) = log.verify_since(&second, Some(&forged(12)));
    assert_eq!(
        report,
        VerifyReport::failed(11, "log truncated: head says 12")
    );
}
