//! Bus set-up against a real nats-server: idempotent, applies drift, refuses what it cannot do.

mod support;

use std::time::Duration;

use support::TestNats;
use tgingest::bus::{
    Applied, BUCKET_ANCHORS, BUCKET_CHECKPOINTS, BUCKET_LEASES, BUCKET_SESSIONS, Bus, STREAM_AUDIT,
    STREAM_CLEAN, STREAM_DLQ, STREAM_RAW,
};
use tgingest::config::{Config, Dur, Storage};

async fn connect(nats: &TestNats) -> Bus {
    Bus::connect(&nats.url(), &Config::default().nats, "test")
        .await
        .expect("connect")
}

fn applied(report: &tgingest::bus::SetupReport, name: &str) -> Applied {
    report
        .items
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test]
async fn setup_is_idempotent_and_applies_config_drift() {
    let nats = TestNats::start();
    let bus = connect(&nats).await;
    let mut cfg = Config::default();

    let first = bus.setup(&cfg).await.unwrap();
    for name in [
        STREAM_RAW,
        STREAM_CLEAN,
        STREAM_DLQ,
        STREAM_AUDIT,
        BUCKET_SESSIONS,
        BUCKET_LEASES,
        BUCKET_ANCHORS,
        BUCKET_CHECKPOINTS,
    ] {
        assert_eq!(applied(&first, name), Applied::Created, "{name}");
    }
    // The state that moves with an account never expires.
    let checkpoints = bus
        .js
        .get_stream(format!("KV_{BUCKET_CHECKPOINTS}"))
        .await
        .unwrap();
    let config = &checkpoints.cached_info().config;
    assert_eq!(config.max_age, Duration::ZERO);
    assert!(!config.allow_message_ttl);
    let second = bus.setup(&cfg).await.unwrap();
    assert!(
        second.items.iter().all(|(_, a)| *a == Applied::Unchanged),
        "{second:?}"
    );

    cfg.streams.raw.max_age = Dur::hours(6);
    cfg.streams.raw.duplicate_window = Dur::secs(300);
    let third = bus.setup(&cfg).await.unwrap();
    assert_eq!(applied(&third, STREAM_RAW), Applied::Updated);
    assert_eq!(applied(&third, STREAM_CLEAN), Applied::Unchanged);
    let info = bus
        .js
        .get_stream(STREAM_RAW)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(info.max_age, Duration::from_secs(6 * 3600));
    assert_eq!(info.duplicate_window, Duration::from_secs(300));
    assert_eq!(info.subjects, vec!["tg.raw.>".to_string()]);

    let leases = bus
        .js
        .get_stream(format!("KV_{BUCKET_LEASES}"))
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert!(
        leases.allow_message_ttl,
        "the lease bucket must allow per-key TTL"
    );

    // The audit copy keeps its history: no age limit, and a full stream refuses new records
    // (the node keeps and retries them) rather than dropping the oldest.
    let audit = bus
        .js
        .get_stream(STREAM_AUDIT)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(audit.subjects, vec!["tgingest.audit.>".to_string()]);
    assert_eq!(audit.max_age, Duration::ZERO);
    assert_eq!(
        audit.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
}

#[tokio::test]
async fn setup_keeps_stored_messages_when_applying_drift() {
    let nats = TestNats::start();
    let bus = connect(&nats).await;
    let mut cfg = Config::default();
    bus.setup(&cfg).await.unwrap();
    for i in 0..10 {
        bus.js
            .publish(format!("tg.clean.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    cfg.streams.clean.max_age = Dur::days(60);
    bus.setup(&cfg).await.unwrap();
    let mut stream = bus.js.get_stream(STREAM_CLEAN).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 10);
}

#[tokio::test]
async fn unchangeable_settings_fail_with_the_stream_and_key_named() {
    let nats = TestNats::start();
    let bus = connect(&nats).await;
    let mut cfg = Config::default();
    bus.setup(&cfg).await.unwrap();
    cfg.streams.dlq.storage = Storage::Memory;
    let err = bus.setup(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("TG_DLQ") && err.contains("[streams.dlq]"),
        "{err}"
    );
    assert!(err.contains("storage type"), "{err}");

    let mut cfg = Config::default();
    cfg.streams.raw.replicas = 3;
    let err = bus.setup(&cfg).await.unwrap_err().to_string();
    assert!(err.contains("TG_RAW") && err.contains("replicas"), "{err}");
}

#[tokio::test]
async fn connecting_to_nothing_names_the_url() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{free}");
    let err = match Bus::connect(&url, &Config::default().nats, "test").await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&url), "{err}");
}

/// A NATS protocol double that only greets as an old server (2.9.10, Debian's version) and
/// answers PING; it covers the handshake, nothing of JetStream.
async fn old_server() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = sock.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"OLD\",\"server_name\":\"old\",\"version\":\"2.9.10\",\"proto\":1,\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\"max_payload\":1048576,\"jetstream\":true}}\r\n"
                );
                if write.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("nats://127.0.0.1:{port}"), task)
}

#[tokio::test]
async fn a_server_older_than_2_11_is_refused_with_its_version() {
    let (url, task) = old_server().await;
    let err = match Bus::connect(&url, &Config::default().nats, "test").await {
        Ok(_) => panic!("accepted a 2.9.10 server"),
        Err(e) => e.to_string(),
    };
    task.abort();
    assert!(
        err.contains("2.9.10") && err.contains("2.11.0") && err.contains("TG_LEASES"),
        "{err}"
    );
}

/// The one-pass listing the registry uses: every live key once, with its latest value and
/// revision; deleted and purged keys left out; an empty bucket answers at once.
#[tokio::test]
async fn latest_entries_lists_every_live_key_once_with_its_latest_value() {
    let nats = TestNats::start();
    let bus = connect(&nats).await;
    bus.setup(&Config::default()).await.unwrap();
    let kv = bus
        .js
        .get_key_value(tgingest::bus::BUCKET_ACCOUNTS)
        .await
        .unwrap();
    assert!(
        tgingest::bus::latest_entries(&bus.client, &kv)
            .await
            .unwrap()
            .is_empty()
    );
    for i in 0..50 {
        kv.put(format!("a{i}"), format!("v{i}").into())
            .await
            .unwrap();
    }
    let newest = kv.put("a7", "v7-second".into()).await.unwrap();
    kv.delete("a3").await.unwrap();
    kv.purge("a4").await.unwrap();
    let mut got = tgingest::bus::latest_entries(&bus.client, &kv)
        .await
        .unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 48, "every live key once");
    assert!(!got.iter().any(|(k, _, _)| k == "a3" || k == "a4"));
    let a7 = got.iter().find(|(k, _, _)| k == "a7").unwrap();
    assert_eq!((&a7.1[..], a7.2), (&b"v7-second"[..], newest));
}
