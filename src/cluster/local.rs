//! What the cluster tests and the loadtest's cluster scenarios share about running `tgingest
//! run` nodes on one machine: the shortened ownership timings, reading `GET /v1/cluster`, and
//! how long each account took to run again, from the fake DC's hand-over log. One copy here, so
//! `tests/support/nodes.rs` and `loadtest/src/nodes.rs` measure the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::telegram::fakedc::FakeDc;

/// The shortened lease of [`SHORT_TIMINGS`].
pub const SHORT_LEASE: Duration = Duration::from_secs(3);

/// Ownership timings shortened so the production rules play out in seconds (lease 3 s, renewal
/// every 300 ms, fence after 1.5 s, lock-delay 200 ms), as environment overrides of a node.
pub const SHORT_TIMINGS: [(&str, &str); 7] = [
    ("TGINGEST_KV_LEASE_TTL", "6s"),
    ("TGINGEST_CLUSTER_LEASE", "3s"),
    ("TGINGEST_CLUSTER_RENEW_EVERY", "300ms"),
    ("TGINGEST_CLUSTER_SELF_FENCE_AFTER", "1500ms"),
    ("TGINGEST_CLUSTER_LOCK_DELAY", "200ms"),
    ("TGINGEST_CLUSTER_STABLE_AFTER", "1s"),
    ("TGINGEST_CLUSTER_CONNECTS_PER_SECOND", "50"),
];

/// Account id → owning node, from a `GET /v1/cluster` answer (empty when it has no `owned`).
pub fn owners(status: &serde_json::Value) -> BTreeMap<String, String> {
    status["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                o["account"].as_str().unwrap_or_default().to_string(),
                o["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Accounts per node of an [`owners`] map.
pub fn per_node(owned: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for node in owned.values() {
        *n.entry(node.clone()).or_default() += 1;
    }
    n
}

/// Whether `owned` places every one of `accounts` on exactly the nodes `nodes`, none above
/// the bounded-load cap (1.25 x the mean, the default `cluster.load_factor`).
pub fn placed(owned: &BTreeMap<String, String>, accounts: usize, nodes: &[&str]) -> bool {
    let cap = (1.25 * accounts as f64 / nodes.len().max(1) as f64).ceil() as usize;
    let counts = per_node(owned);
    let by: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
    owned.len() == accounts
        && by == nodes.iter().copied().collect()
        && counts.values().all(|n| *n <= cap)
}

/// Waits (up to `limit` after `since`) until each of `accounts` has a new MTProto session on
/// the fake DC (a hand-over after index `from` of its log): it runs again on a new client.
/// Returns, per account that did, how long after `since` it was first seen doing so (to the
/// 50 ms poll).
pub async fn time_to_resume(
    dc: &FakeDc,
    from: usize,
    accounts: &BTreeSet<i64>,
    since: Instant,
    limit: Duration,
) -> BTreeMap<i64, Duration> {
    let mut resumed = BTreeMap::new();
    while resumed.len() < accounts.len() && since.elapsed() < limit {
        let elapsed = since.elapsed();
        for h in dc.handovers().get(from..).unwrap_or_default() {
            if accounts.contains(&h.user) {
                resumed.entry(h.user).or_insert(elapsed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    resumed
}

/// The median and the maximum (zero for none).
pub fn p50_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (
        v.get(v.len() / 2).copied().unwrap_or_default(),
        v.last().copied().unwrap_or_default(),
    )
}
