//! `source = "fake-dc"`: real grammers clients (inside the measured `tgingest run` process)
//! against the fake Telegram DC, as `tests/fakedc_crash.rs` runs them.
//!
//! The fake DC (with the message driver, `remote_dc.rs`), nats-server and the fake Switchboard
//! (`remote_switchboard.rs`) each run in a process of their own; tgingest is the measured one. Its accounts are imported as Telethon strings through the
//! admin API (`POST /v1/accounts/import`) and consented (`POST /v1/accounts/{id}/consent`), as an
//! operator would; the chat layout and the ground truth are the demo's (`tgingest::demo::
//! FakeDcLayout`): every driven message, as the event id the normalizer computes for each account
//! that sees it, kept if the policy keeps it.
//!
//! The measured window starts once every account listens (its update stream is subscribed on the
//! fake DC) and catch-up has settled: import, consent and log-in do not count in throughput,
//! latency or CPU (they are reported apart, in `setup`). Peak RSS is the process's high-water
//! mark, so it includes the clients' set-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use tgingest::demo::FakeDcLayout;
use tgingest::policy::Policy;
use tgingest::telegram::fakedc::FakeDc;

use crate::admin::{free_addr, post_as, wait_up};
use crate::analysis::analyze;
use crate::floor::FloorRatio;
use crate::procs::{NeighbourClock, Tgingest};
use crate::remote_dc::RemoteDc;
use crate::scenario::Scenario;
use crate::stage::{
    CeilingRatio, Resources, RunOptions, RunReport, Setup, Stage, Yardsticks, targets, yardsticks,
};
use crate::truth::{Origin, Truth};

/// Mean `TG_RAW` size assumed for the ceiling (a fake-DC text message is about this size).
const RAW_BYTES_ESTIMATE: usize = 400;
/// Import and consent requests in flight at once.
const ADMIN_CONCURRENCY: usize = 8;

/// Runs a `fake-dc` scenario once.
pub async fn run_once(scn: &Scenario, opts: &RunOptions) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let say = |m: String| {
        if !opts.quiet {
            eprintln!("[{}] {m}", scn.name);
        }
    };
    let stage = Stage::start(opts).await?;
    let (dc, dc_addr) = RemoteDc::start(&opts.out.join("fake-dc.log"))
        .await
        .context("start the fake Telegram DC")?;
    let n = scn.simulator.accounts.max(1) as usize;
    let rate = scn.simulator.rate;
    let layout = dc.layout(n).await?;
    say(format!(
        "fake DC at {dc_addr}: {n} accounts, {} chats",
        layout.chats
    ));

    // tgingest without simulated accounts, its grammers adapter on (any api id: the fake DC does
    // not check it), nothing to backfill, and an admin API to import the accounts through.
    let admin = free_addr()?;
    let mut no_sim = scn.clone();
    no_sim.simulator.accounts = 0;
    let mut env = stage.env(&no_sim, 1, Some(&admin))?;
    env.extend([
        ("TGINGEST_TELEGRAM_API_ID".to_string(), "1".to_string()),
        (
            "TGINGEST_TELEGRAM_BACKFILL_WINDOW_H".to_string(),
            "0".to_string(),
        ),
    ]);
    let loaded = tgingest::config::load(None, env.clone()).context("tgingest config from env")?;
    let policy = Policy::new(&loaded.config.policy).context("policy")?;

    // The floor's events: a small simulated world through the same policy (the envelope's shape
    // is the same whatever the source).
    let sample_world = tgingest::telegram::simulated::SimulatedWorld::new(
        tgingest::telegram::simulated::SimulatorConfig {
            accounts: (n as u32).min(64),
            ..Default::default()
        },
    )
    .context("the floor's sample world")?;
    let pool = crate::floor::sample_events(&sample_world, &policy, 2_000);
    let Yardsticks { ceiling, floor } = yardsticks(
        scn,
        opts,
        &stage,
        &loaded.config,
        &pool,
        RAW_BYTES_ESTIMATE,
        &say,
    )
    .await?;
    let pids = stage.neighbours();
    let (host, started_at, tmp, mut nats, fake) = stage.into_parts();

    // Set-up (not measured): start, import and consent every account, wait until all listen.
    let setup_started = Instant::now();
    let mut proc = Tgingest::start(&opts.tgingest, &env, &opts.out.join("tgingest.log"))?;
    say(format!("tgingest started (pid {})", proc.pid()));
    wait_up(&admin, &mut proc).await?;
    let token = crate::admin::node_token(&loaded.config)?;
    import_and_consent(&admin, token.as_deref(), &layout.accounts, &layout.sessions).await?;
    say(format!(
        "{n} accounts imported and consented in {:.1}s",
        setup_started.elapsed().as_secs_f64()
    ));
    let ready_by = Instant::now() + scn.drain_timeout.0.max(Duration::from_secs(60));
    wait_listening(
        n,
        async || Ok(dc.listening().await?),
        ready_by,
        &say,
        || proc.check_alive(),
    )
    .await?;
    // A second for catch-up (getDifference) to settle before the first driven message.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_listen = crate::procs::proc_sample(proc.pid()).unwrap_or_default();
    let neighbour_clock = NeighbourClock::start(crate::procs::Neighbours {
        fake_dc: Some(dc.pid()),
        ..pids
    });
    let setup = Setup {
        setup_s: setup_started.elapsed().as_secs_f64(),
        setup_cpu_s: at_listen.cpu_s,
        rss_listening_bytes: at_listen.rss,
    };
    say(format!(
        "all {n} accounts listening after {:.1}s (tgingest RSS {:.0} MiB); measuring",
        setup.setup_s,
        at_listen.rss as f64 / 1048576.0
    ));

    // The measured window: the driver (in the fake DC's process) sends `rate` messages/s per
    // account (round-robin over the accounts, each account's messages round-robin over its
    // chats) for `duration`.
    let t0 = Instant::now();
    let t0_us = jiff::Timestamp::now().as_microsecond();
    let mut monitor = crate::monitor::Monitor::connect(&nats.url(), proc.pid()).await?;
    let duration: Duration = scn.duration.into();
    dc.drive(rate, duration, &loaded.config.policy).await?;
    let mut truth: Option<(HashMap<String, Origin>, u64)> = None;
    let interval: Duration = scn.sample_interval.into();
    let deadline = duration + scn.drain_timeout.0;
    let mut samples = Vec::new();
    let mut next = t0 + interval;
    let mut drain_timed_out = false;
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let t = t0.elapsed();
        proc.check_alive()?;
        if truth.is_none() && dc.driven().await? {
            let (expected, sent) = dc.finish().await?;
            say(format!(
                "driver done: {sent} messages sent, {} events must arrive",
                expected.len()
            ));
            truth = Some((expected, sent));
        }
        let target = truth.as_ref().map(|(e, _)| e.len() as u64);
        let s = monitor.sample(t.as_secs_f64(), &fake).await;
        if !opts.quiet && (samples.len() % 5 == 4) {
            say(format!(
                "t={:>5.1}s stored {}/{} raw {} clean {} cpu {:.2} rss {:.0} MiB",
                s.t,
                s.stored,
                target.map_or("?".into(), |t| t.to_string()),
                s.raw_last_seq,
                s.clean_last_seq,
                s.cpu_cores,
                s.rss_bytes as f64 / 1048576.0
            ));
        }
        let stored = s.stored;
        samples.push(s);
        if let Some(target) = target
            && stored >= target
            && fake.stored_unique().await? >= target
        {
            break;
        }
        if t >= deadline {
            drain_timed_out = true;
            say("drain timeout: stopping with events outstanding".into());
            break;
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let end_proc = crate::procs::proc_sample(proc.pid()).unwrap_or_default();
    let neighbours = neighbour_clock.elapsed();
    proc.stop(Duration::from_secs(10));
    let (expected, _sent) = match truth {
        Some(t) => t,
        None => dc.finish().await?,
    };
    let accepted = fake.stored().await?;
    let counts = fake.status().await?.counts;
    fake.stop().await;
    nats.stop();
    dc.stop().await;
    let _ = std::fs::copy(
        tmp.path().join("nats/nats-server.log"),
        opts.out.join("nats-server.log"),
    );

    let truth = Truth {
        expected,
        mean_raw_bytes: RAW_BYTES_ESTIMATE,
    };
    // Message k of an account is due k / rate seconds after that account's first message.
    let schedule = |k: u64| Duration::from_secs_f64(k as f64 / rate.max(1e-9));
    let analysis = analyze(
        &accepted,
        &truth,
        &schedule,
        t0_us,
        duration.as_secs_f64(),
        scn.warmup.0.as_secs_f64(),
    );
    let d = analysis.delivery;
    let accounts = n as u32;
    let cpu_s = (end_proc.cpu_s - at_listen.cpu_s).max(0.0);
    let resources = Resources::measured(
        cpu_s,
        wall_s,
        &end_proc,
        &samples,
        accounts,
        neighbours,
        counts.stored,
    );
    let ceiling_ratio = ceiling.as_ref().map(|c| CeilingRatio::of(&d, c));
    let floor_ratio = floor
        .as_ref()
        .map(|f| FloorRatio::of(d.throughput_per_s, &f.live));
    let ok = d.lost == 0 && d.duplicates_stored == 0 && d.unexpected == 0;
    let targets = targets(
        &d,
        &resources,
        ceiling_ratio.as_ref(),
        floor_ratio.as_ref(),
        accounts,
    );
    Ok(RunReport {
        targets,
        scenario: scn.clone(),
        started_at,
        host,
        accounts,
        rate_per_account: rate,
        messages_per_account: scn.messages_per_account(rate),
        raw_message_bytes: RAW_BYTES_ESTIMATE,
        ceiling,
        ceiling_ratio,
        floor,
        floor_ratio,
        delivery: d,
        resources,
        switchboard: counts,
        ok,
        drain_timed_out,
        wall_s,
        bins: analysis.bins,
        samples,
        setup: Some(setup),
        replay: None,
    })
}

/// Imports every account (with its Telethon session string) through the admin API at `admin`
/// and consents it, a few at a time.
pub async fn import_and_consent(
    admin: &str,
    token: Option<&str>,
    accounts: &[i64],
    sessions: &[String],
) -> anyhow::Result<()> {
    futures::stream::iter(accounts.iter().zip(sessions))
        .map(|(me, session)| async move {
            post_as(
                admin,
                token,
                "/v1/accounts/import",
                &serde_json::json!({
                    "format": "telethon", "session": session, "account_id": me.to_string()
                }),
            )
            .await?;
            post_as(
                admin,
                token,
                &format!("/v1/accounts/{me}/consent"),
                &serde_json::json!({
                    "by": "tgingest-loadtest", "scope": "load test accounts on a fake DC"
                }),
            )
            .await
            .map(drop)
        })
        .buffer_unordered(ADMIN_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .context("import and consent the accounts")?;
    Ok(())
}

/// Waits until `listening` (how many accounts have their update stream subscribed on the fake
/// DC) reaches `n`, calling `alive` (which fails once a process it watches is gone) on every
/// poll; fails at `ready_by`.
pub async fn wait_listening(
    n: usize,
    mut listening: impl AsyncFnMut() -> anyhow::Result<usize>,
    ready_by: Instant,
    say: &impl Fn(String),
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut last_said = Instant::now();
    loop {
        alive()?;
        let listening = listening().await?;
        if listening == n {
            return Ok(());
        }
        if Instant::now() >= ready_by {
            bail!("only {listening} of {n} accounts were listening after the set-up timeout");
        }
        if last_said.elapsed() >= Duration::from_secs(5) {
            last_said = Instant::now();
            say(format!("{listening}/{n} accounts listening"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the driver sent: each expected event id with where it comes from, and the messages.
pub type Sent = (HashMap<String, Origin>, u64);

/// Sends `rate` messages/s per account into the fake DC (round-robin over the accounts, each
/// account's messages round-robin over its chats), for a duration or until stopped, keeping the
/// ground truth: each message's event id per account that sees it, if the policy keeps it.
pub struct Driver {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Sent>,
}

impl Driver {
    /// Starts sending; `duration` `None` sends until [`Driver::finish`].
    pub fn start(
        dc: Arc<FakeDc>,
        layout: Arc<FakeDcLayout>,
        policy: Arc<Policy>,
        rate: f64,
        duration: Option<Duration>,
    ) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let n = layout.accounts.len().max(1);
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let total_rate = rate * n as f64;
                let mut expected: HashMap<String, Origin> = HashMap::new();
                let (mut sent, mut next) = (0u64, 0usize);
                let mut turn = vec![0usize; n];
                let started = Instant::now();
                while duration.is_none_or(|d| started.elapsed() < d)
                    && !stop.load(Ordering::Relaxed)
                {
                    let due = (total_rate * started.elapsed().as_secs_f64()) as u64;
                    while sent < due {
                        let a = next % n;
                        next += 1;
                        let k = turn[a];
                        turn[a] += 1;
                        let text = format!("load message {sent}");
                        for id in layout.send(&dc, &policy, a, k, &text) {
                            expected.entry(id).or_insert(Origin {
                                account: a as u32,
                                position: k as u64,
                            });
                        }
                        sent += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (expected, sent)
            })
        };
        Driver { stop, task }
    }

    /// Whether a driver with a duration has sent everything.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops sending; returns the ground truth.
    pub async fn finish(self) -> anyhow::Result<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the message driver")
    }
}
