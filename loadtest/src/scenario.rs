//! A scenario file (`loadtest/scenarios/<name>.toml`): what to run, how hard, and for how long.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tgingest::config::Dur;
use tgingest::telegram::simulated::SimulatorConfig;

/// Where the events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// tgingest's own simulated accounts (`[simulator]`, passed as `TGINGEST_SIMULATOR_*`).
    Simulated,
    /// Real grammers clients (in the tgingest process) against the in-process fake Telegram DC
    /// (`[simulator]`'s `accounts` and `rate` only; see `fakedc.rs`).
    FakeDc,
    /// Re-feeding a recorded `TG_RAW` capture at its pace (not available; replay from
    /// `TG_CLEAN` is `[replay] enabled = true` with a simulated source).
    Replay,
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; the report folder and the SVG title use it.
    pub name: String,
    /// One line on what the scenario shows.
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_source")]
    pub source: SourceKind,
    /// How long the sources produce (sets `simulator.messages_per_account = rate × duration`).
    pub duration: Dur,
    /// Left out of the throughput and latency figures (start-up, first connections).
    #[serde(default)]
    pub warmup: Dur,
    /// How long to wait for the last deliveries after the sources have ended.
    #[serde(default = "default_drain")]
    pub drain_timeout: Dur,
    /// How often streams, consumers and the process are polled.
    #[serde(default = "default_sample")]
    pub sample_interval: Dur,
    /// The simulated world (tgingest's `[simulator]` section; `messages_per_account` is computed).
    #[serde(default)]
    pub simulator: SimulatorConfig,
    #[serde(default)]
    pub switchboard: SwitchboardLoad,
    #[serde(default)]
    pub ceiling: CeilingPlan,
    /// How the floor (the reference pipeline of `floor.rs`) is measured before the scenario.
    #[serde(default)]
    pub floor: FloorPlan,
    /// The idle window of `many-idle-accounts` (see `idle.rs`); off by default.
    #[serde(default)]
    pub idle: IdlePlan,
    /// Step mode's parameters (used with `--step`, or when `step.enabled`).
    #[serde(default)]
    pub step: StepPlan,
    /// After the drain: forget everything in the fake Switchboard and replay `TG_CLEAN`.
    #[serde(default)]
    pub replay: ReplayPlan,
    /// Extra `TGINGEST_*` variables for the tgingest process (tuning knobs).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// `cluster-failover`: several nodes on a three-server NATS cluster (see `failover.rs`).
    #[serde(default)]
    pub cluster: ClusterPlan,
    /// `crash-soak`: seeded kill -9s of a single node, then of a node of the cluster (see
    /// `soak.rs`).
    #[serde(default)]
    pub crash: CrashPlan,
}

/// Which ownership timings the nodes run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timings {
    /// `tgingest::cluster::local::SHORT_TIMINGS` (lease 3 s, renewal 300 ms, fence 1.5 s).
    Short,
    /// The shipped defaults (lease 20 s, renewal 3 s, fence 10 s).
    Default,
}

/// The `cluster-failover` run: throughput with 1, 2 and 3 nodes, then kill -9s and graceful
/// hand-offs of the nodes in turn while the accounts produce.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterPlan {
    pub enabled: bool,
    /// tgingest nodes (the NATS cluster always has three servers).
    pub nodes: usize,
    pub timings: Timings,
    /// Messages/s per account offered in the 1-, 2- and 3-node throughput phases (0 = the
    /// scenario's `simulator.rate`, which the kills and hand-offs always use).
    pub throughput_rate: f64,
    /// kill -9s, each of the next node in turn, restarted and settled before the next.
    pub kills: usize,
    /// SIGTERM hand-offs, likewise.
    pub handoffs: usize,
    /// How long the KV write rate is measured in steady state.
    pub steady_window: Dur,
    /// How long an account of a killed or stopped node may take to run again before the run
    /// fails.
    pub resume_timeout: Dur,
}

impl Default for ClusterPlan {
    fn default() -> Self {
        ClusterPlan {
            enabled: false,
            nodes: 3,
            timings: Timings::Short,
            throughput_rate: 0.0,
            kills: 3,
            handoffs: 3,
            steady_window: Dur::secs(10),
            resume_timeout: Dur::secs(60),
        }
    }
}

/// The `crash-soak` run: `single_kills` kill -9s of a lone node (cluster off), then
/// `cluster_kills` of a node of the cluster, each about `interval` after the accounts of the
/// previous one ran again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashPlan {
    pub enabled: bool,
    /// Seeds the victims and the pauses (overridden by `TGINGEST_LOADTEST_SEED`).
    pub seed: u64,
    /// Kills of the single node (`TGINGEST_LOADTEST_KILLS=N` sets both counts to N/2).
    pub single_kills: usize,
    /// Kills of a node of the cluster.
    pub cluster_kills: usize,
    /// Nodes of the cluster phase.
    pub nodes: usize,
    pub timings: Timings,
    /// Mean pause between an account set running again and the next kill (drawn from
    /// 0.5–1.5 x this).
    pub interval: Dur,
    /// How long the accounts of a killed node may take to run again before the run fails.
    pub resume_timeout: Dur,
    /// The whole soak stops (and is checked) after this, whatever kills are left.
    pub max_time: Dur,
}

impl Default for CrashPlan {
    fn default() -> Self {
        CrashPlan {
            enabled: false,
            seed: 1,
            single_kills: 500,
            cluster_kills: 500,
            nodes: 3,
            timings: Timings::Short,
            interval: Dur::secs(1),
            resume_timeout: Dur::secs(60),
            max_time: Dur::secs(4 * 3600),
        }
    }
}

impl CrashPlan {
    /// The plan with `TGINGEST_LOADTEST_SEED` and `TGINGEST_LOADTEST_KILLS` applied.
    pub fn overridden(&self) -> Result<CrashPlan, String> {
        self.overridden_by(|name| std::env::var(name).ok())
    }

    /// The plan with the overrides that `lookup` finds (by variable name) applied.
    fn overridden_by(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<CrashPlan, String> {
        let mut plan = self.clone();
        let var = |name: &str| -> Result<Option<u64>, String> {
            match lookup(name) {
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|e| format!("{name}={v:?}: {e}")),
                None => Ok(None),
            }
        };
        if let Some(seed) = var("TGINGEST_LOADTEST_SEED")? {
            plan.seed = seed;
        }
        if let Some(kills) = var("TGINGEST_LOADTEST_KILLS")? {
            plan.single_kills = (kills / 2) as usize;
            plan.cluster_kills = (kills - kills / 2) as usize;
        }
        Ok(plan)
    }
}

/// The fake Switchboard's behaviour during the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchboardLoad {
    /// Added to every tool call.
    pub latency: Dur,
    /// Chance of answering `isError: true`.
    pub tool_error_probability: f64,
    /// Chance of cutting the connection instead of answering.
    pub drop_probability: f64,
    /// Cut after the call took effect (stored, reply lost) instead of before.
    pub drop_after_processing: bool,
    /// tgingest's `switchboard.max_inflight`; 0 = tgingest's default.
    pub max_inflight: u32,
    /// tgingest's `switchboard.heartbeat_interval` (off by default: heartbeats are not load).
    pub heartbeat_interval: Dur,
    /// Stop the fake this long after the start, for `outage_for` (0 = no outage).
    pub outage_at: Dur,
    pub outage_for: Dur,
}

impl Default for SwitchboardLoad {
    fn default() -> Self {
        SwitchboardLoad {
            latency: Dur::default(),
            tool_error_probability: 0.0,
            drop_probability: 0.0,
            drop_after_processing: false,
            max_inflight: 0,
            heartbeat_interval: Dur::secs(0),
            outage_at: Dur::default(),
            outage_for: Dur::default(),
        }
    }
}

/// The replay phase (see `replay.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayPlan {
    pub enabled: bool,
    /// How long the replay may take before the run fails.
    pub timeout: Dur,
}

impl Default for ReplayPlan {
    fn default() -> Self {
        ReplayPlan {
            enabled: false,
            timeout: Dur::secs(300),
        }
    }
}

/// How the bus ceiling is measured before the scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeilingPlan {
    /// Messages published (and then consumed); 0 skips the measurement.
    pub messages: u64,
    /// PubAcks awaited at once.
    pub inflight: usize,
}

impl Default for CeilingPlan {
    fn default() -> Self {
        CeilingPlan {
            messages: 100_000,
            inflight: 4096,
        }
    }
}

/// How the floor is measured before the scenario (see `floor.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloorPlan {
    /// How long the reference pipeline runs (and its replay, if the scenario replays); 0 skips
    /// the floor.
    pub duration: Dur,
    /// Left out of the rate (connections, first batches).
    pub warmup: Dur,
    /// Events published at most (bounds a fast machine's run and the floor's streams).
    pub max_events: u64,
}

impl Default for FloorPlan {
    fn default() -> Self {
        FloorPlan {
            duration: Dur::secs(6),
            warmup: Dur::secs(1),
            max_events: 1_000_000,
        }
    }
}

/// The idle window (see `idle.rs`): after the run, a fresh tgingest with the same accounts and
/// nothing due, measured for `window` once every account runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdlePlan {
    /// How long tgingest's CPU is measured with nothing offered; 0 = no idle window.
    pub window: Dur,
    /// How long the accounts may take to all run before the window starts.
    pub start_timeout: Dur,
}

impl Default for IdlePlan {
    fn default() -> Self {
        IdlePlan {
            window: Dur::secs(0),
            start_timeout: Dur::secs(120),
        }
    }
}

/// Step mode: the per-account rate grows step by step until a step breaks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepPlan {
    pub enabled: bool,
    /// Per-account rate of the first step (positions/s); 0 = the scenario's rate.
    pub start_rate: f64,
    /// Each step multiplies the rate by this.
    pub factor: f64,
    /// Source time of each step (each step is a fresh run: new server, new tgingest).
    pub step_duration: Dur,
    pub warmup: Dur,
    pub max_steps: u32,
    /// A step breaks when end-to-end p99 exceeds this…
    pub p99_limit: Dur,
    /// …or when the source falls behind its schedule by more than this (p99)…
    pub source_lag_limit: Dur,
    /// …or when delivered throughput is below this share of the offered rate, or anything is
    /// lost or stored twice.
    pub min_delivered_share: f64,
    /// Measure p99 at half the highest sustainable rate afterwards.
    pub half_rate_check: bool,
}

impl Default for StepPlan {
    fn default() -> Self {
        StepPlan {
            enabled: false,
            start_rate: 0.0,
            factor: 2.0,
            step_duration: Dur::secs(20),
            warmup: Dur::secs(5),
            max_steps: 8,
            p99_limit: Dur(Duration::from_millis(500)),
            source_lag_limit: Dur(Duration::from_secs(1)),
            min_delivered_share: 0.95,
            half_rate_check: true,
        }
    }
}

fn default_source() -> SourceKind {
    SourceKind::Simulated
}
fn default_drain() -> Dur {
    Dur::secs(60)
}
fn default_sample() -> Dur {
    Dur::secs(1)
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "scenario {name}: source {source_name:?} is not available yet: {missing}. \
         Run a `source = \"simulated\"` scenario instead."
    )]
    NotAvailable {
        name: String,
        source_name: &'static str,
        missing: &'static str,
    },
}

impl Scenario {
    /// Reads and checks a scenario file, refusing sources that do not exist yet.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let scenario = Self::parse(path)?;
        scenario.available()?;
        Ok(scenario)
    }

    /// Reads and checks a scenario file (whatever its source).
    pub fn parse(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let invalid = |message: String| ScenarioError::Invalid {
            path: shown.clone(),
            message,
        };
        let scenario: Scenario = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        scenario.check().map_err(invalid)?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), String> {
        if self.duration.is_zero() {
            return Err("duration must be above 0".into());
        }
        if self.warmup.0 >= self.duration.0 {
            return Err(format!(
                "warmup ({}) must be shorter than duration ({})",
                self.warmup, self.duration
            ));
        }
        if self.sample_interval.is_zero() {
            return Err("sample_interval must be above 0".into());
        }
        if self.source != SourceKind::Replay && self.simulator.accounts == 0 {
            return Err("simulator.accounts must be above 0".into());
        }
        if self.source == SourceKind::FakeDc
            && (self.simulator.rate.is_nan() || self.simulator.rate <= 0.0)
        {
            return Err("simulator.rate must be above 0 for a fake-dc source".into());
        }
        if self.replay.enabled && self.source != SourceKind::Simulated {
            return Err("[replay] needs source = \"simulated\"".into());
        }
        if self.replay.enabled && self.step.enabled {
            return Err(
                "[replay] and step mode do not go together: step runs have no replay phase".into(),
            );
        }
        if !self.floor.duration.is_zero() && self.floor.warmup.0 >= self.floor.duration.0 {
            return Err(format!(
                "floor.warmup ({}) must be shorter than floor.duration ({})",
                self.floor.warmup, self.floor.duration
            ));
        }
        if self.step.factor <= 1.0 {
            return Err("step.factor must be above 1".into());
        }
        if (self.cluster.enabled || self.crash.enabled) && self.source != SourceKind::FakeDc {
            return Err("[cluster] and [crash] need source = \"fake-dc\"".into());
        }
        if self.cluster.enabled && self.crash.enabled {
            return Err("[cluster] and [crash] are two scenarios: enable one".into());
        }
        if self.cluster.throughput_rate.is_nan() || self.cluster.throughput_rate < 0.0 {
            return Err("cluster.throughput_rate must be 0 or above".into());
        }
        if self.cluster.enabled && !(1..=3).contains(&self.cluster.nodes) {
            return Err("cluster.nodes must be 1, 2 or 3".into());
        }
        if self.crash.enabled && self.crash.nodes < 2 {
            return Err("crash.nodes must be at least 2 (a killed node's accounts move)".into());
        }
        let mut sim = self.simulator.clone();
        sim.messages_per_account = self.messages_per_account(sim.rate);
        sim.validate().map_err(|e| e.to_string())?;
        for key in self.env.keys() {
            if !key.starts_with("TGINGEST_") {
                return Err(format!("env.{key}: only TGINGEST_* variables may be set"));
            }
        }
        Ok(())
    }

    /// Refuses sources whose parts do not exist yet, naming what is missing.
    pub fn available(&self) -> Result<(), ScenarioError> {
        let (source_name, missing) = match self.source {
            SourceKind::Simulated => return Ok(()),
            SourceKind::FakeDc => return Ok(()),
            SourceKind::Replay => (
                "replay",
                "re-feeding a recorded TG_RAW capture needs a capture format that does not exist; \
                 to measure replay from TG_CLEAN, use source = \"simulated\" with \
                 `[replay] enabled = true` (loadtest/scenarios/replay.toml)",
            ),
        };
        Err(ScenarioError::NotAvailable {
            name: self.name.clone(),
            source_name,
            missing,
        })
    }

    /// Positions per account so that the sources produce for `duration` at `rate`.
    pub fn messages_per_account(&self, rate: f64) -> u64 {
        ((rate * self.duration.0.as_secs_f64()).round() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_count_override_splits_half_and_half_and_a_seed_override_replaces_the_seed() {
        let plan = CrashPlan::default();
        let env = |name: &str| match name {
            "TGINGEST_LOADTEST_KILLS" => Some("101".to_string()),
            "TGINGEST_LOADTEST_SEED" => Some(" 7 ".to_string()),
            _ => None,
        };
        let o = plan.overridden_by(env).expect("valid overrides");
        assert_eq!((o.single_kills, o.cluster_kills, o.seed), (50, 51, 7));
        let none = plan.overridden_by(|_| None).expect("no overrides");
        assert_eq!((none.single_kills, none.cluster_kills), (500, 500));
    }

    #[test]
    fn a_kill_count_override_that_is_not_a_number_is_refused_by_name() {
        let err = CrashPlan::default()
            .overridden_by(|n| (n == "TGINGEST_LOADTEST_KILLS").then(|| "many".to_string()))
            .expect_err("refused");
        assert!(err.contains("TGINGEST_LOADTEST_KILLS"), "{err}");
    }

    #[test]
    fn the_shipped_cluster_scenarios_parse_and_ask_for_what_issue_13_names() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let failover = Scenario::load(&dir.join("cluster-failover.toml")).expect("parses");
        assert!(failover.cluster.enabled && failover.cluster.nodes == 3);
        let soak = Scenario::load(&dir.join("crash-soak.toml")).expect("parses");
        assert!(soak.crash.enabled);
        assert_eq!(soak.crash.single_kills + soak.crash.cluster_kills, 1000);
    }
}
