//! The loadtest's helper processes: this binary started again with a hidden subcommand
//! (`serve-switchboard`, `serve-fake-dc`), so what is not tgingest runs in a process of its own
//! and its CPU is measured apart from tgingest's and the driver's.
//!
//! The control channel is the child's stdin and stdout, one JSON object per line: the parent
//! writes a command, the child answers `{"ok": …}` or `{"err": "…"}`; the child's first line is
//! `{"ok": <what it serves>}` once it is up. Hand-written (a few lines over `serde_json`) because
//! a pipe needs no port, no HTTP and no extra crate, and its end is the child's end: when the
//! loadtest goes away, for whatever reason, the child reads end-of-file and exits.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

/// Why a helper process failed to start or to answer.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot start the {name} process ({exe}): {source}")]
    Start {
        name: &'static str,
        exe: String,
        source: std::io::Error,
    },
    #[error("the {name} process: {what}: {source}")]
    Io {
        name: &'static str,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the {name} process ended without answering (see {name}.log in the report folder)")]
    Ended { name: &'static str },
    #[error("the {name} process answered {line:?}: {source}")]
    Answer {
        name: &'static str,
        line: String,
        source: serde_json::Error,
    },
    #[error("the {name} process refused {command}: {message}")]
    Refused {
        name: &'static str,
        command: String,
        message: String,
    },
}

/// One answer line.
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Reply<T> {
    Ok(T),
    Err(String),
}

struct Pipe {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// A running helper process; killed when dropped (a fake has nothing to save), reaped by
/// [`Helper::stop`].
pub struct Helper {
    name: &'static str,
    pid: u32,
    child: Child,
    pipe: Mutex<Pipe>,
}

impl Helper {
    /// Starts this executable with `args`, its stderr to `log`, and waits for its first line.
    pub async fn start<T: DeserializeOwned>(
        name: &'static str,
        args: &[String],
        log: &Path,
    ) -> Result<(Helper, T), ChildError> {
        let io = |what, source| ChildError::Io { name, what, source };
        let exe = std::env::current_exe().map_err(|e| io("find this executable", e))?;
        let err = std::fs::File::create(log).map_err(|e| io("create its log", e))?;
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ChildError::Start {
                name,
                exe: exe.display().to_string(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ChildError::Ended { name });
        };
        let mut pipe = Pipe {
            stdin,
            stdout: BufReader::new(stdout).lines(),
        };
        let ready = read_reply(name, "start", &mut pipe).await?;
        let helper = Helper {
            name,
            pid,
            child,
            pipe: Mutex::new(pipe),
        };
        Ok((helper, ready))
    }

    /// The process id, for `/proc`.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one command and reads its answer (one command at a time).
    pub async fn call<T: DeserializeOwned>(
        &self,
        command: &impl Serialize,
    ) -> Result<T, ChildError> {
        let name = self.name;
        let mut line = serde_json::to_string(command).map_err(|source| ChildError::Answer {
            name,
            line: String::new(),
            source,
        })?;
        let shown: String = line.chars().take(60).collect();
        line.push('\n');
        let mut pipe = self.pipe.lock().await;
        let io = |what, source| ChildError::Io { name, what, source };
        pipe.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| io("send a command", e))?;
        pipe.stdin
            .flush()
            .await
            .map_err(|e| io("send a command", e))?;
        read_reply(name, &shown, &mut pipe).await
    }

    /// Closes its stdin (it exits on end-of-file) and reaps it; killed after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        drop(self.pipe.into_inner().stdin);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn read_reply<T: DeserializeOwned>(
    name: &'static str,
    command: &str,
    pipe: &mut Pipe,
) -> Result<T, ChildError> {
    let line = pipe
        .stdout
        .next_line()
        .await
        .map_err(|source| ChildError::Io {
            name,
            what: "read an answer",
            source,
        })?
        .ok_or(ChildError::Ended { name })?;
    match serde_json::from_str::<Reply<T>>(&line) {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Err(message)) => Err(ChildError::Refused {
            name,
            command: command.to_string(),
            message,
        }),
        Err(source) => Err(ChildError::Answer {
            name,
            line: line.chars().take(200).collect(),
            source,
        }),
    }
}

/// The child's side: answers every command line on stdin with `handle`, until end-of-file.
/// `ready` is the first line written.
pub async fn serve<C, F, Fut>(ready: impl Serialize, mut handle: F) -> anyhow::Result<()>
where
    C: DeserializeOwned,
    F: FnMut(C) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<serde_json::Value>>,
{
    let mut out = tokio::io::stdout();
    write_line(&mut out, &Reply::Ok(ready)).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serde_json::from_str::<C>(&line) {
            Ok(command) => match handle(command).await {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Err(format!("{e:#}")),
            },
            Err(e) => Reply::Err(format!("not a command: {e}")),
        };
        write_line(&mut out, &reply).await?;
    }
    Ok(())
}

async fn write_line(out: &mut tokio::io::Stdout, reply: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string(reply)?;
    text.push('\n');
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}
