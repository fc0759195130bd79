//! Decoders of outside input cannot be crashed (issue 16, item 6): every decoder of bytes or text
//! that arrives from outside takes arbitrary input, mutated valid input (bytes flipped, inserted,
//! deleted, truncated, huge lengths, deep nesting, non-UTF-8, long multi-line non-ASCII texts)
//! and answers with a value or a typed error that says what is wrong; valid input round-trips.
//!
//! One module per decoder: `codec` (bincode event records), `session_strings` (Telethon and
//! Pyrogram imports), `sealed_sessions`, `switchboard_answers` (JSON-RPC replies),
//! `sse` (the server-sent-events reader), `config` (TOML text) and `admin_bodies` (the admin
//! API's JSON request bodies). Each property runs `TGINGEST_FUZZ_CASES` cases (default 10,000);
//! the long run is
//! `TGINGEST_FUZZ_CASES=1000000 cargo test --release --locked --test decoders <module>::`.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Cases per property: `TGINGEST_FUZZ_CASES`, default 10,000.
fn cases() -> u32 {
    std::env::var("TGINGEST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(10_000)
}

fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    }
}

/// Up to `max_len` bytes from a seeded generator: cheap in bulk, and a failure names (len, seed).
fn noise(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max_len, any::<u64>()).prop_map(|(len, seed)| {
        let mut bytes = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    })
}

/// Pieces that break parsers: huge varints and lengths, NUL, half and whole multi-byte
/// characters, invalid UTF-8, line breaks, quotes, brackets, base64's other alphabet.
const PIECES: &[&[u8]] = &[
    &[0xFF; 9],
    &[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    &[0xFC, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0xFB, 0xFF, 0xFF],
    b"\0",
    b"\xC3",
    b"\xF0\x9F\x98",
    b"\xFF\xFE",
    "é".as_bytes(),
    "😀".as_bytes(),
    "界".as_bytes(),
    "\u{202E}".as_bytes(),
    b"\r\n",
    b"\n",
    b"\r",
    b"\n\n",
    b"=",
    b"+/",
    b" ",
    b"\"",
    b"\\",
    b"{",
    b"[[[[[[[[[[[[[[[[",
    b"]}",
    b"\\u0000",
    b"\\ud800",
    b"1e999999",
    b"-99999999999999999999999",
    b"data: ",
    b"event: ",
    b": ",
    b"[section]\n",
    b"[[array]]\n",
    b"key = ",
];

/// One edit of a valid sample.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index, usize),
    Truncate(Index),
    Splice(Index, &'static [u8]),
    /// Repeats a stretch many times (long lines, long lists, deep nesting).
    Repeat(Index, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<Index>(), 1..64usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), prop::sample::select(PIECES)).prop_map(|(at, p)| Edit::Splice(at, p)),
        (any::<Index>(), 1..16usize, 2..300usize).prop_map(|(at, n, k)| Edit::Repeat(at, n, k)),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..6)
}

/// `sample` with `edits` applied in order (positions wrap to the current length).
fn mutate(sample: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = sample.to_vec();
    for e in edits {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match e {
            Edit::Flip(i, bit) if !out.is_empty() => {
                let i = i.index(out.len());
                out[i] ^= 1 << bit;
            }
            Edit::Set(i, b) if !out.is_empty() => {
                let i = i.index(out.len());
                out[i] = *b;
            }
            Edit::Insert(i, b) => out.insert(at(i, out.len()), *b),
            Edit::Delete(i, n) => {
                let start = at(i, out.len());
                let end = (start + n).min(out.len());
                out.drain(start..end);
            }
            Edit::Truncate(i) => out.truncate(at(i, out.len())),
            Edit::Splice(i, piece) => {
                let start = at(i, out.len());
                out.splice(start..start, piece.iter().copied());
            }
            Edit::Repeat(i, n, times) => {
                let start = at(i, out.len());
                let end = (start + n).min(out.len());
                let copies = out[start..end].repeat(times - 1);
                out.splice(start..start, copies);
            }
            Edit::Flip(..) | Edit::Set(..) => {}
        }
    }
    out
}

/// Long, multi-line, non-ASCII texts as real peers write them; repeated, they cross any clip
/// length inside a multi-byte character.
const TEXTS: &[&str] = &[
    "",
    "ok",
    "Invalid ingest.v1 envelope:\n  payload.normalized_text: field required\n  sender.identity: \
     must not be empty\nTraceback (most recent call last):\n  File \"/app/switchboard.py\", \
     line 12, in ingest\n",
    "é",
    "xé",
    "xyé",
    "😀",
    "x😀",
    "界\n",
    "Ошибка: неверный конверт\r\n",
    "خطأ في الخادم\t",
    "\u{0}\u{1}\u{7f}",
    "\u{202E}reversed",
    "multi\nline\n\nwith blank\n",
    "{\"status\": \"accepted\"}",
];

/// One of `TEXTS`, repeated to about `len` bytes (up to 3,000: past any clip length).
fn long_text() -> impl Strategy<Value = String> {
    (prop::sample::select(TEXTS), 0..3000usize)
        .prop_map(|(t, len)| t.repeat(len / t.len().max(1) + 1))
}

mod codec {
    //! The event codec: bincode 2 records behind a format byte.

    use super::*;
    use tgingest::codec::{CodecError, FORMAT_BINCODE2, decode, encode};
    use tgingest::event::{Chat, ChatKind, Event, EventKind, Media, MediaKind, Sender, Source};

    const KINDS: &[EventKind] = &[
        EventKind::Message,
        EventKind::Edit,
        EventKind::Delete,
        EventKind::Service,
    ];
    const MEDIA: &[MediaKind] = &[
        MediaKind::Photo,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Voice,
        MediaKind::Document,
        MediaKind::Sticker,
        MediaKind::Contact,
        MediaKind::Location,
        MediaKind::Poll,
        MediaKind::WebPage,
        MediaKind::Other,
    ];
    const SOURCES: &[Source] = &[Source::Live, Source::CatchUp, Source::Backfill];

    fn text() -> impl Strategy<Value = String> {
        (prop::sample::select(TEXTS), 1..4usize).prop_map(|(t, n)| t.repeat(n))
    }

    fn event() -> impl Strategy<Value = Event> {
        let chat = (
            prop::sample::select(&ChatKind::ALL[..]),
            text(),
            prop::option::of(text()),
        )
            .prop_map(|(kind, id, title)| Chat { kind, id, title });
        let sender = prop::option::of((text(), prop::option::of(text()), any::<bool>()).prop_map(
            |(id, display_name, is_self)| Sender {
                id,
                display_name,
                is_self,
            },
        ));
        let media = prop::option::of(
            (
                prop::sample::select(MEDIA),
                prop::option::of(text()),
                prop::option::of(any::<u64>()),
                prop::option::of(text()),
            )
                .prop_map(|(kind, mime_type, size_bytes, file_name)| Media {
                    kind,
                    mime_type,
                    size_bytes,
                    file_name,
                }),
        );
        (
            (
                any::<u16>(),
                text(),
                text(),
                prop::sample::select(KINDS),
                chat,
                sender,
            ),
            (text(), prop::option::of(text()), prop::option::of(text())),
            (any::<i64>(), any::<u64>(), text(), media),
            (prop::sample::select(SOURCES), any::<i64>()),
        )
            .prop_map(
                |(
                    (schema_version, event_id, account_id, kind, chat, sender),
                    (message_id, topic_id, reply_to),
                    (sent_at_us, edit_version, text, media),
                    (source, observed_at_us),
                )| Event {
                    schema_version,
                    event_id,
                    account_id,
                    kind,
                    chat,
                    sender,
                    message_id,
                    topic_id,
                    reply_to,
                    sent_at_us,
                    edit_version,
                    text,
                    media,
                    source,
                    observed_at_us,
                },
            )
    }

    /// A value or a typed error that fits the input; a decoded value survives re-encoding and
    /// its validation does not panic either.
    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        match decode::<Event>(bytes) {
            Ok(event) => {
                let again = encode(&event).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(decode::<Event>(&again), Ok(event.clone()));
                let _ = event.validate();
                Ok(())
            }
            Err(e) => check_error(&e, bytes),
        }
    }

    /// The error fits the input it refused and says so in words.
    pub fn check_error(e: &CodecError, bytes: &[u8]) -> Result<(), TestCaseError> {
        prop_assert!(!e.to_string().trim().is_empty());
        match e {
            CodecError::Empty => prop_assert!(bytes.is_empty()),
            CodecError::UnknownFormat(f) => {
                prop_assert_eq!(Some(f), bytes.first());
                prop_assert_ne!(*f, FORMAT_BINCODE2);
            }
            CodecError::Malformed(why) => prop_assert!(!why.trim().is_empty()),
            CodecError::TrailingBytes(n) => prop_assert!(*n > 0 && *n < bytes.len()),
            CodecError::Encode(_) => prop_assert!(false, "decoding reported {e}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn an_event_round_trips(event in event()) {
            let bytes = encode(&event).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<Event>(&bytes), Ok(event));
        }

        #[test]
        fn arbitrary_bytes_decode_or_are_refused_with_a_reason(
            bytes in noise(600),
            first in prop::option::of(Just(FORMAT_BINCODE2)),
        ) {
            let mut bytes = bytes;
            if let (Some(f), Some(b)) = (first, bytes.first_mut()) {
                *b = f;
            }
            check(&bytes)?;
        }

        #[test]
        fn mutated_events_decode_or_are_refused_with_a_reason(
            event in event(),
            edits in edits(),
        ) {
            let bytes = encode(&event).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check(&mutate(&bytes, &edits))?;
        }
    }

    #[test]
    fn every_truncation_and_a_huge_length_are_refused() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..20 {
            let event = event().new_tree(&mut runner).unwrap().current();
            let bytes = encode(&event).unwrap();
            for len in 0..bytes.len() {
                let e = decode::<Event>(&bytes[..len]).expect_err("a prefix decoded");
                check_error(&e, &bytes[..len]).unwrap();
            }
            // The event id's length, claimed as u64::MAX.
            let mut huge = bytes[..3].to_vec();
            huge.extend_from_slice(&[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
            huge.extend_from_slice(&bytes[4..]);
            let e = decode::<Event>(&huge).expect_err("u64::MAX length decoded");
            assert!(matches!(e, CodecError::Malformed(_)), "{e}");
        }
    }
}

mod session_strings {
    //! The Telethon and Pyrogram session-string importers, against the strings the real
    //! libraries wrote (`tests/fixtures/sessions.jsonl`, from `tests/fixtures/make_sessions.py`).

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use base64::Engine;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use tgingest::telegram::session::{
        ImportError, SessionSnapshot, import_pyrogram, import_telethon,
    };

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    pub struct Fixture {
        pub lib: String,
        pub string: String,
        pub dc_id: i32,
        pub auth_key_hex: String,
        pub is_bot: bool,
    }

    /// The strings Telethon 1.42.0 and Pyrogram 2.0.106 wrote (every format each reads).
    pub fn fixtures() -> &'static [Fixture] {
        static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            include_str!("fixtures/sessions.jsonl")
                .lines()
                .map(|line| serde_json::from_str(line).expect("a fixture line"))
                .collect()
        })
    }

    pub fn import(f: &Fixture) -> Result<SessionSnapshot, ImportError> {
        match f.lib.as_str() {
            "telethon" => import_telethon(&f.string),
            _ => import_pyrogram(&f.string),
        }
    }

    /// 256 key bytes from `seed`, never all zero.
    fn key(seed: u64) -> [u8; 256] {
        let mut key = [0u8; 256];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut key);
        key[0] |= 1;
        key
    }

    /// A typed error that names the problem and never repeats 20 bytes of the string (such a
    /// stretch holds one of the 16-byte windows of the message starting every 4 bytes).
    fn check_error(e: &ImportError, input: &str) -> Result<(), TestCaseError> {
        let msg = e.to_string();
        prop_assert!(!msg.trim().is_empty());
        let trimmed = input.trim();
        for window in msg.as_bytes().windows(16).step_by(4) {
            if let Ok(window) = std::str::from_utf8(window) {
                prop_assert!(!trimmed.contains(window), "{msg} repeats the string");
            }
        }
        match e {
            ImportError::Empty { .. } => prop_assert!(trimmed.is_empty()),
            ImportError::TelethonVersion { found } => {
                prop_assert_eq!(Some(*found), trimmed.chars().next());
                prop_assert_ne!(*found, '1');
            }
            ImportError::BadBase64 {
                position, problem, ..
            } => {
                prop_assert!(*position >= 1 && *position <= trimmed.len(), "{msg}");
                prop_assert!(!problem.is_empty());
            }
            ImportError::BadBase64Length { chars, .. } => {
                prop_assert!(*chars <= trimmed.len())
            }
            ImportError::WrongLength { lib, found, .. } => {
                let possible: &[usize] = if *lib == "Telethon" {
                    &[263, 275]
                } else {
                    &[263, 267, 271]
                };
                prop_assert!(!possible.contains(found), "{msg}");
            }
            ImportError::DcOutOfRange { dc_id, allowed, .. } => {
                let last = if allowed.contains("test") { 3 } else { 5 };
                prop_assert!(!(1..=last).contains(dc_id), "{msg}");
            }
            ImportError::BadPort { .. }
            | ImportError::BadAddress { .. }
            | ImportError::ZeroAuthKey { .. }
            | ImportError::BotSession { .. } => {}
        }
        Ok(())
    }

    /// A snapshot homed on a real DC with its key, or a typed error.
    fn check(
        result: Result<SessionSnapshot, ImportError>,
        input: &str,
    ) -> Result<(), TestCaseError> {
        match result {
            Ok(s) => {
                prop_assert!((1..=5).contains(&s.home_dc));
                prop_assert!(s.home_auth_key().is_some());
                Ok(())
            }
            Err(e) => check_error(&e, input),
        }
    }

    fn both(input: &str) -> Result<(), TestCaseError> {
        check(import_telethon(input), input)?;
        check(import_pyrogram(input), input)
    }

    #[test]
    fn the_real_libraries_strings_import() {
        let all = fixtures();
        assert!(all.len() >= 14);
        for f in all {
            if f.is_bot {
                // tgingest ingests what user accounts see.
                let e = import(f).unwrap_err();
                assert!(matches!(e, ImportError::BotSession { .. }), "{e}");
                continue;
            }
            let s = import(f).unwrap_or_else(|e| panic!("{}: {e}", f.lib));
            assert_eq!(s.home_dc, f.dc_id);
            assert_eq!(hex::encode(s.home_auth_key().unwrap()), f.auth_key_hex);
        }
    }

    #[test]
    fn every_truncation_of_a_real_string_is_refused_with_a_reason() {
        for f in fixtures() {
            // Padding is optional: a string cut only in its padding is the same string.
            let data = f.string.trim_end_matches('=').len();
            for (end, _) in f.string.char_indices() {
                let prefix = &f.string[..end];
                let imported = match f.lib.as_str() {
                    "telethon" => import_telethon(prefix),
                    _ => import_pyrogram(prefix),
                };
                if end >= data {
                    assert_eq!(imported, import(f));
                    continue;
                }
                // Pyrogram tells its formats apart by length alone (as Pyrogram itself does), so
                // a current string cut to the length of a pre-2.0 one reads as one.
                let old_length = [263, 267].contains(&(end * 3 / 4));
                if f.lib == "pyrogram" && old_length && imported.is_ok() {
                    continue;
                }
                check_error(&imported.expect_err("a prefix imported"), prefix).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn arbitrary_strings_import_or_are_refused_with_a_reason(s in any::<String>()) {
            both(&s)?;
            both(&format!("1{s}"))?;
        }

        #[test]
        fn arbitrary_bytes_as_base64_import_or_are_refused_with_a_reason(
            bytes in noise(300),
            telethon_len in prop::sample::select(&[263usize, 275][..]),
            pyrogram_len in prop::sample::select(&[271usize, 263, 267][..]),
        ) {
            // Plausible lengths get past the base64 and length checks to the fields.
            let as_telethon = format!("1{}", URL_SAFE.encode(&bytes));
            check(import_telethon(&as_telethon), &as_telethon)?;
            let as_pyrogram = URL_SAFE_NO_PAD.encode(&bytes);
            check(import_pyrogram(&as_pyrogram), &as_pyrogram)?;
            let mut sized = bytes.clone();
            sized.resize(telethon_len, 0xA5);
            let s = format!("1{}", URL_SAFE.encode(&sized));
            check(import_telethon(&s), &s)?;
            sized.resize(pyrogram_len, 0x5A);
            let s = URL_SAFE_NO_PAD.encode(&sized);
            check(import_pyrogram(&s), &s)?;
        }

        #[test]
        fn mutated_real_strings_import_or_are_refused_with_a_reason(
            which in any::<Index>(),
            edits in edits(),
        ) {
            let all = fixtures();
            let f = &all[which.index(all.len())];
            let mutated = String::from_utf8_lossy(&mutate(f.string.as_bytes(), &edits)).into_owned();
            both(&mutated)?;
        }

        #[test]
        fn a_telethon_string_round_trips(
            dc in 1..=5u8,
            v6 in any::<bool>(),
            addr in any::<u128>().prop_filter("a specified address", |a| *a > u128::from(u32::MAX)),
            port in 1..=u16::MAX,
            seed in any::<u64>(),
        ) {
            // struct.pack('>B4sH256s') or '>B16sH256s', as Telethon's StringSession.save().
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::from(addr))
            } else {
                IpAddr::V4(Ipv4Addr::from(addr as u32 | 1))
            };
            let key = key(seed);
            let mut packed = vec![dc];
            match ip {
                IpAddr::V4(a) => packed.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => packed.extend_from_slice(&a.octets()),
            }
            packed.extend_from_slice(&port.to_be_bytes());
            packed.extend_from_slice(&key);
            let s = import_telethon(&format!("1{}", URL_SAFE.encode(&packed)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(s.home_dc, i32::from(dc));
            prop_assert_eq!(s.home_auth_key(), Some(&key));
            let home = s.dc_options.iter().find(|d| d.id == i32::from(dc)).unwrap();
            match ip {
                IpAddr::V4(a) => prop_assert_eq!((*home.ipv4.ip(), home.ipv4.port()), (a, port)),
                IpAddr::V6(a) => prop_assert_eq!((*home.ipv6.ip(), home.ipv6.port()), (a, port)),
            }
        }

        #[test]
        fn a_pyrogram_string_round_trips_in_every_format(
            format in 0..3usize,
            test_mode in any::<bool>(),
            dc_pick in any::<Index>(),
            user_id in any::<i64>(),
            api_id in any::<u32>(),
            seed in any::<u64>(),
        ) {
            let dc = 1 + dc_pick.index(if test_mode { 3 } else { 5 }) as u8;
            let key = key(seed);
            // '>BI?256sQ?' now; '>B?256sI?' and '>B?256sQ?' before 2.0.
            let mut packed = vec![dc];
            let user_id = match format {
                0 => {
                    packed.extend_from_slice(&api_id.to_be_bytes());
                    packed.push(u8::from(test_mode));
                    packed.extend_from_slice(&key);
                    packed.extend_from_slice(&user_id.to_be_bytes());
                    user_id
                }
                1 => {
                    packed.push(u8::from(test_mode));
                    packed.extend_from_slice(&key);
                    packed.extend_from_slice(&(user_id as u32).to_be_bytes());
                    i64::from(user_id as u32)
                }
                _ => {
                    packed.push(u8::from(test_mode));
                    packed.extend_from_slice(&key);
                    packed.extend_from_slice(&user_id.to_be_bytes());
                    user_id
                }
            };
            packed.push(0);
            let s = import_pyrogram(&URL_SAFE_NO_PAD.encode(&packed))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(s.home_dc, i32::from(dc));
            prop_assert_eq!(s.home_auth_key(), Some(&key));
            prop_assert_eq!(s.user_id, Some(user_id));
            prop_assert_eq!(s.test_mode, test_mode);
        }
    }
}

mod sealed_sessions {
    //! The sealed-session format: XChaCha20-Poly1305 around a codec-encoded snapshot.

    use tgingest::codec;
    use tgingest::keys::MasterKey;
    use tgingest::telegram::session::{
        SessionError, SessionSnapshot, seal, seal_snapshot, unseal_snapshot,
    };

    use super::session_strings::{fixtures, import};
    use super::*;

    const ACCOUNTS: &[&str] = &["42", "5123456789", "acct-é", ""];

    fn master() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    /// The user accounts' fixtures, imported.
    fn snapshots() -> &'static [SessionSnapshot] {
        static SNAPSHOTS: OnceLock<Vec<SessionSnapshot>> = OnceLock::new();
        SNAPSHOTS.get_or_init(|| {
            fixtures()
                .iter()
                .filter(|f| !f.is_bot)
                .map(|f| import(f).expect("a fixture imports"))
                .collect()
        })
    }

    /// Tampering is found by the tag before anything is decoded: only these three errors.
    fn check_refused(e: &SessionError, sealed: &[u8], account: &str) -> Result<(), TestCaseError> {
        prop_assert!(!e.to_string().trim().is_empty());
        match e {
            SessionError::Truncated { account: a, len } => {
                prop_assert_eq!(a, account);
                prop_assert_eq!(*len, sealed.len());
                prop_assert!(*len < 41);
            }
            SessionError::UnknownFormat { account: a, format } => {
                prop_assert_eq!(a, account);
                prop_assert_eq!(Some(format), sealed.first());
            }
            SessionError::Unseal { account: a } => prop_assert_eq!(a, account),
            other => prop_assert!(false, "tampered bytes reached {other}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn a_sealed_session_round_trips_for_its_account_only(
            which in any::<Index>(),
            account in prop::sample::select(ACCOUNTS),
            other in prop::sample::select(ACCOUNTS),
        ) {
            let all = snapshots();
            let snapshot = &all[which.index(all.len())];
            let sealed = seal_snapshot(&master(), account, snapshot)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let opened = unseal_snapshot(&master(), account, &sealed);
            prop_assert_eq!(opened.as_ref(), Ok(snapshot));
            if other != account {
                let e = unseal_snapshot(&master(), other, &sealed).unwrap_err();
                prop_assert_eq!(e, SessionError::Unseal { account: other.to_string() });
            }
        }

        #[test]
        fn a_mutated_sealed_session_is_refused_as_tampered(
            which in any::<Index>(),
            account in prop::sample::select(ACCOUNTS),
            edits in edits(),
        ) {
            let all = snapshots();
            let snapshot = &all[which.index(all.len())];
            let sealed = seal_snapshot(&master(), account, snapshot)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mutated = mutate(&sealed, &edits);
            match unseal_snapshot(&master(), account, &mutated) {
                Ok(s) => {
                    prop_assert_eq!(&mutated, &sealed, "tampered bytes opened");
                    prop_assert_eq!(&s, snapshot);
                }
                Err(e) => check_refused(&e, &mutated, account)?,
            }
        }

        #[test]
        fn arbitrary_bytes_are_refused_as_tampered(
            bytes in noise(400),
            account in prop::sample::select(ACCOUNTS),
        ) {
            let e = unseal_snapshot(&master(), account, &bytes).unwrap_err();
            check_refused(&e, &bytes, account)?;
        }

        #[test]
        fn whatever_opens_decodes_or_is_refused_as_undecodable(
            which in any::<Index>(),
            edits in prop::option::of(edits()),
            bytes in noise(400),
        ) {
            // A blob that opens (the key is right) but holds bytes a bug or an older build wrote.
            let plain = match edits {
                Some(edits) => {
                    let all = snapshots();
                    let encoded = codec::encode(&all[which.index(all.len())])
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    mutate(&encoded, &edits)
                }
                None => bytes,
            };
            let sealed = seal(&master(), "42", &plain).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match unseal_snapshot(&master(), "42", &sealed) {
                Ok(s) => {
                    let again = codec::encode(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(codec::decode::<SessionSnapshot>(&again), Ok(s));
                }
                Err(SessionError::Decode { account, source }) => {
                    prop_assert_eq!(account, "42");
                    super::codec::check_error(&source, &plain)?;
                }
                Err(e) => prop_assert!(false, "an authentic blob was refused: {e}"),
            }
        }
    }
}

mod switchboard_answers {
    //! What Switchboard answers: the body, the JSON-RPC response, the tool result, the ingest and
    //! heartbeat replies, and the error of a non-success HTTP status.

    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::{Map, Value, json};
    use tgingest::switchboard::answer::{
        MAX_ERROR_TEXT, json_reply, parse_heartbeat, parse_ingest, response_to, rpc_result,
        status_error, tool_body,
    };
    use tgingest::switchboard::{CallError, IngestReply};

    use super::*;

    /// The id every request here carries.
    const ID: u64 = 7;

    /// Room for the fixed words around the (at most two) clipped server texts in an error.
    const WORDS: usize = 200;
    const MAX_ERROR: usize = 2 * MAX_ERROR_TEXT + WORDS;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            long_text().prop_map(Value::String),
            prop::sample::select(&["accepted", "error", "rejected", "", "ACCEPTED"][..])
                .prop_map(Value::from),
            Just(json!([])),
            Just(json!({})),
        ]
    }

    /// An ingest or heartbeat body as Switchboard writes it, or almost.
    fn body() -> impl Strategy<Value = Value> {
        (
            prop::option::of(value()),
            prop::option::of(value()),
            prop::option::of(value()),
            prop::option::of(value()),
        )
            .prop_map(|(status, request_id, duplicate, error)| {
                let mut m = Map::new();
                for (k, v) in [
                    ("status", status),
                    ("request_id", request_id),
                    ("duplicate", duplicate),
                    ("error", error),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            })
    }

    /// A tool result carrying `body` every way FastMCP does, and ways it does not.
    fn tool_result() -> impl Strategy<Value = Value> {
        (body(), 0..6usize, prop::option::of(value()), long_text()).prop_map(
            |(body, wrap, is_error, text)| {
                let mut r = match wrap {
                    0 => json!({"structuredContent": body}),
                    1 => json!({"structuredContent": {"result": body}}),
                    2 => json!({"content": [{"type": "text", "text": body.to_string()}]}),
                    3 => json!({"content": [{"type": "text", "text": text}]}),
                    4 => json!({"content": []}),
                    _ => json!({"content": text}),
                };
                if let Some(e) = is_error {
                    r["isError"] = e;
                }
                r
            },
        )
    }

    /// A JSON-RPC response: the right id or not, a result, an error, both or neither.
    fn response() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just(json!(ID)), value()],
            prop::option::of(tool_result()),
            prop::option::of((value(), prop::option::of(value()))),
        )
            .prop_map(|(id, result, error)| {
                let mut m = Map::new();
                m.insert("jsonrpc".into(), json!("2.0"));
                m.insert("id".into(), id);
                if let Some(r) = result {
                    m.insert("result".into(), r);
                }
                if let Some((code, message)) = error {
                    let mut e = json!({"code": code});
                    if let Some(message) = message {
                        e["message"] = message;
                    }
                    m.insert("error".into(), e);
                }
                Value::Object(m)
            })
    }

    fn ingest(bytes: &[u8]) -> Result<IngestReply, CallError> {
        parse_ingest(&tool_body(rpc_result(json_reply(bytes)?, ID)?)?)
    }

    fn heartbeat(bytes: &[u8]) -> Result<(), CallError> {
        parse_heartbeat(&tool_body(rpc_result(json_reply(bytes)?, ID)?)?)
    }

    /// Only the two errors a reply can cause, in words, with the server's text clipped.
    fn check_error(e: &CallError) -> Result<(), TestCaseError> {
        match e {
            CallError::Protocol(m) | CallError::ToolError(m) => {
                prop_assert!(!m.trim().is_empty());
                prop_assert!(m.len() <= MAX_ERROR, "{} bytes", m.len());
            }
            other => prop_assert!(false, "a reply caused {other:?}"),
        }
        Ok(())
    }

    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        match ingest(bytes) {
            Ok(IngestReply::Accepted { request_id, .. }) => prop_assert!(!request_id.is_empty()),
            Ok(IngestReply::Rejected { error }) => {
                prop_assert!(!error.is_empty());
                prop_assert!(error.len() <= MAX_ERROR_TEXT + 3);
            }
            Err(e) => check_error(&e)?,
        }
        if let Err(e) = heartbeat(bytes) {
            check_error(&e)?;
        }
        let data = String::from_utf8_lossy(bytes);
        if let Some(v) = response_to("message", &data, ID) {
            prop_assert_eq!(v["id"].as_u64(), Some(ID));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn an_accepted_reply_reads_back_in_every_wrapping(
            request_id in "[A-Za-z0-9-]{1,40}",
            duplicate in any::<bool>(),
            wrap in 0..3usize,
        ) {
            let body = json!({"status": "accepted", "request_id": request_id, "duplicate": duplicate});
            let result = match wrap {
                0 => json!({"structuredContent": body, "isError": false}),
                1 => json!({"structuredContent": {"result": body}}),
                _ => json!({"content": [{"type": "text", "text": body.to_string()}]}),
            };
            let bytes = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": ID, "result": result})).unwrap();
            prop_assert_eq!(ingest(&bytes), Ok(IngestReply::Accepted { request_id, duplicate }));
        }

        #[test]
        fn responses_read_or_are_refused_with_a_reason(response in response()) {
            let bytes = serde_json::to_vec(&response).unwrap();
            check(&bytes)?;
            let id_ok = response["id"].as_u64() == Some(ID);
            match ingest(&bytes) {
                Err(CallError::Protocol(m)) if !id_ok => prop_assert!(m.contains("does not match")),
                _ if !id_ok => prop_assert!(false, "a response to another id was read"),
                Err(CallError::Protocol(m)) if response.get("error").is_some() => {
                    prop_assert!(m.starts_with("JSON-RPC error"), "{m}")
                }
                _ => {}
            }
        }

        #[test]
        fn mutated_responses_read_or_are_refused_with_a_reason(
            response in response(),
            edits in edits(),
        ) {
            check(&mutate(&serde_json::to_vec(&response).unwrap(), &edits))?;
        }

        #[test]
        fn arbitrary_bytes_are_refused_as_not_json(bytes in noise(2000)) {
            check(&bytes)?;
        }

        #[test]
        fn an_http_error_status_keeps_its_kind_and_clips_the_body(
            status in 400..600u16,
            retry_text in prop::option::of(prop::sample::select(
                &["5", " 10 ", "99999999999999", "soon", "-1", "1.5", ""][..],
            )),
            body in long_text(),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let mut headers = HeaderMap::new();
            if let Some(v) = retry_text {
                headers.insert("retry-after", HeaderValue::from_static(v));
            }
            let e = status_error(status, &headers, &body);
            let expected = match status.as_u16() {
                413 => "too_large",
                401 | 403 => "unauthorized",
                429 => "rate_limited",
                _ => "transport",
            };
            prop_assert_eq!(e.kind(), expected);
            let message = match &e {
                CallError::TooLarge(m) | CallError::Unauthorized(m) | CallError::Transport(m) => m,
                CallError::RateLimited { message, retry_after } => {
                    let sent = retry_text.and_then(|v| v.trim().parse::<u64>().ok());
                    prop_assert_eq!(retry_after.map(|d| d.as_secs()), sent.map(|s| s.min(300)));
                    message
                }
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            let status_text = format!("HTTP {status}");
            prop_assert!(message.starts_with(&status_text), "{}", message);
            prop_assert!(message.len() <= MAX_ERROR_TEXT + WORDS);
        }
    }

    #[test]
    fn deep_nesting_is_refused_as_not_json() {
        for depth in [129, 10_000, 1_000_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let e = ingest(text.as_bytes()).unwrap_err();
                assert!(
                    matches!(&e, CallError::Protocol(m) if m.starts_with("reply is not JSON")),
                    "{e:?}"
                );
                assert!(response_to("message", &text, ID).is_none());
            }
        }
    }

    /// Found by these properties: the error code, the response id and an unknown status were
    /// quoted whole; an empty error text made an empty error.
    #[test]
    fn a_huge_error_code_response_id_or_status_is_clipped() {
        let huge = "xyé\n".repeat(2_000);
        for response in [
            json!({"jsonrpc": "2.0", "id": ID, "error": {"code": huge, "message": "okokok"}}),
            json!({"jsonrpc": "2.0", "id": huge, "result": {}}),
            json!({"jsonrpc": "2.0", "id": ID, "result": {"structuredContent": {"status": huge}}}),
        ] {
            let e = ingest(&serde_json::to_vec(&response).unwrap()).unwrap_err();
            let CallError::Protocol(m) = &e else {
                panic!("{e:?}")
            };
            assert!(m.contains('…') && m.len() <= MAX_ERROR, "{} bytes", m.len());
        }
        let empty = json!({"jsonrpc": "2.0", "id": ID, "result": {
            "isError": true, "content": [{"type": "text", "text": " "}]}});
        let e = ingest(&serde_json::to_vec(&empty).unwrap()).unwrap_err();
        assert_eq!(
            e,
            CallError::ToolError("tool reported an error without text".into())
        );
        let rejected = json!({"status": "error", "error": ""});
        assert_eq!(
            parse_ingest(&rejected),
            Ok(IngestReply::Rejected {
                error: "(no reason given)".into()
            })
        );
    }

    #[test]
    fn a_long_multi_line_non_ascii_error_is_clipped_on_a_character_boundary() {
        // The multi-byte character straddles byte 1000 of the message, where the clip cuts.
        for prefix in ["", "x", "xy", "xyz"] {
            let message = format!("{prefix}{}", "Ошибка 😀\nстрока\r\n".repeat(200));
            let response =
                json!({"jsonrpc": "2.0", "id": ID, "error": {"code": -32000, "message": message}});
            let e = ingest(&serde_json::to_vec(&response).unwrap()).unwrap_err();
            let CallError::Protocol(m) = &e else {
                panic!("{e:?}")
            };
            assert!(m.ends_with('…') && m.len() <= MAX_ERROR_TEXT + WORDS, "{m}");
        }
    }
}

mod sse {
    //! The server-sent-events reader both MCP transports use.

    use tgingest::switchboard::{SseEvent, SseParser};

    use super::*;

    const NAMES: &[&str] = &[
        "message",
        "endpoint",
        "ping",
        "Ошибка",
        "a:b",
        "😀",
        " spaced",
    ];
    const VALUES: &[&str] = &[
        "",
        "x",
        " leading space",
        "a:b:c",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}",
        "/messages/?session_id=ab",
        "Привет, мир",
        "😀",
        "data",
        ":",
        "\u{0}",
    ];

    /// An event as a peer writes it: name, data lines, a comment, other fields.
    #[derive(Debug, Clone)]
    struct Written {
        name: Option<&'static str>,
        lines: Vec<String>,
        comment: bool,
        id: bool,
    }

    fn written() -> impl Strategy<Value = Written> {
        (
            prop::option::of(prop::sample::select(NAMES)),
            prop::collection::vec(
                (prop::sample::select(VALUES), 1..300usize).prop_map(|(v, n)| v.repeat(n)),
                0..4,
            ),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(name, lines, comment, id)| Written {
                name,
                lines,
                comment,
                id,
            })
    }

    fn stream(events: &[Written], crlf: bool) -> (Vec<u8>, Vec<SseEvent>) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        let mut expected = Vec::new();
        for w in events {
            if w.comment {
                text.push_str(&format!(": keep-alive{eol}"));
            }
            if let Some(name) = w.name {
                text.push_str(&format!("event: {name}{eol}"));
            }
            if w.id {
                text.push_str(&format!("id: 5{eol}retry: 100{eol}"));
            }
            for line in &w.lines {
                text.push_str(&format!("data: {line}{eol}"));
            }
            text.push_str(eol);
            if !w.lines.is_empty() {
                expected.push(SseEvent {
                    event: w.name.unwrap_or("message").to_string(),
                    data: w.lines.join("\n"),
                });
            }
        }
        (text.into_bytes(), expected)
    }

    /// The events of `bytes` fed in one piece and fed split at `cuts`.
    fn parse(bytes: &[u8], cuts: &[Index]) -> (Vec<SseEvent>, Vec<SseEvent>) {
        let whole = SseParser::default()
            .push(bytes)
            .expect("under the size limit");
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let mut parser = SseParser::default();
        let chunked = at
            .windows(2)
            .flat_map(|w| {
                parser
                    .push(&bytes[w[0]..w[1]])
                    .expect("under the size limit")
            })
            .collect();
        (whole, chunked)
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn events_read_back_whole_or_in_any_chunks(
            events in prop::collection::vec(written(), 0..6),
            crlf in any::<bool>(),
            cuts in prop::collection::vec(any::<Index>(), 0..8),
        ) {
            let (bytes, expected) = stream(&events, crlf);
            let (whole, chunked) = parse(&bytes, &cuts);
            prop_assert_eq!(&whole, &expected);
            prop_assert_eq!(&chunked, &expected);
        }

        #[test]
        fn mutated_streams_read_the_same_in_any_chunks(
            events in prop::collection::vec(written(), 0..6),
            edits in edits(),
            cuts in prop::collection::vec(any::<Index>(), 0..8),
        ) {
            let (bytes, _) = stream(&events, false);
            let (whole, chunked) = parse(&mutate(&bytes, &edits), &cuts);
            prop_assert_eq!(whole, chunked);
        }

        #[test]
        fn arbitrary_bytes_read_the_same_in_any_chunks(
            bytes in noise(2000),
            cuts in prop::collection::vec(any::<Index>(), 0..8),
        ) {
            let (whole, chunked) = parse(&bytes, &cuts);
            prop_assert_eq!(whole, chunked);
        }
    }
}

mod config {
    //! The config loader: TOML text to a validated configuration.

    use std::path::{Path, PathBuf};

    use tgingest::config::{ConfigError, load_text};

    use super::*;

    /// Values of every type and none that fits: huge numbers, bad durations, deep arrays.
    const VALUES: &[&str] = &[
        "0",
        "-1",
        "99999999999999999999",
        "9223372036854775807",
        "1e308",
        "inf",
        "nan",
        "true",
        "\"\"",
        "\"90s\"",
        "\"99999999999999999999d\"",
        "\"-5m\"",
        "\"Ошибка 😀\"",
        "\"nats://\"",
        "\"127.0.0.1:99999\"",
        "[]",
        "[1, \"a\"]",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "'''multi\nline'''",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];

    const PATH: &str = "fuzz.toml";

    /// The shipped examples and every refused sample.
    fn samples() -> &'static [String] {
        static SAMPLES: OnceLock<Vec<String>> = OnceLock::new();
        SAMPLES.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut files: Vec<PathBuf> = ["config", "tests/fixtures/bad-configs"]
                .iter()
                .flat_map(|d| std::fs::read_dir(root.join(d)).expect("a sample directory"))
                .map(|e| e.expect("a directory entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            let texts: Vec<String> = files
                .iter()
                .map(|p| std::fs::read_to_string(p).expect("a sample"))
                .collect();
            assert!(texts.len() >= 20, "too few samples");
            texts
        })
    }

    /// A validated config that survives writing it back out, or a typed error that names the
    /// place (line and column, or the key) and says what is wrong.
    fn check(text: &str) -> Result<(), TestCaseError> {
        match load_text(Path::new(PATH), text, Vec::new()) {
            Ok(loaded) => {
                let config = loaded.config;
                let secrets_unset =
                    !config.telegram.api_hash.is_set() && !config.switchboard.auth_token.is_set();
                let written =
                    toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match load_text(Path::new(PATH), &written, Vec::new()) {
                    Ok(again) if secrets_unset => prop_assert_eq!(again.config, config),
                    Ok(_) => {}
                    Err(e) => prop_assert!(!secrets_unset, "written back, it fails: {e}"),
                }
            }
            Err(e) => {
                prop_assert!(!e.to_string().trim().is_empty());
                match e {
                    ConfigError::Syntax { path, message } => {
                        prop_assert_eq!(path, Path::new(PATH));
                        prop_assert!(!message.trim().is_empty());
                    }
                    ConfigError::Type {
                        origin,
                        key,
                        message: why,
                    }
                    | ConfigError::Invalid {
                        origin,
                        key,
                        allowed: why,
                        ..
                    } => {
                        prop_assert_eq!(origin, PATH);
                        prop_assert!(!key.is_empty() && !why.trim().is_empty());
                    }
                    other => prop_assert!(false, "text alone caused {other}"),
                }
            }
        }
        Ok(())
    }

    #[test]
    fn every_sample_loads_or_is_refused_with_a_reason() {
        for text in samples() {
            check(text).unwrap();
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        for depth in [1_000, 100_000] {
            for (open, close) in [("[", "]"), ("{ a = ", " }")] {
                let text = format!("x = {}1{}\n", open.repeat(depth), close.repeat(depth));
                check(&text).unwrap();
            }
            check(&format!("{}= 1\n", "a.".repeat(depth))).unwrap();
            check(&"[a]\n".repeat(depth)).unwrap();
        }
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn arbitrary_text_loads_or_is_refused_with_a_reason(
            text in any::<String>(),
            bytes in noise(600),
        ) {
            check(&text)?;
            check(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn mutated_samples_load_or_are_refused_with_a_reason(
            which in any::<Index>(),
            edits in edits(),
        ) {
            let sample = &samples()[which.index(samples().len())];
            check(&String::from_utf8_lossy(&mutate(sample.as_bytes(), &edits)))?;
        }

        #[test]
        fn samples_with_a_line_dropped_doubled_or_retyped_load_or_are_refused_with_a_reason(
            which in any::<Index>(),
            line in any::<Index>(),
            how in 0..3usize,
            value in prop::sample::select(VALUES),
        ) {
            let sample = &samples()[which.index(samples().len())];
            let mut lines: Vec<String> = sample.lines().map(str::to_string).collect();
            if lines.is_empty() {
                return Ok(());
            }
            let i = line.index(lines.len());
            match how {
                0 => {
                    lines.remove(i);
                }
                1 => lines.insert(i, lines[i].clone()),
                _ => {
                    if let Some((key, _)) = lines[i].split_once('=') {
                        lines[i] = format!("{key}= {value}");
                    }
                }
            }
            check(&lines.join("\n"))?;
        }
    }
}

mod admin_bodies {
    //! The admin API's JSON request bodies.

    use serde_json::{Value, json};
    use tgingest::accounts::{ControlError, ImportFormat};
    use tgingest::admin::ApiError;
    use tgingest::admin::accounts::{ConsentRequest, ImportRequest};
    use tgingest::admin::logins::{CodeRequest, PasswordRequest, PhoneRequest};
    use tgingest::admin::replay::StartRequest;

    use super::*;

    const ODD: &[&str] = &[
        "",
        "пароль \"quoted\" \\ back",
        "😀",
        "\u{0}",
        "line\nbreak",
        "+44 20 7946 0958",
    ];

    /// A secret the body carries: random letters and digits (so an echo is found), or an odd one.
    fn secret() -> impl Strategy<Value = String> {
        prop_oneof![
            (12..40usize, any::<u64>()).prop_map(|(len, seed)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let abc = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
                (0..len)
                    .map(|_| abc[rng.next_u32() as usize % abc.len()] as char)
                    .collect()
            }),
            prop::sample::select(ODD).prop_map(str::to_string),
        ]
    }

    /// The 400 a body that is not the JSON asked for gets: it names the problem and the expected
    /// shape, and repeats none of the body's secrets.
    fn check_refusal(e: &ApiError, secrets: &[&str]) -> Result<(), TestCaseError> {
        prop_assert_eq!(e.status, 400);
        prop_assert_eq!(e.code.as_str(), "bad_request");
        prop_assert!(
            e.error.contains("request body") && e.error.contains("expected"),
            "{}",
            e.error
        );
        for s in secrets.iter().filter(|s| s.len() >= 12) {
            prop_assert!(!e.error.contains(*s), "the error repeats a secret");
        }
        Ok(())
    }

    /// Each endpoint's body decoder, returning the fields it read.
    type Decoder = fn(&[u8]) -> Result<Vec<Option<String>>, ApiError>;

    const ENDPOINTS: &[(&str, &[&str], Decoder)] = &[
        ("import", &["format", "session", "account_id"], |b| {
            ImportRequest::from_body(b).map(|r| vec![Some(r.format), Some(r.session), r.account_id])
        }),
        ("consent", &["by", "scope"], |b| {
            ConsentRequest::from_body(b).map(|r| vec![Some(r.by), Some(r.scope)])
        }),
        ("phone", &["phone"], |b| {
            PhoneRequest::from_body(b).map(|r| vec![Some(r.phone)])
        }),
        ("code", &["code"], |b| {
            CodeRequest::from_body(b).map(|r| vec![Some(r.code)])
        }),
        ("password", &["password"], |b| {
            PasswordRequest::from_body(b).map(|r| vec![Some(r.password)])
        }),
    ];

    fn body(fields: &[&str], values: &[String]) -> Vec<u8> {
        let object: serde_json::Map<String, Value> = fields
            .iter()
            .zip(values)
            .map(|(f, v)| ((*f).to_string(), json!(v)))
            .collect();
        serde_json::to_vec(&object).unwrap()
    }

    fn check_replay(body: &[u8]) -> Result<(), TestCaseError> {
        match StartRequest::from_body(body) {
            Ok(request) => {
                let again = serde_json::to_vec(&request).unwrap();
                let reread =
                    StartRequest::from_body(&again).map_err(|e| TestCaseError::fail(e.error))?;
                prop_assert_eq!(
                    serde_json::to_value(&reread).unwrap(),
                    serde_json::to_value(&request).unwrap()
                );
                if let Err(e) = request.parse() {
                    prop_assert_eq!((e.status, e.code.as_str()), (400, "bad_request"));
                    prop_assert!(
                        e.error.starts_with("since ")
                            || e.error.starts_with("until ")
                            || e.error.contains("both given"),
                        "{}",
                        e.error
                    );
                }
            }
            Err(e) => {
                prop_assert_eq!((e.status, e.code.as_str()), (400, "bad_request"));
                prop_assert!(e.error.contains("expected {"), "{}", e.error);
            }
        }
        Ok(())
    }

    const TIMES: &[&str] = &[
        "90m",
        "2h",
        "1h 30m",
        "2026-11-21T12:00:00Z",
        "2026-11-21T14:00:00+02:00",
        "99999999999999999999d",
        "18446744073709551615s",
        "584942417355y",
        "-2h",
        "",
        "yesterday",
        "9999-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "Ошибка",
    ];

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn a_body_reads_back_its_fields(
            endpoint in any::<Index>(),
            values in prop::collection::vec(secret(), 3),
        ) {
            let (name, fields, decode) = ENDPOINTS[endpoint.index(ENDPOINTS.len())];
            let read = decode(&body(fields, &values)).map_err(|e| TestCaseError::fail(e.error))?;
            let sent: Vec<Option<String>> = values.iter().take(fields.len()).cloned().map(Some).collect();
            prop_assert_eq!(read, sent, "{}", name);
        }

        #[test]
        fn mutated_bodies_read_or_are_refused_without_repeating_them(
            endpoint in any::<Index>(),
            values in prop::collection::vec(secret(), 3),
            edits in edits(),
        ) {
            let (_, fields, decode) = ENDPOINTS[endpoint.index(ENDPOINTS.len())];
            let mutated = mutate(&body(fields, &values), &edits);
            if let Err(e) = decode(&mutated) {
                let secrets: Vec<&str> = values.iter().map(String::as_str).collect();
                check_refusal(&e, &secrets)?;
            }
            if let Ok(read) = ImportRequest::from_body(&mutated) {
                match ImportFormat::parse(&read.format) {
                    Ok(_) => {}
                    Err(ControlError::UnknownFormat(shown)) => prop_assert!(shown.chars().count() <= 20),
                    Err(other) => prop_assert!(false, "{other}"),
                }
            }
            check_replay(&mutated)?;
        }

        #[test]
        fn arbitrary_bytes_are_read_or_refused_with_a_reason(bytes in noise(600)) {
            for (_, _, decode) in ENDPOINTS {
                if let Err(e) = decode(&bytes) {
                    check_refusal(&e, &[])?;
                }
            }
            check_replay(&bytes)?;
        }

        #[test]
        fn a_replay_body_reads_back_and_its_times_parse_or_are_refused_by_name(
            since in prop::option::of(prop::sample::select(TIMES)),
            from_sequence in prop::option::of(any::<u64>()),
            until in prop::option::of(prop::sample::select(TIMES)),
            account in prop::option::of(secret()),
        ) {
            let request = json!({"since": since, "from_sequence": from_sequence, "until": until, "account": account});
            let bytes = serde_json::to_vec(&request).unwrap();
            let read = StartRequest::from_body(&bytes).map_err(|e| TestCaseError::fail(e.error))?;
            prop_assert_eq!(serde_json::to_value(&read).unwrap(), request);
            check_replay(&bytes)?;
        }
    }

    /// Found by these properties: the replay body took any bytes after its JSON.
    #[test]
    fn trailing_bytes_after_the_json_are_refused() {
        for body in [
            &b"{} x"[..],
            b"{\"since\": \"2h\"}}",
            b"{}\n{}",
            b"null\xff",
        ] {
            let e = StartRequest::from_body(body).expect_err("trailing bytes accepted");
            assert_eq!((e.status, e.code.as_str()), (400, "bad_request"));
            assert!(
                e.error.contains("trailing characters") || e.error.contains("expected {"),
                "{}",
                e.error
            );
            for (name, _, decode) in ENDPOINTS {
                let e = decode(body)
                    .err()
                    .unwrap_or_else(|| panic!("{name} took trailing bytes"));
                check_refusal(&e, &[]).unwrap();
            }
        }
    }

    #[test]
    fn deep_nesting_and_wrong_types_are_refused_with_a_reason() {
        let deep = |open: &str, close: &str| {
            format!("{}1{}", open.repeat(100_000), close.repeat(100_000)).into_bytes()
        };
        let mut bodies = vec![
            deep("[", "]"),
            deep("{\"a\":", "}"),
            deep("{\"phone\":[", "]}"),
        ];
        for v in ["123", "null", "[]", "{}", "true", "\"x\""] {
            for f in [
                "format", "session", "by", "phone", "code", "password", "since",
            ] {
                bodies.push(format!("{{\"{f}\": {v}}}").into_bytes());
            }
        }
        for b in &bodies {
            for (name, _, decode) in ENDPOINTS {
                if let Err(e) = decode(b) {
                    check_refusal(&e, &[]).unwrap_or_else(|f| panic!("{name}: {f}"));
                }
            }
            check_replay(b).unwrap();
        }
    }
}
