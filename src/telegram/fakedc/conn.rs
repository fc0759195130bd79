//! One client connection: the "full" TCP transport, MTProto 2.0 encryption, sessions, salts,
//! service messages and containers. API calls go to [`rpc`](super::rpc).
//!
//! Anything malformed closes this connection with a log line; nothing here can stop the server.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grammers_tl_types::{self as tl, Cursor, Deserializable, Identifiable, Serializable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::crypto::ServerKey;
use super::gzip::{crc32, gunzip, gzip_stored};
use super::rpc::{self, Outcome};
use super::{Shared, lock};

const MSG_CONTAINER: u32 = 0x73f1_f8dc;
const GZIP_PACKED: u32 = 0x3072_cfa1;
const RPC_RESULT: u32 = 0xf35c_6d01;
/// The largest transport packet accepted (Telegram's limit is about 1 MiB).
const MAX_PACKET: usize = 2 * 1024 * 1024;
/// Inflated requests larger than this are refused.
const MAX_INFLATED: usize = 16 * 1024 * 1024;

/// Something for the connection to send.
#[derive(Clone)]
pub(crate) enum Outgoing {
    /// A message body (TL object) to encrypt and send.
    Message {
        body: Vec<u8>,
        content_related: bool,
    },
    /// Close the connection.
    Close,
    /// Send this message body, but cut the connection half-way through its frame (a reset in
    /// the middle of a push).
    CutMidFrame { body: Vec<u8> },
}

/// Why a connection was closed by the server.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(String),
    #[error("unknown auth key {0:016x}")]
    UnknownKey(u64),
    #[error("plain (unencrypted) message: the fake DC has no DH handshake")]
    Plain,
    #[error("crypto: {0}")]
    Crypto(#[from] super::crypto::CryptoError),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl From<tl::deserialize::Error> for ConnError {
    fn from(e: tl::deserialize::Error) -> Self {
        ConnError::Malformed(e.to_string())
    }
}

/// Reads "full" transport frames (`len ‖ seq ‖ payload ‖ crc32`) and forwards payloads.
async fn read_frames(mut rd: OwnedReadHalf, tx: mpsc::Sender<Result<Vec<u8>, String>>) {
    let mut expected_seq = 0i32;
    loop {
        let mut head = [0u8; 8];
        if let Err(e) = rd.read_exact(&mut head).await {
            let _ = tx.send(Err(format!("read: {e}"))).await;
            return;
        }
        let len = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let seq = i32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len < 12 || len as usize > MAX_PACKET || len % 4 != 0 {
            let _ = tx.send(Err(format!("bad frame length {len}"))).await;
            return;
        }
        if seq != expected_seq {
            let _ = tx
                .send(Err(format!("bad seq {seq}, expected {expected_seq}")))
                .await;
            return;
        }
        expected_seq += 1;
        let mut rest = vec![0u8; len as usize - 8];
        if let Err(e) = rd.read_exact(&mut rest).await {
            let _ = tx.send(Err(format!("read: {e}"))).await;
            return;
        }
        let crc_at = rest.len() - 4;
        let crc = u32::from_le_bytes([
            rest[crc_at],
            rest[crc_at + 1],
            rest[crc_at + 2],
            rest[crc_at + 3],
        ]);
        let mut hashed = head.to_vec();
        hashed.extend_from_slice(&rest[..crc_at]);
        if crc32(&hashed) != crc {
            let _ = tx.send(Err("bad crc".to_owned())).await;
            return;
        }
        rest.truncate(crc_at);
        if tx.send(Ok(rest)).await.is_err() {
            return;
        }
    }
}

struct Writer {
    wr: OwnedWriteHalf,
    seq: i32,
}

impl Writer {
    /// `payload` in the full transport's frame: `len ‖ seq ‖ payload ‖ crc32`.
    fn framed(&mut self, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() + 12) as i32;
        let mut buf = Vec::with_capacity(len as usize);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&self.seq.to_le_bytes());
        buf.extend_from_slice(payload);
        let crc = crc32(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        self.seq += 1;
        buf
    }

    async fn frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let buf = self.framed(payload);
        self.wr.write_all(&buf).await
    }

    /// Writes the first half of a frame and stops: the peer sees a frame that never ends.
    async fn half_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let buf = self.framed(payload);
        self.wr.write_all(&buf[..buf.len() / 2]).await?;
        self.wr.flush().await
    }

    /// A transport-level error: a bare negative length, e.g. `-404` for an unknown key.
    async fn status(&mut self, code: i32) -> std::io::Result<()> {
        self.wr.write_all(&(-code).to_le_bytes()).await
    }
}

/// Per-connection MTProto state (server side).
struct Session {
    key: ServerKey,
    user: i64,
    session_id: i64,
    last_msg_id: i64,
    seq: i32,
    subscribed: bool,
    ping_deadline: Option<Instant>,
    /// The message being handled came from this session after a newer one on the same key
    /// started (see `overlap`): its RPC is answered `AUTH_KEY_DUPLICATED`.
    overlapping: bool,
}

impl Session {
    fn next_msg_id(&mut self, response: bool) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let candidate = ((now.as_secs() as i64) << 32) | ((now.subsec_nanos() as i64) << 2);
        let base = (candidate & !3).max((self.last_msg_id & !3) + 4);
        let id = base | if response { 1 } else { 3 };
        self.last_msg_id = id;
        id
    }

    fn next_seq(&mut self, content_related: bool) -> i32 {
        if content_related {
            self.seq += 2;
            self.seq - 1
        } else {
            self.seq
        }
    }
}

/// Serves one accepted TCP connection until it closes, fails, or the DC drops it.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>, conn_id: u64) {
    let peer = stream.peer_addr().ok();
    let (rd, wr) = stream.into_split();
    let mut tasks = JoinSet::new();
    let (frame_tx, mut frame_rx) = mpsc::channel(64);
    tasks.spawn(read_frames(rd, frame_tx));
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let mut drop_rx = shared.drop_tx.subscribe();
    let mut writer = Writer { wr, seq: 0 };
    let mut session: Option<Session> = None;

    let result: Result<(), ConnError> = async {
        loop {
            let ping_deadline = session.as_ref().and_then(|s| s.ping_deadline);
            tokio::select! {
                frame = frame_rx.recv() => {
                    let payload = match frame {
                        Some(Ok(p)) => p,
                        Some(Err(e)) => return Err(ConnError::Transport(e)),
                        None => return Ok(()),
                    };
                    let replies = match handle_packet(&shared, &mut session, &payload, &out_tx, &mut tasks, conn_id) {
                        Ok(r) => r,
                        Err(ConnError::UnknownKey(id)) => {
                            info!(conn_id, key_id = format_args!("{id:016x}"), "fake dc: unknown auth key, sending -404");
                            writer.status(404).await?;
                            return Err(ConnError::UnknownKey(id));
                        }
                        Err(e) => return Err(e),
                    };
                    if let Some(s) = session.as_mut() {
                        send_batch(&mut writer, s, &shared, replies).await?;
                    }
                }
                out = out_rx.recv() => {
                    let mut batch = Vec::new();
                    let mut close = false;
                    let mut cut = None;
                    let mut next = out;
                    while let Some(o) = next {
                        match o {
                            Outgoing::Message { body, content_related } => batch.push((body, content_related)),
                            Outgoing::Close => { close = true; break; }
                            Outgoing::CutMidFrame { body } => { cut = Some(body); break; }
                        }
                        next = out_rx.try_recv().ok();
                    }
                    if let Some(s) = session.as_mut() {
                        send_batch(&mut writer, s, &shared, batch).await?;
                        if let Some(body) = cut {
                            let wire = seal(s, &shared, vec![(body, true)]);
                            debug!(conn_id, "fake dc: cutting the connection mid-frame");
                            writer.half_frame(&wire).await?;
                            return Ok(());
                        }
                    }
                    if close || cut.is_some() {
                        return Ok(());
                    }
                }
                _ = drop_rx.changed() => {
                    debug!(conn_id, "fake dc: dropping connection on request");
                    return Ok(());
                }
                _ = async {
                    match ping_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    debug!(conn_id, "fake dc: ping_delay_disconnect expired");
                    return Ok(());
                }
            }
        }
    }
    .await;

    if let Some(s) = &session {
        let mut pushers = lock(&shared.pushers);
        if let Some(list) = pushers.get_mut(&s.user) {
            list.retain(|(id, _)| *id != conn_id);
        }
    }
    match result {
        Ok(()) => debug!(conn_id, ?peer, "fake dc: connection closed"),
        Err(e) => warn!(conn_id, ?peer, error = %e, "fake dc: closing connection"),
    }
    let _ = writer.wr.shutdown().await;
    tasks.abort_all();
}

/// Encrypts and writes a batch of messages, in one container when there is more than one.
async fn send_batch(
    writer: &mut Writer,
    s: &mut Session,
    shared: &Shared,
    batch: Vec<(Vec<u8>, bool)>,
) -> Result<(), ConnError> {
    if batch.is_empty() {
        return Ok(());
    }
    let wire = seal(s, shared, batch);
    writer.frame(&wire).await?;
    Ok(())
}

/// Encrypts one message, or several in a container, for the client.
fn seal(s: &mut Session, shared: &Shared, batch: Vec<(Vec<u8>, bool)>) -> Vec<u8> {
    let mut inner = Vec::new();
    for (body, content_related) in &batch {
        let id = s.next_msg_id(is_response(body));
        let seq = s.next_seq(*content_related);
        inner.push((id, seq, body));
    }
    let (msg_id, seq_no, body) = if inner.len() == 1 {
        let (id, seq, body) = inner.remove(0);
        (id, seq, body.clone())
    } else {
        let mut body = Vec::new();
        MSG_CONTAINER.serialize(&mut body);
        (inner.len() as i32).serialize(&mut body);
        for (id, seq, b) in &inner {
            id.serialize(&mut body);
            seq.serialize(&mut body);
            (b.len() as i32).serialize(&mut body);
            body.extend_from_slice(b);
        }
        let id = s.next_msg_id(false);
        (id, s.next_seq(false), body)
    };
    let mut plain = Vec::with_capacity(32 + body.len());
    shared.current_salt().serialize(&mut plain);
    s.session_id.serialize(&mut plain);
    msg_id.serialize(&mut plain);
    seq_no.serialize(&mut plain);
    (body.len() as i32).serialize(&mut plain);
    plain.extend_from_slice(&body);
    s.key.encrypt_to_client(&plain)
}

/// Decrypts one transport payload and produces the immediate replies.
fn handle_packet(
    shared: &Arc<Shared>,
    session: &mut Option<Session>,
    payload: &[u8],
    out_tx: &mpsc::UnboundedSender<Outgoing>,
    tasks: &mut JoinSet<()>,
    conn_id: u64,
) -> Result<Vec<(Vec<u8>, bool)>, ConnError> {
    if payload.len() < 8 {
        return Err(ConnError::Malformed(
            "payload shorter than auth_key_id".into(),
        ));
    }
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(&payload[..8]);
    if key_id == [0u8; 8] {
        return Err(ConnError::Plain);
    }
    let (key, user) = match session.as_ref() {
        Some(s) if s.key.id() == key_id => (s.key.clone(), s.user),
        Some(_) => {
            return Err(ConnError::Malformed(
                "auth key changed mid-connection".into(),
            ));
        }
        None => {
            let keys = lock(&shared.keys);
            match keys.get(&key_id) {
                Some(entry) => (entry.key.clone(), entry.user),
                None => return Err(ConnError::UnknownKey(u64::from_le_bytes(key_id))),
            }
        }
    };
    let plain = key.decrypt_from_client(payload)?;
    let mut c = Cursor::from_slice(&plain);
    let salt = i64::deserialize(&mut c)?;
    let session_id = i64::deserialize(&mut c)?;
    let msg_id = i64::deserialize(&mut c)?;
    let seq_no = i32::deserialize(&mut c)?;
    let len = i32::deserialize(&mut c)?;
    let start = c.pos();
    if len < 4 || start + len as usize > plain.len() {
        return Err(ConnError::Malformed(format!("message length {len}")));
    }
    let body = &plain[start..start + len as usize];

    let s = session.get_or_insert_with(|| Session {
        key: key.clone(),
        user,
        session_id,
        last_msg_id: 0,
        seq: 0,
        subscribed: false,
        ping_deadline: None,
        overlapping: false,
    });
    s.session_id = session_id;
    s.overlapping = lock(&shared.session_log).record(key_id, user, session_id, Instant::now());
    if s.overlapping {
        warn!(
            conn_id,
            user, "fake dc: an older session of this auth key is talking after a newer one started"
        );
    }

    let mut replies = Vec::new();
    if !shared.salt_is_valid(salt) {
        lock(&shared.stats).bad_salts += 1;
        debug!(conn_id, salt, "fake dc: bad server salt");
        replies.push((
            tl::enums::BadMsgNotification::BadServerSalt(tl::types::BadServerSalt {
                bad_msg_id: msg_id,
                bad_msg_seqno: seq_no,
                error_code: 48,
                new_server_salt: shared.current_salt(),
            })
            .to_bytes(),
            false,
        ));
        return Ok(replies);
    }
    if lock(&shared.sessions).insert(session_id) {
        lock(&shared.stats).new_sessions += 1;
        replies.push((
            tl::enums::NewSession::Created(tl::types::NewSessionCreated {
                first_msg_id: msg_id,
                unique_id: rand::random(),
                server_salt: shared.current_salt(),
            })
            .to_bytes(),
            true,
        ));
    }
    process_message(
        shared,
        s,
        msg_id,
        body,
        &mut replies,
        out_tx,
        tasks,
        conn_id,
        0,
    )?;
    Ok(replies)
}

#[allow(clippy::too_many_arguments)]
fn process_message(
    shared: &Arc<Shared>,
    s: &mut Session,
    msg_id: i64,
    body: &[u8],
    replies: &mut Vec<(Vec<u8>, bool)>,
    out_tx: &mpsc::UnboundedSender<Outgoing>,
    tasks: &mut JoinSet<()>,
    conn_id: u64,
    depth: u8,
) -> Result<(), ConnError> {
    if depth > 2 {
        return Err(ConnError::Malformed("nested containers".into()));
    }
    let id = u32::from_bytes(body)?;
    match id {
        MSG_CONTAINER => {
            lock(&shared.stats).containers_received += 1;
            let mut c = Cursor::from_slice(&body[4..]);
            let n = i32::deserialize(&mut c)?;
            if !(0..=1024).contains(&n) {
                return Err(ConnError::Malformed(format!("container of {n}")));
            }
            for _ in 0..n {
                let inner_id = i64::deserialize(&mut c)?;
                let _seq = i32::deserialize(&mut c)?;
                let len = i32::deserialize(&mut c)?;
                if len < 0 || len as usize > MAX_PACKET {
                    return Err(ConnError::Malformed(format!("inner length {len}")));
                }
                let mut inner = vec![0u8; len as usize];
                c.read_exact(&mut inner)?;
                process_message(
                    shared,
                    s,
                    inner_id,
                    &inner,
                    replies,
                    out_tx,
                    tasks,
                    conn_id,
                    depth + 1,
                )?;
            }
        }
        GZIP_PACKED => {
            lock(&shared.stats).gzip_received += 1;
            let packed = Vec::<u8>::from_bytes(&body[4..])?;
            let inflated = gunzip(&packed, MAX_INFLATED)
                .map_err(|e| ConnError::Malformed(format!("gzip_packed: {e}")))?;
            process_message(
                shared,
                s,
                msg_id,
                &inflated,
                replies,
                out_tx,
                tasks,
                conn_id,
                depth + 1,
            )?;
        }
        tl::types::MsgsAck::CONSTRUCTOR_ID => {
            let ack = tl::enums::MsgsAck::from_bytes(body)?;
            let tl::enums::MsgsAck::Ack(ack) = ack;
            lock(&shared.stats).acks_received += ack.msg_ids.len() as u64;
        }
        tl::functions::Ping::CONSTRUCTOR_ID => {
            let ping = tl::functions::Ping::deserialize(&mut Cursor::from_slice(&body[4..]))?;
            replies.push((pong(msg_id, ping.ping_id), false));
        }
        tl::functions::PingDelayDisconnect::CONSTRUCTOR_ID => {
            let ping = tl::functions::PingDelayDisconnect::deserialize(&mut Cursor::from_slice(
                &body[4..],
            ))?;
            s.ping_deadline =
                Some(Instant::now() + Duration::from_secs(ping.disconnect_delay.max(1) as u64));
            replies.push((pong(msg_id, ping.ping_id), false));
        }
        tl::functions::GetFutureSalts::CONSTRUCTOR_ID => {
            let req =
                tl::functions::GetFutureSalts::deserialize(&mut Cursor::from_slice(&body[4..]))?;
            replies.push((shared.future_salts(msg_id, req.num).to_bytes(), false));
        }
        tl::functions::DestroySession::CONSTRUCTOR_ID => {
            let req =
                tl::functions::DestroySession::deserialize(&mut Cursor::from_slice(&body[4..]))?;
            let known = lock(&shared.sessions).remove(&req.session_id);
            let res: tl::enums::DestroySessionRes = if known {
                tl::types::DestroySessionOk {
                    session_id: req.session_id,
                }
                .into()
            } else {
                tl::types::DestroySessionNone {
                    session_id: req.session_id,
                }
                .into()
            };
            replies.push((rpc_result(msg_id, &res.to_bytes()), true));
        }
        _ if s.overlapping => {
            let error = tl::enums::RpcError::Error(tl::types::RpcError {
                error_code: 406,
                error_message: "AUTH_KEY_DUPLICATED".into(),
            });
            replies.push((rpc_result(msg_id, &error.to_bytes()), true));
        }
        _ => {
            let handled = rpc::handle(shared, s.user, body);
            let setup_only = handled.init_connection && handled.method == "help.getConfig";
            if !setup_only && !s.subscribed {
                // From now on this connection receives the account's live updates, like a
                // Telegram session that has made its first API call. Not at the set-up
                // `initConnection(help.getConfig)`: grammers ignores updates that arrive while
                // it waits for that answer, so a push racing it would be lost.
                s.subscribed = true;
                lock(&shared.pushers)
                    .entry(s.user)
                    .or_default()
                    .push((conn_id, out_tx.clone()));
            }
            let reply = match handled.outcome {
                Outcome::Reply(result) => Some(rpc_result(msg_id, &shared.maybe_gzip(result))),
                Outcome::Error(e) => Some(rpc_result(
                    msg_id,
                    &tl::enums::RpcError::Error(tl::types::RpcError {
                        error_code: e.code,
                        error_message: e.message,
                    })
                    .to_bytes(),
                )),
                Outcome::Drop => None,
            };
            match (reply, handled.delay) {
                (Some(reply), None) => replies.push((reply, true)),
                (Some(reply), Some(delay)) => {
                    debug!(
                        conn_id,
                        method = handled.method,
                        ?delay,
                        "fake dc: stalling answer"
                    );
                    let tx = out_tx.clone();
                    tasks.spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Outgoing::Message {
                            body: reply,
                            content_related: true,
                        });
                    });
                }
                (None, _) => {
                    let _ = out_tx.send(Outgoing::Close);
                }
            }
        }
    }
    Ok(())
}

/// Whether a server message answers a client message (its `msg_id` is then ≡ 1 mod 4, else 3).
fn is_response(body: &[u8]) -> bool {
    matches!(
        u32::from_bytes(body),
        Ok(RPC_RESULT
            | tl::types::Pong::CONSTRUCTOR_ID
            | tl::types::FutureSalts::CONSTRUCTOR_ID
            | tl::types::BadServerSalt::CONSTRUCTOR_ID)
    )
}

fn pong(msg_id: i64, ping_id: i64) -> Vec<u8> {
    tl::enums::Pong::Pong(tl::types::Pong { msg_id, ping_id }).to_bytes()
}

fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + result.len());
    RPC_RESULT.serialize(&mut body);
    req_msg_id.serialize(&mut body);
    body.extend_from_slice(result);
    body
}

/// Wraps a serialized object in `gzip_packed` (stored deflate blocks).
pub(crate) fn gzip_packed(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 64);
    GZIP_PACKED.serialize(&mut body);
    gzip_stored(data).serialize(&mut body);
    body
}
