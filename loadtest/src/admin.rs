//! A minimal client of tgingest's admin API (HTTP/1.1 over loopback, one connection per call):
//! what the fake-DC set-up and the replay phase need, without an HTTP client dependency.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs::Tgingest;

/// A free loopback address for tgingest's `admin.listen`.
pub fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("free port")?;
    Ok(l.local_addr()?.to_string())
}

/// tgingest's admin API: where it listens and the token it wants.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub addr: &'a str,
    pub token: Option<&'a str>,
}

/// The token tgingest's admin API wants from the loadtest: the one the node of `config`
/// generated into its data dir (or the configured one), found as `tgingest accounts` finds it.
pub fn node_token(config: &tgingest::config::Config) -> anyhow::Result<Option<String>> {
    let token = tgingest::admin::client_token(config, None).context("the admin API's token")?;
    Ok(token.map(|t| t.to_string()))
}

/// Waits (at most 60 s) until tgingest's admin API accepts connections.
pub async fn wait_up(addr: &str, proc: &mut Tgingest) -> anyhow::Result<()> {
    let up_by = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        proc.check_alive()?;
        if Instant::now() >= up_by {
            bail!("tgingest's admin API did not come up at {addr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One request, with `token` as the bearer token when given; returns the status and the body.
pub async fn call_as(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to the admin API at {addr}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: not an HTTP answer"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// One `POST` of JSON, with `token` as the bearer token when given; fails unless the answer is
/// 2xx; returns the body.
pub async fn post_as(
    addr: &str,
    token: Option<&str>,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let (status, answer) = call_as(addr, token, "POST", path, Some(body)).await?;
    if !(200..300).contains(&status) {
        bail!("POST {path}: {status} {answer}");
    }
    Ok(answer)
}
