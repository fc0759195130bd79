//! Three `tgingest run` processes share 30 real grammers accounts on a three-server NATS
//! cluster: a node that joins takes about a third of the accounts and nothing else moves; a node
//! killed with SIGKILL has every one of its accounts running elsewhere within a lease and 5 s; a
//! node stopped with SIGTERM hands its accounts over. Through all of it, no auth key is ever
//! used by two MTProto sessions at once (the fake DC's overlap oracle), and event by event
//! against what was sent, nothing is lost and nothing is stored twice.
//!
//! The fake DC, the NATS cluster and the fake Switchboard live in this test process and outlive
//! every node. Ownership timings are shortened (lease 3 s, renewal every 300 ms, fence after
//! 1.5 s) so the same rules play out in seconds.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::dc_traffic::{DcAccounts, Sender};
use support::nodes::{Rig, wait_settled};
use support::signal;
use tgingest::cluster::local::{SHORT_LEASE as LEASE, p50_max, per_node, time_to_resume};
use tgingest::event::ChatKind;

const ACCOUNTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_accounts_through_join_kill_and_leave_with_no_overlap_loss_or_duplicate()
{
    let rig = Rig::start().await;
    let dc = rig.dc.clone();

    // Ground truth: 30 accounts, each with a private chat, all in one supergroup.
    let world = DcAccounts::create(&dc, ACCOUNTS, &[ChatKind::Supergroup]);
    let accounts = world.ids.clone();

    let http = rig.http();
    let mut nodes = vec![rig.start_node("node-a")];
    nodes[0].wait_running().await;
    world.import_and_consent(&http, &nodes[0].admin).await;
    nodes.push(rig.start_node("node-b"));
    nodes[1].wait_running().await;
    let before_join = wait_settled(&http, &dc, &accounts, &nodes[0], &["node-a", "node-b"]).await;
    eprintln!("two nodes: {:?}", per_node(&before_join));

    // The sender: ~50 messages/s round-robin over the chats, until told to stop.
    let sender = Sender::start(dc.clone(), world.targets.clone(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Join: about a third moves, each to the new node; nothing moves between the old two.
    let handovers_before = dc.handovers().len();
    nodes.push(rig.start_node("node-c"));
    nodes[2].wait_running().await;
    let after_join = wait_settled(
        &http,
        &dc,
        &accounts,
        &nodes[0],
        &["node-a", "node-b", "node-c"],
    )
    .await;
    let moved: BTreeSet<String> = dc.handovers()[handovers_before..]
        .iter()
        .map(|h| h.user.to_string())
        .collect();
    let on_c: BTreeSet<String> = after_join
        .iter()
        .filter(|(_, n)| *n == "node-c")
        .map(|(a, _)| a.clone())
        .collect();
    eprintln!(
        "join: {} accounts moved (fake DC hand-overs), {:?} now",
        moved.len(),
        per_node(&after_join)
    );
    assert_eq!(
        moved, on_c,
        "the accounts that changed session on the DC are not exactly those the new node took"
    );
    assert!(
        (ACCOUNTS / 5..=ACCOUNTS / 2).contains(&moved.len()),
        "a joining node took {} of {ACCOUNTS} accounts, not about a third",
        moved.len()
    );

    // Kill -9 the node with the most accounts: each of them runs elsewhere within lease + 5 s.
    let counts = per_node(&after_join);
    let victim_name = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(n, _)| n.clone())
        .expect("a node");
    let victim = nodes
        .iter()
        .position(|n| n.name == victim_name)
        .expect("victim");
    let handovers_before = dc.handovers().len();
    let killed_at = Instant::now();
    let mut child = nodes[victim].child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let orphans: BTreeSet<i64> = accounts
        .iter()
        .copied()
        .filter(|a| after_join.get(&a.to_string()) == Some(&victim_name))
        .collect();
    let bound = LEASE + Duration::from_secs(5);
    let resumed = time_to_resume(&dc, handovers_before, &orphans, killed_at, bound * 4).await;
    let (p50, max) = p50_max(resumed.values().copied().collect());
    eprintln!(
        "kill -9 of {victim_name} ({} accounts): resumed elsewhere p50 {p50:?}, max {max:?}",
        orphans.len()
    );
    assert_eq!(
        resumed.len(),
        orphans.len(),
        "not every account of the killed node resumed elsewhere"
    );
    assert!(
        max <= bound,
        "an account of the killed node took {max:?} to resume (bound {bound:?})"
    );
    // The takers' failover histogram counts exactly these accounts (the dashboard's source).
    let mut counted = 0.0;
    let mut seconds = 0.0;
    for n in nodes.iter().filter(|n| n.child.is_some()) {
        counted += n
            .metric(&http, "tgingest_cluster_failover_seconds_count")
            .await;
        seconds += n
            .metric(&http, "tgingest_cluster_failover_seconds_sum")
            .await;
    }
    eprintln!(
        "failover histogram: {counted} accounts, mean {:.2} s from the last renewal seen",
        seconds / counted.max(1.0)
    );
    assert_eq!(
        counted as usize,
        orphans.len(),
        "tgingest_cluster_failover_seconds does not count the accounts taken from the dead node"
    );

    // SIGTERM another node: it hands its accounts over; the third takes everything.
    let leaver = (0..nodes.len())
        .find(|i| *i != victim)
        .expect("another node");
    let survivor = (0..nodes.len())
        .find(|i| *i != victim && *i != leaver)
        .expect("a third node");
    let settled = wait_settled(&http, &dc, &accounts, &nodes[survivor], &{
        let mut live: Vec<&str> = [&nodes[leaver].name, &nodes[survivor].name]
            .iter()
            .map(|s| s.as_str())
            .collect();
        live.sort();
        live
    })
    .await;
    let leaving: BTreeSet<i64> = settled
        .iter()
        .filter(|(_, n)| **n == nodes[leaver].name)
        .filter_map(|(a, _)| a.parse().ok())
        .collect();
    let handovers_before = dc.handovers().len();
    let left_at = Instant::now();
    signal(nodes[leaver].pid(), libc::SIGTERM);
    let handed = time_to_resume(
        &dc,
        handovers_before,
        &leaving,
        left_at,
        Duration::from_secs(30),
    )
    .await;
    let mut child = nodes[leaver].child.take().expect("running");
    let left = child.wait().expect("reaped");
    let survivor_name = nodes[survivor].name.clone();
    wait_settled(
        &http,
        &dc,
        &accounts,
        &nodes[survivor],
        &[survivor_name.as_str()],
    )
    .await;
    let moved: BTreeSet<i64> = dc.handovers()[handovers_before..]
        .iter()
        .map(|h| h.user)
        .collect();
    let (p50, max) = p50_max(handed.values().copied().collect());
    eprintln!(
        "SIGTERM of {}: its {} accounts resumed on {survivor_name} after p50 {p50:?}, max {max:?}",
        nodes[leaver].name,
        leaving.len(),
    );
    assert!(
        left.success(),
        "the leaving node did not stop cleanly: {left}"
    );
    assert_eq!(
        moved, leaving,
        "a graceful leave moved other accounts than the leaver's"
    );
    assert!(
        max <= Duration::from_secs(5),
        "a hand-off on SIGTERM took {max:?} (bound 5 s)"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sender.sent();
    let expected = sender.stop().await;
    rig.wait_stored(&expected).await;
    signal(nodes[survivor].pid(), libc::SIGTERM);
    let last = nodes[survivor]
        .child
        .take()
        .expect("running")
        .wait()
        .expect("reaped");
    drop(dc);
    rig.check(sent, &expected, &nodes).await;
    assert!(last.success(), "the last node did not stop cleanly: {last}");
}
