//! The ground truth of a simulated run: every event the policy lets through, with the account
//! and stream position it comes from (so its place on the source's schedule is known).
//!
//! Same rule as `tgingest::demo::expected_after_policy` (unique events of positions below
//! `upto`, re-deliveries excluded, as the policy keeps them), walked position by position so the
//! position of each event is kept.

use std::collections::HashMap;

use tgingest::policy::{Decision, Policy};
use tgingest::telegram::simulated::{PositionKind, SimulatedWorld};

/// Where an expected event comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub account: u32,
    pub position: u64,
}

/// What must arrive, each exactly once.
pub struct Truth {
    pub expected: HashMap<String, Origin>,
    /// Mean size of the events as tgingest publishes them to `TG_RAW` (the codec's encoding).
    pub mean_raw_bytes: usize,
}

impl Truth {
    /// Walks positions `0..upto` of every account of `world`.
    pub fn build(world: &SimulatedWorld, policy: &Policy, upto: u64) -> Truth {
        let mut expected = HashMap::new();
        let (mut sampled, mut bytes) = (0usize, 0usize);
        for account in 0..world.accounts() {
            for position in 0..upto {
                let p = world.event_at(account, position);
                if matches!(p.kind, PositionKind::Duplicate { .. }) {
                    continue;
                }
                for event in p.events {
                    if sampled < 20_000
                        && let Ok(encoded) = tgingest::codec::encode(&event)
                    {
                        sampled += 1;
                        bytes += encoded.len();
                    }
                    if let Decision::Keep { event, .. } = policy.decide_owned(event) {
                        expected
                            .entry(event.event_id)
                            .or_insert(Origin { account, position });
                    }
                }
            }
        }
        Truth {
            expected,
            mean_raw_bytes: bytes.checked_div(sampled).unwrap_or(300),
        }
    }
}
