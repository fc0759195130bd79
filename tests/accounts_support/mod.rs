//! Helpers for the accounts tests: a node on a real nats-server with the simulated gateway and the
//! scripted login, its admin API on a free loopback port, and session strings from the real
//! Telethon and Pyrogram packages.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tgingest::accounts::login::{ScriptedAccount, ScriptedLogin};
use tgingest::config::Config;
use tgingest::eventlog::{AuditEntry, RecordKind};
use tgingest::keys::MasterKey;
use tgingest::node::{Node, NodeOptions};
use tgingest::telegram::simulated::{
    SimulatedFactory, SimulatedWorld, SimulatorConfig, SimulatorFaults,
};

pub const PYRO_USER: &str = "1000000";
pub const TELETHON_USER: &str = "1000001";
pub const PHONE: &str = "+49 151 23456789";
pub const PHONE_2FA: &str = "+44 7700 900123";
pub const CODE: &str = "52917";
pub const PASSWORD: &str = "correct horse battery staple";
pub const HINT: &str = "the xkcd one";
pub const LOGIN_USER: i64 = 1000002;
pub const LOGIN_2FA_USER: i64 = 1000003;

/// Session strings written by the real libraries, with their auth keys (hex).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sessions {
    pub pyrogram: String,
    pub pyrogram_key: String,
    pub telethon: String,
    pub telethon_key: String,
}

const MAKE: &str = r#"
import asyncio, json, random
from pyrogram.storage import MemoryStorage
from telethon.crypto import AuthKey
from telethon.sessions import StringSession

rng = random.Random()
def key():
    return bytes(rng.randrange(256) for _ in range(256))

async def main():
    k1 = key()
    st = MemoryStorage("accounts-test")
    await st.open()
    await st.dc_id(2)
    await st.api_id(12345)
    await st.test_mode(False)
    await st.auth_key(k1)
    await st.user_id(1000000)
    await st.is_bot(False)
    s1 = await st.export_session_string()
    await st.close()
    k2 = key()
    ss = StringSession()
    ss.set_dc(2, "149.154.167.51", 443)
    ss.auth_key = AuthKey(k2)
    print(json.dumps({"pyrogram": s1, "pyrogram_key": k1.hex(), "telethon": ss.save(), "telethon_key": k2.hex()}))

asyncio.run(main())
"#;

/// Fresh session strings from the real Pyrogram (user 1000000) and Telethon packages.
pub fn sessions() -> Sessions {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = repo.join(".tools/python");
    assert!(
        tools.join("telethon").is_dir() && tools.join("pyrogram").is_dir(),
        "telethon/pyrogram are not in {}: run scripts/install-python-test-deps.sh",
        tools.display()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(MAKE)
        .env("PYTHONPATH", &tools)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sessions JSON")
}

/// The scripted Telegram login: one account without 2FA, one with.
pub fn scripted() -> ScriptedLogin {
    ScriptedLogin::default()
        .with(ScriptedAccount {
            phone: PHONE.into(),
            code: CODE.into(),
            password: None,
            user_id: LOGIN_USER,
            display_name: Some("Plain Account".into()),
            auth_key: [0x5a; 256],
            request_fails: None,
            panics: false,
        })
        .with(ScriptedAccount {
            phone: PHONE_2FA.into(),
            code: CODE.into(),
            password: Some((PASSWORD.into(), Some(HINT.into()))),
            user_id: LOGIN_2FA_USER,
            display_name: None,
            auth_key: [0xa5; 256],
            request_fails: None,
            panics: false,
        })
}

/// A config for a node on `nats` with its admin API on a free loopback port.
pub fn config(nats_url: &str, dir: &Path) -> Config {
    let mut config = Config::default();
    config.node.id = format!("acct-{}", rand::random::<u32>());
    config.node.data_dir = dir.join("data");
    config.nats.url = nats_url.to_string();
    config.kv.replicas = 1;
    config.admin.listen = "127.0.0.1:0".into();
    let key = dir.join("master.key");
    if !key.exists() {
        MasterKey::generate_file(&key).expect("master key");
    }
    config.security.master_key_file = key;
    config
}

/// The simulated world the registry accounts ingest from (ids 1000000…1000003).
pub fn factory() -> Arc<SimulatedFactory> {
    let world = SimulatedWorld::new(SimulatorConfig {
        accounts: 4,
        rate: 200.0,
        messages_per_account: 0,
        ..SimulatorConfig::default()
    })
    .expect("world");
    Arc::new(SimulatedFactory::new(
        Arc::new(world),
        SimulatorFaults::new(),
    ))
}

/// Starts a node with the simulated factory and `login`.
pub async fn start_node(config: &Config, login: &ScriptedLogin) -> Node {
    Node::start_with(
        config.clone(),
        NodeOptions {
            gateway_factory: Some(factory()),
            login_backend: Some(Arc::new(login.clone())),
            ..NodeOptions::default()
        },
    )
    .await
    .expect("node starts")
}

/// A tiny client of the admin API, sending the node's own token (the single-token mode's, as
/// `tgingest accounts` finds it) unless told another.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(node: &Node) -> Api {
        Api {
            base: format!("http://{}", node.admin_addr().expect("admin on")),
            http: reqwest::Client::new(),
            token: node_token(node),
        }
    }

    /// The same node, as the principal whose token is `token`.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            base: self.base.clone(),
            http: self.http.clone(),
            token: Some(token.to_string()),
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn account(&self, id: &str) -> Value {
        let (status, body) = self.send("GET", &format!("/v1/accounts/{id}"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// The token of the node's single-token mode (`admin.token_file`, or the one it generated into
/// its data dir), as `tgingest accounts` finds it.
pub fn node_token(node: &Node) -> Option<String> {
    tgingest::admin::client_token(&node.config, None)
        .expect("the admin token")
        .map(|t| t.to_string())
}

/// The audit entries in the node's event log, oldest first.
pub fn audits(node: &Node) -> Vec<AuditEntry> {
    node.eventlog
        .records()
        .filter_map(Result::ok)
        .filter(|r| r.kind == RecordKind::Audit)
        .filter_map(|r| tgingest::codec::decode::<AuditEntry>(&r.body).ok())
        .collect()
}

/// Messages in TG_RAW from `account`.
pub async fn raw_count(node: &Node, account: &str) -> u64 {
    let stream = node
        .bus
        .js
        .get_stream(tgingest::bus::STREAM_RAW)
        .await
        .unwrap();
    let info = stream
        .info_with_subjects(format!("tg.raw.{account}.>"))
        .await
        .unwrap();
    use futures::TryStreamExt;
    let subjects: Vec<(String, usize)> = info.try_collect().await.unwrap();
    subjects.iter().map(|(_, n)| *n as u64).sum()
}

pub fn data_dir(config: &Config) -> PathBuf {
    config.node.data_dir.clone()
}
