//! `tgingest replay`: asks the running node to re-deliver what `TG_CLEAN` holds (the node owns
//! the event log and audits it), then follows the replay's progress until it ends.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde_json::json;

use crate::accounts::client::{AdminTarget, Client, ClientError};
use crate::config::Config;
use crate::pipeline::replay::{ReplayProgress, ReplayState};

/// How often progress is asked for while waiting.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// `tgingest replay`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["since", "from_sequence", "cancel"])))]
pub struct ReplayArgs {
    /// Replay events stored in TG_CLEAN at or after this time: RFC 3339 (2026-11-21T12:00:00Z) or
    /// a duration ago (90m, 2h, 3d, 1h30m)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Replay from this TG_CLEAN stream sequence (1 = everything the stream still holds)
    #[arg(long, value_name = "N")]
    pub from_sequence: Option<u64>,
    /// Stop before events stored after this time, in the same forms as --since (default: what
    /// TG_CLEAN holds now)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this account's events
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// Print the replay id and return instead of following its progress
    #[arg(long)]
    pub no_wait: bool,
    /// Cancel the running replay with this id instead of starting one
    #[arg(long, value_name = "ID", conflicts_with_all = ["since", "from_sequence", "until", "account"])]
    pub cancel: Option<String>,
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Runs `tgingest replay`: 0 finished, 1 the node refused, or the replay failed or was
/// cancelled, 2 usage, config, or no node answering.
pub async fn run(cfg: &Config, args: ReplayArgs) -> ExitCode {
    match replay(cfg, args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

async fn replay(cfg: &Config, args: ReplayArgs) -> Result<bool, ClientError> {
    let client = Client::new(cfg, &args.target)?;
    if let Some(id) = args.cancel {
        client
            .call(Method::DELETE, &format!("/v1/replays/{id}"), None)
            .await?;
        println!("replay {id} is being cancelled");
        return Ok(true);
    }
    let body = json!({
        "since": args.since,
        "from_sequence": args.from_sequence,
        "until": args.until,
        "account": args.account,
    });
    let started = parse(client.call(Method::POST, "/v1/replays", Some(body)).await?)?;
    let id = started.id.clone();
    println!(
        "replay {id} started: TG_CLEAN up to sequence {}{}",
        started.last_sequence,
        started
            .account
            .as_ref()
            .map(|a| format!(", account {a}"))
            .unwrap_or_default()
    );
    if args.no_wait {
        println!(
            "follow it with: curl …/v1/replays/{id}; cancel it with: tgingest replay --cancel {id}"
        );
        return Ok(true);
    }
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let p = parse(
            client
                .call(Method::GET, &format!("/v1/replays/{id}"), None)
                .await?,
        )?;
        eprintln!("{}", line(&p));
        if p.state != ReplayState::Running {
            println!(
                "replay {id} {}: scanned {}, stored again {}, already stored {}, rejected {} (dead-lettered){}",
                format!("{:?}", p.state).to_lowercase(),
                p.scanned,
                p.accepted,
                p.duplicates,
                p.rejected,
                p.error.map(|e| format!("; error: {e}")).unwrap_or_default()
            );
            return Ok(p.state == ReplayState::Finished);
        }
    }
}

fn line(p: &ReplayProgress) -> String {
    format!(
        "{:<9} sequence {} of {}: scanned {}, stored again {}, already stored {}, rejected {}",
        format!("{:?}", p.state).to_lowercase(),
        p.position
            .map_or_else(|| "-".to_string(), |s| s.to_string()),
        p.last_sequence,
        p.scanned,
        p.accepted,
        p.duplicates,
        p.rejected
    )
}

fn parse(v: serde_json::Value) -> Result<ReplayProgress, ClientError> {
    serde_json::from_value(v).map_err(|_| ClientError::Http {
        url: String::new(),
        message: "the replay answer is not what this client expects (another tgingest version?)"
            .into(),
    })
}
