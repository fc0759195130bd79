//! tgingest's envelope mapping and MCP client against the fake Switchboard, over real loopback
//! HTTP, on both transports.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tgingest::config::{Dur, SwitchboardConfig};
use tgingest::event::{
    Chat, ChatKind, Event, EventKind, Media, MediaKind, SCHEMA_VERSION, Sender, Source, event_id,
    marked_chat_id,
};
use tgingest::switchboard::{
    CallError, ConnectorState, FakeOptions, FakeSwitchboard, Faults, HeartbeatCounters,
    IngestReply, McpClient, Transport, envelope, heartbeat,
};

/// 2026-03-01T10:00:00Z, in unix microseconds: every test message is observed in this hour.
const HOUR: i64 = 1_772_359_200_000_000;

/// A valid event: `account` 42 sees `message_id` in a chat of `kind`.
fn event(
    kind: ChatKind,
    bare_chat: i64,
    message_id: u32,
    sender: Option<&str>,
    text: &str,
) -> Event {
    let chat = marked_chat_id(kind, bare_chat);
    let e = Event {
        schema_version: SCHEMA_VERSION,
        event_id: event_id("42", &chat, &message_id.to_string(), EventKind::Message, 0),
        account_id: "42".into(),
        kind: EventKind::Message,
        chat: Chat {
            kind,
            id: chat,
            title: (kind != ChatKind::Private).then(|| "Team".to_string()),
        },
        sender: sender.map(|id| Sender {
            id: id.into(),
            display_name: Some("Ann".into()),
            is_self: false,
        }),
        message_id: message_id.to_string(),
        topic_id: None,
        reply_to: None,
        sent_at_us: HOUR + 1_000_000,
        edit_version: 0,
        text: text.into(),
        media: None,
        source: Source::Live,
        observed_at_us: HOUR + 2_000_123,
    };
    e.validate().unwrap();
    e
}

fn edit_of(original: &Event, edit_version: u64, text: &str) -> Event {
    let mut e = original.clone();
    e.kind = EventKind::Edit;
    e.edit_version = edit_version;
    e.text = text.into();
    e.event_id = e.expected_id();
    e.validate().unwrap();
    e
}

fn config(url: String) -> SwitchboardConfig {
    SwitchboardConfig {
        url,
        request_timeout: Dur(Duration::from_secs(5)),
        ..SwitchboardConfig::default()
    }
}

/// The three ways to reach the fake: streamable HTTP with SSE bodies, with JSON bodies, and
/// legacy SSE.
#[derive(Debug, Clone, Copy)]
enum Via {
    McpSse,
    McpJson,
    LegacySse,
}

const ALL: [Via; 3] = [Via::McpSse, Via::McpJson, Via::LegacySse];

async fn setup_with(
    via: Via,
    opts: FakeOptions,
    tweak: impl FnOnce(&mut SwitchboardConfig),
) -> (FakeSwitchboard, McpClient, SwitchboardConfig) {
    let fake = FakeSwitchboard::start(FakeOptions {
        json_response: matches!(via, Via::McpJson),
        ..opts
    })
    .await
    .unwrap();
    let url = match via {
        Via::LegacySse => fake.sse_url(),
        _ => fake.mcp_url(),
    };
    let mut cfg = config(url);
    tweak(&mut cfg);
    let client = McpClient::new(&cfg).unwrap();
    let expected = match via {
        Via::LegacySse => Transport::LegacySse,
        _ => Transport::StreamableHttp,
    };
    assert_eq!(client.transport(), expected);
    (fake, client, cfg)
}

async fn setup(via: Via) -> (FakeSwitchboard, McpClient, SwitchboardConfig) {
    setup_with(via, FakeOptions::default(), |_| {}).await
}

fn accepted(reply: Result<IngestReply, CallError>) -> (String, bool) {
    match reply {
        Ok(IngestReply::Accepted {
            request_id,
            duplicate,
        }) => (request_id, duplicate),
        other => panic!("expected accepted, got {other:?}"),
    }
}

/// One event of every shape tgingest produces.
fn every_kind() -> Vec<Event> {
    let private = event(ChatKind::Private, 99, 1, Some("99"), "hi");
    let group = event(ChatKind::Group, 500, 2, Some("99"), "in a group");
    let supergroup = event(ChatKind::Supergroup, 600, 3, Some("98"), "in a supergroup");
    let channel_post = event(ChatKind::Channel, 700, 4, None, "a channel post");
    let mut topic = event(ChatKind::Supergroup, 600, 5, Some("98"), "in a topic");
    topic.topic_id = Some("3".into());
    topic.reply_to = Some("3".into());
    let edit = edit_of(&private, 1_772_359_300, "hi, edited");
    let mut delete = event(ChatKind::Supergroup, 600, 3, None, "");
    delete.kind = EventKind::Delete;
    delete.event_id = delete.expected_id();
    let mut photo = event(ChatKind::Group, 500, 6, Some("99"), "");
    photo.media = Some(Media {
        kind: MediaKind::Photo,
        mime_type: Some("image/jpeg".into()),
        size_bytes: Some(12_345),
        file_name: None,
    });
    let mut service = event(ChatKind::Group, 500, 7, Some("99"), "");
    service.kind = EventKind::Service;
    service.event_id = service.expected_id();
    let mut outgoing = event(ChatKind::Private, 99, 8, Some("42"), "sent by me");
    outgoing.sender.as_mut().unwrap().is_self = true;
    outgoing.source = Source::Backfill;
    vec![
        private,
        group,
        supergroup,
        channel_post,
        topic,
        edit,
        delete,
        photo,
        service,
        outgoing,
    ]
}

#[tokio::test]
async fn every_event_kind_maps_to_an_envelope_the_fake_accepts() {
    for details in [false, true] {
        let (fake, client, cfg) = setup_with(Via::McpSse, FakeOptions::default(), |c| {
            c.send_sender_details = details
        })
        .await;
        let events = every_kind();
        for e in &events {
            let reply = client.ingest(&envelope(e, &cfg)).await;
            let (_, duplicate) = accepted(reply);
            assert!(!duplicate, "{:?} {:?}", e.kind, e.chat.kind);
        }
        assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
        let stored = fake.accepted();
        assert_eq!(stored.len(), events.len());
        assert_eq!(fake.stored_twice(), 0);

        // What arrived is what was sent, field for field.
        for (e, a) in events.iter().zip(&stored) {
            let env = &a.envelope;
            assert_eq!(env["source"]["endpoint_identity"], "telegram:user:42");
            assert_eq!(env["event"]["external_event_id"], e.message_id.as_str());
            assert_eq!(env["event"]["external_thread_id"], e.chat.id.as_str());
            assert_eq!(env["payload"]["raw"]["event_id"], e.event_id.as_str());
            assert_eq!(env["payload"]["raw"]["kind"], e.kind.as_str());
            assert_eq!(env["sender"]["chat_type"].is_string(), details);
        }
        let channel_post = &stored[3].envelope;
        assert_eq!(
            channel_post["sender"]["identity"], "-1000000000700",
            "a post without a sender is attributed to the channel"
        );
        assert_eq!(stored[4].envelope["payload"]["raw"]["topic_id"], "3");
        assert_eq!(
            stored[5].envelope["control"]["idempotency_key"],
            "tg:99:1:edit:1772359300"
        );
        assert_eq!(
            stored[6].envelope["control"]["idempotency_key"],
            "tg:-1000000000600:3:delete"
        );
        let photo_text = stored[7].envelope["payload"]["normalized_text"]
            .as_str()
            .unwrap();
        assert!(photo_text.starts_with("[photo]"), "{photo_text:?}");
        assert_eq!(
            stored[7].envelope["payload"]["raw"]["media"]["kind"],
            "photo"
        );
    }
}

#[tokio::test]
async fn sender_details_are_rejected_by_an_older_server_and_omitted_by_default() {
    let older = FakeOptions {
        sender_details: false,
        ..FakeOptions::default()
    };
    let (fake, client, cfg) =
        setup_with(Via::McpSse, older.clone(), |c| c.send_sender_details = true).await;
    let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
    match client.ingest(&envelope(&e, &cfg)).await {
        Ok(IngestReply::Rejected { error }) => {
            assert!(error.contains("sender.display_name"), "{error}")
        }
        other => panic!("expected a permanent rejection, got {other:?}"),
    }
    drop((fake, client));
    let (fake, client, cfg) = setup_with(Via::McpSse, older, |_| {}).await;
    accepted(client.ingest(&envelope(&e, &cfg)).await);
    assert_eq!(fake.stats().stored, 1);
}

#[tokio::test]
async fn an_invalid_envelope_is_a_permanent_rejection() {
    let (fake, client, cfg) = setup(Via::McpSse).await;
    let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
    let mut env = envelope(&e, &cfg);
    env["source"]["channel"] = Value::from("telegram");
    let reply = client.ingest(&env).await.unwrap();
    assert!(
        matches!(&reply, IngestReply::Rejected { error } if error.starts_with("Invalid ingest.v1 envelope")),
        "{reply:?}"
    );
    assert_eq!(fake.stats().rejected, 1);
}

#[tokio::test]
async fn two_messages_with_equal_text_from_one_sender_in_one_hour_are_both_stored() {
    let (fake, client, cfg) = setup(Via::McpSse).await;
    assert!(fake.faults() == Faults::default());
    // Same sender, same text, same hour, different chats and messages.
    let a = event(ChatKind::Group, 500, 10, Some("99"), "ok");
    let b = event(ChatKind::Supergroup, 600, 11, Some("99"), "ok");
    let c = event(ChatKind::Group, 500, 12, Some("99"), "ok");
    for e in [&a, &b, &c] {
        let (_, duplicate) = accepted(client.ingest(&envelope(e, &cfg)).await);
        assert!(!duplicate);
    }
    let stats = fake.stats();
    assert_eq!((stats.stored, stats.content_hash_duplicates), (3, 0));
}

#[tokio::test]
async fn a_resent_event_is_a_duplicate_with_the_original_request_id() {
    for via in ALL {
        let (fake, client, cfg) = setup(via).await;
        let e = event(ChatKind::Private, 99, 1, Some("99"), "hello");
        let (first, dup1) = accepted(client.ingest(&envelope(&e, &cfg)).await);
        // A re-send after a crash is built again from the same event: observed later.
        let mut again = e.clone();
        again.observed_at_us += 3_600_000_000;
        let (second, dup2) = accepted(client.ingest(&envelope(&again, &cfg)).await);
        assert_eq!((dup1, dup2), (false, true), "{via:?}");
        assert_eq!(first, second);
        assert_eq!(fake.stats().stored, 1);
        assert_eq!(fake.stored_twice(), 0);
    }
}

#[tokio::test]
async fn edits_are_stored_separately_from_the_original() {
    let (fake, client, cfg) = setup(Via::McpSse).await;
    let original = event(ChatKind::Supergroup, 600, 1, Some("99"), "hello");
    let edit1 = edit_of(&original, 1_772_359_300, "hello!");
    let edit2 = edit_of(&original, 1_772_359_400, "hello!"); // same text, new edit
    for e in [&original, &edit1, &edit2] {
        let (_, duplicate) = accepted(client.ingest(&envelope(e, &cfg)).await);
        assert!(!duplicate, "edit version {}", e.edit_version);
    }
    let (_, duplicate) = accepted(client.ingest(&envelope(&edit1, &cfg)).await);
    assert!(duplicate, "the same edit again is a duplicate");
    assert_eq!(fake.stats().stored, 3);
    assert_eq!(fake.stored_twice(), 0);
}

#[tokio::test]
async fn the_client_re_initializes_after_a_server_restart() {
    for via in ALL {
        let (fake, client, cfg) = setup(via).await;
        let e1 = event(ChatKind::Group, 500, 1, Some("99"), "before");
        accepted(client.ingest(&envelope(&e1, &cfg)).await);
        assert_eq!(fake.stats().sessions_opened, 1);

        fake.restart().await.unwrap();
        let e2 = event(ChatKind::Group, 500, 2, Some("99"), "after");
        let (_, duplicate) = accepted(client.ingest(&envelope(&e2, &cfg)).await);
        assert!(!duplicate, "{via:?}");
        assert_eq!(fake.stats().sessions_opened, 2, "{via:?}: one new session");

        // While stopped: a transient transport error; after the restart, calls succeed again.
        fake.stop().await;
        let e3 = event(ChatKind::Group, 500, 3, Some("99"), "while down");
        let err = client.ingest(&envelope(&e3, &cfg)).await.unwrap_err();
        assert!(matches!(err, CallError::Transport(_)), "{via:?}: {err:?}");
        assert!(err.is_transient());
        fake.restart().await.unwrap();
        accepted(client.ingest(&envelope(&e3, &cfg)).await);
        assert_eq!(fake.stats().stored, 3);
        assert_eq!(fake.stored_twice(), 0);
    }
}

#[tokio::test]
async fn an_injected_is_error_is_a_transient_tool_error() {
    for via in ALL {
        let (fake, client, cfg) = setup(via).await;
        fake.fail_next(1);
        let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
        let err = client.ingest(&envelope(&e, &cfg)).await.unwrap_err();
        assert!(matches!(err, CallError::ToolError(_)), "{via:?}: {err:?}");
        assert!(err.is_transient());
        let (_, duplicate) = accepted(client.ingest(&envelope(&e, &cfg)).await);
        assert!(!duplicate, "the failed call stored nothing");
        assert_eq!(fake.stats().tool_errors, 1);
    }
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_a_timeout() {
    for via in ALL {
        let (fake, client, cfg) = setup_with(via, FakeOptions::default(), |c| {
            c.request_timeout = Dur(Duration::from_millis(300))
        })
        .await;
        let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
        accepted(client.ingest(&envelope(&e, &cfg)).await); // handshake done, no latency yet
        fake.set_latency(Duration::from_secs(2));
        let e2 = event(ChatKind::Group, 500, 2, Some("99"), "slow");
        let err = client.ingest(&envelope(&e2, &cfg)).await.unwrap_err();
        assert_eq!(err, CallError::Timeout, "{via:?}");
        assert!(err.is_transient());
        fake.set_latency(Duration::from_millis(50));
        accepted(client.ingest(&envelope(&e2, &cfg)).await);
    }
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error() {
    for via in ALL {
        let (fake, client, cfg) = setup(via).await;
        let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
        fake.drop_next(1);
        let err = client.ingest(&envelope(&e, &cfg)).await.unwrap_err();
        assert!(matches!(err, CallError::Transport(_)), "{via:?}: {err:?}");
        assert_eq!(fake.stats().stored, 0, "cut before it took effect");

        // Cut after storing: the reply is lost, the resend is a duplicate, nothing stored twice.
        fake.set_faults(Faults {
            drop_count: 1,
            drop_after_processing: true,
            ..Faults::default()
        });
        let err = client.ingest(&envelope(&e, &cfg)).await.unwrap_err();
        assert!(matches!(err, CallError::Transport(_)), "{via:?}: {err:?}");
        let (_, duplicate) = accepted(client.ingest(&envelope(&e, &cfg)).await);
        assert!(duplicate, "{via:?}");
        let stats = fake.stats();
        assert_eq!((stats.stored, stats.dropped), (1, 2), "{via:?}");
        assert_eq!(fake.stored_twice(), 0);
    }
}

#[tokio::test]
async fn concurrent_calls_over_one_client_all_succeed() {
    const N: u32 = 64;
    for via in ALL {
        let (fake, client, cfg) = setup(via).await;
        fake.set_latency(Duration::from_millis(5));
        let calls = (0..N).map(|i| {
            let client = client.clone();
            let env = envelope(
                &event(ChatKind::Group, 500, i + 1, Some("99"), "same text"),
                &cfg,
            );
            tokio::spawn(async move { client.ingest(&env).await })
        });
        let mut ids = HashSet::new();
        for call in futures::future::join_all(calls).await {
            let (request_id, duplicate) = accepted(call.unwrap());
            assert!(!duplicate);
            ids.insert(request_id);
        }
        assert_eq!(ids.len(), N as usize, "{via:?}");
        let stats = fake.stats();
        assert_eq!(stats.stored, N as u64);
        assert_eq!(stats.sessions_opened, 1, "{via:?}: one shared handshake");
    }
}

#[tokio::test]
async fn heartbeats_reach_the_fake() {
    for via in ALL {
        let (fake, client, _cfg) = setup(via).await;
        let hb = heartbeat(
            "telegram:user:42",
            uuid::Uuid::new_v4(),
            &HeartbeatCounters {
                messages_ingested: 10,
                dedupe_accepted: 1,
                ..HeartbeatCounters::default()
            },
            42,
            ConnectorState::Degraded,
            Some("flood wait"),
        );
        client.heartbeat(&hb).await.unwrap();
        let mut bad = hb.clone();
        bad["status"]["state"] = Value::from("asleep");
        let err = client.heartbeat(&bad).await.unwrap_err();
        assert!(matches!(err, CallError::Protocol(_)), "{err:?}");
        assert_eq!(fake.heartbeats(), vec![hb]);
    }
}

#[tokio::test]
async fn a_bearer_token_is_sent_and_harmless() {
    let (fake, client, cfg) = setup_with(Via::LegacySse, FakeOptions::default(), |c| {
        c.auth_token = "s3cret".into()
    })
    .await;
    let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
    accepted(client.ingest(&envelope(&e, &cfg)).await);
    assert!(!format!("{client:?}").contains("s3cret"));
    assert_eq!(fake.stats().stored, 1);
}

#[test]
fn outcomes_are_counted_under_the_butlers_metric_names() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let (fake, client, cfg) = setup(Via::McpSse).await;
            let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
            accepted(client.ingest(&envelope(&e, &cfg)).await);
            accepted(client.ingest(&envelope(&e, &cfg)).await);
            let mut bad = envelope(&e, &cfg);
            bad["extra"] = Value::from(1);
            client.ingest(&bad).await.unwrap();
            fake.fail_next(1);
            client.ingest(&envelope(&e, &cfg)).await.unwrap_err();
        })
    });
    let mut submissions = std::collections::BTreeMap::new();
    let mut latencies = 0;
    let mut errors = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_string())
                .unwrap_or_default()
        };
        match (key.name(), value) {
            ("connector_ingest_submissions_total", DebugValue::Counter(n)) => {
                submissions.insert(label("status"), n);
            }
            ("connector_ingest_latency_seconds", DebugValue::Histogram(v)) => latencies += v.len(),
            ("connector_errors_total", DebugValue::Counter(n)) => {
                errors.insert(label("kind"), n);
            }
            _ => {}
        }
    }
    let expected: std::collections::BTreeMap<String, u64> = [
        ("accepted".to_string(), 1),
        ("duplicate".to_string(), 1),
        ("rejected".to_string(), 1),
        ("error".to_string(), 1),
    ]
    .into();
    assert_eq!(submissions, expected);
    assert_eq!(latencies, 4);
    assert_eq!(errors.get("tool_error"), Some(&1));
}

#[tokio::test]
async fn a_call_whose_sse_stream_is_lost_is_resent_on_a_new_session() {
    let (fake, client, cfg) = setup(Via::LegacySse).await;
    let e1 = event(ChatKind::Group, 500, 1, Some("99"), "first");
    accepted(client.ingest(&envelope(&e1, &cfg)).await);
    // Long enough that only the restart can end the first attempt (the wait below is short).
    fake.set_latency(Duration::from_secs(2));
    let e2 = event(ChatKind::Group, 500, 2, Some("99"), "in flight");
    let env = envelope(&e2, &cfg);
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ingest(&env).await }
    });
    // In flight: the server has the call and is holding it (the latency) when it restarts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.stats().calls_received < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.restart().await.unwrap();
    fake.set_latency(Duration::ZERO);
    let (_, duplicate) = accepted(call.await.unwrap());
    assert!(!duplicate, "the first attempt never took effect");
    let stats = fake.stats();
    assert_eq!(
        stats.calls_cut_by_stop, 1,
        "the restart cut the call while the server held it"
    );
    assert_eq!(
        (stats.calls_received, stats.stored, stats.sessions_opened),
        (3, 2, 2),
        "the cut call was sent again, on a new session"
    );
}

#[tokio::test]
async fn a_handshake_that_hangs_times_out_and_the_next_call_gets_through() {
    for via in ALL {
        let (fake, client, cfg) = setup_with(via, FakeOptions::default(), |c| {
            c.request_timeout = Dur(Duration::from_millis(500))
        })
        .await;
        fake.set_faults(Faults {
            hang_initialize_count: 1,
            ..Faults::default()
        });
        let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
        let err = client.ingest(&envelope(&e, &cfg)).await.unwrap_err();
        assert_eq!(err, CallError::Timeout, "{via:?}");
        assert_eq!(fake.stats().hung_initializes, 1, "{via:?}");
        let (_, duplicate) = accepted(client.ingest(&envelope(&e, &cfg)).await);
        assert!(
            !duplicate,
            "{via:?}: nothing was stored by the hung attempt"
        );
        assert_eq!(fake.stats().stored, 1, "{via:?}");
    }
}

#[tokio::test]
async fn a_reply_cut_half_way_is_a_transport_error_and_the_resend_a_duplicate() {
    for via in [Via::McpSse, Via::McpJson] {
        let (fake, client, cfg) = setup(via).await;
        let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
        accepted(client.ingest(&envelope(&e, &cfg)).await);
        fake.set_faults(Faults {
            truncate_count: 1,
            ..Faults::default()
        });
        let e2 = event(ChatKind::Group, 500, 2, Some("99"), "cut short");
        let err = client.ingest(&envelope(&e2, &cfg)).await.unwrap_err();
        assert!(
            matches!(err, CallError::Transport(_) | CallError::Protocol(_)),
            "{via:?}: {err:?}"
        );
        assert_eq!(fake.stats().truncated, 1, "{via:?}");
        let (_, duplicate) = accepted(client.ingest(&envelope(&e2, &cfg)).await);
        assert!(duplicate, "{via:?}: the cut call had been stored");
        assert_eq!(fake.stored_twice(), 0);
    }
}

#[tokio::test]
async fn a_proxy_in_front_is_told_apart_413_is_permanent_429_says_when_502_is_transient() {
    for via in ALL {
        let (fake, client, cfg) = setup(via).await;
        let e = event(ChatKind::Group, 500, 1, Some("99"), "hello");
        accepted(client.ingest(&envelope(&e, &cfg)).await); // session open
        let answer = |status: u16| {
            fake.set_faults(Faults {
                proxy_status: status,
                proxy_count: 1,
                ..Faults::default()
            });
            let env = envelope(&e, &cfg);
            let client = client.clone();
            async move { client.ingest(&env).await.unwrap_err() }
        };
        let err = answer(413).await;
        assert!(matches!(err, CallError::TooLarge(_)), "{via:?}: {err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("413"), "{err}");
        match answer(429).await {
            CallError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)), "{via:?}")
            }
            other => panic!("{via:?}: 429 gave {other:?}"),
        }
        let err = answer(502).await;
        assert!(matches!(err, CallError::Transport(_)), "{via:?}: {err:?}");
        assert!(err.is_transient());
        assert_eq!(fake.stats().proxy_answers, 3);
        let (_, duplicate) = accepted(client.ingest(&envelope(&e, &cfg)).await);
        assert!(
            duplicate,
            "{via:?}: nothing the proxy answered reached the server"
        );
        assert_eq!(fake.stats().stored, 1);
    }
}
