//! How grammers' errors map onto what the account actor must do (see [`GatewayError`]).
//!
//! Two pieces: [`gateway_error`], which sorts an [`InvocationError`] into the outcome the actor
//! acts on, and [`FloodWaitPolicy`], the retry policy of the SenderPool, which sleeps short
//! FLOOD_WAITs inside the request (up to `telegram.flood_sleep_max`), retries I/O trouble a few
//! times with backoff, and gives everything else straight back — so a long flood wait reaches
//! the actor as [`GatewayError::FloodWait`] and parks the account instead of hiding in a sleep.
//!
//! How grammers 0.11 reports the cases that matter (read from its sources):
//! * RPC errors arrive as [`InvocationError::Rpc`] with the digits taken out of the name:
//!   `FLOOD_WAIT_31` is `{ code: 420, name: "FLOOD_WAIT", value: Some(31) }`.
//! * `AUTH_KEY_DUPLICATED` is an ordinary RPC error (code 406) answering whatever request was
//!   in flight.
//! * An auth key the server does not know is a transport-level error, a negative length `-404`
//!   ([`InvocationError::Transport`]). When that happens while a connection is being set up,
//!   grammers silently generates a *new* key and retries `initConnection`; the next call then
//!   fails with `401 AUTH_KEY_UNREGISTERED`. A `-404` that reaches us therefore means the
//!   session is gone either way, and maps to [`GatewayError::Revoked`]. `-429` (too many
//!   connections from this address) is transient.

use std::ops::ControlFlow;
use std::time::Duration;

use grammers_mtsender::{InvocationError, RetryContext, RetryPolicy, RpcError};

use crate::telegram::gateway::GatewayError;

/// RPC names (digits removed, as grammers reports them) that ask to wait `value` seconds.
const FLOOD_WAIT_NAMES: [&str; 4] = [
    "FLOOD_WAIT",
    "FLOOD_PREMIUM_WAIT",
    "SLOWMODE_WAIT",
    "FLOOD_TEST_PHONE_WAIT",
];

/// RPC names that mean the session can no longer be used (only a new login helps).
const REVOKED_NAMES: [&str; 6] = [
    "AUTH_KEY_UNREGISTERED",
    "AUTH_KEY_INVALID",
    "SESSION_REVOKED",
    "SESSION_EXPIRED",
    "USER_DEACTIVATED",
    "USER_DEACTIVATED_BAN",
];

/// The revocation reason given for a transport-level `-404` (the server does not know the key).
pub const AUTH_KEY_NOT_FOUND: &str = "AUTH_KEY_NOT_FOUND";

/// Sorts a grammers error into what the account actor must do about it.
///
/// FLOOD_WAIT / FLOOD_PREMIUM_WAIT / SLOWMODE_WAIT → [`GatewayError::FloodWait`]; PEER_FLOOD →
/// [`GatewayError::PeerFlood`]; a dead session (any 401, e.g. AUTH_KEY_UNREGISTERED,
/// SESSION_REVOKED, USER_DEACTIVATED_BAN, or a transport `-404`) → [`GatewayError::Revoked`] with
/// the RPC name; AUTH_KEY_DUPLICATED → [`GatewayError::Duplicated`]; I/O, transport, dropped
/// requests, failed key exchanges and RPC timeouts → [`GatewayError::Network`]; anything else →
/// [`GatewayError::Other`] naming the RPC error and the request that caused it.
pub fn gateway_error(err: &InvocationError) -> GatewayError {
    match err {
        InvocationError::Rpc(rpc) => rpc_gateway_error(rpc),
        InvocationError::Io(e) => GatewayError::Network(format!("i/o: {e}")),
        InvocationError::Transport(e) => match transport_status(&e.to_string()) {
            Some(404) => GatewayError::Revoked(AUTH_KEY_NOT_FOUND.to_string()),
            _ => GatewayError::Network(e.to_string()),
        },
        InvocationError::Dropped(why) => GatewayError::Network(format!("request dropped: {why}")),
        InvocationError::Authentication(e) => {
            GatewayError::Network(format!("auth key exchange failed: {e}"))
        }
        InvocationError::Deserialize(e) => {
            GatewayError::Other(format!("undecodable response: {e}"))
        }
        InvocationError::InvalidDc => GatewayError::Other("request to an unknown DC".to_string()),
        // The session storage's own error type is erased; its text names no person.
        InvocationError::Session(e) => GatewayError::Other(format!("session storage: {e}")),
    }
}

fn rpc_gateway_error(rpc: &RpcError) -> GatewayError {
    let name = rpc.name.as_str();
    if FLOOD_WAIT_NAMES.contains(&name)
        && let Some(seconds) = rpc.value
    {
        return GatewayError::FloodWait {
            seconds: u64::from(seconds),
        };
    }
    if name == "PEER_FLOOD" {
        return GatewayError::PeerFlood;
    }
    if name == "AUTH_KEY_DUPLICATED" {
        return GatewayError::Duplicated;
    }
    if REVOKED_NAMES.contains(&name) || rpc.code == 401 {
        return GatewayError::Revoked(name.to_string());
    }
    // Telegram answers `-503 Timeout` when the request may or may not have run: transient.
    if rpc.code == -503 || name.eq_ignore_ascii_case("TIMEOUT") {
        return GatewayError::Network(format!("rpc {} {name}", rpc.code));
    }
    let mut text = format!("rpc {} {name}", rpc.code);
    if let Some(value) = rpc.value {
        text.push_str(&format!(" (value {value})"));
    }
    if let Some(id) = rpc.caused_by {
        text.push_str(&format!(
            " caused by {}",
            grammers_tl_types::name_for_id(id)
        ));
    }
    GatewayError::Other(text)
}

/// The status of a transport-level error (`-404`, `-429`), read from its text.
///
/// grammers-mtproto (which owns the error type) is not a direct dependency, so the variant
/// cannot be matched; its `Display` is `transport error: bad status (negative length -404)`.
fn transport_status(text: &str) -> Option<u32> {
    let (_, rest) = text.split_once("negative length -")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The SenderPool's retry policy: sleeps FLOOD_WAITs while the total slept for one request stays
/// within `flood_sleep_max`, then gives up (the actor parks the account); retries I/O and
/// transport trouble up to `io_retries` times with doubling backoff; never retries anything else
/// (a revoked or duplicated session, PEER_FLOOD, a bad request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodWaitPolicy {
    /// Longest total sleep on FLOOD_WAITs for one request (`telegram.flood_sleep_max`).
    pub flood_sleep_max: Duration,
    /// Retries of one request after network errors.
    pub io_retries: u32,
    /// The first network retry waits this long; each further one twice as long.
    pub io_backoff: Duration,
    /// Upper bound of one network backoff.
    pub io_backoff_max: Duration,
}

impl FloodWaitPolicy {
    /// The policy for `telegram.flood_sleep_max`, with 3 network retries from 500 ms.
    pub fn new(flood_sleep_max: Duration) -> Self {
        FloodWaitPolicy {
            flood_sleep_max,
            io_retries: 3,
            io_backoff: Duration::from_millis(500),
            io_backoff_max: Duration::from_secs(8),
        }
    }

    /// The decision for a request that failed `fail_count` times (1 = the first failure) with
    /// `error`, after sleeping `slept_so_far` on earlier retries.
    pub fn decide(
        &self,
        error: &InvocationError,
        fail_count: u32,
        slept_so_far: Duration,
    ) -> ControlFlow<(), Duration> {
        match gateway_error(error) {
            GatewayError::FloodWait { seconds } => {
                let wait = Duration::from_secs(seconds);
                if slept_so_far.saturating_add(wait) <= self.flood_sleep_max {
                    ControlFlow::Continue(wait)
                } else {
                    ControlFlow::Break(())
                }
            }
            GatewayError::Network(_) if fail_count <= self.io_retries => {
                let doublings = fail_count.saturating_sub(1).min(16);
                let delay = self.io_backoff.saturating_mul(1 << doublings);
                ControlFlow::Continue(delay.min(self.io_backoff_max))
            }
            _ => ControlFlow::Break(()),
        }
    }
}

impl RetryPolicy for FloodWaitPolicy {
    fn should_retry(&self, ctx: &RetryContext) -> ControlFlow<(), Duration> {
        self.decide(&ctx.error, ctx.fail_count.get(), ctx.slept_so_far)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    /// An RPC error as grammers builds it from the wire (digits moved into `value`).
    fn rpc(code: i32, message: &str) -> InvocationError {
        InvocationError::Rpc(RpcError::from(grammers_tl_types::types::RpcError {
            error_code: code,
            error_message: message.to_string(),
        }))
    }

    fn io() -> InvocationError {
        InvocationError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ))
    }

    #[test]
    fn flood_waits_of_every_kind_carry_their_seconds() {
        for (message, seconds) in [
            ("FLOOD_WAIT_31", 31),
            ("FLOOD_PREMIUM_WAIT_7", 7),
            ("SLOWMODE_WAIT_120", 120),
            ("FLOOD_WAIT_86400", 86_400),
        ] {
            assert_eq!(
                gateway_error(&rpc(420, message)),
                GatewayError::FloodWait { seconds },
                "{message}"
            );
        }
    }

    #[test]
    fn peer_flood_is_its_own_outcome() {
        assert_eq!(
            gateway_error(&rpc(400, "PEER_FLOOD")),
            GatewayError::PeerFlood
        );
    }

    #[test]
    fn dead_sessions_are_revoked_with_the_rpc_name() {
        for name in REVOKED_NAMES {
            assert_eq!(
                gateway_error(&rpc(401, name)),
                GatewayError::Revoked(name.to_string())
            );
        }
        // Any other 401 (e.g. SESSION_PASSWORD_NEEDED on a half-finished login) cannot ingest
        // either.
        assert_eq!(
            gateway_error(&rpc(401, "SESSION_PASSWORD_NEEDED")),
            GatewayError::Revoked("SESSION_PASSWORD_NEEDED".into())
        );
        assert!(gateway_error(&rpc(401, "SESSION_REVOKED")).is_permanent());
    }

    #[test]
    fn a_duplicated_auth_key_is_duplicated() {
        let e = gateway_error(&rpc(406, "AUTH_KEY_DUPLICATED"));
        assert_eq!(e, GatewayError::Duplicated);
        assert!(e.is_permanent());
    }

    #[test]
    fn transport_status_is_read_from_grammers_text() {
        // The exact Display of grammers-mtproto's `Error::BadStatus { status: 404 }`.
        let text = "transport error: bad status (negative length -404)";
        assert_eq!(transport_status(text), Some(404));
        assert_eq!(
            transport_status("transport error: bad status (negative length -429)"),
            Some(429)
        );
        assert_eq!(transport_status("transport error: need more bytes"), None);
        assert_eq!(transport_status("transport error: bad len (got -4)"), None);
    }

    #[test]
    fn connection_trouble_is_network() {
        assert!(matches!(gateway_error(&io()), GatewayError::Network(_)));
        assert!(matches!(
            gateway_error(&InvocationError::Dropped("sender pool gone")),
            GatewayError::Network(_)
        ));
        assert!(matches!(
            gateway_error(&rpc(-503, "Timeout")),
            GatewayError::Network(_)
        ));
    }

    #[test]
    fn everything_else_is_other_and_names_the_rpc_error() {
        let e = InvocationError::Rpc(
            RpcError::from(grammers_tl_types::types::RpcError {
                error_code: 400,
                error_message: "CHANNEL_INVALID".into(),
            })
            .with_caused_by(<grammers_tl_types::functions::updates::GetChannelDifference as grammers_tl_types::Identifiable>::CONSTRUCTOR_ID),
        );
        let GatewayError::Other(text) = gateway_error(&e) else {
            panic!("not Other: {e}");
        };
        assert!(text.contains("CHANNEL_INVALID"), "{text}");
        assert!(text.contains("400"), "{text}");
        assert!(text.contains("getChannelDifference"), "{text}");
        assert!(matches!(
            gateway_error(&InvocationError::InvalidDc),
            GatewayError::Other(_)
        ));
        // A flood-wait name without a number is not a wait we can honour.
        assert!(matches!(
            gateway_error(&InvocationError::Rpc(RpcError {
                code: 420,
                name: "FLOOD_WAIT".into(),
                value: None,
                caused_by: None,
            })),
            GatewayError::Other(_)
        ));
    }

    /// The real grammers client against a "DC" that answers every packet with the transport
    /// error `-404`: grammers first drops the stored key and tries a fresh one, then reports the
    /// `-404`, which must read as a revoked session (and not be retried by the policy).
    #[tokio::test]
    async fn an_auth_key_the_server_does_not_know_is_revoked() {
        use std::net::{Ipv4Addr, SocketAddrV4};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use grammers_mtsender::{ConnectionParams, SenderPool};
        use grammers_session::SessionData;
        use grammers_session::storages::MemorySession;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = socket.write_all(&(-404_i32).to_le_bytes()).await;
                    }
                    let _ = socket.read(&mut buf).await;
                });
            }
        });

        let mut data = SessionData::default();
        let home = data.home_dc;
        let Some(dc) = data.dc_options.get_mut(&home) else {
            panic!("the default session knows its home DC");
        };
        dc.ipv4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        dc.auth_key = Some([7; 256]);
        let pool = SenderPool::with_configuration(
            Arc::new(MemorySession::from(data)),
            1,
            ConnectionParams {
                retry_policy: Box::new(FloodWaitPolicy::new(Duration::from_secs(60))),
                ..Default::default()
            },
        );
        let runner = tokio::spawn(pool.runner.run());
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            pool.handle
                .invoke_in_dc(home, &grammers_tl_types::functions::updates::GetState {}),
        )
        .await
        .expect("grammers answers within 30 s");
        let Err(error) = result else {
            panic!("a -404 DC cannot answer getState");
        };
        assert_eq!(
            gateway_error(&error),
            GatewayError::Revoked(AUTH_KEY_NOT_FOUND.to_string()),
            "{error}"
        );
        // The stored key, then a fresh one; no retries on top.
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        pool.handle.quit();
        runner.abort();
        server.abort();
    }

    fn ctx(error: InvocationError, fail_count: u32, slept: u64) -> RetryContext {
        RetryContext {
            fail_count: NonZeroU32::new(fail_count).unwrap_or(NonZeroU32::MIN),
            slept_so_far: Duration::from_secs(slept),
            error,
        }
    }

    #[test]
    fn the_policy_sleeps_flood_waits_up_to_the_budget_then_gives_up() {
        let policy = FloodWaitPolicy::new(Duration::from_secs(60));
        assert_eq!(
            policy.should_retry(&ctx(rpc(420, "FLOOD_WAIT_30"), 1, 0)),
            ControlFlow::Continue(Duration::from_secs(30))
        );
        assert_eq!(
            policy.should_retry(&ctx(rpc(420, "FLOOD_WAIT_60"), 1, 0)),
            ControlFlow::Continue(Duration::from_secs(60))
        );
        // Too long on its own: the actor parks the account instead.
        assert_eq!(
            policy.should_retry(&ctx(rpc(420, "FLOOD_WAIT_61"), 1, 0)),
            ControlFlow::Break(())
        );
        // Short, but the request already slept most of the budget.
        assert_eq!(
            policy.should_retry(&ctx(rpc(420, "SLOWMODE_WAIT_20"), 3, 50)),
            ControlFlow::Break(())
        );
    }

    #[test]
    fn the_policy_retries_network_errors_a_few_times_with_growing_backoff() {
        let policy = FloodWaitPolicy::new(Duration::from_secs(60));
        let delays: Vec<_> = (1..=4)
            .map(|n| policy.should_retry(&ctx(io(), n, 0)))
            .collect();
        assert_eq!(
            delays,
            [
                ControlFlow::Continue(Duration::from_millis(500)),
                ControlFlow::Continue(Duration::from_secs(1)),
                ControlFlow::Continue(Duration::from_secs(2)),
                ControlFlow::Break(()),
            ]
        );
    }

    #[test]
    fn the_policy_never_retries_terminal_or_unknown_errors() {
        let policy = FloodWaitPolicy::new(Duration::from_secs(60));
        for error in [
            rpc(401, "AUTH_KEY_UNREGISTERED"),
            rpc(401, "SESSION_REVOKED"),
            rpc(401, "USER_DEACTIVATED_BAN"),
            rpc(406, "AUTH_KEY_DUPLICATED"),
            rpc(400, "PEER_FLOOD"),
            rpc(400, "CHANNEL_INVALID"),
        ] {
            assert_eq!(
                policy.should_retry(&ctx(error, 1, 0)),
                ControlFlow::Break(())
            );
        }
    }
}
