//! One real Telegram account behind the [`Gateway`] trait.
//!
//! * The `SenderPool` runner lives as long as the gateway (it is aborted on drop), so its
//!   lifetime is the account actor's.
//! * The update channel is sized from `telegram.update_channel_capacity` (grammers' default of
//!   100 drops on overflow); catch-up is on.
//! * A reader task takes grammers' updates in *groups* (everything grammers had ready at once)
//!   and the gateway hands each group out as one [`SourceUpdate`] whose cursor covers exactly that
//!   group (see [`super::cursor`]). [`Gateway::commit`] stores that state in the session and
//!   flushes it: the update state moves only past what is durable (invariant 1).
//! * Holes: every `hole_check_interval` the dialogs' newest message ids are compared with the
//!   highest ids that arrived; a chat whose newest message is older than `hole_grace` and was
//!   never seen (a skipped `differenceTooLong`, a lost update) gets a backfill task.
//! * Backfill: first start reads the configured window of every dialog; tasks run one request per
//!   `backfill_pace` between live updates (live first) and are part of the cursor, so they resume.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use grammers_client::Client;
use grammers_client::peer::Peer;
use grammers_client::tl;
use grammers_client::update::Update;
use grammers_mtsender::{ConnectionParams, SenderPool, UpdatesConfiguration};
use grammers_session::Session;
use grammers_session::types::{PeerRef, UpdateState};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backfill::{self, BackfillReason, BackfillTask, Locate};
use super::cursor::{CursorError, GrammersCursor, Link, fold_group, merge_for_resume};
use super::errors::{FloodWaitPolicy, gateway_error};
use crate::cluster::fenced::{FencedError, Owner};
use crate::event::{Chat, ChatKind, Event, EventKind, Source, marked_chat_id, now_us};
use crate::telegram::gateway::{
    AccountInfo, Cursor, Gateway, GatewayError, GatewayFactory, SourceUpdate,
};
use crate::telegram::normalize::{MessageIndex, NormalizeContext, normalize};
use crate::telegram::route::ConnectRoute;
use crate::telegram::session::LiveSessionError;

/// Updates taken from grammers at once, at most (a getDifference answer is far smaller).
const MAX_GROUP: usize = 10_000;
/// Common-box message ids remembered to resolve private/basic-group deletions.
const INDEX_CAPACITY: usize = 100_000;

/// How one grammers account behaves; from `[telegram]` in the config.
#[derive(Debug, Clone)]
pub struct GrammersSettings {
    pub api_id: i32,
    pub update_channel_capacity: usize,
    /// History read on first start; zero turns the first-start backfill off.
    pub backfill_window: Duration,
    /// At most this many messages per chat in the first-start backfill.
    pub backfill_max_per_chat: u32,
    /// One history request per this long, per account.
    pub backfill_pace: Duration,
    /// How often the dialogs are compared with what arrived.
    pub hole_check_interval: Duration,
    /// A message must be this old before its absence counts as a hole.
    pub hole_grace: Duration,
    /// FLOOD_WAITs up to this long (in total, per request) are slept inside grammers.
    pub flood_sleep_max: Duration,
    /// Straight to Telegram, or only through the account's gate pass (a cluster node).
    pub route: ConnectRoute,
}

impl GrammersSettings {
    /// The settings of `[telegram]`; `api_id` must be set (`TELEGRAM_API_ID`).
    pub fn from_config(
        tg: &crate::config::TelegramConfig,
    ) -> Result<Self, crate::config::ConfigError> {
        let api_id = i32::try_from(tg.api_id)
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                crate::config::invalid(
                    "telegram.api_id",
                    tg.api_id,
                    "the api_id from my.telegram.org (env TELEGRAM_API_ID); real accounts need it",
                )
            })?;
        Ok(GrammersSettings {
            api_id,
            update_channel_capacity: tg.update_channel_capacity,
            backfill_window: Duration::from_secs(u64::from(tg.backfill_window_h) * 3600),
            backfill_max_per_chat: tg.backfill_max_per_chat,
            backfill_pace: tg.backfill_pace.0,
            hole_check_interval: tg.hole_check_interval.0,
            hole_grace: tg.hole_grace.0,
            flood_sleep_max: tg.flood_sleep_max.0,
            route: ConnectRoute::Direct,
        })
    }
}

/// A grammers session the gateway can make durable on demand.
pub trait PersistedSession: Session + Sized
where
    Self::Error: std::error::Error + Send + Sync + 'static,
{
    /// Writes the session's state where the next start will find it.
    fn flush(&self) -> BoxFuture<'_, Result<(), GatewayError>>;

    /// Resolves once the session may no longer be written here (another owner loaded it, or it
    /// was replaced), with the error that stops the account; never, by default.
    fn refused(&self) -> BoxFuture<'static, GatewayError> {
        Box::pin(std::future::pending())
    }
}

impl PersistedSession for grammers_session::storages::MemorySession {
    fn flush(&self) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Opens the session of an account as its owner (whose epoch the session's writes carry).
pub type SessionOpener<S> =
    Arc<dyn Fn(&str, &Owner) -> BoxFuture<'static, Result<Arc<S>, GatewayError>> + Send + Sync>;

/// Makes a [`GrammersGateway`] per account.
pub struct GrammersFactory<S> {
    settings: GrammersSettings,
    opener: SessionOpener<S>,
}

impl<S> GrammersFactory<S> {
    pub fn new(settings: GrammersSettings, opener: SessionOpener<S>) -> Self {
        GrammersFactory { settings, opener }
    }
}

impl<S> GatewayFactory for GrammersFactory<S>
where
    S: PersistedSession,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    fn create(&self, account_id: &str) -> Box<dyn Gateway> {
        self.create_owned(account_id, &Owner::default())
    }

    fn create_owned(&self, account_id: &str, owner: &Owner) -> Box<dyn Gateway> {
        Box::new(GrammersGateway {
            account_id: account_id.to_string(),
            owner: owner.clone(),
            settings: self.settings.clone(),
            opener: self.opener.clone(),
            live: None,
        })
    }
}

/// Stops the pool's runner (and so every connection) when the gateway goes.
struct RunnerGuard {
    task: tokio::task::JoinHandle<()>,
    handle: grammers_mtsender::SenderPoolHandle,
}

impl Drop for RunnerGuard {
    fn drop(&mut self) {
        self.handle.quit();
        self.task.abort();
    }
}

/// What a chat's dialog says.
#[derive(Debug, Clone)]
struct DialogInfo {
    peer: PeerRef,
    kind: ChatKind,
    top_id: i32,
    top_date: i32,
}

struct Live<S> {
    session: Arc<S>,
    client: Client,
    _runner: RunnerGuard,
    updates: Option<mpsc::Receiver<grammers_session::updates::UpdatesLike>>,
    groups: Option<GroupReader>,
    taker: UpdateTaker,
    dialogs: HashMap<String, DialogInfo>,
    next_backfill: Instant,
    next_hole_check: Instant,
}

/// Turns groups of grammers updates into [`SourceUpdate`]s and keeps the cursor they advance.
#[derive(Debug)]
pub struct UpdateTaker {
    /// What was handed out so far (the cursor of the latest source update).
    pub cursor: GrammersCursor,
    pub ctx: NormalizeContext,
    pub index: MessageIndex,
    /// Messages sent before this time are marked as catch-up.
    pub connected_at_us: i64,
}

impl UpdateTaker {
    /// A taker for `account_id`, connected now, starting from `cursor`.
    pub fn new(account_id: &str, cursor: GrammersCursor) -> Self {
        UpdateTaker {
            cursor,
            ctx: NormalizeContext::new(account_id, Source::Live),
            index: MessageIndex::new(INDEX_CAPACITY),
            connected_at_us: now_us(),
        }
    }

    /// Normalizes one group and advances the handed-out state past it.
    pub fn take(&mut self, group: Vec<Update>) -> SourceUpdate {
        fold_group(
            &mut self.cursor.state,
            group.iter().map(|u| (u.state(), Link::of(u.raw()))),
        );
        let mut events = Vec::new();
        for update in &group {
            // grammers hands the new messages of a getDifference answer over without a pts of
            // their own; pushed updates always carry one.
            let from_difference = match update {
                Update::NewMessage(m) => {
                    matches!(
                        &m.raw,
                        tl::enums::Update::NewMessage(u) if u.pts == 0
                    ) || matches!(
                        &m.raw,
                        tl::enums::Update::NewChannelMessage(u) if u.pts == 0
                    )
                }
                _ => false,
            };
            for mut event in normalize(update, &self.ctx, &mut self.index) {
                if from_difference {
                    event.source = Source::CatchUp;
                }
                if event.kind != EventKind::Delete
                    && let Ok(id) = event.message_id.parse::<i32>()
                {
                    self.cursor.saw_message(&event.chat.id, id);
                }
                events.push(event);
            }
        }
        SourceUpdate {
            events,
            cursor: self.cursor.encode(),
        }
    }
}

/// One group of updates, or the error that ended the stream.
pub type Group = Result<Vec<Update>, grammers_mtsender::InvocationError>;

/// The task that reads grammers' update stream in groups; stopped when dropped.
pub struct GroupReader {
    groups: mpsc::Receiver<Group>,
    task: tokio::task::JoinHandle<()>,
}

impl GroupReader {
    /// Starts reading `stream`; `client` is the one the stream belongs to.
    pub fn spawn(stream: grammers_client::client::UpdateStream, client: Client) -> Self {
        let (tx, groups) = mpsc::channel(4);
        GroupReader {
            groups,
            task: tokio::spawn(read_groups(stream, client, tx)),
        }
    }

    /// The next group; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Group> {
        self.groups.recv().await
    }
}

impl Drop for GroupReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One account's connection through grammers.
pub struct GrammersGateway<S> {
    account_id: String,
    /// Who runs the account here; the session's writes carry its epoch.
    owner: Owner,
    settings: GrammersSettings,
    opener: SessionOpener<S>,
    live: Option<Live<S>>,
}

fn not_connected() -> GatewayError {
    GatewayError::Other("the gateway was used before connect()".into())
}

impl<S> GrammersGateway<S>
where
    S: PersistedSession,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    async fn connect_inner(&mut self) -> Result<AccountInfo, GatewayError> {
        let proxy_url = self
            .settings
            .route
            .proxy_for(&self.account_id)
            .map_err(|e| GatewayError::NotOwned(e.to_string()))?;
        let session = (self.opener)(&self.account_id, &self.owner).await?;
        let params = ConnectionParams {
            proxy_url,
            updates_channel_capacity: std::num::NonZeroUsize::new(
                self.settings.update_channel_capacity.max(1),
            )
            .unwrap_or(std::num::NonZeroUsize::MIN),
            device_model: "tgingest".into(),
            app_version: crate::VERSION.into(),
            retry_policy: Box::new(FloodWaitPolicy::new(self.settings.flood_sleep_max)),
            ..Default::default()
        };
        let pool = SenderPool::with_configuration(session.clone(), self.settings.api_id, params);
        let runner = RunnerGuard {
            handle: pool.handle.thin.clone(),
            task: tokio::spawn(pool.runner.run()),
        };
        let client = Client::new(pool.handle);
        let me = client.get_me().await.map_err(|e| gateway_error(&e))?;
        let own_id = me.id().bare_id().unwrap_or_default().to_string();
        if self.account_id.parse::<i64>().is_ok() && own_id != self.account_id {
            return Err(GatewayError::Other(format!(
                "the stored session belongs to another Telegram user than account {}",
                crate::telemetry::hash_id(&self.account_id)
            )));
        }
        let info = AccountInfo {
            account_id: own_id.clone(),
            display_name: Some(me.full_name()).filter(|n| !n.is_empty()),
            username: me.username().map(str::to_string),
        };
        let now = Instant::now();
        self.live = Some(Live {
            session,
            client,
            _runner: runner,
            updates: Some(pool.updates),
            groups: None,
            taker: UpdateTaker::new(&own_id, GrammersCursor::default()),
            dialogs: HashMap::new(),
            next_backfill: now,
            next_hole_check: now + self.settings.hole_grace,
        });
        Ok(info)
    }

    async fn catch_up_inner(&mut self, from: Option<Cursor>) -> Result<(), GatewayError> {
        let settings = self.settings.clone();
        let live = self.live.as_mut().ok_or_else(not_connected)?;
        let durable = match from.as_ref().map(GrammersCursor::decode) {
            None => None,
            Some(Ok(cursor)) => Some(cursor),
            Some(Err(CursorError::Foreign)) => {
                tracing::warn!("the stored source cursor is not grammers'; starting as if new");
                None
            }
            Some(Err(e)) => return Err(GatewayError::Other(e.to_string())),
        };

        // A new session starts from Telegram's current state and the backfill covers the past,
        // up to each dialog's newest message. The state is asked for *before* the dialogs are
        // read: a message sent between the two is then newer than the state (the update stream
        // brings it) or no newer than a dialog's newest message (the backfill reads it), never
        // neither. Asked the other way round, it was lost whenever a node died before its first
        // checkpoint and started the account afresh.
        let session_before = live
            .session
            .updates_state()
            .await
            .map_err(|e| GatewayError::Other(format!("cannot read the session: {e}")))?;
        let new_state =
            if durable.as_ref().is_none_or(|c| c.state.pts == 0) && session_before.pts == 0 {
                let tl::enums::updates::State::State(now) = live
                    .client
                    .invoke(&tl::functions::updates::GetState {})
                    .await
                    .map_err(|e| gateway_error(&e))?;
                Some(now)
            } else {
                None
            };
        // Caches access hashes (channel gap recovery needs them) and writes each channel's pts
        // into the session; the durable state is put back on top just below.
        live.scan_dialogs().await?;
        let session_state = live
            .session
            .updates_state()
            .await
            .map_err(|e| GatewayError::Other(format!("cannot read the session: {e}")))?;

        let first_start = durable.is_none();
        let mut cursor = durable.unwrap_or_default();
        cursor.state = merge_for_resume(&cursor.state, &session_state);
        if cursor.state.pts == 0
            && let Some(now) = new_state
        {
            cursor.state.pts = now.pts;
            cursor.state.qts = now.qts;
            cursor.state.date = now.date;
            cursor.state.seq = now.seq;
        }
        live.session
            .set_update_state(UpdateState::All(cursor.state.clone()))
            .await
            .map_err(|e| GatewayError::Other(format!("cannot write the session: {e}")))?;

        let window_start = now_secs() - settings.backfill_window.as_secs() as i64;
        if !cursor.initial_backfill_planned && !settings.backfill_window.is_zero() {
            for (chat_id, dialog) in &live.dialogs {
                if dialog.top_id > 0 && i64::from(dialog.top_date) >= window_start {
                    cursor.backfill.push(BackfillTask {
                        chat_id: chat_id.clone(),
                        after_id: 0,
                        upto_id: dialog.top_id,
                        locate: Some(Locate {
                            since_date: i32::try_from(window_start).unwrap_or(0),
                            max_messages: settings.backfill_max_per_chat,
                        }),
                        reason: BackfillReason::Initial,
                    });
                }
            }
            cursor.backfill.sort_by(|a, b| a.chat_id.cmp(&b.chat_id));
        }
        cursor.initial_backfill_planned = true;
        // Chats never seen before start from their newest message (the backfill or catch-up
        // covers what came before); the hole check compares against this from now on.
        for (chat_id, dialog) in &live.dialogs {
            cursor
                .high_water
                .entry(chat_id.clone())
                .or_insert(dialog.top_id);
        }
        metrics::gauge!("tgingest_backfill_tasks_pending").set(cursor.backfill.len() as f64);
        tracing::info!(
            account = %crate::telemetry::hash_id(&self.account_id),
            first_start,
            dialogs = live.dialogs.len(),
            backfill_tasks = cursor.backfill.len(),
            "catching up"
        );
        live.taker.cursor = cursor;

        let updates = live.updates.take().ok_or_else(not_connected)?;
        let stream = live
            .client
            .stream_updates(updates, UpdatesConfiguration { catch_up: true })
            .await
            .map_err(|e| GatewayError::Other(format!("cannot start the update stream: {e}")))?;
        live.groups = Some(GroupReader::spawn(stream, live.client.clone()));
        Ok(())
    }

    async fn next_inner(&mut self) -> Result<Option<SourceUpdate>, GatewayError> {
        let settings = self.settings.clone();
        let live = self.live.as_mut().ok_or_else(not_connected)?;
        loop {
            let wake = if live.taker.cursor.backfill.is_empty() {
                live.next_hole_check
            } else {
                live.next_backfill.min(live.next_hole_check)
            };
            let groups = live.groups.as_mut().ok_or_else(not_connected)?;
            tokio::select! {
                biased;
                // Another owner has the session now: stop before reading anything more.
                refused = live.session.refused() => return Err(refused),
                group = groups.recv() => {
                    let group = group
                        .ok_or_else(|| GatewayError::Network("the update stream ended".into()))?
                        .map_err(|e| gateway_error(&e))?;
                    return Ok(Some(live.taker.take(group)));
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= live.next_hole_check {
                live.next_hole_check = now + settings.hole_check_interval;
                live.check_holes(&settings).await?;
            }
            if !live.taker.cursor.backfill.is_empty() && now >= live.next_backfill {
                live.next_backfill = now + settings.backfill_pace;
                if let Some(update) = live.backfill_step().await? {
                    return Ok(Some(update));
                }
            }
        }
    }

    async fn commit_inner(&mut self, cursor: Cursor) -> Result<(), GatewayError> {
        let live = self.live.as_mut().ok_or_else(not_connected)?;
        let durable =
            GrammersCursor::decode(&cursor).map_err(|e| GatewayError::Other(e.to_string()))?;
        live.session
            .set_update_state(UpdateState::All(durable.state))
            .await
            .map_err(|e| GatewayError::Other(format!("cannot write the session: {e}")))?;
        live.session.flush().await
    }

    async fn history_inner(
        &mut self,
        chat: Chat,
        after_message_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<Event>, GatewayError> {
        let live = self.live.as_mut().ok_or_else(not_connected)?;
        let dialog = live.dialogs.get(&chat.id).ok_or_else(|| {
            GatewayError::Other("history asked for a chat that is not among the dialogs".into())
        })?;
        let after = after_message_id
            .and_then(|id| id.parse::<i32>().ok())
            .unwrap_or(0);
        let mut iter = live
            .client
            .iter_messages(dialog.peer)
            .offset_id(after)
            .reverse(true)
            .limit(limit);
        let mut ctx = live.taker.ctx.clone();
        ctx.source = Source::Backfill;
        let mut events = Vec::new();
        while let Some(message) = iter.next().await.map_err(|e| gateway_error(&e))? {
            events.extend(crate::telegram::normalize::normalize_message(
                &message,
                false,
                &ctx,
                &mut live.taker.index,
            ));
        }
        Ok(events)
    }
}

impl<S> Live<S>
where
    S: PersistedSession,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    /// Reads every dialog: who the chats are, how to address them, their newest message.
    async fn scan_dialogs(&mut self) -> Result<(), GatewayError> {
        let mut dialogs = self.client.iter_dialogs();
        let mut found = HashMap::new();
        while let Some(dialog) = dialogs.next().await.map_err(|e| gateway_error(&e))? {
            let peer = dialog.peer();
            let Some(bare) = peer.id().bare_id() else {
                continue;
            };
            let kind = match peer {
                Peer::User(_) => ChatKind::Private,
                Peer::Group(g) => match &g.raw {
                    tl::enums::Chat::Channel(c) => {
                        if c.forum {
                            self.taker.ctx.forums.insert(bare);
                        }
                        self.taker
                            .ctx
                            .channel_kinds
                            .insert(bare, ChatKind::Supergroup);
                        ChatKind::Supergroup
                    }
                    _ => ChatKind::Group,
                },
                Peer::Channel(_) => {
                    self.taker.ctx.channel_kinds.insert(bare, ChatKind::Channel);
                    ChatKind::Channel
                }
                Peer::Community(_) => {
                    self.taker
                        .ctx
                        .channel_kinds
                        .insert(bare, ChatKind::Supergroup);
                    ChatKind::Supergroup
                }
            };
            let top_id = match &dialog.raw {
                tl::enums::Dialog::Dialog(d) => d.top_message,
                tl::enums::Dialog::Folder(_) | tl::enums::Dialog::Community(_) => continue,
            };
            let top_date = dialog
                .last_message
                .as_ref()
                .map_or(0, |m| i32::try_from(m.date().as_second()).unwrap_or(0));
            found.insert(
                marked_chat_id(kind, bare),
                DialogInfo {
                    peer: dialog.peer_ref(),
                    kind,
                    top_id,
                    top_date,
                },
            );
        }
        self.dialogs = found;
        Ok(())
    }

    /// Compares every dialog's newest message with what arrived; plans a backfill per hole.
    async fn check_holes(&mut self, settings: &GrammersSettings) -> Result<(), GatewayError> {
        self.scan_dialogs().await?;
        let settled = now_secs() - settings.hole_grace.as_secs() as i64;
        let mut found = 0u64;
        for (chat_id, dialog) in &self.dialogs {
            let seen = self.taker.cursor.high_water.get(chat_id).copied();
            let behind = match seen {
                Some(seen) => dialog.top_id > seen,
                None => i64::from(dialog.top_date) * 1_000_000 >= self.taker.connected_at_us,
            };
            if !behind || i64::from(dialog.top_date) > settled {
                continue;
            }
            if let Some(task) = self
                .taker
                .cursor
                .backfill
                .iter_mut()
                .find(|t| &t.chat_id == chat_id)
            {
                task.upto_id = task.upto_id.max(dialog.top_id);
                continue;
            }
            found += 1;
            self.taker.cursor.backfill.push(BackfillTask {
                chat_id: chat_id.clone(),
                after_id: seen.unwrap_or(0),
                upto_id: dialog.top_id,
                locate: seen.is_none().then_some(Locate {
                    since_date: i32::try_from(self.taker.connected_at_us / 1_000_000).unwrap_or(0),
                    max_messages: settings.backfill_max_per_chat,
                }),
                reason: BackfillReason::Hole,
            });
        }
        if found > 0 {
            tracing::warn!(
                chats = found,
                "dialogs show messages that never arrived; backfilling them"
            );
            metrics::counter!("tgingest_holes_detected_total").increment(found);
        }
        metrics::gauge!("tgingest_backfill_tasks_pending")
            .set(self.taker.cursor.backfill.len() as f64);
        Ok(())
    }

    /// One history request for the first backfill task; `None` when it produced no events.
    async fn backfill_step(&mut self) -> Result<Option<SourceUpdate>, GatewayError> {
        let Some(task) = self.taker.cursor.backfill.first().cloned() else {
            return Ok(None);
        };
        let Some(dialog) = self.dialogs.get(&task.chat_id).cloned() else {
            tracing::warn!("a backfill task names a chat that is no longer a dialog; dropping it");
            metrics::counter!("tgingest_backfill_tasks_dropped_total").increment(1);
            self.taker.cursor.backfill.remove(0);
            return Ok(None);
        };
        let mut ctx = self.taker.ctx.clone();
        ctx.source = Source::Backfill;
        let step = backfill::step(
            &self.client,
            dialog.peer,
            &task,
            &ctx,
            &mut self.taker.index,
        )
        .await?;
        match step.task {
            Some(next) => self.taker.cursor.backfill[0] = next,
            None => {
                self.taker.cursor.backfill.remove(0);
                metrics::counter!("tgingest_backfill_tasks_done_total", "kind" => kind_label(dialog.kind))
                    .increment(1);
            }
        }
        metrics::counter!("tgingest_backfill_events_total").increment(step.events.len() as u64);
        for event in &step.events {
            if let Ok(id) = event.message_id.parse::<i32>() {
                self.taker.cursor.saw_message(&event.chat.id, id);
            }
        }
        // The cursor carries the task's progress, so the step is durable with its events.
        Ok(Some(SourceUpdate {
            events: step.events,
            cursor: self.taker.cursor.encode(),
        }))
    }
}

fn kind_label(kind: ChatKind) -> &'static str {
    match kind {
        ChatKind::Private => "private",
        ChatKind::Group => "group",
        ChatKind::Supergroup => "supergroup",
        ChatKind::Channel => "channel",
    }
}

fn now_secs() -> i64 {
    now_us() / 1_000_000
}

/// Takes updates from grammers one group at a time: the first waits, the rest of the group is
/// what grammers has ready without waiting. Taking a ready one never suspends, so stopping the
/// poll there cannot lose an update.
async fn read_groups(
    mut stream: grammers_client::client::UpdateStream,
    client: Client,
    groups: mpsc::Sender<Group>,
) {
    loop {
        let first = match stream.next_raw().await {
            Ok(update) => update,
            Err(e) => {
                let _ = groups.send(Err(e)).await;
                return;
            }
        };
        let mut group = vec![Update::from_raw(&client, first.0, first.1, first.2)];
        while group.len() < MAX_GROUP {
            match stream.next_raw().now_or_never() {
                Some(Ok((raw, state, peers))) => {
                    group.push(Update::from_raw(&client, raw, state, peers))
                }
                Some(Err(e)) => {
                    let _ = groups.send(Ok(group)).await;
                    let _ = groups.send(Err(e)).await;
                    return;
                }
                None => break,
            }
        }
        if groups.send(Ok(group)).await.is_err() {
            return;
        }
    }
}

impl<S> Gateway for GrammersGateway<S>
where
    S: PersistedSession,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    fn connect(&mut self) -> BoxFuture<'_, Result<AccountInfo, GatewayError>> {
        Box::pin(self.connect_inner())
    }

    fn catch_up(&mut self, from: Option<Cursor>) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(self.catch_up_inner(from))
    }

    fn next_update(&mut self) -> BoxFuture<'_, Result<Option<SourceUpdate>, GatewayError>> {
        Box::pin(self.next_inner())
    }

    fn commit(&mut self, cursor: Cursor) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(self.commit_inner(cursor))
    }

    fn history(
        &mut self,
        chat: Chat,
        after_message_id: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Event>, GatewayError>> {
        Box::pin(self.history_inner(chat, after_message_id, limit))
    }
}

impl PersistedSession for crate::telegram::session::SealedSession {
    fn flush(&self) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async move {
            crate::telegram::session::SealedSession::flush(self)
                .await
                .map_err(session_error)
        })
    }

    fn refused(&self) -> BoxFuture<'static, GatewayError> {
        let refused = crate::telegram::session::SealedSession::refused(self);
        Box::pin(async move { refusal_error(refused.await) })
    }
}

/// What a failed load or write of the live session means for the account: a newer owner's
/// write stops it here for good ([`GatewayError::StaleOwner`]); anything else (a session an
/// operator replaced, a bus error) makes the supervisor start it again, which loads it afresh.
pub fn session_error(e: LiveSessionError) -> GatewayError {
    match e {
        LiveSessionError::Refused { source, .. } => refusal_error(source),
        e => GatewayError::Other(e.to_string()),
    }
}

fn refusal_error(source: FencedError) -> GatewayError {
    match source {
        FencedError::StaleOwner { .. } => GatewayError::StaleOwner(source.to_string()),
        e => GatewayError::Other(format!("the Telegram session stopped writing: {e}")),
    }
}
