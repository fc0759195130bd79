//! A fake Telegram data centre: a loopback TCP server that speaks MTProto 2.0 to the real,
//! unmodified grammers client, backed by a scripted [`World`].
//!
//! # What it covers
//! * **Transport**: the "full" TCP transport (grammers' `SenderPool` default: `len ‖ seq ‖
//!   payload ‖ crc32`, not abridged, intermediate or obfuscated), and the transport-level `-404`
//!   for an unknown auth key.
//! * **MTProto 2.0**: server-side AES-IGE with SHA-256 msg keys (`x = 0` in, `x = 8` out);
//!   pre-shared auth keys registered per account; a server salt the client does not know at
//!   first (so `bad_server_salt` → `get_future_salts` is exercised on every connection);
//!   `new_session_created`; `msgs_ack`; `msg_container` in both directions; `gzip_packed`
//!   requests (inflated) and large answers (sent gzip-packed with stored deflate blocks);
//!   `ping` / `ping_delay_disconnect` (the disconnect timer is honoured); `destroy_session`;
//!   `invokeWithLayer` / `invokeWithoutUpdates` / `initConnection` wrapping; `rpc_result` and
//!   `rpc_error`.
//! * **API**: `help.getConfig` (DC options point at this server), `users.getUsers`,
//!   `updates.getState`, `updates.getDifference` (empty / full / slice / too long),
//!   `updates.getChannelDifference` (empty / full / partial / too long), `messages.getDialogs`,
//!   `messages.getHistory`, `messages.getMessages`, `channels.getMessages`,
//!   `messages.getForumTopics`, `channels.getChannels`, `messages.getChats`. Anything else answers
//!   `400 METHOD_NOT_IMPLEMENTED_FAKE_DC` and is recorded in [`FakeDc::unimplemented_calls`].
//! * **Live updates**: [`FakeDc::send_message`] pushes what Telegram pushes:
//!   `updateShortMessage` / `updateShortChatMessage` for plain private and basic-group texts,
//!   `updates` (with users, chats and `seq`) for replies and edits, `updateNewChannelMessage`,
//!   `updateEditChannelMessage`, `updateDeleteMessages` (`updateShort`) and
//!   `updateDeleteChannelMessages`. Accounts without a connection simply miss the push and
//!   must catch up with `getDifference`.
//! * **Faults**: per-method RPC errors (`FLOOD_WAIT_X`…) n times, stalls, connection drops;
//!   account-wide `AUTH_KEY_UNREGISTERED`, `SESSION_REVOKED`, `AUTH_KEY_DUPLICATED` (406, an
//!   RPC error: grammers has no special mapping for it), a forgotten key (`-404`); pts gaps
//!   ([`FakeDc::skip_pts`], or a message recorded without its push: [`SendOptions::skip_push`]);
//!   dropping all connections; seeded rude pushes ([`PushFaults`]): sent twice, held back
//!   behind later ones, or cut half-way through their frame.
//! * **One owner per key** (the cluster's oracle, `overlap`): every request is attributed to its
//!   MTProto session; an older session talking after a newer one on the same key started is
//!   answered `406 AUTH_KEY_DUPLICATED` and recorded ([`FakeDc::overlaps`]), and each change of
//!   session is recorded with the silence before it ([`FakeDc::handovers`]).
//! * **Accounts** each have a pre-shared key, their own message-id counter and pts, and can
//!   share chats; [`FakeDc::session_data`] builds a ready grammers session for one.
//!
//! # What it does not cover
//! No Diffie–Hellman key exchange (a plain message closes the connection; the client's
//! fallback after `-404` therefore fails with an I/O error), no login/sign-up methods, no
//! sending from the client (`messages.sendMessage` is unimplemented), no media, file parts,
//! media DCs, CDN or DC migration (one DC, id 2 by default), no secret chats (qts never moves),
//! no real flood-wait accounting, no per-viewer access hashes (one hash per peer), no
//! read/unread state, no acknowledgement tracking (`msgs_ack` is counted, never required, and
//! unacknowledged answers are not re-sent), no `msg_resend_req` / `msgs_state_req`, no HTTP /
//! obfuscated / abridged transports, and no time-offset (`msg_id` too low/high) or `seq_no`
//! checks, no message entities (texts are plain, though any Unicode). `updateChannelTooLong` hints are added to a non-empty, non-sliced `getDifference`
//! for every member channel with activity since the request's `date`; an empty difference
//! carries none, so channel messages missed during a disconnection with no common-box activity
//! are only fetched once the channel's next update reveals the gap (or when the client's stored
//! channel pts is loaded with `catch_up`).

mod conn;
mod crypto;
mod gzip;
mod overlap;
mod rpc;
pub mod world;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use grammers_session::SessionData;
use grammers_session::types::{DcOption, PeerAuth, PeerId, PeerInfo, UpdatesState};
use grammers_tl_types::{self as tl, Serializable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use overlap::{Handover, Overlap};
pub use world::{ChannelKind, ChatId, RpcFailure, SendOptions, SentMessage, World, WorldLimits};

use conn::Outgoing;
use crypto::ServerKey;

/// How to start a [`FakeDc`].
#[derive(Clone, Debug)]
pub struct FakeDcConfig {
    /// The DC id reported by `help.getConfig` (use it as the session's home DC).
    pub dc_id: i32,
    /// Difference limits (slice size, too-long thresholds).
    pub limits: WorldLimits,
    /// Answers of at least this many bytes are sent `gzip_packed`; `None` never compresses.
    pub gzip_answers_over: Option<usize>,
}

impl Default for FakeDcConfig {
    fn default() -> Self {
        Self {
            dc_id: 2,
            limits: WorldLimits::default(),
            gzip_answers_over: Some(4096),
        }
    }
}

/// How live pushes misbehave, drawn per push and subscriber from a seeded generator, as they
/// do on Telegram: the same update twice, an update held back behind later ones (out of
/// order), a connection reset in the middle of a push frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushFaults {
    pub seed: u64,
    /// Chance a push is sent twice.
    pub duplicate: f64,
    /// Chance a push is held back for up to `max_delay` (later pushes overtake it).
    pub delay: f64,
    pub max_delay: Duration,
    /// Chance the connection is cut half-way through this push's frame.
    pub cut_mid_frame: f64,
}

/// Counts of what [`PushFaults`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushFaultStats {
    pub duplicated: u64,
    pub delayed: u64,
    pub cut: u64,
}

/// A fault injected into the next calls of one method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with `rpc_error` (e.g. 420 `FLOOD_WAIT_5`).
    Rpc {
        /// Error code.
        code: i32,
        /// Error message, digits included (`FLOOD_WAIT_5`).
        message: String,
    },
    /// Answer normally, but only after this long.
    Stall(Duration),
    /// Close the connection instead of answering.
    DropConnection,
}

struct QueuedFault {
    fault: Fault,
    remaining: usize,
}

/// A connection subscribed to an account's live updates: `(connection id, its outbox)`.
type Subscriber = (u64, mpsc::UnboundedSender<Outgoing>);

struct KeyEntry {
    key: ServerKey,
    user: i64,
}

/// Protocol-level counters, for tests that want to see the service layer at work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolStats {
    /// `bad_server_salt` notifications sent.
    pub bad_salts: u64,
    /// `new_session_created` notifications sent.
    pub new_sessions: u64,
    /// Client containers received.
    pub containers_received: u64,
    /// Client `gzip_packed` messages received.
    pub gzip_received: u64,
    /// Message ids acknowledged by clients.
    pub acks_received: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

/// State shared by the accept loop, the connections and the control handle.
pub(crate) struct Shared {
    world: Mutex<World>,
    keys: Mutex<HashMap<[u8; 8], KeyEntry>>,
    auth_errors: Mutex<HashMap<i64, RpcFailure>>,
    salts: Vec<tl::types::FutureSalt>,
    sessions: Mutex<HashSet<i64>>,
    session_log: Mutex<overlap::SessionLog>,
    pushers: Mutex<HashMap<i64, Vec<Subscriber>>>,
    faults: Mutex<HashMap<String, VecDeque<QueuedFault>>>,
    push_faults: Mutex<(PushFaults, StdRng, PushFaultStats)>,
    counters: Mutex<BTreeMap<String, u64>>,
    unimplemented: Mutex<Vec<String>>,
    stats: Mutex<ProtocolStats>,
    drop_tx: watch::Sender<u64>,
    addr: SocketAddr,
    config: FakeDcConfig,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn current_salt(&self) -> i64 {
        self.salts.first().map(|s| s.salt).unwrap_or(1)
    }

    fn salt_is_valid(&self, salt: i64) -> bool {
        self.salts.iter().any(|s| s.salt == salt)
    }

    fn future_salts(&self, req_msg_id: i64, num: i32) -> tl::enums::FutureSalts {
        let n = num.clamp(2, 64) as usize;
        tl::enums::FutureSalts::Salts(tl::types::FutureSalts {
            req_msg_id,
            now: world::now(),
            salts: tl::RawVec(self.salts.iter().take(n).cloned().collect()),
        })
    }

    fn maybe_gzip(&self, result: Vec<u8>) -> Vec<u8> {
        match self.config.gzip_answers_over {
            Some(limit) if result.len() >= limit => conn::gzip_packed(&result),
            _ => result,
        }
    }

    fn config_tl(&self) -> tl::enums::Config {
        let now = world::now();
        tl::types::Config {
            default_p2p_contacts: false,
            preload_featured_stickers: false,
            revoke_pm_inbox: false,
            blocked_mode: false,
            force_try_ipv6: false,
            date: now,
            expires: now + 3600,
            test_mode: true,
            this_dc: self.config.dc_id,
            dc_options: vec![
                tl::types::DcOption {
                    ipv6: false,
                    media_only: false,
                    tcpo_only: false,
                    cdn: false,
                    r#static: true,
                    this_port_only: true,
                    id: self.config.dc_id,
                    ip_address: self.addr.ip().to_string(),
                    port: self.addr.port() as i32,
                    secret: None,
                }
                .into(),
            ],
            dc_txt_domain_name: "fake.dc.invalid".into(),
            chat_size_max: 200,
            megagroup_size_max: 200_000,
            forwarded_count_max: 100,
            online_update_period_ms: 210_000,
            offline_blur_timeout_ms: 5_000,
            offline_idle_timeout_ms: 30_000,
            online_cloud_timeout_ms: 300_000,
            notify_cloud_delay_ms: 30_000,
            notify_default_delay_ms: 1_500,
            push_chat_period_ms: 60_000,
            push_chat_limit: 2,
            edit_time_limit: 172_800,
            revoke_time_limit: i32::MAX,
            revoke_pm_time_limit: i32::MAX,
            rating_e_decay: 2_419_200,
            stickers_recent_limit: 200,
            channels_read_media_period: 604_800,
            tmp_sessions: None,
            call_receive_timeout_ms: 20_000,
            call_ring_timeout_ms: 90_000,
            call_connect_timeout_ms: 30_000,
            call_packet_timeout_ms: 10_000,
            me_url_prefix: "https://t.me/".into(),
            autoupdate_url_prefix: None,
            gif_search_username: None,
            venue_search_username: None,
            img_search_username: None,
            static_maps_provider: None,
            caption_length_max: 1024,
            message_length_max: 4096,
            webfile_dc_id: self.config.dc_id,
            suggested_lang_code: None,
            lang_pack_version: None,
            base_lang_pack_version: None,
            reactions_default: None,
            autologin_token: None,
        }
        .into()
    }

    fn push(&self, pushes: Vec<world::Push>) {
        let pushers = lock(&self.pushers);
        let mut faults = lock(&self.push_faults);
        let (f, rng, stats) = &mut *faults;
        let runtime = tokio::runtime::Handle::try_current().ok();
        for p in pushes {
            if let Some(list) = pushers.get(&p.account) {
                let body = p.updates.to_bytes();
                for (_, tx) in list {
                    let message = || Outgoing::Message {
                        body: body.clone(),
                        content_related: true,
                    };
                    if f.cut_mid_frame > 0.0 && rng.random::<f64>() < f.cut_mid_frame {
                        stats.cut += 1;
                        let _ = tx.send(Outgoing::CutMidFrame { body: body.clone() });
                        continue;
                    }
                    let copies = if f.duplicate > 0.0 && rng.random::<f64>() < f.duplicate {
                        stats.duplicated += 1;
                        2
                    } else {
                        1
                    };
                    let held = f.delay > 0.0 && rng.random::<f64>() < f.delay;
                    match &runtime {
                        Some(rt) if held => {
                            stats.delayed += 1;
                            let wait = f.max_delay.mul_f64(rng.random::<f64>());
                            let (tx, msgs) = (tx.clone(), vec![message(); copies]);
                            rt.spawn(async move {
                                tokio::time::sleep(wait).await;
                                for m in msgs {
                                    let _ = tx.send(m);
                                }
                            });
                        }
                        _ => {
                            for _ in 0..copies {
                                let _ = tx.send(message());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A running fake DC and the handle tests use to script it. Dropping it stops the server.
pub struct FakeDc {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeDc {
    /// Binds 127.0.0.1 on a random port and starts accepting connections.
    pub async fn start(config: FakeDcConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let now = world::now();
        let salts = (0..64)
            .map(|i| tl::types::FutureSalt {
                valid_since: now - 60 + i * 3600,
                valid_until: now - 60 + (i + 1) * 3600 + 1800,
                salt: rand::random::<i64>() | 1,
            })
            .collect();
        let (drop_tx, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            world: Mutex::new(World::new(config.limits.clone())),
            keys: Mutex::new(HashMap::new()),
            auth_errors: Mutex::new(HashMap::new()),
            salts,
            sessions: Mutex::new(HashSet::new()),
            session_log: Mutex::new(overlap::SessionLog::default()),
            pushers: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            push_faults: Mutex::new((
                PushFaults::default(),
                StdRng::seed_from_u64(0),
                PushFaultStats::default(),
            )),
            counters: Mutex::new(BTreeMap::new()),
            unimplemented: Mutex::new(Vec::new()),
            stats: Mutex::new(ProtocolStats::default()),
            drop_tx,
            addr,
            config,
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        info!(%addr, "fake dc: listening");
        Ok(Self {
            shared,
            accept: Some(accept),
        })
    }

    /// The loopback address clients must dial.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The DC id this server reports (use it as the session's home DC).
    pub fn dc_id(&self) -> i32 {
        self.shared.config.dc_id
    }

    /// Creates an account (a user with a random pre-shared auth key) and returns
    /// `(user_id, auth_key)`.
    pub fn add_account(&self, first_name: &str) -> (i64, [u8; 256]) {
        let mut key = [0u8; 256];
        rand::fill(&mut key[..]);
        (self.add_account_with(first_name, key, None), key)
    }

    /// Creates an account with the given auth key and phone (digits only) and returns its user
    /// id: for callers that must know every secret the account has (the log canary's demo).
    pub fn add_account_with(&self, first_name: &str, key: [u8; 256], phone: Option<&str>) -> i64 {
        let mut world = lock(&self.shared.world);
        let user = world.add_account(first_name);
        if let Some(phone) = phone {
            world.set_phone(user, phone);
        }
        drop(world);
        let server_key = ServerKey::new(key);
        lock(&self.shared.keys).insert(
            server_key.id(),
            KeyEntry {
                key: server_key,
                user,
            },
        );
        user
    }

    /// Creates a user without an account (a contact who can write to accounts).
    pub fn add_user(&self, first_name: &str) -> i64 {
        lock(&self.shared.world).add_user(first_name)
    }

    /// A grammers session for `account`: home DC = this server with the pre-shared key, the
    /// self user cached, and the update state at the account's current pts (as if the client had
    /// called `updates.getState` and saved it).
    pub fn session_data(&self, account: i64, auth_key: [u8; 256]) -> SessionData {
        let world = lock(&self.shared.world);
        let state = world.state(account);
        let hash = world.user_access_hash(account).unwrap_or_default();
        drop(world);
        let mut data = SessionData {
            home_dc: self.dc_id(),
            ..SessionData::default()
        };
        data.dc_options.clear();
        let ipv4 = match self.addr() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.addr().port()),
        };
        data.dc_options.insert(
            self.dc_id(),
            DcOption {
                id: self.dc_id(),
                ipv4,
                ipv6: SocketAddrV6::new(Ipv6Addr::LOCALHOST, ipv4.port(), 0, 0),
                auth_key: Some(auth_key),
            },
        );
        let me = PeerInfo::User {
            id: account,
            auth: Some(PeerAuth::from_hash(hash)),
            bot: Some(false),
            is_self: Some(true),
        };
        data.peer_infos
            .insert(PeerId::user_unchecked(account), me.clone());
        // grammers looks the logged-in user up under the self sentinel, not under its id.
        data.peer_infos.insert(PeerId::self_user(), me);
        if let Some(s) = state {
            data.updates_state = UpdatesState {
                pts: s.pts,
                qts: s.qts,
                date: s.date,
                seq: s.seq,
                channels: Vec::new(),
            };
        }
        data
    }

    /// Creates a basic group.
    pub fn create_group(&self, title: &str, members: &[i64]) -> ChatId {
        lock(&self.shared.world).create_group(title, members)
    }

    /// Creates a channel (broadcast, supergroup or forum).
    pub fn create_channel(&self, title: &str, kind: ChannelKind, members: &[i64]) -> ChatId {
        lock(&self.shared.world).create_channel(title, kind, members)
    }

    /// Creates a forum topic in a forum supergroup and returns its id (the id of the
    /// `messageActionTopicCreate` service message, pushed like any channel message).
    pub fn create_topic(&self, forum: ChatId, from: i64, title: &str) -> Option<i32> {
        let ChatId::Channel(cid) = forum else {
            return None;
        };
        let mut world = lock(&self.shared.world);
        let (id, pushes) = world.create_topic(cid, from, title)?;
        self.shared.push(pushes);
        Some(id)
    }

    /// Sends a message and pushes the resulting updates to every connected member account.
    /// `None` if the chat or sender does not exist.
    pub fn send_message(
        &self,
        chat: ChatId,
        from: i64,
        text: &str,
        options: SendOptions,
    ) -> Option<SentMessage> {
        let mut world = lock(&self.shared.world);
        let (sent, pushes) = world.send_message(chat, from, text, &options)?;
        // Pushed under the world lock so concurrent sends reach clients in pts order.
        if !options.skip_push {
            self.shared.push(pushes);
        }
        Some(sent)
    }

    /// Edits a message for everyone and pushes `updateEdit(Channel)Message`.
    pub fn edit_message(&self, msg: &SentMessage, text: &str) {
        let mut world = lock(&self.shared.world);
        let pushes = world.edit_message(msg, text);
        self.shared.push(pushes);
    }

    /// Deletes messages (all from one chat) and pushes `updateDelete(Channel)Messages`.
    pub fn delete_messages(&self, msgs: &[SentMessage]) {
        let mut world = lock(&self.shared.world);
        let pushes = world.delete_messages(msgs);
        self.shared.push(pushes);
    }

    /// Advances an account's common pts by `n` with no event: the next update shows a gap.
    pub fn skip_pts(&self, account: i64, n: i32) {
        lock(&self.shared.world).skip_pts(account, n);
    }

    /// Advances a channel's pts by `n` with no event.
    pub fn skip_channel_pts(&self, channel: ChatId, n: i32) {
        if let ChatId::Channel(id) = channel {
            lock(&self.shared.world).skip_channel_pts(id, n);
        }
    }

    /// The account's current `updates.getState`.
    pub fn state(&self, account: i64) -> Option<tl::types::updates::State> {
        lock(&self.shared.world).state(account)
    }

    /// A channel's current pts.
    pub fn channel_pts(&self, channel: ChatId) -> Option<i32> {
        match channel {
            ChatId::Channel(id) => lock(&self.shared.world).channel_pts(id),
            _ => None,
        }
    }

    /// The access hash the fake hands out for a channel (for building `InputChannel`s).
    pub fn channel_access_hash(&self, channel: ChatId) -> Option<i64> {
        match channel {
            ChatId::Channel(id) => lock(&self.shared.world).channel_access_hash(id),
            _ => None,
        }
    }

    /// Runs `f` with the world locked (for assertions or scripting not covered above; pushes
    /// are not sent for changes made here).
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut lock(&self.shared.world))
    }

    /// Closes every open client connection (the server keeps listening).
    pub fn drop_connections(&self) {
        self.shared.drop_tx.send_modify(|g| *g += 1);
        lock(&self.shared.pushers).clear();
    }

    /// Injects `fault` into the next `times` calls of `method` (TL name, e.g.
    /// `"updates.getState"`). Faults for one method are served in order.
    pub fn inject(&self, method: &str, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        lock(&self.shared.faults)
            .entry(method.to_owned())
            .or_default()
            .push_back(QueuedFault {
                fault,
                remaining: times,
            });
    }

    /// The next `times` calls of `method` fail with `420 FLOOD_WAIT_{seconds}`.
    pub fn flood_wait(&self, method: &str, seconds: u32, times: usize) {
        self.inject(
            method,
            Fault::Rpc {
                code: 420,
                message: format!("FLOOD_WAIT_{seconds}"),
            },
            times,
        );
    }

    /// The next `times` calls of `method` are answered only after `duration`.
    pub fn stall(&self, method: &str, duration: Duration, times: usize) {
        self.inject(method, Fault::Stall(duration), times);
    }

    /// Makes live pushes misbehave from now on (see [`PushFaults`]); the default turns it off.
    pub fn set_push_faults(&self, faults: PushFaults) {
        let mut f = lock(&self.shared.push_faults);
        f.1 = StdRng::seed_from_u64(faults.seed);
        f.0 = faults;
    }

    /// What the push faults did so far.
    pub fn push_fault_stats(&self) -> PushFaultStats {
        lock(&self.shared.push_faults).2.clone()
    }

    /// Every API call of the account now fails with `401 AUTH_KEY_UNREGISTERED` (a logged-out
    /// or revoked key; the key is still known at the transport level, as on Telegram).
    pub fn revoke_key(&self, account: i64) {
        self.set_auth_error(account, RpcFailure::new(401, "AUTH_KEY_UNREGISTERED"));
    }

    /// Every API call of the account now fails with `401 SESSION_REVOKED`.
    pub fn revoke_session(&self, account: i64) {
        self.set_auth_error(account, RpcFailure::new(401, "SESSION_REVOKED"));
    }

    /// Every API call of the account now fails with `406 AUTH_KEY_DUPLICATED` (Telegram sends
    /// it as an RPC error when one key is used from two places at once).
    pub fn duplicate_key(&self, account: i64) {
        self.set_auth_error(account, RpcFailure::new(406, "AUTH_KEY_DUPLICATED"));
    }

    /// Forgets the account's auth key entirely (as after a server-side key loss) and closes
    /// its connections: the next connection gets the transport error `-404`, after which
    /// grammers starts a DH handshake the fake does not implement.
    pub fn forget_key(&self, account: i64) {
        lock(&self.shared.keys).retain(|_, e| e.user != account);
        let subscribers = lock(&self.shared.pushers).remove(&account);
        for (_, tx) in subscribers.into_iter().flatten() {
            let _ = tx.send(Outgoing::Close);
        }
    }

    /// Undoes [`revoke_key`](Self::revoke_key) and friends.
    pub fn restore_key(&self, account: i64) {
        lock(&self.shared.auth_errors).remove(&account);
    }

    fn set_auth_error(&self, account: i64, err: RpcFailure) {
        lock(&self.shared.auth_errors).insert(account, err);
    }

    /// Calls received per method (TL name, wrappers removed).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counters).clone()
    }

    /// Calls received for one method.
    pub fn request_count(&self, method: &str) -> u64 {
        lock(&self.shared.counters)
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Methods that got `METHOD_NOT_IMPLEMENTED_FAKE_DC`, in order.
    pub fn unimplemented_calls(&self) -> Vec<String> {
        lock(&self.shared.unimplemented).clone()
    }

    /// Protocol-level counters.
    pub fn protocol_stats(&self) -> ProtocolStats {
        lock(&self.shared.stats).clone()
    }

    /// Number of connections currently subscribed to `account`'s live updates.
    /// Requests from an older MTProto session of an auth key after a newer one had started
    /// (answered `406 AUTH_KEY_DUPLICATED`): each is a moment one account ran in two places.
    pub fn overlaps(&self) -> Vec<Overlap> {
        lock(&self.shared.session_log).overlaps()
    }

    /// Every change of MTProto session on an auth key, with the silence between them.
    pub fn handovers(&self) -> Vec<Handover> {
        lock(&self.shared.session_log).handovers()
    }

    pub fn subscribed_connections(&self, account: i64) -> usize {
        lock(&self.shared.pushers)
            .get(&account)
            .map(|l| l.iter().filter(|(_, tx)| !tx.is_closed()).count())
            .unwrap_or(0)
    }

    /// Stops accepting, closes every connection and ends all server tasks.
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }

    fn shutdown(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        lock(&self.shared.pushers).clear();
    }
}

impl Drop for FakeDc {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this set: aborting the accept task drops it, which aborts them.
    let mut conns = tokio::task::JoinSet::new();
    let next_id = AtomicU64::new(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    lock(&shared.stats).connections += 1;
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(conn::serve(stream, Arc::clone(&shared), id));
                }
                Err(e) => {
                    warn!(error = %e, "fake dc: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
