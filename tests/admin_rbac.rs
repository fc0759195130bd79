//! Principals and privileges on the admin API of a running node (real nats-server, simulated
//! gateway, scripted login): the RBAC matrix — every endpoint the router declares × every
//! privilege, allowed and denied, with the audit record naming the principal — and per-group
//! grants, the filtered account list, unknown tokens, and the per-principal replay rate limit.

mod accounts_support;
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use accounts_support::*;
use serde_json::{Value, json};
use support::TestNats;
use tgingest::admin::principals::{Grant, PrincipalConfig, Privilege, TokenKey};
use tgingest::config::Config;
use tgingest::keys::{KeyPurpose, MasterKey};

/// The principal that prepares each request's preconditions (every privilege everywhere).
const ROOT: &str = "root";
const ROOT_TOKEN: &str = "root-token-1f0c";
/// The group the matrix's accounts and logins are in.
const GROUP: &str = "ops";

fn init() {
    tgingest::telemetry::install_crypto_provider();
    tgingest::telemetry::init_logging(tgingest::config::LogFormat::Human, "warn");
}

fn matrix_name(p: Privilege) -> String {
    format!("only-{p}")
}

fn matrix_token(p: Privilege) -> String {
    format!("token-of-only-{p}-5e1d")
}

fn grant(group: &str, privileges: &[Privilege]) -> Grant {
    Grant {
        group: group.into(),
        privileges: privileges.to_vec(),
    }
}

/// A node config with `root` (token in a file), one principal per privilege holding only that
/// privilege on every group (by token hash), and `extra` principals (by token hash).
fn rbac_config(nats_url: &str, dir: &Path, extra: &[(&str, &str, Vec<Grant>)]) -> Config {
    let mut config = config(nats_url, dir);
    config.telegram.login_attempts_per_day = 1000;
    config.admin.login_attempts_per_hour = 1000;
    let key = MasterKey::read_file(&config.security.master_key_file).expect("master key");
    let tokens = TokenKey::new(key.derive(KeyPurpose::AdminToken));
    let root_file = dir.join("root.token");
    std::fs::write(&root_file, format!("{ROOT_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    config.admin.principals.push(PrincipalConfig {
        name: ROOT.into(),
        token_file: root_file,
        token_hash: String::new(),
        grants: vec![grant("*", &[Privilege::Admin])],
    });
    for p in Privilege::ALL {
        config.admin.principals.push(PrincipalConfig {
            name: matrix_name(p),
            token_file: Default::default(),
            token_hash: tokens.token_hash(&matrix_token(p)),
            grants: vec![grant("*", &[p])],
        });
    }
    for (name, token, grants) in extra {
        config.admin.principals.push(PrincipalConfig {
            name: (*name).into(),
            token_file: Default::default(),
            token_hash: tokens.token_hash(token),
            grants: grants.clone(),
        });
    }
    config.validate().expect("a valid config");
    config
}

/// What one endpoint of the matrix is called with, after `prepare` set its preconditions up.
struct Sample {
    path: String,
    body: Option<Value>,
    /// The group a caller without the privilege is told it lacks it on.
    group: &'static str,
}

/// The matrix's world: the node, root's client, the session strings.
struct World<'a> {
    node: &'a tgingest::node::Node,
    root: Api,
    sessions: &'a Sessions,
}

impl World<'_> {
    async fn ensure_account(&self) {
        let (status, _) = self
            .root
            .send("GET", &format!("/v1/accounts/{PYRO_USER}"), None)
            .await;
        if status == 404 {
            let (status, body) = self
                .root
                .send(
                    "POST",
                    "/v1/accounts/import",
                    Some(json!({"format": "pyrogram", "session": self.sessions.pyrogram, "group": GROUP})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    }

    async fn ensure_no_account(&self) {
        let (status, body) = self
            .root
            .send("DELETE", &format!("/v1/accounts/{PYRO_USER}"), None)
            .await;
        assert!(status == 204 || status == 404, "{status} {body}");
    }

    async fn start_login(&self, phone: &str) -> String {
        let (status, body) = self
            .root
            .send(
                "POST",
                "/v1/logins",
                Some(json!({"phone": phone, "group": GROUP})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["login_id"].as_str().expect("login id").to_string()
    }

    async fn replay_id(&self) -> String {
        let (status, body) = self.root.send("GET", "/v1/replays", None).await;
        assert_eq!(status, 200, "{body}");
        if let Some(id) = body["replays"][0]["id"].as_str() {
            return id.to_string();
        }
        let (status, body) = self.root.send("POST", "/v1/replays", Some(json!({}))).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("replay id").to_string()
    }

    /// Sets up what `method path` acts on, and says how to call it.
    async fn prepare(&self, method: &str, path: &str) -> Sample {
        let account = |suffix: &str| format!("/v1/accounts/{PYRO_USER}{suffix}");
        let sample = |path: String, body: Option<Value>, group| Sample { path, body, group };
        match (method, path) {
            ("GET", "/v1/accounts") => {
                self.ensure_account().await;
                sample(path.into(), None, GROUP)
            }
            ("POST", "/v1/accounts/import") => {
                self.ensure_no_account().await;
                let body = json!({"format": "pyrogram", "session": self.sessions.pyrogram, "group": GROUP});
                sample(path.into(), Some(body), GROUP)
            }
            ("GET", "/v1/accounts/{id}") | ("DELETE", "/v1/accounts/{id}") => {
                self.ensure_account().await;
                sample(account(""), None, GROUP)
            }
            ("POST", "/v1/accounts/{id}/consent") => {
                self.ensure_account().await;
                let body = json!({"by": "the owner", "scope": "the matrix"});
                sample(account("/consent"), Some(body), GROUP)
            }
            ("POST", "/v1/accounts/{id}/pause") | ("POST", "/v1/accounts/{id}/resume") => {
                self.ensure_account().await;
                let action = path.rsplit('/').next().unwrap_or_default();
                sample(account(&format!("/{action}")), None, GROUP)
            }
            ("POST", "/v1/accounts/{id}/group") => {
                self.ensure_account().await;
                sample(account("/group"), Some(json!({"group": GROUP})), GROUP)
            }
            ("POST", "/v1/logins") => {
                let body = json!({"phone": PHONE, "group": GROUP});
                sample(path.into(), Some(body), GROUP)
            }
            ("POST", "/v1/logins/{id}/code") => {
                let id = self.start_login(PHONE).await;
                let body = json!({"code": CODE});
                sample(format!("/v1/logins/{id}/code"), Some(body), GROUP)
            }
            ("POST", "/v1/logins/{id}/password") => {
                let id = self.start_login(PHONE_2FA).await;
                let (status, body) = self
                    .root
                    .send(
                        "POST",
                        &format!("/v1/logins/{id}/code"),
                        Some(json!({"code": CODE})),
                    )
                    .await;
                assert_eq!(body["state"], "awaiting_password", "{status} {body}");
                let body = json!({"password": PASSWORD});
                sample(format!("/v1/logins/{id}/password"), Some(body), GROUP)
            }
            ("DELETE", "/v1/logins/{id}") => {
                let id = self.start_login(PHONE).await;
                sample(format!("/v1/logins/{id}"), None, GROUP)
            }
            ("GET", "/v1/replays") => {
                self.replay_id().await;
                sample(path.into(), None, "*")
            }
            ("POST", "/v1/replays") => sample(path.into(), Some(json!({})), "*"),
            ("GET", "/v1/replays/{id}") | ("DELETE", "/v1/replays/{id}") => {
                let id = self.replay_id().await;
                sample(format!("/v1/replays/{id}"), None, "*")
            }
            ("GET", "/v1/cluster") | ("GET", "/v1/principals") | ("GET", "/metrics") => {
                sample(path.into(), None, "*")
            }
            _ => panic!(
                "no sample request for {method} {path}: add one here (the matrix must cover every \
                 route the router declares)"
            ),
        }
    }

    fn audit_count(&self) -> usize {
        audits(self.node).len()
    }

    /// The principals named by the audit records after the first `from`.
    fn principals_since(&self, from: usize) -> Vec<(String, String)> {
        audits(self.node)
            .into_iter()
            .skip(from)
            .map(|a| {
                (
                    a.action.clone(),
                    a.details.get("principal").cloned().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// The routes that list: they show what the caller may see (and refuse only a caller without the
/// privilege anywhere).
fn is_list(method: &str, path: &str) -> bool {
    method == "GET" && (path == "/v1/accounts" || path == "/v1/replays")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_allows_exactly_its_privilege_or_admin_and_audits_the_principal() {
    init();
    let sessions = sessions();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = rbac_config(&nats.url(), dir.path(), &[]);
    let node = start_node(&config, &scripted()).await;
    let base = Api::new(&node);
    assert!(
        base.token.is_none(),
        "with principals configured there is no single-token mode's token"
    );
    let world = World {
        node: &node,
        root: base.with_token(ROOT_TOKEN),
        sessions: &sessions,
    };

    let endpoints = tgingest::admin::endpoints();
    assert!(endpoints.len() >= 19, "{endpoints:?}");
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for endpoint in &endpoints {
        let method = endpoint.method.as_str();
        let route = format!("{method} {}", endpoint.path);
        for privilege in Privilege::ALL {
            let sample = world.prepare(method, &endpoint.path).await;
            let api = base.with_token(&matrix_token(privilege));
            let before = world.audit_count();
            let (status, body) = api.send(method, &sample.path, sample.body.clone()).await;
            let allowed = privilege == endpoint.privilege || privilege == Privilege::Admin;
            let who = matrix_name(privilege);
            if allowed {
                // Allowed: whatever the action answers, it is not a refusal, and the route exists.
                assert!(
                    !matches!(status, 401 | 403 | 405)
                        && status < 500
                        && body["code"] != "not_found",
                    "{route} as {who}: {status} {body}"
                );
                if method != "GET" && (200..300).contains(&status) {
                    let named = world.principals_since(before);
                    assert!(
                        named.iter().any(|(_, p)| *p == who),
                        "{route} as {who}: no new audit record names {who}: {named:?}"
                    );
                }
            } else {
                assert_eq!(status, 403, "{route} as {who}: {body}");
                assert_eq!(body["code"], "forbidden", "{route} as {who}: {body}");
                assert_eq!(
                    body["missing"],
                    endpoint.privilege.name(),
                    "{route} as {who}: {body}"
                );
                // A list is refused only to a caller without the privilege on any group.
                let group = if is_list(method, &endpoint.path) {
                    "any"
                } else {
                    sample.group
                };
                assert_eq!(body["group"], group, "{route} as {who}: {body}");
                let named = world.principals_since(before);
                assert!(
                    named.iter().all(|(_, p)| *p != who),
                    "{route} as {who}: a refused request records nothing: {named:?}"
                );
            }
            table
                .entry(route.clone())
                .or_default()
                .push(format!("{privilege}:{status}"));
        }
    }
    for (route, cells) in &table {
        eprintln!("{route:<36} {}", cells.join(" "));
    }
    node.shutdown().await.unwrap();
}

/// Asserts that `method path` (with an empty JSON body) is refused to `api`'s principal with a
/// 403 naming `missing` and `group`.
async fn assert_forbidden(api: &Api, method: &str, path: &str, missing: &str, group: &str) {
    let (status, body) = api.send(method, path, Some(json!({}))).await;
    assert_eq!(status, 403, "{method} {path}: {body}");
    assert_eq!(
        (&body["missing"], &body["group"]),
        (&json!(missing), &json!(group)),
        "{method} {path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_apply_per_group_and_the_list_shows_only_what_the_caller_may_view() {
    init();
    let sessions = sessions();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let every_but_admin = [
        Privilege::View,
        Privilege::Login,
        Privilege::Manage,
        Privilege::Remove,
        Privilege::Replay,
    ];
    let config = rbac_config(
        &nats.url(),
        dir.path(),
        &[
            (
                "ops-team",
                "ops-team-token",
                vec![grant(GROUP, &every_but_admin)],
            ),
            (
                "sales-viewer",
                "sales-viewer-token",
                vec![grant("sales", &[Privilege::View])],
            ),
        ],
    );
    let node = start_node(&config, &scripted()).await;
    let base = Api::new(&node);
    let root = base.with_token(ROOT_TOKEN);
    let ops = base.with_token("ops-team-token");
    let sales = base.with_token("sales-viewer-token");

    // ops-team imports into its own group, not into another one.
    let (status, body) = ops
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "pyrogram", "session": sessions.pyrogram, "group": GROUP})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["group"], GROUP);
    let telethon = json!({"format": "telethon", "session": sessions.telethon,
        "account_id": TELETHON_USER, "group": "sales"});
    let (status, body) = ops
        .send("POST", "/v1/accounts/import", Some(telethon.clone()))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        (&body["missing"], &body["group"]),
        (&json!("login"), &json!("sales"))
    );
    let (status, body) = root
        .send("POST", "/v1/accounts/import", Some(telethon))
        .await;
    assert_eq!(status, 201, "{body}");

    // Each sees only its group's accounts; root sees both.
    let ids = |body: &Value| -> Vec<String> {
        body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = ops.send("GET", "/v1/accounts", None).await;
    assert_eq!(ids(&body), vec![PYRO_USER.to_string()]);
    let (_, body) = sales.send("GET", "/v1/accounts", None).await;
    assert_eq!(ids(&body), vec![TELETHON_USER.to_string()]);
    let (_, body) = root.send("GET", "/v1/accounts", None).await;
    assert_eq!(ids(&body).len(), 2, "{body}");

    // Acting on the other group's account: 403 naming the privilege and the group.
    let other = format!("/v1/accounts/{TELETHON_USER}");
    let pause_other = format!("{other}/pause");
    for (method, path, missing) in [
        ("GET", other.as_str(), "view"),
        ("POST", pause_other.as_str(), "manage"),
        ("DELETE", other.as_str(), "remove"),
    ] {
        assert_forbidden(&ops, method, path, missing, "sales").await;
    }
    let (status, body) = sales
        .send("POST", &format!("/v1/accounts/{TELETHON_USER}/pause"), None)
        .await;
    assert_eq!(
        (status, &body["missing"]),
        (403, &json!("manage")),
        "{body}"
    );

    // Node-wide routes need a `*` grant, which ops-team does not have.
    for (method, path, missing) in [
        ("GET", "/v1/cluster", "view"),
        ("GET", "/metrics", "view"),
        ("POST", "/v1/replays", "replay"),
        ("GET", "/v1/principals", "admin"),
    ] {
        assert_forbidden(&ops, method, path, missing, "*").await;
    }
    // A replay of one of its accounts is within its grant (and refused for a reason of its own:
    // that account has no events yet).
    let (status, body) = ops
        .send("POST", "/v1/replays", Some(json!({"account": PYRO_USER})))
        .await;
    assert_eq!(status, 400, "{body}");

    // Moving an account between groups is an admin's, and then the grants follow it.
    let to_sales = json!({"group": "sales"});
    let path = format!("/v1/accounts/{PYRO_USER}/group");
    let (status, body) = ops.send("POST", &path, Some(to_sales.clone())).await;
    assert_eq!((status, &body["missing"]), (403, &json!("admin")), "{body}");
    let before = audits(&node).len();
    let (status, body) = root.send("POST", &path, Some(to_sales)).await;
    assert_eq!((status, &body["group"]), (200, &json!("sales")), "{body}");
    let moved = &audits(&node)[before];
    assert_eq!(moved.action, "account.group");
    assert_eq!(moved.details["principal"], ROOT);
    assert_eq!(
        (moved.details["from"].as_str(), moved.details["to"].as_str()),
        (GROUP, "sales")
    );
    let (status, _) = ops
        .send("GET", &format!("/v1/accounts/{PYRO_USER}"), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = sales
        .send("GET", &format!("/v1/accounts/{PYRO_USER}"), None)
        .await;
    assert_eq!(status, 200);

    // A token nobody holds, or none: 401, naming no principal.
    for api in [
        base.with_token("not-a-token"),
        Api {
            token: None,
            ..base.with_token("")
        },
    ] {
        let (status, body) = api.send("GET", "/v1/accounts", None).await;
        assert_eq!(status, 401, "{body}");
        let text = body.to_string();
        for name in [ROOT, "ops-team", "sales-viewer"] {
            assert!(!text.contains(name), "{text}");
        }
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_past_a_principals_hourly_allowance_get_429_with_retry_after() {
    init();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = rbac_config(&nats.url(), dir.path(), &[]);
    config.admin.replays_per_hour = 2;
    let node = start_node(&config, &scripted()).await;
    let base = Api::new(&node);
    let replayer = base.with_token(&matrix_token(Privilege::Replay));
    for _ in 0..2 {
        let (status, body) = replayer.send("POST", "/v1/replays", Some(json!({}))).await;
        assert!(status == 202 || status == 409, "{status} {body}");
    }
    let resp = replayer
        .http
        .post(format!("{}/v1/replays", replayer.base))
        .bearer_auth(matrix_token(Privilege::Replay))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    // The allowance is the principal's: another one still replays.
    let (status, body) = base
        .with_token(ROOT_TOKEN)
        .send("POST", "/v1/replays", Some(json!({})))
        .await;
    assert!(status == 202 || status == 409, "{status} {body}");
    node.shutdown().await.unwrap();
}
