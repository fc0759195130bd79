//! Supervision: one-for-one restarts, intensity limits, backoff, escalation and permanent failures,
//! observed through the supervisor's `Status` and the metrics it emits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tgingest::supervision::{
    ChildSpec, ChildState, Escalation, PermanentFailure, Restart, RestartPolicy, StartChildError,
    Supervisor, SupervisorArgs, SupervisorCallError, SupervisorMsg, SupervisorStatus,
    backoff_delay, start_child, status,
};
use tokio::sync::mpsc;

/// Upper bound for any wait on observable state; generous because CI machines have 2 cores.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Metrics: one global DebuggingRecorder per test binary (the supervisor emits from tokio tasks on
// any thread). Its snapshots reset counters, so every snapshot is folded into running totals under
// one lock; tests use labels unique to themselves.

/// A metric identity: name and labels.
type MetricKey = (String, Vec<(String, String)>);

struct Metrics {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<MetricKey, u64>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        Metrics {
            snapshotter,
            totals: Mutex::new(HashMap::new()),
        }
    })
}

fn counter(name: &str, label: &str, value: &str) -> u64 {
    let m = metrics();
    let mut totals = m.totals.lock().expect("metrics lock");
    for (key, _, _, v) in m.snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = v {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            *totals
                .entry((key.key().name().to_owned(), labels))
                .or_default() += n;
        }
    }
    let wanted = (name.to_owned(), vec![(label.to_owned(), value.to_owned())]);
    totals.get(&wanted).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A test child whose behaviour on each start is scripted through a shared `Control`.

/// What the test child does on one start.
#[derive(Debug, Clone)]
enum Step {
    /// Start and keep running.
    Run,
    /// `pre_start` returns an error (a spawn failure).
    PreStartErr,
    /// `pre_start` returns a `PermanentFailure`.
    PreStartPermanent(&'static str),
    /// Start, then fail with an error.
    Fail,
    /// Start, then panic.
    Panic,
    /// Start, then fail with a `PermanentFailure`.
    Permanent(&'static str),
    /// Start, then fail with an error whose source is a `PermanentFailure`.
    WrappedPermanent(&'static str),
    /// Start, then stop cleanly.
    Stop,
}

#[derive(Default)]
struct Control {
    script: Mutex<VecDeque<Step>>,
    /// `pre_start` invocations.
    starts: AtomicU32,
    /// `post_stop` invocations (graceful stops only).
    post_stops: AtomicU32,
    current: Mutex<Option<ActorRef<TestMsg>>>,
    cells: Mutex<Vec<ActorCell>>,
}

impl Control {
    fn new(script: impl IntoIterator<Item = Step>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into_iter().collect()),
            ..Self::default()
        })
    }

    fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }

    fn current(&self) -> ActorRef<TestMsg> {
        self.current
            .lock()
            .expect("control lock")
            .clone()
            .expect("child started at least once")
    }

    fn cells(&self) -> Vec<ActorCell> {
        self.cells.lock().expect("control lock").clone()
    }
}

#[derive(Debug)]
enum TestMsg {
    Do(Step),
}

#[derive(Debug, thiserror::Error)]
#[error("session check failed")]
struct Wrapper(#[source] PermanentFailure);

#[derive(Clone)]
struct TestChild;

impl Actor for TestChild {
    type Msg = TestMsg;
    type State = Arc<Control>;
    type Arguments = Arc<Control>;

    async fn pre_start(
        &self,
        myself: ActorRef<TestMsg>,
        ctl: Arc<Control>,
    ) -> Result<Arc<Control>, ActorProcessingErr> {
        let n = ctl.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let step = ctl
            .script
            .lock()
            .expect("control lock")
            .pop_front()
            .unwrap_or(Step::Run);
        match step {
            Step::PreStartErr => return Err(format!("pre_start failure #{n}").into()),
            Step::PreStartPermanent(reason) => return Err(Box::new(PermanentFailure::new(reason))),
            Step::Run => {}
            other => myself.cast(TestMsg::Do(other))?,
        }
        *ctl.current.lock().expect("control lock") = Some(myself.clone());
        ctl.cells
            .lock()
            .expect("control lock")
            .push(myself.get_cell());
        Ok(ctl)
    }

    async fn handle(
        &self,
        myself: ActorRef<TestMsg>,
        TestMsg::Do(step): TestMsg,
        _ctl: &mut Arc<Control>,
    ) -> Result<(), ActorProcessingErr> {
        match step {
            Step::Fail => Err("scripted failure".into()),
            Step::Panic => panic!("scripted panic"),
            Step::Permanent(reason) => Err(Box::new(PermanentFailure::new(reason))),
            Step::WrappedPermanent(reason) => Err(Box::new(Wrapper(PermanentFailure::new(reason)))),
            Step::Stop => {
                myself.stop(Some("done".to_owned()));
                Ok(())
            }
            Step::Run | Step::PreStartErr | Step::PreStartPermanent(_) => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TestMsg>,
        ctl: &mut Arc<Control>,
    ) -> Result<(), ActorProcessingErr> {
        ctl.post_stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn child(name: &str, kind: &str, restart: Restart, ctl: &Arc<Control>) -> ChildSpec {
    ChildSpec::actor(name, kind, restart, TestChild, Arc::clone(ctl))
}

/// A child whose spec is written with `ChildSpec::new` and an explicit `spawn_linked`.
fn child_via_closure(name: &str, kind: &str, restart: Restart, ctl: &Arc<Control>) -> ChildSpec {
    let ctl = Arc::clone(ctl);
    ChildSpec::new(name, kind, restart, move |supervisor| {
        let ctl = Arc::clone(&ctl);
        async move {
            let (actor, _) = Actor::spawn_linked(None, TestChild, ctl, supervisor).await?;
            Ok(actor.get_cell())
        }
    })
}

// ---------------------------------------------------------------------------------------------
// A parent that records what happens to the supervisor.

#[derive(Debug)]
enum ParentSaw {
    Failed(Option<Escalation>, String),
    Terminated(Option<String>),
}

struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = mpsc::UnboundedSender<ParentSaw>;
    type Arguments = mpsc::UnboundedSender<ParentSaw>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        events: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        evt: SupervisionEvent,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let saw = match evt {
            SupervisionEvent::ActorFailed(_, err) => {
                ParentSaw::Failed(err.downcast_ref::<Escalation>().cloned(), err.to_string())
            }
            SupervisionEvent::ActorTerminated(_, _, reason) => ParentSaw::Terminated(reason),
            _ => return Ok(()),
        };
        let _ = events.send(saw);
        Ok(())
    }
}

struct Tree {
    parent: ActorRef<()>,
    sup: ActorRef<SupervisorMsg>,
    events: mpsc::UnboundedReceiver<ParentSaw>,
}

impl Tree {
    async fn next_event(&mut self) -> ParentSaw {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("the parent saw the supervisor exit in time")
            .expect("parent alive")
    }
}

async fn spawn_tree(name: &str, policy: RestartPolicy, children: Vec<ChildSpec>) -> Tree {
    metrics();
    let (tx, events) = mpsc::unbounded_channel();
    let (parent, _) = Actor::spawn(None, Parent, tx).await.expect("parent spawns");
    let (sup, _) = Actor::spawn_linked(
        None,
        Supervisor,
        SupervisorArgs::new(name, policy, children),
        parent.get_cell(),
    )
    .await
    .expect("supervisor spawns");
    Tree {
        parent,
        sup,
        events,
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // Killing the parent takes the whole tree down, even when an assertion failed.
        self.parent.kill();
    }
}

fn policy(max_restarts: u32, window: Duration, backoff_ms: u64) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window,
        backoff_initial: Duration::from_millis(backoff_ms),
        backoff_max: Duration::from_millis(backoff_ms * 4),
        jitter: 0.2,
    }
}

/// Polls the supervisor's status until `pred` holds, failing after `DEADLINE`.
async fn wait_for(
    sup: &ActorRef<SupervisorMsg>,
    what: &str,
    pred: impl Fn(&SupervisorStatus) -> bool,
) -> SupervisorStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let st = status(sup).await.expect("supervisor answers");
        if pred(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state_of(st: &SupervisorStatus, name: &str) -> ChildState {
    st.child(name).expect("child is listed").state.clone()
}

fn is_running_after(st: &SupervisorStatus, name: &str, restarts: u32) -> bool {
    st.child(name)
        .is_some_and(|c| c.state == ChildState::Running && c.restarts == restarts)
}

async fn wait_all_stopped(cells: &[ActorCell]) {
    let deadline = Instant::now() + DEADLINE;
    while cells.iter().any(|c| c.get_status() != ActorStatus::Stopped) {
        assert!(Instant::now() < deadline, "children still alive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_failing_within_the_limit_is_restarted_each_time_and_ends_running() {
    let ctl = Control::new([Step::Fail, Step::Fail, Step::Fail]);
    let tree = spawn_tree(
        "sup_within_limit",
        policy(5, Duration::from_secs(60), 10),
        vec![child(
            "flaky",
            "kind_within_limit",
            Restart::Transient,
            &ctl,
        )],
    )
    .await;

    let st = wait_for(&tree.sup, "3 restarts, then running", |st| {
        is_running_after(st, "flaky", 3)
    })
    .await;

    assert_eq!(ctl.starts(), 4);
    let flaky = st.child("flaky").expect("listed");
    assert_eq!(flaky.last_error.as_deref(), Some("scripted failure"));
    assert_eq!(
        counter(
            "tgingest_actor_restarts_total",
            "actor_kind",
            "kind_within_limit"
        ),
        3
    );
    // The supervisor lists the child as running once it is spawned; ractor's own status can
    // still say Starting for a moment on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctl.current().get_status() != ActorStatus::Running {
        assert!(Instant::now() < deadline, "the restarted child never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_child_is_restarted_like_a_failing_one() {
    let ctl = Control::new([Step::Panic, Step::Panic]);
    let tree = spawn_tree(
        "sup_panic",
        policy(5, Duration::from_secs(60), 10),
        vec![child_via_closure(
            "panicky",
            "kind_panic",
            Restart::Transient,
            &ctl,
        )],
    )
    .await;

    let st = wait_for(&tree.sup, "2 restarts, then running", |st| {
        is_running_after(st, "panicky", 2)
    })
    .await;

    assert_eq!(ctl.starts(), 3);
    let last_error = st.child("panicky").and_then(|c| c.last_error.clone());
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("scripted panic")),
        "{last_error:?}"
    );
    assert_eq!(
        counter("tgingest_actor_restarts_total", "actor_kind", "kind_panic"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_transient_child_is_restarted() {
    let ctl = Control::new([]);
    let tree = spawn_tree(
        "sup_killed",
        policy(5, Duration::from_secs(60), 10),
        vec![child("victim", "kind_killed", Restart::Transient, &ctl)],
    )
    .await;
    wait_for(&tree.sup, "running", |st| is_running_after(st, "victim", 0)).await;

    ctl.current().kill();

    wait_for(&tree.sup, "restarted after kill", |st| {
        is_running_after(st, "victim", 1)
    })
    .await;
    assert_eq!(ctl.starts(), 2);
}

// ---------------------------------------------------------------------------------------------
// Escalation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_the_limit_escalate_to_the_parent_and_stop_all_children() {
    let flaky = Control::new(std::iter::repeat_n(Step::Fail, 10));
    let steady = Control::new([]);
    let mut tree = spawn_tree(
        "sup_escalates",
        policy(2, Duration::from_secs(60), 10),
        vec![
            child(
                "steady",
                "kind_escalate_steady",
                Restart::Permanent,
                &steady,
            ),
            child("flaky", "kind_escalate_flaky", Restart::Permanent, &flaky),
        ],
    )
    .await;

    match tree.next_event().await {
        ParentSaw::Failed(Some(escalation), text) => {
            assert!(text.contains("child flaky"), "{text}");
            assert_eq!(escalation.supervisor, "sup_escalates");
            assert_eq!(escalation.child, "flaky");
            assert_eq!(escalation.restarts, 2);
            assert_eq!(escalation.last_error, "scripted failure");
        }
        other => panic!("expected an Escalation, the parent saw {other:?}"),
    }

    // 1 start + 2 restarts, then the third failure escalates instead of restarting.
    assert_eq!(flaky.starts(), 3);
    assert_eq!(steady.starts(), 1);
    let mut cells = steady.cells();
    cells.extend(flaky.cells());
    wait_all_stopped(&cells).await;
    // The sibling was stopped gracefully, not killed.
    assert_eq!(steady.post_stops.load(Ordering::SeqCst), 1);
    wait_all_stopped(&[tree.sup.get_cell()]).await;
    assert!(matches!(
        status(&tree.sup).await,
        Err(SupervisorCallError::NotRunning)
    ));
    assert_eq!(
        counter(
            "tgingest_supervisor_escalations_total",
            "supervisor",
            "sup_escalates"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_spaced_wider_than_the_window_never_escalate() {
    let window = Duration::from_millis(100);
    let ctl = Control::new([]);
    let mut tree = spawn_tree(
        "sup_window",
        policy(1, window, 10),
        vec![child("slow_flaky", "kind_window", Restart::Transient, &ctl)],
    )
    .await;

    for restarts in 0..4 {
        wait_for(&tree.sup, "running", |st| {
            is_running_after(st, "slow_flaky", restarts)
        })
        .await;
        // The gap is the property under test: the previous restart must leave the window.
        tokio::time::sleep(window + Duration::from_millis(50)).await;
        ctl.current()
            .cast(TestMsg::Do(Step::Fail))
            .expect("child alive");
    }

    wait_for(&tree.sup, "4 restarts, then running", |st| {
        is_running_after(st, "slow_flaky", 4)
    })
    .await;
    assert!(
        tree.events.try_recv().is_err(),
        "the supervisor must not have exited"
    );
}

// ---------------------------------------------------------------------------------------------
// Permanent failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_never_restarted_and_its_sibling_keeps_running() {
    let revoked = Control::new([Step::Permanent("AUTH_KEY_UNREGISTERED")]);
    let sibling = Control::new([]);
    let tree = spawn_tree(
        "sup_permanent",
        policy(5, Duration::from_secs(60), 10),
        vec![
            child("revoked", "kind_permanent", Restart::Permanent, &revoked),
            child(
                "sibling",
                "kind_permanent_sibling",
                Restart::Permanent,
                &sibling,
            ),
        ],
    )
    .await;

    wait_for(&tree.sup, "revoked parked", |st| {
        matches!(
            state_of(st, "revoked"),
            ChildState::FailedPermanently { .. }
        )
    })
    .await;
    // Several backoff periods (max 40 ms): a restart would have happened by now.
    tokio::time::sleep(Duration::from_millis(250)).await;

    let st = status(&tree.sup).await.expect("supervisor answers");
    let parked = st.child("revoked").expect("listed");
    assert_eq!(
        parked.state,
        ChildState::FailedPermanently {
            reason: "AUTH_KEY_UNREGISTERED".to_owned()
        }
    );
    assert_eq!(parked.restarts, 0);
    assert_eq!(revoked.starts(), 1);
    assert!(is_running_after(&st, "sibling", 0));
    assert_eq!(sibling.current().get_status(), ActorStatus::Running);
    assert_eq!(
        counter(
            "tgingest_actor_permanent_failures_total",
            "actor_kind",
            "kind_permanent"
        ),
        1
    );
    assert_eq!(
        counter(
            "tgingest_actor_restarts_total",
            "actor_kind",
            "kind_permanent"
        ),
        0
    );
    // Stopping a parked child on purpose keeps the reason visible (mailbox order: stop, status).
    tree.sup
        .cast(SupervisorMsg::StopChild("revoked".to_owned()))
        .expect("supervisor alive");
    let st = status(&tree.sup).await.expect("supervisor answers");
    assert!(matches!(
        state_of(&st, "revoked"),
        ChildState::FailedPermanently { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_found_in_the_error_source_chain_and_in_pre_start() {
    let wrapped = Control::new([Step::WrappedPermanent("SESSION_REVOKED")]);
    let at_start = Control::new([Step::PreStartPermanent("AUTH_KEY_DUPLICATED")]);
    let tree = spawn_tree(
        "sup_permanent_chain",
        policy(0, Duration::from_secs(60), 10),
        vec![
            child(
                "wrapped",
                "kind_permanent_chain",
                Restart::Permanent,
                &wrapped,
            ),
            child(
                "at_start",
                "kind_permanent_chain",
                Restart::Permanent,
                &at_start,
            ),
        ],
    )
    .await;

    // max_restarts = 0: any restart attempt would escalate, so reaching this state proves none.
    let st = wait_for(&tree.sup, "both parked", |st| {
        matches!(
            state_of(st, "wrapped"),
            ChildState::FailedPermanently { .. }
        ) && matches!(
            state_of(st, "at_start"),
            ChildState::FailedPermanently { .. }
        )
    })
    .await;
    assert_eq!(
        state_of(&st, "wrapped"),
        ChildState::FailedPermanently {
            reason: "SESSION_REVOKED".to_owned()
        }
    );
    assert_eq!(
        state_of(&st, "at_start"),
        ChildState::FailedPermanently {
            reason: "AUTH_KEY_DUPLICATED".to_owned()
        }
    );
    assert_eq!(wrapped.starts() + at_start.starts(), 2);
    assert_eq!(tree.sup.get_status(), ActorStatus::Running);
}

// ---------------------------------------------------------------------------------------------
// Spawn failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failure_is_retried_until_the_child_starts() {
    let ctl = Control::new([Step::PreStartErr, Step::PreStartErr]);
    let tree = spawn_tree(
        "sup_spawn_retry",
        policy(5, Duration::from_secs(60), 10),
        vec![child("late", "kind_spawn_retry", Restart::Transient, &ctl)],
    )
    .await;

    let st = wait_for(&tree.sup, "running after 2 retries", |st| {
        is_running_after(st, "late", 2)
    })
    .await;
    assert_eq!(ctl.starts(), 3);
    let last_error = st.child("late").and_then(|c| c.last_error.clone());
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("pre_start failure #2")),
        "{last_error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_count_toward_the_limit_and_escalate() {
    let ctl = Control::new(std::iter::repeat_n(Step::PreStartErr, 10));
    let mut tree = spawn_tree(
        "sup_spawn_escalates",
        policy(2, Duration::from_secs(60), 10),
        vec![child(
            "broken",
            "kind_spawn_escalates",
            Restart::Transient,
            &ctl,
        )],
    )
    .await;

    match tree.next_event().await {
        ParentSaw::Failed(Some(escalation), _) => {
            assert_eq!(escalation.child, "broken");
            assert_eq!(escalation.restarts, 2);
            assert!(escalation.last_error.contains("pre_start failure #3"));
        }
        other => panic!("expected an Escalation, the parent saw {other:?}"),
    }
    assert_eq!(ctl.starts(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_spawn_failure_without_restart_budget_fails_the_supervisor_spawn() {
    metrics();
    let ctl = Control::new([Step::PreStartErr]);
    let args = SupervisorArgs::new(
        "sup_no_budget",
        policy(0, Duration::from_secs(60), 10),
        vec![child("broken", "kind_no_budget", Restart::Permanent, &ctl)],
    );

    let err = match Actor::spawn(None, Supervisor, args).await {
        Ok(_) => panic!("the supervisor must not start"),
        Err(ractor::SpawnErr::StartupFailed(err)) => err,
        Err(other) => panic!("unexpected spawn error {other}"),
    };
    let escalation = err
        .downcast_ref::<Escalation>()
        .expect("the startup error is the Escalation");
    assert_eq!(escalation.child, "broken");
    assert_eq!(escalation.restarts, 0);
}

// ---------------------------------------------------------------------------------------------
// Clean stops

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_child_that_stops_cleanly_is_not_restarted() {
    let ctl = Control::new([Step::Stop]);
    let tree = spawn_tree(
        "sup_transient_stop",
        policy(5, Duration::from_secs(60), 10),
        vec![child(
            "done",
            "kind_transient_stop",
            Restart::Transient,
            &ctl,
        )],
    )
    .await;

    wait_for(&tree.sup, "stopped", |st| {
        state_of(st, "done") == ChildState::Stopped
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let st = status(&tree.sup).await.expect("supervisor answers");
    assert_eq!(state_of(&st, "done"), ChildState::Stopped);
    assert_eq!(st.child("done").map(|c| c.restarts), Some(0));
    assert_eq!(ctl.starts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_child_that_stops_cleanly_is_restarted() {
    let ctl = Control::new([Step::Stop]);
    let tree = spawn_tree(
        "sup_permanent_stop",
        policy(5, Duration::from_secs(60), 10),
        vec![child(
            "always",
            "kind_permanent_stop",
            Restart::Permanent,
            &ctl,
        )],
    )
    .await;

    wait_for(&tree.sup, "restarted once", |st| {
        is_running_after(st, "always", 1)
    })
    .await;
    assert_eq!(ctl.starts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_child_is_never_restarted_even_after_a_failure() {
    let ctl = Control::new([Step::Fail]);
    let tree = spawn_tree(
        "sup_temporary",
        policy(5, Duration::from_secs(60), 10),
        vec![child("once", "kind_temporary", Restart::Temporary, &ctl)],
    )
    .await;

    let st = wait_for(&tree.sup, "stopped", |st| {
        state_of(st, "once") == ChildState::Stopped
    })
    .await;
    assert_eq!(
        st.child("once")
            .and_then(|c| c.last_error.clone())
            .as_deref(),
        Some("scripted failure")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ctl.starts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_child_stops_it_for_good_and_drops_a_pending_restart() {
    let running = Control::new([]);
    // Fails on each of its first starts; with a 100 ms backoff it spends most of its time in
    // Restarting, where we stop it.
    let restarting = Control::new(std::iter::repeat_n(Step::Fail, 4));
    let tree = spawn_tree(
        "sup_stop_child",
        policy(5, Duration::from_secs(60), 100),
        vec![
            child("running", "kind_stop_child", Restart::Permanent, &running),
            child(
                "restarting",
                "kind_stop_child",
                Restart::Permanent,
                &restarting,
            ),
        ],
    )
    .await;
    wait_for(&tree.sup, "one running, one restarting", |st| {
        state_of(st, "running") == ChildState::Running
            && matches!(state_of(st, "restarting"), ChildState::Restarting { .. })
    })
    .await;

    for name in ["running", "restarting"] {
        tree.sup
            .cast(SupervisorMsg::StopChild(name.to_owned()))
            .expect("supervisor alive");
    }
    wait_for(&tree.sup, "both stopped", |st| {
        state_of(st, "running") == ChildState::Stopped
            && state_of(st, "restarting") == ChildState::Stopped
    })
    .await;
    let mut cells = running.cells();
    cells.extend(restarting.cells());
    wait_all_stopped(&cells).await;
    let starts_when_stopped = restarting.starts();

    // Past any pending restart's backoff (at most 400 ms): it must have been dropped.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = status(&tree.sup).await.expect("supervisor answers");
    assert_eq!(state_of(&st, "running"), ChildState::Stopped);
    assert_eq!(state_of(&st, "restarting"), ChildState::Stopped);
    assert_eq!(restarting.starts(), starts_when_stopped);
    assert_eq!(running.starts(), 1);
    assert_eq!(running.post_stops.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_supervisor_stops_its_children_gracefully() {
    let a = Control::new([]);
    let b = Control::new([]);
    let mut tree = spawn_tree(
        "sup_clean_stop",
        policy(5, Duration::from_secs(60), 10),
        vec![
            child("a", "kind_clean_stop", Restart::Permanent, &a),
            child("b", "kind_clean_stop", Restart::Permanent, &b),
        ],
    )
    .await;
    wait_for(&tree.sup, "both running", |st| {
        is_running_after(st, "a", 0) && is_running_after(st, "b", 0)
    })
    .await;

    tree.sup
        .stop_and_wait(None, Some(DEADLINE))
        .await
        .expect("supervisor stops");
    let saw = tree.next_event().await;
    assert!(matches!(saw, ParentSaw::Terminated(None)), "{saw:?}");

    let mut cells = a.cells();
    cells.extend(b.cells());
    wait_all_stopped(&cells).await;
    assert_eq!(a.post_stops.load(Ordering::SeqCst), 1);
    assert_eq!(b.post_stops.load(Ordering::SeqCst), 1);
    assert_eq!((a.starts(), b.starts()), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Dynamic children and nesting

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_child_supervises_a_new_child_and_rejects_a_duplicate_name() {
    let ctl = Control::new([Step::Fail]);
    let tree = spawn_tree(
        "sup_dynamic",
        policy(5, Duration::from_secs(60), 10),
        Vec::new(),
    )
    .await;

    start_child(
        &tree.sup,
        child("dyn", "kind_dynamic", Restart::Transient, &ctl),
    )
    .await
    .expect("first start succeeds");
    wait_for(&tree.sup, "restarted once", |st| {
        is_running_after(st, "dyn", 1)
    })
    .await;

    let duplicate = start_child(
        &tree.sup,
        child("dyn", "kind_dynamic", Restart::Transient, &ctl),
    );
    assert!(matches!(
        duplicate.await,
        Err(SupervisorCallError::StartChild(
            StartChildError::AlreadySupervised { .. }
        ))
    ));
    assert_eq!(ctl.starts(), 2);

    // A stopped child's name can be reused.
    tree.sup
        .cast(SupervisorMsg::StopChild("dyn".to_owned()))
        .expect("supervisor alive");
    wait_for(&tree.sup, "stopped", |st| {
        state_of(st, "dyn") == ChildState::Stopped
    })
    .await;
    start_child(
        &tree.sup,
        child("dyn", "kind_dynamic", Restart::Transient, &ctl),
    )
    .await
    .expect("restart under the same name");
    let st = wait_for(&tree.sup, "running again", |st| {
        is_running_after(st, "dyn", 0)
    })
    .await;
    assert_eq!(st.children.len(), 1);
    assert_eq!(ctl.starts(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_child_reports_a_failed_first_start_and_still_retries_it() {
    let ctl = Control::new([Step::PreStartErr]);
    let tree = spawn_tree(
        "sup_dynamic_fail",
        policy(5, Duration::from_secs(60), 10),
        Vec::new(),
    )
    .await;

    let first = start_child(
        &tree.sup,
        child("late", "kind_dynamic_fail", Restart::Transient, &ctl),
    )
    .await;
    match first {
        Err(SupervisorCallError::StartChild(StartChildError::StartFailed { name, error })) => {
            assert_eq!(name, "late");
            assert!(error.contains("pre_start failure #1"), "{error}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    wait_for(&tree.sup, "running after one retry", |st| {
        is_running_after(st, "late", 1)
    })
    .await;
    assert_eq!(ctl.starts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalating_supervisor_is_restarted_by_its_parent_supervisor() {
    // The inner supervisor allows no restart; its child fails once, so it escalates once.
    let ctl = Control::new([Step::Fail]);
    let inner = SupervisorArgs::new(
        "inner",
        policy(0, Duration::from_secs(60), 10),
        vec![child(
            "worker",
            "kind_nested_worker",
            Restart::Permanent,
            &ctl,
        )],
    );
    let tree = spawn_tree(
        "sup_outer",
        policy(3, Duration::from_secs(60), 10),
        vec![ChildSpec::actor(
            "inner",
            "kind_nested_supervisor",
            Restart::Permanent,
            Supervisor,
            inner,
        )],
    )
    .await;

    let st = wait_for(&tree.sup, "inner restarted once", |st| {
        is_running_after(st, "inner", 1)
    })
    .await;
    let last_error = st.child("inner").and_then(|c| c.last_error.clone());
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("inner escalates")),
        "{last_error:?}"
    );
    assert_eq!(ctl.starts(), 2);
    assert_eq!(
        counter(
            "tgingest_supervisor_escalations_total",
            "supervisor",
            "inner"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_serializes_for_the_admin_api() {
    let ctl = Control::new([Step::Permanent("AUTH_KEY_UNREGISTERED")]);
    let tree = spawn_tree(
        "sup_json",
        policy(5, Duration::from_secs(60), 10),
        vec![child("acc", "kind_json", Restart::Permanent, &ctl)],
    )
    .await;
    let st = wait_for(&tree.sup, "parked", |st| {
        matches!(state_of(st, "acc"), ChildState::FailedPermanently { .. })
    })
    .await;

    let json = serde_json::to_value(&st).expect("serializes");
    assert_eq!(json["name"], "sup_json");
    assert_eq!(json["children"][0]["state"]["state"], "failed_permanently");
    assert_eq!(
        json["children"][0]["state"]["reason"],
        "AUTH_KEY_UNREGISTERED"
    );
    assert_eq!(json["children"][0]["restart"], "permanent");
}

// ---------------------------------------------------------------------------------------------
// backoff_delay

fn backoff(initial_ms: u64, max_ms: u64, jitter: f64) -> RestartPolicy {
    RestartPolicy {
        backoff_initial: Duration::from_millis(initial_ms),
        backoff_max: Duration::from_millis(max_ms),
        jitter,
        ..RestartPolicy::default()
    }
}

#[test]
fn backoff_doubles_with_each_attempt() {
    let p = backoff(100, 60_000, 0.0);
    let mut rng = StdRng::seed_from_u64(1);
    let delays: Vec<u64> = (1..=5)
        .map(|attempt| backoff_delay(&p, attempt, &mut rng).as_millis() as u64)
        .collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600]);
    // Attempt 0 is treated as the first attempt.
    assert_eq!(backoff_delay(&p, 0, &mut rng), Duration::from_millis(100));
}

#[test]
fn backoff_is_capped_at_the_maximum_even_for_huge_attempts() {
    let p = backoff(1000, 600_000, 0.0);
    let mut rng = StdRng::seed_from_u64(2);
    assert_eq!(backoff_delay(&p, 10, &mut rng), Duration::from_secs(512));
    for attempt in [11, 20, 32, 33, 64, u32::MAX] {
        assert_eq!(
            backoff_delay(&p, attempt, &mut rng),
            Duration::from_secs(600)
        );
    }
    let default = RestartPolicy::default();
    assert!(backoff_delay(&default, u32::MAX, &mut rng) <= default.backoff_max);
}

#[test]
fn backoff_jitter_stays_within_bounds_over_many_draws() {
    let p = backoff(1000, 5000, 0.2);
    let mut rng = StdRng::seed_from_u64(3);
    // Attempts 1..=3 are below the cap (1 s, 2 s, 4 s).
    for attempt in 1..=3 {
        let base = 1000.0 * f64::from(1u32 << (attempt - 1));
        let (low, high) = (base * 0.8, (base * 1.2).min(5000.0));
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let d = backoff_delay(&p, attempt, &mut rng).as_secs_f64() * 1000.0;
            assert!(
                d >= low - 1e-6 && d <= high + 1e-6,
                "attempt {attempt}: {d} ms"
            );
            seen_low |= d < base;
            seen_high |= d > base;
        }
        assert!(
            seen_low && seen_high,
            "jitter goes both ways at attempt {attempt}"
        );
    }
    // At the cap jitter only shortens the delay.
    for _ in 0..2000 {
        let d = backoff_delay(&p, 10, &mut rng);
        assert!(d >= Duration::from_millis(4000) && d <= Duration::from_millis(5000));
    }
}

#[test]
fn backoff_survives_nonsense_policies() {
    let mut rng = StdRng::seed_from_u64(4);
    for jitter in [f64::NAN, f64::INFINITY, -1.0, 7.0] {
        let p = backoff(100, 1000, jitter);
        let d = backoff_delay(&p, 3, &mut rng);
        assert!(d <= Duration::from_millis(1000), "jitter {jitter}: {d:?}");
    }
    // Initial above max: the max wins.
    assert_eq!(
        backoff_delay(&backoff(5000, 1000, 0.0), 1, &mut rng),
        Duration::from_millis(1000)
    );
    let huge = RestartPolicy {
        backoff_initial: Duration::MAX,
        backoff_max: Duration::MAX,
        jitter: 1.0,
        ..RestartPolicy::default()
    };
    let _ = backoff_delay(&huge, 40, &mut rng);
}
