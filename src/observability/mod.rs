//! Metrics: the process-wide Prometheus recorder, the names of the metrics this module owns, the
//! per-account progress that the poller turns into gauges, and the poller itself.
//!
//! The catalogue of every metric (name, type, labels, meaning) is `docs/metrics.md`; a metric
//! added anywhere must be added there too.

pub mod poller;
pub mod progress;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use poller::MetricsPoller;

/// Events the sources produced, labelled `origin` (`live`, `catch_up`, `backfill`).
pub const METRIC_EVENTS_INGESTED: &str = "tgingest_events_ingested_total";
/// Gauge of accounts per lifecycle state, labelled `state` (every state, zeros included).
pub const METRIC_ACCOUNTS: &str = "tgingest_accounts";
/// Counter of flood waits honoured, labelled `kind` (`flood_wait`, `peer_flood`).
pub const METRIC_FLOOD_WAITS: &str = "tgingest_flood_waits_total";
/// Counter of the seconds of those waits, labelled `kind`.
pub const METRIC_FLOOD_WAIT_SECONDS: &str = "tgingest_flood_wait_seconds_total";
/// Counter of account actors that failed on a network error (the supervisor reconnects them).
pub const METRIC_RECONNECTS: &str = "tgingest_reconnects_total";
/// Counter of accounts that reached a terminal state, labelled `state`.
pub const METRIC_TERMINAL: &str = "tgingest_account_terminal_total";
/// Replayed events by result (`accepted`, `duplicate`, `rejected`).
pub const METRIC_REPLAYED: &str = "tgingest_replay_events_total";
/// Calls a delivery-mode hand-over made at start-up, labelled `kind` (`single`, `batch`) and
/// `result` (`accepted`, `duplicate`, `rejected`).
pub const METRIC_HANDOVER_SENDS: &str = "tgingest_mode_handover_sends_total";
/// Seconds from an account's last sign of life on its old owner to running on a new one.
pub const METRIC_FAILOVER_SECONDS: &str = "tgingest_cluster_failover_seconds";
/// Seconds one flush of the event log took.
pub const METRIC_FLUSH_SECONDS: &str = "tgingest_eventlog_flush_seconds";
/// Decisions in the shared seen-set, labelled `decision` (`new`, `again`, `duplicate`).
pub const METRIC_SHARED_DECISIONS: &str = "tgingest_dedupe_shared_decisions_total";
/// Copies left undecided because the shared seen-set failed, labelled `op` (`claim`, `read`).
pub const METRIC_SHARED_ERRORS: &str = "tgingest_dedupe_shared_errors_total";
/// Per-account events produced (only with `admin.per_account_metrics`), labelled `account`.
pub const METRIC_ACCOUNT_EVENTS: &str = "tgingest_account_events_total";
/// Per-account seconds since the last event (only with `admin.per_account_metrics`).
pub const METRIC_ACCOUNT_LAST_EVENT_AGE: &str = "tgingest_account_last_event_age_seconds";
/// Per-account checkpoint lag in seconds (only with `admin.per_account_metrics`).
pub const METRIC_ACCOUNT_CHECKPOINT_LAG: &str = "tgingest_account_checkpoint_lag_seconds";
/// The largest last-event age over the running accounts.
pub const METRIC_LAST_EVENT_AGE_MAX: &str = "tgingest_last_event_age_seconds_max";
/// The largest checkpoint lag over the accounts.
pub const METRIC_CHECKPOINT_LAG_MAX: &str = "tgingest_checkpoint_lag_seconds_max";
/// Events received but not yet covered by a checkpoint, summed over the accounts.
pub const METRIC_UNCHECKPOINTED: &str = "tgingest_uncheckpointed_events";
/// Time from a TG_RAW publish to its PubAck.
pub const METRIC_PUBLISH_LATENCY: &str = "tgingest_publish_latency_seconds";
/// Publishes awaiting their PubAck, summed over the accounts.
pub const METRIC_PUBLISH_INFLIGHT: &str = "tgingest_publish_inflight";
/// The publish window of one account (its capacity).
pub const METRIC_PUBLISH_WINDOW: &str = "tgingest_publish_window";
/// Delivery outcomes, labelled `result` (`accepted`, `duplicate`, `rejected`, `retried`).
pub const METRIC_DELIVERIES: &str = "tgingest_deliveries_total";
/// Duration of one Switchboard ingest attempt as the delivery stage saw it.
pub const METRIC_DELIVERY_LATENCY: &str = "tgingest_delivery_latency_seconds";
/// Each wait of a stage on a full window downstream, in seconds, labelled `stage`; its `_sum`
/// is the total time spent waiting.
pub const METRIC_BACKPRESSURE: &str = "tgingest_backpressure_wait_seconds";
/// Messages a durable consumer has not been delivered yet, labelled `stage`.
pub const METRIC_CONSUMER_PENDING: &str = "tgingest_consumer_pending";
/// Messages delivered to a durable consumer and not acknowledged yet, labelled `stage`.
pub const METRIC_CONSUMER_ACK_PENDING: &str = "tgingest_consumer_ack_pending";
/// Messages currently in a stream, labelled `stream`.
pub const METRIC_STREAM_MESSAGES: &str = "tgingest_stream_messages";
/// Bytes currently in a stream, labelled `stream`.
pub const METRIC_STREAM_BYTES: &str = "tgingest_stream_bytes";
/// Messages in TG_DLQ.
pub const METRIC_DLQ_DEPTH: &str = "tgingest_dlq_depth";
/// 1 while the NATS connection is up.
pub const METRIC_NATS_CONNECTED: &str = "tgingest_nats_connected";
/// Poller rounds that could not read JetStream, labelled `what`.
pub const METRIC_POLL_ERRORS: &str = "tgingest_metrics_poll_errors_total";
/// 1, labelled `version`: the build that runs.
pub const METRIC_BUILD_INFO: &str = "tgingest_build_info";

/// Buckets of the latency histograms, in seconds (1 ms … 60 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// How often the recorder's histograms are drained (crate notes §11: required with
/// `install_recorder`).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PER_ACCOUNT: AtomicBool = AtomicBool::new(false);

/// Installs the Prometheus recorder once per process and returns its handle; later calls return
/// the same handle. `layers` registers the zero series of the layers above this one (their
/// label values), once, with the recorder's own. When another recorder is already installed (a test's debugging recorder),
/// the handle renders an empty registry and the other recorder keeps receiving the metrics.
pub fn install_recorder(layers: fn()) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = LATENCY_HISTOGRAMS.iter().fold(
                PrometheusBuilder::new(),
                |builder, name| {
                    builder
                        .set_buckets_for_metric(Matcher::Full((*name).to_string()), LATENCY_BUCKETS)
                        .unwrap_or_else(|_| PrometheusBuilder::new())
                },
            );
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    register_zeros();
                    layers();
                }
                Err(_) => tracing::warn!(
                    "a metrics recorder is already installed; /metrics will be empty in this process"
                ),
            }
            let upkeep = handle.clone();
            // A thread, not a task: tests run several runtimes, and upkeep must outlive each.
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

/// The installed handle, if [`install_recorder`] ran.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// Turns per-account series on or off (`admin.per_account_metrics`).
pub fn set_per_account(on: bool) {
    PER_ACCOUNT.store(on, Ordering::Relaxed);
}

/// Whether per-account series are on.
pub fn per_account() -> bool {
    PER_ACCOUNT.load(Ordering::Relaxed)
}

/// The histograms that get [`LATENCY_BUCKETS`] (the rest would render as summaries).
const LATENCY_HISTOGRAMS: &[&str] = &[
    METRIC_PUBLISH_LATENCY,
    METRIC_DELIVERY_LATENCY,
    METRIC_BACKPRESSURE,
    "tgingest_end_to_end_latency_seconds",
    "connector_ingest_latency_seconds",
    METRIC_FLUSH_SECONDS,
    METRIC_FAILOVER_SECONDS,
];

fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    c!(
        METRIC_EVENTS_INGESTED,
        "Events the sources produced, by origin"
    );
    c!(
        METRIC_ACCOUNT_EVENTS,
        "Events produced per account (admin.per_account_metrics)"
    );
    g!(
        METRIC_ACCOUNT_LAST_EVENT_AGE,
        "Seconds since the account's last event (admin.per_account_metrics)"
    );
    g!(
        METRIC_ACCOUNT_CHECKPOINT_LAG,
        "Seconds the account's checkpoint trails its newest event (admin.per_account_metrics)"
    );
    g!(
        METRIC_LAST_EVENT_AGE_MAX,
        "Largest seconds since the last event over the running accounts"
    );
    g!(
        METRIC_CHECKPOINT_LAG_MAX,
        "Largest checkpoint lag in seconds over the accounts"
    );
    g!(
        METRIC_UNCHECKPOINTED,
        "Events received but not yet covered by a checkpoint"
    );
    h!(
        METRIC_PUBLISH_LATENCY,
        "Seconds from a TG_RAW publish to its PubAck"
    );
    g!(METRIC_PUBLISH_INFLIGHT, "Publishes awaiting their PubAck");
    g!(METRIC_PUBLISH_WINDOW, "Publish window of one account");
    c!(METRIC_DELIVERIES, "Delivery outcomes at Switchboard");
    c!(
        METRIC_REPLAYED,
        "Events re-delivered by operator replays, by result"
    );
    c!(
        METRIC_HANDOVER_SENDS,
        "Calls a delivery-mode hand-over made at start-up, by kind and result"
    );
    h!(
        METRIC_DELIVERY_LATENCY,
        "Seconds of one Switchboard ingest attempt"
    );
    h!(
        METRIC_BACKPRESSURE,
        "Seconds a stage waited on a full window downstream, per wait"
    );
    g!(
        METRIC_CONSUMER_PENDING,
        "Messages not yet delivered to a stage's durable consumer"
    );
    g!(
        METRIC_CONSUMER_ACK_PENDING,
        "Messages delivered to a stage and not acknowledged"
    );
    g!(METRIC_STREAM_MESSAGES, "Messages in a stream");
    g!(METRIC_STREAM_BYTES, "Bytes in a stream");
    g!(METRIC_DLQ_DEPTH, "Messages in TG_DLQ");
    g!(METRIC_NATS_CONNECTED, "1 while the NATS connection is up");
    c!(
        METRIC_POLL_ERRORS,
        "Metrics poller rounds that could not read JetStream"
    );
    g!(METRIC_BUILD_INFO, "The running build");
}

/// Registers the series whose label values are known up front at zero, so dashboards and alerts
/// see a real 0 (not an absent series) before the first flood wait, rejection or restart.
fn register_zeros() {
    use metrics::counter;
    metrics::gauge!(METRIC_BUILD_INFO, "version" => crate::VERSION).set(1.0);
    counter!("tgingest_publish_retries_total", "stream" => "TG_RAW").increment(0);
    counter!("tgingest_publish_resends_total").increment(0);
    for origin in ["live", "catch_up", "backfill"] {
        counter!(METRIC_EVENTS_INGESTED, "origin" => origin).increment(0);
    }
    for kind in ["flood_wait", "peer_flood"] {
        counter!(METRIC_FLOOD_WAITS, "kind" => kind).increment(0);
        counter!(METRIC_FLOOD_WAIT_SECONDS, "kind" => kind).increment(0);
    }
    counter!(METRIC_RECONNECTS).increment(0);
    for state in ["revoked", "duplicated"] {
        counter!(METRIC_TERMINAL, "state" => state).increment(0);
    }
    for result in ["accepted", "duplicate", "rejected", "retried"] {
        counter!(METRIC_DELIVERIES, "result" => result).increment(0);
    }
    for result in ["accepted", "duplicate", "rejected"] {
        counter!(METRIC_REPLAYED, "result" => result).increment(0);
        for kind in ["single", "batch"] {
            counter!(METRIC_HANDOVER_SENDS, "kind" => kind, "result" => result).increment(0);
        }
    }
    for status in ["accepted", "duplicate", "rejected", "error"] {
        counter!("connector_ingest_submissions_total", "status" => status).increment(0);
    }
    counter!("connector_checkpoint_saves_total").increment(0);
    counter!("connector_errors_total", "kind" => "transport").increment(0);
    for layer in ["bus_raw", "seen_set", "shared", "bus_clean"] {
        counter!("tgingest_dedupe_drops_total", "layer" => layer).increment(0);
    }
    for decision in ["new", "again", "duplicate"] {
        counter!(METRIC_SHARED_DECISIONS, "decision" => decision).increment(0);
    }
    for op in ["claim", "read"] {
        counter!(METRIC_SHARED_ERRORS, "op" => op).increment(0);
    }
    for stage in ["dedupe", "switchboard"] {
        counter!("tgingest_dead_letters_total", "stage" => stage).increment(0);
    }
    counter!("tgingest_nats_disconnects_total").increment(0);
    counter!("tgingest_backfill_events_total").increment(0);
    metrics::gauge!("tgingest_backfill_tasks_pending").set(0.0);
    counter!("tgingest_holes_detected_total").increment(0);
}
