//! Finding, starting and stopping `nats-server` processes: the embedded default and the tests.
//!
//! The binary is found through one lookup, in this order: an explicit path (config
//! `nats.embedded.binary`), `$TGINGEST_NATS_SERVER`, the project's tools folder
//! (`.tools/nats-server/bin/nats-server`, filled by `scripts/install-nats-server.sh`), then `PATH`.
//! Servers older than 2.11 are refused (leases need per-key TTL); one on `PATH` is skipped instead.
//!
//! A started server never outlives its parent: it is forked from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so even a `kill -9` of tgingest (or a panicking test) takes it
//! along. Dropping a [`NatsServer`] stops it gracefully first. It runs in its own process group,
//! so a terminal's Ctrl-C (sent to the foreground group) reaches only its owner, which stops it
//! when it is done with it.

pub mod cluster;
pub mod encryption;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use encryption::{StoreEncryption, StoreKeyError};

/// Environment variable naming the nats-server binary.
pub const NATS_SERVER_ENV: &str = "TGINGEST_NATS_SERVER";

/// Oldest server version accepted: 2.11 brought per-key TTL, which the lease bucket uses.
pub const MIN_VERSION: Version = Version(2, 11, 0);

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A nats-server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Parses `2.15.1`, `v2.15.1` or `nats-server: v2.15.1`.
    pub fn parse(text: &str) -> Option<Version> {
        let start = text.find(|c: char| c.is_ascii_digit())?;
        let mut nums = text[start..]
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse::<u32>());
        let major = nums.next()?.ok()?;
        let minor = nums.next()?.ok()?;
        let patch = nums.next().and_then(Result::ok).unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// Why a server could not be found, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error(
        "no nats-server found (tried: {tried}); run scripts/install-nats-server.sh, \
         or set {NATS_SERVER_ENV} or nats.embedded.binary"
    )]
    NotFound { tried: String },
    #[error(
        "nats-server at {path} is version {found}; tgingest needs {MIN_VERSION} or newer \
         (run scripts/install-nats-server.sh for a pinned one)"
    )]
    TooOld { path: PathBuf, found: Version },
    #[error("cannot tell the version of nats-server at {path}: {detail}")]
    NoVersion { path: PathBuf, detail: String },
    #[error("cannot prepare {path} for nats-server: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    #[error("cannot start nats-server {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("nats-server exited during start-up ({status}); its log ends with:\n{log_tail}")]
    EarlyExit { status: String, log_tail: String },
    #[error("nats-server did not report its port within {0:?}")]
    StartTimeout(Duration),
    #[error(transparent)]
    StoreKey(#[from] StoreKeyError),
}

/// Finds the nats-server binary (see the module doc for the order) and checks its version.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, NatsServerError> {
    let explicit = configured
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(NATS_SERVER_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
    if let Some(path) = explicit {
        check_version(&path)?;
        return Ok(path);
    }
    let mut tried = Vec::new();
    let mut candidates = vec![tools_binary()];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        match check_version(&path) {
            Ok(_) => return Ok(path),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    if tried.is_empty() {
        tried.push(format!("{}, PATH", tools_binary().display()));
    }
    Err(NatsServerError::NotFound {
        tried: tried.join("; "),
    })
}

/// Where `scripts/install-nats-server.sh` puts the pinned server.
pub fn tools_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/nats-server/bin/nats-server")
}

/// Runs `nats-server --version` and refuses servers older than [`MIN_VERSION`].
pub fn check_version(path: &Path) -> Result<Version, NatsServerError> {
    let no_version = |detail: String| NatsServerError::NoVersion {
        path: path.to_path_buf(),
        detail,
    };
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| no_version(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found =
        Version::parse(&text).ok_or_else(|| no_version(format!("it printed {:?}", text.trim())))?;
    if found < MIN_VERSION {
        return Err(NatsServerError::TooOld {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(found)
}

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub binary: PathBuf,
    /// JetStream store; the log file `nats-server.log` is written here too.
    pub store_dir: PathBuf,
    /// Client port on 127.0.0.1; 0 = a free port chosen by the server.
    pub port: u16,
    /// `server_name` (unique within a cluster).
    pub name: String,
    /// Also serve the HTTP monitoring endpoint (`/varz`, `/jsz`) on a free port.
    pub monitoring: bool,
    /// Further command-line arguments (cluster routes, limits…).
    pub extra_args: Vec<String>,
    /// A config file (`-c`) that names the server and its JetStream store itself (the
    /// cluster's); `name` and `store_dir` then only place the log and the ports file.
    pub config_file: Option<PathBuf>,
    /// Environment variables for the server (the values of the config file's `$VARS`).
    pub env: Vec<(String, String)>,
    /// Encrypt the JetStream store at rest. Without `config_file`, a config file naming the
    /// keys as `$VARS` is written to the store dir; with one, that file must name them itself.
    pub encryption: Option<StoreEncryption>,
}

impl ServerOptions {
    /// A loopback JetStream server on a free port, storing under `store_dir`.
    pub fn new(binary: PathBuf, store_dir: PathBuf, name: &str) -> Self {
        ServerOptions {
            binary,
            store_dir,
            port: 0,
            name: name.to_string(),
            monitoring: false,
            extra_args: Vec::new(),
            config_file: None,
            env: Vec::new(),
            encryption: None,
        }
    }
}

/// A running nats-server child process; stopped when dropped.
#[derive(Debug)]
pub struct NatsServer {
    options: ServerOptions,
    child: Option<Child>,
    port: u16,
    monitoring_url: Option<String>,
}

impl NatsServer {
    /// Starts the server and waits until it accepts clients.
    pub fn start(options: ServerOptions) -> Result<NatsServer, NatsServerError> {
        let mut server = NatsServer {
            options,
            child: None,
            port: 0,
            monitoring_url: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring base URL, when asked for.
    pub fn monitoring_url(&self) -> Option<&str> {
        self.monitoring_url.as_deref()
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The options it was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// Whether the process is still alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Asks the server to shut down (SIGTERM), killing it if it has not exited in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid = child.id(), "nats-server ignored SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), NatsServerError> {
        self.stop();
        if self.port != 0 {
            self.options.port = self.port;
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), NatsServerError> {
        let opts = &self.options;
        let prepare = |path: &Path, source| NatsServerError::Prepare {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&opts.store_dir).map_err(|e| prepare(&opts.store_dir, e))?;
        let ports_dir = opts.store_dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).map_err(|e| prepare(&ports_dir, e))?;
        let log_path = opts.store_dir.join("nats-server.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| prepare(&log_path, e))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(|e| prepare(&log_path, e))?;

        let mut cmd = Command::new(&opts.binary);
        let written_config = match (&opts.config_file, &opts.encryption) {
            (None, Some(encryption)) => {
                encryption.check_store(&opts.store_dir)?;
                let path = opts.store_dir.join(encryption::CONFIG_FILE);
                std::fs::write(&path, encryption.config_file(&opts.name, &opts.store_dir))
                    .map_err(|e| prepare(&path, e))?;
                Some(path)
            }
            _ => None,
        };
        match written_config.as_ref().or(opts.config_file.as_ref()) {
            Some(file) => cmd.arg("-c").arg(file).args(["-a", "127.0.0.1"]),
            None => cmd
                .args(["-a", "127.0.0.1", "-js", "--server_name", &opts.name])
                .arg("-sd")
                .arg(&opts.store_dir),
        };
        if let Some(encryption) = &opts.encryption {
            cmd.envs(encryption.env());
        }
        cmd.arg("-p")
            .arg(if opts.port == 0 {
                "-1".to_string()
            } else {
                opts.port.to_string()
            })
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        if opts.monitoring {
            cmd.args(["-m", "-1"]);
        }
        cmd.args(&opts.extra_args)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let mut child =
            spawn_bound_to_this_process(cmd).map_err(|source| NatsServerError::Spawn {
                path: opts.binary.clone(),
                source,
            })?;

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(ports) = read_ports_file(&ports_dir)
                && let Some(port) = ports.client_port()
            {
                self.port = port;
                self.monitoring_url = ports.monitoring.into_iter().next();
                self.child = Some(child);
                // JetStream recovered (and re-encrypted) every stream before the ports file.
                if let (None, Some(encryption)) = (&opts.config_file, &opts.encryption) {
                    encryption.record(&opts.store_dir)?;
                }
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NatsServerError::EarlyExit {
                    status: status.to_string(),
                    log_tail: tail_of(&log_path, log_start),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NatsServerError::StartTimeout(STARTUP_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(serde::Deserialize, Default)]
struct PortsFile {
    #[serde(default)]
    nats: Vec<String>,
    #[serde(default)]
    monitoring: Vec<String>,
}

impl PortsFile {
    fn client_port(&self) -> Option<u16> {
        self.nats.first()?.rsplit(':').next()?.parse().ok()
    }
}

fn read_ports_file(dir: &Path) -> Option<PortsFile> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()
}

fn tail_of(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Forks `cmd` so that it is killed when this process dies, however it dies, in a process group
/// of its own (signals for this process's group do not reach it).
///
/// `PR_SET_PDEATHSIG` fires when the forking *thread* exits, so all forks happen on one thread
/// that lives as long as the process.
fn spawn_bound_to_this_process(mut cmd: Command) -> io::Result<Child> {
    cmd.process_group(0);
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (prctl, setrlimit, getppid, _exit) between fork and
    // exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The server holds the store key (derived from the master key) and the messages in
            // memory; exec makes it dumpable again, so at least it writes no core file.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1); // the parent died before prctl took effect
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawn_thread = std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawn_thread {
            tracing::error!(error = %e, "cannot start the child-spawner thread");
        }
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .map_err(|_| io::Error::other("child-spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_what_servers_print() {
        assert_eq!(
            Version::parse("nats-server: v2.15.1\n"),
            Some(Version(2, 15, 1))
        );
        assert_eq!(Version::parse("2.9.10"), Some(Version(2, 9, 10)));
        assert_eq!(Version::parse("v2.11"), Some(Version(2, 11, 0)));
        assert_eq!(Version::parse("nats-server"), None);
        assert!(Version(2, 9, 10) < MIN_VERSION && Version(2, 15, 1) >= MIN_VERSION);
    }
}
