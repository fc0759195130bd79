//! Typed configuration: built-in defaults, then a TOML file, then environment overrides.
//!
//! Every key has a default, so an empty file (or none) is the embedded default. Unknown keys are
//! errors, and every error names the key, the bad value and what is allowed, because a typo that
//! is silently ignored is how a deny-list stops denying. The shipped `config/tgingest.toml` lists
//! every key with its default; a test keeps the two equal.
//!
//! Environment overrides: `TGINGEST_<SECTION>_<KEY>` for every key (dots become underscores,
//! upper case: `TGINGEST_STREAMS_RAW_MAX_AGE`), plus the butlers connector's names where they
//! mean the same thing (see [`ALIASES`]).

pub use crate::config_error::{ConfigError, invalid};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "TGINGEST_CONFIG";

/// Prefix of the generic per-key environment overrides.
pub const ENV_PREFIX: &str = "TGINGEST_";

/// `TGINGEST_*` variables that are not config keys (so they are not reported as unknown).
pub const NON_CONFIG_ENV: &[&str] = &[
    CONFIG_ENV,
    crate::keys::MASTER_KEY_ENV,
    crate::keys::MASTER_KEY_FILE_ENV,
    crate::nats_server::NATS_SERVER_ENV,
    crate::demo::FAKE_DC_SEED_ENV,
];

/// The butlers connector's variable names, and the keys they set.
pub const ALIASES: &[(&str, &str)] = &[
    ("SWITCHBOARD_MCP_URL", "switchboard.url"),
    ("CONNECTOR_PROVIDER", "switchboard.provider"),
    ("CONNECTOR_CHANNEL", "switchboard.channel"),
    (
        "CONNECTOR_ENDPOINT_IDENTITY",
        "switchboard.endpoint_identity",
    ),
    ("CONNECTOR_MAX_INFLIGHT", "switchboard.max_inflight"),
    ("CONNECTOR_BACKFILL_WINDOW_H", "telegram.backfill_window_h"),
    // Conversation-history batches: the names the butlers Telegram user-client connector reads
    // (tzeusy-org/butlers, src/butlers/connectors/telegram_user_client.py, module docs and
    // `TelegramUserClientConnectorConfig.from_env`).
    (
        "TELEGRAM_USER_FLUSH_INTERVAL_S",
        "switchboard.batches.flush_interval_s",
    ),
    (
        "TELEGRAM_USER_BUFFER_MAX_MESSAGES",
        "switchboard.batches.max_messages",
    ),
    (
        "TELEGRAM_USER_HISTORY_MAX_MESSAGES",
        "switchboard.batches.context_messages",
    ),
    (
        "TELEGRAM_USER_HISTORY_TIME_WINDOW_M",
        "switchboard.batches.context_window_m",
    ),
    ("TELEGRAM_API_ID", "telegram.api_id"),
    ("TELEGRAM_API_HASH", "telegram.api_hash"),
];

/// Keys whose values are secrets: masked whenever the config is printed.
pub const SECRET_KEYS: &[&str] = &["telegram.api_hash", "switchboard.auth_token"];

// ---------------------------------------------------------------------------------------------
// The configuration tree
// ---------------------------------------------------------------------------------------------

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub nats: NatsConfig,
    pub streams: StreamsConfig,
    pub kv: KvConfig,
    pub cluster: ClusterConfig,
    pub security: SecurityConfig,
    pub switchboard: SwitchboardConfig,
    pub telegram: TelegramConfig,
    pub dedupe: DedupeConfig,
    pub supervision: SupervisionConfig,
    pub eventlog: EventLogConfig,
    pub logging: LoggingConfig,
    pub admin: AdminConfig,
    pub simulator: crate::telegram::simulated::SimulatorConfig,
    pub policy: crate::policy::PolicyConfig,
}

/// This process: its name in the cluster and where it keeps local state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node id (letters, digits, `-`, `_`); empty means the host name.
    pub id: String,
    /// Local state: event log, generated master key, embedded NATS store.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            data_dir: PathBuf::from("data"),
        }
    }
}

/// How to reach NATS; with no URL, tgingest runs its own nats-server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// `nats://host:port` (comma-separated for several seeds); empty = embedded server.
    pub url: String,
    /// A `.creds` file (JWT + NKey seed; operator/JWT mode); empty = none.
    pub credentials_file: PathBuf,
    /// A file holding a user NKey seed (`SU…`; servers that list users by `nkey`); empty = none.
    /// Not together with `credentials_file`.
    pub nkey_file: PathBuf,
    pub tls: NatsTlsConfig,
    pub embedded: EmbeddedNatsConfig,
    /// How long to wait for a JetStream API reply.
    pub request_timeout: Dur,
    /// Publishes awaiting a PubAck at once per publisher (the credit window).
    pub max_ack_inflight: u32,
    /// How long JetStream waits for a stage's ack before it redelivers the message; an ack lost
    /// with the connection delays its message this long. Busy stages send progress acks.
    pub ack_wait: Dur,
    /// The longest pause between reconnect attempts after the connection drops.
    pub reconnect_delay_max: Dur,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: String::new(),
            credentials_file: PathBuf::new(),
            nkey_file: PathBuf::new(),
            tls: NatsTlsConfig::default(),
            embedded: EmbeddedNatsConfig::default(),
            request_timeout: Dur::secs(10),
            max_ack_inflight: 4096,
            ack_wait: Dur::secs(5),
            reconnect_delay_max: Dur(Duration::from_secs(1)),
        }
    }
}

/// TLS towards an external NATS server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTlsConfig {
    /// Refuse to connect without TLS.
    pub required: bool,
    /// CA bundle (PEM) to trust instead of the system roots; empty = system roots.
    pub ca_file: PathBuf,
    /// Client certificate (PEM) for mutual TLS; needs `key_file`.
    pub cert_file: PathBuf,
    /// Client key (PEM) for mutual TLS; needs `cert_file`.
    pub key_file: PathBuf,
}

/// The nats-server tgingest starts itself when `nats.url` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedNatsConfig {
    /// Path of the nats-server binary; empty = the usual lookup (see README).
    pub binary: PathBuf,
    /// Client port on 127.0.0.1; 0 = a free port.
    pub port: u16,
}

/// The streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    pub raw: StreamConfig,
    pub clean: StreamConfig,
    pub dlq: StreamConfig,
    /// `TG_BATCH`, the recorded conversation-history batches (only with
    /// `switchboard.mode = "conversation_batches"`): what a replay re-sends.
    pub batch: StreamConfig,
    /// `TG_AUDIT`, every node's chained event log: `max_age` 0 keeps it for good, and a full
    /// stream refuses new records instead of removing old ones (see `bus::Bus::setup`).
    pub audit: StreamConfig,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            raw: StreamConfig::with_max_age(Dur::hours(24)),
            clean: StreamConfig::with_max_age(Dur::days(30)),
            dlq: StreamConfig::with_max_age(Dur::days(90)),
            batch: StreamConfig::with_max_age(Dur::days(30)),
            audit: StreamConfig::with_max_age(Dur::secs(0)),
        }
    }
}

/// Retention and placement of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Messages older than this are removed (`streams.audit` only: 0 = never).
    pub max_age: Dur,
    /// `Nats-Msg-Id` dedupe window; at most `max_age`.
    pub duplicate_window: Dur,
    /// Copies in a cluster: 1, 3 or 5.
    pub replicas: usize,
    /// Size cap in bytes (oldest removed first); -1 = none.
    pub max_bytes: i64,
    pub storage: Storage,
}

impl StreamConfig {
    fn with_max_age(max_age: Dur) -> Self {
        StreamConfig {
            max_age,
            duplicate_window: Dur::secs(120),
            replicas: 1,
            max_bytes: -1,
            storage: Storage::File,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig::with_max_age(Dur::hours(24))
    }
}

/// Where JetStream keeps a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

/// The KV buckets (sessions, leases, anchors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    /// Copies of each bucket in a cluster: 1, 3 or 5.
    pub replicas: usize,
    /// How long the server keeps a lease record nobody rewrites (`Nats-TTL`): clean-up only,
    /// ownership never changes because a record expired (see [`ClusterConfig`]).
    pub lease_ttl: Dur,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            replicas: 1,
            lease_ttl: Dur::secs(40),
        }
    }
}

/// One owner per account across nodes: whether this node shares its accounts with others, the
/// node lease's timing and how accounts move (`crate::cluster`). Every duration is measured on
/// the deciding node's own monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Share the registry's accounts with every other node on the same NATS: each account runs
    /// on the one node that holds its claim. Off: this node runs every account it may. On, the
    /// dedupe stage also decides in the shared bucket `TG_SEEN` (see `dedupe.shared_ttl`); off,
    /// a single node pays nothing for it.
    pub enabled: bool,
    /// How long another node must see a node's lease record unchanged before it may take that
    /// node's accounts.
    pub lease: Dur,
    /// How often a node rewrites its lease record.
    pub renew_every: Dur,
    /// A node stops every Telegram client it runs when this long has passed since it *sent* its
    /// last successful renewal; must leave a margin under `lease` for pauses and clock rate.
    pub self_fence_after: Dur,
    /// Extra wait after an owner vanished without releasing, before a taker connects.
    pub lock_delay: Dur,
    /// Accounts move only after the set of live nodes has not changed for this long.
    pub stable_after: Dur,
    /// At most this many accounts handed off per rebalancing round.
    pub move_batch: usize,
    /// Telegram clients started per second at most when accounts arrive (FLOOD_WAIT otherwise).
    pub connects_per_second: u32,
    /// No node takes more than this times the mean number of accounts per live node.
    pub load_factor: f64,
    /// The most accounts this node runs (announced in its node record; the others take what it
    /// cannot). 0: no limit of its own, only the load factor's.
    pub capacity: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            lease: Dur::secs(20),
            renew_every: Dur::secs(3),
            self_fence_after: Dur::secs(10),
            lock_delay: Dur::secs(2),
            stable_after: Dur::secs(5),
            move_batch: 20,
            connects_per_second: 5,
            load_factor: 1.25,
            capacity: 0,
        }
    }
}

impl ClusterConfig {
    /// The timing must leave a renewing node valid, a fenced node silent before anyone takes
    /// over, and the server's clean-up after every decision.
    fn validate(&self, lease_ttl: Dur) -> Result<(), ConfigError> {
        let c = self;
        check(c.renew_every.0 >= Duration::from_millis(100), || {
            invalid("cluster.renew_every", c.renew_every, "at least 100ms")
        })?;
        check(c.self_fence_after.0 >= c.renew_every.0 * 2, || {
            invalid(
                "cluster.self_fence_after",
                c.self_fence_after,
                format!(
                    "at least twice cluster.renew_every ({}), so one slow renewal does not stop every client",
                    c.renew_every
                ),
            )
        })?;
        check(c.lease.0 >= c.self_fence_after.0 * 3 / 2, || {
            invalid(
                "cluster.lease",
                c.lease,
                format!(
                    "at least 1.5 x cluster.self_fence_after ({}): the margin absorbs pauses and clock-rate differences",
                    c.self_fence_after
                ),
            )
        })?;
        check(lease_ttl.0 >= c.lease.0, || {
            invalid(
                "kv.lease_ttl",
                lease_ttl,
                format!(
                    "at least cluster.lease ({}): the server must keep a record until every node could have decided",
                    c.lease
                ),
            )
        })?;
        check(c.move_batch >= 1, || {
            invalid("cluster.move_batch", c.move_batch, "at least 1")
        })?;
        check(c.connects_per_second >= 1, || {
            invalid(
                "cluster.connects_per_second",
                c.connects_per_second,
                "at least 1",
            )
        })?;
        check((1.0..=4.0).contains(&c.load_factor), || {
            invalid("cluster.load_factor", c.load_factor, "from 1.0 to 4.0")
        })
    }
}

/// Secrets at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Master key file (64 hex characters, mode 0600); empty = `TGINGEST_MASTER_KEY`, or in
    /// embedded mode a key generated into the data dir.
    pub master_key_file: PathBuf,
}

/// The downstream ingest hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchboardConfig {
    /// MCP endpoint: `…/mcp` (streamable HTTP) or `…/sse` (legacy SSE).
    pub url: String,
    /// `source.channel`: `telegram_user_client`, or `telegram` for servers before mid-March 2026.
    pub channel: String,
    /// `source.provider`: always `telegram`.
    pub provider: String,
    /// `source.endpoint_identity`; `{account}` is replaced by the account's user id.
    pub endpoint_identity: String,
    /// MCP calls in flight at once (Switchboard has no backpressure signal of its own).
    pub max_inflight: u32,
    /// Timeout of one MCP call.
    pub request_timeout: Dur,
    /// `connector.heartbeat` period per endpoint; 0s = off.
    pub heartbeat_interval: Dur,
    /// One envelope per message, or one conversation-history batch per chat per flush.
    pub mode: DeliveryMode,
    /// Send `sender.display_name`, `chat_type`, `participant_count` (servers from April 2026 on).
    pub send_sender_details: bool,
    /// Optional bearer token, sent on every request of both transports. Prefer
    /// `auth_token_file`: a token inline ends up wherever the config file is copied.
    pub auth_token: Secret,
    /// File holding the bearer token (read at start; surrounding white space trimmed); empty =
    /// `auth_token`. Setting both is an error.
    pub auth_token_file: PathBuf,
    /// PEM file of the CA certificate(s) that sign Switchboard's certificate (`https://` URLs
    /// only). They replace the system's trust store for this link; empty = the system's store.
    pub ca_file: PathBuf,
    /// How batches are cut (only with `mode = "conversation_batches"`).
    pub batches: BatchConfig,
}

impl Default for SwitchboardConfig {
    fn default() -> Self {
        SwitchboardConfig {
            url: "http://127.0.0.1:41100/mcp".into(),
            channel: "telegram_user_client".into(),
            provider: "telegram".into(),
            endpoint_identity: "telegram:user:{account}".into(),
            max_inflight: 8,
            request_timeout: Dur::secs(30),
            heartbeat_interval: Dur::secs(120),
            mode: DeliveryMode::Messages,
            send_sender_details: false,
            auth_token: Secret::default(),
            auth_token_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            batches: BatchConfig::default(),
        }
    }
}

/// What one `ingest` call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// One envelope per event (every Switchboard).
    Messages,
    /// New messages as one conversation-history batch per chat per flush (Switchboard from late
    /// March 2026 on); edits, deletions and service events still go one by one.
    ConversationBatches,
}

/// How conversation-history batches are cut. Whole numbers with the unit in the name, as the
/// butlers connector's variables (see [`ALIASES`]) are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Seconds a chat's first buffered message waits before its batch is recorded.
    pub flush_interval_s: u64,
    /// A chat's batch is recorded as soon as this many new messages are buffered.
    pub max_messages: u32,
    /// Earlier messages (already sent) shown as context before the oldest new one, at most.
    pub context_messages: u32,
    /// How far back (minutes before the oldest new message) context may reach.
    pub context_window_m: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            flush_interval_s: 1800,
            max_messages: 200,
            context_messages: 50,
            context_window_m: 35,
        }
    }
}

/// Telegram API credentials and ingest behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// From my.telegram.org; 0 = not set (needed only for real accounts).
    pub api_id: i64,
    /// From my.telegram.org (32 hex characters); empty = not set.
    pub api_hash: Secret,
    /// Hours of history to backfill on first start and after a detected hole.
    pub backfill_window_h: u32,
    /// Capacity of grammers' update channel, which drops on overflow (its default is 100).
    pub update_channel_capacity: usize,
    /// FLOOD_WAITs up to this long are slept; longer ones park the account.
    pub flood_sleep_max: Dur,
    /// At most this many of the newest messages per chat in the first-start backfill.
    pub backfill_max_per_chat: u32,
    /// One history request per this long, per account (keeps backfill clear of flood waits).
    pub backfill_pace: Dur,
    /// How often each account compares its dialogs with what arrived, to find holes.
    pub hole_check_interval: Dur,
    /// A message must be this old before its absence counts as a hole.
    pub hole_grace: Dur,
    /// How long an account is parked after PEER_FLOOD (Telegram limits it for an unstated while,
    /// typically hours).
    pub peer_flood_park: Dur,
    /// Login attempts (code requests) allowed per phone number within 24 hours; Telegram locks
    /// an account after about five a day, so the budget is enforced locally.
    pub login_attempts_per_day: u32,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            api_id: 0,
            api_hash: Secret::default(),
            backfill_window_h: 24,
            update_channel_capacity: 10_000,
            flood_sleep_max: Dur::secs(60),
            backfill_max_per_chat: 1000,
            backfill_pace: Dur::secs(1),
            hole_check_interval: Dur::secs(600),
            hole_grace: Dur::secs(120),
            peer_flood_park: Dur::hours(3),
            login_attempts_per_day: 5,
        }
    }
}

/// What the dedupe stage remembers: its node-local seen-set and, with `cluster.enabled`, the
/// cluster-wide window in `TG_SEEN` (see `crate::pipeline::shared_seen`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    /// How long an event id is remembered by the node that passed it on.
    pub horizon: Dur,
    /// With `cluster.enabled`: how long every node's dedupe stage knows an id any node passed on
    /// (the `max_age` of `TG_SEEN`). Each id held costs every NATS server memory, so this covers
    /// the time a duplicate takes to reach another node, not the whole horizon.
    pub shared_ttl: Dur,
    /// Where JetStream keeps `TG_SEEN`. Losing it loses no event, only the window's duplicate
    /// answers, and it may be deleted to change this (it is created again, empty, at start).
    pub shared_storage: Storage,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            horizon: Dur::days(7),
            shared_ttl: Dur::secs(15 * 60),
            shared_storage: Storage::File,
        }
    }
}

impl DedupeConfig {
    /// The shared window must outlast the copies `TG_RAW` lets through and a failover's delay,
    /// and stay within the horizon; checked only where it is used (`cluster.enabled`).
    fn validate(&self, cluster: &ClusterConfig, raw: &StreamConfig) -> Result<(), ConfigError> {
        check(!self.horizon.is_zero(), || {
            invalid("dedupe.horizon", self.horizon, "a duration above zero")
        })?;
        if !cluster.enabled {
            return Ok(());
        }
        let ttl = self.shared_ttl;
        let failover = Dur(cluster.lease.0 + cluster.lock_delay.0);
        check(ttl.0 > raw.duplicate_window.0, || {
            invalid(
                "dedupe.shared_ttl",
                ttl,
                format!(
                    "longer than streams.raw.duplicate_window ({}): copies closer than that never both reach TG_RAW",
                    raw.duplicate_window
                ),
            )
        })?;
        check(ttl.0 >= failover.0, || {
            invalid(
                "dedupe.shared_ttl",
                ttl,
                format!(
                    "at least cluster.lease + cluster.lock_delay ({failover}): a failover's re-sent events come that late at the earliest"
                ),
            )
        })?;
        check(ttl <= self.horizon, || {
            invalid(
                "dedupe.shared_ttl",
                ttl,
                format!("at most dedupe.horizon ({})", self.horizon),
            )
        })
    }
}

/// Restart policy of supervised actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts of one child allowed within `window` before the supervisor escalates.
    pub max_restarts: u32,
    pub window: Dur,
    /// First restart delay; doubles per restart up to `backoff_max`.
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    /// Random spread of each delay, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: 5,
            window: Dur::secs(60),
            backoff_initial: Dur::secs(1),
            backoff_max: Dur::secs(600),
            jitter: 0.2,
        }
    }
}

/// The chained audit and checkpoint log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventLogConfig {
    /// At most how often the newest record of the log's copy in `TG_AUDIT` is anchored to
    /// JetStream (`TG_ANCHORS`); also when the node stops.
    pub anchor_interval: Dur,
    /// How often the node verifies the records appended since its last check, and its latest
    /// anchor (the gauge `tgingest_eventlog_verify_ok`); 0 = never.
    pub verify_interval: Dur,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        EventLogConfig {
            anchor_interval: Dur::secs(60),
            verify_interval: Dur::secs(300),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `tgingest=debug,async_nats=warn`); `RUST_LOG` wins.
    pub level: String,
    /// Message bodies (after redaction) in `debug` log lines; off: never in any log line.
    pub bodies: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Human,
            level: "info,async_nats=warn".into(),
            bodies: false,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// The admin HTTP server (metrics, health, accounts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address; empty = off.
    pub listen: String,
    /// File holding the bearer token every request must carry (`Authorization: Bearer …`);
    /// empty = no token, allowed only on a loopback address.
    pub token_file: PathBuf,
    /// Per-account series (ingest rate, last-event age, checkpoint lag, labelled `account`) on
    /// `/metrics`; off by default, since per-account labels do not scale to 10,000 accounts.
    pub per_account_metrics: bool,
    /// Named principals with their tokens and per-group grants; empty: the single-token mode
    /// (one principal `admin` with every privilege, see [`crate::admin::principals`]).
    pub principals: Vec<crate::admin::principals::PrincipalConfig>,
    /// Login attempts (code requests, codes, 2FA passwords) per principal per hour; 0 = no limit.
    pub login_attempts_per_hour: u32,
    /// Requests to start a replay (once their fields are valid) per principal per hour; 0 = no
    /// limit.
    pub replays_per_hour: u32,
}

impl AdminConfig {
    /// Every principal: a valid unique name, exactly one of `token_file` and `token_hash`, and
    /// grants on valid groups (or `*`) with at least one privilege each.
    fn validate_principals(&self) -> Result<(), ConfigError> {
        use crate::admin::principals::{ALL_GROUPS, valid_group};
        for (i, p) in self.principals.iter().enumerate() {
            let key = |field: &str| format!("admin.principals[{i}].{field}");
            check(is_name(&p.name), || {
                invalid(&key("name"), &p.name, "1 to 64 letters, digits, `-` or `_`")
            })?;
            check(
                self.principals[..i].iter().all(|q| q.name != p.name),
                || invalid(&key("name"), &p.name, "a name no other principal has"),
            )?;
            check(
                p.token_file.as_os_str().is_empty() != p.token_hash.is_empty(),
                || {
                    invalid(
                        &key("token_file"),
                        &p.token_file,
                        "exactly one of token_file (a file holding the token) and token_hash \
                         (from `tgingest admin hash-token`)",
                    )
                },
            )?;
            for (j, g) in p.grants.iter().enumerate() {
                check(g.group == ALL_GROUPS || valid_group(&g.group), || {
                    invalid(
                        &key(&format!("grants[{j}].group")),
                        &g.group,
                        "a group label (1 to 64 letters, digits, `-` or `_`) or * for every group",
                    )
                })?;
                check(!g.privileges.is_empty(), || {
                    invalid(
                        &key(&format!("grants[{j}].privileges")),
                        "[]",
                        "at least one of view, login, manage, remove, replay, admin",
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9464".into(),
            token_file: PathBuf::new(),
            per_account_metrics: false,
            principals: Vec::new(),
            login_attempts_per_hour: 20,
            replays_per_hour: 10,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// A duration written as text (`"90s"`, `"15m"`, `"24h"`, `"7d"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn hours(h: u64) -> Self {
        Dur(Duration::from_secs(h * 3600))
    }
    pub const fn days(d: u64) -> Self {
        Dur(Duration::from_secs(d * 86_400))
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map(Dur).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration: write a number and a unit, such as \"90s\", \"15m\", \"24h\" or \"7d\""
            ))
        })
    }
}

/// A secret string: empty means unset; never shown by `Debug` or when the config is printed.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "\"***\"" } else { "\"\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_set() { "***" } else { "" })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// A validated configuration and where its values came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any (none = built-in defaults).
    pub file: Option<PathBuf>,
    /// Environment overrides applied: (variable, key), in the order applied.
    pub env_overrides: Vec<(String, String)>,
}

/// Loads `file` (or built-in defaults when `None`), applies the overrides found in `env`, and
/// validates the result.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            load_text(path, &text, env)
        }
        None => load_table(toml::Table::new(), None, env),
    }
}

/// [`load`] of `text` as the content of the file `path`: the part of loading that reads no file,
/// apart so the TOML decoder can be property-tested on text alone (`tests/decoders.rs`).
pub fn load_text(
    path: &Path,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: syntax_message(text, &e),
        })?;
    load_table(table, Some(path), env)
}

/// Applies the overrides in `env` to `table` (read from `file`, if any), then deserializes and
/// validates it.
fn load_table(
    mut table: toml::Table,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let file_origin = file.map_or_else(
        || "built-in defaults".to_string(),
        |p| format!("{}", p.display()),
    );

    let env_overrides = apply_env(&mut table, env)?;
    let origin_of = |key: &str| -> String {
        env_overrides
            .iter()
            .rev()
            .find(|(_, k)| k == key.split('[').next().unwrap_or(key))
            .map_or_else(
                || file_origin.clone(),
                |(var, _)| format!("environment variable {var}"),
            )
    };

    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            let message = message.split("\nin `").next().unwrap_or(&message).trim();
            let message = match message.find("expected struct ") {
                Some(at) => format!("{}expected a section [{key}]", &message[..at]),
                None => message.to_string(),
            };
            let message = ["u16", "u32", "u64", "usize", "i64"]
                .iter()
                .fold(message, |m, t| {
                    m.replace(&format!("expected {t}"), "expected a whole number")
                })
                .replace("expected f64", "expected a number");
            ConfigError::Type {
                origin: origin_of(&key),
                key,
                message,
            }
        })?;
    config.validate().map_err(|mut e| {
        if let ConfigError::Invalid { origin, key, .. } = &mut e {
            *origin = origin_of(key);
        }
        e
    })?;
    Ok(Loaded {
        config,
        file: file.map(Path::to_path_buf),
        env_overrides,
    })
}

/// "at line L, column C: what" from a TOML parse error.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim();
    let Some(span) = e.span() else {
        return what.to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("at line {line}, column {column}: {what}")
}

/// Every key path with its default value, in file order.
fn key_defaults() -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&path, t, out),
                other => out.push((path, other.clone())),
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(Config::default()) {
        walk("", &t, &mut out);
    }
    out
}

/// The generic environment variable for a key path.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Writes overrides from `env` into `table`, typed like each key's default; returns what it applied.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let keys = key_defaults();
    let mut by_var: BTreeMap<String, (String, toml::Value)> = keys
        .iter()
        .map(|(k, v)| (env_name(k), (k.clone(), v.clone())))
        .collect();
    for (alias, key) in ALIASES {
        if let Some((_, v)) = keys.iter().find(|(k, _)| k == key) {
            by_var.insert((*alias).to_string(), ((*key).to_string(), v.clone()));
        }
    }

    // Generic names first, aliases after, so a butlers deployment's own variables win.
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(var, _)| by_var.contains_key(var) || var.starts_with(ENV_PREFIX))
        .collect();
    env.sort_by_key(|(var, _)| (!var.starts_with(ENV_PREFIX), var.clone()));

    let mut applied = Vec::new();
    for (var, raw) in env {
        if NON_CONFIG_ENV.contains(&var.as_str()) {
            continue;
        }
        let Some((key, default)) = by_var.get(&var) else {
            return Err(ConfigError::UnknownEnv {
                hint: env_hint(&var, &by_var),
                var,
            });
        };
        let value = env_value(&raw, default).ok_or_else(|| ConfigError::Invalid {
            origin: format!("environment variable {var}"),
            key: key.clone(),
            value: format!("{raw:?}"),
            allowed: format!("expected {}", type_name(default)),
        })?;
        set_path(table, key, value);
        applied.push((var, key.clone()));
    }
    Ok(applied)
}

fn env_hint(var: &str, known: &BTreeMap<String, (String, toml::Value)>) -> String {
    let stem = var.trim_start_matches(ENV_PREFIX);
    let close: Vec<&str> = known
        .keys()
        .filter(|k| {
            let k = k.trim_start_matches(ENV_PREFIX);
            !stem.is_empty() && (k.contains(stem) || stem.contains(k))
        })
        .map(String::as_str)
        .take(3)
        .collect();
    if close.is_empty() {
        " (the variables are listed in the README)".into()
    } else {
        format!(" (did you mean {}?)", close.join(" or "))
    }
}

fn type_name(default: &toml::Value) -> &'static str {
    match default {
        toml::Value::Integer(_) => "a whole number",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Array(_) => "a comma-separated list",
        _ => "text",
    }
}

fn env_value(raw: &str, default: &toml::Value) -> Option<toml::Value> {
    let raw = raw.trim();
    Some(match default {
        toml::Value::Integer(_) => toml::Value::Integer(raw.parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return None,
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            // The file had a scalar where a section belongs; deserialization reports it.
            return;
        }
        let toml::Value::Table(t) = entry else { return };
        cur = t;
    }
    cur.insert(last.to_string(), value);
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn check(ok: bool, err: impl FnOnce() -> ConfigError) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(err()) }
}

fn file_exists(key: &str, path: &Path) -> Result<(), ConfigError> {
    check(path.as_os_str().is_empty() || path.is_file(), || {
        invalid(
            key,
            path,
            "no such file: give the path of an existing file, or leave it empty",
        )
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const CHANNELS: &[&str] = &["telegram_user_client", "telegram"];

impl Config {
    /// Checks every rule a value must meet beyond its type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        check(node.id.is_empty() || is_name(&node.id), || {
            invalid(
                "node.id",
                &node.id,
                "use 1 to 64 letters, digits, `-` or `_` (empty = host name)",
            )
        })?;
        check(!node.data_dir.as_os_str().is_empty(), || {
            invalid("node.data_dir", &node.data_dir, "give a directory path")
        })?;

        let nats = &self.nats;
        for url in nats.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s));
            check(scheme_ok && url.len() > 7, || {
                invalid(
                    "nats.url",
                    url,
                    "use nats://host:port (or tls://, ws://, wss://), comma-separated for several; empty = embedded server",
                )
            })?;
        }
        file_exists("nats.credentials_file", &nats.credentials_file)?;
        file_exists("nats.nkey_file", &nats.nkey_file)?;
        check(
            nats.credentials_file.as_os_str().is_empty() || nats.nkey_file.as_os_str().is_empty(),
            || {
                invalid(
                    "nats.nkey_file",
                    &nats.nkey_file,
                    "set either nats.credentials_file (a .creds file: JWT and seed) or \
                     nats.nkey_file (a bare NKey seed), not both: a connection authenticates as \
                     one user",
                )
            },
        )?;
        file_exists("nats.tls.ca_file", &nats.tls.ca_file)?;
        file_exists("nats.tls.cert_file", &nats.tls.cert_file)?;
        file_exists("nats.tls.key_file", &nats.tls.key_file)?;
        check(
            nats.tls.cert_file.as_os_str().is_empty() == nats.tls.key_file.as_os_str().is_empty(),
            || {
                invalid(
                    "nats.tls.key_file",
                    &nats.tls.key_file,
                    "mutual TLS needs both nats.tls.cert_file and nats.tls.key_file",
                )
            },
        )?;
        file_exists("nats.embedded.binary", &nats.embedded.binary)?;
        check(nats.ack_wait.0 >= Duration::from_secs(1), || {
            invalid("nats.ack_wait", nats.ack_wait, "at least 1s")
        })?;
        check(
            (Duration::from_millis(10)..=Duration::from_secs(60))
                .contains(&nats.reconnect_delay_max.0),
            || {
                invalid(
                    "nats.reconnect_delay_max",
                    nats.reconnect_delay_max,
                    "from 10ms to 60s",
                )
            },
        )?;
        check(nats.request_timeout.0 >= Duration::from_millis(100), || {
            invalid(
                "nats.request_timeout",
                nats.request_timeout,
                "at least 100ms",
            )
        })?;
        check((1..=65_536).contains(&nats.max_ack_inflight), || {
            invalid(
                "nats.max_ack_inflight",
                nats.max_ack_inflight,
                "a whole number from 1 to 65536",
            )
        })?;

        for (name, s) in [
            ("raw", &self.streams.raw),
            ("clean", &self.streams.clean),
            ("dlq", &self.streams.dlq),
            ("audit", &self.streams.audit),
            ("batch", &self.streams.batch),
        ] {
            let key = |k: &str| format!("streams.{name}.{k}");
            // The audit stream is the only one kept for good: its history is what is verified.
            let forever = name == "audit" && s.max_age.is_zero();
            check(!s.max_age.is_zero() || forever, || {
                invalid(&key("max_age"), s.max_age, "a duration above zero")
            })?;
            check(
                !s.duplicate_window.is_zero() && (forever || s.duplicate_window <= s.max_age),
                || {
                    invalid(
                        &key("duplicate_window"),
                        s.duplicate_window,
                        format!("a duration above zero and at most max_age ({})", s.max_age),
                    )
                },
            )?;
            check([1, 3, 5].contains(&s.replicas), || {
                invalid(&key("replicas"), s.replicas, "1, 3 or 5")
            })?;
            check(s.max_bytes == -1 || s.max_bytes > 0, || {
                invalid(
                    &key("max_bytes"),
                    s.max_bytes,
                    "a size in bytes above zero, or -1 for no limit",
                )
            })?;
        }
        check([1, 3, 5].contains(&self.kv.replicas), || {
            invalid("kv.replicas", self.kv.replicas, "1, 3 or 5")
        })?;
        self.cluster.validate(self.kv.lease_ttl)?;
        check(
            !self.cluster.enabled || self.simulator.accounts == 0,
            || {
                invalid(
                    "cluster.enabled",
                    self.cluster.enabled,
                    "false while simulator.accounts is set: simulated accounts run on every node that simulates them, so they cannot be shared",
                )
            },
        )?;
        file_exists("security.master_key_file", &self.security.master_key_file)?;

        let sb = &self.switchboard;
        let url_ok = reqwest::Url::parse(&sb.url)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
        check(url_ok, || {
            invalid(
                "switchboard.url",
                &sb.url,
                "an http:// or https:// URL ending in /mcp (streamable HTTP) or /sse (legacy SSE)",
            )
        })?;
        file_exists("switchboard.auth_token_file", &sb.auth_token_file)?;
        file_exists("switchboard.ca_file", &sb.ca_file)?;
        check(
            !sb.auth_token.is_set() || sb.auth_token_file.as_os_str().is_empty(),
            || {
                invalid(
                    "switchboard.auth_token_file",
                    &sb.auth_token_file,
                    "set either switchboard.auth_token or switchboard.auth_token_file, not both \
                     (prefer the file: an inline token travels with every copy of the config)",
                )
            },
        )?;
        check(
            sb.ca_file.as_os_str().is_empty() || sb.url.starts_with("https://"),
            || {
                invalid(
                    "switchboard.ca_file",
                    &sb.ca_file,
                    "only with an https:// switchboard.url (with http:// there is no certificate \
                     to check): make the URL https:// or leave ca_file empty",
                )
            },
        )?;
        check(CHANNELS.contains(&sb.channel.as_str()), || {
            invalid(
                "switchboard.channel",
                &sb.channel,
                format!("one of {CHANNELS:?} (`telegram` for servers before mid-March 2026)"),
            )
        })?;
        check(sb.provider == "telegram", || {
            invalid("switchboard.provider", &sb.provider, "\"telegram\"")
        })?;
        check(
            sb.endpoint_identity.starts_with("telegram:user:") && sb.endpoint_identity.len() > 14,
            || {
                invalid(
                    "switchboard.endpoint_identity",
                    &sb.endpoint_identity,
                    "telegram:user:<id>, telegram:user:@<username>, or the template telegram:user:{account}",
                )
            },
        )?;
        check((1..=1024).contains(&sb.max_inflight), || {
            invalid(
                "switchboard.max_inflight",
                sb.max_inflight,
                "a whole number from 1 to 1024",
            )
        })?;
        let b = &sb.batches;
        check((1..=86_400).contains(&b.flush_interval_s), || {
            invalid(
                "switchboard.batches.flush_interval_s",
                b.flush_interval_s,
                "a whole number of seconds from 1 to 86400",
            )
        })?;
        check((1..=5_000).contains(&b.max_messages), || {
            invalid(
                "switchboard.batches.max_messages",
                b.max_messages,
                "a whole number from 1 to 5000",
            )
        })?;
        check(b.context_messages <= 1_000, || {
            invalid(
                "switchboard.batches.context_messages",
                b.context_messages,
                "a whole number from 0 to 1000",
            )
        })?;
        check(b.context_window_m <= 10_080, || {
            invalid(
                "switchboard.batches.context_window_m",
                b.context_window_m,
                "a whole number of minutes from 0 to 10080 (a week)",
            )
        })?;
        check(sb.request_timeout.0 >= Duration::from_secs(1), || {
            invalid(
                "switchboard.request_timeout",
                sb.request_timeout,
                "at least 1s",
            )
        })?;
        check(
            sb.heartbeat_interval.is_zero() || sb.heartbeat_interval.0 >= Duration::from_secs(10),
            || {
                invalid(
                    "switchboard.heartbeat_interval",
                    sb.heartbeat_interval,
                    "0s (off) or at least 10s",
                )
            },
        )?;

        let tg = &self.telegram;
        check(tg.api_id >= 0 && tg.api_id <= i64::from(i32::MAX), || {
            invalid(
                "telegram.api_id",
                tg.api_id,
                "the numeric api_id from my.telegram.org, or 0 for not set",
            )
        })?;
        let hash = tg.api_hash.expose();
        check(
            hash.is_empty() || (hash.len() == 32 && hash.chars().all(|c| c.is_ascii_hexdigit())),
            || {
                invalid(
                    "telegram.api_hash",
                    format!("<{} characters>", hash.len()),
                    "the 32 hex characters from my.telegram.org, or empty",
                )
            },
        )?;
        check(tg.backfill_window_h <= 8760, || {
            invalid(
                "telegram.backfill_window_h",
                tg.backfill_window_h,
                "hours from 0 to 8760 (one year)",
            )
        })?;
        check(tg.update_channel_capacity >= 100, || {
            invalid(
                "telegram.update_channel_capacity",
                tg.update_channel_capacity,
                "at least 100 (grammers drops updates when it is full)",
            )
        })?;
        check(!tg.backfill_pace.is_zero(), || {
            invalid(
                "telegram.backfill_pace",
                tg.backfill_pace,
                "a duration above zero (history requests must be paced)",
            )
        })?;
        check(tg.hole_check_interval.0 >= Duration::from_secs(10), || {
            invalid(
                "telegram.hole_check_interval",
                tg.hole_check_interval,
                "at least 10s (each check reads every dialog)",
            )
        })?;
        check(!tg.peer_flood_park.is_zero(), || {
            invalid(
                "telegram.peer_flood_park",
                tg.peer_flood_park,
                "a duration above 0 (PEER_FLOOD usually lasts hours)",
            )
        })?;

        self.dedupe.validate(&self.cluster, &self.streams.raw)?;

        let sup = &self.supervision;
        check(sup.max_restarts >= 1, || {
            invalid("supervision.max_restarts", sup.max_restarts, "at least 1")
        })?;
        check(!sup.window.is_zero(), || {
            invalid("supervision.window", sup.window, "a duration above zero")
        })?;
        check(!sup.backoff_initial.is_zero(), || {
            invalid(
                "supervision.backoff_initial",
                sup.backoff_initial,
                "a duration above zero",
            )
        })?;
        check(sup.backoff_max >= sup.backoff_initial, || {
            invalid(
                "supervision.backoff_max",
                sup.backoff_max,
                format!("at least backoff_initial ({})", sup.backoff_initial),
            )
        })?;
        check((0.0..=1.0).contains(&sup.jitter), || {
            invalid("supervision.jitter", sup.jitter, "a fraction from 0 to 1")
        })?;

        let verify = self.eventlog.verify_interval;
        check(
            verify.0.is_zero() || verify.0 >= Duration::from_secs(1),
            || invalid("eventlog.verify_interval", verify, "0 (off) or at least 1s"),
        )?;
        check(
            self.eventlog.anchor_interval.0 >= Duration::from_secs(1),
            || {
                invalid(
                    "eventlog.anchor_interval",
                    self.eventlog.anchor_interval,
                    "at least 1s",
                )
            },
        )?;
        check(valid_log_filter(&self.logging.level), || {
            invalid(
                "logging.level",
                &self.logging.level,
                "a level (error, warn, info, debug, trace) or a filter such as tgingest=debug,async_nats=warn",
            )
        })?;
        self.simulator.validate()?;
        self.policy.validate()?;
        check(self.telegram.login_attempts_per_day >= 1, || {
            invalid(
                "telegram.login_attempts_per_day",
                self.telegram.login_attempts_per_day,
                "at least 1 (Telegram locks an account after about five a day)",
            )
        })?;
        check(
            self.admin.listen.is_empty() || self.admin.listen.parse::<SocketAddr>().is_ok(),
            || {
                invalid(
                    "admin.listen",
                    &self.admin.listen,
                    "an address such as 127.0.0.1:9464, or empty for off",
                )
            },
        )?;
        self.admin.validate_principals()?;
        Ok(())
    }

    /// True when tgingest runs its own nats-server.
    pub fn embedded_nats(&self) -> bool {
        self.nats.url.trim().is_empty()
    }

    /// The node id, falling back to the host name.
    pub fn node_id(&self) -> String {
        if !self.node.id.is_empty() {
            return self.node.id.clone();
        }
        let host: String = hostname()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if host.is_empty() { "node".into() } else { host }
    }

    /// Directory of the chained event log.
    pub fn eventlog_dir(&self) -> PathBuf {
        self.node.data_dir.join("eventlog")
    }

    /// Store directory of the embedded nats-server.
    pub fn nats_store_dir(&self) -> PathBuf {
        self.node.data_dir.join("nats")
    }

    /// The config as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// A filter whose every directive is `level` or `target=level` (tracing would read a misspelt
/// level as a target name and quietly log nothing).
fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !filter.trim().is_empty()
        && filter.split(',').all(|d| match d.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(d),
        })
        && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        assert!(Config::default().embedded_nats());
    }

    #[test]
    fn the_shared_dedupe_window_is_checked_only_where_it_is_used() {
        let mut config = Config::default();
        config.streams.raw.duplicate_window = Dur::secs(3600);
        config
            .validate()
            .expect("a single node does not use dedupe.shared_ttl");
        config.cluster.enabled = true;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("dedupe.shared_ttl") && err.contains("streams.raw.duplicate_window"),
            "{err}"
        );
        config.streams.raw.duplicate_window = Dur::secs(10);
        config.dedupe.shared_ttl = Dur::secs(21);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("cluster.lease + cluster.lock_delay (22s)"),
            "{err}"
        );
        config.dedupe.shared_ttl = Dur::secs(15 * 60);
        config
            .validate()
            .expect("the defaults with cluster.enabled");
    }

    #[test]
    fn generic_env_names_reach_every_key() {
        let loaded = load(
            None,
            env(&[
                ("TGINGEST_STREAMS_RAW_MAX_AGE", "2h"),
                ("TGINGEST_SWITCHBOARD_SEND_SENDER_DETAILS", "yes"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.streams.raw.max_age, Dur::hours(2));
        assert!(loaded.config.switchboard.send_sender_details);
    }

    #[test]
    fn batch_mode_takes_the_butlers_connectors_buffer_and_history_variables() {
        let loaded = load(
            None,
            env(&[
                ("TGINGEST_SWITCHBOARD_MODE", "conversation_batches"),
                ("TELEGRAM_USER_FLUSH_INTERVAL_S", "600"),
                ("TELEGRAM_USER_BUFFER_MAX_MESSAGES", "50"),
                ("TELEGRAM_USER_HISTORY_MAX_MESSAGES", "20"),
                ("TELEGRAM_USER_HISTORY_TIME_WINDOW_M", "15"),
            ]),
        )
        .unwrap();
        let sb = &loaded.config.switchboard;
        assert_eq!(sb.mode, DeliveryMode::ConversationBatches);
        assert_eq!(
            sb.batches,
            BatchConfig {
                flush_interval_s: 600,
                max_messages: 50,
                context_messages: 20,
                context_window_m: 15,
            }
        );
        assert_eq!(
            Config::default().switchboard.mode,
            DeliveryMode::Messages,
            "messages stay the default"
        );
        let err = load(None, env(&[("TELEGRAM_USER_BUFFER_MAX_MESSAGES", "0")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("switchboard.batches.max_messages")
                && err.contains("TELEGRAM_USER_BUFFER_MAX_MESSAGES"),
            "{err}"
        );
        let err = load(None, env(&[("TGINGEST_SWITCHBOARD_MODE", "batches")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("conversation_batches"), "{err}");
    }

    #[test]
    fn butlers_names_override_the_generic_ones() {
        let loaded = load(
            None,
            env(&[
                ("CONNECTOR_MAX_INFLIGHT", "16"),
                ("TGINGEST_SWITCHBOARD_MAX_INFLIGHT", "4"),
                ("SWITCHBOARD_MCP_URL", "http://sb:40100/sse"),
                ("CONNECTOR_BACKFILL_WINDOW_H", "48"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.switchboard.max_inflight, 16);
        assert_eq!(loaded.config.switchboard.url, "http://sb:40100/sse");
        assert_eq!(loaded.config.telegram.backfill_window_h, 48);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let err = load(None, env(&[("CONNECTOR_MAX_INFLIGHT", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONNECTOR_MAX_INFLIGHT") && err.contains("whole number"),
            "{err}"
        );
        let err = load(None, env(&[("CONNECTOR_MAX_INFLIGHT", "0")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable CONNECTOR_MAX_INFLIGHT")
                && err.contains("1 to 1024"),
            "{err}"
        );
        let err = load(None, env(&[("TGINGEST_NATS_URLL", "nats://x:1")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TGINGEST_NATS_URLL") && err.contains("TGINGEST_NATS_URL"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let loaded = load(
            None,
            env(&[("TELEGRAM_API_HASH", "0123456789abcdef0123456789abcdef")]),
        )
        .unwrap();
        let printed = loaded.config.to_masked_toml();
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(printed.contains("api_hash = \"***\""), "{printed}");
        assert!(!format!("{:?}", loaded.config).contains("0123456789abcdef"));
    }
}
