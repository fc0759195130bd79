//! An account whose session Telegram revoked runs nowhere in the cluster, says so, and stays
//! that way until an operator brings a new session: two `tgingest run` processes share four
//! real grammers accounts on a three-server NATS cluster; the fake DC revokes one account's
//! session. Its owner stops it, every node's `GET /v1/cluster` names it unowned with reason
//! `revoked` and the RPC error, and the dead key is never connected again, not even when the
//! node that owned it is killed and its other accounts move. Removing the account and importing
//! a working session runs it again.
//!
//! The oracle is the fake DC's own session log (a new MTProto session on a key is a connection
//! that talked), not anything tgingest reports. Ownership timings are shortened (lease 3 s).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::dc_traffic::DcAccounts;
use support::nodes::{NodeProcess, Rig, wait_settled};

/// Waits (up to `within`) until `ask`'s cluster status satisfies `done`; returns that status.
async fn wait_status(
    http: &reqwest::Client,
    nodes: &[NodeProcess],
    ask: usize,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = nodes[ask].status(http).await;
        if let Some(s) = status.as_ref().filter(|s| done(s)) {
            return s.clone();
        }
        if Instant::now() >= deadline {
            for n in nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                eprintln!("--- {} ---\n{log}", n.name);
            }
            panic!(
                "{what} within {within:?}; last status from {}: {status:#?}",
                nodes[ask].name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `account`'s entry in the status's `unowned` list, if it has one.
fn unowned<'a>(status: &'a Value, account: &str) -> Option<&'a Value> {
    status["unowned"]
        .as_array()?
        .iter()
        .find(|u| u["account"] == account)
}

/// Waits (up to 30 s) until the live `nodes` together count exactly one revoked account: the
/// dashboards see it once, whichever node owned it.
async fn wait_counted_once(http: &reqwest::Client, nodes: &[&NodeProcess]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut per_node = Vec::new();
        for n in nodes {
            per_node.push((
                n.name.clone(),
                n.metric_with(http, "tgingest_accounts", "state=\"revoked\"")
                    .await,
            ));
        }
        if per_node.iter().map(|(_, v)| v).sum::<f64>() == 1.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked account is not counted exactly once: {per_node:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// New MTProto sessions the fake DC has seen on `account`'s key (each one a connection that
/// made a request).
fn sessions_started(rig: &Rig, account: i64) -> usize {
    rig.dc
        .handovers()
        .iter()
        .filter(|h| h.user == account)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_account_is_shown_revoked_and_never_connected_again_until_a_new_session() {
    let rig = Rig::start().await;
    let dc = rig.dc.clone();
    let world = DcAccounts::create(&dc, 4, &[]);
    let accounts = world.ids.clone();
    let http = rig.http();
    // One after the other, as an operator would: the first sets the streams up.
    let mut nodes = vec![rig.start_node("node-a")];
    nodes[0].wait_running().await;
    nodes.push(rig.start_node("node-b"));
    nodes[1].wait_running().await;
    world.import_and_consent(&http, &nodes[0].admin).await;
    let owners = wait_settled(&http, &dc, &accounts, &nodes[0], &["node-a", "node-b"]).await;

    let victim = accounts[0];
    let victim_id = victim.to_string();
    let owner = owners[&victim_id].clone();
    let other = nodes
        .iter()
        .position(|n| n.name != owner)
        .expect("two nodes");
    dc.revoke_session(victim);
    let revoked_at = Instant::now();

    // The owner notices at its next request (the hole check runs every 10 s), stops the
    // account and releases it; the other node reports why nobody runs it.
    let status = wait_status(
        &http,
        &nodes,
        other,
        Duration::from_secs(60),
        "the revoked account is not shown unowned as revoked",
        |s| unowned(s, &victim_id).is_some_and(|u| u["reason"] == "revoked"),
    )
    .await;
    eprintln!(
        "revoked on the DC → shown revoked by the other node after {:?}",
        revoked_at.elapsed()
    );
    let why = unowned(&status, &victim_id).expect("listed");
    assert_eq!(why["error"], "SESSION_REVOKED", "{why}");
    assert!(why["since_us"].as_i64().is_some_and(|t| t > 0), "{why}");
    for a in &accounts[1..] {
        assert!(
            unowned(&status, &a.to_string()).is_none(),
            "a healthy account is unowned: {status:#}"
        );
    }
    let sessions_at_revoke = sessions_started(&rig, victim);
    wait_counted_once(&http, &[&nodes[0], &nodes[1]]).await;

    // Kill -9 the node that owned it: its other accounts move to the survivor, the revoked one
    // is not taken over (its key stays silent on the DC).
    let owner_at = nodes.iter().position(|n| n.name == owner).expect("owner");
    let mut child = nodes[owner_at].child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let survivor = nodes[other].name.clone();
    let healthy = &accounts[1..];
    let moved = wait_settled(&http, &dc, healthy, &nodes[other], &[survivor.as_str()]).await;
    assert!(moved.values().all(|n| *n == survivor), "{moved:?}");
    // Two more hole-check rounds on the survivor: time for a wrongly restarted client to talk.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(
        sessions_started(&rig, victim),
        sessions_at_revoke,
        "the revoked account's key was connected again after it was revoked"
    );
    assert_eq!(dc.subscribed_connections(victim), 0);
    // The survivor speaks for it now: its gauge says so although it never ran the account.
    wait_counted_once(&http, &[&nodes[other]]).await;
    let status = nodes[other].status(&http).await.expect("status");
    assert_eq!(
        unowned(&status, &victim_id).map(|u| u["reason"].clone()),
        Some(Value::from("revoked")),
        "after the failover: {status:#}"
    );

    // An operator removes it and imports a working session: it runs again.
    dc.restore_key(victim);
    let admin = nodes[other].admin.clone();
    let resp = http
        .delete(format!("http://{admin}/v1/accounts/{victim}"))
        .send()
        .await
        .expect("admin API answers");
    assert!(resp.status().is_success(), "remove: {}", resp.status());
    let again = DcAccounts {
        ids: vec![victim],
        sessions: vec![world.sessions[0].clone()],
        targets: Vec::new(),
    };
    again.import_and_consent(&http, &admin).await;
    let back = wait_settled(&http, &dc, &accounts, &nodes[other], &[survivor.as_str()]).await;
    assert_eq!(back.get(&victim_id), Some(&survivor));

    drop(nodes);
    drop(dc);
    let dc = std::sync::Arc::try_unwrap(rig.dc)
        .ok()
        .expect("every user of the fake DC is gone");
    let overlaps = dc.overlaps();
    dc.stop().await;
    rig.fake.stop().await;
    assert!(
        overlaps.is_empty(),
        "an auth key was used twice: {overlaps:?}"
    );
}
