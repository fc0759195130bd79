//! `/readyz`: not ready (503) while NATS is away, ready (200) again when it returns; `/healthz`
//! stays 200 throughout. (Its own test binary: the per-account metrics switch is per process.)

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::rig::{Rig, simulation};

async fn readyz(http: &reqwest::Client, admin: std::net::SocketAddr) -> (u16, Value) {
    let response = http
        .get(format!("http://{admin}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /readyz");
    let code = response.status().as_u16();
    (code, response.json().await.expect("readyz json"))
}

async fn wait_readyz(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
    code: u16,
    status: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = readyz(http, admin).await;
        if got == code && body["status"] == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got} {body} (wanted {code} {status})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_not_ready_when_nats_stops_and_ready_when_it_returns() {
    let mut rig = Rig::start(simulation(1, 50, 50.0, 3), |c| {
        c.admin.listen = "127.0.0.1:0".into();
    })
    .await;
    let admin = rig.node.as_ref().unwrap().admin_addr().expect("admin on");
    let http = reqwest::Client::new();

    let body = wait_readyz(&http, admin, 200, "ready").await;
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );

    rig.nats.server.stop();
    let body = wait_readyz(&http, admin, 503, "not_ready").await;
    let nats = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nats")
        .expect("nats check")
        .clone();
    assert_eq!(nats["ok"], false);
    assert!(
        nats["reason"].as_str().unwrap().contains("reconnecting"),
        "{nats}"
    );
    // Alive, though not ready.
    let health = http
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);

    rig.nats.server.restart().expect("restart nats-server");
    wait_readyz(&http, admin, 200, "ready").await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_degraded_but_200_when_switchboard_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut rig = Rig::start(simulation(1, 5, 50.0, 4), |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.switchboard.url = format!("http://127.0.0.1:{closed}/mcp");
    })
    .await;
    let admin = rig.node.as_ref().unwrap().admin_addr().expect("admin on");
    let http = reqwest::Client::new();
    let body = wait_readyz(&http, admin, 200, "degraded").await;
    let switchboard = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "switchboard")
        .expect("switchboard check")
        .clone();
    assert_eq!(switchboard["ok"], false);
    assert!(
        switchboard["reason"]
            .as_str()
            .unwrap()
            .contains("events wait in TG_CLEAN"),
        "{switchboard}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_needs_the_admin_token_but_readyz_and_healthz_do_not() {
    use std::os::unix::fs::PermissionsExt;
    let tokens = tempfile::tempdir().expect("temp dir");
    let token = tokens.path().join("admin.token");
    std::fs::write(&token, "metrics-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut rig = Rig::start(simulation(1, 5, 50.0, 5), |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.admin.token_file = token.clone();
    })
    .await;
    let admin = rig.node.as_ref().unwrap().admin_addr().expect("admin on");
    let http = reqwest::Client::new();
    let get = |path: &str, bearer: Option<&str>| {
        let mut request = http.get(format!("http://{admin}{path}"));
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        request.send()
    };
    assert_eq!(get("/metrics", None).await.unwrap().status().as_u16(), 401);
    let ok = get("/metrics", Some("metrics-token")).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert!(ok.text().await.unwrap().contains("tgingest_build_info"));
    assert_eq!(get("/healthz", None).await.unwrap().status().as_u16(), 200);
    wait_readyz(&http, admin, 200, "ready").await;
    rig.stop().await;
}
