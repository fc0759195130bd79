//! The fake Telegram DC in a process of its own (`tgingest-loadtest serve-fake-dc`), with the
//! message driver beside it (the driver writes into the DC's memory, so they share a process):
//! [`serve`] is the child's side, [`RemoteDc`] the loadtest's. The DC's CPU, the driver's
//! included, is then measured apart from tgingest's and from the loadtest's own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tgingest::demo::FakeDcLayout;
use tgingest::policy::{Policy, PolicyConfig};
use tgingest::telegram::fakedc::{FakeDc, FakeDcConfig};
use tokio::sync::Mutex;

use crate::child::{ChildError, Helper};
use crate::fakedc::{Driver, Sent};
use crate::truth::Origin;

/// A command on the control channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Command {
    /// Creates `accounts` accounts with their chats (`tgingest::demo::FakeDcLayout`).
    Layout { accounts: usize },
    /// How many of the layout's accounts have their update stream subscribed.
    Listening,
    /// Starts the driver: `rate` messages/s per account for `duration_s`; the ground truth is
    /// kept with `policy`.
    Drive {
        rate: f64,
        duration_s: f64,
        policy: Box<PolicyConfig>,
    },
    /// Whether the driver has sent everything.
    Driven,
    /// Stops the driver; answers the ground truth ([`Truth`]).
    Finish,
}

/// What the loadtest needs of the layout: the accounts and their Telethon session strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    pub addr: String,
    pub accounts: Vec<i64>,
    pub sessions: Vec<String>,
    pub chats: usize,
}

/// The driver's ground truth: (event id, account index, message index) and messages sent.
#[derive(Debug, Serialize, Deserialize)]
struct Truth {
    expected: Vec<(String, u32, u64)>,
    sent: u64,
}

/// What the child says once it serves.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    addr: String,
}

struct State {
    layout: Option<Arc<FakeDcLayout>>,
    driver: Option<Driver>,
}

/// The child's side: serves a fake DC until its stdin ends.
pub async fn serve() -> anyhow::Result<()> {
    let dc = Arc::new(FakeDc::start(FakeDcConfig::default()).await?);
    let ready = Ready {
        addr: dc.addr().to_string(),
    };
    let state = Mutex::new(State {
        layout: None,
        driver: None,
    });
    let (dc_ref, state) = (&dc, &state);
    crate::child::serve(ready, |command: Command| async move {
        let mut s = state.lock().await;
        let answer = match command {
            Command::Layout { accounts } => {
                let layout = Arc::new(FakeDcLayout::build(dc_ref, accounts));
                let answer = Layout {
                    addr: dc_ref.addr().to_string(),
                    accounts: layout.accounts.clone(),
                    sessions: layout.sessions.clone(),
                    chats: layout.chats.len(),
                };
                s.layout = Some(layout);
                serde_json::to_value(answer)?
            }
            Command::Listening => {
                let n = s.layout.as_ref().map_or(0, |l| {
                    l.accounts
                        .iter()
                        .filter(|me| dc_ref.subscribed_connections(**me) > 0)
                        .count()
                });
                serde_json::to_value(n)?
            }
            Command::Drive {
                rate,
                duration_s,
                policy,
            } => {
                let layout = s
                    .layout
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("drive before layout"))?;
                let policy = Arc::new(Policy::new(&policy)?);
                let duration = Duration::try_from_secs_f64(duration_s)?;
                s.driver = Some(Driver::start(
                    dc_ref.clone(),
                    layout,
                    policy,
                    rate,
                    Some(duration),
                ));
                serde_json::Value::Null
            }
            Command::Driven => {
                serde_json::to_value(s.driver.as_ref().is_none_or(Driver::is_finished))?
            }
            Command::Finish => {
                let (expected, sent) = match s.driver.take() {
                    Some(d) => d.finish().await?,
                    None => Default::default(),
                };
                serde_json::to_value(Truth {
                    expected: expected
                        .into_iter()
                        .map(|(id, o)| (id, o.account, o.position))
                        .collect(),
                    sent,
                })?
            }
        };
        Ok(answer)
    })
    .await?;
    if let Ok(dc) = Arc::try_unwrap(dc) {
        dc.stop().await;
    }
    Ok(())
}

/// The loadtest's handle on the fake DC process (killed if dropped; [`stop`](Self::stop) ends it
/// cleanly).
pub struct RemoteDc {
    helper: Helper,
}

impl RemoteDc {
    /// Starts `tgingest-loadtest serve-fake-dc`, its stderr to `log`.
    pub async fn start(log: &Path) -> Result<(RemoteDc, String), ChildError> {
        let (helper, ready): (Helper, Ready) =
            Helper::start("fake-dc", &["serve-fake-dc".into()], log).await?;
        Ok((RemoteDc { helper }, ready.addr))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.helper.pid()
    }

    /// Creates `accounts` accounts and their chats.
    pub async fn layout(&self, accounts: usize) -> Result<Layout, ChildError> {
        self.helper.call(&Command::Layout { accounts }).await
    }

    /// Accounts of the layout whose update stream is subscribed.
    pub async fn listening(&self) -> Result<usize, ChildError> {
        self.helper.call(&Command::Listening).await
    }

    /// Starts the driver.
    pub async fn drive(
        &self,
        rate: f64,
        duration: Duration,
        policy: &PolicyConfig,
    ) -> Result<(), ChildError> {
        let command = Command::Drive {
            rate,
            duration_s: duration.as_secs_f64(),
            policy: Box::new(policy.clone()),
        };
        self.helper.call(&command).await
    }

    /// Whether the driver has sent everything.
    pub async fn driven(&self) -> Result<bool, ChildError> {
        self.helper.call(&Command::Driven).await
    }

    /// Stops the driver; the ground truth.
    pub async fn finish(&self) -> Result<Sent, ChildError> {
        let t: Truth = self.helper.call(&Command::Finish).await?;
        let expected = t
            .expected
            .into_iter()
            .map(|(id, account, position)| (id, Origin { account, position }))
            .collect();
        Ok((expected, t.sent))
    }

    /// Ends the process.
    pub async fn stop(self) {
        self.helper.stop(Duration::from_secs(5)).await;
    }
}
