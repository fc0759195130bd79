//! `tgingest cluster status`: asks a running node's admin API for the cluster's nodes, who owns
//! which account, and why the others run nowhere (see [`crate::cluster::status`]).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::accounts::client::{AdminTarget, Client, ClientError};
use crate::config::Config;

/// `tgingest cluster …`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The nodes, the accounts each owns, and the accounts nobody owns with why
    Status {
        /// Print the node's JSON answer instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Runs `tgingest cluster …`: 0 shown, 1 the node refused, 2 usage, config, or no node.
pub async fn run(cfg: &Config, args: ClusterArgs) -> ExitCode {
    let shown = async {
        let client = Client::new(cfg, &args.target)?;
        let ClusterCommand::Status { json } = args.command;
        let status = client.call(Method::GET, "/v1/cluster", None).await?;
        if json {
            println!("{status:#}");
        } else {
            print!("{}", table(&status));
        }
        Ok::<_, ClientError>(())
    };
    match shown.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The status as text: one line per node, then the accounts nobody owns.
fn table(status: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let node = text(&status["node"]);
    if status["enabled"] != Value::Bool(true) {
        return format!(
            "node {node}: cluster.enabled is off; this node runs every account it may by itself\n"
        );
    }
    let mut out =
        format!("asked node {node}\n\nNODE  STATE  DRAINING  GENERATION  ACCOUNTS  CAPACITY\n");
    for n in status["nodes"].as_array().into_iter().flatten() {
        let accounts = n["accounts"].as_array().map_or(0, Vec::len);
        let capacity = match n["capacity"].as_u64() {
            Some(0) | None => "-".to_string(),
            Some(c) => c.to_string(),
        };
        out.push_str(&format!(
            "{}  {}  {}  {}  {accounts}  {capacity}\n",
            text(&n["node"]),
            text(&n["state"]),
            n["draining"],
            n["generation"],
        ));
    }
    let owned = status["owned"].as_array().map_or(0, Vec::len);
    let unowned = status["unowned"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "\n{owned} accounts owned, {} owned by nobody\n",
        unowned.len()
    ));
    for u in &unowned {
        let mut why = text(&u["reason"]);
        for key in ["error", "capacity", "last_owner", "target"] {
            match &u[key] {
                Value::String(v) => why.push_str(&format!(" ({key} {v})")),
                Value::Number(v) => why.push_str(&format!(" ({key} {v})")),
                _ => {}
            }
        }
        out.push_str(&format!("  {}  {why}\n", text(&u["account"])));
    }
    out
}
