//! Which live node should own which account: rendezvous (highest-random-weight) hashing with a
//! bounded load.
//!
//! Every node computes the same answer from the same view (the live nodes and the accounts), so
//! no coordinator is needed; a wrong view only causes churn, never two owners (claims are taken
//! by compare-and-set). Rendezvous hashing moves little: when a node joins, only the accounts
//! that rank it first move to it (about N/(M+1)); when one leaves, only its accounts move. The
//! load cap (`load_factor` x the mean, as in Mirrokni et al.'s consistent hashing with bounded
//! loads) keeps an unlucky node from taking far more than its share; an account whose first
//! choice is full goes to its next choice, which is the only other movement there is.
//!
//! Hand-written rather than taken from `hrw-hash`/`rendezvous_hash`: neither bounds the load, and
//! the ranking is five lines over blake3, which the project already uses.

use std::collections::BTreeMap;

/// The weight of `node` for `account`: the first 8 bytes of blake3(node ‖ 0 ‖ account).
pub fn weight(node: &str, account: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(node.as_bytes());
    h.update(&[0]);
    h.update(account.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// `nodes` in the order `account` prefers them (highest weight first; ties by node id).
pub fn ranking<'n>(account: &str, nodes: &[&'n str]) -> Vec<&'n str> {
    let mut ranked: Vec<(u64, &str)> = nodes.iter().map(|n| (weight(n, account), *n)).collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// The most accounts one node may own: `load_factor` x the mean, rounded up, at least 1.
pub fn load_cap(accounts: usize, nodes: usize, load_factor: f64) -> usize {
    if nodes == 0 {
        return 0;
    }
    ((accounts as f64 * load_factor / nodes as f64).ceil() as usize).max(1)
}

/// How many accounts each node may own: the bounded load, and no more than a node's announced
/// `capacity` (absent or 0: no limit of its own). What a limited node cannot take is shared out
/// among the others (water-filling), so they are capped at `load_factor` x the mean of what is
/// left to them, not of everything.
pub fn node_caps<'n>(
    accounts: usize,
    nodes: &[&'n str],
    capacity: &BTreeMap<&str, usize>,
    load_factor: f64,
) -> BTreeMap<&'n str, usize> {
    let mut caps = BTreeMap::new();
    let mut left = accounts;
    let mut open: Vec<&'n str> = nodes.to_vec();
    loop {
        let cap = load_cap(left, open.len(), load_factor);
        let limited: Vec<(&'n str, usize)> = open
            .iter()
            .filter_map(|n| {
                let c = capacity.get(n).copied().filter(|c| *c > 0)?;
                (c < cap).then_some((*n, c))
            })
            .collect();
        if limited.is_empty() {
            for n in open {
                caps.insert(n, cap);
            }
            return caps;
        }
        for (n, c) in limited {
            caps.insert(n, c);
            left = left.saturating_sub(c);
            open.retain(|o| *o != n);
        }
    }
}

/// The owner each account should have, given where accounts run now (`current`; accounts of
/// nodes not in `nodes` are moving anyway) and what each node may hold ([`node_caps`]).
///
/// Placement, in a fixed order (accounts by their own top weight, strongest preference first),
/// so every node that sees the same nodes, accounts and owners computes the same map:
/// 1. an account already on its first choice stays, while that node is under the cap;
/// 2. the rest go to their first choice if it has room (a joining node gets the accounts that
///    rank it first);
/// 3. then stay where they are if that node has room;
/// 4. then go to their highest-ranked node with room.
///
/// So a leaving node's accounts move and, besides them, only accounts the cap had kept from
/// their first choice. Empty when there is no node. An account is left out only when every
/// node is at its announced capacity: it waits, unowned, for room.
pub fn assign<'n>(
    accounts: &[&str],
    current: &BTreeMap<&str, &str>,
    nodes: &[&'n str],
    capacity: &BTreeMap<&str, usize>,
    load_factor: f64,
) -> BTreeMap<String, &'n str> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let caps = node_caps(accounts.len(), nodes, capacity, load_factor);
    let mut order: Vec<(u64, &str, Vec<&'n str>)> = accounts
        .iter()
        .map(|a| {
            let r = ranking(a, nodes);
            (weight(r[0], a), *a, r)
        })
        .collect();
    order.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(y.1)));
    order.dedup_by(|x, y| x.1 == y.1);
    let mut load: BTreeMap<&str, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    let mut place = |out: &mut BTreeMap<String, &'n str>, account: &str, node: &'n str| {
        let l = load.entry(node).or_default();
        if *l < caps.get(node).copied().unwrap_or(0) {
            *l += 1;
            out.insert(account.to_string(), node);
            true
        } else {
            false
        }
    };
    let here = |account: &str| -> Option<&'n str> {
        let owner = current.get(account)?;
        nodes.iter().copied().find(|n| n == owner)
    };
    for (_, account, preference) in &order {
        if here(account) == Some(preference[0]) {
            place(&mut out, account, preference[0]);
        }
    }
    for (_, account, preference) in &order {
        if !out.contains_key(*account) {
            place(&mut out, account, preference[0]);
        }
    }
    for (_, account, _) in &order {
        if !out.contains_key(*account)
            && let Some(owner) = here(account)
        {
            place(&mut out, account, owner);
        }
    }
    for (_, account, preference) in &order {
        if !out.contains_key(*account) {
            // Without capacities the caps add up to at least the accounts: one has room.
            for node in preference {
                if place(&mut out, account, node) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn as_current<'a>(map: &'a BTreeMap<String, &'a str>) -> BTreeMap<&'a str, &'a str> {
        map.iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }

    /// Accounts whose owner differs between two assignments.
    fn moved(a: &BTreeMap<String, &str>, b: &BTreeMap<String, &str>) -> Vec<String> {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    proptest! {
        #[test]
        fn every_account_gets_one_live_node_and_none_is_over_the_cap(
            n_accounts in 0usize..400, n_nodes in 1usize..8, factor in 1.0f64..2.0
        ) {
            let accounts = ids("acct-", n_accounts);
            let nodes = ids("node-", n_nodes);
            let map = assign(&refs(&accounts), &BTreeMap::new(), &refs(&nodes), &BTreeMap::new(), factor);
            prop_assert_eq!(map.len(), n_accounts);
            let cap = load_cap(n_accounts, n_nodes, factor);
            let mut load: BTreeMap<&str, usize> = BTreeMap::new();
            for owner in map.values() {
                prop_assert!(nodes.iter().any(|n| n == owner));
                *load.entry(owner).or_default() += 1;
            }
            prop_assert!(load.values().all(|l| *l <= cap), "{load:?} cap {cap}");
        }

        #[test]
        fn no_node_takes_more_than_it_announced_and_nothing_waits_while_a_node_has_room(
            n_accounts in 0usize..300,
            capacities in proptest::collection::vec(0usize..60, 1..6),
            factor in 1.0f64..2.0
        ) {
            let accounts = ids("acct-", n_accounts);
            let nodes = ids("node-", capacities.len());
            let capacity: BTreeMap<&str, usize> =
                nodes.iter().map(String::as_str).zip(capacities.iter().copied()).collect();
            let map = assign(&refs(&accounts), &BTreeMap::new(), &refs(&nodes), &capacity, factor);
            let mut load: BTreeMap<&str, usize> = BTreeMap::new();
            for owner in map.values() {
                *load.entry(owner).or_default() += 1;
            }
            for (node, l) in &load {
                let c = capacity[node];
                prop_assert!(c == 0 || *l <= c, "{node} holds {l}, announced {c}");
            }
            // An account is left out only when every node is full (all limited, all at capacity).
            if map.len() < n_accounts {
                for (node, c) in &capacity {
                    prop_assert!(*c > 0 && load.get(node).copied().unwrap_or(0) == *c,
                        "{} of {n_accounts} placed while {node} ({c}) had room: {load:?}", map.len());
                }
            }
        }

        #[test]
        fn the_answer_does_not_depend_on_the_order_of_the_view(
            n_accounts in 1usize..200, n_nodes in 1usize..6, seed in any::<u64>()
        ) {
            let accounts = ids("a", n_accounts);
            let nodes = ids("n", n_nodes);
            let mut shuffled_accounts = refs(&accounts);
            let mut shuffled_nodes = refs(&nodes);
            let k = (seed as usize) % shuffled_accounts.len().max(1);
            shuffled_accounts.rotate_left(k);
            shuffled_accounts.reverse();
            shuffled_nodes.reverse();
            let first = assign(&refs(&accounts), &BTreeMap::new(), &refs(&nodes), &BTreeMap::new(), 1.25);
            prop_assert_eq!(
                &first,
                &assign(&shuffled_accounts, &BTreeMap::new(), &shuffled_nodes, &BTreeMap::new(), 1.25)
            );
            let current = as_current(&first);
            prop_assert_eq!(
                assign(&refs(&accounts), &current, &refs(&nodes), &BTreeMap::new(), 1.25),
                assign(&shuffled_accounts, &current, &shuffled_nodes, &BTreeMap::new(), 1.25)
            );
        }

        #[test]
        fn a_leaving_node_moves_its_own_accounts_and_only_capped_ones_besides(
            n_accounts in 1usize..300, n_nodes in 2usize..7, leaver in 0usize..7
        ) {
            let accounts = ids("acct-", n_accounts);
            let nodes = ids("node-", n_nodes);
            let leaver = nodes[leaver % n_nodes].clone();
            let before = assign(&refs(&accounts), &BTreeMap::new(), &refs(&nodes), &BTreeMap::new(), 1.25);
            let rest: Vec<String> = nodes.iter().filter(|n| **n != leaver).cloned().collect();
            let after = assign(&refs(&accounts), &as_current(&before), &refs(&rest), &BTreeMap::new(), 1.25);
            for account in moved(&before, &after) {
                // Either it was on the leaver, or the cap had kept it from its first choice.
                let first = ranking(&account, &refs(&nodes))[0];
                prop_assert!(
                    before[&account] == leaver.as_str() || before[&account] != first,
                    "{account} moved from {} (its first choice) although {leaver} left",
                    before[&account]
                );
            }
        }

        #[test]
        fn a_joining_node_takes_only_accounts_that_rank_it_first_or_were_capped(
            n_accounts in 1usize..300, n_nodes in 1usize..6
        ) {
            let accounts = ids("acct-", n_accounts);
            let nodes = ids("node-", n_nodes);
            let mut grown = nodes.clone();
            grown.push("node-new".to_string());
            let before = assign(&refs(&accounts), &BTreeMap::new(), &refs(&nodes), &BTreeMap::new(), 1.25);
            let after = assign(&refs(&accounts), &as_current(&before), &refs(&grown), &BTreeMap::new(), 1.25);
            for account in moved(&before, &after) {
                let first_before = ranking(&account, &refs(&nodes))[0];
                let first_after = ranking(&account, &refs(&grown))[0];
                prop_assert!(
                    first_after == "node-new" || before[&account] != first_before
                        || after[&account] != first_after,
                    "{account} moved without the new node or the cap being the reason"
                );
            }
        }
    }

    #[test]
    fn a_join_moves_about_a_share_and_a_leave_about_the_leavers_load() {
        let accounts = ids("acct-", 3_000);
        let three = ids("node-", 3);
        let four = ids("node-", 4);
        let before = assign(
            &refs(&accounts),
            &BTreeMap::new(),
            &refs(&three),
            &BTreeMap::new(),
            1.25,
        );
        let joined = assign(
            &refs(&accounts),
            &as_current(&before),
            &refs(&four),
            &BTreeMap::new(),
            1.25,
        );
        let share = 3_000 / 4;
        let moved_on_join = moved(&before, &joined).len();
        assert!(
            moved_on_join >= share * 9 / 10 && moved_on_join <= share * 11 / 10,
            "a join moved {moved_on_join} of 3000 accounts; about {share} expected"
        );
        let on_leaver = joined.values().filter(|n| **n == "node-3").count();
        let left = assign(
            &refs(&accounts),
            &as_current(&joined),
            &refs(&three),
            &BTreeMap::new(),
            1.25,
        );
        let moved_on_leave = moved(&joined, &left).len();
        assert!(
            moved_on_leave <= on_leaver * 11 / 10,
            "a leave moved {moved_on_leave} accounts; the leaver had {on_leaver}"
        );
    }

    #[test]
    fn a_small_node_takes_its_capacity_and_the_others_share_the_rest_evenly() {
        let accounts = ids("acct-", 1_000);
        let nodes = ids("node-", 3);
        let capacity = BTreeMap::from([("node-0", 100)]);
        let caps = node_caps(1_000, &refs(&nodes), &capacity, 1.25);
        // 900 left for two nodes: 1.25 x 450, not 1.25 x 333.
        assert_eq!(
            caps,
            BTreeMap::from([("node-0", 100), ("node-1", 563), ("node-2", 563)])
        );
        let map = assign(
            &refs(&accounts),
            &BTreeMap::new(),
            &refs(&nodes),
            &capacity,
            1.25,
        );
        let on_small = map.values().filter(|n| **n == "node-0").count();
        assert_eq!(map.len(), 1_000);
        assert_eq!(
            on_small, 100,
            "the small node is the first choice of about a third"
        );
    }

    #[test]
    fn weights_are_pinned_so_every_version_agrees_on_owners() {
        // Nodes of different versions must rank alike during a rolling upgrade. The literals
        // come from Python's `blake3` package, not from this code.
        assert_eq!(weight("node-1", "1000001"), 12_732_236_210_775_432_207);
        assert_eq!(weight("node-2", "1000001"), 16_204_492_943_247_194_259);
        assert_eq!(
            ranking("1000001", &["node-1", "node-2"]),
            ["node-2", "node-1"]
        );
    }
}
