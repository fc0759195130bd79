//! Logging and process-wide set-up that must happen once, before anything else runs.
//!
//! Logs go to stderr (stdout is for the command's own output, such as `audit verify`'s JSON).
//! `RUST_LOG` overrides the configured level.

use crate::config::LogFormat;

/// Installs the tracing subscriber; later calls are no-ops (tests start several nodes). Call
/// [`set_log_bodies`] first: whether other crates' `trace` lines pass is decided here.
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Other crates put message texts in their trace lines: grammers whole MTProto updates,
    // async_nats every payload it reads. Without `logging.bodies` those lines are dropped,
    // whatever RUST_LOG asks for; this crate's own lines never carry a text but through [`Body`].
    let bodies = LOG_BODIES.load(std::sync::atomic::Ordering::Relaxed);
    let no_foreign_trace = tracing_subscriber::filter::filter_fn(move |meta| {
        bodies || *meta.level() != tracing::Level::TRACE || meta.target().starts_with("tgingest")
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(no_foreign_trace))
        .with(filter)
        .try_init();
}

/// Makes this process non-dumpable (Linux; elsewhere a no-op): a crash writes no core file, and
/// other processes of the same user can neither ptrace it nor read its memory, environment or
/// open files under `/proc/<pid>`, so session keys and the master key stay in this process. Only
/// root (`CAP_SYS_PTRACE`) can still attach a debugger or profiler. Call it first thing in
/// `main`; it holds until `execve` (children such as nats-server start dumpable again).
pub fn make_non_dumpable() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE) takes integer arguments and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Installs `ring` as the one rustls crypto provider (two compiled-in providers make rustls panic).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

static LOG_BODIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`Body`] shows message texts (`logging.bodies`); off by default.
pub fn set_log_bodies(on: bool) {
    LOG_BODIES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A message body as a log field: its text only with `logging.bodies = true`, else its length.
/// Use it in `debug!` and `trace!` lines only, never above: a body must not reach a log at
/// `info`, and every other field of a log line must be free of message text.
pub struct Body<'a>(pub &'a str);

impl std::fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if LOG_BODIES.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_str(self.0)
        } else {
            write!(f, "<{} bytes; logging.bodies is off>", self.0.len())
        }
    }
}

static LOG_ID_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Sets the key of [`hash_id`] (derived from the master key, so hashes are stable across restarts
/// of one deployment but useless to anyone without the key). The first call wins.
pub fn set_log_id_key(key: [u8; 32]) {
    let _ = LOG_ID_KEY.set(key);
}

/// What stands for a person's or chat's id in a log line: a keyed hash, never the id itself.
pub fn hash_id(id: &str) -> String {
    let key = LOG_ID_KEY.get_or_init(rand::random);
    let hash = blake3::keyed_hash(key, id.as_bytes());
    hex::encode(&hash.as_bytes()[..6])
}
