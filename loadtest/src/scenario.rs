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
    /// Step mode's parameters (used with `--step`, or when `step.enabled`).
    #[serde(default)]
    pub step: StepPlan,
    /// After the drain: forget everything in the fake Switchboard and replay `TG_CLEAN`.
    #[serde(default)]
    pub replay: ReplayPlan,
    /// Extra `TGINGEST_*` variables for the tgingest process (tuning knobs).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
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
        if self.step.factor <= 1.0 {
            return Err("step.factor must be above 1".into());
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
