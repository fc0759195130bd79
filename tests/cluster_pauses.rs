//! Three `tgingest run` processes sharing 30 grammers accounts survive a node frozen with
//! SIGSTOP and a rolling restart of every node, under load: a node resumed after its lease ran
//! out does not send a single MTProto frame for an account it no longer owns (the fake DC sees
//! no overlap, ever), each hand-off of the rolling restart takes at most 5 s, and event by event
//! nothing is lost and nothing is stored twice.
//!
//! The pauses are the 5, 15, 25 and 60 s against the default 20 s lease, scaled to the
//! shortened 3 s lease the nodes run with here: 0.75, 2.25, 3.75 and 9 s — below the 1.5 s fence,
//! between fence and lease, just past the lease, and three leases.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::dc_traffic::{DcAccounts, Sender};
use support::nodes::{Rig, wait_settled};
use support::signal;
use tgingest::cluster::local::{SHORT_LEASE as LEASE, p50_max, time_to_resume};
use tgingest::event::ChatKind;

const ACCOUNTS: usize = 30;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_nodes_never_talk_for_lost_accounts_and_a_rolling_restart_hands_off_within_5s() {
    let rig = Rig::start().await;
    let dc = rig.dc.clone();
    let world = DcAccounts::create(&dc, ACCOUNTS, &[ChatKind::Supergroup]);
    let accounts = world.ids.clone();
    let http = rig.http();
    let mut nodes = vec![rig.start_node(NODES[0])];
    nodes[0].wait_running().await;
    world.import_and_consent(&http, &nodes[0].admin).await;
    for name in &NODES[1..] {
        nodes.push(rig.start_node(name));
    }
    for n in &nodes[1..] {
        n.wait_running().await;
    }
    let mut owned = wait_settled(&http, &dc, &accounts, &nodes[0], &NODES).await;
    let sender = Sender::start(dc.clone(), world.targets.clone(), Duration::from_millis(20));

    // Longest first: a client that outlived its claim would have the other pauses' time to talk.
    for (i, pause) in [3.0, 0.25, 0.75, 1.25].into_iter().enumerate() {
        let pause = LEASE.mul_f64(pause);
        let frozen = &nodes[i % nodes.len()];
        let other = &nodes[(i + 1) % nodes.len()];
        let dropped_before = frozen
            .metric(&http, "tgingest_cluster_gate_frames_dropped_total")
            .await;
        let its: BTreeSet<i64> = owned
            .iter()
            .filter(|(_, n)| **n == frozen.name)
            .filter_map(|(a, _)| a.parse().ok())
            .collect();
        let from = dc.handovers().len();
        signal(frozen.pid(), libc::SIGSTOP);
        tokio::time::sleep(pause).await;
        // Accounts of the frozen node that another node started meanwhile.
        let taken: BTreeSet<i64> = dc.handovers()[from..]
            .iter()
            .map(|h| h.user)
            .filter(|a| its.contains(a))
            .collect();
        signal(frozen.pid(), libc::SIGCONT);
        // The resumed node's connections of the accounts taken over must be shut at once (its
        // fence is down): one connection per account on the DC, the new owner's, well before
        // a hand-back could close the new owner's instead (the view must first be stable for
        // `cluster.stable_after`, 1 s here).
        let resumed_at = Instant::now();
        loop {
            let stale: Vec<i64> = taken
                .iter()
                .copied()
                .filter(|a| dc.subscribed_connections(*a) > 1)
                .collect();
            if stale.is_empty() {
                break;
            }
            assert!(
                resumed_at.elapsed() < Duration::from_millis(800),
                "{:?} after SIGCONT ({pause:?} SIGSTOP) the old owner's connections of {stale:?} were still open",
                resumed_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shut = resumed_at.elapsed();
        // Past the lease its accounts ran elsewhere meanwhile; it rejoins and takes its share.
        owned = wait_settled(&http, &dc, &accounts, other, &NODES).await;
        let dropped = frozen
            .metric(&http, "tgingest_cluster_gate_frames_dropped_total")
            .await
            - dropped_before;
        eprintln!(
            "SIGSTOP {} for {pause:?}: {} of its {} accounts taken over while it was frozen, their old connections shut {shut:?} after SIGCONT; {} overlaps so far; its gate dropped {dropped} frames; it owns {} accounts again",
            frozen.name,
            taken.len(),
            its.len(),
            dc.overlaps().len(),
            owned.values().filter(|n| **n == frozen.name).count()
        );
        if pause >= LEASE * 2 {
            assert_eq!(
                taken, its,
                "a node frozen for {pause:?} kept accounts nobody took over: the test proves nothing"
            );
        }
        assert!(
            dc.overlaps().is_empty(),
            "after a {pause:?} SIGSTOP an old owner talked after a new one started: {:?}",
            dc.overlaps()
        );
    }

    // Rolling restart: each node in turn stops (handing its accounts over) and comes back.
    let mut handoffs = Vec::new();
    for i in 0..nodes.len() {
        let others: Vec<usize> = (0..nodes.len()).filter(|j| *j != i).collect();
        let owned = wait_settled(&http, &dc, &accounts, &nodes[others[0]], &NODES).await;
        let leaving: BTreeSet<i64> = owned
            .iter()
            .filter(|(_, n)| **n == nodes[i].name)
            .filter_map(|(a, _)| a.parse().ok())
            .collect();
        let from = dc.handovers().len();
        let stopped_at = Instant::now();
        signal(nodes[i].pid(), libc::SIGTERM);
        let resumed =
            time_to_resume(&dc, from, &leaving, stopped_at, Duration::from_secs(30)).await;
        let status = nodes[i]
            .child
            .take()
            .expect("running")
            .wait()
            .expect("reaped");
        assert!(
            status.success(),
            "{} did not stop cleanly: {status}",
            nodes[i].name
        );
        assert_eq!(
            resumed.len(),
            leaving.len(),
            "not every account of {} resumed elsewhere",
            nodes[i].name
        );
        let (p50, max) = p50_max(resumed.values().copied().collect());
        eprintln!(
            "rolling restart, {}: {} accounts handed over, p50 {p50:?}, max {max:?}",
            nodes[i].name,
            leaving.len()
        );
        handoffs.extend(resumed.into_values());
        let name = nodes[i].name.clone();
        nodes[i] = rig.start_node(&name);
        nodes[i].wait_running().await;
    }
    wait_settled(&http, &dc, &accounts, &nodes[0], &NODES).await;
    let (p50, max) = p50_max(handoffs);
    eprintln!("rolling restart: every hand-off p50 {p50:?}, max {max:?}");
    assert!(
        max <= Duration::from_secs(5),
        "a hand-off of the rolling restart took {max:?} (bound 5 s)"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sender.sent();
    let expected = sender.stop().await;
    rig.wait_stored(&expected).await;
    for n in &mut nodes {
        signal(n.pid(), libc::SIGTERM);
        let status = n.child.take().expect("running").wait().expect("reaped");
        assert!(
            status.success(),
            "{} did not stop cleanly: {status}",
            n.name
        );
    }
    drop(dc);
    rig.check(sent, &expected, &nodes).await;
}
