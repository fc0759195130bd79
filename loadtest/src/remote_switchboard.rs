//! The fake Switchboard in a process of its own (`tgingest-loadtest serve-switchboard`), so its
//! CPU is not counted as the driver's: [`serve`] is the child's side, [`RemoteSwitchboard`] the
//! loadtest's. The child is `tgingest::switchboard::FakeSwitchboard` with default options; the
//! control channel ([`crate::child`]) sets the scenario's faults, takes it down and up for an
//! outage, reads its counts and what it stored, and makes it forget everything (replay).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tgingest::switchboard::{FakeOptions, FakeSwitchboard, Faults};

use crate::analysis::Stored;
use crate::child::{ChildError, Helper};
use crate::scenario::SwitchboardLoad;
use crate::stage::FakeCounts;

/// A command on the control channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Command {
    /// The scenario's latency and faults (replacing any before).
    Faults { load: SwitchboardLoad },
    /// Stop serving (the port closes, sessions are lost, records are kept).
    Down,
    /// Serve again on the same port.
    Up,
    /// [`Status`].
    Status,
    /// How many distinct event ids are stored.
    StoredUnique,
    /// Every stored envelope, as [`Stored`], in arrival order.
    Stored,
    /// Forget every record, key and count (a Switchboard restored from an empty backup).
    Forget,
}

/// The fake's counts and whether it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub running: bool,
    pub counts: FakeCounts,
}

/// What the child says once it serves.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    mcp_url: String,
}

/// The child's side: serves a fake Switchboard until its stdin ends.
pub async fn serve() -> anyhow::Result<()> {
    let fake = FakeSwitchboard::start(FakeOptions::default()).await?;
    let ready = Ready {
        mcp_url: fake.mcp_url(),
    };
    let fake = &fake;
    crate::child::serve(ready, |command: Command| async move {
        let answer = match command {
            Command::Faults { load } => {
                fake.set_faults(Faults {
                    latency: load.latency.into(),
                    tool_error_probability: load.tool_error_probability,
                    drop_probability: load.drop_probability,
                    drop_after_processing: load.drop_after_processing,
                    ..Faults::default()
                });
                serde_json::Value::Null
            }
            Command::Down => {
                fake.stop().await;
                serde_json::Value::Null
            }
            Command::Up => {
                fake.restart().await?;
                serde_json::Value::Null
            }
            Command::Status => serde_json::to_value(Status {
                running: fake.is_running(),
                counts: FakeCounts::from(fake.stats()),
            })?,
            Command::StoredUnique => serde_json::to_value(fake.stored_event_ids().len())?,
            Command::Stored => {
                let stored: Vec<Stored> = fake.accepted().iter().flat_map(Stored::all_of).collect();
                serde_json::to_value(stored)?
            }
            Command::Forget => {
                fake.forget_all();
                serde_json::Value::Null
            }
        };
        Ok(answer)
    })
    .await?;
    fake.stop().await;
    Ok(())
}

/// The loadtest's handle on the fake Switchboard process (killed if dropped; [`stop`](Self::stop)
/// ends it cleanly).
pub struct RemoteSwitchboard {
    helper: Helper,
    mcp_url: String,
}

impl RemoteSwitchboard {
    /// Starts `tgingest-loadtest serve-switchboard`, its stderr to `log`.
    pub async fn start(log: &Path) -> Result<RemoteSwitchboard, ChildError> {
        let (helper, ready): (Helper, Ready) =
            Helper::start("fake-switchboard", &["serve-switchboard".into()], log).await?;
        Ok(RemoteSwitchboard {
            helper,
            mcp_url: ready.mcp_url,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.helper.pid()
    }

    /// The streamable-HTTP endpoint tgingest is pointed at.
    pub fn mcp_url(&self) -> &str {
        &self.mcp_url
    }

    /// Sets the scenario's latency and faults.
    pub async fn set_faults(&self, load: &SwitchboardLoad) -> Result<(), ChildError> {
        self.helper
            .call(&Command::Faults { load: load.clone() })
            .await
    }

    /// Stops serving (an outage); records are kept.
    pub async fn down(&self) -> Result<(), ChildError> {
        self.helper.call(&Command::Down).await
    }

    /// Serves again on the same port.
    pub async fn up(&self) -> Result<(), ChildError> {
        self.helper.call(&Command::Up).await
    }

    /// Counts, and whether it serves.
    pub async fn status(&self) -> Result<Status, ChildError> {
        self.helper.call(&Command::Status).await
    }

    /// Distinct event ids stored.
    pub async fn stored_unique(&self) -> Result<u64, ChildError> {
        self.helper.call(&Command::StoredUnique).await
    }

    /// Every stored envelope, in arrival order.
    pub async fn stored(&self) -> Result<Vec<Stored>, ChildError> {
        self.helper.call(&Command::Stored).await
    }

    /// Forgets everything stored (records, dedupe keys, counts).
    pub async fn forget_all(&self) -> Result<(), ChildError> {
        self.helper.call(&Command::Forget).await
    }

    /// Ends the process.
    pub async fn stop(self) {
        self.helper.stop(Duration::from_secs(5)).await;
    }
}
