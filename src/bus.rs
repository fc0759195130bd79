//! JetStream: the connection, the subjects, and idempotent set-up of streams and KV buckets.
//!
//! Set-up uses `create_or_update`, so running it again applies config drift (a changed retention,
//! a new duplicate window) instead of silently keeping the old settings. What the server cannot
//! change in place (storage type, for one) and what it is too old for come back as errors that
//! name the stream and the config key.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::config::{Config, NatsConfig, Storage, StreamConfig};
use crate::event::ChatKind;
use crate::nats_server::{MIN_VERSION, Version};

mod header;
pub use header::{MAX_HEADER_VALUE, header_value};
mod link;
pub use link::Violation;

/// Normalized events as published by the account actors.
pub const STREAM_RAW: &str = "TG_RAW";
/// Durable consumer of the dedupe stage on `TG_RAW`.
pub const DEDUPE_CONSUMER: &str = "dedupe";
/// Durable consumer of the delivery stage on `TG_CLEAN`.
pub const DELIVERY_CONSUMER: &str = "switchboard";
/// Deduplicated, scope-filtered, redacted events: the replay source.
pub const STREAM_CLEAN: &str = "TG_CLEAN";
/// Conversation-history batches, recorded before they are sent (batch mode only): one subject
/// per chat, written by compare-and-set on the subject's last sequence.
pub const STREAM_BATCH: &str = "TG_BATCH";
/// Durable consumer of the batcher on `TG_CLEAN` (batch mode).
pub const BATCHER_CONSUMER: &str = "batcher";
/// Durable consumer of the batch delivery stage on `TG_BATCH`.
pub const BATCH_DELIVERY_CONSUMER: &str = "switchboard_batches";
/// Events Switchboard refused permanently, with the reason.
pub const STREAM_DLQ: &str = "TG_DLQ";
/// Every node's chained event-log records, one subject per node, each a gap-free chain.
pub const STREAM_AUDIT: &str = "TG_AUDIT";
/// Sealed Telegram sessions, so any node can take an account over.
pub const BUCKET_SESSIONS: &str = "TG_SESSIONS";
/// Account ownership leases (one owner per account), with per-key TTL.
pub const BUCKET_LEASES: &str = "TG_LEASES";
/// The accounts registry: one JSON record per account (how it was added, desired state, consent).
pub const BUCKET_ACCOUNTS: &str = "TG_ACCOUNTS";
/// Event-log chain heads of every node, anchored outside the node's own disk.
pub const BUCKET_ANCHORS: &str = "TG_ANCHORS";
/// Each account's acknowledged source cursor, written only by its current owner (no TTL: the
/// state outlives every node).
pub const BUCKET_CHECKPOINTS: &str = "TG_CHECKPOINTS";
/// Event ids some node's dedupe stage passed on, for `dedupe.shared_ttl` (only with
/// `cluster.enabled`; see `crate::pipeline::shared_seen`).
pub const BUCKET_SEEN: &str = "TG_SEEN";

/// `tg.raw.<account>.<chat-kind>`.
pub fn raw_subject(account_id: &str, chat: ChatKind) -> String {
    format!("tg.raw.{account_id}.{}", chat.as_str())
}

/// `tg.clean.<account>`.
pub fn clean_subject(account_id: &str) -> String {
    format!("tg.clean.{account_id}")
}

/// `tg.batch.<account>.<marked chat id>`: the chat's recorded batches, in order.
pub fn batch_subject(account_id: &str, chat_id: &str) -> String {
    format!("tg.batch.{account_id}.{chat_id}")
}

/// `tg.dlq.<account>`.
pub fn dlq_subject(account_id: &str) -> String {
    format!("tg.dlq.{account_id}")
}

/// `tgingest.audit.<node-id>`: where one node's event-log records are copied, in order.
pub fn audit_subject(node_id: &str) -> String {
    format!("tgingest.audit.{node_id}")
}

/// Whether a publish was refused because the subject's last sequence was not the expected one
/// (a compare-and-set, or a create-if-absent on a key that exists). nats-server answers error
/// code 10071, or on some paths in a cluster the constant 10164, which async-nats 0.51 reports
/// as [`PublishErrorKind::Other`](jetstream::context::PublishErrorKind::Other).
pub fn wrong_last_sequence(e: &jetstream::context::PublishError) -> bool {
    e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|j| {
                j.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            })
}

/// Why the bus could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot use NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    SecretFile(#[from] crate::credentials::SecretFileError),
    #[error(
        "{path} holds no valid NATS user NKey seed ({message}): nats.nkey_file needs the user's \
         seed (SU…) on one line, as `nk -gen user` or `nsc` writes it"
    )]
    NkeySeed { path: String, message: String },
    #[error("the NATS server at {url} refused the credentials ({detail}); {who}")]
    NotAuthorized {
        url: String,
        detail: String,
        who: String,
    },
    #[error(
        "the certificate of the NATS server at {url} does not verify ({reason}); it was checked \
         against {trusted}: set nats.tls.ca_file to the CA that signed the server's certificate"
    )]
    Certificate {
        url: String,
        reason: String,
        trusted: String,
    },
    #[error(
        "TLS to the NATS server at {url} failed: {message} (check nats.tls and the server's tls block)"
    )]
    Tls { url: String, message: String },
    #[error(
        "the NATS server at {url} does not let this user {operation} {subject:?} (Permissions \
         Violation): grant it in the server's authorization for this user; \
         deploy/nats/tgingest-accounts.conf lists every subject tgingest needs"
    )]
    PermissionDenied {
        url: String,
        operation: &'static str,
        subject: String,
    },
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(
        "the NATS server at {url} is version {found}; tgingest needs {MIN_VERSION} or newer for {feature}"
    )]
    ServerTooOld {
        url: String,
        found: String,
        feature: &'static str,
    },
    #[error(
        "the NATS server at {url} has JetStream disabled: start it with -js (or `jetstream {{}}` in its config)"
    )]
    NoJetStream { url: String },
    #[error("cannot set up stream {name} (config [streams.{section}]): {message}")]
    Stream {
        name: &'static str,
        section: &'static str,
        message: String,
    },
    #[error("cannot set up KV bucket {name} (config [kv]): {message}")]
    Bucket { name: &'static str, message: String },
    #[error("the publish probe to {subject:?} had no answer within {timeout:?}")]
    ProbeTimeout { subject: String, timeout: Duration },
}

impl BusError {
    /// Whether changing configuration (tgingest's or the server's) is what fixes this, as
    /// opposed to waiting for a server to come back: such errors stop start-up with exit 2.
    pub fn is_config_problem(&self) -> bool {
        matches!(
            self,
            BusError::Credentials { .. }
                | BusError::SecretFile(_)
                | BusError::NkeySeed { .. }
                | BusError::NotAuthorized { .. }
                | BusError::Certificate { .. }
                | BusError::Tls { .. }
                | BusError::PermissionDenied { .. }
        )
    }
}

/// A connected JetStream context.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    url: String,
    /// How many times the connection has dropped (see [`Bus::connection_drops`]).
    drops: tokio::sync::watch::Receiver<u64>,
    /// The last subject the server refused this connection (see [`Bus::guarded`]).
    violations: tokio::sync::watch::Receiver<Option<Violation>>,
    ack_wait: Duration,
}

/// What set-up did to one stream or bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Created,
    Updated,
    Unchanged,
}

/// What set-up did, per stream and bucket (for the start-up log and tests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    pub items: Vec<(String, Applied)>,
}

impl Bus {
    /// Connects with the configured credentials and TLS, and checks the server (version,
    /// JetStream). A refusal names its cause (see [`BusError::is_config_problem`]); a server that
    /// cannot be reached is a [`BusError::Connect`].
    pub async fn connect(url: &str, cfg: &NatsConfig, client_name: &str) -> Result<Bus, BusError> {
        let (drops_tx, drops) = tokio::sync::watch::channel(0u64);
        let drops_tx = std::sync::Arc::new(drops_tx);
        let (violations_tx, violations) = tokio::sync::watch::channel(None);
        let violations_tx = std::sync::Arc::new(violations_tx);
        let delay_max: Duration = cfg.reconnect_delay_max.into();
        let opts = async_nats::ConnectOptions::new()
            .name(client_name)
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(cfg.request_timeout.into()))
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, delay_max))
            .event_callback(move |event| {
                let drops_tx = drops_tx.clone();
                let violations_tx = violations_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            drops_tx.send_modify(|n| *n += 1);
                            metrics::counter!("tgingest_nats_disconnects_total").increment(1);
                            tracing::warn!("NATS connection lost; reconnecting");
                        }
                        async_nats::Event::Connected => tracing::info!("NATS connected"),
                        async_nats::Event::ServerError(async_nats::ServerError::Other(message)) => {
                            match Violation::parse(&message) {
                                // A refused subject is a missing grant, whenever it shows: the
                                // request or ack it was for gets no answer.
                                Some(v) => {
                                    tracing::error!(
                                        operation = v.operation,
                                        subject = %v.subject,
                                        "the NATS server refused this user a subject; grant it (deploy/nats/tgingest-accounts.conf)"
                                    );
                                    violations_tx.send_replace(Some(v));
                                }
                                None => tracing::warn!(%message, "NATS server error"),
                            }
                        }
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            });
        let opts = link::secure(opts, cfg)?;
        // async-nats parses one address per string; `nats.url` lists the cluster's seeds.
        let servers = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let client = opts
            .connect(servers.as_slice())
            .await
            .map_err(|e| link::refused(url, cfg, &e))?;

        let info = client.server_info();
        let found = Version::parse(&info.version);
        if found.is_none_or(|v| v < MIN_VERSION) {
            return Err(BusError::ServerTooOld {
                url: url.to_string(),
                found: info.version,
                feature: "per-key TTL on the TG_LEASES bucket",
            });
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.request_timeout.into())
            .max_ack_inflight(cfg.max_ack_inflight as usize)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let bus = Bus {
            client,
            js,
            url: url.to_string(),
            drops,
            violations,
            ack_wait: cfg.ack_wait.into(),
        };
        let jetstream = bus.guarded(async { Ok(bus.js.query_account().await.is_ok()) });
        if !jetstream.await? {
            return Err(BusError::NoJetStream {
                url: url.to_string(),
            });
        }
        Ok(bus)
    }

    /// Runs `step`, unless the server refuses this connection a subject first (or has already):
    /// then the [`BusError::PermissionDenied`] naming it. A refused request gets no reply at
    /// all, so without this a missing grant would look like a timeout, `nats.request_timeout`
    /// later. Meant for start-up, where any refusal is a configuration to fix.
    pub async fn guarded<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, BusError>>,
    ) -> Result<T, BusError> {
        let mut step = std::pin::pin!(step);
        let mut violations = self.violations.clone();
        let refused = tokio::select! {
            biased;
            refused = violations.wait_for(Option::is_some) => refused.ok().and_then(|v| v.clone()),
            result = &mut step => return result,
        };
        match refused {
            Some(v) => Err(BusError::PermissionDenied {
                url: self.url.clone(),
                operation: v.operation,
                subject: v.subject,
            }),
            // The client is gone; the step reports what that means.
            None => step.await,
        }
    }

    /// The URL this bus is connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `ack_wait` of the stages' durable consumers (config `nats.ack_wait`).
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// How often a stage still working on a message tells JetStream so (a progress ack): often
    /// enough that one lost progress ack does not let [`Bus::ack_wait`] run out.
    pub fn progress_every(&self) -> Duration {
        self.ack_wait / 3
    }

    /// How many times the connection has dropped so far. A reply (PubAck, pull batch) awaited
    /// over a connection that dropped since never comes: read this before sending, then
    /// [`Bus::dropped_since`] tells when to give up on it and send again.
    pub fn connection_drops(&self) -> u64 {
        *self.drops.borrow()
    }

    /// Resolves once the connection has dropped more than `seen` times (never, if it does not).
    pub async fn dropped_since(&self, seen: u64) {
        let mut drops = self.drops.clone();
        if drops.wait_for(|n| *n > seen).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Publishes `payload` to `subject` with `Nats-Msg-Id = msg_id` and waits for its PubAck.
    ///
    /// When the connection drops before the PubAck arrives, the message is sent again at once
    /// (the Msg-Id makes JetStream store it once) instead of waiting out the request timeout
    /// for a PubAck the old connection took with it.
    pub async fn publish_acked(
        &self,
        subject: String,
        msg_id: String,
        payload: bytes::Bytes,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let sent_in = self.connection_drops();
        let ack = self.send_with_id(&subject, &msg_id, &payload).await?;
        self.pub_ack_or_resend(ack, sent_in, subject, msg_id, payload)
            .await
    }

    /// Sends one publish with `Nats-Msg-Id = msg_id`; the returned future is its PubAck.
    pub async fn send_with_id(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &bytes::Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(msg_id);
        self.js.send_publish(subject.to_string(), message).await
    }

    /// Awaits `ack`, the PubAck of a publish sent when [`Bus::connection_drops`] was `sent_in`;
    /// each time the connection drops first, the publish is sent again and that PubAck awaited.
    pub async fn pub_ack_or_resend(
        &self,
        ack: jetstream::context::PublishAckFuture,
        mut sent_in: u64,
        subject: String,
        msg_id: String,
        payload: bytes::Bytes,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let mut ack = std::future::IntoFuture::into_future(ack);
        loop {
            tokio::select! {
                result = &mut ack => return result,
                () = self.dropped_since(sent_in) => {
                    sent_in = self.connection_drops();
                    metrics::counter!("tgingest_publish_resends_total").increment(1);
                    let again = self.send_with_id(&subject, &msg_id, &payload).await?;
                    ack = std::future::IntoFuture::into_future(again);
                }
            }
        }
    }

    /// Creates the streams and buckets, or brings them in line with `cfg`, then proves that this
    /// user may publish to every subject the node writes ([`publish_probes`]). Safe to run at
    /// every start; a subject the server refuses is a [`BusError::PermissionDenied`] at once.
    pub async fn setup(&self, cfg: &Config) -> Result<SetupReport, BusError> {
        let report = self.guarded(self.apply_setup(cfg)).await?;
        self.guarded(self.probe_publish(cfg)).await?;
        Ok(report)
    }

    /// Publishes to each of [`publish_probes`] with `Nats-Expected-Last-Sequence` set to one no
    /// stream can have, so JetStream refuses to store it: any answer from the stream proves the
    /// grant, the server's `Permissions Violation` (see [`Bus::guarded`]) its absence. Cheaper
    /// and more honest than asking: it checks the very publish the node will make.
    async fn probe_publish(&self, cfg: &Config) -> Result<(), BusError> {
        let timeout = jetstream::context::traits::TimeoutProvider::timeout(&self.js);
        for subject in publish_probes(cfg) {
            let probe =
                jetstream::message::PublishMessage::build().expected_last_sequence(u64::MAX);
            let answered = match self.js.send_publish(subject.clone(), probe).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match answered {
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::TimedOut => {
                    return Err(BusError::ProbeTimeout { subject, timeout });
                }
                // Stored nothing (wrong last sequence) or, impossibly, stored: either way allowed.
                _ => tracing::debug!(%subject, "publish permitted"),
            }
        }
        Ok(())
    }

    async fn apply_setup(&self, cfg: &Config) -> Result<SetupReport, BusError> {
        let mut items = Vec::new();
        let streams = [
            (
                STREAM_RAW,
                "raw",
                "tg.raw.>",
                &cfg.streams.raw,
                "normalized events from the account actors",
            ),
            (
                STREAM_CLEAN,
                "clean",
                "tg.clean.>",
                &cfg.streams.clean,
                "deduplicated, filtered, redacted events (replay source)",
            ),
            (
                STREAM_DLQ,
                "dlq",
                "tg.dlq.>",
                &cfg.streams.dlq,
                "events Switchboard refused permanently",
            ),
        ];
        let batches = cfg.switchboard.mode == crate::config::DeliveryMode::ConversationBatches;
        let batch = batches.then(|| {
            (
                STREAM_BATCH,
                "batch",
                stream_config(
                    STREAM_BATCH,
                    "tg.batch.>",
                    &cfg.streams.batch,
                    "conversation-history batches, recorded before they are sent",
                ),
            )
        });
        let audit = (
            STREAM_AUDIT,
            "audit",
            audit_stream_config(&cfg.streams.audit),
        );
        let streams = streams
            .into_iter()
            .map(|(name, section, subject, sc, description)| {
                (name, section, stream_config(name, subject, sc, description))
            })
            .chain([audit])
            .chain(batch);
        for (name, section, desired) in streams {
            let applied = self
                .apply_stream(desired)
                .await
                .map_err(|message| BusError::Stream {
                    name,
                    section,
                    message: explain_jetstream_error(&message),
                })?;
            items.push((name.to_string(), applied));
        }

        let storage = stream::StorageType::File;
        let buckets = [
            kv::Config {
                bucket: BUCKET_SESSIONS.into(),
                description: "sealed Telegram sessions (XChaCha20-Poly1305 under per-account keys)"
                    .into(),
                history: 1,
                storage,
                num_replicas: cfg.kv.replicas,
                ..Default::default()
            },
            kv::Config {
                bucket: BUCKET_LEASES.into(),
                description: "account ownership leases, renewed by compare-and-set".into(),
                history: 1,
                storage,
                num_replicas: cfg.kv.replicas,
                limit_markers: Some(cfg.kv.lease_ttl.into()),
                ..Default::default()
            },
            kv::Config {
                bucket: BUCKET_ACCOUNTS.into(),
                description:
                    "accounts registry: how each account was added, desired state, consent".into(),
                history: 8,
                storage,
                num_replicas: cfg.kv.replicas,
                ..Default::default()
            },
            kv::Config {
                bucket: BUCKET_ANCHORS.into(),
                description: "event-log chain heads per node".into(),
                history: 64,
                storage,
                num_replicas: cfg.kv.replicas,
                ..Default::default()
            },
            kv::Config {
                bucket: BUCKET_CHECKPOINTS.into(),
                description:
                    "source cursor per account, written by its owner only (epoch-stamped CAS)"
                        .into(),
                history: 1,
                storage,
                num_replicas: cfg.kv.replicas,
                ..Default::default()
            },
        ];
        // A single node keeps today's cost: the bucket exists only where it is used.
        let seen = cfg.cluster.enabled.then(|| shared_seen_bucket(cfg));
        for bucket in buckets.into_iter().chain(seen) {
            let name = match bucket.bucket.as_str() {
                BUCKET_SESSIONS => BUCKET_SESSIONS,
                BUCKET_LEASES => BUCKET_LEASES,
                BUCKET_ACCOUNTS => BUCKET_ACCOUNTS,
                BUCKET_CHECKPOINTS => BUCKET_CHECKPOINTS,
                BUCKET_SEEN => BUCKET_SEEN,
                _ => BUCKET_ANCHORS,
            };
            let before = self
                .js
                .get_stream(format!("KV_{name}"))
                .await
                .ok()
                .map(|s| s.cached_info().config.clone());
            let store = self
                .js
                .create_or_update_key_value(bucket)
                .await
                .map_err(|e| BusError::Bucket {
                    name,
                    message: explain_jetstream_error(&error_chain(&e)),
                })?;
            let after = self
                .js
                .get_stream(format!("KV_{}", store.name))
                .await
                .ok()
                .map(|s| s.cached_info().config.clone());
            items.push((name.to_string(), classify(before.as_ref(), after.as_ref())));
        }
        Ok(SetupReport { items })
    }

    async fn apply_stream(&self, desired: stream::Config) -> Result<Applied, String> {
        let before = self
            .js
            .get_stream(&desired.name)
            .await
            .ok()
            .map(|s| s.cached_info().config.clone());
        let info = self
            .js
            .create_or_update_stream(desired)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(classify(before.as_ref(), Some(&info.config)))
    }
}

/// The account id of the publish probes: no Telegram user has id 0.
const PROBE_ACCOUNT: &str = "0";

/// One subject of each kind the node publishes to (the streams', its own audit subject, a key
/// of each KV bucket it writes), for [`Bus::setup`]'s permission probe.
pub fn publish_probes(cfg: &Config) -> Vec<String> {
    let mut subjects = vec![
        raw_subject(PROBE_ACCOUNT, ChatKind::Private),
        clean_subject(PROBE_ACCOUNT),
        dlq_subject(PROBE_ACCOUNT),
        audit_subject(&cfg.node_id()),
    ];
    if cfg.switchboard.mode == crate::config::DeliveryMode::ConversationBatches {
        subjects.push(batch_subject(PROBE_ACCOUNT, PROBE_ACCOUNT));
    }
    let seen = cfg.cluster.enabled.then_some(BUCKET_SEEN);
    for bucket in BUCKETS.into_iter().chain(seen) {
        subjects.push(format!("$KV.{bucket}.{PROBE_ACCOUNT}"));
    }
    subjects
}

/// The KV buckets every node uses (`TG_SEEN` only with `cluster.enabled`).
pub const BUCKETS: [&str; 5] = [
    BUCKET_SESSIONS,
    BUCKET_LEASES,
    BUCKET_ACCOUNTS,
    BUCKET_ANCHORS,
    BUCKET_CHECKPOINTS,
];

/// The pause before reconnect attempt `attempts`: none for the first, then 50 ms more per attempt
/// up to `max`. async-nats' default doubles up to 4 s, so a server back after a short outage
/// could wait seconds for the client to look again.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    let attempts = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    Duration::from_millis(50).saturating_mul(attempts).min(max)
}

fn classify(before: Option<&stream::Config>, after: Option<&stream::Config>) -> Applied {
    match (before, after) {
        (None, _) => Applied::Created,
        (Some(b), Some(a)) if b == a => Applied::Unchanged,
        _ => Applied::Updated,
    }
}

/// `TG_SEEN`: one key per event id, written once (create-if-absent) and removed by the bucket's
/// age limit `dedupe.shared_ttl` (no per-key TTL: one age for every key needs no timer per key
/// in the server).
fn shared_seen_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: BUCKET_SEEN.into(),
        description: "event ids a dedupe stage passed on (create-if-absent decides)".into(),
        history: 1,
        max_age: cfg.dedupe.shared_ttl.into(),
        storage: storage_type(cfg.dedupe.shared_storage),
        num_replicas: cfg.kv.replicas,
        ..Default::default()
    }
}

fn storage_type(storage: Storage) -> stream::StorageType {
    match storage {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    }
}

/// The JetStream config of one of our streams.
pub fn stream_config(
    name: &str,
    subject: &str,
    sc: &StreamConfig,
    description: &str,
) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        description: Some(description.to_string()),
        subjects: vec![subject.to_string()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: storage_type(sc.storage),
        max_age: sc.max_age.into(),
        duplicate_window: sc.duplicate_window.into(),
        num_replicas: sc.replicas,
        max_bytes: sc.max_bytes,
        allow_direct: true,
        ..Default::default()
    }
}

/// The config of `TG_AUDIT`: like the others, except that a full stream refuses new records
/// (`DiscardPolicy::New`) instead of removing the oldest, and `max_age` 0 means no age limit.
/// The node keeps what was refused and retries, so history is never dropped to make room;
/// verifying a node's chain from the stream needs all of it.
pub fn audit_stream_config(sc: &StreamConfig) -> stream::Config {
    stream::Config {
        discard: stream::DiscardPolicy::New,
        ..stream_config(
            STREAM_AUDIT,
            "tgingest.audit.>",
            sc,
            "every node's chained event-log records, a subject per node",
        )
    }
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Adds what to do to the JetStream errors an operator is likely to meet.
fn explain_jetstream_error(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let hint = if lower.contains("replicas > 1 not supported")
        || lower.contains("insufficient resources")
    {
        " (replicas above 1 need a JetStream cluster of at least that many servers; set replicas = 1 for a single server)"
    } else if lower.contains("can not change storage type") || lower.contains("storage type") {
        " (the storage type of an existing stream cannot change: keep the old value, or delete the stream after draining it)"
    } else if lower.contains("did not match any variant") || lower.contains("decode") {
        " (the server answered in a form this client does not know: it is probably older than 2.11)"
    } else {
        ""
    };
    format!("{message}{hint}")
}

/// The latest value of `key` in `store`, asked of the stream's leader.
///
/// A KV `get` is a direct get, which any replica may answer: on an R3 bucket a read right after
/// a write (an import, then its consent through another node; a new owner loading what the old
/// one wrote) can miss it. The leader has every acknowledged write. `None` when the key was
/// never written, or its last entry is a delete, purge or expiry marker.
pub async fn latest_entry(
    store: &kv::Store,
    key: &str,
) -> Result<Option<(bytes::Bytes, u64)>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", store.prefix);
    let message = match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let removed = message.headers.get("KV-Operation").is_some_and(|op| {
        let op = op.as_str();
        op == "DEL" || op == "PURGE"
    }) || message.headers.get("Nats-Marker-Reason").is_some();
    Ok((!removed).then_some((message.payload, message.sequence)))
}

/// The latest value of every key of `store`, read in one pass of an ordered consumer (deleted,
/// purged and expired keys left out): `(key, value, revision)`.
///
/// Listing keys and then getting each costs a request per key; a controller that places every
/// account every few seconds cannot afford that at thousands of accounts.
pub async fn latest_entries(
    client: &async_nats::Client,
    store: &kv::Store,
) -> Result<Vec<(String, bytes::Bytes, u64)>, String> {
    use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push::OrderedConfig};
    use futures::StreamExt;
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("tgingest: latest value of every key".into()),
            filter_subject: format!("{}>", store.prefix),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let removed = message.headers.as_ref().is_some_and(|h| {
            h.get("KV-Operation")
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
                || h.get("Nats-Marker-Reason").is_some()
        });
        if !removed && let Some(key) = message.subject.as_str().strip_prefix(&store.prefix) {
            out.push((key.to_string(), message.payload.clone(), sequence));
        }
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_attempts_pause_briefly_and_never_past_the_cap() {
        let max = Duration::from_millis(500);
        assert_eq!(reconnect_delay(0, max), Duration::ZERO);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        assert_eq!(reconnect_delay(3, max), Duration::from_millis(100));
        assert_eq!(reconnect_delay(1_000_000, max), max);
    }

    #[test]
    fn subjects_follow_the_design() {
        assert_eq!(audit_subject("node-1"), "tgingest.audit.node-1");
        assert_eq!(raw_subject("42", ChatKind::Channel), "tg.raw.42.channel");
        assert_eq!(clean_subject("42"), "tg.clean.42");
        assert_eq!(dlq_subject("42"), "tg.dlq.42");
    }
}
