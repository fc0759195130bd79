//! What every measured run stands on and reports: the servers and fakes of a single-node run
//! (`Stage`), the environment of the measured `tgingest`, and the report's parts. Apart from
//! `run`, so the sources that run differently (`fakedc`) share them without depending on it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tgingest::keys::MasterKey;
use tgingest::nats_server::{NatsServer, ServerOptions, find_binary};
use tgingest::switchboard::FakeStats;

use crate::analysis::{Bin, Delivery};
use crate::ceiling::Ceiling;
use crate::floor::{Floor, FloorRatio};
use crate::monitor::Sample;
use crate::procs::{NeighbourCpu, Neighbours, ProcSample};
use crate::remote_switchboard::RemoteSwitchboard;
use crate::scenario::Scenario;

/// What the fake Switchboard saw, besides the stored envelopes.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FakeCounts {
    pub stored: u64,
    pub duplicates_answered: u64,
    pub rejected: u64,
    pub tool_errors: u64,
    pub dropped: u64,
    pub sessions_opened: u64,
}

impl From<FakeStats> for FakeCounts {
    fn from(s: FakeStats) -> Self {
        FakeCounts {
            stored: s.stored,
            duplicates_answered: s.duplicates,
            rejected: s.rejected,
            tool_errors: s.tool_errors,
            dropped: s.dropped,
            sessions_opened: s.sessions_opened,
        }
    }
}

/// The tgingest process's resource use.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// CPU seconds (user + system) over the run.
    pub cpu_s: f64,
    /// Mean cores busy over the run (cpu_s / wall seconds).
    pub cpu_cores_mean: f64,
    /// Highest per-sample value.
    pub cpu_cores_max: f64,
    /// VmHWM at the end of the run.
    pub peak_rss_bytes: u64,
    pub peak_rss_mib: f64,
    /// Peak RSS divided by the number of accounts (includes the fixed base of the process).
    pub peak_rss_per_account_bytes: f64,
    /// VmRSS at the first sample (accounts started, little traffic yet).
    pub first_sample_rss_bytes: u64,
    /// tgingest CPU per event stored, in µs: what decides how far one node scales.
    pub cpu_us_per_event: f64,
    /// The other processes over the same time, and their CPU per event stored.
    pub neighbours: NeighbourCpu,
    pub nats_server_us_per_event: f64,
    pub fake_switchboard_us_per_event: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fake_dc_us_per_event: Option<f64>,
    /// The loadtest process itself (monitor and polling; the floor ran before this window).
    pub driver_us_per_event: f64,
    /// tgingest's CPU with nothing offered (`[idle]` scenarios), as a share of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<crate::idle::IdleCpu>,
}

impl Resources {
    /// From tgingest's CPU seconds over the measured time, its last `/proc` sample, the
    /// neighbours' CPU over the same time, and the events the fake stored.
    pub(crate) fn measured(
        cpu_s: f64,
        wall_s: f64,
        end: &ProcSample,
        samples: &[Sample],
        accounts: u32,
        neighbours: NeighbourCpu,
        events: u64,
    ) -> Resources {
        let per_event = |s: f64| s * 1e6 / (events.max(1) as f64);
        Resources {
            cpu_s,
            cpu_cores_mean: cpu_s / wall_s.max(1e-3),
            cpu_cores_max: samples.iter().map(|s| s.cpu_cores).fold(0.0, f64::max),
            peak_rss_bytes: end.hwm,
            peak_rss_mib: end.hwm as f64 / 1048576.0,
            peak_rss_per_account_bytes: end.hwm as f64 / f64::from(accounts.max(1)),
            first_sample_rss_bytes: samples.first().map_or(0, |s| s.rss_bytes),
            cpu_us_per_event: per_event(cpu_s),
            nats_server_us_per_event: per_event(neighbours.nats_server_cpu_s),
            fake_switchboard_us_per_event: per_event(neighbours.fake_switchboard_cpu_s),
            fake_dc_us_per_event: neighbours.fake_dc_cpu_s.map(per_event),
            driver_us_per_event: per_event(neighbours.driver_cpu_s),
            neighbours,
            idle: None,
        }
    }
}

/// Whether the throughput is limited by the offered load, not by tgingest: the source kept its
/// schedule and nearly all of it arrived (a ratio to the floor or the ceiling then only says
/// how much headroom is left).
pub(crate) fn load_limited(d: &Delivery) -> bool {
    d.source_lag_ms.p99 < 1000.0 && d.throughput_per_s >= 0.9 * d.offered_per_s
}

/// Ratios of the pipeline's throughput to the bus ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRatio {
    pub throughput_per_s: f64,
    pub publish_ceiling_per_s: f64,
    pub consume_ceiling_per_s: f64,
    /// throughput / publish ceiling.
    pub ratio_to_publish: f64,
    pub ratio_to_consume: f64,
    /// Whether the throughput is limited by the offered load, not by tgingest (then the ratio
    /// says little: run step mode for the highest sustainable rate).
    pub load_limited: bool,
}

impl CeilingRatio {
    /// The delivery's throughput against this run's ceiling.
    pub(crate) fn of(d: &Delivery, c: &Ceiling) -> CeilingRatio {
        CeilingRatio {
            throughput_per_s: d.throughput_per_s,
            publish_ceiling_per_s: c.publish_per_s,
            consume_ceiling_per_s: c.consume_per_s,
            ratio_to_publish: d.throughput_per_s / c.publish_per_s.max(1e-9),
            ratio_to_consume: d.throughput_per_s / c.consume_per_s.max(1e-9),
            load_limited: load_limited(d),
        }
    }
}

/// The machine, so figures are read in context.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpus: usize,
    /// 1-minute load average at the start of the run.
    pub loadavg_1m_at_start: f64,
    pub tgingest_binary: String,
    pub profile: &'static str,
}

/// One of the targets, reported (never asserted).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: &'static str,
    pub value: String,
    /// `None` when this run cannot tell (e.g. the throughput target needs step mode).
    pub met: Option<bool>,
}

/// The targets this run can speak to.
pub(crate) fn targets(
    d: &Delivery,
    res: &Resources,
    ratio: Option<&CeilingRatio>,
    floor: Option<&FloorRatio>,
    accounts: u32,
) -> Vec<Target> {
    let mut out = vec![Target {
        target: "zero loss and zero duplicates",
        value: format!(
            "lost {}, stored twice {}, unexpected {}",
            d.lost, d.duplicates_stored, d.unexpected
        ),
        met: Some(d.lost == 0 && d.duplicates_stored == 0 && d.unexpected == 0),
    }];
    if let Some(q) = ratio {
        out.push(Target {
            target: "throughput >= 0.25 x raw publish ceiling",
            value: format!("{:.4}", q.ratio_to_publish),
            // A load-limited run only shows headroom; step mode measures the limit.
            met: if q.load_limited && q.ratio_to_publish < 0.25 {
                None
            } else {
                Some(q.ratio_to_publish >= 0.25)
            },
        });
    }
    if let Some(f) = floor {
        out.push(Target {
            target: "throughput >= 0.8 x floor",
            value: format!("{:.3}", f.ratio),
            met: if load_limited(d) && f.ratio < 0.8 {
                None
            } else {
                Some(f.ratio >= 0.8)
            },
        });
    }
    if let Some(idle) = &res.idle {
        out.push(Target {
            target: "idle fleet <= 5 % of one core",
            value: format!(
                "{:.2} % of one core over {:.0} s with nothing offered",
                idle.share_of_one_core * 100.0,
                idle.window_s
            ),
            met: Some(idle.share_of_one_core <= 0.05),
        });
    }
    if accounts >= 10_000 {
        out.push(Target {
            target: "10,000 idle accounts in <= 1 GiB RSS",
            value: format!(
                "peak RSS {:.1} MiB for {accounts} accounts",
                res.peak_rss_mib
            ),
            met: Some(res.peak_rss_bytes <= 1 << 30),
        });
    }
    out
}

/// The JSON report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: Scenario,
    pub started_at: String,
    pub host: Host,
    pub accounts: u32,
    pub rate_per_account: f64,
    pub messages_per_account: u64,
    /// Mean encoded size of a `TG_RAW` message; the ceiling used this payload size.
    pub raw_message_bytes: usize,
    pub ceiling: Option<Ceiling>,
    pub ceiling_ratio: Option<CeilingRatio>,
    /// The reference pipeline of this run (`floor.rs`), and tgingest's throughput against it.
    pub floor: Option<Floor>,
    pub floor_ratio: Option<FloorRatio>,
    pub delivery: Delivery,
    pub resources: Resources,
    pub switchboard: FakeCounts,
    /// True when nothing was lost, stored twice, or unexpected (in the replay phase too).
    pub ok: bool,
    /// The targets, as far as this run can tell.
    pub targets: Vec<Target>,
    /// Whether the run waited out its drain timeout (the backlog did not clear).
    pub drain_timed_out: bool,
    pub wall_s: f64,
    pub bins: Vec<Bin>,
    pub samples: Vec<Sample>,
    /// The replay phase (`[replay] enabled`): replay throughput and exactly-once after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayFigures>,
    /// Account set-up before the measured window (fake-DC source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<Setup>,
}

/// Options of one run besides the scenario.
pub struct RunOptions {
    pub tgingest: PathBuf,
    pub out: PathBuf,
    /// Reuse a ceiling measured earlier in the same invocation (step mode).
    pub ceiling: Option<Ceiling>,
    /// Reuse a floor measured earlier in the same invocation (step mode).
    pub floor: Option<Floor>,
    pub quiet: bool,
}

pub(crate) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The environment of the tgingest process (and of the loadtest's own view of its config).
pub(crate) fn tgingest_env(
    scn: &Scenario,
    messages: u64,
    nats_url: &str,
    sb_url: &str,
    data: &Path,
    key: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = vec![
        ("TGINGEST_NATS_URL".into(), nats_url.into()),
        ("TGINGEST_SWITCHBOARD_URL".into(), sb_url.into()),
        ("TGINGEST_NODE_DATA_DIR".into(), data.display().to_string()),
        ("TGINGEST_NODE_ID".into(), "loadtest".into()),
        ("TGINGEST_MASTER_KEY_FILE".into(), key.display().to_string()),
        ("TGINGEST_ADMIN_LISTEN".into(), String::new()),
        ("TGINGEST_LOGGING_LEVEL".into(), "warn".into()),
        (
            "TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL".into(),
            scn.switchboard.heartbeat_interval.to_string(),
        ),
    ];
    if scn.switchboard.max_inflight > 0 {
        env.push((
            "TGINGEST_SWITCHBOARD_MAX_INFLIGHT".into(),
            scn.switchboard.max_inflight.to_string(),
        ));
    }
    let mut sim = scn.simulator.clone();
    sim.messages_per_account = messages;
    let table = toml::Table::try_from(&sim).context("simulator section")?;
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        env.push((
            format!("TGINGEST_SIMULATOR_{}", key.to_ascii_uppercase()),
            text,
        ));
    }
    for (k, v) in &scn.env {
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

/// What every run starts before tgingest: a temp dir with a master key, nats-server, and the
/// fake Switchboard in its own process (faults are set by the caller, after the floor); plus the
/// host facts the report records.
pub(crate) struct Stage {
    pub host: Host,
    pub started_at: String,
    pub tmp: tempfile::TempDir,
    pub key: std::path::PathBuf,
    pub nats: NatsServer,
    pub fake: RemoteSwitchboard,
}

impl Stage {
    pub(crate) async fn start(opts: &RunOptions) -> anyhow::Result<Stage> {
        let host = Host {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            loadavg_1m_at_start: loadavg(),
            tgingest_binary: opts.tgingest.display().to_string(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        };
        let started_at = jiff::Timestamp::now().to_string();
        let tmp = tempfile::Builder::new()
            .prefix("tgingest-loadtest-")
            .tempdir()
            .context("temp dir")?;
        let key = tmp.path().join("master.key");
        MasterKey::generate_file(&key).context("master key")?;

        let binary =
            find_binary(None).context("nats-server (run scripts/install-nats-server.sh)")?;
        let nats = NatsServer::start(ServerOptions::new(
            binary,
            tmp.path().join("nats"),
            "loadtest",
        ))
        .context("start nats-server")?;
        let fake = RemoteSwitchboard::start(&opts.out.join("fake-switchboard.log"))
            .await
            .context("start the fake Switchboard")?;
        Ok(Stage {
            host,
            started_at,
            tmp,
            key,
            nats,
            fake,
        })
    }

    /// The environment of a tgingest on this stage (`tgingest_env`), with its admin API on
    /// `admin` when given.
    pub(crate) fn env(
        &self,
        scn: &Scenario,
        messages: u64,
        admin: Option<&str>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = tgingest_env(
            scn,
            messages,
            &self.nats.url(),
            self.fake.mcp_url(),
            &self.tmp.path().join("data"),
            &self.key,
        )?;
        if let Some(addr) = admin {
            env.retain(|(k, _)| k != "TGINGEST_ADMIN_LISTEN");
            env.push(("TGINGEST_ADMIN_LISTEN".into(), addr.to_string()));
        }
        Ok(env)
    }

    /// Its parts, once the floor has been measured: the host facts, when it started, the temp
    /// dir, nats-server and the fake.
    pub(crate) fn into_parts(
        self,
    ) -> (
        Host,
        String,
        tempfile::TempDir,
        NatsServer,
        RemoteSwitchboard,
    ) {
        (self.host, self.started_at, self.tmp, self.nats, self.fake)
    }

    /// The processes besides tgingest whose CPU the report shows.
    pub(crate) fn neighbours(&self) -> Neighbours {
        Neighbours {
            nats: self.nats.pid(),
            fake_switchboard: Some(self.fake.pid()),
            fake_dc: None,
        }
    }
}

/// Account set-up of a `fake-dc` run, outside the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// tgingest start → every account listening (import, consent, log-in, first getDifference).
    pub setup_s: f64,
    /// CPU seconds tgingest spent in that time.
    pub setup_cpu_s: f64,
    /// RSS when every account listened (before any driven message).
    pub rss_listening_bytes: u64,
}

/// What a run is measured against: the bus ceiling and the floor (both measured before tgingest
/// starts, or reused from `opts` in step mode).
pub(crate) struct Yardsticks {
    pub ceiling: Option<Ceiling>,
    pub floor: Option<Floor>,
}

/// Measures the ceiling and the floor on `stage` (unless `opts` has them or the scenario skips
/// them), then sets the scenario's faults on the fake. The floor runs against the scenario's
/// latency but none of its faults: it is the error-free path.
pub(crate) async fn yardsticks(
    scn: &Scenario,
    opts: &RunOptions,
    stage: &Stage,
    config: &tgingest::config::Config,
    pool: &[tgingest::event::Event],
    raw_bytes: usize,
    say: &dyn Fn(String),
) -> anyhow::Result<Yardsticks> {
    let url = stage.nats.url();
    let ceiling = match (&opts.ceiling, scn.ceiling.messages) {
        (Some(c), _) => Some(c.clone()),
        (None, 0) => None,
        (None, n) => {
            say(format!("measuring the bus ceiling with {n} messages"));
            let c = crate::ceiling::measure(&url, n, raw_bytes, scn.ceiling.inflight).await?;
            say(format!(
                "ceiling: publish {:.0}/s, consume {:.0}/s",
                c.publish_per_s, c.consume_per_s
            ));
            Some(c)
        }
    };
    let latency_only = crate::scenario::SwitchboardLoad {
        latency: scn.switchboard.latency,
        ..Default::default()
    };
    let floor = match &opts.floor {
        Some(f) => Some(f.clone()),
        None if scn.floor.duration.is_zero() => None,
        None => {
            stage.fake.set_faults(&latency_only).await?;
            say(format!(
                "measuring the floor for {}{}",
                scn.floor.duration,
                if scn.replay.enabled {
                    " (and the replay floor)"
                } else {
                    ""
                }
            ));
            let target = crate::floor::Target {
                nats_url: &url,
                config,
                accounts: scn.simulator.accounts.max(1),
                fake: &stage.fake,
                pids: stage.neighbours(),
            };
            let f = crate::floor::measure(&target, pool, &scn.floor, scn.replay.enabled).await?;
            say(format!(
                "floor: {:.0} events/s{}",
                f.live.events_per_s,
                f.replay
                    .as_ref()
                    .map(|r| format!(", replay floor {:.0} events/s", r.events_per_s))
                    .unwrap_or_default()
            ));
            Some(f)
        }
    };
    stage.fake.set_faults(&scn.switchboard).await?;
    Ok(Yardsticks { ceiling, floor })
}
