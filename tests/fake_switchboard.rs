//! The fake Switchboard enforces the contract (`switchboard-contract.md`): these tests talk to it
//! with hand-written MCP over real loopback HTTP, not through tgingest's client, so a bug in the
//! client cannot hide a bug in the fake.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tgingest::switchboard::{DuplicateReason, FakeOptions, FakeSwitchboard};

fn http() -> reqwest::Client {
    tgingest::telemetry::install_crypto_provider();
    reqwest::Client::new()
}

/// The JSON-RPC message inside a streamable-HTTP reply (JSON or SSE body).
async fn reply_json(resp: reqwest::Response) -> Value {
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    if !sse {
        return serde_json::from_str(&text).unwrap();
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an SSE body carries a data line");
    serde_json::from_str(data).unwrap()
}

/// A hand-rolled streamable-HTTP MCP session.
struct Raw {
    http: reqwest::Client,
    url: String,
    sid: String,
}

impl Raw {
    async fn open(fake: &FakeSwitchboard) -> Raw {
        let http = http();
        let url = fake.mcp_url();
        let resp = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"}}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sid = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let init = reply_json(resp).await;
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
        let raw = Raw { http, url, sid };
        let resp = raw
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(resp.status(), 202);
        raw
    }

    async fn post(&self, msg: &Value) -> reqwest::Response {
        self.http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.sid)
            .header("mcp-protocol-version", "2025-06-18")
            .json(msg)
            .send()
            .await
            .unwrap()
    }

    async fn rpc(&self, method: &str, params: Value) -> Value {
        let resp = self
            .post(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
            .await;
        assert_eq!(resp.status(), 200);
        let v = reply_json(resp).await;
        assert_eq!(v["id"], 7);
        v
    }

    /// The `result` of a tools/call.
    async fn call(&self, tool: &str, args: &Value) -> Value {
        self.rpc("tools/call", json!({"name": tool, "arguments": args}))
            .await["result"]
            .clone()
    }
}

fn valid() -> Value {
    json!({
        "schema_version": "ingest.v1",
        "source": {"channel": "telegram_user_client", "provider": "telegram",
                   "endpoint_identity": "telegram:user:42"},
        "event": {"external_event_id": "7", "external_thread_id": "-1001234",
                  "observed_at": "2026-03-01T10:15:00.123456Z"},
        "sender": {"identity": "99"},
        "payload": {"raw": {"event_id": "e7"}, "normalized_text": "hello\n[tg:-1001234:7]"},
        "control": {"idempotency_key": "tg:-1001234:7"},
    })
}

fn with(mutate: impl FnOnce(&mut Value)) -> Value {
    let mut v = valid();
    mutate(&mut v);
    v
}

/// Asserts the contract's reply to an invalid envelope: `isError: false` and
/// `{"status":"error","error":"Invalid ingest.v1 envelope: …"}` in both result forms.
fn assert_invalid(result: &Value, path: &str, case: &str) {
    assert_eq!(result["isError"], false, "{case}: {result}");
    let body = &result["structuredContent"];
    assert_eq!(body["status"], "error", "{case}: {result}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("Invalid ingest.v1 envelope: "),
        "{case}: {error}"
    );
    assert!(error.contains(path), "{case}: {error:?} should name {path}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, body, "{case}: content[0].text carries the same JSON");
}

#[tokio::test]
async fn invalid_envelopes_are_rejected_with_the_contracts_reply() {
    let fake = FakeSwitchboard::start(FakeOptions {
        sender_details: false,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let raw = Raw::open(&fake).await;
    type Case = (&'static str, &'static str, Value);
    let cases: Vec<Case> = vec![
        (
            "unknown top-level key",
            "extra",
            with(|v| v["extra"] = json!(1)),
        ),
        (
            "unknown key in source",
            "source.region",
            with(|v| v["source"]["region"] = json!("eu")),
        ),
        (
            "unknown key in event",
            "event.type",
            with(|v| v["event"]["type"] = json!("message")),
        ),
        (
            "unknown key in sender",
            "sender.name",
            with(|v| v["sender"]["name"] = json!("Ann")),
        ),
        (
            "sender details on an older server",
            "sender.chat_type",
            with(|v| v["sender"]["chat_type"] = json!("group")),
        ),
        (
            "unknown key in payload",
            "payload.text",
            with(|v| v["payload"]["text"] = json!("x")),
        ),
        (
            "unknown key in control",
            "control.retry",
            with(|v| v["control"]["retry"] = json!(1)),
        ),
        (
            "legacy channel on a current server",
            "source.channel",
            with(|v| v["source"]["channel"] = json!("telegram")),
        ),
        (
            "provider outside the list",
            "source.provider",
            with(|v| v["source"]["provider"] = json!("gmail")),
        ),
        (
            "empty endpoint",
            "source.endpoint_identity",
            with(|v| v["source"]["endpoint_identity"] = json!("")),
        ),
        (
            "wrong schema version",
            "schema_version",
            with(|v| v["schema_version"] = json!("ingest.v2")),
        ),
        (
            "source not an object",
            "source",
            with(|v| v["source"] = json!("telegram")),
        ),
        (
            "empty event id",
            "event.external_event_id",
            with(|v| v["event"]["external_event_id"] = json!(" ")),
        ),
        (
            "numeric event id",
            "event.external_event_id",
            with(|v| v["event"]["external_event_id"] = json!(7)),
        ),
        (
            "empty thread id",
            "event.external_thread_id",
            with(|v| v["event"]["external_thread_id"] = json!("")),
        ),
        (
            "7 fractional digits",
            "event.observed_at",
            with(|v| v["event"]["observed_at"] = json!("2026-03-01T10:15:00.1234567Z")),
        ),
        (
            "no offset",
            "event.observed_at",
            with(|v| v["event"]["observed_at"] = json!("2026-03-01T10:15:00")),
        ),
        (
            "no T",
            "event.observed_at",
            with(|v| v["event"]["observed_at"] = json!("2026-03-01 10:15:00Z")),
        ),
        (
            "unix seconds",
            "event.observed_at",
            with(|v| v["event"]["observed_at"] = json!(1_772_360_100)),
        ),
        (
            "whitespace-only sender",
            "sender.identity",
            with(|v| v["sender"]["identity"] = json!("  ")),
        ),
        (
            "sender without identity",
            "sender.identity",
            with(|v| v["sender"] = json!({})),
        ),
        (
            "whitespace-only text",
            "payload.normalized_text",
            with(|v| v["payload"]["normalized_text"] = json!(" \n\t")),
        ),
        (
            "raw is a string",
            "payload.raw",
            with(|v| v["payload"]["raw"] = json!("{}")),
        ),
        (
            "raw is null in the full tier",
            "payload.raw",
            with(|v| v["payload"]["raw"] = Value::Null),
        ),
        (
            "attachments not a list",
            "payload.attachments",
            with(|v| v["payload"]["attachments"] = json!({})),
        ),
        (
            "empty idempotency key",
            "control.idempotency_key",
            with(|v| v["control"]["idempotency_key"] = json!("")),
        ),
        (
            "unknown policy tier",
            "control.policy_tier",
            with(|v| v["control"]["policy_tier"] = json!("urgent")),
        ),
        (
            "unknown ingestion tier",
            "control.ingestion_tier",
            with(|v| v["control"]["ingestion_tier"] = json!("bulk")),
        ),
        (
            "trace context not an object",
            "control.trace_context",
            with(|v| v["control"]["trace_context"] = json!("00-ab")),
        ),
        (
            "control null",
            "control",
            with(|v| v["control"] = Value::Null),
        ),
    ];
    let n = cases.len() as u64;
    for (case, path, envelope) in cases {
        let result = raw.call("ingest", &envelope).await;
        assert_invalid(&result, path, case);
    }
    let stats = fake.stats();
    assert_eq!(stats.rejected, n);
    assert_eq!(stats.stored, 0, "nothing invalid is stored");
    assert_eq!(fake.rejections().len() as u64, n);
    assert!(fake.rejections().iter().all(|r| !r.is_error));
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    let envelope = with(|v| {
        v["source"]["channel"] = json!("slack");
        v["payload"]["normalized_text"] = json!("");
    });
    let result = raw.call("ingest", &envelope).await;
    assert_invalid(&result, "source.channel", "two problems");
    assert_invalid(&result, "payload.normalized_text", "two problems");
    assert!(
        result["structuredContent"]["error"]
            .as_str()
            .unwrap()
            .contains("2 validation errors")
    );
}

/// Real Switchboard errors are pydantic reports: several lines, long, quoting the input. Every
/// refusal the fake gives has that shape, so no single-line reply hides how tgingest carries them.
#[tokio::test]
async fn every_refusal_is_a_long_multi_line_non_ascii_report_like_the_real_servers() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    let text = |result: &Value| -> String {
        result["structuredContent"]["error"]
            .as_str()
            .or_else(|| result["content"][0]["text"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let invalid = raw
        .call(
            "ingest",
            &with(|v| {
                v["source"]["channel"] = json!("telegram");
                v["payload"]["normalized_text"] = json!("   ");
            }),
        )
        .await;
    let missing = raw
        .call(
            "ingest",
            &with(|v| {
                v.as_object_mut().unwrap().remove("sender");
            }),
        )
        .await;
    let mut hb = heartbeat();
    hb["status"]["state"] = json!("sleepy");
    let heartbeat = raw.call("connector.heartbeat", &hb).await;
    fake.fail_next(1);
    let injected = raw.call("ingest", &valid()).await;
    for (case, result) in [
        ("invalid", &invalid),
        ("missing", &missing),
        ("heartbeat", &heartbeat),
        ("injected", &injected),
    ] {
        let error = text(result);
        assert!(error.lines().count() >= 4, "{case}: {error}");
        assert!(error.len() > 200, "{case}: {error}");
        assert!(!error.is_ascii(), "{case}: {error}");
    }
    let error = text(&invalid);
    assert!(
        error.starts_with(
            "Invalid ingest.v1 envelope: 2 validation errors for IngestEnvelopeV1\nsource.channel\n  Input should be 'telegram_user_client' [type=literal_error, input_value='telegram', input_type=str]\n    For further information visit https://errors.pydantic.dev/2.11/v/literal_error\npayload.normalized_text\n"
        ),
        "{error}"
    );
    assert!(text(&missing).contains("sender\n  Field required [type=missing"));
}

#[tokio::test]
async fn a_missing_top_level_argument_is_a_tool_error() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    for key in ["schema_version", "source", "event", "sender", "payload"] {
        let envelope = with(|v| {
            v.as_object_mut().unwrap().remove(key);
        });
        let result = raw.call("ingest", &envelope).await;
        assert_eq!(result["isError"], true, "{key}: {result}");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(key), "{text}");
    }
    let stats = fake.stats();
    assert_eq!((stats.tool_errors, stats.rejected, stats.stored), (5, 0, 0));
}

#[tokio::test]
async fn optional_forms_the_contract_allows_are_accepted() {
    let fake = FakeSwitchboard::start(FakeOptions {
        channels: vec!["telegram".into()],
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let raw = Raw::open(&fake).await;
    let cases = [
        with(|v| v["source"]["channel"] = json!("telegram")),
        with(|v| {
            v["source"]["channel"] = json!("telegram");
            v["event"]["external_event_id"] = json!("8");
            v["event"]["observed_at"] = json!("2026-03-01T12:15:00+02:00");
            v["event"]["external_thread_id"] = Value::Null;
            v["sender"] = json!({"identity": "99", "display_name": null, "chat_type": "supergroup",
                                 "participant_count": 12});
            v["payload"]["normalized_text"] = json!("second\n[tg:-1001234:8]");
            v["payload"]["attachments"] = json!([]);
            v["control"] = json!({"idempotency_key": "tg:-1001234:8", "policy_tier": "passive",
                                  "ingestion_tier": "metadata", "trace_context": {}});
            v["payload"]["raw"] = Value::Null;
        }),
        with(|v| {
            v["source"]["channel"] = json!("telegram");
            v["event"]["external_event_id"] = json!("9");
            v["payload"]["normalized_text"] = json!("third\n[tg:-1001234:9]");
            v.as_object_mut().unwrap().remove("control");
        }),
    ];
    for envelope in cases {
        let result = raw.call("ingest", &envelope).await;
        let body = &result["structuredContent"];
        assert_eq!(body["status"], "accepted", "{result}");
        assert_eq!(body["duplicate"], false);
        let request_id = uuid::Uuid::parse_str(body["request_id"].as_str().unwrap()).unwrap();
        assert_eq!(request_id.get_version_num(), 7, "request ids are UUIDv7");
    }
    assert_eq!(fake.stats().stored, 3);
}

#[tokio::test]
async fn dedupe_by_key_is_scoped_by_channel_and_endpoint() {
    let fake = FakeSwitchboard::start(FakeOptions {
        content_hash_dedupe: false,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let raw = Raw::open(&fake).await;
    let first = raw.call("ingest", &valid()).await["structuredContent"].clone();
    let again = raw.call("ingest", &valid()).await["structuredContent"].clone();
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        again["request_id"], first["request_id"],
        "the original request id"
    );

    // Same key, other endpoint: a different slot.
    let other = with(|v| v["source"]["endpoint_identity"] = json!("telegram:user:43"));
    assert_eq!(
        raw.call("ingest", &other).await["structuredContent"]["duplicate"],
        false
    );

    // Without a key, the external event id dedupes (per endpoint).
    let keyless = |id: &str| {
        with(|v| {
            v.as_object_mut().unwrap().remove("control");
            v["event"]["external_event_id"] = json!(id);
        })
    };
    assert_eq!(
        raw.call("ingest", &keyless("70")).await["structuredContent"]["duplicate"],
        false
    );
    assert_eq!(
        raw.call("ingest", &keyless("70")).await["structuredContent"]["duplicate"],
        true
    );

    let stats = fake.stats();
    assert_eq!((stats.stored, stats.duplicates), (3, 2));
    assert!(
        fake.duplicates()
            .iter()
            .all(|d| d.reason == DuplicateReason::Key)
    );
    assert_eq!(
        fake.stored_twice(),
        2,
        "the other endpoint and the keyless envelope reuse raw.event_id e7"
    );
}

#[tokio::test]
async fn content_hash_quirk_swallows_equal_text_from_one_sender_in_one_hour_unless_off() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    let message = |id: &str, observed_at: &str| {
        with(|v| {
            v["event"]["external_event_id"] = json!(id);
            v["event"]["observed_at"] = json!(observed_at);
            v["control"]["idempotency_key"] = json!(format!("tg:-1001234:{id}"));
            v["payload"]["normalized_text"] = json!("ok");
            v["payload"]["raw"]["event_id"] = json!(format!("e{id}"));
        })
    };
    let first = raw
        .call("ingest", &message("1", "2026-03-01T10:00:01Z"))
        .await;
    let same_hour = raw
        .call("ingest", &message("2", "2026-03-01T10:59:59Z"))
        .await;
    assert_eq!(same_hour["structuredContent"]["duplicate"], true);
    assert_eq!(
        same_hour["structuredContent"]["request_id"],
        first["structuredContent"]["request_id"]
    );
    let next_hour = raw
        .call("ingest", &message("3", "2026-03-01T11:00:00Z"))
        .await;
    assert_eq!(next_hour["structuredContent"]["duplicate"], false);
    assert_eq!(fake.duplicates()[0].reason, DuplicateReason::ContentHash);

    fake.set_content_hash_dedupe(false);
    let quirk_off = raw
        .call("ingest", &message("4", "2026-03-01T10:30:00Z"))
        .await;
    assert_eq!(quirk_off["structuredContent"]["duplicate"], false);

    let stats = fake.stats();
    assert_eq!(
        (
            stats.stored,
            stats.duplicates,
            stats.content_hash_duplicates
        ),
        (3, 1, 1)
    );
    assert_eq!(fake.stored_twice(), 0);
}

fn heartbeat() -> Value {
    tgingest::switchboard::heartbeat(
        "telegram:user:42",
        uuid::Uuid::new_v4(),
        &tgingest::switchboard::HeartbeatCounters {
            messages_ingested: 3,
            ..Default::default()
        },
        60,
        tgingest::switchboard::ConnectorState::Healthy,
        None,
    )
}

#[tokio::test]
async fn heartbeats_are_validated_and_answered() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    let ok = raw.call("connector.heartbeat", &heartbeat()).await;
    assert_eq!(ok["isError"], false);
    assert_eq!(ok["structuredContent"]["status"], "accepted");
    assert!(ok["structuredContent"]["server_time"].is_string());

    let bad = |mutate: fn(&mut Value)| {
        let mut hb = heartbeat();
        mutate(&mut hb);
        hb
    };
    let invalid = [
        bad(|h| h["extra"] = json!(1)),
        bad(|h| h["connector"]["host"] = json!("a")),
        bad(|h| h["status"]["state"] = json!("sleepy")),
        bad(|h| h["status"]["uptime_s"] = json!(-1)),
        bad(|h| h["counters"]["bytes"] = json!(1)),
        bad(|h| h["connector"]["instance_id"] = json!("not-a-uuid")),
        bad(|h| h["sent_at"] = json!("yesterday")),
        bad(|h| h["checkpoint"] = json!({"cursor": "5", "offset": 1})),
    ];
    for hb in &invalid {
        let r = raw.call("connector.heartbeat", hb).await;
        assert_eq!(r["isError"], false, "{r}");
        assert_eq!(r["structuredContent"]["status"], "error", "{r}");
        assert!(
            r["structuredContent"]["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid connector.heartbeat.v1 envelope: ")
        );
    }
    let missing = bad(|h| {
        h.as_object_mut().unwrap().remove("counters");
    });
    assert_eq!(
        raw.call("connector.heartbeat", &missing).await["isError"],
        true
    );

    let with_optionals = bad(|h| {
        h["checkpoint"] = json!({"cursor": "pts:5", "updated_at": "2026-03-01T10:00:00Z"});
        h["capabilities"] = json!({"backfill": true});
    });
    let r = raw.call("connector.heartbeat", &with_optionals).await;
    assert_eq!(r["structuredContent"]["status"], "accepted", "{r}");

    let stats = fake.stats();
    assert_eq!(stats.heartbeats, 2);
    assert_eq!(stats.rejected, invalid.len() as u64);
    assert_eq!(fake.heartbeats().len(), 2);
}

#[tokio::test]
async fn health_answers_ok_and_tools_are_listed() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let resp = http()
        .get(format!("{}/health", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let raw = Raw::open(&fake).await;
    let tools = raw.rpc("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ingest", "connector.heartbeat"]);
    assert_eq!(raw.rpc("ping", json!({})).await["result"], json!({}));
}

#[tokio::test]
async fn streamable_http_enforces_sessions_and_headers() {
    let fake = FakeSwitchboard::start(FakeOptions {
        json_response: true,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let raw = Raw::open(&fake).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "ingest", "arguments": valid()}});

    // JSON replies when configured so.
    let resp = raw.post(&call).await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap()["result"]["structuredContent"]["status"],
        "accepted"
    );

    let post = |sid: Option<&str>, accept: &str| {
        let mut req = raw
            .http
            .post(&raw.url)
            .header("accept", accept.to_string())
            .json(&call);
        if let Some(sid) = sid {
            req = req.header("mcp-session-id", sid.to_string());
        }
        req.send()
    };
    let both = "application/json, text/event-stream";
    assert_eq!(
        post(None, both).await.unwrap().status(),
        400,
        "no session id"
    );
    assert_eq!(
        post(Some("feed"), both).await.unwrap().status(),
        404,
        "unknown session"
    );
    assert_eq!(
        post(Some(&raw.sid), "application/json")
            .await
            .unwrap()
            .status(),
        406
    );

    // A restart forgets sessions but keeps what was stored; same port.
    let port = fake.addr().port();
    fake.restart().await.unwrap();
    assert_eq!(fake.addr().port(), port);
    assert_eq!(post(Some(&raw.sid), both).await.unwrap().status(), 404);
    assert_eq!(fake.stats().stored, 1);
    let fresh = Raw::open(&fake).await;
    let dup = fresh.call("ingest", &valid()).await;
    assert_eq!(
        dup["structuredContent"]["duplicate"], true,
        "records survive the restart"
    );
}

#[tokio::test]
async fn legacy_sse_answers_on_the_stream() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let http = http();
    let resp = http.get(fake.sse_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    // Reads until the next complete event; returns (event, data).
    async fn next_event(
        stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
        buf: &mut String,
    ) -> (String, String) {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = "message".to_string();
                let mut data = None;
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = e.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(d.to_string());
                    }
                }
                if let Some(data) = data {
                    return (event, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("an event within 5 s")
                .expect("stream open")
                .unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let (event, endpoint) = next_event(&mut stream, &mut buf).await;
    assert_eq!(event, "endpoint");
    assert!(endpoint.starts_with("/messages/?session_id="), "{endpoint}");
    let post_url = format!("{}{}", fake.base_url(), endpoint);
    let post = |msg: Value| http.post(&post_url).json(&msg).send();

    let early = post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                            "params": {"name": "ingest", "arguments": valid()}}))
    .await
    .unwrap();
    assert_eq!(early.status(), 202);
    let (_, data) = next_event(&mut stream, &mut buf).await;
    let v: Value = serde_json::from_str(&data).unwrap();
    assert!(
        v["error"].is_object(),
        "a call before initialize is refused: {v}"
    );

    let init = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}),
    )
    .await
    .unwrap();
    assert_eq!(init.status(), 202);
    let (event, data) = next_event(&mut stream, &mut buf).await;
    assert_eq!(event, "message");
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (v["id"].clone(), v["result"]["protocolVersion"].clone()),
        (json!(2), json!("2024-11-05"))
    );
    let note = post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    assert_eq!(note.status(), 202);

    let call = post(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                           "params": {"name": "ingest", "arguments": valid()}}))
    .await
    .unwrap();
    assert_eq!(call.status(), 202);
    let (_, data) = next_event(&mut stream, &mut buf).await;
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["id"], 3);
    assert_eq!(v["result"]["structuredContent"]["status"], "accepted");
    assert_eq!(fake.stats().stored, 1);
    assert_eq!(fake.live_sessions(), 1);

    let unknown = http
        .post(format!("{}/messages/?session_id=feed", fake.base_url()))
        .json(&json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // Stop ends the stream; the session is gone.
    fake.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the SSE stream ends when the server stops");
    assert_eq!(fake.live_sessions(), 0);
    assert!(
        http.get(format!("{}/health", fake.base_url()))
            .send()
            .await
            .is_err(),
        "the port is closed while stopped"
    );
}

/// The oracle behind "never two calls with one key in flight" can fail: two sessions sending
/// one envelope at once into the racy dedupe (look up, a round trip, insert) are both stored,
/// and the fake names the key.
#[tokio::test]
async fn two_concurrent_calls_with_one_key_are_stored_twice_by_a_racy_dedupe_and_flagged() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    fake.set_faults(tgingest::switchboard::Faults {
        racy_dedupe: true,
        ..Default::default()
    });
    let (a, b) = (Raw::open(&fake).await, Raw::open(&fake).await);
    let env = valid();
    let (ra, rb) = tokio::join!(a.call("ingest", &env), b.call("ingest", &env));
    let stored = [ra, rb]
        .iter()
        .filter(|r| r["structuredContent"]["duplicate"] == false)
        .count();
    assert_eq!(
        stored, 2,
        "the race must be real for the oracle to mean anything"
    );
    assert_eq!(fake.overlapping_keys().len(), 1);
    // One after the other, the same fake answers the third a duplicate and flags nothing more.
    let rc = a.call("ingest", &env).await;
    assert_eq!(rc["structuredContent"]["duplicate"], true);
    assert_eq!(fake.overlapping_keys().len(), 1);
}

/// A batch as tgingest builds it: members 9 and 10, context 8.
fn batch_envelope() -> Value {
    use tgingest::event::{Chat, ChatKind};
    use tgingest::switchboard::batch::{Batch, BatchEntry, batch_envelope};
    let entry = |id: i64, is_new: bool| BatchEntry {
        event_id: format!("e{id}"),
        message_id: id.to_string(),
        sender_id: "99".into(),
        display_name: "Ann".into(),
        text: format!("text {id}"),
        sent_at_us: 1_772_360_000_000_000 + id * 1_000_000,
        is_new,
        reply_to: None,
    };
    let batch = Batch {
        account_id: "42".into(),
        chat: Chat {
            kind: ChatKind::Supergroup,
            id: "-1001234".into(),
            title: Some("Team".into()),
        },
        flushed_at_us: 1_772_360_100_000_000,
        entries: vec![entry(8, false), entry(9, true), entry(10, true)],
    };
    let cfg = tgingest::config::SwitchboardConfig {
        send_sender_details: true,
        ..Default::default()
    };
    batch_envelope(&batch, &cfg)
}

#[tokio::test]
async fn batches_are_validated_stored_once_and_their_members_recorded() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    let first = raw.call("ingest", &batch_envelope()).await;
    assert_eq!(first["structuredContent"]["status"], "accepted", "{first}");
    assert_eq!(first["structuredContent"]["duplicate"], false, "{first}");
    let again = raw.call("ingest", &batch_envelope()).await;
    assert_eq!(again["structuredContent"]["duplicate"], true, "{again}");
    assert_eq!(fake.batches_stored(), 1);
    let members = fake.batch_members();
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members["telegram:user:42|-1001234|9"], 1);
    assert!(fake.stored_event_ids().contains("e10"));
    assert!(
        !fake.stored_event_ids().contains("e8"),
        "context is not a member"
    );
    assert_eq!(fake.stored_twice(), 0);
}

#[tokio::test]
async fn a_malformed_batch_is_refused_with_a_multi_line_report_naming_every_problem() {
    let fake = FakeSwitchboard::start_default().await.unwrap();
    let raw = Raw::open(&fake).await;
    let mut bad = batch_envelope();
    let history = &mut bad["payload"]["raw"]["conversation_history"];
    history[0]["colour"] = json!("red");
    history[1]["is_new"] = json!("yes");
    history[2]["message_id"] = json!("8");
    bad["sender"]["participants"]["99"] = json!(7);
    let result = raw.call("ingest", &bad).await;
    for path in [
        "payload.raw.conversation_history.0.colour",
        "payload.raw.conversation_history.1.is_new",
        "payload.raw.conversation_history.2.message_id",
        "sender.participants.99",
    ] {
        assert_invalid(&result, path, "malformed batch");
    }
    let error = result["structuredContent"]["error"].as_str().unwrap();
    assert!(
        error.contains("validation errors for IngestEnvelopeV1\n"),
        "{error}"
    );
    assert!(error.lines().count() >= 12, "{error}");
    assert!(error.contains("For further information visit"), "{error}");

    let mut unknown_type = batch_envelope();
    unknown_type["control"]["payload_type"] = json!("conversation");
    let result = raw.call("ingest", &unknown_type).await;
    assert_invalid(&result, "control.payload_type", "unknown payload type");

    // Members and ids must agree: a key naming other messages is refused.
    let mut wrong = batch_envelope();
    wrong["control"]["idempotency_key"] = json!("tg_batch:-1001234:1:2");
    let result = raw.call("ingest", &wrong).await;
    assert_invalid(
        &result,
        "control.idempotency_key",
        "key not naming the members",
    );

    // A server older than batches refuses the batch keys as unknown.
    let old = FakeSwitchboard::start(FakeOptions {
        conversation_batches: false,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let raw = Raw::open(&old).await;
    let result = raw.call("ingest", &batch_envelope()).await;
    for path in [
        "control.payload_type",
        "sender.participants",
        "sender.owner_sender_id",
    ] {
        assert_invalid(&result, path, "older server");
    }
    assert_eq!(fake.stats().stored + old.stats().stored, 0);
}
