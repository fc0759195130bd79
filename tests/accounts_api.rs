//! The account and login API of a running node (real nats-server, simulated gateway, scripted
//! login): imports wait for consent and ingest nothing before it; pause, resume and remove are
//! audited and remove wipes the sealed session; logins with and without 2FA, wrong code, wrong
//! password, a panicking backend, and the login budget across a node restart.

mod accounts_support;
mod support;

use std::time::{Duration, Instant};

use accounts_support::*;
use serde_json::json;
use support::TestNats;
use tgingest::accounts::login::{LoginFailure, ScriptedAccount};
use tgingest::keys::MasterKey;
use tgingest::telegram::session::SessionStore;

async fn wait_for_state(api: &Api, id: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = api.account(id).await;
        if a["lifecycle"]["state"] == state || Instant::now() > deadline {
            assert_eq!(a["lifecycle"]["state"], state, "{a}");
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn init() {
    tgingest::telemetry::install_crypto_provider();
    tgingest::telemetry::init_logging(tgingest::config::LogFormat::Human, "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_accounts_wait_for_consent_then_run_and_pause_resume_remove_are_audited() {
    init();
    let sessions = sessions();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&nats.url(), dir.path());
    let node = start_node(&config, &scripted()).await;
    let api = Api::new(&node);

    let (status, body) = api.send("GET", "/healthz", None).await;
    assert_eq!((status, body), (200, json!("ok")));

    // Pyrogram strings carry the user id; Telethon strings do not, and the error says what to send.
    let (status, body) = api
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "pyrogram", "session": sessions.pyrogram})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["account_id"], PYRO_USER);
    assert_eq!(body["lifecycle"]["state"], "pending_consent");
    assert_eq!(body["added_via"], "pyrogram_import");

    let (status, body) = api
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "telethon", "session": sessions.telethon})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "account_id_required");
    assert!(
        body["error"].as_str().unwrap().contains("account_id"),
        "{body}"
    );
    let (status, body) = api
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "telethon", "session": sessions.telethon, "account_id": TELETHON_USER})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["lifecycle"]["state"], "pending_consent");

    // The same account twice is refused (its session is not overwritten); garbage is refused.
    let (status, body) = api
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "pyrogram", "session": sessions.pyrogram})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("account_exists"))
    );
    let (status, body) = api
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "pyrogram", "session": "not-a-session"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_session")));
    let (status, body) = api
        .send(
            "POST",
            "/v1/accounts/import",
            Some(json!({"format": "pyrogram"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    // The sealed sessions are in TG_SESSIONS, opening with the node's key to the imported keys.
    let key = MasterKey::read_file(&config.security.master_key_file).unwrap();
    let store = SessionStore::open(&node.bus, key).await.unwrap();
    let pyro = store.get(PYRO_USER).await.unwrap().unwrap();
    assert_eq!(
        hex::encode(pyro.home_auth_key().unwrap()),
        sessions.pyrogram_key
    );
    let tele = store.get(TELETHON_USER).await.unwrap().unwrap();
    assert_eq!(
        hex::encode(tele.home_auth_key().unwrap()),
        sessions.telethon_key
    );

    // Without consent nothing is ingested.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(raw_count(&node, PYRO_USER).await, 0);
    let (_, list) = api.send("GET", "/v1/accounts", None).await;
    let states: Vec<&str> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["lifecycle"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending_consent", "pending_consent"]);

    // Consent: the account runs and ingests.
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/accounts/{PYRO_USER}/consent"),
            Some(json!({"by": "Jane Owner (ticket OPS-7)", "scope": "all chats, 30 days"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consent"]["by"], "Jane Owner (ticket OPS-7)");
    wait_for_state(&api, PYRO_USER, "running").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw_count(&node, PYRO_USER).await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        raw_count(&node, PYRO_USER).await > 0,
        "nothing ingested after consent"
    );
    let a = api.account(PYRO_USER).await;
    assert!(a["last_event_at_us"].as_i64().is_some(), "{a}");
    // The other account still waits.
    assert_eq!(raw_count(&node, TELETHON_USER).await, 0);

    // Pause stops ingesting; resume starts again.
    let (status, body) = api
        .send("POST", &format!("/v1/accounts/{PYRO_USER}/pause"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lifecycle"]["state"], "paused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused_at = raw_count(&node, PYRO_USER).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        raw_count(&node, PYRO_USER).await,
        paused_at,
        "a paused account ingests"
    );
    let (status, _) = api
        .send("POST", &format!("/v1/accounts/{PYRO_USER}/resume"), None)
        .await;
    assert_eq!(status, 200);
    wait_for_state(&api, PYRO_USER, "running").await;

    // After a restart the consented account starts again from the registry; the other waits.
    node.shutdown().await.unwrap();
    let node = start_node(&config, &scripted()).await;
    let api = Api::new(&node);
    wait_for_state(&api, PYRO_USER, "running").await;
    assert_eq!(
        api.account(TELETHON_USER).await["lifecycle"]["state"],
        "pending_consent"
    );
    let key = MasterKey::read_file(&config.security.master_key_file).unwrap();
    let store = SessionStore::open(&node.bus, key).await.unwrap();

    // Remove: the actor stops, the sealed session and the record are gone.
    let (status, _) = api
        .send("DELETE", &format!("/v1/accounts/{PYRO_USER}"), None)
        .await;
    assert_eq!(status, 204);
    assert!(
        store.get(PYRO_USER).await.unwrap().is_none(),
        "session not wiped"
    );
    let (status, body) = api
        .send("GET", &format!("/v1/accounts/{PYRO_USER}"), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("account_not_found"))
    );
    let (status, body) = api.send("POST", "/v1/accounts/123/pause", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("account_not_found"))
    );
    let (status, body) = api.send("POST", "/v1/accounts/abc/pause", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_account_id"))
    );

    let actions: Vec<(String, Option<String>)> = audits(&node)
        .into_iter()
        .filter(|e| e.action.starts_with("account."))
        .map(|e| (e.action, e.account_id))
        .collect();
    let pyro = Some(PYRO_USER.to_string());
    for action in [
        "account.import",
        "account.consent",
        "account.pause",
        "account.resume",
        "account.remove",
    ] {
        assert!(
            actions.contains(&(action.to_string(), pyro.clone())),
            "{action} missing: {actions:?}"
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_with_2fa_wrong_code_wrong_password_and_a_budget_that_survives_a_restart() {
    init();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&nats.url(), dir.path());
    let mut panicky = ScriptedAccount {
        phone: "+1 202 555 0199".into(),
        code: "1".into(),
        password: None,
        user_id: 1000009,
        display_name: None,
        auth_key: [1; 256],
        request_fails: None,
        panics: true,
    };
    let banned = ScriptedAccount {
        phone: "+1 202 555 0100".into(),
        request_fails: Some(LoginFailure::PhoneBanned),
        panics: false,
        ..panicky.clone()
    };
    panicky.user_id = 1000010;
    let login = scripted().with(panicky).with(banned);
    let node = start_node(&config, &login).await;
    let api = Api::new(&node);

    // A login without 2FA: wrong code first (the login still waits), then the right one.
    let (status, start) = api
        .send("POST", "/v1/logins", Some(json!({"phone": PHONE})))
        .await;
    assert_eq!(status, 201, "{start}");
    assert_eq!(start["state"], "awaiting_code");
    assert_eq!(start["budget"]["remaining"], 4);
    let id = start["login_id"].as_str().unwrap().to_string();
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/code"),
            Some(json!({"code": "00000"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_code")),
        "{body}"
    );
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/code"),
            Some(json!({"code": CODE})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending_consent");
    assert_eq!(body["account_id"], LOGIN_USER.to_string());
    let a = api.account(&LOGIN_USER.to_string()).await;
    assert_eq!(a["lifecycle"]["state"], "pending_consent");
    assert_eq!(a["added_via"], "login");
    assert_eq!(a["display_name"], "Plain Account");
    assert_eq!(a["login_budget"]["remaining"], 4, "{a}");
    assert!(a["has_session"].as_bool().unwrap());
    // A finished login is gone.
    let (status, _) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/code"),
            Some(json!({"code": CODE})),
        )
        .await;
    assert_eq!(status, 404);

    // 2FA: the hint comes back; a wrong password keeps the login waiting for the password.
    let (_, start) = api
        .send("POST", "/v1/logins", Some(json!({"phone": PHONE_2FA})))
        .await;
    let id = start["login_id"].as_str().unwrap().to_string();
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/password"),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("wrong_login_step"))
    );
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/code"),
            Some(json!({"code": CODE})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "awaiting_password");
    assert_eq!(body["hint"], HINT);
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/password"),
            Some(json!({"password": "wrong"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_password"))
    );
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/logins/{id}/password"),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending_consent");
    assert_eq!(body["account_id"], LOGIN_2FA_USER.to_string());

    // Cancel.
    let (_, start) = api
        .send("POST", "/v1/logins", Some(json!({"phone": PHONE_2FA})))
        .await;
    let id = start["login_id"].as_str().unwrap().to_string();
    let (status, _) = api.send("DELETE", &format!("/v1/logins/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = api.send("DELETE", &format!("/v1/logins/{id}"), None).await;
    assert_eq!(status, 404);

    // A panic inside the login library is a clear error, and the node lives on.
    let (status, body) = api
        .send(
            "POST",
            "/v1/logins",
            Some(json!({"phone": "+1 202 555 0199"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("login_crashed")),
        "{body}"
    );
    let (status, body) = api
        .send(
            "POST",
            "/v1/logins",
            Some(json!({"phone": "+1 202 555 0100"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("phone_banned")),
        "{body}"
    );
    let (status, _) = api.send("GET", "/healthz", None).await;
    assert_eq!(status, 200);

    // The budget: PHONE has used 1 of 5; three more pass, the fifth passes, the sixth is refused.
    for left in [3, 2, 1, 0] {
        let (status, body) = api
            .send("POST", "/v1/logins", Some(json!({"phone": PHONE})))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["budget"]["remaining"], left);
    }
    let (status, refused) = api
        .send(
            "POST",
            "/v1/logins",
            Some(json!({"phone": "4915123456789"})),
        )
        .await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["code"], "login_budget_exhausted");
    assert_eq!(refused["budget"]["remaining"], 0);
    let resets = refused["budget"]["resets_at_us"].as_i64().unwrap();
    let now = tgingest::event::now_us();
    assert!(resets > now + 23 * 3600 * 1_000_000, "{refused}");
    let text = refused["error"].as_str().unwrap();
    assert!(
        text.contains("0 left") && text.contains("allowed at"),
        "{text}"
    );
    assert_eq!(
        api.account(&LOGIN_USER.to_string()).await["login_budget"]["remaining"],
        0
    );
    let audited: Vec<String> = audits(&node)
        .into_iter()
        .filter(|e| e.action.starts_with("login."))
        .map(|e| e.action)
        .collect();
    for action in [
        "login.start",
        "login.failed",
        "login.succeeded",
        "login.password_required",
        "login.cancelled",
        "login.refused",
    ] {
        assert!(audited.iter().any(|a| a == action), "{action}: {audited:?}");
    }
    let requests = login
        .code_requests
        .load(std::sync::atomic::Ordering::Relaxed);

    // After a restart the budget is still spent, and no code was requested for the refusal.
    node.shutdown().await.unwrap();
    let node = start_node(&config, &login).await;
    let api = Api::new(&node);
    let (status, refused) = api
        .send("POST", "/v1/logins", Some(json!({"phone": PHONE})))
        .await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["budget"]["resets_at_us"].as_i64().unwrap(), resets);
    assert_eq!(
        login
            .code_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        requests
    );
    // The account logged in earlier is still registered, waiting for consent.
    assert_eq!(
        api.account(&LOGIN_USER.to_string()).await["lifecycle"]["state"],
        "pending_consent"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_an_open_address_without_a_token_and_a_port_in_use() {
    init();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&nats.url(), dir.path());
    config.admin.listen = "0.0.0.0:0".into();
    let err = tgingest::node::Node::start_with(config.clone(), Default::default())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("admin.token_file"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.admin.listen = taken.local_addr().unwrap().to_string();
    let err = tgingest::node::Node::start_with(config.clone(), Default::default())
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("is in use") && text.contains("TGINGEST_ADMIN_LISTEN"),
        "{text}"
    );

    // With a token, every /v1 route needs it; /healthz does not.
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    config.admin.listen = "127.0.0.1:0".into();
    config.admin.token_file = token.clone();
    let err = tgingest::node::Node::start_with(config.clone(), Default::default())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    config.admin.listen = "127.0.0.1:0".into();
    config.admin.token_file = token;
    // The production defaults: grammers logins, which need API credentials.
    let node = tgingest::node::Node::start_with(config.clone(), Default::default())
        .await
        .unwrap();
    // A client that sends no token.
    let api = Api {
        token: None,
        ..Api::new(&node)
    };
    let (status, body) = api.send("GET", "/v1/accounts", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let refused = api
        .http
        .post(format!("{}/v1/logins", api.base))
        .bearer_auth("s3cret-token")
        .json(&json!({"phone": PHONE}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "not_configured");
    assert!(
        body["error"].as_str().unwrap().contains("telegram.api_id"),
        "{body}"
    );
    assert!(
        !config.node.data_dir.join("login-budget.json").exists(),
        "an attempt that never reached Telegram was counted"
    );
    assert_eq!(api.send("GET", "/healthz", None).await.0, 200);
    let ok = api
        .http
        .get(format!("{}/v1/accounts", api.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    node.shutdown().await.unwrap();
}
