//! The simulated Telegram: a deterministic world (same seed, same events; any position on its
//! own), events that follow Telegram's rules, ground truth without duplicates, and a gateway that
//! paces, ends, resumes, commits, backfills and fails on command.
//!
//! Pacing is measured on tokio's paused clock, never the wall clock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tgingest::config::ConfigError;
use tgingest::event::{ChatKind, Event, EventKind, Source, TELEGRAM_SERVICE_CHAT};
use tgingest::telegram::gateway::{Cursor, Gateway, GatewayError, GatewayFactory, SourceUpdate};
use tgingest::telegram::simulated::{
    CATCH_UP_POSITIONS, ChatRole, Fault, FaultCall, PiiKind, PositionKind, SimulatedFactory,
    SimulatedGateway, SimulatedWorld, SimulatorConfig, SimulatorFaults, iban_mod97, luhn_valid,
};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Allocation accounting for the "idle accounts are cheap" test: live bytes per thread, so tests
// running in parallel on other threads do not disturb the measurement.

struct Counting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------

fn config(seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        accounts: 3,
        rate: 10.0,
        seed,
        ..SimulatorConfig::default()
    }
}

fn world(cfg: SimulatorConfig) -> Arc<SimulatedWorld> {
    Arc::new(SimulatedWorld::new(cfg).expect("valid simulator config"))
}

/// The event without what only the moment of emission decides (source, observed_at_us).
fn content(e: &Event) -> Event {
    let mut e = e.clone();
    e.source = Source::Live;
    e.observed_at_us = 0;
    e
}

fn contents(events: &[Event]) -> Vec<Event> {
    events.iter().map(content).collect()
}

/// Two blocks of the layout: every slot kind appears, including deletions (block 1 onward).
const MODEST_RUN: u64 = 2048;

async fn started(
    factory: &SimulatedFactory,
    account: &str,
    from: Option<&str>,
) -> Box<dyn Gateway> {
    let mut g = factory.create(account);
    g.connect().await.expect("connect");
    g.catch_up(from.map(|c| Cursor(c.to_string())))
        .await
        .expect("catch_up");
    g
}

async fn next(g: &mut Box<dyn Gateway>) -> SourceUpdate {
    g.next_update()
        .await
        .expect("next_update")
        .expect("stream has not ended")
}

// ---------------------------------------------------------------------------------------------
// Determinism

#[test]
fn same_seed_gives_identical_events_and_another_seed_different_ones() {
    let (a, b, other) = (world(config(7)), world(config(7)), world(config(8)));
    let mut differing = 0;
    for account in 0..3 {
        for n in 0..600 {
            let pa = a.event_at(account, n);
            assert_eq!(pa, b.event_at(account, n), "account {account} position {n}");
            if pa.events != other.event_at(account, n).events {
                differing += 1;
            }
        }
    }
    assert!(
        differing > 1700,
        "only {differing} of 1800 positions differ between seeds"
    );
}

#[test]
fn a_position_is_the_same_whatever_was_generated_before() {
    let fresh = world(config(3));
    let probe = [4_999, 5_000, 77_777, 1_000_001];
    let alone: Vec<_> = probe.iter().map(|&n| fresh.event_at(1, n)).collect();

    let replayed = world(config(3));
    for n in 0..5_001 {
        let _ = replayed.event_at(1, n);
    }
    let after: Vec<_> = probe
        .iter()
        .rev()
        .map(|&n| replayed.event_at(1, n))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(alone, after);
}

// ---------------------------------------------------------------------------------------------
// Content

#[test]
fn every_generated_event_validates_and_belongs_to_its_account() {
    let w = world(config(11));
    for account in 0..3 {
        let id = w.account_id(account);
        assert_eq!(w.account_index(&id), Some(account));
        for n in 0..MODEST_RUN {
            for e in w.event_at(account, n).events {
                e.validate()
                    .unwrap_or_else(|err| panic!("position {n}: {err}: {e:?}"));
                assert_eq!(e.account_id, id);
                if let Some(s) = &e.sender {
                    assert_eq!(s.is_self, s.id == id, "is_self marks exactly the account");
                }
            }
        }
    }
    assert_eq!(w.account_index("1000003"), None, "only 3 accounts");
    assert_eq!(w.account_index("999999"), None);
    assert_eq!(w.account_index("abc"), None);
}

#[test]
fn a_modest_run_shows_every_kind_of_chat_event_and_pii() {
    let w = world(config(5));
    let mut chat_kinds = HashSet::new();
    let mut roles = HashSet::new();
    let mut event_kinds = HashSet::new();
    let mut pii = HashSet::new();
    let seen = |what: &'static str, tally: &mut HashMap<&'static str, u32>| {
        *tally.entry(what).or_default() += 1;
    };
    let mut tally = HashMap::new();
    let chats: HashMap<String, ChatRole> = w
        .chats(0)
        .into_iter()
        .map(|c| (c.chat.id, c.role))
        .collect();
    for n in 0..MODEST_RUN {
        let p = w.event_at(0, n);
        match p.kind {
            PositionKind::Duplicate { .. } => seen("duplicate", &mut tally),
            PositionKind::Quiet => seen("quiet", &mut tally),
            PositionKind::Delete { ref of } if of.len() == 2 => seen("multi-delete", &mut tally),
            _ => {}
        }
        if let Some(x) = &p.pii {
            pii.insert(x.kind);
        }
        for e in &p.events {
            chat_kinds.insert(e.chat.kind);
            roles.insert(chats[&e.chat.id]);
            event_kinds.insert(e.kind);
            if e.media.is_some() {
                seen("media", &mut tally);
                if e.text.is_empty() {
                    seen("media without caption", &mut tally);
                } else {
                    seen("media with caption", &mut tally);
                }
            }
            if e.topic_id.is_some() {
                seen("forum topic", &mut tally);
            }
            if e.reply_to.is_some() {
                seen("reply", &mut tally);
            }
            if e.chat.id == TELEGRAM_SERVICE_CHAT {
                seen("777000", &mut tally);
            }
            if e.sender.as_ref().is_some_and(|s| s.is_self) {
                seen("outgoing", &mut tally);
            }
            if e.chat.kind == ChatKind::Channel && e.kind == EventKind::Message {
                assert!(e.sender.is_none(), "broadcast posts have no sender");
                seen("channel post", &mut tally);
            }
        }
    }
    assert_eq!(chat_kinds.len(), ChatKind::ALL.len(), "{chat_kinds:?}");
    assert_eq!(roles.len(), 6, "{roles:?}");
    assert_eq!(event_kinds.len(), 4, "{event_kinds:?}");
    assert_eq!(pii.len(), 6, "{pii:?}");
    for what in [
        "duplicate",
        "quiet",
        "multi-delete",
        "media",
        "media without caption",
        "media with caption",
        "forum topic",
        "reply",
        "777000",
        "outgoing",
        "channel post",
    ] {
        assert!(
            tally.get(what).is_some_and(|&c| c > 0),
            "no {what}: {tally:?}"
        );
    }
}

#[test]
fn duplicates_repeat_an_earlier_event_id_and_expected_leaves_them_out() {
    let w = world(config(9));
    let upto = 3 * 1024;
    let mut seen = HashSet::new();
    let mut unique_events = 0;
    let mut duplicates = 0;
    for n in 0..upto {
        let p = w.event_at(2, n);
        if let PositionKind::Duplicate { of } = p.kind {
            assert!(of < n);
            assert_eq!(p.events, w.event_at(2, of).events, "identical re-delivery");
            for e in &p.events {
                assert!(seen.contains(&e.event_id), "re-delivery of an unseen event");
            }
            duplicates += 1;
        } else {
            for e in &p.events {
                assert!(
                    seen.insert(e.event_id.clone()),
                    "position {n} repeats an id"
                );
                unique_events += 1;
            }
        }
    }
    assert!(duplicates > 0);
    let expected: Vec<Event> = w.expected(2, upto).collect();
    assert_eq!(expected.len(), unique_events);
    let ids: HashSet<&str> = expected.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), expected.len(), "expected() holds no event twice");
}

#[test]
fn expected_has_no_duplicate_event_ids_across_accounts_and_blocks() {
    let w = world(SimulatorConfig {
        duplicate_rate: 0.1,
        edit_rate: 0.15,
        delete_rate: 0.15,
        service_rate: 0.1,
        chats_per_account: 64,
        ..config(13)
    });
    let mut ids = HashSet::new();
    for account in 0..3 {
        for e in w.expected(account, 4 * 1024) {
            assert!(ids.insert(e.event_id.clone()), "duplicate {e:?}");
        }
    }
}

#[test]
fn message_ids_follow_telegrams_counters() {
    let w = world(SimulatorConfig {
        chats_per_account: 20,
        ..config(21)
    });
    let mut account_counter = Vec::new();
    let mut per_chat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in 0..4 * 1024 {
        let p = w.event_at(0, n);
        if !matches!(p.kind, PositionKind::Message | PositionKind::Service) {
            continue;
        }
        for e in p.events {
            let id: u64 = e.message_id.parse().expect("numeric id");
            if matches!(e.chat.kind, ChatKind::Private | ChatKind::Group) {
                account_counter.push(id);
            }
            per_chat.entry(e.chat.id).or_default().push(id);
        }
    }
    // One counter for all private chats and basic groups of the account: +1 per message.
    assert!(account_counter.windows(2).all(|p| p[1] == p[0] + 1));
    let chats = w.chats(0);
    let mut shared_counter_gaps = false;
    for c in &chats {
        let ids = &per_chat[&c.chat.id];
        assert!(
            ids.windows(2).all(|p| p[1] > p[0]),
            "{:?} ids increase",
            c.role
        );
        if c.role.uses_account_counter() {
            shared_counter_gaps |= ids.windows(2).any(|p| p[1] > p[0] + 1);
        } else {
            // A channel's own counter: +1 per message of that channel.
            assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{:?}", c.role);
        }
    }
    assert!(
        shared_counter_gaps,
        "private chats and groups share one counter"
    );
    let channel_space = chats
        .iter()
        .filter(|c| !c.role.uses_account_counter())
        .count();
    assert!(channel_space >= 3);
}

/// A message as first created, for checking what later refers to it.
struct Created {
    position: u64,
    sender: Option<String>,
    topic: Option<String>,
    sent_at_us: i64,
}

#[test]
fn edits_deletes_and_replies_refer_to_earlier_messages_of_the_same_chat() {
    let w = world(config(17));
    let mut created: HashMap<(String, String), Created> = HashMap::new();
    let mut deleted = HashSet::new();
    let (mut edits, mut deletes, mut replies) = (0, 0, 0);
    for n in 0..3 * 1024 {
        let p = w.event_at(0, n);
        if matches!(p.kind, PositionKind::Duplicate { .. }) {
            continue;
        }
        for e in &p.events {
            let key = (e.chat.id.clone(), e.message_id.clone());
            match e.kind {
                EventKind::Message | EventKind::Service => {
                    if let Some(r) = &e.reply_to {
                        let target = created
                            .get(&(e.chat.id.clone(), r.clone()))
                            .expect("reply to an earlier message of the chat");
                        assert_eq!(target.topic, e.topic_id, "replies stay in their topic");
                        assert!(!deleted.contains(&(e.chat.id.clone(), r.clone())));
                        replies += 1;
                    }
                    let earlier = Created {
                        position: n,
                        sender: e.sender.as_ref().map(|s| s.id.clone()),
                        topic: e.topic_id.clone(),
                        sent_at_us: e.sent_at_us,
                    };
                    assert!(
                        created.insert(key, earlier).is_none(),
                        "message ids are not reused"
                    );
                }
                EventKind::Edit => {
                    let original = created.get(&key).expect("edit of an earlier message");
                    assert!(original.position < n);
                    assert!(!deleted.contains(&key), "no edit after deletion");
                    assert_eq!(e.sender.as_ref().map(|s| s.id.clone()), original.sender);
                    assert_eq!(e.topic_id, original.topic);
                    let sent = original.sent_at_us;
                    assert_eq!(e.sent_at_us, sent, "an edit keeps the message's date");
                    assert!(e.edit_version as i64 * 1_000_000 > sent, "edited later");
                    assert_ne!(e.chat.id, TELEGRAM_SERVICE_CHAT);
                    edits += 1;
                }
                EventKind::Delete => {
                    assert!(created.contains_key(&key), "deletion of an earlier message");
                    assert!(deleted.insert(key), "nothing is deleted twice");
                    deletes += 1;
                }
            }
        }
    }
    assert!(
        edits > 50 && deletes > 20 && replies > 50,
        "{edits} {deletes} {replies}"
    );
}

#[test]
fn pii_labels_name_what_the_text_contains() {
    let w = world(SimulatorConfig {
        pii_rate: 0.3,
        ..config(23)
    });
    let mut labelled = 0;
    for n in 0..MODEST_RUN {
        let p = w.event_at(1, n);
        let Some(pii) = &p.pii else { continue };
        let e = &p.events[0];
        assert_eq!(
            e.text.get(pii.span.clone()),
            Some(pii.value.as_str()),
            "{pii:?} is not where the label says in {:?}",
            e.text
        );
        match pii.kind {
            PiiKind::CardNumber => assert!(luhn_valid(&pii.value), "{}", pii.value),
            PiiKind::Iban => assert_eq!(iban_mod97(&pii.value), Some(1), "{}", pii.value),
            PiiKind::LoginCode => {
                assert_eq!(e.chat.id, TELEGRAM_SERVICE_CHAT);
                assert!(pii.value.len() == 5 && pii.value.bytes().all(|b| b.is_ascii_digit()));
            }
            PiiKind::Email => assert!(pii.value.contains('@')),
            PiiKind::Phone => assert!(pii.value.starts_with('+')),
            PiiKind::ApiToken => assert!(pii.value.len() >= 20),
        }
        labelled += 1;
    }
    assert!(labelled > 200, "{labelled}");

    let clean = world(SimulatorConfig {
        pii_rate: 0.0,
        ..config(23)
    });
    for n in 0..MODEST_RUN {
        let p = clean.event_at(1, n);
        if let Some(pii) = p.pii {
            assert_eq!(
                pii.kind,
                PiiKind::LoginCode,
                "only 777000 carries PII at pii_rate 0"
            );
        }
    }
}

#[test]
fn luhn_and_iban_checks_reject_corrupted_numbers() {
    assert!(luhn_valid("4539 1488 0343 6467"));
    assert!(!luhn_valid("4539 1488 0343 6468"));
    assert_eq!(iban_mod97("DE89 3704 0044 0532 0130 00"), Some(1));
    assert_ne!(iban_mod97("DE89 3704 0044 0532 0130 01"), Some(1));
}

// ---------------------------------------------------------------------------------------------
// The gateway

#[tokio::test(start_paused = true)]
async fn gateway_ends_after_messages_per_account_with_the_worlds_events() {
    let w = world(SimulatorConfig {
        messages_per_account: 50,
        rate: 1000.0,
        ..config(1)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let account = w.account_id(0);
    let mut g = started(&factory, &account, None).await;
    for n in 0..50u64 {
        let u = next(&mut g).await;
        assert_eq!(u.cursor, Cursor((n + 1).to_string()));
        assert_eq!(contents(&u.events), contents(&w.event_at(0, n).events));
        assert!(u.events.iter().all(|e| e.source == Source::Live));
    }
    assert_eq!(g.next_update().await, Ok(None));
    assert_eq!(g.next_update().await, Ok(None), "the end is final");
}

#[tokio::test(start_paused = true)]
async fn gateway_resumes_from_any_cursor_re_delivering_the_same_events_as_catch_up() {
    let w = world(SimulatorConfig {
        rate: 1000.0,
        ..config(2)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let account = w.account_id(1);
    let mut first = started(&factory, &account, None).await;
    let mut original = Vec::new();
    for _ in 0..300 {
        original.push(next(&mut first).await);
    }
    drop(first);

    let resume = 120u64;
    let mut second = started(&factory, &account, Some("120")).await;
    let t0 = Instant::now();
    for n in resume..300 {
        let u = next(&mut second).await;
        assert_eq!(u.cursor, Cursor((n + 1).to_string()));
        assert_eq!(contents(&u.events), contents(&original[n as usize].events));
        let expected = if n < resume + CATCH_UP_POSITIONS {
            Source::CatchUp
        } else {
            Source::Live
        };
        assert!(
            u.events.iter().all(|e| e.source == expected),
            "position {n}"
        );
        if n == resume + CATCH_UP_POSITIONS - 1 {
            assert_eq!(Instant::now(), t0, "catch-up is delivered at once");
        }
    }

    // Far ahead, without generating what lies between.
    let mut far = started(&factory, &account, Some("100000")).await;
    let u = next(&mut far).await;
    assert_eq!(
        contents(&u.events),
        contents(&w.event_at(1, 100_000).events)
    );
    assert_eq!(u.cursor, Cursor("100001".into()));
}

#[tokio::test(start_paused = true)]
async fn gateway_paces_at_the_configured_rate() {
    let w = world(SimulatorConfig {
        rate: 5.0,
        ..config(3)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let mut g = started(&factory, &w.account_id(0), None).await;
    let t0 = Instant::now();
    for n in 0..=100u64 {
        next(&mut g).await;
        let elapsed = Instant::now() - t0;
        let due = Duration::from_secs_f64(n as f64 / 5.0);
        assert!(
            elapsed >= due,
            "position {n} came early: {elapsed:?} < {due:?}"
        );
        assert!(
            elapsed < due + Duration::from_millis(5),
            "position {n} late"
        );
    }
    assert_eq!(Instant::now() - t0, Duration::from_secs(20));
}

/// A fleet started together ticks in phases spread evenly over the interval (1 / rate), not all
/// at once: account i of n first emits at i/n of the interval, then once per interval.
#[tokio::test(start_paused = true)]
async fn accounts_started_together_tick_in_phases_spread_over_the_interval() {
    let w = world(SimulatorConfig {
        accounts: 4,
        rate: 1.0,
        ..config(5)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let t0 = Instant::now();
    let mut gateways = Vec::new();
    for i in 0..4 {
        gateways.push(started(&factory, &w.account_id(i), None).await);
    }
    // Taken in the order they fall due (time only moves forward): two rounds.
    let mut arrivals = Vec::new();
    for _ in 0..2 {
        for g in &mut gateways {
            next(g).await;
            arrivals.push(Instant::now() - t0);
        }
    }
    let quarter = Duration::from_millis(250);
    let expected: Vec<Duration> = (0..8).map(|k| quarter * k).collect();
    assert_eq!(arrivals, expected);
}

#[tokio::test(start_paused = true)]
async fn bursts_arrive_together_and_keep_the_average_rate() {
    let w = world(SimulatorConfig {
        rate: 10.0,
        burst_every: 50,
        burst_size: 10,
        ..config(4)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let mut g = started(&factory, &w.account_id(0), None).await;
    let t0 = Instant::now();
    for _ in 0..10 {
        next(&mut g).await;
    }
    assert_eq!(Instant::now(), t0, "the first burst arrives at once");
    next(&mut g).await;
    assert!(Instant::now() > t0);
    for _ in 11..=500 {
        next(&mut g).await;
    }
    let elapsed = (Instant::now() - t0).as_secs_f64();
    assert!(
        (49.0..=50.0).contains(&elapsed),
        "500 positions at 10/s took {elapsed}s"
    );
}

#[tokio::test(start_paused = true)]
async fn each_injected_fault_fails_the_next_matching_call_once() {
    let w = world(config(6));
    let faults = SimulatorFaults::new();
    let factory = SimulatedFactory::new(w.clone(), faults.clone());
    let (a, b) = (w.account_id(0), w.account_id(1));
    let mut g = started(&factory, &a, None).await;
    let mut other = started(&factory, &b, None).await;
    let cases = [
        (
            Fault::FloodWait { seconds: 7 },
            GatewayError::FloodWait { seconds: 7 },
        ),
        (
            Fault::Network,
            GatewayError::Network("connection reset (simulated)".into()),
        ),
        (
            Fault::Revoked,
            GatewayError::Revoked("SESSION_REVOKED (simulated)".into()),
        ),
        (Fault::Duplicated, GatewayError::Duplicated),
    ];
    let mut position = 0u64;
    for (fault, error) in cases {
        faults.inject(Some(&a), FaultCall::NextUpdate, fault);
        // Another account's calls, and other calls of this account, do not fire it.
        next(&mut other).await;
        g.commit(Cursor(position.to_string()))
            .await
            .expect("commit");
        assert_eq!(faults.pending(), 1);
        assert_eq!(g.next_update().await, Err(error));
        assert_eq!(faults.pending(), 0);
        let u = next(&mut g).await;
        position += 1;
        assert_eq!(
            u.cursor,
            Cursor(position.to_string()),
            "a failed call does not advance"
        );
    }

    faults.fail_next(Fault::Revoked);
    let err = factory.create(&a).connect().await.expect_err("revoked");
    assert!(err.is_permanent());

    faults.inject(None, FaultCall::History, Fault::Network);
    let chat = w.chats(0)[0].chat.clone();
    assert!(matches!(
        g.history(chat, None, 10).await,
        Err(GatewayError::Network(_))
    ));

    faults.inject(
        Some(&a),
        FaultCall::Any,
        Fault::Stall(Duration::from_secs(30)),
    );
    let t0 = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), g.next_update())
            .await
            .is_err(),
        "a stalled call does not complete"
    );
    faults.inject(
        Some(&a),
        FaultCall::Any,
        Fault::Stall(Duration::from_secs(30)),
    );
    let u = next(&mut g).await;
    assert!(Instant::now() - t0 >= Duration::from_secs(35));
    assert_eq!(
        u.cursor,
        Cursor((position + 1).to_string()),
        "then it proceeds"
    );

    faults.fail_next(Fault::Network);
    faults.clear();
    assert_eq!(faults.pending(), 0);
    next(&mut g).await;
}

#[tokio::test(start_paused = true)]
async fn recorded_calls_are_those_of_the_watched_account_in_order_with_the_faulted_one_marked() {
    let w = world(config(6));
    let faults = SimulatorFaults::new();
    let factory = SimulatedFactory::new(w.clone(), faults.clone());
    let (a, b) = (w.account_id(0), w.account_id(1));
    faults.record_calls(&a);
    let mut g = started(&factory, &a, None).await;
    let mut other = started(&factory, &b, None).await;
    faults.inject(Some(&a), FaultCall::NextUpdate, Fault::Network);
    assert!(g.next_update().await.is_err());
    next(&mut g).await;
    next(&mut other).await;
    let calls: Vec<(FaultCall, bool)> = faults
        .calls(&a)
        .iter()
        .map(|c| (c.call, c.faulted))
        .collect();
    assert_eq!(
        calls,
        [
            (FaultCall::Connect, false),
            (FaultCall::CatchUp, false),
            (FaultCall::NextUpdate, true),
            (FaultCall::NextUpdate, false),
        ]
    );
    let at: Vec<i64> = faults.calls(&a).iter().map(|c| c.at_us).collect();
    assert!(at.is_sorted(), "{at:?}");
    assert!(
        faults.calls(&b).is_empty(),
        "only watched accounts are recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn commits_are_recorded_and_checked() {
    let w = world(SimulatorConfig {
        rate: 1000.0,
        ..config(8)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let account = w.account_id(2);
    let mut g: SimulatedGateway = factory.gateway(&account);
    g.connect().await.expect("connect");
    g.catch_up(None).await.expect("catch_up");
    assert_eq!(g.committed(), None);
    for _ in 0..5 {
        g.next_update().await.expect("update");
    }
    g.commit(Cursor("5".into())).await.expect("commit");
    assert_eq!(g.committed(), Some(5));
    assert_eq!(factory.committed(&account), Some(5));
    assert_eq!(factory.committed(&w.account_id(0)), None);
    for bad in ["6", "4", "x", "-1"] {
        assert!(
            matches!(
                g.commit(Cursor(bad.into())).await,
                Err(GatewayError::Other(_))
            ),
            "commit {bad}"
        );
    }
    assert_eq!(
        factory.committed(&account),
        Some(5),
        "refused commits change nothing"
    );

    let mut fresh = factory.create(&account);
    assert!(
        fresh.next_update().await.is_err(),
        "connect and catch_up come first"
    );
}

#[tokio::test]
async fn unknown_accounts_are_refused_as_revoked() {
    let factory = SimulatedFactory::new(world(config(1)), SimulatorFaults::new());
    for id in ["42", "1000003", "not-a-number"] {
        let err = factory.create(id).connect().await.expect_err(id);
        assert!(matches!(err, GatewayError::Revoked(_)) && err.is_permanent());
    }
}

#[tokio::test(start_paused = true)]
async fn history_pages_through_a_chats_messages_oldest_first() {
    let w = world(SimulatorConfig {
        rate: 1000.0,
        ..config(10)
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let account = w.account_id(0);
    let mut g = started(&factory, &account, None).await;
    let upto = 2500u64;
    for _ in 0..upto {
        next(&mut g).await;
    }
    let forum = w
        .chats(0)
        .into_iter()
        .find(|c| c.role == ChatRole::Forum)
        .expect("a forum");
    let truth: Vec<Event> = (0..upto)
        .flat_map(|n| {
            let p = w.event_at(0, n);
            match p.kind {
                PositionKind::Message | PositionKind::Service => p.events,
                _ => Vec::new(),
            }
        })
        .filter(|e| e.chat.id == forum.chat.id)
        .collect();
    assert!(truth.len() > 100);

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = g
            .history(forum.chat.clone(), after.clone(), 40)
            .await
            .expect("history");
        assert!(page.len() <= 40);
        let Some(last) = page.last() else { break };
        after = Some(last.message_id.clone());
        pages.extend(page);
    }
    assert!(pages.iter().all(|e| e.source == Source::Backfill));
    assert_eq!(
        contents(&pages),
        contents(&truth),
        "every message, oldest first, once"
    );

    let mut other = w.chats(0)[0].chat.clone();
    other.id = "-1009999999999".into();
    assert!(g.history(other, None, 10).await.is_err(), "unknown chat");
}

#[test]
fn ten_thousand_idle_accounts_stay_small() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let w = world(SimulatorConfig {
        accounts: 10_000,
        ..SimulatorConfig::default()
    });
    let factory = SimulatedFactory::new(w.clone(), SimulatorFaults::new());
    let ids: Vec<String> = w.account_ids().collect();
    let mut gateways: Vec<Box<dyn Gateway>> = Vec::with_capacity(ids.len());

    let before = live_bytes();
    runtime.block_on(async {
        for id in &ids {
            let mut g = factory.create(id);
            g.connect().await.expect("connect");
            g.catch_up(None).await.expect("catch_up");
            gateways.push(g);
        }
    });
    let per_account = (live_bytes() - before) / ids.len() as isize;
    assert!(per_account < 512, "{per_account} bytes per idle account");

    let before = live_bytes();
    for i in (0..10_000).step_by(97) {
        let _ = w.event_at(i, 123_456);
    }
    assert_eq!(live_bytes(), before, "generating events keeps nothing");
    drop(gateways);
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn default_config_is_valid_and_off() {
    let cfg = SimulatorConfig::default();
    cfg.validate().expect("defaults are valid");
    assert_eq!(cfg.accounts, 0);
    let text = toml::to_string(&cfg).expect("serializes");
    let back: SimulatorConfig = toml::from_str(&text).expect("round trip");
    assert_eq!(back, cfg);
    assert!(
        toml::from_str::<SimulatorConfig>("acounts = 3").is_err(),
        "unknown keys"
    );
    assert!(SimulatedWorld::new(SimulatorConfig::default()).is_ok());
}

#[test]
fn invalid_values_are_refused_naming_the_key() {
    let cases: Vec<(SimulatorConfig, &str)> = vec![
        (
            SimulatorConfig {
                rate: 0.0,
                ..Default::default()
            },
            "simulator.rate",
        ),
        (
            SimulatorConfig {
                rate: f64::NAN,
                ..Default::default()
            },
            "simulator.rate",
        ),
        (
            SimulatorConfig {
                chats_per_account: 5,
                ..Default::default()
            },
            "simulator.chats_per_account",
        ),
        (
            SimulatorConfig {
                duplicate_rate: 0.3,
                ..Default::default()
            },
            "simulator.duplicate_rate",
        ),
        (
            SimulatorConfig {
                edit_rate: -0.1,
                ..Default::default()
            },
            "simulator.edit_rate",
        ),
        (
            SimulatorConfig {
                edit_rate: 0.2,
                delete_rate: 0.2,
                service_rate: 0.15,
                ..Default::default()
            },
            "simulator.edit_rate",
        ),
        (
            SimulatorConfig {
                pii_rate: 1.5,
                ..Default::default()
            },
            "simulator.pii_rate",
        ),
        (
            SimulatorConfig {
                media_rate: f64::NAN,
                ..Default::default()
            },
            "simulator.media_rate",
        ),
        (
            SimulatorConfig {
                burst_every: 10,
                burst_size: 0,
                ..Default::default()
            },
            "simulator.burst_size",
        ),
        (
            SimulatorConfig {
                burst_every: 10,
                burst_size: 11,
                ..Default::default()
            },
            "simulator.burst_size",
        ),
        (
            SimulatorConfig {
                accounts: 2_000_000,
                ..Default::default()
            },
            "simulator.accounts",
        ),
    ];
    for (cfg, want) in cases {
        match cfg.validate() {
            Err(ConfigError::Invalid { key, origin, .. }) => {
                assert_eq!(key, want);
                assert!(origin.is_empty());
            }
            other => panic!("{want}: {other:?}"),
        }
        assert!(SimulatedWorld::new(cfg).is_err());
    }
}
