//! Connections the fake can cut: a listener whose streams fail on command.
//!
//! axum gives a handler no way to abort its own connection, and `stop()` must end every
//! connection, not only the listener. So each accepted stream carries a kill switch, handed to
//! handlers as their `ConnectInfo`; once killed, every read and write fails, hyper drops the
//! connection, and the client sees it close without a reply.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The kill switch of one connection.
#[derive(Default)]
pub(crate) struct Kill {
    killed: AtomicBool,
    read_waker: Mutex<Option<Waker>>,
    write_waker: Mutex<Option<Waker>>,
}

impl Kill {
    /// Makes every later read and write fail, and wakes the ones waiting now.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        for slot in [&self.read_waker, &self.write_waker] {
            let waker = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Registers the waker first, then checks: a kill in between still wakes this task.
    fn check(&self, slot: &Mutex<Option<Waker>>, cx: &Context<'_>) -> Result<(), io::Error> {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut by the fake",
            ))
        } else {
            Ok(())
        }
    }
}

/// The per-connection handle a handler receives (as `ConnectInfo<Conn>`).
#[derive(Clone)]
pub(crate) struct Conn(pub Arc<Kill>);

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    /// Aborts this connection: the reply being prepared is never delivered.
    pub fn cut(&self) {
        self.0.kill();
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Every connection accepted in one server run, so `stop()` can cut them all.
pub(crate) type LiveConns = Arc<Mutex<Vec<Weak<Kill>>>>;

/// Cuts every connection still alive.
pub(crate) fn cut_all(live: &LiveConns) {
    let conns = std::mem::take(&mut *live.lock().unwrap_or_else(|p| p.into_inner()));
    for kill in conns.iter().filter_map(Weak::upgrade) {
        kill.kill();
    }
}

/// How long a client may take over the TLS handshake before the fake gives up on it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP listener whose connections can be cut, speaking TLS when given an acceptor.
pub(crate) struct KillableListener {
    pub inner: TcpListener,
    pub live: LiveConns,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let stream = match &self.tls {
                        None => Io::Plain(stream),
                        // A client that refuses the certificate ends here; serve the next one.
                        Some(tls) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                            {
                                Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
                                _ => continue,
                            }
                        }
                    };
                    let kill = Arc::new(Kill::default());
                    let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                    live.retain(|w| w.strong_count() > 0);
                    live.push(Arc::downgrade(&kill));
                    return (
                        KillableStream {
                            inner: stream,
                            kill: kill.clone(),
                        },
                        Conn(kill),
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn(Arc::new(Kill::default())))
    }
}

/// A plain or TLS connection.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A TCP stream that fails every operation once its connection is cut.
pub(crate) struct KillableStream {
    inner: Io,
    kill: Arc<Kill>,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.kill.check(&this.kill.read_waker, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.kill.check(&this.kill.write_waker, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.kill.check(&this.kill.write_waker, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
