//! `tgingest-loadtest`: runs load scenarios against a real tgingest process on loopback and
//! measures it against the floor (a reference pipeline) and the bus ceiling of the same run.
//!
//! `tgingest-loadtest run loadtest/scenarios/<name>.toml --out <dir> [--step]`

mod admin;
mod analysis;
mod ceiling;
mod child;
mod failover;
mod fakedc;
mod floor;
mod idle;
mod monitor;
mod nodes;
mod procs;
mod remote_dc;
mod remote_switchboard;
mod replay;
mod report;
mod run;
mod scenario;
mod soak;
mod stage;
mod step;
mod truth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::scenario::Scenario;

#[derive(Parser, Debug)]
#[command(name = "tgingest-loadtest", version = tgingest::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario file and write report.json and report.svg to --out
    Run {
        /// A scenario file (loadtest/scenarios/*.toml)
        scenario: PathBuf,
        /// Report folder (created); default loadtest/reports/<scenario name>
        #[arg(long)]
        out: Option<PathBuf>,
        /// Step mode: raise the rate until latency or loss breaks
        #[arg(long)]
        step: bool,
        /// The tgingest binary; default: the one next to this executable
        #[arg(long)]
        tgingest: Option<PathBuf>,
        /// Progress lines off
        #[arg(long)]
        quiet: bool,
    },
    /// Parse and check scenario files without running them
    Check {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// The fake Switchboard as a helper process of `run` (control on stdin/stdout)
    #[command(hide = true)]
    ServeSwitchboard,
    /// The fake Telegram DC as a helper process of `run` (control on stdin/stdout)
    #[command(hide = true)]
    ServeFakeDc,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (scenario, out, step, tgingest, quiet) = match cli.command {
        Command::Run {
            scenario,
            out,
            step,
            tgingest,
            quiet,
        } => (scenario, out, step, tgingest, quiet),
        Command::Check { scenarios } => return check(&scenarios),
        Command::ServeSwitchboard => return serve("fake Switchboard", remote_switchboard::serve()),
        Command::ServeFakeDc => return serve("fake DC", remote_dc::serve()),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C the run future is dropped, so its guards stop tgingest, nats-server and the fakes.
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(scenario, out, step, tgingest, quiet) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; stopped tgingest, nats-server and the fakes")),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a helper process's service until its stdin ends.
fn serve(name: &str, service: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    tgingest::telemetry::install_crypto_provider();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(service));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {name}: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in paths {
        match Scenario::parse(path) {
            Ok(s) => match s.available() {
                Ok(()) => println!("{}: OK ({})", path.display(), s.name),
                Err(e) => println!("{}: parses; {e}", path.display()),
            },
            Err(e) => {
                ok = false;
                eprintln!("error: {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Returns whether the run kept the guarantees (nothing lost, nothing stored twice).
async fn run(
    path: PathBuf,
    out: Option<PathBuf>,
    step: bool,
    tgingest: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<bool> {
    tgingest::telemetry::install_crypto_provider();
    let scn = Scenario::load(&path)?;
    let out = out.unwrap_or_else(|| PathBuf::from("loadtest/reports").join(&scn.name));
    std::fs::create_dir_all(&out)?;
    let bin = procs::tgingest_binary(tgingest.as_deref())?;
    let say = |m: String| {
        if !quiet {
            eprintln!("[{}] {m}", scn.name);
        }
    };
    if scn.cluster.enabled {
        let report = failover::run(&scn, &bin, &out, &say).await?;
        report::write_with_plot(
            &out,
            &report,
            &failover::plot(&report),
            &failover::render(&report),
        )?;
        return Ok(report.ok);
    }
    if scn.crash.enabled {
        let report = soak::run(&scn, &bin, &out, &say).await?;
        report::write_with_plot(&out, &report, &soak::plot(&report), &soak::render(&report))?;
        return Ok(report.ok);
    }
    if step && scn.replay.enabled {
        anyhow::bail!(
            "scenario {}: --step runs have no replay phase; run it without --step",
            scn.name
        );
    }
    if step || scn.step.enabled {
        let report = step::run_steps(&scn, &bin, &out, quiet).await?;
        std::fs::write(
            out.join("step-report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        println!(
            "step mode: highest sustainable rate {} pos/s per account ({} events/s), {} x floor, {:.4} x publish ceiling; p99 at half that rate {} ms",
            report
                .highest_sustainable_rate_per_account
                .map_or("none".into(), |r| format!("{r}")),
            report
                .highest_sustainable_throughput_per_s
                .map_or("-".into(), |t| format!("{t:.0}")),
            report
                .ratio_to_floor
                .map_or("-".into(), |r| format!("{r:.3}")),
            report.ratio_to_publish_ceiling.unwrap_or(0.0),
            report
                .half_rate
                .as_ref()
                .map_or("-".into(), |h| format!("{:.1}", h.latency_p99_ms)),
        );
        println!("report: {}", out.join("step-report.json").display());
        return Ok(true);
    }
    let report = run::run_once(
        &scn,
        &stage::RunOptions {
            tgingest: bin,
            out: out.clone(),
            ceiling: None,
            floor: None,
            quiet,
        },
    )
    .await?;
    report::write(&out, &report)?;
    print!("{}", report::render(&report));
    println!(
        "report: {} and {}",
        out.join("report.json").display(),
        out.join("report.svg").display()
    );
    Ok(report.ok)
}
