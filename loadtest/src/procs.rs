//! The processes the loadtest starts (nats-server, tgingest) and what `/proc` says about them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

/// A `tgingest run` child process; killed (SIGTERM, then SIGKILL) when dropped.
pub struct Tgingest {
    child: Option<Child>,
    pid: u32,
}

impl Tgingest {
    /// Starts `binary run` with exactly `env` (plus `PATH`), logging to `log`.
    pub fn start(binary: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<Tgingest> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        Self::spawn(binary, None, env, out)
    }

    /// Starts `binary --config <config> run` with exactly `env` (plus `PATH`), appending to
    /// `log` (a node started again keeps one log).
    pub fn start_node(
        binary: &Path,
        config: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Tgingest> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        Self::spawn(binary, Some(config), env, out)
    }

    fn spawn(
        binary: &Path,
        config: Option<&Path>,
        env: &[(String, String)],
        out: std::fs::File,
    ) -> anyhow::Result<Tgingest> {
        let err = out.try_clone()?;
        let mut cmd = Command::new(binary);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id();
        Ok(Tgingest {
            child: Some(child),
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails if the process has already exited (with its status).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("tgingest exited early ({status}); see tgingest.log in the report folder");
        }
        Ok(())
    }

    /// SIGTERM without waiting (a graceful stop begins; [`Tgingest::stop`] reaps).
    pub fn terminate(&self) {
        if self.child.is_some() {
            // SAFETY: kill(2) on the pid of a child we started and have not yet reaped.
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        }
    }

    /// SIGKILL, and reaped: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, up to `grace` for a clean exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we started and have not yet reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Tgingest {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The `tgingest` binary: `--tgingest`, else next to this executable (same profile).
pub fn tgingest_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--tgingest {}: no such file", p.display());
    }
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe.parent().context("executable has no directory")?;
    // Integration tests run from target/<profile>/deps; the binary lives one level up.
    for candidate in [dir.join("tgingest"), dir.join("../tgingest")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no tgingest binary next to {}: build both with `cargo build --release -p tgingest -p tgingest-loadtest` \
         (or pass --tgingest <path>)",
        exe.display()
    )
}

/// CPU time and memory of one process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU time so far, in seconds.
    pub cpu_s: f64,
    /// Resident set now (VmRSS), bytes.
    pub rss: u64,
    /// Peak resident set (VmHWM), bytes.
    pub hwm: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads the process's CPU and memory; `None` once it is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_s: (utime + stime) as f64 / ticks,
        rss: kib("VmRSS:") * 1024,
        hwm: kib("VmHWM:") * 1024,
        threads: kib("Threads:"),
    })
}

/// CPU seconds the run's other processes spent while tgingest ran: they share the machine's
/// cores, so a saturated run is read against all of them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NeighbourCpu {
    pub nats_server_cpu_s: f64,
    /// The fake Switchboard's own process.
    pub fake_switchboard_cpu_s: f64,
    /// The fake Telegram DC's own process, with its message driver (`fake-dc` runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fake_dc_cpu_s: Option<f64>,
    /// This process: the monitor's polling and, for a simulated source, nothing else.
    pub driver_cpu_s: f64,
}

impl NeighbourCpu {
    /// All of them together.
    pub fn total_s(&self) -> f64 {
        self.nats_server_cpu_s
            + self.fake_switchboard_cpu_s
            + self.fake_dc_cpu_s.unwrap_or(0.0)
            + self.driver_cpu_s
    }
}

/// The processes besides tgingest whose CPU a run reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Neighbours {
    pub nats: Option<u32>,
    pub fake_switchboard: Option<u32>,
    pub fake_dc: Option<u32>,
}

/// Started when the measured window starts; [`NeighbourClock::elapsed`] before the processes
/// stop.
pub struct NeighbourClock {
    pids: Neighbours,
    start: NeighbourCpu,
}

impl NeighbourClock {
    pub fn start(pids: Neighbours) -> NeighbourClock {
        NeighbourClock {
            pids,
            start: neighbour_cpu(pids),
        }
    }

    pub fn elapsed(&self) -> NeighbourCpu {
        let now = neighbour_cpu(self.pids);
        NeighbourCpu {
            nats_server_cpu_s: now.nats_server_cpu_s - self.start.nats_server_cpu_s,
            fake_switchboard_cpu_s: now.fake_switchboard_cpu_s - self.start.fake_switchboard_cpu_s,
            fake_dc_cpu_s: now
                .fake_dc_cpu_s
                .zip(self.start.fake_dc_cpu_s)
                .map(|(n, s)| n - s),
            driver_cpu_s: now.driver_cpu_s - self.start.driver_cpu_s,
        }
    }
}

fn neighbour_cpu(pids: Neighbours) -> NeighbourCpu {
    let cpu = |pid: Option<u32>| pid.and_then(proc_sample).map_or(0.0, |p| p.cpu_s);
    NeighbourCpu {
        nats_server_cpu_s: cpu(pids.nats),
        fake_switchboard_cpu_s: cpu(pids.fake_switchboard),
        fake_dc_cpu_s: pids.fake_dc.map(|p| cpu(Some(p))),
        driver_cpu_s: cpu(Some(std::process::id())),
    }
}
