//! The fence gate: every byte this node's Telegram clients send goes through a SOCKS5 proxy on
//! loopback that forwards an account's connections only while its claim stands and the node's
//! fence is up, checked on every chunk right before it is written towards Telegram.
//!
//! Why a gate and not a check in the account actor: grammers sends pings and acknowledgements on
//! its own, from its runner task. After a pause (SIGSTOP, a frozen VM) that task may run before
//! anything else notices that the lease is gone, and Telegram cannot check a fencing token; the
//! gate's check reads the monotonic clock itself, so the first frame after the deadline is
//! dropped whatever ran first. A connection is refused, and every open one closed, as soon as the
//! account is let go or the fence comes down.
//!
//! The client names its account and a per-claim secret as SOCKS5 user name and password
//! (RFC 1929), so a client of an older claim cannot reconnect through a newer one. Only
//! CONNECT to IPv4/IPv6 addresses is served (RFC 1928), which is all grammers asks for.
//! Hand-written: the SOCKS5 server crates do not let authorization hang on a lease and be
//! re-checked per chunk, and the subset needed here is a few dozen lines.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::lease::Fence;
use super::lock;

/// One account's permission to reach Telegram.
#[derive(Clone)]
struct Pass {
    secret: String,
    fence: Fence,
    /// Set when the pass is withdrawn: open connections close.
    closed: watch::Sender<bool>,
    /// Connections of this pass still being served; a close waits for 0.
    open: watch::Sender<usize>,
}

/// Counts one served connection of a pass while it lives.
struct Served(watch::Sender<usize>);

impl Served {
    fn new(open: &watch::Sender<usize>) -> Served {
        open.send_modify(|n| *n += 1);
        Served(open.clone())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Pass {
    fn valid(&self) -> bool {
        !*self.closed.borrow() && self.fence.is_up()
    }
}

/// A running gate; stops (closing every connection) when dropped.
pub struct Gate {
    addr: SocketAddr,
    passes: Arc<Mutex<HashMap<String, Pass>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// Starts the gate on a free loopback port.
    pub async fn start() -> std::io::Result<Gate> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let passes: Arc<Mutex<HashMap<String, Pass>>> = Arc::default();
        let p = passes.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, p.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fence gate: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Gate { addr, passes, task })
    }

    /// Lets `account`'s clients through while `fence` is up, until [`Gate::close`]; returns the
    /// proxy URL its client must use (`socks5://<account>:<secret>@127.0.0.1:<port>`).
    /// Replaces (and closes) any earlier pass of the account.
    pub fn open(&self, account: &str, fence: Fence) -> String {
        let secret = hex::encode(rand::random::<[u8; 16]>());
        let pass = Pass {
            secret: secret.clone(),
            fence,
            closed: watch::channel(false).0,
            open: watch::channel(0).0,
        };
        if let Some(old) = lock(&self.passes).insert(account.to_string(), pass) {
            old.closed.send_replace(true);
        }
        format!("socks5://{account}:{secret}@{}", self.addr)
    }

    /// Withdraws `account`'s pass: new connections are refused, open ones closed. Returns once
    /// none of them can forward another byte (a chunk already checked may still go out before
    /// that; after it, nothing does), so the next owner may connect.
    pub async fn close(&self, account: &str) {
        let Some(old) = lock(&self.passes).remove(account) else {
            return;
        };
        old.closed.send_replace(true);
        let mut open = old.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// The gate's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
        for pass in lock(&self.passes).values() {
            pass.closed.send_replace(true);
        }
    }
}

/// Why a client was turned away (logged; the client only sees a SOCKS5 failure).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("not a SOCKS5 client")]
    NotSocks,
    #[error("the client offers no user name/password authentication")]
    NoPassword,
    #[error("no pass for this account, or a stale secret")]
    NoPass,
    #[error("the account's pass is closed or the node's fence is down")]
    Fenced,
    #[error("only CONNECT to an IP address is served")]
    Unsupported,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn serve(mut client: TcpStream, passes: Arc<Mutex<HashMap<String, Pass>>>) {
    let (pass, upstream) = match handshake(&mut client, &passes).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "fence gate: connection refused");
            return;
        }
    };
    let _served = Served::new(&pass.open);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    // Towards Telegram every chunk is checked; the way back only ends with the connection.
    let mut closed = pass.closed.subscribe();
    let fence = pass.fence.clone();
    tokio::select! {
        _ = pump(cr, uw, Some(&pass)) => {}
        _ = pump(ur, cw, None) => {}
        _ = closed.wait_for(|c| *c) => {}
        _ = fence.lowered() => {}
    }
}

/// Copies `from` to `to` until either side closes; with a pass, stops before writing a chunk
/// once the pass is no longer valid.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, pass: Option<&Pass>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if pass.is_some_and(|p| !p.valid()) {
            metrics::counter!("tgingest_cluster_gate_frames_dropped_total").increment(1);
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// RFC 1928 greeting, RFC 1929 user name/password, then CONNECT; connects upstream only when
/// the pass is valid.
async fn handshake(
    client: &mut TcpStream,
    passes: &Mutex<HashMap<String, Pass>>,
) -> Result<(Pass, TcpStream), Refused> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(Refused::NotSocks);
    }
    let mut methods = vec![0u8; head[1] as usize];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&2) {
        client.write_all(&[5, 0xff]).await?;
        return Err(Refused::NoPassword);
    }
    client.write_all(&[5, 2]).await?;

    let mut version = [0u8; 1];
    client.read_exact(&mut version).await?;
    let user = read_short(client).await?;
    let secret = read_short(client).await?;
    let pass = {
        let passes = lock(passes);
        passes
            .get(String::from_utf8_lossy(&user).as_ref())
            .filter(|p| p.secret.as_bytes() == secret.as_slice())
            .cloned()
    };
    let Some(pass) = pass else {
        client.write_all(&[1, 1]).await?;
        return Err(Refused::NoPass);
    };
    if !pass.valid() {
        client.write_all(&[1, 1]).await?;
        return Err(Refused::Fenced);
    }
    client.write_all(&[1, 0]).await?;

    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let ip = match request[3] {
        1 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a).await?;
            IpAddr::V4(Ipv4Addr::from(a))
        }
        4 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a).await?;
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => {
            reply(client, 8).await?;
            return Err(Refused::Unsupported);
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    if request[0] != 5 || request[1] != 1 {
        reply(client, 7).await?;
        return Err(Refused::Unsupported);
    }
    let target = SocketAddr::new(ip, u16::from_be_bytes(port));
    if !pass.valid() {
        reply(client, 2).await?;
        return Err(Refused::Fenced);
    }
    let upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            reply(client, 5).await?;
            return Err(e.into());
        }
    };
    reply(client, 0).await?;
    Ok((pass, upstream))
}

async fn read_short(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 1];
    client.read_exact(&mut len).await?;
    let mut v = vec![0u8; len[0] as usize];
    client.read_exact(&mut v).await?;
    Ok(v)
}

/// A CONNECT reply with `code` (0 = succeeded) and an unspecified bound address.
async fn reply(client: &mut TcpStream, code: u8) -> std::io::Result<()> {
    client.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::cluster::lease::Holder;

    fn fence(valid_for: Duration) -> Fence {
        let holder = Holder {
            node: "n".into(),
            boot: "b".into(),
            generation: 1,
        };
        Fence::new(holder, 1, Instant::now() + valid_for)
    }

    /// A stand-in for Telegram that counts the bytes it received.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let r = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        r.fetch_add(n, Ordering::SeqCst);
                        let _ = s.write_all(&buf[..n]).await;
                    }
                });
            }
        });
        (addr, received)
    }

    async fn dial(gate: &Gate, url: &str, target: SocketAddr) -> std::io::Result<TcpStream> {
        let creds = url.trim_start_matches("socks5://");
        let (creds, _) = creds.split_once('@').unwrap();
        let (user, secret) = creds.split_once(':').unwrap();
        tokio_socks::tcp::Socks5Stream::connect_with_password(gate.addr(), target, user, secret)
            .await
            .map(|s| s.into_inner())
            .map_err(std::io::Error::other)
    }

    #[tokio::test]
    async fn bytes_pass_while_the_fence_is_up_and_not_one_after_its_deadline() {
        let (target, received) = upstream().await;
        let gate = Gate::start().await.unwrap();
        let url = gate.open("42", fence(Duration::from_millis(400)));
        let mut conn = dial(&gate, &url, target).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        conn.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        // The whole process pauses past the deadline (this runtime has one thread: blocking it
        // stops every task, as SIGSTOP would), then the client's next frame is written at once.
        std::thread::sleep(Duration::from_millis(500));
        let _ = conn.write_all(b"late frame").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            received.load(Ordering::SeqCst),
            4,
            "a frame went out after the deadline"
        );
        assert!(
            dial(&gate, &url, target).await.is_err(),
            "a fenced account reconnected"
        );
    }

    #[tokio::test]
    async fn every_chunk_is_checked_against_the_clock_before_it_is_forwarded() {
        // Whatever task runs first after a pause, the copy itself refuses a chunk once the
        // deadline has passed (here: a pass whose fence is already past it).
        let pass = Pass {
            secret: String::new(),
            fence: fence(Duration::ZERO),
            closed: watch::channel(false).0,
            open: watch::channel(0).0,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (from_gate_side, _) = listener.accept().await.unwrap();
        let mut upstream_peer = TcpStream::connect(addr).await.unwrap();
        let (to_gate_side, _) = listener.accept().await.unwrap();
        client.write_all(b"frame after the deadline").await.unwrap();
        client.shutdown().await.unwrap();
        let (from, _keep) = from_gate_side.into_split();
        let (_keep2, to) = to_gate_side.into_split();
        pump(from, to, Some(&pass)).await;
        let mut got = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(1), upstream_peer.read_to_end(&mut got)).await;
        assert!(got.is_empty(), "forwarded {got:?}");
    }

    #[tokio::test]
    async fn a_closed_pass_cuts_open_connections_and_a_stale_secret_is_refused() {
        let (target, received) = upstream().await;
        let gate = Gate::start().await.unwrap();
        let first = gate.open("42", fence(Duration::from_secs(60)));
        let mut conn = dial(&gate, &first, target).await.unwrap();
        conn.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        conn.read_exact(&mut one).await.unwrap();
        // A new claim of the same account: the old client's connection is cut, its secret dead.
        let second = gate.open("42", fence(Duration::from_secs(60)));
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the old connection stayed open");
        assert!(dial(&gate, &first, target).await.is_err());
        assert!(
            dial(&gate, "socks5://43:nope@127.0.0.1:1", target)
                .await
                .is_err()
        );
        let mut conn = dial(&gate, &second, target).await.unwrap();
        gate.close("42").await;
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "closing the pass left a connection open");
        assert_eq!(received.load(Ordering::SeqCst), 1);
    }
}
