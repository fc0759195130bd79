//! Counters every stage updates, readable in-process (the demo's summary and progress line,
//! tests) as well as through the metrics exporter.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One counter, both in-process and as a Prometheus metric.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latencies in microseconds, kept in log-spaced buckets (about 4 % apart) for percentiles.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: Mutex<BTreeMap<u32, u64>>,
}

impl LatencyHistogram {
    fn bucket(us: u64) -> u32 {
        ((us.max(1) as f64).ln() * 25.0) as u32
    }

    /// Records one latency.
    pub fn record(&self, us: u64) {
        if let Ok(mut b) = self.buckets.lock() {
            *b.entry(Self::bucket(us)).or_default() += 1;
        }
    }

    /// The latency below which `q` (0..=1) of the samples lie, in microseconds (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        let Ok(b) = self.buckets.lock() else { return 0 };
        let total: u64 = b.values().sum();
        if total == 0 {
            return 0;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in b.iter() {
            seen += count;
            if seen >= target {
                return ((*bucket as f64 + 1.0) / 25.0).exp() as u64;
            }
        }
        0
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.lock().map(|b| b.values().sum()).unwrap_or(0)
    }
}

/// Counts by a label (rule, redaction kind).
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    pub fn add(&self, label: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label.to_string()).or_default() += n;
        }
    }
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Per-account counters reported in Switchboard heartbeats.
#[derive(Debug, Default)]
pub struct AccountCounters(
    Mutex<std::collections::HashMap<String, crate::switchboard::HeartbeatCounters>>,
);

impl AccountCounters {
    /// Applies `f` to the counters of `account_id`.
    pub fn update(
        &self,
        account_id: &str,
        f: impl FnOnce(&mut crate::switchboard::HeartbeatCounters),
    ) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(account_id.to_string()).or_default());
        }
    }

    /// The counters of `account_id` (zeros if it has none yet).
    pub fn get(&self, account_id: &str) -> crate::switchboard::HeartbeatCounters {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(account_id).copied())
            .unwrap_or_default()
    }
}

/// What the pipeline has done since this process started.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events the sources produced (duplicate deliveries included).
    pub produced: Counter,
    /// Events JetStream stored in TG_RAW (a PubAck that was not a duplicate).
    pub published_raw: Counter,
    /// Events TG_RAW refused as repeats of a Nats-Msg-Id within its duplicate window.
    pub duplicates_bus_raw: Counter,
    /// Events the dedupe stage dropped because its seen-set knew them.
    pub duplicates_seen_set: Counter,
    /// Events TG_CLEAN refused as Nats-Msg-Id repeats.
    pub duplicates_bus_clean: Counter,
    /// Events dropped by the scope filter, by rule.
    pub filtered: Labelled,
    /// Redactions applied, by detector.
    pub redacted: Labelled,
    /// Events published to TG_CLEAN.
    pub published_clean: Counter,
    /// Events Switchboard accepted as new.
    pub delivered: Counter,
    /// Events Switchboard answered as duplicates (re-sends after a crash or retry).
    pub resend_duplicates: Counter,
    /// Calls retried after a transient error.
    pub retries: Counter,
    /// Events dead-lettered to TG_DLQ.
    pub dead_lettered: Counter,
    /// Source timestamp (observed_at) to Switchboard acceptance.
    pub latency: LatencyHistogram,
    /// Per-account counters for heartbeats.
    pub accounts: AccountCounters,
}

/// A serializable copy of [`PipelineStats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub produced: u64,
    pub published_raw: u64,
    pub duplicates_dropped: BTreeMap<String, u64>,
    pub filtered: BTreeMap<String, u64>,
    pub redacted: BTreeMap<String, u64>,
    pub published_clean: u64,
    pub delivered: u64,
    pub resend_duplicates: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub latency_ms: BTreeMap<String, f64>,
}

impl PipelineStats {
    /// A consistent-enough copy for printing.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ms = |q| self.latency.quantile(q) as f64 / 1000.0;
        StatsSnapshot {
            produced: self.produced.get(),
            published_raw: self.published_raw.get(),
            duplicates_dropped: BTreeMap::from([
                ("bus_raw".to_string(), self.duplicates_bus_raw.get()),
                ("seen_set".to_string(), self.duplicates_seen_set.get()),
                ("bus_clean".to_string(), self.duplicates_bus_clean.get()),
            ]),
            filtered: self.filtered.snapshot(),
            redacted: self.redacted.snapshot(),
            published_clean: self.published_clean.get(),
            delivered: self.delivered.get(),
            resend_duplicates: self.resend_duplicates.get(),
            retries: self.retries.get(),
            dead_lettered: self.dead_lettered.get(),
            latency_ms: BTreeMap::from([
                ("p50".to_string(), ms(0.50)),
                ("p90".to_string(), ms(0.90)),
                ("p99".to_string(), ms(0.99)),
                ("max".to_string(), ms(1.0)),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket_of_the_truth() {
        let h = LatencyHistogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        for (q, truth) in [(0.5, 5_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - truth).abs() / truth < 0.06, "q{q}: {got} vs {truth}");
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0);
    }
}
