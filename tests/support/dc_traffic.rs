//! Accounts on the fake Telegram DC and a sender writing into their chats, keeping the ground
//! truth: the event id of every message, per account that sees it, computed with
//! `event::event_id` as the normalizer does.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tgingest::event::{ChatKind, EventKind, event_id, marked_chat_id};
use tgingest::telegram::fakedc::{ChannelKind, ChatId, FakeDc, SendOptions, SentMessage};

/// A chat the sender writes into: who writes, its marked id, and the accounts that see it.
#[derive(Clone)]
pub struct Target {
    pub chat: ChatId,
    pub from: i64,
    pub marked: String,
    pub viewers: Vec<i64>,
}

impl Target {
    /// The event id `msg` must become for each account that sees it, with a line saying which
    /// message it is (for a test's report of what was lost).
    pub fn event_ids(&self, msg: &SentMessage, text: &str) -> Vec<(String, String)> {
        self.viewers
            .iter()
            .map(|viewer| {
                let id = msg.id_for(*viewer).expect("viewer sees it");
                let event = event_id(
                    &viewer.to_string(),
                    &self.marked,
                    &id.to_string(),
                    EventKind::Message,
                    0,
                );
                let about = format!(
                    "{text:?}: account {viewer}, chat {}, message {id}",
                    self.marked
                );
                (event, about)
            })
            .collect()
    }
}

/// A fake Switchboard and a fake Telegram DC on loopback, with default options: what the
/// node tests run their nodes against.
pub async fn start_fakes() -> (tgingest::switchboard::FakeSwitchboard, Arc<FakeDc>) {
    let fake = tgingest::switchboard::FakeSwitchboard::start(
        tgingest::switchboard::FakeOptions::default(),
    )
    .await
    .expect("fake switchboard");
    let dc = FakeDc::start(tgingest::telegram::fakedc::FakeDcConfig::default())
        .await
        .expect("fake DC");
    (fake, Arc::new(dc))
}

/// `n` accounts, each with a private chat with a friend, all of them in one chat of each of
/// `shared` kinds (a basic group and/or a supergroup) with a writer.
pub struct DcAccounts {
    pub ids: Vec<i64>,
    /// Telethon session strings pointing at the fake DC.
    pub sessions: Vec<String>,
    pub targets: Vec<Target>,
}

impl DcAccounts {
    pub fn create(dc: &FakeDc, n: usize, shared: &[ChatKind]) -> DcAccounts {
        let (mut ids, mut sessions, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let (me, key) = dc.add_account(&format!("Account {i}"));
            ids.push(me);
            sessions.push(tgingest::demo::telethon_session_string(
                dc.dc_id(),
                dc.addr(),
                &key,
            ));
            let friend = dc.add_user(&format!("Friend {i}"));
            targets.push(Target {
                chat: ChatId::Private(me, friend),
                from: friend,
                marked: marked_chat_id(ChatKind::Private, friend),
                viewers: vec![me],
            });
        }
        let writer = dc.add_user("Writer");
        let mut members = ids.clone();
        members.push(writer);
        for kind in shared {
            let chat = match kind {
                ChatKind::Group => dc.create_group("Group", &members),
                ChatKind::Supergroup => {
                    dc.create_channel("Super", ChannelKind::Supergroup, &members)
                }
                other => panic!("no shared chat of kind {other:?}"),
            };
            let (ChatId::Group(bare) | ChatId::Channel(bare)) = chat else {
                unreachable!("a shared chat is a group or a channel")
            };
            targets.push(Target {
                chat,
                from: writer,
                marked: marked_chat_id(*kind, bare),
                viewers: ids.clone(),
            });
        }
        DcAccounts {
            ids,
            sessions,
            targets,
        }
    }

    /// Imports every account through the admin API at `admin` and records consent.
    pub async fn import_and_consent(&self, http: &reqwest::Client, admin: &str) {
        for (me, session) in self.ids.iter().zip(&self.sessions) {
            post(
                http,
                format!("http://{admin}/v1/accounts/import"),
                json!({"format": "telethon", "session": session, "account_id": me.to_string()}),
            )
            .await;
            post(
                http,
                format!("http://{admin}/v1/accounts/{me}/consent"),
                json!({"by": "test", "scope": "test accounts on a fake DC"}),
            )
            .await;
        }
    }
}

/// POSTs `body` to `url`; panics with the answer unless it is a success.
pub async fn post(http: &reqwest::Client, url: String, body: Value) {
    let resp = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("admin API answers");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {text}");
}

/// Writes round-robin into the targets, one message every `every`, until stopped.
pub struct Sender {
    /// Event id -> which message it is.
    expected: Arc<Mutex<HashMap<String, String>>>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    pub fn start(dc: Arc<FakeDc>, targets: Vec<Target>, every: Duration) -> Sender {
        let expected = Arc::new(Mutex::new(HashMap::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (expected, sent, stop) = (expected.clone(), sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let t = &targets[n % targets.len()];
                    let text = format!("m{n}");
                    let msg = dc
                        .send_message(t.chat, t.from, &text, SendOptions::default())
                        .expect("message sent");
                    expected.lock().unwrap().extend(t.event_ids(&msg, &text));
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    tokio::time::sleep(every).await;
                }
            })
        };
        Sender {
            expected,
            sent,
            stop,
            task,
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops sending; returns the event ids every sent message must become.
    pub async fn stop(self) -> HashSet<String> {
        self.stop_described().await.into_keys().collect()
    }

    /// Stops sending; returns the event ids every sent message must become, each with the
    /// message it is.
    pub async fn stop_described(self) -> HashMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sender");
        self.expected.lock().unwrap().clone()
    }
}

/// The `Nats-Msg-Id`s of every message in `stream`: which events reached a stage, so a crash
/// test's report can say where a lost event stopped.
pub async fn msg_ids_in(nats_url: &str, stream: &str) -> HashSet<String> {
    super::stream_messages(nats_url, stream)
        .await
        .iter()
        .filter_map(|m| {
            m.headers
                .as_ref()?
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
        })
        .collect()
}
