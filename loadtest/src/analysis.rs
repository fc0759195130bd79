//! From what the fake Switchboard stored to the figures: losses and duplicates against the
//! ground truth, throughput, latency percentiles, and per-second series.
//!
//! # Latency: what is measured
//!
//! `latency` = the fake Switchboard's `received_at` (wall clock, loadtest process) minus the
//! envelope's `event.observed_at`, which tgingest's simulated gateway sets from the wall clock
//! at the moment it hands the update to the account actor (`sent_at` is *world* time — positions
//! one simulated second apart from 2026-01-01 — so it cannot be used). Both processes read the
//! same host clock.
//!
//! That alone would hide a source held back by backpressure (the gateway waits for its due time,
//! but when the account actor pulls late, `observed_at` is late too: coordinated omission). So
//! `source_lag` is reported beside it: `observed_at` minus the time the position was *due* on the
//! source's schedule (`SimulatedWorld::schedule(n)` after the account's stream start, estimated
//! as the earliest `observed_at − schedule(n)` of that account — a lower bound, so the lag is
//! never overstated). `latency_from_schedule` = `source_lag + latency`: due time → acceptance.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tgingest::switchboard::Accepted;

use crate::truth::Truth;

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From samples in microseconds (sorted here).
    pub fn of(mut us: Vec<i64>) -> Percentiles {
        if us.is_empty() {
            return Percentiles::default();
        }
        us.sort_unstable();
        let at = |q: f64| {
            let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
            us[i] as f64 / 1000.0
        };
        Percentiles {
            count: us.len() as u64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: us[us.len() - 1] as f64 / 1000.0,
        }
    }
}

/// One second of the run (by arrival time at the fake).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bin {
    /// Seconds since tgingest was started.
    pub t: u64,
    pub arrived: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// The delivery figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Events the ground truth says must arrive.
    pub expected: u64,
    /// Envelopes stored by the fake (all of them).
    pub stored: u64,
    /// Expected events stored at least once.
    pub delivered_unique: u64,
    /// Expected events never stored.
    pub lost: u64,
    /// Stored envelopes whose event had been stored already.
    pub duplicates_stored: u64,
    /// Stored events the ground truth does not know (should have been filtered, or invented).
    pub unexpected: u64,
    /// A few lost event ids, to start an investigation with.
    pub lost_examples: Vec<String>,
    /// A few unexpected event ids, likewise.
    pub unexpected_examples: Vec<String>,
    /// Events per second the sources offered (expected events over the source duration).
    pub offered_per_s: f64,
    /// Arrivals per second between the end of the warm-up and the end of the sources.
    pub throughput_per_s: f64,
    /// All arrivals over first arrival-window start → last arrival.
    pub overall_per_s: f64,
    /// From the sources' end to the last arrival, seconds (how long the backlog took).
    pub drain_s: f64,
    /// Source timestamp (`observed_at`) → stored, after the warm-up.
    pub latency_ms: Percentiles,
    /// How late the source emitted against its schedule, after the warm-up.
    pub source_lag_ms: Percentiles,
    /// Due time on the schedule → stored, after the warm-up.
    pub latency_from_schedule_ms: Percentiles,
}

/// What the analysis needs of one envelope the fake Switchboard stored (it crosses the pipe from
/// the fake's process, so only this, not the whole envelope).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// `payload.raw.event_id`.
    pub event_id: String,
    /// `event.observed_at`, µs since the epoch.
    pub observed_us: Option<i64>,
    /// When the fake stored it, µs since the epoch.
    pub received_us: i64,
}

impl Stored {
    /// What `a` stored: its event, or each member of a conversation-history batch (arriving
    /// together, `observed_us` unknown: the batch's `observed_at` is its flush time).
    pub fn all_of(a: &Accepted) -> Vec<Stored> {
        let Some(members) = a
            .envelope
            .pointer("/payload/raw/event_ids")
            .and_then(|v| v.as_array())
        else {
            return vec![Stored::of(a)];
        };
        members
            .iter()
            .filter_map(|id| id.as_str())
            .map(|id| Stored {
                event_id: id.to_string(),
                observed_us: None,
                received_us: a.received_at.as_microsecond(),
            })
            .collect()
    }

    /// The parts of `a` the analysis reads.
    pub fn of(a: &Accepted) -> Stored {
        Stored {
            event_id: a
                .envelope
                .pointer("/payload/raw/event_id")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            observed_us: a
                .envelope
                .pointer("/event/observed_at")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_microsecond()),
            received_us: a.received_at.as_microsecond(),
        }
    }
}

/// Everything `analyze` derives.
pub struct Analysis {
    pub delivery: Delivery,
    pub bins: Vec<Bin>,
}

/// Compares `accepted` with `truth` and derives the figures; `t0_us` is when tgingest started
/// (or, for the fake-DC source, when the measured window started); `schedule(n)` is when
/// position `n` of an account is due after that account's stream start.
pub fn analyze(
    accepted: &[Stored],
    truth: &Truth,
    schedule: &dyn Fn(u64) -> std::time::Duration,
    t0_us: i64,
    duration_s: f64,
    warmup_s: f64,
) -> Analysis {
    struct Arrival {
        received: i64,
        observed: Option<i64>,
        origin: Option<crate::truth::Origin>,
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut duplicates = 0u64;
    let mut unexpected = 0u64;
    let mut unexpected_examples = Vec::new();
    let mut arrivals = Vec::with_capacity(accepted.len());
    for a in accepted {
        let id = a.event_id.as_str();
        if !seen.insert(id) {
            duplicates += 1;
            continue;
        }
        let origin = truth.expected.get(id).copied();
        if origin.is_none() {
            unexpected += 1;
            if unexpected_examples.len() < 10 {
                unexpected_examples.push(id.to_string());
            }
        }
        arrivals.push(Arrival {
            received: a.received_us,
            observed: a.observed_us,
            origin,
        });
    }
    let lost_ids: Vec<&String> = truth
        .expected
        .keys()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();

    // Each account's stream start: the earliest observed − due offset (see the module docs).
    let sched_us = |n: u64| schedule(n).as_micros() as i64;
    let mut start: HashMap<u32, i64> = HashMap::new();
    for a in &arrivals {
        if let (Some(obs), Some(o)) = (a.observed, a.origin) {
            let s = obs - sched_us(o.position);
            start
                .entry(o.account)
                .and_modify(|v| *v = (*v).min(s))
                .or_insert(s);
        }
    }
    let src0 = start.values().copied().min().unwrap_or(t0_us);
    let warm_end = src0 + (warmup_s * 1e6) as i64;
    let src_end = src0 + (duration_s * 1e6) as i64;

    let (mut lat, mut lag, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_bin: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    let mut in_window = 0u64;
    let mut last = i64::MIN;
    for a in &arrivals {
        last = last.max(a.received);
        if a.received >= warm_end && a.received < src_end {
            in_window += 1;
        }
        let bin = ((a.received - t0_us).max(0) / 1_000_000) as u64;
        let entry = per_bin.entry(bin).or_default();
        let Some(obs) = a.observed else { continue };
        let l = a.received - obs;
        entry.push(l);
        let due = a
            .origin
            .and_then(|o| start.get(&o.account).map(|s| s + sched_us(o.position)));
        if obs >= warm_end {
            lat.push(l);
            if let Some(due) = due {
                lag.push(obs - due);
                total.push(a.received - due);
            }
        }
    }
    let bins = per_bin
        .into_iter()
        .map(|(t, l)| {
            let arrived = l.len() as u64;
            let p = Percentiles::of(l);
            Bin {
                t,
                arrived,
                latency_p50_ms: p.p50,
                latency_p99_ms: p.p99,
                latency_max_ms: p.max,
            }
        })
        .collect();
    let window_s = (duration_s - warmup_s).max(1e-3);
    let delivery = Delivery {
        expected: truth.expected.len() as u64,
        stored: accepted.len() as u64,
        delivered_unique: (truth.expected.len() - lost_ids.len()) as u64,
        lost: lost_ids.len() as u64,
        duplicates_stored: duplicates,
        unexpected,
        lost_examples: lost_ids.iter().take(10).map(|s| s.to_string()).collect(),
        unexpected_examples,
        offered_per_s: truth.expected.len() as f64 / duration_s.max(1e-3),
        throughput_per_s: in_window as f64 / window_s,
        overall_per_s: if last > src0 {
            arrivals.len() as f64 / ((last - src0) as f64 / 1e6)
        } else {
            0.0
        },
        drain_s: if last > src_end {
            (last - src_end) as f64 / 1e6
        } else {
            0.0
        },
        latency_ms: Percentiles::of(lat),
        source_lag_ms: Percentiles::of(lag),
        latency_from_schedule_ms: Percentiles::of(total),
    };
    Analysis { delivery, bins }
}
