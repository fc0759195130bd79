//! What the admin API does to accounts: import, log in, consent, pause, resume, remove, list.
//!
//! [`AccountsControl`] keeps the registry (`TG_ACCOUNTS`), the sealed sessions (`TG_SESSIONS`)
//! and the running account actors in step: an account runs exactly when it has a session, a
//! consent record, and is not paused. Every operator action is an audit record in the event log,
//! written (flushed) before the answer goes out. No phone number, code, password or session byte
//! reaches a log line, an audit record or an error text.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::budget::{BudgetError, BudgetStatus, LoginBudget};
use super::lifecycle::Lifecycle;
use super::login::{
    LoggedIn, LoginBackend, LoginFailure, LoginMsg, LoginState, Sensitive, SignInOutcome,
    spawn_login, step,
};
use super::registry::{
    AccountRecord, AddedVia, Consent, Desired, Registry, RegistryError, phone_hash,
    valid_account_id,
};
use crate::admin::principals::{DEFAULT_GROUP, valid_group};
use crate::bus::raw_subject;
use crate::event::ChatKind;
use crate::eventlog::{AuditEntry, Durability, EventLog, EventLogError};
use crate::pipeline::account::{AccountMsg, AccountStatus};
use crate::pipeline::{AccountParts, account_actor_name, account_child_name, start_account};
use crate::supervision::{
    ChildState, SupervisorCallError, SupervisorMsg, SupervisorStatus, status, stop_child,
};
use crate::telegram::session::{
    ImportError, SessionStore, StoreError, import_pyrogram, import_telethon,
};

/// Counter of audited account and login actions, labelled `action` (`account.consent`,
/// `login.refused`, …).
pub const METRIC_ACTIONS: &str = "tgingest_account_actions_total";
/// Who audit records name as the actor of an admin-API action.
pub const ADMIN_ACTOR: &str = "admin-api";
/// How long stopping an account waits for its actor to finish (it settles its PubAcks for up to
/// 10 s, then checkpoints and closes its client).
const STOP_WAIT: Duration = Duration::from_secs(20);
/// A login that saw no step for this long is forgotten (its code has expired by then anyway).
pub const LOGIN_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Why an account or login action failed; each names what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Session(#[from] StoreError),
    #[error("the session string cannot be imported: {0}")]
    Import(#[from] ImportError),
    #[error("cannot write the audit record, so nothing was changed: {0}")]
    EventLog(#[from] EventLogError),
    #[error("the node's supervisor: {0}")]
    Supervisor(#[from] SupervisorCallError),
    #[error(
        "a {format} session string does not say which account it belongs to: send \
         \"account_id\" (the account's numeric Telegram user id) with it"
    )]
    AccountIdNeeded { format: &'static str },
    #[error(
        "account_id {given} does not match the user id {in_session} the session string carries; \
         leave account_id out or correct it"
    )]
    AccountIdMismatch { given: String, in_session: String },
    #[error("the session belongs to Telegram's test servers; only production sessions can ingest")]
    TestModeSession,
    #[error("format {0:?} is not known: use \"telethon\" or \"pyrogram\"")]
    UnknownFormat(String),
    #[error(
        "login {0} is not known (finished, cancelled or expired); start a new one with POST /v1/logins"
    )]
    LoginNotFound(String),
    #[error("login {id} is {state}, not waiting for a {wanted}")]
    LoginWrongStep {
        id: String,
        state: &'static str,
        wanted: &'static str,
    },
    #[error("{0}")]
    Login(#[from] LoginFailure),
    #[error(
        "the login budget of this phone number is used up ({} of {} attempts in 24 h, {} left); \
         the next attempt is allowed at {}", status.used, status.limit, status.remaining,
         fmt_us(status.resets_at_us)
    )]
    BudgetExhausted { status: BudgetStatus },
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("{0}")]
    BadRequest(String),
}

/// A group label as given in a request: `None` or `default` mean no label; anything else must be
/// a valid label ([`valid_group`]).
fn checked_group(group: Option<&str>) -> Result<Option<String>, ControlError> {
    match group.map(str::trim) {
        None | Some(DEFAULT_GROUP) => Ok(None),
        Some(g) if valid_group(g) => Ok(Some(g.to_string())),
        Some(g) => Err(ControlError::BadRequest(format!(
            "group {:?} is not a group label: use 1 to 64 letters, digits, `-` or `_`",
            g.chars().take(70).collect::<String>()
        ))),
    }
}

/// A time (microseconds since the epoch) as RFC 3339 UTC, for messages.
pub fn fmt_us(us: Option<i64>) -> String {
    us.and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
        .map_or_else(|| "now".to_string(), |t| t.to_string())
}

impl ControlError {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ControlError::Registry(RegistryError::NotFound { .. })
            | ControlError::LoginNotFound(_) => 404,
            ControlError::Registry(RegistryError::Exists { .. })
            | ControlError::Registry(RegistryError::Conflict { .. })
            | ControlError::LoginWrongStep { .. } => 409,
            ControlError::Registry(RegistryError::BadAccountId { .. })
            | ControlError::Session(StoreError::BadAccountId { .. })
            | ControlError::Import(_)
            | ControlError::AccountIdNeeded { .. }
            | ControlError::AccountIdMismatch { .. }
            | ControlError::TestModeSession
            | ControlError::UnknownFormat(_)
            | ControlError::BadRequest(_) => 400,
            ControlError::Login(f) => match f {
                LoginFailure::InvalidCode
                | LoginFailure::InvalidPassword
                | LoginFailure::CodeExpired
                | LoginFailure::PhoneInvalid
                | LoginFailure::SignUpRequired => 422,
                LoginFailure::PhoneBanned => 403,
                LoginFailure::FloodWait { .. } => 429,
                LoginFailure::NotConfigured => 503,
                LoginFailure::Timeout | LoginFailure::Network(_) | LoginFailure::Other(_) => 502,
                LoginFailure::Crashed => 500,
            },
            ControlError::BudgetExhausted { .. } => 429,
            _ => 500,
        }
    }

    /// The machine-readable code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Registry(RegistryError::NotFound { .. }) => "account_not_found",
            ControlError::Registry(RegistryError::Exists { .. }) => "account_exists",
            ControlError::Registry(RegistryError::Conflict { .. }) => "conflict",
            ControlError::Registry(RegistryError::BadAccountId { .. })
            | ControlError::Session(StoreError::BadAccountId { .. }) => "bad_account_id",
            ControlError::Registry(_) => "registry_error",
            ControlError::Session(_) => "session_store_error",
            ControlError::Import(_) => "bad_session",
            ControlError::EventLog(_) => "audit_failed",
            ControlError::Supervisor(_) => "supervisor_error",
            ControlError::AccountIdNeeded { .. } => "account_id_required",
            ControlError::AccountIdMismatch { .. } => "account_id_mismatch",
            ControlError::TestModeSession => "test_mode_session",
            ControlError::UnknownFormat(_) => "unknown_format",
            ControlError::LoginNotFound(_) => "login_not_found",
            ControlError::LoginWrongStep { .. } => "wrong_login_step",
            ControlError::Login(f) => f.code(),
            ControlError::BudgetExhausted { .. } => "login_budget_exhausted",
            ControlError::Budget(_) => "login_budget_error",
            ControlError::BadRequest(_) => "bad_request",
        }
    }

    /// The login budget to show with the error, if it concerns one.
    pub fn budget(&self) -> Option<&BudgetStatus> {
        match self {
            ControlError::BudgetExhausted { status } => Some(status),
            _ => None,
        }
    }
}

/// One account as `GET /v1/accounts` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountView {
    pub account_id: String,
    /// The account's group (`default` when it has no label).
    #[serde(default)]
    pub group: String,
    /// Where the account stands: from its running actor, else from the registry.
    pub lifecycle: Lifecycle,
    pub desired: Desired,
    pub added_via: AddedVia,
    pub added_at_us: i64,
    pub consent: Option<Consent>,
    pub display_name: Option<String>,
    pub username: Option<String>,
    /// Whether a sealed session is stored.
    pub has_session: bool,
    /// Time of the newest event in TG_RAW from this account (microseconds since the epoch).
    pub last_event_at_us: Option<i64>,
    /// Events published and not yet acknowledged by JetStream, when the actor runs.
    pub in_flight: Option<usize>,
    /// Parked by a FLOOD_WAIT until then, if known.
    pub flood_wait_until_us: Option<i64>,
    /// Restarts of the account's actor on this node.
    pub restarts: u32,
    /// The last failure of the account's actor, if any.
    pub last_error: Option<String>,
    /// The login budget of the phone number the account logged in with (logins only).
    pub login_budget: Option<BudgetStatus>,
}

/// An import request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    Telethon,
    Pyrogram,
}

impl ImportFormat {
    /// Parses "telethon" / "pyrogram".
    pub fn parse(text: &str) -> Result<Self, ControlError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "telethon" => Ok(ImportFormat::Telethon),
            "pyrogram" => Ok(ImportFormat::Pyrogram),
            _ => Err(ControlError::UnknownFormat(text.chars().take(20).collect())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ImportFormat::Telethon => "telethon",
            ImportFormat::Pyrogram => "pyrogram",
        }
    }
}

/// What a login step answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginView {
    pub login_id: String,
    #[serde(flatten)]
    pub state: LoginStateView,
    pub budget: BudgetStatus,
}

/// [`LoginState`] for (de)serialising in clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LoginStateView {
    AwaitingCode,
    AwaitingPassword { hint: Option<String> },
    PendingConsent { account_id: String },
}

impl From<LoginState> for LoginStateView {
    fn from(s: LoginState) -> Self {
        match s {
            LoginState::AwaitingCode => LoginStateView::AwaitingCode,
            LoginState::AwaitingPassword { hint } => LoginStateView::AwaitingPassword { hint },
            LoginState::PendingConsent { account_id } => {
                LoginStateView::PendingConsent { account_id }
            }
        }
    }
}

struct LoginEntry {
    actor: ActorRef<LoginMsg>,
    phone_hash: String,
    state: LoginState,
    last_step: Instant,
    /// The group the account goes to (none: `default`).
    group: Option<String>,
}

impl Drop for LoginEntry {
    fn drop(&mut self) {
        self.actor.stop(Some("login over".into()));
    }
}

/// Keeps registry, sessions and running account actors in step; the admin API's back end.
pub struct AccountsControl {
    node_id: String,
    registry: Registry,
    sessions: SessionStore,
    eventlog: Arc<EventLog>,
    supervisor: ActorRef<SupervisorMsg>,
    parts: AccountParts,
    backend: Arc<dyn LoginBackend>,
    budget: LoginBudget,
    phone_key: crate::keys::DerivedKey,
    logins: Mutex<HashMap<String, LoginEntry>>,
    /// Serialises actions on accounts, so a pause and a resume cannot interleave.
    actions: Mutex<()>,
    /// Whether the cluster's controller decides where accounts run (then admin actions only
    /// change the registry, and [`AccountsControl::start_owned`] starts what was claimed here).
    clustered: bool,
    /// In a cluster: the accounts the controller started here (the ones this node reports).
    owned: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// In a cluster: the accounts that run nowhere (paused, session ended) that this node
    /// speaks for (heartbeats, the lifecycle gauge), as of the controller's last round.
    spoken_for: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// What [`AccountsControl::new`] is built from.
pub struct ControlParts {
    pub node_id: String,
    pub registry: Registry,
    pub sessions: SessionStore,
    pub eventlog: Arc<EventLog>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub account_parts: AccountParts,
    pub backend: Arc<dyn LoginBackend>,
    pub budget: LoginBudget,
    /// Keys the phone-number hashes (derived from the master key).
    pub phone_key: crate::keys::DerivedKey,
    /// The cluster's controller starts accounts, not the admin actions (`cluster.enabled`).
    pub clustered: bool,
}

/// An admin-API audit record; `principal` (the caller) is in its details as `principal`.
fn audit_entry(
    principal: &str,
    action: &str,
    account: Option<&str>,
    details: &[(&str, String)],
) -> AuditEntry {
    let mut details = details
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect::<BTreeMap<_, _>>();
    details.insert("principal".into(), principal.to_string());
    AuditEntry {
        action: action.into(),
        actor: ADMIN_ACTOR.into(),
        account_id: account.map(str::to_string),
        details,
    }
}

impl AccountsControl {
    /// Builds the control; call [`AccountsControl::reconcile`] to start what may run.
    pub fn new(parts: ControlParts) -> Self {
        AccountsControl {
            node_id: parts.node_id,
            registry: parts.registry,
            sessions: parts.sessions,
            eventlog: parts.eventlog,
            supervisor: parts.supervisor,
            parts: parts.account_parts,
            backend: parts.backend,
            budget: parts.budget,
            phone_key: parts.phone_key,
            logins: Mutex::new(HashMap::new()),
            actions: Mutex::new(()),
            clustered: parts.clustered,
            owned: Default::default(),
            spoken_for: Default::default(),
        }
    }

    /// The registry this control writes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The node this control runs accounts on.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn audit(
        &self,
        principal: &str,
        action: &str,
        account: Option<&str>,
        details: &[(&str, String)],
    ) -> Result<(), ControlError> {
        self.eventlog
            .audit(
                &audit_entry(principal, action, account, details),
                Durability::Flushed,
            )
            .await?;
        metrics::counter!(METRIC_ACTIONS, "action" => action.to_string()).increment(1);
        Ok(())
    }

    /// Starts every account that may run and is not running yet; returns how many it started.
    pub async fn reconcile(&self) -> Result<usize, ControlError> {
        let _guard = self.actions.lock().await;
        let mut started = 0;
        for record in self.registry.list().await? {
            if record.may_run() && self.start_if_ready(&record).await? {
                started += 1;
            }
            // Not started again, still counted: it needs an operator. (In a cluster the node
            // that speaks for it counts it; see `wanted`.)
            if let Some(ended) = record.ended.as_ref().filter(|_| !self.clustered) {
                self.parts
                    .stats
                    .lifecycles
                    .hold_ended(&record.account_id, &ended.state);
            }
        }
        Ok(started)
    }

    /// Starts the actor of `record` if it may run and has a session; returns whether it did.
    /// In a cluster only the controller starts accounts ([`AccountsControl::start_owned`]): it
    /// sees the registry change on its next round.
    async fn start_if_ready(&self, record: &AccountRecord) -> Result<bool, ControlError> {
        if self.clustered {
            return Ok(false);
        }
        self.start_here(record, 0).await
    }

    /// The accounts that have a sealed session.
    pub async fn with_session(&self) -> Result<std::collections::BTreeSet<String>, ControlError> {
        Ok(self.sessions.accounts().await?.into_iter().collect())
    }

    /// The accounts that should run somewhere: consented, not paused, session not ended, with a
    /// sealed session. Of the consented ones that run nowhere (paused, session ended), this node
    /// speaks for those `speaks_for` gives it: it heartbeats them, and counts the ended ones in
    /// the lifecycle gauge (and forgets the others), so each is reported by one node.
    pub async fn wanted(
        &self,
        speaks_for: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<String>, ControlError> {
        let sessions = self.with_session().await?;
        let tally = &self.parts.stats.lifecycles;
        let mut wanted = Vec::new();
        let mut spoken = std::collections::BTreeSet::new();
        for r in self.registry.list().await? {
            if r.may_run() {
                if sessions.contains(&r.account_id) {
                    wanted.push(r.account_id);
                }
                continue;
            }
            let mine = r.consent.is_some() && speaks_for(&r.account_id);
            if let Some(ended) = &r.ended {
                if mine {
                    tally.hold_ended(&r.account_id, &ended.state);
                } else if !self.owned_here().contains(&r.account_id) {
                    tally.forget(&r.account_id);
                }
            }
            if mine {
                spoken.insert(r.account_id);
            }
        }
        *self.spoken_for.lock().unwrap_or_else(|p| p.into_inner()) = spoken;
        Ok(wanted)
    }

    /// Starts an account the cluster's controller claimed for this node, if it may still run;
    /// returns whether it started it.
    /// `epoch` is the claim's: every write of the account's state carries it, and is refused
    /// once a newer owner has claimed that state.
    pub async fn start_owned(&self, account: &str, epoch: u64) -> Result<bool, ControlError> {
        let _guard = self.actions.lock().await;
        self.owned_here().insert(account.to_string());
        match self.registry.get(account).await? {
            Some(record) => self.start_here(&record, epoch).await,
            None => Ok(false),
        }
    }

    fn owned_here(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        // A set of ids: a panic elsewhere cannot leave it half-updated.
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops an account's actor here and waits until its checkpoint is written and its client
    /// closed. Not behind the actions lock: the controller stops many accounts at once (a
    /// leaving node), and stopping twice is harmless.
    pub async fn stop_owned(&self, account: &str) -> Result<(), ControlError> {
        self.owned_here().remove(account);
        self.stop(account).await
    }

    async fn start_here(&self, record: &AccountRecord, epoch: u64) -> Result<bool, ControlError> {
        if !record.may_run() || self.sessions.get(&record.account_id).await?.is_none() {
            return Ok(false);
        }
        let name = account_child_name(&record.account_id);
        let running = status(&self.supervisor)
            .await?
            .child(&name)
            .is_some_and(|c| {
                matches!(c.state, ChildState::Running | ChildState::Restarting { .. })
            });
        if running {
            return Ok(false);
        }
        match start_account(&self.supervisor, &self.parts, &record.account_id, epoch).await {
            Ok(()) => {}
            // A failed first start is supervised (restart scheduled or permanent); list shows it.
            Err(SupervisorCallError::StartChild(e)) => {
                tracing::warn!(account = %crate::telemetry::hash_id(&record.account_id), error = %e,
                    "account actor did not start");
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(account = %crate::telemetry::hash_id(&record.account_id), "account started");
        Ok(true)
    }

    /// Stops the account's actor and waits until it is gone: its last events acknowledged,
    /// its checkpoint written and its client closed (the supervisor's stop only asks).
    async fn stop(&self, account: &str) -> Result<(), ControlError> {
        let actor = ActorRef::<AccountMsg>::where_is(account_actor_name(&self.node_id, account));
        stop_child(&self.supervisor, &account_child_name(account)).await?;
        if let Some(actor) = actor
            && actor.wait(Some(STOP_WAIT)).await.is_err()
        {
            tracing::warn!(account = %crate::telemetry::hash_id(account), wait = ?STOP_WAIT,
                "an account actor did not stop in time; going on without it");
        }
        Ok(())
    }

    /// Decodes, checks and seals a session string, and registers the account (pending consent).
    pub async fn import(
        &self,
        format: ImportFormat,
        session: &Sensitive,
        account_id: Option<&str>,
        group: Option<&str>,
        principal: &str,
    ) -> Result<AccountView, ControlError> {
        let group = checked_group(group)?;
        let snapshot = match format {
            ImportFormat::Telethon => import_telethon(session.expose())?,
            ImportFormat::Pyrogram => import_pyrogram(session.expose())?,
        };
        if snapshot.test_mode {
            return Err(ControlError::TestModeSession);
        }
        let in_session = snapshot.user_id.map(|id| id.to_string());
        let account = match (
            account_id.map(str::trim).filter(|s| !s.is_empty()),
            in_session,
        ) {
            (Some(given), Some(found)) if given != found => {
                return Err(ControlError::AccountIdMismatch {
                    given: given.chars().take(24).collect(),
                    in_session: found,
                });
            }
            (_, Some(found)) => found,
            (Some(given), None) => given.to_string(),
            (None, None) => {
                return Err(ControlError::AccountIdNeeded {
                    format: format.name(),
                });
            }
        };
        valid_account_id(&account)?;
        let _guard = self.actions.lock().await;
        let via = match format {
            ImportFormat::Telethon => AddedVia::TelethonImport,
            ImportFormat::Pyrogram => AddedVia::PyrogramImport,
        };
        let mut record = AccountRecord::new(&account, via);
        record.group = group.clone();
        self.audit(
            principal,
            "account.import",
            Some(&account),
            &[
                ("format", format.name().to_string()),
                ("home_dc", snapshot.home_dc.to_string()),
                ("group", record.group().to_string()),
            ],
        )
        .await?;
        // The record first: a second import of the same account must not overwrite its session.
        self.registry.create(&record).await?;
        if let Err(e) = self.sessions.put(&account, &snapshot).await {
            let _ = self.registry.remove(&account).await;
            return Err(e.into());
        }
        tracing::info!(account = %crate::telemetry::hash_id(&account), format = format.name(),
            "account imported; waiting for consent");
        self.view(&record).await
    }

    /// Records consent and starts the account if it is active.
    pub async fn consent(
        &self,
        account: &str,
        by: &str,
        scope: &str,
        principal: &str,
    ) -> Result<AccountView, ControlError> {
        if by.trim().is_empty() || scope.trim().is_empty() {
            return Err(ControlError::BadRequest(
                "consent needs \"by\" (who consented) and \"scope\" (to what), both non-empty"
                    .into(),
            ));
        }
        valid_account_id(account)?;
        let _guard = self.actions.lock().await;
        if self.registry.get(account).await?.is_none() {
            return Err(RegistryError::NotFound {
                account: account.to_string(),
            }
            .into());
        }
        self.audit(
            principal,
            "account.consent",
            Some(account),
            &[("by", by.to_string()), ("scope", scope.to_string())],
        )
        .await?;
        let consent = Consent {
            by: by.to_string(),
            at_us: crate::event::now_us(),
            scope: scope.to_string(),
        };
        let record = self
            .registry
            .update(account, |r| r.consent = Some(consent.clone()))
            .await?;
        self.start_if_ready(&record).await?;
        self.view(&record).await
    }

    /// Sets the account active and starts it if it has consent and a session.
    pub async fn resume(
        &self,
        account: &str,
        principal: &str,
    ) -> Result<AccountView, ControlError> {
        self.set_desired(account, Desired::Active, principal).await
    }

    /// Sets the account paused and stops its actor.
    pub async fn pause(&self, account: &str, principal: &str) -> Result<AccountView, ControlError> {
        self.set_desired(account, Desired::Paused, principal).await
    }

    /// Moves an account to another group (whose principals' grants then apply to it).
    pub async fn set_group(
        &self,
        account: &str,
        group: &str,
        principal: &str,
    ) -> Result<AccountView, ControlError> {
        let group = checked_group(Some(group))?;
        valid_account_id(account)?;
        let _guard = self.actions.lock().await;
        let Some(before) = self.registry.get(account).await? else {
            return Err(RegistryError::NotFound {
                account: account.to_string(),
            }
            .into());
        };
        self.audit(
            principal,
            "account.group",
            Some(account),
            &[
                ("from", before.group().to_string()),
                ("to", group.clone().unwrap_or_else(|| DEFAULT_GROUP.into())),
            ],
        )
        .await?;
        let record = self
            .registry
            .update(account, |r| r.group = group.clone())
            .await?;
        self.view(&record).await
    }

    async fn set_desired(
        &self,
        account: &str,
        desired: Desired,
        principal: &str,
    ) -> Result<AccountView, ControlError> {
        valid_account_id(account)?;
        let _guard = self.actions.lock().await;
        if self.registry.get(account).await?.is_none() {
            return Err(RegistryError::NotFound {
                account: account.to_string(),
            }
            .into());
        }
        let action = match desired {
            Desired::Active => "account.resume",
            Desired::Paused => "account.pause",
        };
        self.audit(principal, action, Some(account), &[]).await?;
        let record = self
            .registry
            .update(account, |r| r.desired = desired)
            .await?;
        match desired {
            Desired::Paused => self.stop(account).await?,
            Desired::Active => {
                self.start_if_ready(&record).await?;
            }
        }
        self.view(&record).await
    }

    /// Stops the account, purges its sealed session and its registry record.
    pub async fn remove(&self, account: &str, principal: &str) -> Result<(), ControlError> {
        valid_account_id(account)?;
        let _guard = self.actions.lock().await;
        let known = self.registry.get(account).await?.is_some();
        let has_session = self.sessions.get(account).await.ok().flatten().is_some();
        if !known && !has_session {
            return Err(RegistryError::NotFound {
                account: account.to_string(),
            }
            .into());
        }
        self.audit(
            principal,
            "account.remove",
            Some(account),
            &[("had_session", has_session.to_string())],
        )
        .await?;
        self.stop(account).await?;
        self.sessions.remove(account).await?;
        self.registry.remove(account).await?;
        // A revoked account's terminal entry outlives its actor; a removed account has none.
        self.parts.stats.lifecycles.forget(account);
        tracing::info!(account = %crate::telemetry::hash_id(account), "account removed; session purged");
        Ok(())
    }

    /// Every account in the registry, as the API shows it.
    pub async fn list(&self) -> Result<Vec<AccountView>, ControlError> {
        let sup = status(&self.supervisor).await?;
        let sessions: std::collections::HashSet<String> =
            self.sessions.accounts().await?.into_iter().collect();
        let mut views = Vec::new();
        for record in self.registry.list().await? {
            let has_session = sessions.contains(&record.account_id);
            views.push(self.view_with(&record, &sup, has_session).await);
        }
        Ok(views)
    }

    /// One account, as the API shows it.
    pub async fn get(&self, account: &str) -> Result<AccountView, ControlError> {
        match self.registry.get(account).await? {
            Some(record) => self.view(&record).await,
            None => Err(RegistryError::NotFound {
                account: account.to_string(),
            }
            .into()),
        }
    }

    async fn view(&self, record: &AccountRecord) -> Result<AccountView, ControlError> {
        let sup = status(&self.supervisor).await?;
        let has_session = self.sessions.exists(&record.account_id).await?;
        Ok(self.view_with(record, &sup, has_session).await)
    }

    async fn view_with(
        &self,
        record: &AccountRecord,
        sup: &SupervisorStatus,
        has_session: bool,
    ) -> AccountView {
        let account = record.account_id.as_str();
        let child = sup.child(&account_child_name(account)).cloned();
        // Ask the actor only while its supervisor runs it: a stopped actor may linger a moment.
        let actor = match &child {
            Some(c) if c.state == ChildState::Running => self.actor_status(account).await,
            _ => None,
        };
        let lifecycle = match (&child, &actor) {
            (_, Some(s)) if s.state == "running" => Lifecycle::Running,
            (_, Some(s)) if s.state == "source_ended" => Lifecycle::Stopped,
            (_, Some(_)) => Lifecycle::Connecting,
            (Some(c), None) => match &c.state {
                ChildState::Restarting { .. } => Lifecycle::Connecting,
                ChildState::FailedPermanently { reason } => Lifecycle::Revoked {
                    reason: reason.clone(),
                },
                _ => Self::registry_state(record),
            },
            (None, None) => Self::registry_state(record),
        };
        let now = crate::event::now_us();
        AccountView {
            account_id: account.to_string(),
            group: record.group().to_string(),
            lifecycle,
            desired: record.desired,
            added_via: record.added_via,
            added_at_us: record.added_at_us,
            consent: record.consent.clone(),
            display_name: record.display_name.clone(),
            username: record.username.clone(),
            has_session,
            last_event_at_us: self.last_event_at(account).await,
            in_flight: actor.as_ref().map(|a| a.in_flight),
            flood_wait_until_us: None,
            restarts: child.as_ref().map_or(0, |c| c.restarts),
            last_error: child.and_then(|c| c.last_error),
            login_budget: record
                .phone_hash
                .as_deref()
                .map(|h| self.budget.status(h, now)),
        }
    }

    /// Every consented account with the state its heartbeat reports: its actor's own state
    /// (running, flood wait, revoked, …) when it has one, else paused or stopped from the
    /// registry. Accounts without consent are left out: nothing is said about them to
    /// Switchboard. In a cluster a node speaks only for the accounts it owns and those that run
    /// nowhere and rank it first (see [`AccountsControl::wanted`]), so one node reports each. Cheap enough for every heartbeat round (one registry read, no actor
    /// calls).
    pub async fn reported_states(
        &self,
    ) -> Result<Vec<crate::pipeline::heartbeat::Member>, ControlError> {
        let tally = &self.parts.stats.lifecycles;
        let owned = self.clustered.then(|| {
            let mut here = self.owned_here().clone();
            here.extend(
                self.spoken_for
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned(),
            );
            here
        });
        Ok(self
            .registry
            .list()
            .await?
            .into_iter()
            .filter(|record| record.consent.is_some())
            .filter(|record| {
                owned
                    .as_ref()
                    .is_none_or(|o| o.contains(&record.account_id))
            })
            .map(|record| {
                let id = record.account_id;
                // A paused account's actor may still be winding down: the registry decides.
                let lifecycle = if record.desired == Desired::Paused {
                    Lifecycle::Paused
                } else {
                    tally
                        .of(&id)
                        .or_else(|| record.ended.as_ref().map(|e| e.state.clone()))
                        .unwrap_or(Lifecycle::Stopped)
                };
                crate::pipeline::heartbeat::Member {
                    source: self.parts.stats.accounts.get(&id),
                    account_id: id,
                    lifecycle,
                }
            })
            .collect())
    }

    fn registry_state(record: &AccountRecord) -> Lifecycle {
        if record.consent.is_none() {
            Lifecycle::PendingConsent
        } else if let Some(ended) = &record.ended {
            ended.state.clone()
        } else if record.desired == Desired::Paused {
            Lifecycle::Paused
        } else {
            Lifecycle::Stopped
        }
    }

    async fn actor_status(&self, account: &str) -> Option<AccountStatus> {
        let actor = ActorRef::<AccountMsg>::where_is(account_actor_name(&self.node_id, account))?;
        match actor
            .call(AccountMsg::Status, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// The newest TG_RAW message of `account` (any chat kind), by its JetStream timestamp.
    async fn last_event_at(&self, account: &str) -> Option<i64> {
        let stream = self
            .parts
            .bus
            .js
            .get_stream(crate::bus::STREAM_RAW)
            .await
            .ok()?;
        let mut newest = None;
        for kind in [
            ChatKind::Private,
            ChatKind::Group,
            ChatKind::Supergroup,
            ChatKind::Channel,
        ] {
            if let Ok(message) = stream
                .get_last_raw_message_by_subject(&raw_subject(account, kind))
                .await
            {
                let us = message.time.unix_timestamp_nanos() / 1000;
                let us = i64::try_from(us).unwrap_or(i64::MAX);
                newest = Some(newest.map_or(us, |n: i64| n.max(us)));
            }
        }
        newest
    }

    // -----------------------------------------------------------------------------------------
    // Logins
    // -----------------------------------------------------------------------------------------

    async fn forget_idle_logins(&self) {
        let mut logins = self.logins.lock().await;
        logins.retain(|_, e| e.last_step.elapsed() < LOGIN_IDLE_TIMEOUT);
    }

    /// Starts a login: spends one attempt of the phone's budget and asks Telegram for a code.
    pub async fn login_start(
        &self,
        phone: &Sensitive,
        group: Option<&str>,
        principal: &str,
    ) -> Result<LoginView, ControlError> {
        let group = checked_group(group)?;
        let digits = phone.expose().chars().filter(char::is_ascii_digit).count();
        if !(7..=15).contains(&digits) {
            return Err(ControlError::BadRequest(
                "\"phone\" must be a phone number in international form, +<country><number> \
                 (7 to 15 digits)"
                    .into(),
            ));
        }
        self.backend.ready()?;
        self.forget_idle_logins().await;
        let hash = phone_hash(self.phone_key.bytes(), phone.expose());
        let now = crate::event::now_us();
        let status = match self.budget.try_spend(&hash, now)? {
            Ok(status) => status,
            Err(status) => {
                self.audit(
                    principal,
                    "login.refused",
                    None,
                    &[("phone_hash", hash.clone()), ("reason", "budget".into())],
                )
                .await?;
                return Err(ControlError::BudgetExhausted { status });
            }
        };
        let login_id = uuid::Uuid::new_v4().simple().to_string();
        self.audit(
            principal,
            "login.start",
            None,
            &[
                ("login_id", login_id.clone()),
                ("phone_hash", hash.clone()),
                ("budget_remaining", status.remaining.to_string()),
            ],
        )
        .await?;
        let actor = spawn_login(self.backend.as_ref()).await?;
        let phone = phone.clone();
        let result = step(&actor, |r| LoginMsg::RequestCode(phone, r)).await;
        if let Err(failure) = result {
            actor.stop(None);
            self.audit(
                principal,
                "login.failed",
                None,
                &[
                    ("login_id", login_id.clone()),
                    ("phone_hash", hash),
                    ("step", "request_code".into()),
                    ("reason", failure.code().into()),
                ],
            )
            .await?;
            return Err(failure.into());
        }
        self.logins.lock().await.insert(
            login_id.clone(),
            LoginEntry {
                actor,
                phone_hash: hash,
                state: LoginState::AwaitingCode,
                last_step: Instant::now(),
                group,
            },
        );
        Ok(LoginView {
            login_id,
            state: LoginStateView::AwaitingCode,
            budget: status,
        })
    }

    /// Submits the code of a login.
    pub async fn login_code(
        &self,
        login_id: &str,
        code: &Sensitive,
        principal: &str,
    ) -> Result<LoginView, ControlError> {
        self.login_step(login_id, "code", principal, |actor| {
            let code = code.clone();
            async move {
                step(&actor, |r| LoginMsg::SignIn(code, r))
                    .await
                    .map(|o| match o {
                        SignInOutcome::Done(done) => Ok(done),
                        SignInOutcome::PasswordRequired { hint } => Err(hint),
                    })
            }
        })
        .await
    }

    /// Submits the 2FA password of a login.
    pub async fn login_password(
        &self,
        login_id: &str,
        password: &Sensitive,
        principal: &str,
    ) -> Result<LoginView, ControlError> {
        self.login_step(login_id, "password", principal, |actor| {
            let password = password.clone();
            async move {
                step(&actor, |r| LoginMsg::Password(password, r))
                    .await
                    .map(Ok)
            }
        })
        .await
    }

    /// One step of a login; `run` yields the logged-in account, or the password hint.
    async fn login_step<F, Fut>(
        &self,
        login_id: &str,
        wanted: &'static str,
        principal: &str,
        run: F,
    ) -> Result<LoginView, ControlError>
    where
        F: FnOnce(ActorRef<LoginMsg>) -> Fut,
        Fut: Future<Output = Result<Result<LoggedIn, Option<String>>, LoginFailure>>,
    {
        self.forget_idle_logins().await;
        let (actor, hash, group) = {
            let logins = self.logins.lock().await;
            let entry = logins
                .get(login_id)
                .ok_or_else(|| ControlError::LoginNotFound(login_id.chars().take(40).collect()))?;
            let ok = matches!(
                (&entry.state, wanted),
                (LoginState::AwaitingCode, "code")
                    | (LoginState::AwaitingPassword { .. }, "password")
            );
            if !ok {
                return Err(ControlError::LoginWrongStep {
                    id: login_id.to_string(),
                    state: match entry.state {
                        LoginState::AwaitingCode => "awaiting_code",
                        LoginState::AwaitingPassword { .. } => "awaiting_password",
                        LoginState::PendingConsent { .. } => "finished",
                    },
                    wanted,
                });
            }
            (
                entry.actor.clone(),
                entry.phone_hash.clone(),
                entry.group.clone(),
            )
        };
        let outcome = run(actor).await;
        let budget = self.budget.status(&hash, crate::event::now_us());
        match outcome {
            Err(failure) => {
                self.audit(
                    principal,
                    "login.failed",
                    None,
                    &[
                        ("login_id", login_id.to_string()),
                        ("phone_hash", hash),
                        ("step", wanted.into()),
                        ("reason", failure.code().into()),
                    ],
                )
                .await?;
                let mut logins = self.logins.lock().await;
                if failure.is_retryable_step() {
                    if let Some(e) = logins.get_mut(login_id) {
                        e.last_step = Instant::now();
                    }
                } else {
                    logins.remove(login_id);
                }
                Err(failure.into())
            }
            Ok(Err(hint)) => {
                self.audit(
                    principal,
                    "login.password_required",
                    None,
                    &[("login_id", login_id.to_string()), ("phone_hash", hash)],
                )
                .await?;
                let state = LoginState::AwaitingPassword { hint };
                if let Some(e) = self.logins.lock().await.get_mut(login_id) {
                    e.state = state.clone();
                    e.last_step = Instant::now();
                }
                Ok(LoginView {
                    login_id: login_id.to_string(),
                    state: state.into(),
                    budget,
                })
            }
            Ok(Ok(done)) => {
                let result = self
                    .finish_login(login_id, &hash, done, group, principal)
                    .await;
                self.logins.lock().await.remove(login_id);
                let account_id = result?;
                Ok(LoginView {
                    login_id: login_id.to_string(),
                    state: LoginStateView::PendingConsent { account_id },
                    budget,
                })
            }
        }
    }

    /// Seals the new session and registers (or refreshes) the account; returns its id.
    async fn finish_login(
        &self,
        login_id: &str,
        hash: &str,
        done: LoggedIn,
        group: Option<String>,
        principal: &str,
    ) -> Result<String, ControlError> {
        let account = done.user_id.to_string();
        valid_account_id(&account)?;
        let _guard = self.actions.lock().await;
        self.audit(
            principal,
            "login.succeeded",
            Some(&account),
            &[
                ("login_id", login_id.to_string()),
                ("phone_hash", hash.to_string()),
            ],
        )
        .await?;
        // A new login replaces a revoked session: stop the old actor first (one key at a time).
        self.stop(&account).await?;
        self.sessions.put(&account, &done.snapshot).await?;
        let mut record = AccountRecord::new(&account, AddedVia::Login);
        record.display_name = done.display_name.clone();
        record.username = done.username.clone();
        record.phone_hash = Some(hash.to_string());
        record.group = group;
        match self.registry.create(&record).await {
            Ok(_) => {}
            Err(RegistryError::Exists { .. }) => {
                let refreshed = self
                    .registry
                    .update(&account, |r| {
                        r.display_name = done.display_name.clone();
                        r.username = done.username.clone();
                        r.phone_hash = Some(hash.to_string());
                        // A new session: whatever ended the old one does not hold for it.
                        r.ended = None;
                    })
                    .await?;
                self.start_if_ready(&refreshed).await?;
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(account = %crate::telemetry::hash_id(&account), "login succeeded; session sealed");
        Ok(account)
    }

    /// The group the account of a login under way goes to; `None`: no such login.
    pub async fn login_group(&self, login_id: &str) -> Option<String> {
        self.logins
            .lock()
            .await
            .get(login_id)
            .map(|e| e.group.as_deref().unwrap_or(DEFAULT_GROUP).to_string())
    }

    /// Cancels a login; returns whether there was one.
    pub async fn login_cancel(
        &self,
        login_id: &str,
        principal: &str,
    ) -> Result<bool, ControlError> {
        let removed = self.logins.lock().await.remove(login_id);
        if let Some(entry) = &removed {
            self.audit(
                principal,
                "login.cancelled",
                None,
                &[
                    ("login_id", login_id.to_string()),
                    ("phone_hash", entry.phone_hash.clone()),
                ],
            )
            .await?;
        }
        Ok(removed.is_some())
    }
}
