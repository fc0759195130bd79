//! SIGINT and SIGTERM, caught from the moment a node begins to start.
//!
//! systemd and Kubernetes send SIGTERM whenever they like, start-up included, and the default
//! action of a signal without a handler is to die on the spot. [`StopSignals::install`] is the
//! first thing `tgingest run` does; start-up then checks it between steps and aborts cleanly,
//! and the running node waits on it.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Which stop signal arrived first, once one has; cloning shares it.
#[derive(Clone, Debug)]
pub struct StopSignals {
    received: watch::Receiver<Option<&'static str>>,
}

impl StopSignals {
    /// Installs the SIGINT and SIGTERM handlers now (not at the first poll), so neither signal
    /// can kill the process by its default action from here on. Needs a tokio runtime.
    pub fn install() -> std::io::Result<StopSignals> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, received) = watch::channel(None);
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = which, "stopping");
            let _ = tx.send(Some(which));
            // Keep the handlers (and the channel) for the life of the process: a second signal
            // must not kill it mid-drain either.
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("already stopping");
            }
        });
        Ok(StopSignals { received })
    }

    /// The signal received so far, if any.
    pub fn received(&self) -> Option<&'static str> {
        *self.received.borrow()
    }

    /// Resolves with the signal once one arrives (at once if one already has).
    pub async fn wait(&self) -> &'static str {
        let mut received = self.received.clone();
        match received.wait_for(Option::is_some).await {
            Ok(which) => (*which).unwrap_or("signal"),
            // The watching task is gone, so no signal can be reported any more.
            Err(_) => std::future::pending().await,
        }
    }
}
