//! One-for-one supervision for ractor actors: restart policy, intensity limit, backoff, escalation.
//!
//! Why this exists: ractor 0.16 links a child to its parent and reports the child's exit as a
//! [`SupervisionEvent`], but it has no restart strategy at all, and its default
//! `handle_supervisor_evt` simply stops the parent. A service that runs thousands of Telegram
//! accounts needs Erlang's one-for-one semantics instead:
//!
//! * only the child that exited is restarted, by re-running its [`ChildSpec`] start function with
//!   the supervisor's cell, so the new actor is linked again;
//! * restarts wait an exponential, jittered backoff, scheduled with `send_after` so the supervisor
//!   never sleeps and keeps serving its other children;
//! * a child that needs more than [`RestartPolicy::max_restarts`] restarts within
//!   [`RestartPolicy::window`] makes the supervisor stop all its children and fail with an
//!   [`Escalation`], so the supervisor's own parent sees `ActorFailed` and decides;
//! * terminal states must not crash-loop: a revoked or duplicated Telegram session can never
//!   recover by restarting (and restarting a duplicated auth key makes things worse). A child says
//!   so by failing with a [`PermanentFailure`] (directly or anywhere in its error's `source()`
//!   chain, in a handler or in `pre_start`); it is then parked as
//!   [`ChildState::FailedPermanently`] and never restarted.
//!
//! ractor facts this relies on (checked against 0.16.5): panics in handlers arrive as
//! `ActorFailed`; a failing `pre_start` makes the spawn return `SpawnErr::StartupFailed` and
//! produces no supervision event, so the start function's error is handled as a failure here;
//! `post_stop` is skipped after a panic or error.
//!
//! Child names appear in logs; metrics are labelled by [`ChildSpec::kind`] only. Use a keyed hash,
//! never a raw Telegram id, as the name of an account child.

mod policy;

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SpawnErr,
    SupervisionEvent, rpc::CallResult,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

pub use policy::{RestartLog, RestartPolicy, backoff_delay};

/// Counter of restarts performed, labelled `actor_kind`.
pub const METRIC_RESTARTS: &str = "tgingest_actor_restarts_total";
/// Counter of supervisors that gave up and escalated, labelled `supervisor`.
pub const METRIC_ESCALATIONS: &str = "tgingest_supervisor_escalations_total";
/// Counter of children parked after a [`PermanentFailure`], labelled `actor_kind`.
pub const METRIC_PERMANENT_FAILURES: &str = "tgingest_actor_permanent_failures_total";

/// How long a stopping or escalating supervisor waits for its children, unless told otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the convenience calls ([`status`], [`start_child`]) wait for the supervisor's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit reasons ractor uses for an actor that was killed rather than stopped.
const KILLED_REASONS: [&str; 2] = ["killed", "actor_task_cancelled"];

/// When a child that exited is restarted (Erlang's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Restart after any exit, clean stops included.
    Permanent,
    /// Restart only after a failure (error, panic, spawn error or kill); a clean stop is final.
    Transient,
    /// Never restart.
    Temporary,
}

/// A child's way of saying "do not restart me": return it (or an error whose `source()` chain
/// contains it) from any handler or from `pre_start`, e.g. for a revoked Telegram session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permanent failure: {reason}")]
pub struct PermanentFailure {
    /// Why the child can never run again, shown in the status and logs.
    pub reason: String,
}

impl PermanentFailure {
    /// A permanent failure with the given reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// Finds a `PermanentFailure` in `err` or anywhere in its `source()` chain.
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a PermanentFailure> {
        // Bounded walk: an error type with a cyclic `source()` must not hang the supervisor.
        let mut current = Some(err);
        for _ in 0..64 {
            let e = current?;
            if let Some(found) = e.downcast_ref::<PermanentFailure>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

/// The future a [`ChildSpec`] start function returns.
type StartFuture = BoxFuture<'static, Result<ActorCell, SpawnErr>>;
/// A [`ChildSpec`] start function, shared so that specs stay cheap to clone.
type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// How to start (and restart) one child, and when to restart it.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children; used in logs, status and [`SupervisorMsg::StopChild`].
    pub name: String,
    /// The metric label for this kind of child, e.g. `account` or `dedupe`.
    pub kind: String,
    /// When the child is restarted.
    pub restart: Restart,
    start: StartFn,
}

impl ChildSpec {
    /// A child started by `start`, which receives the supervisor's cell and must spawn the actor
    /// linked to it (e.g. `Actor::spawn_linked(.., supervisor)`), returning the new actor's cell.
    /// The supervisor awaits `start`, so keep the child's `pre_start` short (connect in handlers).
    pub fn new<F, Fut>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        start: F,
    ) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            name: name.into(),
            kind: kind.into(),
            restart,
            start: Arc::new(move |supervisor| Box::pin(start(supervisor))),
        }
    }

    /// A child that is a fresh, unregistered `handler` spawned linked with a clone of `args` on
    /// every (re)start.
    pub fn actor<A>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        handler: A,
        args: A::Arguments,
    ) -> Self
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        Self::new(name, kind, restart, move |supervisor| {
            let handler = handler.clone();
            let args = args.clone();
            async move {
                let (child, _handle) = Actor::spawn_linked(None, handler, args, supervisor).await?;
                Ok(child.get_cell())
            }
        })
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// What a child is doing, as seen by its supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChildState {
    /// Started and linked.
    Running,
    /// Exited; restart number `attempt` within the window is due in `delay_ms`.
    Restarting {
        /// Restart number within the current window (1-based).
        attempt: u32,
        /// The backoff chosen for this restart.
        delay_ms: u64,
    },
    /// Stopped on purpose or by a clean exit that its [`Restart`] type does not restart.
    Stopped,
    /// Failed with a [`PermanentFailure`]; never restarted.
    FailedPermanently {
        /// The [`PermanentFailure::reason`].
        reason: String,
    },
}

/// The observable state of one child, for tests and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    /// The child's [`ChildSpec::name`].
    pub name: String,
    /// The child's [`ChildSpec::kind`].
    pub kind: String,
    /// The child's [`Restart`] type.
    pub restart: Restart,
    /// What the child is doing now.
    pub state: ChildState,
    /// Restarts performed since the child was added (not limited to the window).
    pub restarts: u32,
    /// The most recent failure or exit reason, if any.
    pub last_error: Option<String>,
}

/// The observable state of a supervisor, for tests and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupervisorStatus {
    /// The supervisor's [`SupervisorArgs::name`].
    pub name: String,
    /// Every child ever added and not replaced, ordered by name.
    pub children: Vec<ChildStatus>,
}

impl SupervisorStatus {
    /// The status of the child called `name`, if there is one.
    pub fn child(&self, name: &str) -> Option<&ChildStatus> {
        self.children.iter().find(|child| child.name == name)
    }
}

/// The error a supervisor fails with when a child exceeds its restart intensity; its parent
/// receives it in `SupervisionEvent::ActorFailed` (downcast the error to read it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "supervisor {supervisor} escalates: child {child} already restarted {restarts} times within \
     {window:?}; last error: {last_error}"
)]
pub struct Escalation {
    /// The escalating supervisor's name.
    pub supervisor: String,
    /// The child that exceeded the limit.
    pub child: String,
    /// Restarts of that child within the window (the policy's `max_restarts`).
    pub restarts: u32,
    /// The policy's window.
    pub window: Duration,
    /// The exit that would have needed one restart too many.
    pub last_error: String,
}

/// Why [`SupervisorMsg::StartChild`] did not start a child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartChildError {
    /// A running or restarting child already has this name; nothing was changed.
    #[error("child {name} is already supervised")]
    AlreadySupervised {
        /// The name asked for.
        name: String,
    },
    /// The first start failed; the child is supervised and its restart is scheduled (or the
    /// supervisor escalated, if the policy allows no restart).
    #[error("child {name} failed to start: {error}")]
    StartFailed {
        /// The child's name.
        name: String,
        /// The spawn error.
        error: String,
    },
    /// The first start failed with a [`PermanentFailure`]; the child will not be restarted.
    #[error("child {name} failed permanently: {reason}")]
    FailedPermanently {
        /// The child's name.
        name: String,
        /// The [`PermanentFailure::reason`].
        reason: String,
    },
}

/// Why a convenience call to a supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorCallError {
    /// The supervisor's mailbox is closed: it has stopped.
    #[error("the supervisor is not running")]
    NotRunning,
    /// The supervisor did not answer in time.
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(Duration),
    /// The supervisor dropped the reply port without answering.
    #[error("the supervisor dropped the request")]
    NoReply,
    /// The supervisor answered that it did not start the child.
    #[error(transparent)]
    StartChild(#[from] StartChildError),
}

/// The one-for-one supervisor actor (stateless handler; spawn it with [`SupervisorArgs`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// What a [`Supervisor`] starts with.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// The supervisor's name in logs, status and the escalation metric.
    pub name: String,
    /// The restart policy applied to every child.
    pub policy: RestartPolicy,
    /// Children started, in order, before the supervisor accepts messages.
    pub children: Vec<ChildSpec>,
    /// How long a stopping or escalating supervisor waits for its children to stop gracefully
    /// before they are killed.
    pub shutdown_timeout: Duration,
}

impl SupervisorArgs {
    /// Arguments with the [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub fn new(name: impl Into<String>, policy: RestartPolicy, children: Vec<ChildSpec>) -> Self {
        Self {
            name: name.into(),
            policy,
            children,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Messages a [`Supervisor`] understands.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Adds and starts a child (replacing a stopped or permanently failed one of the same name)
    /// and answers with the outcome of its first start.
    StartChild(ChildSpec, RpcReplyPort<Result<(), StartChildError>>),
    /// Stops a running or restarting child on purpose (gracefully); it is not restarted and a
    /// pending restart is dropped.
    StopChild(String),
    /// Answers with the supervisor's observable state.
    Status(RpcReplyPort<SupervisorStatus>),
    /// Internal: a scheduled restart is due. Ignored unless `generation` is still current.
    RestartDue {
        /// The child to restart.
        name: String,
        /// The child's generation when the restart was scheduled.
        generation: u64,
    },
}

/// Asks a supervisor for its status, waiting at most [`CALL_TIMEOUT`].
pub async fn status(
    sup: &ActorRef<SupervisorMsg>,
) -> Result<SupervisorStatus, SupervisorCallError> {
    call(sup, SupervisorMsg::Status).await
}

/// Adds a child to a running supervisor and waits (at most [`CALL_TIMEOUT`]) for its first start.
pub async fn start_child(
    sup: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
) -> Result<(), SupervisorCallError> {
    call(sup, |reply| SupervisorMsg::StartChild(spec, reply)).await??;
    Ok(())
}

/// Stops the child called `name` on purpose (it is not restarted; a pending restart is dropped)
/// and returns once the supervisor has handled the request. Stopping an unknown or already
/// stopped child is not an error.
pub async fn stop_child(
    sup: &ActorRef<SupervisorMsg>,
    name: &str,
) -> Result<(), SupervisorCallError> {
    sup.cast(SupervisorMsg::StopChild(name.to_owned()))
        .map_err(|_| SupervisorCallError::NotRunning)?;
    // Mailboxes are FIFO: once the status answers, the stop has been handled.
    status(sup).await.map(|_| ())
}

async fn call<T: Send + 'static>(
    sup: &ActorRef<SupervisorMsg>,
    msg: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
) -> Result<T, SupervisorCallError> {
    match sup.call(msg, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(SupervisorCallError::Timeout(CALL_TIMEOUT)),
        Ok(CallResult::SenderError) => Err(SupervisorCallError::NoReply),
        Err(_) => Err(SupervisorCallError::NotRunning),
    }
}

/// One supervised child.
struct Child {
    spec: ChildSpec,
    /// The running actor, if any.
    actor: Option<ActorCell>,
    state: ChildState,
    restarts: u32,
    log: RestartLog,
    last_error: Option<String>,
    /// Bumped whenever a scheduled restart becomes stale (new schedule, stop, replacement).
    generation: u64,
}

impl Child {
    fn new(spec: ChildSpec, generation: u64) -> Self {
        Self {
            spec,
            actor: None,
            state: ChildState::Stopped,
            restarts: 0,
            log: RestartLog::new(),
            last_error: None,
            generation,
        }
    }

    fn is_active(&self) -> bool {
        matches!(
            self.state,
            ChildState::Running | ChildState::Restarting { .. }
        )
    }
}

/// How a child's run (or start attempt) ended.
enum Exit {
    /// Stopped cleanly, with ractor's exit reason.
    Clean(Option<String>),
    /// Error, panic, spawn error or kill.
    Failure(String),
    /// A [`PermanentFailure`] somewhere in the error chain.
    Permanent(String),
}

impl Exit {
    fn from_error(err: &(dyn Error + 'static)) -> Self {
        match PermanentFailure::find(err) {
            Some(permanent) => Exit::Permanent(permanent.reason.clone()),
            None => Exit::Failure(err.to_string()),
        }
    }

    fn from_stop(reason: Option<String>) -> Self {
        match reason {
            Some(reason) if KILLED_REASONS.contains(&reason.as_str()) => Exit::Failure(reason),
            other => Exit::Clean(other),
        }
    }
}

/// The result of one start attempt that did not escalate.
enum Started {
    Yes,
    /// Failed; the restart policy has been applied (restart scheduled, or stopped if temporary).
    Failed(String),
    /// Failed permanently; no restart.
    Permanently(String),
    /// The child is no longer known (nothing to start).
    Unknown,
}

/// The supervisor's state.
pub struct SupervisorState {
    name: String,
    policy: RestartPolicy,
    shutdown_timeout: Duration,
    children: BTreeMap<String, Child>,
    by_id: HashMap<ActorId, String>,
    /// Generations are unique across the supervisor, so a replaced child never accepts a
    /// `RestartDue` meant for its predecessor.
    next_generation: u64,
    rng: StdRng,
}

impl fmt::Debug for SupervisorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorState")
            .field("name", &self.name)
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

impl SupervisorState {
    fn new(args: &SupervisorArgs) -> Self {
        Self {
            name: args.name.clone(),
            policy: args.policy.clone(),
            shutdown_timeout: args.shutdown_timeout,
            children: BTreeMap::new(),
            by_id: HashMap::new(),
            next_generation: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    fn generation(&mut self) -> u64 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            name: self.name.clone(),
            children: self
                .children
                .values()
                .map(|child| ChildStatus {
                    name: child.spec.name.clone(),
                    kind: child.spec.kind.clone(),
                    restart: child.spec.restart,
                    state: child.state.clone(),
                    restarts: child.restarts,
                    last_error: child.last_error.clone(),
                })
                .collect(),
        }
    }

    /// Adds `spec` (replacing an inactive child of the same name) and starts it.
    async fn add_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<Result<(), StartChildError>, Escalation> {
        let name = spec.name.clone();
        if self.children.get(&name).is_some_and(Child::is_active) {
            return Ok(Err(StartChildError::AlreadySupervised { name }));
        }
        let generation = self.generation();
        self.children
            .insert(name.clone(), Child::new(spec, generation));
        Ok(match self.start(myself, &name).await? {
            Started::Yes | Started::Unknown => Ok(()),
            Started::Failed(error) => Err(StartChildError::StartFailed { name, error }),
            Started::Permanently(reason) => {
                Err(StartChildError::FailedPermanently { name, reason })
            }
        })
    }

    /// Runs the child's start function; a spawn error is handled like any other failure.
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
    ) -> Result<Started, Escalation> {
        let Some(start) = self.children.get(name).map(|c| c.spec.start.clone()) else {
            return Ok(Started::Unknown);
        };
        match start(myself.get_cell()).await {
            Ok(cell) => {
                let linked = cell
                    .try_get_supervisor()
                    .is_some_and(|sup| sup.get_id() == myself.get_id());
                if !linked && cell.get_status() < ActorStatus::Stopping {
                    tracing::warn!(
                        supervisor = %self.name,
                        child = %name,
                        "child was not spawned linked to its supervisor; its exits go unseen"
                    );
                }
                let Some(child) = self.children.get_mut(name) else {
                    cell.stop(Some("supervisor forgot the child".to_owned()));
                    return Ok(Started::Unknown);
                };
                self.by_id.insert(cell.get_id(), name.to_owned());
                child.actor = Some(cell);
                child.state = ChildState::Running;
                tracing::debug!(supervisor = %self.name, child = %name, "child started");
                Ok(Started::Yes)
            }
            Err(err) => {
                tracing::debug!(supervisor = %self.name, child = %name, error = %err,
                    "child failed to start");
                let (exit, started) = match PermanentFailure::find(&err) {
                    Some(permanent) => (
                        Exit::Permanent(permanent.reason.clone()),
                        Started::Permanently(permanent.reason.clone()),
                    ),
                    None => {
                        // ractor words every startup error as a panic; say what happened.
                        let error = match &err {
                            SpawnErr::StartupFailed(inner) => format!("start failed: {inner}"),
                            other => format!("start failed: {other}"),
                        };
                        (Exit::Failure(error.clone()), Started::Failed(error))
                    }
                };
                self.on_exit(myself, name, exit)?;
                Ok(started)
            }
        }
    }

    /// Forgets the actor `id` and returns its child's name, if it is a current child.
    fn take_child(&mut self, id: ActorId) -> Option<String> {
        let name = self.by_id.remove(&id)?;
        let child = self.children.get_mut(&name)?;
        if child.actor.as_ref().map(ActorCell::get_id) != Some(id) {
            return None;
        }
        child.actor = None;
        Some(name)
    }

    /// Applies the restart policy to a child that exited (or failed to start).
    fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
        exit: Exit,
    ) -> Result<(), Escalation> {
        let Some(child) = self.children.get_mut(name) else {
            return Ok(());
        };
        let kind = child.spec.kind.clone();
        let cause = match exit {
            Exit::Permanent(reason) => {
                tracing::warn!(
                    supervisor = %self.name,
                    child = %name,
                    kind = %kind,
                    reason = %reason,
                    "child failed permanently; it will not be restarted"
                );
                metrics::counter!(METRIC_PERMANENT_FAILURES, "actor_kind" => kind).increment(1);
                child.last_error = Some(reason.clone());
                child.state = ChildState::FailedPermanently { reason };
                return Ok(());
            }
            Exit::Failure(error) => {
                child.last_error = Some(error.clone());
                if child.spec.restart == Restart::Temporary {
                    tracing::info!(supervisor = %self.name, child = %name, error = %error,
                        "temporary child failed; not restarted");
                    child.state = ChildState::Stopped;
                    return Ok(());
                }
                error
            }
            Exit::Clean(reason) => {
                let cause = match reason {
                    Some(reason) => format!("stopped: {reason}"),
                    None => "stopped".to_owned(),
                };
                if child.spec.restart != Restart::Permanent {
                    tracing::info!(supervisor = %self.name, child = %name, reason = %cause,
                        "child stopped cleanly; not restarted");
                    child.state = ChildState::Stopped;
                    return Ok(());
                }
                cause
            }
        };
        self.schedule_restart(myself, name, cause)
    }

    /// Records a restart and schedules it after a backoff, or escalates if over the limit.
    fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
        cause: String,
    ) -> Result<(), Escalation> {
        let generation = self.generation();
        let Some(child) = self.children.get_mut(name) else {
            return Ok(());
        };
        let attempt = match child.log.try_record(Instant::now(), &self.policy) {
            Ok(attempt) => attempt,
            Err(restarts) => {
                return Err(Escalation {
                    supervisor: self.name.clone(),
                    child: name.to_owned(),
                    restarts,
                    window: self.policy.window,
                    last_error: cause,
                });
            }
        };
        let delay = backoff_delay(&self.policy, attempt, &mut self.rng);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        child.generation = generation;
        child.state = ChildState::Restarting { attempt, delay_ms };
        tracing::warn!(
            supervisor = %self.name,
            child = %name,
            kind = %child.spec.kind,
            attempt,
            delay_ms,
            error = %cause,
            "child exited; restart scheduled"
        );
        let name = name.to_owned();
        // The timer task just fails to send if the supervisor is gone by then.
        let _timer = myself.send_after(delay, move || SupervisorMsg::RestartDue {
            name,
            generation,
        });
        Ok(())
    }

    /// Performs a scheduled restart unless it became stale.
    async fn restart_due(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
        generation: u64,
    ) -> Result<(), Escalation> {
        let Some(child) = self.children.get_mut(name) else {
            return Ok(());
        };
        if child.generation != generation || !matches!(child.state, ChildState::Restarting { .. }) {
            tracing::debug!(supervisor = %self.name, child = %name, "stale restart ignored");
            return Ok(());
        }
        child.restarts = child.restarts.saturating_add(1);
        metrics::counter!(METRIC_RESTARTS, "actor_kind" => child.spec.kind.clone()).increment(1);
        tracing::info!(supervisor = %self.name, child = %name, restarts = child.restarts,
            "restarting child");
        self.start(myself, name).await.map(|_| ())
    }

    /// Stops a child on purpose; it stays in the status as `Stopped`.
    fn stop_child(&mut self, name: &str) {
        let generation = self.generation();
        let Some(child) = self
            .children
            .get_mut(name)
            .filter(|child| child.is_active())
        else {
            // Unknown, already stopped, or failed permanently (keep that reason visible).
            tracing::debug!(supervisor = %self.name, child = %name, "stop of inactive child ignored");
            return;
        };
        child.generation = generation;
        child.state = ChildState::Stopped;
        if let Some(cell) = child.actor.take() {
            self.by_id.remove(&cell.get_id());
            cell.stop(Some("stopped by supervisor".to_owned()));
        }
        tracing::info!(supervisor = %self.name, child = %name, "child stopped on request");
    }

    /// Stops every child gracefully, waiting at most the shutdown timeout (ractor kills the rest
    /// when the supervisor exits).
    async fn stop_all(&mut self, myself: &ActorRef<SupervisorMsg>, reason: String) {
        for child in self.children.values_mut() {
            child.generation = child.generation.wrapping_add(1);
            if child.actor.take().is_some() || matches!(child.state, ChildState::Restarting { .. })
            {
                child.state = ChildState::Stopped;
            }
        }
        self.by_id.clear();
        myself
            .stop_children_and_wait(Some(reason), Some(self.shutdown_timeout))
            .await;
    }

    /// Stops all children and turns `escalation` into the supervisor's failure.
    async fn escalate(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        escalation: Escalation,
    ) -> ActorProcessingErr {
        tracing::error!(
            supervisor = %escalation.supervisor,
            child = %escalation.child,
            restarts = escalation.restarts,
            window_ms = u64::try_from(escalation.window.as_millis()).unwrap_or(u64::MAX),
            error = %escalation.last_error,
            "restart intensity exceeded; stopping all children and escalating"
        );
        metrics::counter!(METRIC_ESCALATIONS, "supervisor" => self.name.clone()).increment(1);
        self.stop_all(myself, format!("supervisor {} escalated", self.name))
            .await;
        Box::new(escalation)
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState::new(&args);
        for spec in args.children {
            match state.add_child(&myself, spec).await {
                // A failed first start is already logged and scheduled for a restart.
                Ok(Ok(()))
                | Ok(Err(StartChildError::StartFailed { .. }))
                | Ok(Err(StartChildError::FailedPermanently { .. })) => {}
                Ok(Err(duplicate @ StartChildError::AlreadySupervised { .. })) => {
                    state
                        .stop_all(
                            &myself,
                            format!("supervisor {} failed to start", state.name),
                        )
                        .await;
                    return Err(Box::new(duplicate));
                }
                Err(escalation) => return Err(state.escalate(&myself, escalation).await),
            }
        }
        tracing::info!(
            supervisor = %state.name,
            children = state.children.len(),
            "supervisor started"
        );
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let result = match msg {
            SupervisorMsg::StartChild(spec, reply) => match state.add_child(&myself, spec).await {
                Ok(outcome) => {
                    // The caller may have given up waiting; that changes nothing here.
                    let _ = reply.send(outcome);
                    Ok(())
                }
                Err(escalation) => {
                    let _ = reply.send(Err(StartChildError::StartFailed {
                        name: escalation.child.clone(),
                        error: escalation.to_string(),
                    }));
                    Err(escalation)
                }
            },
            SupervisorMsg::StopChild(name) => {
                state.stop_child(&name);
                Ok(())
            }
            SupervisorMsg::Status(reply) => {
                let _ = reply.send(state.status());
                Ok(())
            }
            SupervisorMsg::RestartDue { name, generation } => {
                state.restart_due(&myself, &name, generation).await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(escalation) => Err(state.escalate(&myself, escalation).await),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, exit) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), Exit::from_stop(reason))
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell.get_id(), Exit::from_error(err.as_ref()))
            }
            // Started events need no action (the start function already returned); overriding
            // the default here is what keeps the supervisor alive when a child exits.
            _ => return Ok(()),
        };
        let Some(name) = state.take_child(id) else {
            // A child stopped on request, or one that was already replaced.
            return Ok(());
        };
        match state.on_exit(&myself, &name, exit) {
            Ok(()) => Ok(()),
            Err(escalation) => Err(state.escalate(&myself, escalation).await),
        }
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // ractor would kill the children once we are gone; stop them gracefully first so their
        // own post_stop runs.
        state
            .stop_all(&myself, format!("supervisor {} stopping", state.name))
            .await;
        tracing::info!(supervisor = %state.name, "supervisor stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that idles until stopped.
    #[derive(Clone)]
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn stop_child_stops_a_transient_child_for_good_and_it_can_be_started_again() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(10),
            jitter: 0.0,
        };
        let (sup, handle) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs::new("test", policy, Vec::new()),
        )
        .await
        .unwrap();
        let spec = || ChildSpec::actor("idle", "idle", Restart::Transient, Idle, ());
        start_child(&sup, spec()).await.unwrap();
        assert_eq!(
            status(&sup).await.unwrap().child("idle").unwrap().state,
            ChildState::Running
        );
        stop_child(&sup, "idle").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = status(&sup).await.unwrap();
        assert_eq!(after.child("idle").unwrap().state, ChildState::Stopped);
        assert_eq!(after.child("idle").unwrap().restarts, 0);
        // Unknown names are no error, and a stopped child may be started again.
        stop_child(&sup, "nobody").await.unwrap();
        start_child(&sup, spec()).await.unwrap();
        assert_eq!(
            status(&sup).await.unwrap().child("idle").unwrap().state,
            ChildState::Running
        );
        sup.stop(None);
        handle.await.unwrap();
        assert!(matches!(
            stop_child(&sup, "idle").await,
            Err(SupervisorCallError::NotRunning)
        ));
    }
}
