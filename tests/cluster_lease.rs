//! Node leases, fencing and account claims on a real three-server JetStream cluster started from
//! the shipped `deploy/nats/cluster-node.conf`.
//!
//! Timings are shortened (lease 3 s, renew every 300 ms, fence after 1.5 s) so the properties
//! show in seconds; they are the same rules as the defaults.

mod support;

use std::time::Duration;

use tgingest::bus::BUCKET_LEASES;
use tgingest::cluster::claims::{self, ClaimRecord, Taken};
use tgingest::cluster::lease::{NodeLease, NodeRecord, node_key};
use tgingest::cluster::membership::Membership;
use tgingest::cluster::record::RecordError;
use tokio::sync::watch;
use tokio::time::Instant;

use support::cluster::{ClusterRig, never, timing};
use support::proxy::{Mode, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lease_write_carries_a_ttl_and_a_stale_revision_is_refused() {
    let rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let records = rig.records(&bus).await;
    let first = records.write("acct.1", &"a", 0).await.expect("create");
    assert!(matches!(
        records.write("acct.1", &"b", 0).await,
        Err(RecordError::Conflict { .. })
    ));
    let second = records.write("acct.1", &"b", first).await.expect("CAS");
    assert!(matches!(
        records.write("acct.1", &"c", first).await,
        Err(RecordError::Conflict { .. })
    ));
    // Deleted: async-nats' create_with_ttl would fall back to an update without a TTL here.
    let kv = bus.js.get_key_value(BUCKET_LEASES).await.unwrap();
    kv.delete_expect_revision("acct.1", Some(second))
        .await
        .unwrap();
    let marker = records.read::<String>("acct.1").await.unwrap();
    assert_eq!(marker.value, None);
    records
        .write("acct.1", &"d", marker.revision)
        .await
        .expect("write over a delete marker");
    let stream = bus.js.get_stream("KV_TG_LEASES").await.unwrap();
    let raw = stream
        .get_last_raw_message_by_subject("$KV.TG_LEASES.acct.1")
        .await
        .unwrap();
    let ttl = raw.headers.get("Nats-TTL").map(|v| v.as_str().to_string());
    assert_eq!(ttl.as_deref(), Some("6"), "headers: {:?}", raw.headers);
    // And the server does drop a record nobody rewrites (clean-up only; nothing decides on it).
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let v = records.read::<String>("acct.1").await.unwrap();
            if v.value.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "a record with Nats-TTL 6 s was still there after 20 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_node_id_waits_until_the_first_is_fenced() {
    let rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let records = rig.records(&bus).await;
    let cfg = timing();
    let first = NodeLease::acquire(records.clone(), &cfg, "n1", "boot-a", 1, 0, &never())
        .await
        .expect("first acquisition");
    let first_fence = first.fence().clone();

    // While the first renews, a second boot under the same node id gets nowhere.
    let (stop_tx, stop_rx) = watch::channel(false);
    let contender = {
        let (records, cfg) = (records.clone(), cfg.clone());
        tokio::spawn(async move {
            NodeLease::acquire(records, &cfg, "n1", "boot-b", 1, 0, &stop_rx).await
        })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !contender.is_finished(),
        "took a node lease that was being renewed"
    );
    assert!(first_fence.is_up(), "renewals stopped on their own");

    // The first stops renewing (a crash): its fence comes down, then the second gets the lease.
    drop(first);
    let second = contender.await.unwrap().expect("second acquisition");
    assert!(
        !first_fence.is_up(),
        "the second holder started while the first fence was up"
    );
    assert!(second.fence().is_up());
    assert_eq!(
        first_fence.deadline(),
        None,
        "the old fence must be down for good"
    );
    // Reads may come from a replica that lags (no read-after-write in JetStream KV).
    let stored = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = records.read::<NodeRecord>(&node_key("n1")).await.unwrap();
            if let Some(v) = r.value.filter(|v| v.holder.boot == "boot-b") {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(stored.is_ok(), "the record never showed the second holder");
    stop_tx.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_fences_itself_by_its_deadline_and_a_late_renewal_changes_nothing()
{
    let mut rig = ClusterRig::start().await;
    let upstream = rig.cluster.servers()[0].url().replace("nats://", "");
    let proxy = Proxy::start(upstream).await;
    // The fenced node reaches NATS only through the proxy (one server, no other seeds).
    let bus = rig.bus(&proxy.url()).await;
    let records = rig.records(&bus).await;
    let cfg = timing();
    let lease = NodeLease::acquire(records, &cfg, "cut", "boot-1", 1, 0, &never())
        .await
        .expect("acquire");
    let fence = lease.fence().clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fence.is_up(), "renewals through the proxy failed");

    // Frozen path: renewals hang. The fence must come down at its deadline, not later.
    let deadline = fence.deadline().expect("up");
    proxy.set(Mode::Stall);
    tokio::time::timeout(Duration::from_secs(5), fence.lowered())
        .await
        .expect("the fence stayed up with every renewal hanging");
    let lowered_at = Instant::now();
    println!(
        "stalled: fence down {:?} past its deadline (self_fence_after {:?} from the last renewal sent)",
        lowered_at.saturating_duration_since(deadline),
        Duration::from(cfg.self_fence_after)
    );
    assert!(lowered_at >= deadline);
    // The path heals: the hung renewal may now land, but a fence once down stays down.
    proxy.set(Mode::Pass);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !fence.is_up(),
        "a renewal after the deadline raised the fence again"
    );
    assert_eq!(fence.deadline(), None);

    // Cut (connections reset, new ones refused) behaves the same for a fresh lease.
    drop(lease);
    let bus2 = rig.bus(&proxy.url()).await;
    let records2 = rig.records(&bus2).await;
    let lease2 = NodeLease::acquire(records2, &cfg, "cut", "boot-1", 2, 0, &never())
        .await
        .expect("the same process acquires again with a new generation");
    let fence2 = lease2.fence().clone();
    proxy.set(Mode::Cut);
    tokio::time::timeout(Duration::from_secs(5), fence2.lowered())
        .await
        .expect("the fence stayed up with the node cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_streams_leader_during_renewals_never_leaves_two_holders() {
    let mut rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let records = rig.records(&bus).await;
    let cfg = timing();
    let lease = NodeLease::acquire(records.clone(), &cfg, "n1", "boot-a", 1, 0, &never())
        .await
        .expect("acquire");
    let fence = lease.fence().clone();
    let info = bus
        .js
        .get_stream("KV_TG_LEASES")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a stream leader");
    let (stop_tx, stop_rx) = watch::channel(false);
    let contender = {
        let (records, cfg) = (records.clone(), cfg.clone());
        tokio::spawn(async move {
            NodeLease::acquire(records, &cfg, "n1", "boot-b", 1, 0, &stop_rx).await
        })
    };
    let killed_at = Instant::now();
    let server = rig
        .cluster
        .servers()
        .iter_mut()
        .find(|s| s.options().name == leader)
        .expect("leader among the servers");
    server.kill();
    // Watch for 8 s: the holder either keeps renewing through the election or fences itself;
    // the contender may win only once the holder's fence is down.
    let mut longest_gap = Duration::ZERO;
    let mut last_deadline = fence.deadline();
    let mut last_move = Instant::now();
    let mut contender = Some(contender);
    while killed_at.elapsed() < Duration::from_secs(8) {
        let up = fence.is_up();
        if contender.as_ref().is_some_and(|c| c.is_finished()) {
            let won = contender.take().unwrap().await.unwrap();
            assert!(won.is_ok(), "the contender gave up: {:?}", won.err());
            assert!(
                !up,
                "a second holder got the lease while the first was still up"
            );
        }
        let d = fence.deadline();
        if d != last_deadline {
            longest_gap = longest_gap.max(last_move.elapsed());
            last_move = Instant::now();
            last_deadline = d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "leader {leader} killed; fence up at the end: {}; longest pause between renewals: {longest_gap:?}",
        fence.is_up()
    );
    stop_tx.send_replace(true);
    if let Some(c) = contender {
        let _ = c.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_a_live_node_stay_and_of_a_gone_node_move_with_a_new_epoch_refusing_the_old_owner()
 {
    let rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let records = rig.records(&bus).await;
    let cfg = timing();
    let membership = Membership::start(records.clone(), &cfg, "b", never()).await;
    let a = NodeLease::acquire(records.clone(), &cfg, "a", "boot-a", 1, 0, &never())
        .await
        .unwrap();
    let b = NodeLease::acquire(records.clone(), &cfg, "b", "boot-b", 1, 0, &never())
        .await
        .unwrap();
    let delay = Duration::from(cfg.lock_delay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(membership.view().accepting(), ["a", "b"]);
    let Taken::Mine(claim_a) = claims::take(&records, &membership, a.fence(), "42", delay)
        .await
        .unwrap()
    else {
        panic!("a free account was not taken");
    };
    assert_eq!(claim_a.epoch, 1);
    // b sees a live holder.
    for _ in 0..5 {
        let t = claims::take(&records, &membership, b.fence(), "42", delay)
            .await
            .unwrap();
        assert!(matches!(t, Taken::Busy(ref h) if h.node == "a"), "{t:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // a dies (stops renewing). b takes over only after a whole lease of silence, epoch 2.
    let a_fence = a.fence().clone();
    drop(a);
    let died = Instant::now();
    let claim_b = loop {
        match claims::take(&records, &membership, b.fence(), "42", delay)
            .await
            .unwrap()
        {
            Taken::Mine(c) => break c,
            Taken::Busy(_) => {
                assert!(died.elapsed() < Duration::from_secs(20), "never taken over");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(
        !a_fence.is_up(),
        "taken over while the old owner's fence was up"
    );
    assert_eq!(claim_b.epoch, 2);
    assert!(claim_b.connect_after > Instant::now() - Duration::from_millis(50));
    println!(
        "takeover {:?} after the owner's last renewal",
        died.elapsed()
    );

    // The old owner's late release (a stale write) is refused.
    let stale = claims::release(&records, &a_fence, &claim_a, None).await;
    assert!(
        matches!(stale, Err(RecordError::Conflict { .. })),
        "{stale:?}"
    );
    // Reads may be served by any replica (`allow_direct`), so one that has not applied B's
    // claim yet answers A's: wait for B's to show. Had the stale release been stored, it never
    // would.
    let deadline = Instant::now() + Duration::from_secs(10);
    let holder = loop {
        let stored = records
            .read::<ClaimRecord>(&claims::claim_key("42"))
            .await
            .unwrap()
            .value
            .unwrap();
        let holder = (stored.holder.node.clone(), stored.epoch);
        if holder == ("b".to_string(), 2) || Instant::now() > deadline {
            break holder;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((holder.0.as_str(), holder.1), ("b", 2));

    // A clean release with a target is left to that target while it is live.
    claims::release(&records, b.fence(), &claim_b, Some("c"))
        .await
        .unwrap();
    let c = NodeLease::acquire(records.clone(), &cfg, "c", "boot-c", 1, 0, &never())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = claims::take(&records, &membership, b.fence(), "42", delay)
        .await
        .unwrap();
    assert!(matches!(t, Taken::Reserved(ref n) if n == "c"), "{t:?}");
    let t = claims::take(&records, &membership, c.fence(), "42", delay)
        .await
        .unwrap();
    assert!(matches!(t, Taken::Mine(ref m) if m.epoch == 3), "{t:?}");
}

/// A claim is renewed by nobody (its node lease is): it must outlive the records' TTL, or it
/// would read as never claimed and a second node would take the account at epoch 1 while the
/// owner still runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_outlives_the_lease_ttl_while_its_node_lease_is_renewed() {
    let rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let ttl = Duration::from_secs(1);
    let records = tgingest::cluster::record::Records::open(
        &bus,
        BUCKET_LEASES,
        ttl,
        Duration::from_millis(800),
    )
    .await
    .unwrap();
    let mut cfg = timing();
    cfg.lease = tgingest::config::Dur(Duration::from_millis(900));
    cfg.self_fence_after = tgingest::config::Dur(Duration::from_millis(600));
    let membership = Membership::start(records.clone(), &cfg, "b", never()).await;
    let a = NodeLease::acquire(records.clone(), &cfg, "a", "boot-a", 1, 0, &never())
        .await
        .unwrap();
    let b = NodeLease::acquire(records.clone(), &cfg, "b", "boot-b", 1, 0, &never())
        .await
        .unwrap();
    let delay = Duration::from(cfg.lock_delay);
    let Taken::Mine(claim) = claims::take(&records, &membership, a.fence(), "7", delay)
        .await
        .unwrap()
    else {
        panic!("a free account was not taken");
    };
    tokio::time::sleep(ttl * 3).await;
    assert!(
        a.fence().is_up(),
        "the owner's lease lapsed; the test proves nothing"
    );
    let stored = records
        .read::<ClaimRecord>(&claims::claim_key("7"))
        .await
        .unwrap();
    assert_eq!(
        stored.value.map(|c| (c.holder.node, c.epoch)),
        Some(("a".to_string(), claim.epoch)),
        "the claim expired with the TTL"
    );
    let t = claims::take(&records, &membership, b.fence(), "7", delay)
        .await
        .unwrap();
    assert!(matches!(t, Taken::Busy(ref h) if h.node == "a"), "{t:?}");
}

/// Racing compare-and-set writes of one key: exactly one wins and every other is told it lost
/// (a conflict), never "unknown" — nats-server 2.15 in a cluster reports some of these losses with
/// error code 10164, which async-nats does not classify as a wrong last sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writes_of_one_record_have_one_winner_and_every_loser_sees_a_conflict() {
    let rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let records = rig.records(&bus).await;
    let mut unknown = Vec::new();
    for key in 0..20 {
        let key = format!("race.{key}");
        let writes = (0..8).map(|i| {
            let (records, key) = (records.clone(), key.clone());
            async move { records.write_persistent(&key, &i, 0).await }
        });
        let results = futures::future::join_all(writes).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{key}: {results:?}");
        unknown.extend(
            results
                .into_iter()
                .filter(|r| !matches!(r, Ok(_) | Err(RecordError::Conflict { .. }))),
        );
    }
    assert!(unknown.is_empty(), "losers not told they lost: {unknown:?}");
}
