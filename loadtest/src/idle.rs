//! The idle figure (`[idle] window`): what a fleet of accounts costs tgingest when nothing
//! arrives. Measured over a window with no offered messages, not over the scenario (whose load
//! is not near zero: `many-idle-accounts` offers 500 positions/s).
//!
//! After the run, on a fresh nats-server and fake Switchboard, a fresh tgingest starts the same
//! accounts at a rate so low (one position per [`IDLE_INTERVAL_S`] seconds, phases spread over
//! that interval) that nothing falls due in the window except account 0's first position, which
//! is due at once, before the window. Once every account runs (`tgingest_accounts{state=
//! "running"}` on the admin API's `/metrics`), tgingest's CPU is read over `window`: every
//! account actor is up, connected to its simulated source and waiting, as an account with a
//! quiet Telegram would.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::admin::{call_as, free_addr, node_token, wait_up};
use crate::procs::{Tgingest, proc_sample};
use crate::scenario::Scenario;
use crate::stage::{RunOptions, Stage};

/// The tick interval of the idle accounts, seconds (rate = 1 / this).
pub const IDLE_INTERVAL_S: f64 = 1e6;

/// tgingest's CPU over the idle window.
#[derive(Debug, Clone, Serialize)]
pub struct IdleCpu {
    pub accounts: u32,
    pub window_s: f64,
    pub cpu_s: f64,
    /// cpu_s / window_s: 0.05 is 5 % of one core.
    pub share_of_one_core: f64,
    /// Events the fake stored during the window (0 when nothing was offered).
    pub events_in_window: u64,
    /// Resident set at the end of the window.
    pub rss_bytes: u64,
    /// Start → every account running, seconds (not in the window).
    pub start_s: f64,
    pub method: &'static str,
}

/// Runs the idle window for `scn`'s accounts; logs go to `opts.out/idle/`.
pub async fn measure(
    scn: &Scenario,
    opts: &RunOptions,
    say: &dyn Fn(String),
) -> anyhow::Result<IdleCpu> {
    let out = opts.out.join("idle");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let idle_opts = RunOptions {
        tgingest: opts.tgingest.clone(),
        out: out.clone(),
        ceiling: None,
        floor: None,
        quiet: opts.quiet,
    };
    let stage = Stage::start(&idle_opts).await?;
    let mut quiet = scn.clone();
    quiet.simulator.rate = 1.0 / IDLE_INTERVAL_S;
    let admin = free_addr()?;
    let env = stage.env(&quiet, 1, Some(&admin))?;
    let config = tgingest::config::load(None, env.clone())
        .context("tgingest config from env")?
        .config;
    let accounts = scn.simulator.accounts;
    let started = Instant::now();
    let mut proc = Tgingest::start(&opts.tgingest, &env, &out.join("tgingest.log"))?;
    say(format!(
        "idle window: tgingest started (pid {}) with {accounts} accounts and nothing due",
        proc.pid()
    ));
    wait_up(&admin, &mut proc).await?;
    // The token tgingest generated into its data dir at start.
    let token = node_token(&config)?;
    let timeout: Duration = scn.idle.start_timeout.into();
    loop {
        proc.check_alive()?;
        let (status, body) = call_as(&admin, token.as_deref(), "GET", "/metrics", None).await?;
        if status != 200 {
            bail!("GET /metrics: {status} {body}");
        }
        if running(&body) >= u64::from(accounts) {
            break;
        }
        if started.elapsed() >= timeout {
            bail!(
                "only {} of {accounts} accounts were running after {timeout:?}",
                running(&body)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let start_s = started.elapsed().as_secs_f64();
    let window: Duration = scn.idle.window.into();
    say(format!(
        "idle window: all {accounts} accounts running after {start_s:.1}s; measuring {window:?}"
    ));
    let stored_before = stage.fake.status().await?.counts.stored;
    let (t0, cpu0) = (Instant::now(), proc_sample(proc.pid()).unwrap_or_default());
    tokio::time::sleep(window).await;
    let end = proc_sample(proc.pid()).unwrap_or_default();
    let window_s = t0.elapsed().as_secs_f64();
    let stored_after = stage.fake.status().await?.counts.stored;
    proc.check_alive()?;
    proc.stop(Duration::from_secs(10));
    let Stage { mut nats, fake, .. } = stage;
    fake.stop().await;
    nats.stop();
    let cpu_s = end.cpu_s - cpu0.cpu_s;
    Ok(IdleCpu {
        accounts,
        window_s,
        cpu_s,
        share_of_one_core: cpu_s / window_s.max(1e-3),
        events_in_window: stored_after.saturating_sub(stored_before),
        rss_bytes: end.rss,
        start_s,
        method: "a fresh tgingest with the scenario's accounts and nothing due (one position per \
                 1e6 s per account); CPU over the window once every account runs",
    })
}

/// `tgingest_accounts{state="running"}` in a Prometheus text page (0 if absent).
fn running(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tgingest_accounts{state=\"running\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_count_is_read_from_the_accounts_gauge_only() {
        let page = "# TYPE tgingest_accounts gauge\n\
                    tgingest_accounts{state=\"connecting\"} 3\n\
                    tgingest_accounts{state=\"running\"} 9997\n";
        assert_eq!(running(page), 9997);
        assert_eq!(running("tgingest_up 1\n"), 0);
    }
}
