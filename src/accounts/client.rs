//! `tgingest accounts …`: a thin client of the running node's admin API (the node owns the event
//! log, so it does every change and audits it). Exit codes as the rest of the CLI: 0 ok, 1 the
//! node refused or failed, 2 usage, config, or no node to talk to.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::control::{AccountView, LoginStateView, LoginView, fmt_us};
use crate::admin::ApiError;
use crate::config::Config;

/// `tgingest accounts …`.
#[derive(Args, Debug)]
pub struct AccountsArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    #[command(subcommand)]
    pub command: AccountsCommand,
}

/// Which node's admin API a client command talks to, and with which token.
#[derive(Args, Debug, Clone, Default)]
pub struct AdminTarget {
    /// Base URL of the node's admin API (default: http://<admin.listen>)
    #[arg(long, global = true, value_name = "URL")]
    pub admin_url: Option<String>,
    /// File holding your principal's token (default: $TGINGEST_ADMIN_TOKEN_FILE, the credential
    /// tgingest-admin-token, admin.token_file, else <data_dir>/admin.token)
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The account commands.
#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// List the accounts: state, consent, last event, login budget
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Log an account in: asks Telegram for a code, prompts for it, then for the 2FA password
    Add {
        /// The phone number, +<country><number>
        #[arg(long, value_name = "PHONE")]
        phone: String,
        /// The account's group (default: `default`); your principal needs `login` on it
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Import a Telethon or Pyrogram session string (prefer --session-file or --session-stdin:
    /// the other flags put the secret in the process list)
    #[command(group(clap::ArgGroup::new("source").required(true).args(["telethon_session", "pyrogram_session", "session_file", "session_stdin"])))]
    Import {
        /// Read the session string from this file (recommended)
        #[arg(long, value_name = "PATH", requires = "format")]
        session_file: Option<PathBuf>,
        /// Read the session string from standard input (recommended)
        #[arg(long, requires = "format")]
        session_stdin: bool,
        /// Format of --session-file / --session-stdin
        #[arg(long, value_enum)]
        format: Option<SessionFormat>,
        /// A Telethon string on the command line (discouraged: visible in the process list)
        #[arg(long, value_name = "STRING")]
        telethon_session: Option<String>,
        /// A Pyrogram string on the command line (discouraged: visible in the process list)
        #[arg(long, value_name = "STRING")]
        pyrogram_session: Option<String>,
        /// The account's Telegram user id (needed for Telethon strings, which do not carry it)
        #[arg(long, value_name = "ID")]
        account_id: Option<String>,
        /// The account's group (default: `default`); your principal needs `login` on it
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Record the owner's consent; the account starts ingesting (unless paused)
    Consent {
        /// Account id
        id: String,
        /// Who consented (a name or ticket)
        #[arg(long)]
        by: String,
        /// What was consented to
        #[arg(long)]
        scope: String,
    },
    /// Stop ingesting an account until resumed
    Pause {
        /// Account id
        id: String,
    },
    /// Resume a paused account
    Resume {
        /// Account id
        id: String,
    },
    /// Stop an account and delete its sealed session and registry record
    Remove {
        /// Account id
        id: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

/// Session string formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SessionFormat {
    Telethon,
    Pyrogram,
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no tgingest node answers at {url} — start `tgingest run` first (or pass --admin-url)")]
    NoNode { url: String },
    #[error(
        "the admin API is off (admin.listen is empty); set it, restart the node, or pass --admin-url"
    )]
    AdminOff,
    #[error("{0}")]
    Usage(String),
    #[error("{error} [{code}]")]
    Api { error: String, code: String },
    #[error("talking to the node at {url}: {message}")]
    Http { url: String, message: String },
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        source: std::io::Error,
    },
}

impl ClientError {
    /// 1 when the node refused or failed, 2 for usage, config, or no node to talk to.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::Api { .. } | ClientError::Http { .. } => ExitCode::FAILURE,
            _ => ExitCode::from(2),
        }
    }
}

/// An admin API client: base URL and bearer token from the config (or `--admin-url`).
pub(crate) struct Client {
    base: String,
    token: Option<zeroize::Zeroizing<String>>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the node `target` names (default: `admin.listen`), sending its token file's
    /// token (default: see [`crate::admin::client_token`]).
    pub(crate) fn new(cfg: &Config, target: &AdminTarget) -> Result<Client, ClientError> {
        let base = match target.admin_url.as_deref() {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if cfg.admin.listen.trim().is_empty() => return Err(ClientError::AdminOff),
            None => {
                let listen = cfg.admin.listen.trim();
                let listen = listen
                    .strip_prefix("0.0.0.0:")
                    .map_or_else(|| listen.to_string(), |port| format!("127.0.0.1:{port}"));
                format!("http://{listen}")
            }
        };
        let token = crate::admin::client_token(cfg, target.token_file.as_deref())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(90))
            .build()
            .map_err(|e| ClientError::Http {
                url: base.clone(),
                message: e.to_string(),
            })?;
        Ok(Client { base, token, http })
    }

    /// One request; a non-2xx answer becomes [`ClientError::Api`] with the node's reason.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.as_str());
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                ClientError::NoNode {
                    url: self.base.clone(),
                }
            } else {
                ClientError::Http {
                    url: self.base.clone(),
                    message: if e.is_timeout() {
                        "no answer in time".into()
                    } else {
                        "the request failed".into()
                    },
                }
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|_| ClientError::Http {
            url: self.base.clone(),
            message: "the answer could not be read".into(),
        })?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|_| ClientError::Http {
                url: self.base.clone(),
                message: format!("the answer ({status}) is not JSON: is this a tgingest node?"),
            });
        }
        match serde_json::from_str::<ApiError>(&text) {
            Ok(e) => Err(ClientError::Api {
                error: e.error,
                code: e.code,
            }),
            Err(_) => Err(ClientError::Http {
                url: self.base.clone(),
                message: format!("HTTP {status}: is this a tgingest node?"),
            }),
        }
    }
}

/// Runs `tgingest accounts …`.
pub async fn run(cfg: &Config, args: AccountsArgs) -> ExitCode {
    let result = async {
        let client = Client::new(cfg, &args.target)?;
        dispatch(&client, args.command).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

async fn dispatch(client: &Client, command: AccountsCommand) -> Result<(), ClientError> {
    use reqwest::Method;
    match command {
        AccountsCommand::List { json } => {
            let list = client.call(Method::GET, "/v1/accounts", None).await?;
            if json {
                println!("{list}");
            } else {
                let accounts: Vec<AccountView> =
                    serde_json::from_value(list["accounts"].clone()).unwrap_or_default();
                print!("{}", render_table(&accounts));
            }
            Ok(())
        }
        AccountsCommand::Add { phone, group } => add(client, &phone, group.as_deref()).await,
        AccountsCommand::Import {
            session_file,
            session_stdin,
            format,
            telethon_session,
            pyrogram_session,
            account_id,
            group,
        } => {
            let (format, session) = match (telethon_session, pyrogram_session) {
                (Some(s), _) => ("telethon", s),
                (_, Some(s)) => ("pyrogram", s),
                (None, None) => {
                    let format = match format {
                        Some(SessionFormat::Telethon) => "telethon",
                        Some(SessionFormat::Pyrogram) => "pyrogram",
                        None => {
                            return Err(ClientError::Usage(
                                "--format telethon|pyrogram is needed with --session-file and --session-stdin".into(),
                            ));
                        }
                    };
                    let session = match session_file {
                        Some(path) => {
                            std::fs::read_to_string(&path).map_err(|source| ClientError::Input {
                                what: path.display().to_string(),
                                source,
                            })?
                        }
                        None if session_stdin => {
                            let mut s = String::new();
                            std::io::stdin().read_to_string(&mut s).map_err(|source| {
                                ClientError::Input {
                                    what: "the session string from standard input".into(),
                                    source,
                                }
                            })?;
                            s
                        }
                        None => return Err(ClientError::Usage("no session given".into())),
                    };
                    (format, session)
                }
            };
            let mut body = json!({"format": format, "session": session.trim()});
            if let Some(id) = account_id {
                body["account_id"] = json!(id);
            }
            if let Some(group) = group {
                body["group"] = json!(group);
            }
            let view = client
                .call(Method::POST, "/v1/accounts/import", Some(body))
                .await?;
            let id = view["account_id"].as_str().unwrap_or("?");
            println!(
                "imported account {id}; it waits for consent: tgingest accounts consent {id} --by <who> --scope <what>"
            );
            Ok(())
        }
        AccountsCommand::Consent { id, by, scope } => {
            let view = client
                .call(
                    Method::POST,
                    &format!("/v1/accounts/{id}/consent"),
                    Some(json!({"by": by, "scope": scope})),
                )
                .await?;
            println!(
                "consent recorded for account {id}; state: {}",
                state_of(&view)
            );
            Ok(())
        }
        AccountsCommand::Pause { id } => {
            let view = client
                .call(Method::POST, &format!("/v1/accounts/{id}/pause"), None)
                .await?;
            println!("account {id} paused; state: {}", state_of(&view));
            Ok(())
        }
        AccountsCommand::Resume { id } => {
            let view = client
                .call(Method::POST, &format!("/v1/accounts/{id}/resume"), None)
                .await?;
            println!("account {id} resumed; state: {}", state_of(&view));
            Ok(())
        }
        AccountsCommand::Remove { id, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(ClientError::Usage(
                        "remove deletes the account's session for good; pass --yes to confirm"
                            .into(),
                    ));
                }
                let answer = prompt(&format!(
                    "Remove account {id} and delete its session for good? Type the id to confirm: "
                ))?;
                if answer.trim() != id {
                    return Err(ClientError::Usage(
                        "not confirmed; nothing was removed".into(),
                    ));
                }
            }
            client
                .call(Method::DELETE, &format!("/v1/accounts/{id}"), None)
                .await?;
            println!("account {id} removed; its sealed session is deleted");
            Ok(())
        }
    }
}

fn state_of(view: &Value) -> String {
    view["lifecycle"]["state"]
        .as_str()
        .unwrap_or("unknown")
        .to_string()
}

fn budget_line(view: &LoginView) -> String {
    format!(
        "login budget: {} of {} attempts left today{}",
        view.budget.remaining,
        view.budget.limit,
        view.budget
            .resets_at_us
            .map(|t| format!(" (one more frees up at {})", fmt_us(Some(t))))
            .unwrap_or_default()
    )
}

async fn add(client: &Client, phone: &str, group: Option<&str>) -> Result<(), ClientError> {
    use reqwest::Method;
    let mut body = json!({ "phone": phone });
    if let Some(group) = group {
        body["group"] = json!(group);
    }
    let start = client.call(Method::POST, "/v1/logins", Some(body)).await?;
    let mut view: LoginView = parse_login(start)?;
    eprintln!("Telegram sent a login code; {}", budget_line(&view));
    let id = view.login_id.clone();
    loop {
        match &view.state {
            LoginStateView::AwaitingCode => {
                let code = prompt("Login code: ")?;
                match client
                    .call(
                        Method::POST,
                        &format!("/v1/logins/{id}/code"),
                        Some(json!({"code": code.trim()})),
                    )
                    .await
                {
                    Ok(v) => view = parse_login(v)?,
                    Err(ClientError::Api { code, error }) if code == "invalid_code" => {
                        eprintln!("{error}");
                    }
                    Err(e) => return Err(e),
                }
            }
            LoginStateView::AwaitingPassword { hint } => {
                let label = match hint {
                    Some(h) => format!("2FA password (hint: {h}): "),
                    None => "2FA password: ".to_string(),
                };
                let password = read_password(&label)?;
                match client
                    .call(
                        Method::POST,
                        &format!("/v1/logins/{id}/password"),
                        Some(json!({"password": password})),
                    )
                    .await
                {
                    Ok(v) => view = parse_login(v)?,
                    Err(ClientError::Api { code, error }) if code == "invalid_password" => {
                        eprintln!("{error}");
                    }
                    Err(e) => return Err(e),
                }
            }
            LoginStateView::PendingConsent { account_id } => {
                println!(
                    "logged in as account {account_id}; it waits for consent: tgingest accounts consent {account_id} --by <who> --scope <what>"
                );
                return Ok(());
            }
        }
    }
}

fn parse_login(v: Value) -> Result<LoginView, ClientError> {
    serde_json::from_value(v).map_err(|_| ClientError::Http {
        url: String::new(),
        message: "the login answer is not what this client expects (another tgingest version?)"
            .into(),
    })
}

/// Asks on stderr, reads one line from stdin.
fn prompt(label: &str) -> Result<String, ClientError> {
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| ClientError::Input {
            what: "standard input".into(),
            source,
        })?;
    if read == 0 {
        return Err(ClientError::Usage(
            "standard input ended before the answer was given".into(),
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a password without echo when stdin is a terminal (termios), else one line of stdin.
fn read_password(label: &str) -> Result<String, ClientError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return prompt(label);
    }
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr on our own stdin with a zeroed, then filled, termios struct.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return prompt(label);
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let result = prompt(label);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    result
}

/// The `accounts list` table.
pub fn render_table(accounts: &[AccountView]) -> String {
    if accounts.is_empty() {
        return "no accounts; add one with `tgingest accounts add --phone …` or `tgingest accounts import …`\n".into();
    }
    let mut out = format!(
        "{:<14} {:<16} {:<8} {:<16} {:<22} {}\n",
        "ACCOUNT", "STATE", "DESIRED", "ADDED VIA", "LAST EVENT", "LOGIN BUDGET"
    );
    for a in accounts {
        let desired = match a.desired {
            super::registry::Desired::Active => "active",
            super::registry::Desired::Paused => "paused",
        };
        let via = match a.added_via {
            super::registry::AddedVia::Login => "login",
            super::registry::AddedVia::TelethonImport => "telethon import",
            super::registry::AddedVia::PyrogramImport => "pyrogram import",
        };
        let last = a
            .last_event_at_us
            .map_or_else(|| "-".to_string(), |t| fmt_us(Some(t)));
        let budget = a.login_budget.as_ref().map_or_else(
            || "-".to_string(),
            |b| format!("{}/{} left", b.remaining, b.limit),
        );
        out.push_str(&format!(
            "{:<14} {:<16} {:<8} {:<16} {:<22} {}\n",
            a.account_id,
            a.lifecycle.name(),
            desired,
            via,
            last,
            budget
        ));
    }
    out
}
