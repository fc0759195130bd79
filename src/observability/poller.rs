//! The metrics poller: gauges that cannot be counted in place — JetStream stream sizes, DLQ
//! depth, consumer pending and ack-pending per stage, the NATS connection, and the per-account
//! progress gauges — refreshed every few seconds by one task the node starts and stops.

use std::time::Duration;

use async_nats::connection::State;

use super::progress;
use crate::bus::{Bus, STREAM_CLEAN, STREAM_DLQ, STREAM_RAW};
use crate::bus::{DEDUPE_CONSUMER, DELIVERY_CONSUMER};
use crate::event::now_us;

/// How often the poller refreshes the gauges.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The durable consumers, as (stage label, stream, consumer name).
const STAGES: &[(&str, &str, &str)] = &[
    ("dedupe", STREAM_RAW, DEDUPE_CONSUMER),
    ("delivery", STREAM_CLEAN, DELIVERY_CONSUMER),
];

/// A running poller; [`MetricsPoller::stop`] ends it.
pub struct MetricsPoller {
    task: tokio::task::JoinHandle<()>,
}

impl MetricsPoller {
    /// Starts polling `bus` every `every`.
    pub fn start(bus: Bus, every: Duration) -> MetricsPoller {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut known_accounts = std::collections::HashSet::new();
            loop {
                tick.tick().await;
                poll_once(&bus).await;
                publish_progress(&mut known_accounts);
            }
        });
        MetricsPoller { task }
    }

    /// Stops the poller.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// One round over JetStream; a failure is counted and logged at debug (NATS may be down, which
/// `/readyz` reports).
pub async fn poll_once(bus: &Bus) {
    let connected = bus.client.connection_state() == State::Connected;
    metrics::gauge!(super::METRIC_NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    if !connected {
        return;
    }
    for name in [STREAM_RAW, STREAM_CLEAN, STREAM_DLQ] {
        let info = match bus.js.get_stream(name).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|i| i.state.clone())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(state) => {
                metrics::gauge!(super::METRIC_STREAM_MESSAGES, "stream" => name)
                    .set(state.messages as f64);
                metrics::gauge!(super::METRIC_STREAM_BYTES, "stream" => name)
                    .set(state.bytes as f64);
                if name == STREAM_DLQ {
                    metrics::gauge!(super::METRIC_DLQ_DEPTH).set(state.messages as f64);
                }
            }
            Err(e) => {
                metrics::counter!(super::METRIC_POLL_ERRORS, "what" => "stream").increment(1);
                tracing::debug!(stream = name, error = %e, "metrics poller: no stream info");
            }
        }
    }
    for (stage, stream, consumer) in STAGES {
        let info = match bus.js.get_stream(stream).await {
            Ok(s) => s.consumer_info(consumer).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(info) => {
                metrics::gauge!(super::METRIC_CONSUMER_PENDING, "stage" => *stage)
                    .set(info.num_pending as f64);
                metrics::gauge!(super::METRIC_CONSUMER_ACK_PENDING, "stage" => *stage)
                    .set(info.num_ack_pending as f64);
            }
            // The stage has not created its consumer yet (no pipeline on this node).
            Err(e) => {
                metrics::counter!(super::METRIC_POLL_ERRORS, "what" => "consumer").increment(1);
                tracing::debug!(stage, error = %e, "metrics poller: no consumer info");
            }
        }
    }
}

/// Aggregates the per-account progress; per-account series only when switched on. Series of
/// accounts that went away are zeroed rather than left at their last value.
fn publish_progress(known: &mut std::collections::HashSet<String>) {
    let now = now_us();
    let accounts = progress::snapshot();
    let mut age_max: f64 = 0.0;
    let mut lag_max: f64 = 0.0;
    let mut unchecked = 0u64;
    let per_account = super::per_account();
    let mut seen = std::collections::HashSet::new();
    for (account, p) in &accounts {
        let age = p.last_event_age(now);
        let lag = p.checkpoint_lag(now);
        age_max = age_max.max(age.unwrap_or(0.0));
        lag_max = lag_max.max(lag);
        unchecked += p.uncheckpointed;
        if per_account {
            let label = crate::telemetry::hash_id(account);
            if let Some(age) = age {
                metrics::gauge!(super::METRIC_ACCOUNT_LAST_EVENT_AGE, "account" => label.clone())
                    .set(age);
            }
            metrics::gauge!(super::METRIC_ACCOUNT_CHECKPOINT_LAG, "account" => label.clone())
                .set(lag);
            seen.insert(label);
        }
    }
    for gone in known.difference(&seen) {
        metrics::gauge!(super::METRIC_ACCOUNT_CHECKPOINT_LAG, "account" => gone.clone()).set(0.0);
    }
    *known = seen;
    metrics::gauge!(super::METRIC_LAST_EVENT_AGE_MAX).set(age_max);
    metrics::gauge!(super::METRIC_CHECKPOINT_LAG_MAX).set(lag_max);
    metrics::gauge!(super::METRIC_UNCHECKPOINTED).set(unchecked as f64);
}
