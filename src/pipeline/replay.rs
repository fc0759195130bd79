//! Operator replay: re-delivers what `TG_CLEAN` holds to Switchboard, for a Switchboard that lost
//! data (restored from an older backup, a new instance).
//!
//! A replay reads `TG_CLEAN` with its own ordered (ephemeral) consumer, never the durable
//! `switchboard` consumer of the delivery actor, from a start point (the beginning, a time, or a
//! stream sequence), optionally for one account (subject `tg.clean.<account>`), and stops by
//! itself at the stream's last sequence when it started, or at `until`. Each event goes out with
//! the delivery actor's envelope and retry rules ([`ingest_until_settled`]); Switchboard's
//! idempotency key makes re-sending safe: what it still has comes back as a duplicate. Permanent
//! rejections are dead-lettered as delivery does. One replay runs at a time; it can be cancelled.
//!
//! In batch mode (`switchboard.mode = "conversation_batches"`) new messages reached Switchboard
//! inside recorded batches, so a replay sends from `TG_CLEAN` only what went one by one (edits,
//! deletions, service events), then re-sends every batch `TG_BATCH` recorded in the same bounds
//! (by time; a `from_sequence` start is turned into that `TG_CLEAN` message's time; `account`
//! selects `tg.batch.<account>.>`), unchanged: same members, same context, same flush time, same
//! key, so Switchboard answers the batches it still has as duplicates. A message is never
//! re-sent on its own in batch mode: that would store it a second time under another key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::PipelineStats;
use super::batcher::batchable;
use super::delivery::DeliverySource;
use super::delivery::{
    DeliveryArgs, ParkError, Progress, Settled, ingest_until_settled, park_rejected,
};
use crate::bus::{Bus, STREAM_BATCH, STREAM_CLEAN, batch_subject, clean_subject};
use crate::config::{DeliveryMode, SwitchboardConfig};
use crate::event::Event;
use crate::eventlog::{AuditEntry, Durability, EventLog};
use crate::switchboard::batch::{Batch, batch_envelope};
use crate::switchboard::{McpClient, envelope};

pub use crate::observability::METRIC_REPLAYED;

/// Consecutive read errors after which a replay gives up (the ordered consumer recovers from
/// single ones by itself).
const MAX_READ_ERRORS: u32 = 10;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// The oldest event `TG_CLEAN` still holds.
    Beginning,
    /// The first event stored at or after this time.
    Since(jiff::Timestamp),
    /// This stream sequence.
    Sequence(u64),
}

/// A replay as asked for (see [`ReplayRequest::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    pub start: ReplayStart,
    /// Stop before the first event stored after this time.
    pub until: Option<jiff::Timestamp>,
    /// Only this account's events.
    pub account: Option<String>,
}

impl ReplayRequest {
    /// Checks what needs no bus: a sequence from 1, `until` after `since`, `since` not in the
    /// future, an account id that is one subject token.
    pub fn validate(&self, now: jiff::Timestamp) -> Result<(), ReplayError> {
        if self.start == ReplayStart::Sequence(0) {
            return Err(ReplayError::bad(
                "from_sequence",
                "from_sequence 0: stream sequences start at 1".into(),
            ));
        }
        if let ReplayStart::Since(since) = self.start {
            if since > now {
                return Err(ReplayError::bad(
                    "since",
                    format!("since ({since}) is in the future (now: {now})"),
                ));
            }
            if let Some(until) = self.until
                && until < since
            {
                return Err(ReplayError::bad(
                    "until",
                    format!("until ({until}) is before since ({since})"),
                ));
            }
        }
        if let Some(account) = &self.account
            && (account.is_empty()
                || account
                    .chars()
                    .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace()))
        {
            return Err(ReplayError::bad(
                "account",
                format!("account {account:?} is not an account id (no dots, wildcards or spaces)"),
            ));
        }
        Ok(())
    }
}

/// The state of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    Running,
    Finished,
    Cancelled,
    Failed,
}

/// Progress of one replay, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayProgress {
    pub id: String,
    pub state: ReplayState,
    pub since: Option<String>,
    pub from_sequence: Option<u64>,
    pub until: Option<String>,
    pub account: Option<String>,
    /// Stream sequence of the first event read (none until one was).
    pub first_sequence: Option<u64>,
    /// The end point: `TG_CLEAN`'s last sequence when the replay started.
    pub last_sequence: u64,
    /// Stream sequence of the newest event read.
    pub position: Option<u64>,
    /// Events read from `TG_CLEAN` (in batch mode, also batches read from `TG_BATCH`). In batch
    /// mode the new messages among the events are not sent (their batches are).
    pub scanned: u64,
    /// Stored again by Switchboard.
    pub accepted: u64,
    /// Switchboard still had them.
    pub duplicates: u64,
    /// Refused for good (dead-lettered).
    pub rejected: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The admin API principal that started it (every audit record of the replay names it).
    #[serde(default)]
    pub started_by: String,
    /// The principal that cancelled it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

/// Why a replay could not be started, found or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error(
        "replay {id} is still running; wait for it to finish or cancel it (DELETE /v1/replays/{id}) first"
    )]
    Busy { id: String },
    #[error("no replay with id {id}")]
    NotFound { id: String },
    #[error("replay {id} is already {state:?}; only a running replay can be cancelled")]
    NotRunning { id: String, state: ReplayState },
    #[error("cannot read TG_CLEAN: {0}")]
    Bus(String),
    #[error("cannot set up the Switchboard client: {0}")]
    Switchboard(String),
    #[error("cannot audit the replay: {0}")]
    Audit(String),
}

impl ReplayError {
    fn bad(field: &'static str, message: String) -> ReplayError {
        ReplayError::BadRequest { field, message }
    }

    /// The HTTP status that fits.
    pub fn http_status(&self) -> u16 {
        match self {
            ReplayError::BadRequest { .. } => 400,
            ReplayError::Busy { .. } | ReplayError::NotRunning { .. } => 409,
            ReplayError::NotFound { .. } => 404,
            ReplayError::Bus(_) => 503,
            ReplayError::Switchboard(_) | ReplayError::Audit(_) => 500,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ReplayError::BadRequest { .. } => "bad_request",
            ReplayError::Busy { .. } => "replay_running",
            ReplayError::NotFound { .. } => "not_found",
            ReplayError::NotRunning { .. } => "replay_not_running",
            ReplayError::Bus(_) => "nats_unavailable",
            ReplayError::Switchboard(_) => "switchboard_client",
            ReplayError::Audit(_) => "eventlog",
        }
    }
}

/// What replays are built from (the node's parts).
pub struct ReplayParts {
    pub bus: Bus,
    pub eventlog: Arc<EventLog>,
    pub switchboard: SwitchboardConfig,
    pub node_id: String,
}

struct Job {
    progress: Mutex<ReplayProgress>,
    cancel: watch::Sender<bool>,
}

impl Job {
    fn progress(&self) -> MutexGuard<'_, ReplayProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's replays: starts them one at a time, and keeps every replay's progress.
pub struct Replays {
    parts: ReplayParts,
    jobs: tokio::sync::Mutex<Vec<Arc<Job>>>,
}

impl Replays {
    pub fn new(parts: ReplayParts) -> Replays {
        Replays {
            parts,
            jobs: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Checks `request` against `TG_CLEAN`, records `replay.started`, and starts the replay.
    /// `principal` is the admin API caller that asked for it.
    pub async fn start(
        &self,
        request: ReplayRequest,
        principal: &str,
    ) -> Result<ReplayProgress, ReplayError> {
        request.validate(jiff::Timestamp::now())?;
        let mut jobs = self.jobs.lock().await;
        if let Some(running) = jobs
            .iter()
            .find(|j| j.progress().state == ReplayState::Running)
        {
            return Err(ReplayError::Busy {
                id: running.progress().id.clone(),
            });
        }
        let mut stream = self
            .parts
            .bus
            .js
            .get_stream(STREAM_CLEAN)
            .await
            .map_err(|e| ReplayError::Bus(e.to_string()))?;
        let state = stream
            .info()
            .await
            .map_err(|e| ReplayError::Bus(e.to_string()))?
            .state
            .clone();
        if let ReplayStart::Sequence(n) = request.start
            && n > state.last_sequence
        {
            return Err(ReplayError::bad(
                "from_sequence",
                format!(
                    "from_sequence {n} is past TG_CLEAN's last sequence {}",
                    state.last_sequence
                ),
            ));
        }
        if let Some(account) = &request.account {
            let mut subjects = stream
                .info_with_subjects(clean_subject(account))
                .await
                .map_err(|e| ReplayError::Bus(e.to_string()))?;
            if subjects.next().await.is_none() {
                return Err(ReplayError::bad(
                    "account",
                    format!("account {account} has no events in TG_CLEAN"),
                ));
            }
        }
        let batches = match self.parts.switchboard.mode {
            DeliveryMode::ConversationBatches => {
                Some(batch_source(&self.parts.bus, &stream, &request).await?)
            }
            DeliveryMode::Messages => None,
        };
        let client = McpClient::new(&self.parts.switchboard)
            .map_err(|e| ReplayError::Switchboard(e.to_string()))?;

        let id = uuid::Uuid::now_v7().to_string();
        let (since, from_sequence) = match request.start {
            ReplayStart::Beginning => (None, None),
            ReplayStart::Since(t) => (Some(t.to_string()), None),
            ReplayStart::Sequence(n) => (None, Some(n)),
        };
        let progress = ReplayProgress {
            id: id.clone(),
            state: ReplayState::Running,
            since,
            from_sequence,
            until: request.until.map(|t| t.to_string()),
            account: request.account.clone(),
            first_sequence: None,
            last_sequence: state.last_sequence,
            position: None,
            scanned: 0,
            accepted: 0,
            duplicates: 0,
            rejected: 0,
            started_at: jiff::Timestamp::now().to_string(),
            finished_at: None,
            error: None,
            started_by: principal.to_string(),
            cancelled_by: None,
        };
        self.audit("replay.started", &progress).await?;
        let (cancel, cancelled) = watch::channel(false);
        let job = Arc::new(Job {
            progress: Mutex::new(progress.clone()),
            cancel,
        });
        jobs.push(job.clone());
        let run = Run {
            job,
            delivery: DeliveryArgs {
                bus: self.parts.bus.clone(),
                client,
                config: self.parts.switchboard.clone(),
                eventlog: self.parts.eventlog.clone(),
                stats: Arc::new(PipelineStats::default()),
                node_id: self.parts.node_id.clone(),
                source: match self.parts.switchboard.mode {
                    DeliveryMode::ConversationBatches => DeliverySource::EventsBesideBatches,
                    DeliveryMode::Messages => DeliverySource::Events,
                },
            },
            actor: format!("{}/replay", self.parts.node_id),
            request,
            end: state.last_sequence,
            batches,
        };
        tokio::spawn(run.run(stream, cancelled));
        tracing::info!(%id, last_sequence = state.last_sequence, "replay started");
        Ok(progress)
    }

    /// One replay's progress.
    pub async fn get(&self, id: &str) -> Result<ReplayProgress, ReplayError> {
        let jobs = self.jobs.lock().await;
        jobs.iter()
            .map(|j| j.progress().clone())
            .find(|p| p.id == id)
            .ok_or_else(|| ReplayError::NotFound { id: id.to_string() })
    }

    /// Every replay since the node started, oldest first.
    pub async fn list(&self) -> Vec<ReplayProgress> {
        let jobs = self.jobs.lock().await;
        jobs.iter().map(|j| j.progress().clone()).collect()
    }

    /// Asks a running replay to stop; it ends as `cancelled` (calls in flight are abandoned:
    /// Switchboard's idempotency key makes a later replay of them safe).
    pub async fn cancel(&self, id: &str, principal: &str) -> Result<ReplayProgress, ReplayError> {
        let jobs = self.jobs.lock().await;
        let job = jobs
            .iter()
            .find(|j| j.progress().id == id)
            .ok_or_else(|| ReplayError::NotFound { id: id.to_string() })?;
        let mut progress = job.progress().clone();
        if progress.state != ReplayState::Running {
            return Err(ReplayError::NotRunning {
                id: id.to_string(),
                state: progress.state,
            });
        }
        job.progress().cancelled_by = Some(principal.to_string());
        progress.cancelled_by = Some(principal.to_string());
        let _ = job.cancel.send(true);
        Ok(progress)
    }

    /// Cancels every running replay and waits (at most 10 s) until each has ended and audited it:
    /// the node is stopping.
    pub async fn stop_all(&self) {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().await.clone();
        for job in &jobs {
            let _ = job.cancel.send(true);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while jobs
            .iter()
            .any(|j| j.progress().state == ReplayState::Running)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn audit(&self, action: &str, p: &ReplayProgress) -> Result<(), ReplayError> {
        audit(&self.parts.eventlog, &self.parts.node_id, action, p)
            .await
            .map_err(ReplayError::Audit)
    }
}

/// Records a replay's parameters and counts (never event content).
async fn audit(
    eventlog: &EventLog,
    node_id: &str,
    action: &str,
    p: &ReplayProgress,
) -> Result<(), String> {
    let mut details = BTreeMap::from([
        ("replay_id".to_string(), p.id.clone()),
        ("state".to_string(), format!("{:?}", p.state).to_lowercase()),
        ("last_sequence".to_string(), p.last_sequence.to_string()),
        ("scanned".to_string(), p.scanned.to_string()),
        ("accepted".to_string(), p.accepted.to_string()),
        ("duplicates".to_string(), p.duplicates.to_string()),
        ("rejected".to_string(), p.rejected.to_string()),
        ("principal".to_string(), p.started_by.clone()),
    ]);
    for (key, value) in [
        ("since", p.since.clone()),
        ("from_sequence", p.from_sequence.map(|n| n.to_string())),
        ("until", p.until.clone()),
        ("error", p.error.clone()),
        ("cancelled_by", p.cancelled_by.clone()),
    ] {
        if let Some(v) = value {
            details.insert(key.to_string(), v);
        }
    }
    let entry = AuditEntry {
        action: action.into(),
        actor: format!("{node_id}/replay"),
        account_id: p.account.clone(),
        details,
    };
    eventlog
        .audit(&entry, Durability::Flushed)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One replay under way.
struct Run {
    job: Arc<Job>,
    delivery: DeliveryArgs,
    actor: String,
    request: ReplayRequest,
    /// The stream's last sequence when the replay started.
    end: u64,
    /// Batch mode: the recorded batches to re-send after `TG_CLEAN`'s singles.
    batches: Option<BatchSource>,
}

/// Where a batch-mode replay reads the recorded batches.
struct BatchSource {
    stream: jetstream::stream::Stream,
    /// `TG_BATCH`'s last sequence when the replay started.
    end: u64,
    deliver_policy: DeliverPolicy,
}

/// What one scan reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scanned {
    /// Events from `TG_CLEAN`.
    Events,
    /// Recorded batches from `TG_BATCH`.
    Batches,
}

/// The `TG_BATCH` side of a batch-mode replay of `request` (`clean` is `TG_CLEAN`).
async fn batch_source(
    bus: &Bus,
    clean: &jetstream::stream::Stream,
    request: &ReplayRequest,
) -> Result<BatchSource, ReplayError> {
    let bus_error = |e: &dyn std::fmt::Display| ReplayError::Bus(e.to_string());
    let mut stream = bus
        .js
        .get_stream(STREAM_BATCH)
        .await
        .map_err(|e| bus_error(&e))?;
    let end = stream
        .info()
        .await
        .map_err(|e| bus_error(&e))?
        .state
        .last_sequence;
    let deliver_policy = match request.start {
        ReplayStart::Beginning => DeliverPolicy::All,
        ReplayStart::Since(t) => DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(t.as_nanosecond())
                .map_err(|e| ReplayError::bad("since", format!("since {t}: {e}")))?,
        },
        // The batches recorded from that event's time on (a batch holds messages up to one
        // flush interval older than itself: it may re-send a little more, never less).
        ReplayStart::Sequence(n) => match clean.get_raw_message(n).await {
            Ok(m) => DeliverPolicy::ByStartTime { start_time: m.time },
            Err(_) => DeliverPolicy::All,
        },
    };
    Ok(BatchSource {
        stream,
        end,
        deliver_policy,
    })
}

impl Run {
    async fn run(self, stream: jetstream::stream::Stream, mut cancelled: watch::Receiver<bool>) {
        let both = async {
            let clean = self.start_policy()?;
            self.scan(&stream, Scanned::Events, clean, self.end).await?;
            if let Some(b) = &self.batches {
                self.scan(&b.stream, Scanned::Batches, b.deliver_policy, b.end)
                    .await?;
            }
            Ok::<(), String>(())
        };
        let outcome = tokio::select! {
            r = both => r.map(|()| ReplayState::Finished),
            _ = cancelled.wait_for(|c| *c) => Ok(ReplayState::Cancelled),
        };
        // The final state shows only once it is audited, so a node stopping after
        // `stop_all` has the record.
        let mut progress = self.job.progress().clone();
        match outcome {
            Ok(state) => progress.state = state,
            Err(e) => {
                progress.state = ReplayState::Failed;
                progress.error = Some(e);
            }
        }
        progress.finished_at = Some(jiff::Timestamp::now().to_string());
        tracing::info!(id = %progress.id, state = ?progress.state, scanned = progress.scanned,
            accepted = progress.accepted, duplicates = progress.duplicates,
            rejected = progress.rejected, "replay ended");
        let d = &self.delivery;
        if let Err(e) = audit(&d.eventlog, &d.node_id, "replay.finished", &progress).await {
            tracing::error!(error = %e, "cannot audit the end of a replay");
        }
        *self.job.progress() = progress;
    }

    /// Where the `TG_CLEAN` scan starts.
    fn start_policy(&self) -> Result<DeliverPolicy, String> {
        Ok(match self.request.start {
            ReplayStart::Beginning => DeliverPolicy::All,
            ReplayStart::Since(t) => DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(t.as_nanosecond())
                    .map_err(|e| format!("since {t} is not a time JetStream takes: {e}"))?,
            },
            ReplayStart::Sequence(n) => DeliverPolicy::ByStartSequence { start_sequence: n },
        })
    }

    /// Reads `stream` (`TG_CLEAN` or `TG_BATCH`) from `deliver_policy` up to `end` and settles
    /// every event or batch, at most `switchboard.max_inflight` at once.
    async fn scan(
        &self,
        stream: &jetstream::stream::Stream,
        what: Scanned,
        deliver_policy: DeliverPolicy,
        end: u64,
    ) -> Result<(), String> {
        let account = self.request.account.as_deref();
        let (name, filter_subject) = match what {
            Scanned::Events => (STREAM_CLEAN, account.map(clean_subject)),
            Scanned::Batches => (STREAM_BATCH, account.map(|a| batch_subject(a, ">"))),
        };
        let range = Range {
            name,
            filter_subject: filter_subject.unwrap_or_default(),
            deliver_policy,
            end,
            inflight: self.delivery.config.max_inflight as usize,
        };
        scan_range(stream, &range, &mut ReplayStep { run: self, what }).await
    }
}

/// A replay's handling of each message it reads.
struct ReplayStep<'a> {
    run: &'a Run,
    what: Scanned,
}

impl RangeStep for ReplayStep<'_> {
    async fn step(&mut self, message: jetstream::Message, at: Position) -> Scan {
        let run = self.run;
        if run
            .request
            .until
            .is_some_and(|u| at.published_ns > u.as_nanosecond())
        {
            return Scan::Stop;
        }
        {
            let mut p = run.job.progress();
            if self.what == Scanned::Events {
                p.first_sequence.get_or_insert(at.sequence);
                p.position = Some(at.sequence);
            }
            p.scanned += 1;
        }
        let (job, delivery, actor) = (run.job.clone(), run.delivery.clone(), run.actor.clone());
        let what = self.what;
        Scan::Run(Box::pin(async move {
            match what {
                Scanned::Events => replay_one(&job, &delivery, &actor, message).await,
                Scanned::Batches => replay_batch(&job, &delivery, &actor, message).await,
            }
        }))
    }
}

/// A stretch of a stream to read in order, by sequence.
pub(crate) struct Range<'a> {
    /// The stream's name (for errors).
    pub name: &'a str,
    /// Only this subject ("": all).
    pub filter_subject: String,
    pub deliver_policy: DeliverPolicy,
    /// The last sequence to read (inclusive); 0 reads nothing.
    pub end: u64,
    /// How many messages' work may run at once.
    pub inflight: usize,
}

/// Where a message read by [`scan_range`] sits in its stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Position {
    pub sequence: u64,
    /// When the stream stored it (Unix nanoseconds).
    pub published_ns: i128,
}

/// What [`scan_range`] does with one message.
pub(crate) enum Scan {
    /// Run this for it, beside up to `inflight - 1` others.
    Run(futures::future::BoxFuture<'static, ()>),
    /// Nothing to do for it.
    Skip,
    /// Stop reading before it.
    Stop,
}

/// Decides, in stream order, what a range scan does with each message.
pub(crate) trait RangeStep {
    async fn step(&mut self, message: jetstream::Message, at: Position) -> Scan;
}

/// Reads `range` of `stream` with an ordered (ephemeral) consumer, never a durable one, and runs
/// the work `steps` makes of each message, at most `range.inflight` at once; returns when all of
/// it has run.
pub(crate) async fn scan_range(
    stream: &jetstream::stream::Stream,
    range: &Range<'_>,
    steps: &mut impl RangeStep,
) -> Result<(), String> {
    let name = range.name;
    if range.end == 0 {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            name: None,
            filter_subject: range.filter_subject.clone(),
            deliver_policy: range.deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create an ordered consumer on {name}: {e}"))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    let slots = Arc::new(Semaphore::new(range.inflight.max(1)));
    let mut tasks = JoinSet::new();
    let mut errors = 0;
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        while tasks.try_join_next().is_some() {}
        let message = match messages.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                errors += 1;
                tracing::warn!(error = %e, stream = name, "reading a range failed; retrying");
                if errors >= MAX_READ_ERRORS {
                    return Err(format!(
                        "reading {name} failed {errors} times in a row: {e}"
                    ));
                }
                continue;
            }
            None => return Err(format!("the ordered consumer on {name} ended")),
        };
        errors = 0;
        let info = message.info().map_err(|e| e.to_string())?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let published_ns = info.published.unix_timestamp_nanos();
        if sequence > range.end {
            break;
        }
        let at = Position {
            sequence,
            published_ns,
        };
        match steps.step(message, at).await {
            Scan::Run(work) => {
                tasks.spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
            Scan::Skip => {}
            Scan::Stop => break,
        }
        if sequence >= range.end || pending == 0 {
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Sends `envelope` until Switchboard settles it (no progress acks: an ordered consumer has none).
pub(crate) async fn settle(args: &DeliveryArgs, envelope: &serde_json::Value) -> Settled {
    let progress = Progress {
        every: args.bus.progress_every(),
        send: || async {},
    };
    ingest_until_settled(&args.client, envelope, &args.stats, progress).await
}

/// Settles one event with Switchboard and counts the result (in batch mode, a new message is
/// left to its batch).
async fn replay_one(job: &Job, args: &DeliveryArgs, actor: &str, message: jetstream::Message) {
    let event: Result<Event, _> = crate::codec::decode(&message.payload);
    let settled = match &event {
        Ok(event) if args.source == DeliverySource::EventsBesideBatches && batchable(event) => {
            return;
        }
        Ok(event) => settle(args, &envelope(event, &args.config)).await,
        Err(e) => Settled::Rejected(format!("undecodable TG_CLEAN message: {e}")),
    };
    count(job, args, actor, &message, event.as_ref().ok(), settled).await;
}

/// Re-sends one recorded batch, unchanged, and counts the result.
async fn replay_batch(job: &Job, args: &DeliveryArgs, actor: &str, message: jetstream::Message) {
    let settled = match serde_json::from_slice::<Batch>(&message.payload) {
        Ok(batch) => settle(args, &batch_envelope(&batch, &args.config)).await,
        Err(e) => Settled::Rejected(format!("undecodable TG_BATCH record: {e}")),
    };
    count(job, args, actor, &message, None, settled).await;
}

/// Counts how Switchboard settled one replayed message (dead-lettering a rejection).
async fn count(
    job: &Job,
    args: &DeliveryArgs,
    actor: &str,
    message: &jetstream::Message,
    event: Option<&Event>,
    settled: Settled,
) {
    let result = park_if_rejected(args, actor, message, event, settled).await;
    metrics::counter!(METRIC_REPLAYED, "result" => result).increment(1);
    let mut p = job.progress();
    match result {
        "accepted" => p.accepted += 1,
        "duplicate" => p.duplicates += 1,
        _ => p.rejected += 1,
    }
}

/// Dead-letters a re-sent `message` Switchboard rejected, as delivery does (by `actor`); how
/// it was settled: `accepted`, `duplicate` or `rejected`.
pub(crate) async fn park_if_rejected(
    args: &DeliveryArgs,
    actor: &str,
    message: &jetstream::Message,
    event: Option<&Event>,
    settled: Settled,
) -> &'static str {
    match settled {
        Settled::Accepted { duplicate: false } => "accepted",
        Settled::Accepted { duplicate: true } => "duplicate",
        Settled::Rejected(reason) => {
            match park_rejected(args, actor, message, event, &reason).await {
                Ok(()) => {}
                Err(ParkError::Publish(e) | ParkError::Audit(e)) => {
                    tracing::error!(error = %e, %actor, "cannot dead-letter a rejected re-send");
                }
            }
            "rejected"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn requests_with_until_before_since_or_since_in_the_future_are_refused() {
        let now = ts("2026-11-21T12:00:00Z");
        let mut r = ReplayRequest {
            start: ReplayStart::Since(ts("2026-11-21T11:00:00Z")),
            until: Some(ts("2026-11-21T10:00:00Z")),
            account: None,
        };
        assert!(matches!(
            r.validate(now),
            Err(ReplayError::BadRequest { field: "until", .. })
        ));
        r.until = None;
        assert!(r.validate(now).is_ok());
        r.start = ReplayStart::Since(ts("2026-11-21T13:00:00Z"));
        assert!(matches!(
            r.validate(now),
            Err(ReplayError::BadRequest { field: "since", .. })
        ));
        r.start = ReplayStart::Beginning;
        r.account = Some("1.>".into());
        assert!(matches!(
            r.validate(now),
            Err(ReplayError::BadRequest {
                field: "account",
                ..
            })
        ));
    }
}
