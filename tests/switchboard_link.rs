//! The link to Switchboard: `https://` checked against `switchboard.ca_file`, and a bearer token
//! from `switchboard.auth_token_file`, on both transports, against the fake serving TLS with a
//! certificate made here and requiring the token. A certificate from another CA and a missing or
//! wrong token are told apart from Switchboard being down, say what to fix, and lose nothing.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::TestNats;
use support::certs::TestCa;
use support::events::Message;
use support::rig::{node_config, simulation};
use tgingest::config::{Config, Dur, SwitchboardConfig};
use tgingest::demo::expected_after_policy;
use tgingest::event::{ChatKind, Event};
use tgingest::node::Node;
use tgingest::policy::Policy;
use tgingest::switchboard::{
    CallError, FakeOptions, FakeSwitchboard, FakeTls, IngestReply, McpClient, envelope,
};
use tgingest::telegram::simulated::SimulatedWorld;

const TOKEN: &str = "sb-token-7f3c9a";

/// The fake's TLS from `ca`'s server certificate.
fn served(ca: &TestCa) -> FakeTls {
    FakeTls {
        cert_chain_pem: ca.cert_pem.clone(),
        key_pem: ca.key_pem.clone(),
    }
}

fn write_token(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("switchboard.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

async fn https_fake(ca: &TestCa, json_response: bool) -> FakeSwitchboard {
    FakeSwitchboard::start(FakeOptions {
        tls: Some(served(ca)),
        auth_token: Some(TOKEN.into()),
        json_response,
        ..FakeOptions::default()
    })
    .await
    .expect("https fake")
}

fn config(url: String, ca_file: &Path, token_file: Option<&Path>) -> SwitchboardConfig {
    SwitchboardConfig {
        url,
        ca_file: ca_file.to_path_buf(),
        auth_token_file: token_file.map(Path::to_path_buf).unwrap_or_default(),
        request_timeout: Dur(Duration::from_secs(5)),
        ..SwitchboardConfig::default()
    }
}

fn event(n: u64) -> Event {
    Message {
        kind: ChatKind::Group,
        bare_chat: 500,
        n,
        title: Some("Team"),
        sender_name: Some("Ann"),
        text: format!("hello {n}"),
    }
    .event()
}

/// The fake's three ways in: streamable HTTP with SSE bodies, with JSON bodies, legacy SSE.
async fn each_transport(ca: &TestCa) -> Vec<(FakeSwitchboard, String)> {
    let mut out = Vec::new();
    for (json, sse) in [(false, false), (true, false), (false, true)] {
        let fake = https_fake(ca, json).await;
        let url = if sse { fake.sse_url() } else { fake.mcp_url() };
        out.push((fake, url));
    }
    out
}

#[tokio::test]
async fn https_with_the_configured_ca_and_token_file_delivers_on_both_transports() {
    let ca = TestCa::new("switchboard");
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, token_file) = (
        ca.write_ca(dir.path(), "switchboard"),
        write_token(dir.path(), TOKEN),
    );
    for (fake, url) in each_transport(&ca).await {
        assert!(url.starts_with("https://"), "{url}");
        let cfg = config(url.clone(), &ca_file, Some(&token_file));
        let client = McpClient::new(&cfg).unwrap();
        for n in 0..3 {
            let reply = client.ingest(&envelope(&event(n), &cfg)).await;
            assert!(
                matches!(reply, Ok(IngestReply::Accepted { .. })),
                "{url}: {reply:?}"
            );
        }
        let stats = fake.stats();
        assert_eq!((stats.stored, stats.unauthorized), (3, 0), "{url}");
        assert!(tgingest::switchboard::refusal(&url).is_none());
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_tls_error_that_names_the_problem_and_keeps_the_event() {
    let served = TestCa::new("switchboard");
    let other = TestCa::new("other");
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, token_file) = (
        other.write_ca(dir.path(), "switchboard"),
        write_token(dir.path(), TOKEN),
    );
    for (fake, url) in each_transport(&served).await {
        // The operator's CA file, and the system's trust store: neither knows the fake's CA.
        for ca in [Some(&ca_file), None] {
            let mut cfg = config(url.clone(), &ca_file, Some(&token_file));
            cfg.ca_file = ca.cloned().unwrap_or_default();
            let client = McpClient::new(&cfg).unwrap();
            let err = client.ingest(&envelope(&event(1), &cfg)).await.unwrap_err();
            let CallError::Tls(problem) = &err else {
                panic!("{url}: expected a TLS error, got {err:?}");
            };
            assert!(problem.contains("unknown issuer"), "{problem}");
            assert!(err.to_string().contains("switchboard.ca_file"), "{err}");
            assert!(
                err.is_transient(),
                "a refused certificate must not drop the event"
            );
            assert_eq!(err.kind(), "tls");
            assert!(
                tgingest::switchboard::refusal(&url)
                    .is_some_and(|why| why.contains("did not verify"))
            );
        }
        assert_eq!(fake.stats().stored, 0);
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthorized_on_both_transports_and_kept_for_retry() {
    let ca = TestCa::new("switchboard");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(dir.path(), "switchboard");
    let wrong = write_token(dir.path(), "not-the-token");
    for (fake, url) in each_transport(&ca).await {
        for token_file in [None, Some(wrong.as_path())] {
            let cfg = config(url.clone(), &ca_file, token_file);
            let client = McpClient::new(&cfg).unwrap();
            let err = client.ingest(&envelope(&event(1), &cfg)).await.unwrap_err();
            let CallError::Unauthorized(answer) = &err else {
                panic!("{url}: expected unauthorized, got {err:?}");
            };
            assert!(
                answer.contains("401") && answer.contains("invalid_token"),
                "{answer}"
            );
            assert!(
                err.to_string().contains("switchboard.auth_token_file"),
                "{err}"
            );
            assert!(
                err.is_transient(),
                "a refused token must not drop the event"
            );
            assert_eq!(err.kind(), "unauthorized");
        }
        let stats = fake.stats();
        assert_eq!(stats.stored, 0);
        assert!(stats.unauthorized >= 2, "{url}: {stats:?}");
    }
}

#[test]
fn refusals_are_counted_under_connector_errors_total() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new("switchboard");
    let other = TestCa::new("other");
    let dir = tempfile::tempdir().unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let fake = https_fake(&ca, false).await;
            let cfg = config(
                fake.mcp_url(),
                &ca.write_ca(dir.path(), "switchboard"),
                None,
            );
            let client = McpClient::new(&cfg).unwrap();
            client.ingest(&envelope(&event(1), &cfg)).await.unwrap_err();
            let other_dir = tempfile::tempdir().unwrap();
            let wrong_ca = other.write_ca(other_dir.path(), "switchboard");
            let cfg = config(fake.mcp_url(), &wrong_ca, None);
            let client = McpClient::new(&cfg).unwrap();
            client.ingest(&envelope(&event(1), &cfg)).await.unwrap_err();
        })
    });
    let errors = support::counters::by_label(&snapshotter, "connector_errors_total", "kind");
    assert_eq!(errors.get("unauthorized"), Some(&1), "{errors:?}");
    assert_eq!(errors.get("tls"), Some(&1), "{errors:?}");
}

#[test]
fn the_token_file_is_trimmed_and_an_unusable_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("switchboard");
    let ca_file = ca.write_ca(dir.path(), "switchboard");
    let url = "https://127.0.0.1:9/mcp".to_string();
    // Trimmed: the file's trailing newline is not part of the token (the delivery test above
    // sends the token from such a file and is accepted).
    McpClient::new(&config(
        url.clone(),
        &ca_file,
        Some(&write_token(dir.path(), TOKEN)),
    ))
    .unwrap();

    let missing = dir.path().join("no-such.token");
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n  \n").unwrap();
    let inner_newline = dir.path().join("two-lines.token");
    std::fs::write(&inner_newline, "abc\ndef\n").unwrap();
    for (file, says) in [
        (&missing, "cannot read it"),
        (&empty, "is empty"),
        (&inner_newline, "line break"),
    ] {
        let err = McpClient::new(&config(url.clone(), &ca_file, Some(file))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()) && text.contains(says),
            "{text}"
        );
    }

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let err = McpClient::new(&config(url.clone(), &not_pem, None)).unwrap_err();
    assert!(
        err.to_string().contains("not.pem") && err.to_string().contains("no certificate"),
        "{err}"
    );
    let err = McpClient::new(&config(url.replace("https", "http"), &ca_file, None)).unwrap_err();
    assert!(err.to_string().contains("not https://"), "{err}");
}

#[test]
fn an_inline_token_and_a_token_file_together_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.switchboard.auth_token = "inline".into();
    config.switchboard.auth_token_file = write_token(dir.path(), TOKEN);
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("switchboard.auth_token_file") && err.contains("not both"),
        "{err}"
    );
    config.switchboard.auth_token = Default::default();
    config.switchboard.ca_file = dir.path().join("ca.pem");
    std::fs::write(&config.switchboard.ca_file, "x").unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("switchboard.ca_file") && err.contains("https://"),
        "{err}"
    );
}

#[tokio::test]
async fn the_token_is_never_shown_by_debug_of_the_config_or_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("switchboard");
    let ca_file = ca.write_ca(dir.path(), "switchboard");
    let mut inline = config("https://127.0.0.1:9/mcp".into(), &ca_file, None);
    inline.auth_token = TOKEN.into();
    let from_file = config(
        "https://127.0.0.1:9/sse".into(),
        &ca_file,
        Some(&write_token(dir.path(), TOKEN)),
    );
    for cfg in [inline, from_file] {
        let client = McpClient::new(&cfg).unwrap();
        for shown in [
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{client:?}"),
            format!("{client:#?}"),
        ] {
            assert!(!shown.contains(TOKEN), "{shown}");
        }
    }
}

async fn readyz(admin: std::net::SocketAddr) -> Value {
    reqwest::Client::new()
        .get(format!("http://{admin}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("readyz json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_token_keeps_its_events_says_why_and_delivers_them_once_fixed() {
    tgingest::telemetry::install_crypto_provider();
    let nats = TestNats::start();
    let ca = TestCa::new("switchboard");
    let fake = https_fake(&ca, false).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = simulation(1, 20, 200.0, 11);
    let mut config = node_config(&nats.url(), &fake.mcp_url(), dir.path(), sim);
    config.admin.listen = "127.0.0.1:0".into();
    config.switchboard.ca_file = ca.write_ca(dir.path(), "switchboard");
    config.switchboard.auth_token_file = write_token(dir.path(), "not-the-token");
    config.validate().expect("config");

    let node = Node::start(config.clone()).await.expect("node");
    let stats = node.start_pipeline().await.expect("pipeline");
    let admin = node.admin_addr().expect("admin on");
    let mut said = Value::Null;
    for _ in 0..100 {
        said = readyz(admin).await;
        if said.to_string().contains("refused the bearer token") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let check = said["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "switchboard"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(check["ok"], false, "{said}");
    let reason = check["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("refused the bearer token") && reason.contains("TG_CLEAN"),
        "{said}"
    );
    assert!(!said.to_string().contains("not-the-token"), "{said}");
    assert_eq!(fake.stats().stored, 0);
    assert!(stats.retries.get() > 0);
    node.shutdown().await.expect("clean shutdown");

    // The operator fixes the token file and restarts: everything kept arrives, once.
    write_token(dir.path(), TOKEN);
    let world = SimulatedWorld::new(config.simulator.clone()).expect("world");
    let policy = Policy::new(&config.policy).expect("policy");
    let expected: HashSet<String> =
        expected_after_policy(&world, &policy, config.simulator.messages_per_account)
            .map(|e| e.event_id)
            .collect();
    assert!(!expected.is_empty());
    let node = Node::start(config).await.expect("node again");
    node.start_pipeline().await.expect("pipeline");
    let stored = || -> HashSet<String> {
        fake.accepted()
            .iter()
            .filter_map(|a| a.envelope["payload"]["raw"]["event_id"].as_str())
            .map(str::to_string)
            .collect()
    };
    let delivered =
        support::eventually(Duration::from_secs(60), || stored().is_superset(&expected)).await;
    node.shutdown().await.expect("clean shutdown");
    assert!(delivered, "stored {:?}", fake.stats());
    assert_eq!(fake.stored_twice(), 0);
}
