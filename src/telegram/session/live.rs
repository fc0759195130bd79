//! The live session of one account: grammers' [`Session`] over state held in memory, persisted
//! sealed to `TG_SESSIONS` by a background writer.
//!
//! Why in memory: grammers calls `home_dc_id` and `dc_option` synchronously on every request, so
//! they must never wait on NATS. Why a debounced writer: `iter_dialogs` caches peers by the
//! hundred, and one KV write per peer would be wasteful; changes are coalesced for
//! [`LiveSessionOptions::write_delay`] and written as one sealed snapshot. Whatever must be durable
//! *now* (a committed update state, shutdown) goes through [`SealedSession::flush`].
//!
//! Why fenced: only the account's owner may write its session. [`SealedSession::load_as`] claims
//! the stored session with the owner's epoch, and every write is a compare-and-set on the
//! revision the session last wrote ([`crate::cluster::fenced`]). Once another owner has loaded it
//! (or an operator replaced it), the next write is refused: the session stops writing for good,
//! [`SealedSession::flush`] says so and [`SealedSession::refused`] resolves, so the account's
//! client stops too.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use grammers_session::types::{
    ChannelState, DcOption, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use grammers_session::{BoxFuture, Session, SessionData};
use tokio::sync::{Notify, oneshot, watch};

use super::{SessionSnapshot, SessionStore, StoreError};
use crate::cluster::fenced::{FencedError, FencedWriter, Owner, Stamp};

/// Counter of failed writes of a live session to `TG_SESSIONS` (each is retried).
pub const METRIC_SESSION_WRITE_ERRORS: &str = "tgingest_session_write_errors_total";
/// Counter of sealed session snapshots written to `TG_SESSIONS`.
pub const METRIC_SESSION_WRITES: &str = "tgingest_session_writes_total";

/// The longest pause between retries of a failing write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How long the writer tries to save unsaved changes once its session is dropped.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Tuning of a [`SealedSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSessionOptions {
    /// How long changes are collected before the background writer saves them (one write per
    /// burst); also the first pause before a failed write is retried.
    pub write_delay: Duration,
}

impl Default for LiveSessionOptions {
    fn default() -> Self {
        LiveSessionOptions {
            write_delay: Duration::from_secs(1),
        }
    }
}

/// Why a live session could not be opened, created or saved. Never carries key or session bytes.
#[derive(Debug, thiserror::Error)]
pub enum LiveSessionError {
    #[error(
        "account {account} has no session in TG_SESSIONS; log the account in or import a session first"
    )]
    NotFound { account: String },
    #[error(
        "cannot save the session of account {account}: {source}; the change stays in memory and \
         the writer retries it"
    )]
    Write {
        account: String,
        #[source]
        source: StoreError,
    },
    /// Another owner loaded the session, or it was replaced: this session writes no more.
    #[error(
        "the session of account {account} can no longer be written by this node: {source}; it \
         stopped writing"
    )]
    Refused {
        account: String,
        #[source]
        source: FencedError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the live session and its writer are doing, for tests, the admin API and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSessionStatus {
    /// Whether the state in memory has changes not yet in `TG_SESSIONS`.
    pub dirty: bool,
    /// Snapshots written since this session was opened.
    pub writes: u64,
    /// Writes that failed since this session was opened.
    pub write_errors: u64,
    /// The error of the newest write, if it failed (cleared by the next successful write).
    pub last_error: Option<String>,
    /// The KV revision of the newest snapshot this session wrote.
    pub last_revision: Option<u64>,
    /// Why this session stopped writing (another owner loaded it, or it was replaced).
    pub refused: Option<String>,
}

/// A DC option for a server of one's own (a test DC, the fake DC): `address` for both IPv4 and
/// IPv6 (an IPv4 address is given to IPv6 as its mapped form), and optionally a known auth key.
pub fn custom_dc_option(id: i32, address: SocketAddr, auth_key: Option<[u8; 256]>) -> DcOption {
    let (ipv4, ipv6) = match address.ip() {
        IpAddr::V4(ip) => (
            SocketAddrV4::new(ip, address.port()),
            SocketAddrV6::new(ip.to_ipv6_mapped(), address.port(), 0, 0),
        ),
        IpAddr::V6(ip) => (
            // grammers needs some IPv4 address; the unspecified one never connects anywhere.
            SocketAddrV4::new(
                ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
                address.port(),
            ),
            SocketAddrV6::new(ip, address.port(), 0, 0),
        ),
    };
    DcOption {
        id,
        ipv4,
        ipv6,
        auth_key,
    }
}

/// grammers' state plus the snapshot fields grammers does not know about.
struct Live {
    data: SessionData,
    user_id: Option<i64>,
    test_mode: bool,
    /// Bumped by every change, so the writer knows what a snapshot covers.
    version: u64,
}

impl Live {
    fn from_snapshot(snapshot: &SessionSnapshot) -> Live {
        Live {
            data: snapshot.to_session_data(),
            user_id: snapshot.user_id,
            test_mode: snapshot.test_mode,
            version: 0,
        }
    }

    fn snapshot(&self) -> SessionSnapshot {
        let mut snapshot = SessionSnapshot::from_session_data(&self.data);
        snapshot.user_id = self.user_id;
        snapshot.test_mode = self.test_mode;
        snapshot
    }
}

#[derive(Default)]
struct Stats {
    writes: u64,
    write_errors: u64,
    last_error: Option<String>,
    last_revision: Option<u64>,
}

/// What the session handle and its writer task share.
struct Shared {
    account: String,
    store: Arc<SessionStore>,
    live: Mutex<Live>,
    /// The `Live::version` last written to the store.
    persisted: AtomicU64,
    /// The owner's fenced writes; held across snapshot-and-write, so an older snapshot never
    /// lands after a newer one.
    writer: tokio::sync::Mutex<FencedWriter>,
    /// Set once a write was refused; the session writes no more.
    refused: watch::Sender<Option<FencedError>>,
    /// Wakes the writer; a wake-up while it is busy is kept for its next round.
    wake: Notify,
    stats: Mutex<Stats>,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        // Every change below is a single assignment or map insert, so a panic elsewhere while the
        // lock was held cannot have left the state half-changed.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change`; when it reports that something changed, marks the state dirty and wakes
    /// the writer.
    fn change(&self, change: impl FnOnce(&mut Live) -> bool) {
        let changed = {
            let mut live = self.live();
            let changed = change(&mut live);
            if changed {
                live.version += 1;
            }
            changed
        };
        if changed {
            self.wake.notify_one();
        }
    }

    fn is_dirty(&self) -> bool {
        self.live().version != self.persisted.load(Ordering::Acquire)
    }

    fn refusal(&self) -> Option<FencedError> {
        self.refused.borrow().clone()
    }

    /// Writes the current state if it has unsaved changes; returns the new KV revision.
    async fn write_if_dirty(&self) -> Result<Option<u64>, StoreError> {
        let mut writer = self.writer.lock().await;
        if let Some(refused) = self.refusal() {
            return Err(refused.into());
        }
        let (snapshot, version) = {
            let live = self.live();
            if live.version == self.persisted.load(Ordering::Acquire) {
                return Ok(None);
            }
            (live.snapshot(), live.version)
        };
        let written = match self.store.seal(&self.account, &snapshot) {
            Ok(sealed) => writer.write(sealed).await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match written {
            Ok(revision) => {
                self.persisted.store(version, Ordering::Release);
                let mut stats = self.stats();
                stats.writes += 1;
                stats.last_error = None;
                stats.last_revision = Some(revision);
                metrics::counter!(METRIC_SESSION_WRITES).increment(1);
                Ok(Some(revision))
            }
            Err(StoreError::Fenced(e)) if e.is_refusal() => {
                tracing::error!(
                    account = %crate::telemetry::hash_id(&self.account),
                    error = %e,
                    "the Telegram session may no longer be written here; it stops writing"
                );
                self.stats().last_error = Some(e.to_string());
                self.refused.send_replace(Some(e.clone()));
                Err(e.into())
            }
            Err(e) => {
                // The error names what failed; it never holds key or session bytes.
                tracing::warn!(
                    account = %crate::telemetry::hash_id(&self.account),
                    error = %e,
                    "cannot save the Telegram session; keeping it in memory and retrying"
                );
                metrics::counter!(METRIC_SESSION_WRITE_ERRORS).increment(1);
                let mut stats = self.stats();
                stats.write_errors += 1;
                stats.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// One account's grammers session: state in memory, sealed snapshots in `TG_SESSIONS`.
///
/// Changes are saved by a background writer at most once per
/// [`LiveSessionOptions::write_delay`]; [`SealedSession::flush`] saves at once. Dropping the
/// session stops the writer after one last attempt to save unsaved changes. Must be created
/// inside a tokio runtime.
pub struct SealedSession {
    shared: Arc<Shared>,
    /// Dropped with the session, which tells the writer to finish.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for SealedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the state itself: it holds auth keys.
        f.debug_struct("SealedSession")
            .field("account", &self.shared.account)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl SealedSession {
    /// Opens the session `account` has in the store, as an owner of epoch 0 (a single node).
    pub async fn load(
        store: Arc<SessionStore>,
        account: &str,
        options: LiveSessionOptions,
    ) -> Result<SealedSession, LiveSessionError> {
        Self::load_as(store, account, &Owner::default(), options).await
    }

    /// Opens the session `account` has in the store as its `owner`: claims it with the owner's
    /// epoch, so from here on an older owner's writes are refused; refused itself
    /// ([`LiveSessionError::Refused`]) when a newer owner has written the session.
    pub async fn load_as(
        store: Arc<SessionStore>,
        account: &str,
        owner: &Owner,
        options: LiveSessionOptions,
    ) -> Result<SealedSession, LiveSessionError> {
        let (writer, snapshot) = match store.claim(account, owner).await {
            Ok(claimed) => claimed,
            Err(StoreError::NotFound { account }) => {
                return Err(LiveSessionError::NotFound { account });
            }
            Err(StoreError::Fenced(source)) if source.is_refusal() => {
                return Err(LiveSessionError::Refused {
                    account: account.to_string(),
                    source,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let revision = writer.revision();
        let session = Self::start(
            store,
            account,
            Live::from_snapshot(&snapshot),
            writer,
            options,
        );
        session.shared.stats().last_revision = Some(revision);
        Ok(session)
    }

    /// Creates the session of a new account from `snapshot` (an imported session, or a fresh one)
    /// and writes it at once. Refuses to replace a session the account already has.
    pub async fn create(
        store: Arc<SessionStore>,
        account: &str,
        snapshot: &SessionSnapshot,
        options: LiveSessionOptions,
    ) -> Result<SealedSession, LiveSessionError> {
        let revision = store.create(account, snapshot).await?;
        let stamp = Stamp {
            writer: uuid::Uuid::new_v4().to_string(),
            ..Stamp::default()
        };
        let writer = store.fenced().writer_at(account, stamp, revision);
        let session = Self::start(
            store,
            account,
            Live::from_snapshot(snapshot),
            writer,
            options,
        );
        session.shared.stats().last_revision = Some(revision);
        Ok(session)
    }

    /// Creates a fresh session (no peers, no update state) of a new account that lives on a DC of
    /// one's own: `home_dc` is the account's DC and `dc` the only DC the session knows (see
    /// [`custom_dc_option`]), with its auth key if one is already known.
    pub async fn create_for_dc(
        store: Arc<SessionStore>,
        account: &str,
        home_dc: i32,
        dc: DcOption,
        options: LiveSessionOptions,
    ) -> Result<SealedSession, LiveSessionError> {
        let mut data = SessionData {
            home_dc,
            ..SessionData::default()
        };
        data.dc_options.clear();
        data.dc_options.insert(dc.id, dc);
        let snapshot = SessionSnapshot::from_session_data(&data);
        Self::create(store, account, &snapshot, options).await
    }

    fn start(
        store: Arc<SessionStore>,
        account: &str,
        live: Live,
        writer: FencedWriter,
        options: LiveSessionOptions,
    ) -> SealedSession {
        // What was just read from (or written to) the store is saved.
        let persisted = live.version;
        let shared = Arc::new(Shared {
            account: account.to_string(),
            store,
            live: Mutex::new(live),
            persisted: AtomicU64::new(persisted),
            writer: tokio::sync::Mutex::new(writer),
            refused: watch::Sender::new(None),
            wake: Notify::new(),
            stats: Mutex::new(Stats::default()),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(write_behind(shared.clone(), options.write_delay, stop_rx));
        SealedSession {
            shared,
            _stop: stop_tx,
        }
    }

    /// The account this session belongs to.
    pub fn account(&self) -> &str {
        &self.shared.account
    }

    /// Writes unsaved changes now; `Ok` means `TG_SESSIONS` holds everything changed before this
    /// call. A failed write is returned here (and still retried by the writer).
    pub async fn flush(&self) -> Result<(), LiveSessionError> {
        let account = self.shared.account.clone();
        match self.shared.write_if_dirty().await {
            Ok(_) => Ok(()),
            Err(StoreError::Fenced(source)) if source.is_refusal() => {
                Err(LiveSessionError::Refused { account, source })
            }
            Err(source) => Err(LiveSessionError::Write { account, source }),
        }
    }

    /// Resolves once a write of this session was refused (another owner loaded it, or it was
    /// replaced), with the refusal: the account's client must stop.
    pub fn refused(&self) -> impl std::future::Future<Output = FencedError> + Send + 'static {
        let mut refused = self.shared.refused.subscribe();
        async move {
            let found = refused
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|r| r.clone());
            match found {
                Some(e) => e,
                // The session is gone: nothing will be refused any more.
                None => std::future::pending().await,
            }
        }
    }

    /// The session as it stands in memory, saved or not.
    pub fn snapshot(&self) -> SessionSnapshot {
        self.shared.live().snapshot()
    }

    /// Whether the changes are saved, and how the writes went.
    pub fn status(&self) -> LiveSessionStatus {
        let dirty = self.shared.is_dirty();
        let stats = self.shared.stats();
        LiveSessionStatus {
            dirty,
            writes: stats.writes,
            write_errors: stats.write_errors,
            last_error: stats.last_error.clone(),
            last_revision: stats.last_revision,
            refused: self.shared.refusal().map(|e| e.to_string()),
        }
    }
}

/// The background writer: after a change, waits `delay` for the burst to end, then writes one
/// snapshot; failed writes are retried with growing pauses. Ends when the session is dropped,
/// after one bounded attempt to save what is still unsaved.
async fn write_behind(shared: Arc<Shared>, delay: Duration, mut stop: oneshot::Receiver<()>) {
    let mut retry_delay = delay;
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = &mut stop => break,
        }
        let failing = shared.stats().last_error.is_some();
        let pause = if failing { retry_delay } else { delay };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = &mut stop => break,
        }
        match shared.write_if_dirty().await {
            Ok(_) => retry_delay = delay,
            // Refused: this session writes no more (logged by write_if_dirty).
            Err(_) if shared.refusal().is_some() => return,
            Err(_) => {
                // Logged and counted by write_if_dirty; come back for another try.
                retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY).max(delay);
                shared.wake.notify_one();
            }
        }
    }
    if shared.is_dirty() {
        match tokio::time::timeout(FINAL_WRITE_TIMEOUT, shared.write_if_dirty()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {} // logged and counted already
            Err(_) => tracing::warn!(
                account = %crate::telemetry::hash_id(&shared.account),
                "the Telegram session was dropped with unsaved changes: saving them timed out"
            ),
        }
    }
}

impl Session for SealedSession {
    /// The state lives in memory, so the session itself never fails; failed writes surface from
    /// [`SealedSession::flush`] and [`SealedSession::status`].
    type Error = Infallible;

    fn home_dc_id(&self) -> Result<i32, Infallible> {
        Ok(self.shared.live().data.home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), Infallible>> {
        self.shared.change(|live| {
            let changed = live.data.home_dc != dc_id;
            live.data.home_dc = dc_id;
            changed
        });
        Box::pin(async { Ok(()) })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, Infallible> {
        Ok(self.shared.live().data.dc_options.get(&dc_id).cloned())
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), Infallible>> {
        self.shared.change(|live| {
            live.data.dc_options.insert(dc_option.id, dc_option.clone()) != Some(dc_option.clone())
        });
        Box::pin(async { Ok(()) })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, Infallible>> {
        let live = self.shared.live();
        let found = if peer == PeerId::self_user() {
            // As grammers' SQLite storage does: the sentinel finds the user marked as self, which
            // is how grammers asks whether the session is logged in.
            live.data
                .peer_infos
                .values()
                .find(|p| {
                    matches!(
                        p,
                        PeerInfo::User {
                            is_self: Some(true),
                            ..
                        }
                    )
                })
                .cloned()
        } else {
            live.data.peer_infos.get(&peer).cloned()
        };
        drop(live);
        Box::pin(async move { Ok(found) })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), Infallible>> {
        self.shared.change(|live| cache_one(live, peer));
        Box::pin(async { Ok(()) })
    }

    fn cache_peers(&self, peers: Vec<PeerInfo>) -> BoxFuture<'_, Result<(), Infallible>> {
        // One lock and one wake-up for the whole batch.
        self.shared.change(|live| {
            peers
                .into_iter()
                .fold(false, |changed, peer| cache_one(live, peer) | changed)
        });
        Box::pin(async { Ok(()) })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, Infallible>> {
        let state = self.shared.live().data.updates_state.clone();
        Box::pin(async move { Ok(state) })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), Infallible>> {
        self.shared.change(|live| {
            let before = live.data.updates_state.clone();
            apply_update_state(&mut live.data.updates_state, update);
            live.data.updates_state != before
        });
        Box::pin(async { Ok(()) })
    }
}

/// Caches one peer the way grammers' MemorySession does (new information extends what is known);
/// also records the logged-in user's id when it first shows. Returns whether anything changed.
fn cache_one(live: &mut Live, peer: PeerInfo) -> bool {
    if let PeerInfo::User {
        id,
        is_self: Some(true),
        ..
    } = peer
        && live.user_id.is_none()
    {
        live.user_id = Some(id);
    }
    match live.data.peer_infos.get_mut(&peer.id()) {
        Some(known) => {
            let before = known.clone();
            known.extend_info(&peer);
            *known != before
        }
        None => {
            live.data.peer_infos.insert(peer.id(), peer);
            true
        }
    }
}

/// Applies one update-state change exactly as grammers' MemorySession does.
fn apply_update_state(state: &mut UpdatesState, update: UpdateState) {
    match update {
        UpdateState::All(updates_state) => *state = updates_state,
        UpdateState::Primary { pts, date, seq } => {
            state.pts = pts;
            state.date = date;
            state.seq = seq;
        }
        UpdateState::Secondary { qts } => state.qts = qts,
        UpdateState::Channel { id, pts } => {
            state.channels.retain(|c| c.id != id);
            state.channels.push(ChannelState { id, pts });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_state_changes_apply_like_grammers_memory_session() {
        let mut state = UpdatesState::default();
        apply_update_state(
            &mut state,
            UpdateState::Primary {
                pts: 5,
                date: 6,
                seq: 7,
            },
        );
        apply_update_state(&mut state, UpdateState::Secondary { qts: 9 });
        apply_update_state(&mut state, UpdateState::Channel { id: 1, pts: 10 });
        apply_update_state(&mut state, UpdateState::Channel { id: 2, pts: 20 });
        apply_update_state(&mut state, UpdateState::Channel { id: 1, pts: 11 });
        assert_eq!(
            state,
            UpdatesState {
                pts: 5,
                qts: 9,
                date: 6,
                seq: 7,
                // The replaced channel moves to the end, as in MemorySession.
                channels: vec![
                    ChannelState { id: 2, pts: 20 },
                    ChannelState { id: 1, pts: 11 }
                ],
            }
        );
        let all = UpdatesState {
            pts: 1,
            ..UpdatesState::default()
        };
        apply_update_state(&mut state, UpdateState::All(all.clone()));
        assert_eq!(state, all);
    }

    #[test]
    fn a_custom_dc_option_points_both_families_at_the_address() {
        let dc = custom_dc_option(2, "127.0.0.1:4430".parse().unwrap(), None);
        assert_eq!(dc.ipv4.to_string(), "127.0.0.1:4430");
        assert_eq!(dc.ipv6.ip().to_ipv4_mapped(), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(dc.ipv6.port(), 4430);
        let dc = custom_dc_option(2, "[::1]:443".parse().unwrap(), Some([1; 256]));
        assert_eq!(dc.ipv6.to_string(), "[::1]:443");
        assert_eq!(dc.auth_key, Some([1; 256]));
    }

    #[test]
    fn caching_known_information_again_changes_nothing() {
        let mut live =
            Live::from_snapshot(&SessionSnapshot::from_session_data(&SessionData::default()));
        let me = PeerInfo::User {
            id: 42,
            auth: None,
            bot: None,
            is_self: Some(true),
        };
        assert!(cache_one(&mut live, me.clone()));
        assert_eq!(live.user_id, Some(42));
        assert!(!cache_one(&mut live, me));
        let more = PeerInfo::User {
            id: 42,
            auth: Some(grammers_session::types::PeerAuth::from_hash(7)),
            bot: None,
            is_self: None,
        };
        assert!(cache_one(&mut live, more));
        assert!(matches!(
            live.data.peer_infos[&PeerId::user_unchecked(42)],
            PeerInfo::User {
                auth: Some(_),
                is_self: Some(true),
                ..
            }
        ));
    }
}
