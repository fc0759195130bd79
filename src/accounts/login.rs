//! Interactive logins: phone → code → (2FA password) → a sealed session.
//!
//! The Telegram side sits behind [`LoginBackend`] (the real one is [`GrammersLogin`]; tests use
//! [`ScriptedLogin`]). Each login runs in its own ractor actor ([`LoginActor`]) because grammers'
//! login calls can panic (`request_login_code` on `SentCode::Success`, `unimplemented!()` on
//! `auth.sentCodePaymentRequired`, unwraps in `check_password`): ractor catches the panic, the
//! caller's reply port is dropped, and the caller turns that into [`LoginFailure::Crashed`]
//! instead of losing the node.
//!
//! Phone numbers, codes and passwords travel as [`Sensitive`], whose `Debug` shows nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, rpc::CallResult};
use serde::Serialize;

use crate::telegram::session::SessionSnapshot;

/// A phone number, login code or password: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Sensitive(value.into())
    }
    /// The value itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sensitive(***)")
    }
}

/// What a login step can fail with, sorted by what the operator must do. Never holds the phone
/// number, code or password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginFailure {
    #[error("the code is not valid; check it and send it again (the login still waits for it)")]
    InvalidCode,
    #[error("the code has expired; cancel this login and start a new one")]
    CodeExpired,
    #[error("the 2FA password is not valid; send it again (the login still waits for it)")]
    InvalidPassword,
    #[error("Telegram asks to wait {seconds} s before trying again (FLOOD_WAIT)")]
    FloodWait { seconds: u64 },
    #[error("Telegram has banned this phone number (PHONE_NUMBER_BANNED)")]
    PhoneBanned,
    #[error(
        "Telegram does not accept this phone number (PHONE_NUMBER_INVALID); write it as +<country><number>"
    )]
    PhoneInvalid,
    #[error("this phone number has no Telegram account; sign up with an official app first")]
    SignUpRequired,
    #[error(
        "logins need telegram.api_id and telegram.api_hash (from my.telegram.org) in the config"
    )]
    NotConfigured,
    #[error(
        "the Telegram login library failed inside the login (a panic, caught); start a new login"
    )]
    Crashed,
    #[error("Telegram did not answer in time; try again")]
    Timeout,
    #[error("cannot reach Telegram: {0}")]
    Network(String),
    #[error("Telegram refused the login: {0}")]
    Other(String),
}

impl LoginFailure {
    /// The machine-readable code of the failure (the `code` of the API's error body).
    pub fn code(&self) -> &'static str {
        match self {
            LoginFailure::InvalidCode => "invalid_code",
            LoginFailure::CodeExpired => "code_expired",
            LoginFailure::InvalidPassword => "invalid_password",
            LoginFailure::FloodWait { .. } => "flood_wait",
            LoginFailure::PhoneBanned => "phone_banned",
            LoginFailure::PhoneInvalid => "phone_invalid",
            LoginFailure::SignUpRequired => "sign_up_required",
            LoginFailure::NotConfigured => "not_configured",
            LoginFailure::Crashed => "login_crashed",
            LoginFailure::Timeout => "timeout",
            LoginFailure::Network(_) => "network",
            LoginFailure::Other(_) => "telegram_error",
        }
    }

    /// Whether the login can go on after this failure (the same step may be tried again).
    pub fn is_retryable_step(&self) -> bool {
        matches!(
            self,
            LoginFailure::InvalidCode | LoginFailure::InvalidPassword
        )
    }
}

/// Who logged in, and the session that proves it.
#[derive(Clone)]
pub struct LoggedIn {
    pub user_id: i64,
    pub display_name: Option<String>,
    pub username: Option<String>,
    pub snapshot: SessionSnapshot,
}

impl std::fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedIn")
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

/// What submitting the code led to.
#[derive(Debug, Clone)]
pub enum SignInOutcome {
    Done(LoggedIn),
    /// The account has 2FA; the password is next.
    PasswordRequired {
        hint: Option<String>,
    },
}

/// One login conversation with Telegram; its methods are awaited one at a time by the login actor.
pub trait LoginSession: Send + 'static {
    /// Asks Telegram to send a login code to `phone`.
    fn request_code<'a>(
        &'a mut self,
        phone: &'a Sensitive,
    ) -> BoxFuture<'a, Result<(), LoginFailure>>;
    /// Submits the code.
    fn sign_in<'a>(
        &'a mut self,
        code: &'a Sensitive,
    ) -> BoxFuture<'a, Result<SignInOutcome, LoginFailure>>;
    /// Submits the 2FA password.
    fn check_password<'a>(
        &'a mut self,
        password: &'a Sensitive,
    ) -> BoxFuture<'a, Result<LoggedIn, LoginFailure>>;
}

/// Starts login conversations.
pub trait LoginBackend: Send + Sync + 'static {
    /// Whether logins can work at all (checked before an attempt is counted against the budget).
    fn ready(&self) -> Result<(), LoginFailure> {
        Ok(())
    }
    /// A new login conversation.
    fn begin(&self) -> Box<dyn LoginSession>;
}

// ---------------------------------------------------------------------------------------------
// The real backend: grammers
// ---------------------------------------------------------------------------------------------

/// Logins through grammers: a `Client` over a `SenderPool` on a fresh `MemorySession`; on success
/// the session's state becomes a [`SessionSnapshot`].
pub struct GrammersLogin {
    api_id: i32,
    api_hash: String,
}

impl GrammersLogin {
    /// A backend with the API credentials from `telegram.api_id` / `telegram.api_hash`.
    pub fn new(api_id: i64, api_hash: &str) -> Self {
        GrammersLogin {
            api_id: i32::try_from(api_id).unwrap_or(0),
            api_hash: api_hash.to_string(),
        }
    }
}

impl LoginBackend for GrammersLogin {
    fn ready(&self) -> Result<(), LoginFailure> {
        if self.api_id == 0 || self.api_hash.is_empty() {
            return Err(LoginFailure::NotConfigured);
        }
        Ok(())
    }

    fn begin(&self) -> Box<dyn LoginSession> {
        Box::new(GrammersSession {
            api_id: self.api_id,
            api_hash: self.api_hash.clone(),
            live: None,
            login_token: None,
            password_token: None,
        })
    }
}

/// Stops the sender pool when the login goes away, even after a panic.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Live {
    session: Arc<grammers_session::storages::MemorySession>,
    client: grammers_client::Client,
    _pool: AbortOnDrop,
}

struct GrammersSession {
    api_id: i32,
    api_hash: String,
    live: Option<Live>,
    login_token: Option<grammers_client::client::LoginToken>,
    password_token: Option<grammers_client::client::PasswordToken>,
}

fn invocation_failure(e: &grammers_client::InvocationError) -> LoginFailure {
    use grammers_client::InvocationError as E;
    match e {
        E::Rpc(rpc) => match rpc.name.as_str() {
            "FLOOD_WAIT" | "FLOOD_PREMIUM_WAIT" => LoginFailure::FloodWait {
                seconds: u64::from(rpc.value.unwrap_or(0)),
            },
            "PHONE_NUMBER_BANNED" => LoginFailure::PhoneBanned,
            "PHONE_NUMBER_INVALID" => LoginFailure::PhoneInvalid,
            "PHONE_CODE_EXPIRED" => LoginFailure::CodeExpired,
            "PHONE_CODE_INVALID" | "PHONE_CODE_EMPTY" => LoginFailure::InvalidCode,
            "PASSWORD_HASH_INVALID" => LoginFailure::InvalidPassword,
            // RPC error names carry no personal data.
            other => LoginFailure::Other(format!("{} {other}", rpc.code)),
        },
        E::Io(io) => LoginFailure::Network(io.kind().to_string()),
        E::Dropped(_) => LoginFailure::Network("connection dropped".into()),
        _ => LoginFailure::Other("the Telegram client failed".into()),
    }
}

fn sign_in_failure(
    e: grammers_client::SignInError,
) -> (LoginFailure, Option<grammers_client::client::PasswordToken>) {
    use grammers_client::SignInError as E;
    match e {
        E::SignUpRequired => (LoginFailure::SignUpRequired, None),
        E::InvalidCode => (LoginFailure::InvalidCode, None),
        E::InvalidPassword(token) => (LoginFailure::InvalidPassword, Some(token)),
        E::PasswordRequired(token) => (
            LoginFailure::Other("a password is required".into()),
            Some(token),
        ),
        E::Other(e) => (invocation_failure(&e), None),
    }
}

impl GrammersSession {
    fn live(&mut self) -> Result<&Live, LoginFailure> {
        if self.api_id == 0 || self.api_hash.is_empty() {
            return Err(LoginFailure::NotConfigured);
        }
        if self.live.is_none() {
            let session = Arc::new(grammers_session::storages::MemorySession::from(
                grammers_session::SessionData::default(),
            ));
            let pool = grammers_client::SenderPool::new(session.clone(), self.api_id);
            let client = grammers_client::Client::new(pool.handle);
            let runner = pool.runner;
            let task = tokio::spawn(async move {
                runner.run().await;
            });
            self.live = Some(Live {
                session,
                client,
                _pool: AbortOnDrop(task),
            });
        }
        self.live.as_ref().ok_or(LoginFailure::NotConfigured)
    }

    async fn logged_in(&self, user: grammers_client::peer::User) -> Result<LoggedIn, LoginFailure> {
        use grammers_session::Session;
        let live = self.live.as_ref().ok_or(LoginFailure::Crashed)?;
        let s = &live.session;
        let failed = |_| LoginFailure::Other("cannot read the new session".into());
        let mut data = grammers_session::SessionData {
            home_dc: s.home_dc_id().map_err(failed)?,
            ..grammers_session::SessionData::default()
        };
        let ids: Vec<i32> = data
            .dc_options
            .keys()
            .copied()
            .chain([data.home_dc])
            .collect();
        for id in ids {
            if let Some(dc) = s.dc_option(id).map_err(failed)? {
                data.dc_options.insert(id, dc);
            }
        }
        data.updates_state = s.updates_state().await.map_err(failed)?;
        let mut snapshot = SessionSnapshot::from_session_data(&data);
        let user_id = user.id().bare_id().ok_or(LoginFailure::Other(
            "Telegram did not say who logged in".into(),
        ))?;
        snapshot.user_id = Some(user_id);
        let name = user.full_name();
        Ok(LoggedIn {
            user_id,
            display_name: (!name.trim().is_empty()).then_some(name),
            username: user.username().map(str::to_string),
            snapshot,
        })
    }
}

impl LoginSession for GrammersSession {
    fn request_code<'a>(
        &'a mut self,
        phone: &'a Sensitive,
    ) -> BoxFuture<'a, Result<(), LoginFailure>> {
        Box::pin(async move {
            let api_hash = self.api_hash.clone();
            let live = self.live()?;
            let token = live
                .client
                .request_login_code(phone.expose(), &api_hash)
                .await
                .map_err(|e| invocation_failure(&e))?;
            self.login_token = Some(token);
            Ok(())
        })
    }

    fn sign_in<'a>(
        &'a mut self,
        code: &'a Sensitive,
    ) -> BoxFuture<'a, Result<SignInOutcome, LoginFailure>> {
        Box::pin(async move {
            let token = self.login_token.as_ref().ok_or(LoginFailure::CodeExpired)?;
            let live = self.live.as_ref().ok_or(LoginFailure::CodeExpired)?;
            match live.client.sign_in(token, code.expose()).await {
                Ok(user) => Ok(SignInOutcome::Done(self.logged_in(user).await?)),
                Err(grammers_client::SignInError::PasswordRequired(token)) => {
                    let hint = token.hint().map(str::to_string);
                    self.password_token = Some(token);
                    Ok(SignInOutcome::PasswordRequired { hint })
                }
                Err(e) => Err(sign_in_failure(e).0),
            }
        })
    }

    fn check_password<'a>(
        &'a mut self,
        password: &'a Sensitive,
    ) -> BoxFuture<'a, Result<LoggedIn, LoginFailure>> {
        Box::pin(async move {
            let token = self
                .password_token
                .take()
                .ok_or(LoginFailure::Other("no password was asked for".into()))?;
            let live = self.live.as_ref().ok_or(LoginFailure::CodeExpired)?;
            match live.client.check_password(token, password.expose()).await {
                Ok(user) => self.logged_in(user).await,
                Err(e) => {
                    let (failure, token) = sign_in_failure(e);
                    self.password_token = token;
                    Err(failure)
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted test double
// ---------------------------------------------------------------------------------------------

/// One phone number the [`ScriptedLogin`] knows.
#[derive(Clone)]
pub struct ScriptedAccount {
    pub phone: String,
    pub code: String,
    /// The 2FA password and its hint, if the account has 2FA.
    pub password: Option<(String, Option<String>)>,
    pub user_id: i64,
    pub display_name: Option<String>,
    /// The auth key of the session a successful login yields (on the home DC 2).
    pub auth_key: [u8; 256],
    /// Fail the code request like this instead (flood wait, banned number…).
    pub request_fails: Option<LoginFailure>,
    /// Panic inside the code request, as grammers does on some answers.
    pub panics: bool,
}

/// A scripted stand-in for Telegram's login: knows some phone numbers, their codes and 2FA
/// passwords, and answers like Telegram would (invalid code, invalid password, flood wait, banned
/// number, or a panic like grammers'). It does **not** cover MTProto, DC migration
/// (`PHONE_MIGRATE_X`), real Telegram's code delivery and expiry, SMS/flash-call variants, or
/// the exact RPC errors grammers maps; those need the real backend ([`GrammersLogin`]).
#[derive(Clone, Default)]
pub struct ScriptedLogin {
    accounts: Arc<Mutex<HashMap<String, ScriptedAccount>>>,
    /// Code requests seen, for tests (no phone numbers: just a count).
    pub code_requests: Arc<std::sync::atomic::AtomicU64>,
}

impl ScriptedLogin {
    /// Adds (or replaces) an account the script knows.
    pub fn with(self, account: ScriptedAccount) -> Self {
        let digits: String = account.phone.chars().filter(char::is_ascii_digit).collect();
        if let Ok(mut map) = self.accounts.lock() {
            map.insert(digits, account);
        }
        self
    }
}

impl LoginBackend for ScriptedLogin {
    fn begin(&self) -> Box<dyn LoginSession> {
        Box::new(ScriptedSession {
            script: self.clone(),
            account: None,
            code_ok: false,
        })
    }
}

struct ScriptedSession {
    script: ScriptedLogin,
    account: Option<ScriptedAccount>,
    code_ok: bool,
}

impl ScriptedSession {
    fn done(account: &ScriptedAccount) -> LoggedIn {
        let mut data = grammers_session::SessionData {
            home_dc: 2,
            ..Default::default()
        };
        if let Some(dc) = data.dc_options.get_mut(&2) {
            dc.auth_key = Some(account.auth_key);
        }
        let mut snapshot = SessionSnapshot::from_session_data(&data);
        snapshot.user_id = Some(account.user_id);
        LoggedIn {
            user_id: account.user_id,
            display_name: account.display_name.clone(),
            username: None,
            snapshot,
        }
    }
}

impl LoginSession for ScriptedSession {
    fn request_code<'a>(
        &'a mut self,
        phone: &'a Sensitive,
    ) -> BoxFuture<'a, Result<(), LoginFailure>> {
        Box::pin(async move {
            self.script
                .code_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let digits: String = phone
                .expose()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            let account = self
                .script
                .accounts
                .lock()
                .ok()
                .and_then(|m| m.get(&digits).cloned())
                .ok_or(LoginFailure::PhoneInvalid)?;
            if account.panics {
                panic!("scripted login: a panic like grammers' on SentCode::Success");
            }
            if let Some(failure) = &account.request_fails {
                return Err(failure.clone());
            }
            self.account = Some(account);
            Ok(())
        })
    }

    fn sign_in<'a>(
        &'a mut self,
        code: &'a Sensitive,
    ) -> BoxFuture<'a, Result<SignInOutcome, LoginFailure>> {
        Box::pin(async move {
            let account = self.account.as_ref().ok_or(LoginFailure::CodeExpired)?;
            if code.expose().trim() != account.code {
                return Err(LoginFailure::InvalidCode);
            }
            self.code_ok = true;
            match &account.password {
                Some((_, hint)) => Ok(SignInOutcome::PasswordRequired { hint: hint.clone() }),
                None => Ok(SignInOutcome::Done(Self::done(account))),
            }
        })
    }

    fn check_password<'a>(
        &'a mut self,
        password: &'a Sensitive,
    ) -> BoxFuture<'a, Result<LoggedIn, LoginFailure>> {
        Box::pin(async move {
            let account = self.account.as_ref().ok_or(LoginFailure::CodeExpired)?;
            match &account.password {
                Some((expected, _)) if self.code_ok && password.expose() == expected => {
                    Ok(Self::done(account))
                }
                Some(_) if self.code_ok => Err(LoginFailure::InvalidPassword),
                _ => Err(LoginFailure::Other("no password was asked for".into())),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The login actor
// ---------------------------------------------------------------------------------------------

/// How long one login step may take before the caller gives up.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages of a [`LoginActor`].
pub enum LoginMsg {
    RequestCode(Sensitive, RpcReplyPort<Result<(), LoginFailure>>),
    SignIn(Sensitive, RpcReplyPort<Result<SignInOutcome, LoginFailure>>),
    Password(Sensitive, RpcReplyPort<Result<LoggedIn, LoginFailure>>),
}

/// Runs one login's calls to Telegram, so a panic in them ends this actor only.
pub struct LoginActor;

/// The login actor's state: the conversation.
pub struct LoginActorState(Box<dyn LoginSession>);

impl Actor for LoginActor {
    type Msg = LoginMsg;
    type State = LoginActorState;
    type Arguments = LoginActorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<LoginMsg>,
        args: LoginActorState,
    ) -> Result<LoginActorState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<LoginMsg>,
        msg: LoginMsg,
        state: &mut LoginActorState,
    ) -> Result<(), ActorProcessingErr> {
        // The caller may have given up waiting; that changes nothing here.
        match msg {
            LoginMsg::RequestCode(phone, reply) => {
                let _ = reply.send(state.0.request_code(&phone).await);
            }
            LoginMsg::SignIn(code, reply) => {
                let _ = reply.send(state.0.sign_in(&code).await);
            }
            LoginMsg::Password(password, reply) => {
                let _ = reply.send(state.0.check_password(&password).await);
            }
        }
        Ok(())
    }
}

/// Spawns the actor of one login.
pub async fn spawn_login(backend: &dyn LoginBackend) -> Result<ActorRef<LoginMsg>, LoginFailure> {
    let (actor, _handle) = Actor::spawn(None, LoginActor, LoginActorState(backend.begin()))
        .await
        .map_err(|_| LoginFailure::Crashed)?;
    Ok(actor)
}

/// Sends one step to a login actor and waits for its answer; a panic in the step (the actor
/// died, the reply port dropped) becomes [`LoginFailure::Crashed`].
pub async fn step<T: Send + 'static>(
    actor: &ActorRef<LoginMsg>,
    msg: impl FnOnce(RpcReplyPort<Result<T, LoginFailure>>) -> LoginMsg,
) -> Result<T, LoginFailure> {
    match actor.call(msg, Some(STEP_TIMEOUT)).await {
        Ok(CallResult::Success(result)) => result,
        Ok(CallResult::Timeout) => Err(LoginFailure::Timeout),
        Ok(CallResult::SenderError) | Err(_) => Err(LoginFailure::Crashed),
    }
}

/// Where a login stands, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LoginState {
    AwaitingCode,
    AwaitingPassword {
        hint: Option<String>,
    },
    /// Logged in; the account waits for consent.
    PendingConsent {
        account_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> ScriptedAccount {
        ScriptedAccount {
            phone: "+49 30 1234567".into(),
            code: "12345".into(),
            password: Some(("pw".into(), Some("pet".into()))),
            user_id: 42,
            display_name: None,
            auth_key: [3; 256],
            request_fails: None,
            panics: false,
        }
    }

    #[tokio::test]
    async fn a_panic_in_a_login_step_is_a_clear_failure_not_a_dead_process() {
        let mut a = account();
        a.panics = true;
        let backend = ScriptedLogin::default().with(a);
        let actor = spawn_login(&backend).await.unwrap();
        let out = step(&actor, |r| {
            LoginMsg::RequestCode(Sensitive::new("+49301234567"), r)
        })
        .await;
        assert_eq!(out, Err(LoginFailure::Crashed));
    }

    #[tokio::test]
    async fn grammers_logins_without_api_credentials_say_what_to_configure() {
        let backend = GrammersLogin::new(0, "");
        assert_eq!(backend.ready(), Err(LoginFailure::NotConfigured));
        let actor = spawn_login(&backend).await.unwrap();
        let out = step(&actor, |r| {
            LoginMsg::RequestCode(Sensitive::new("+49301234567"), r)
        })
        .await;
        assert_eq!(out, Err(LoginFailure::NotConfigured));
        assert!(
            LoginFailure::NotConfigured
                .to_string()
                .contains("telegram.api_id")
        );
        assert!(
            GrammersLogin::new(12345, "0123456789abcdef0123456789abcdef")
                .ready()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_script_asks_for_the_password_with_its_hint() {
        let backend = ScriptedLogin::default().with(account());
        let actor = spawn_login(&backend).await.unwrap();
        step(&actor, |r| {
            LoginMsg::RequestCode(Sensitive::new("4930 1234567"), r)
        })
        .await
        .unwrap();
        let wrong = step(&actor, |r| LoginMsg::SignIn(Sensitive::new("1"), r)).await;
        assert!(matches!(wrong, Err(LoginFailure::InvalidCode)));
        let out = step(&actor, |r| LoginMsg::SignIn(Sensitive::new("12345"), r))
            .await
            .unwrap();
        assert!(matches!(out, SignInOutcome::PasswordRequired { hint: Some(ref h) } if h == "pet"));
        let done = step(&actor, |r| LoginMsg::Password(Sensitive::new("pw"), r))
            .await
            .unwrap();
        assert_eq!(done.snapshot.home_auth_key(), Some(&[3u8; 256]));
        assert_eq!(format!("{:?}", Sensitive::new("pw")), "Sensitive(***)");
    }
}
