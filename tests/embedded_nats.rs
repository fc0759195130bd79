//! Spawned nats-server processes never outlive their owner, however the owner ends.

mod support;

use std::time::Duration;

use support::{TestNats, process_alive, wait_until};

#[test]
fn dropping_the_handle_stops_the_server() {
    let nats = TestNats::start();
    let pid = nats.server.pid().unwrap();
    assert!(process_alive(pid));
    drop(nats);
    assert!(!process_alive(pid), "nats-server {pid} survived its handle");
}

#[test]
fn a_panicking_owner_still_stops_the_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let nats = TestNats::start();
        tx.send(nats.server.pid().unwrap()).unwrap();
        panic!("test failure while the server runs");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid)),
        "nats-server {pid} orphaned"
    );
}

#[test]
fn restart_keeps_the_port_and_the_stored_messages() {
    let mut nats = TestNats::start();
    let port = nats.server.port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = nats.url();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("keep", "1".into()).await.unwrap().await.unwrap();
    });
    let old_pid = nats.server.pid().unwrap();
    nats.server.restart().unwrap();
    assert_eq!(nats.server.port(), port);
    assert!(!process_alive(old_pid));
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let mut stream = js.get_stream("KEEP").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    });
}

/// The error `attempt` gives, tried again while it is ETXTBSY: a script this test just wrote
/// cannot be executed while another test thread's fork still holds its write descriptor (the
/// child closes it only at its own exec), a race of the test process, not of tgingest.
fn unless_busy(mut attempt: impl FnMut() -> String) -> String {
    for _ in 0..50 {
        let err = attempt();
        if !err.contains("Text file busy") {
            return err;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    attempt()
}

#[test]
fn a_bad_binary_fails_with_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nats-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = unless_busy(|| {
        tgingest::nats_server::find_binary(Some(&fake))
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.contains("2.9.10") && err.contains("install-nats-server.sh"),
        "{err}"
    );

    std::fs::write(&fake, "#!/bin/sh\ncase \"$1\" in --version) echo 'nats-server: v2.15.1';; *) echo 'boom: bad flag' >&2; exit 3;; esac\n").unwrap();
    let opts =
        tgingest::nats_server::ServerOptions::new(fake.clone(), dir.path().join("store"), "x");
    let err = unless_busy(|| {
        tgingest::nats_server::NatsServer::start(opts.clone())
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.contains("exited during start-up") && err.contains("boom: bad flag"),
        "{err}"
    );
}

#[test]
fn the_shipped_nats_server_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
    // The single server's TLS files must exist to be valid; its users' NKeys be well-formed.
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = support::certs::TestCa::new("nats").write_server(tls.path(), "nats");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "conf") {
            continue;
        }
        let out = std::process::Command::new(support::binary())
            .arg("-c")
            .arg(&path)
            .arg("-t")
            .env("NATS_NAME", "nats-1")
            .env("NATS_LISTEN", "0.0.0.0:4222")
            .env("NATS_HTTP", "0.0.0.0:8222")
            .env("NATS_STORE_DIR", "/var/lib/nats/jetstream")
            .env("NATS_JS_KEY", "test-key")
            .env("NATS_CLUSTER_LISTEN", "0.0.0.0:6222")
            .env("NATS_ROUTE_1", "nats-route://nats-1.internal:6222")
            .env("NATS_ROUTE_2", "nats-route://nats-2.internal:6222")
            .env("NATS_ROUTE_3", "nats-route://nats-3.internal:6222")
            .env("NATS_TLS_CERT", &cert)
            .env("NATS_TLS_KEY", &key)
            .env(
                "TGINGEST_INGEST_NKEY",
                nkeys::KeyPair::new_user().public_key(),
            )
            .env(
                "TGINGEST_REPLAY_NKEY",
                nkeys::KeyPair::new_user().public_key(),
            )
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.contains("is valid"),
            "{}: {said}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3);
}
