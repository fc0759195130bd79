//! Importing the string sessions Telethon and Pyrogram write, so an account logged in with either
//! library can be moved to tgingest without a new login.
//!
//! Telethon `StringSession`: `'1'` then url-safe base64 of `struct.pack('>B4sH256s', dc_id, ipv4,
//! port, auth_key)` (263 bytes) or `'>B16sH256s'` with an IPv6 address (275 bytes).
//!
//! Pyrogram: url-safe base64, padding stripped, of `struct.pack('>BI?256sQ?', dc_id, api_id,
//! test_mode, auth_key, user_id, is_bot)` (271 bytes); strings from before 2.0 pack
//! `'>B?256sI?'` (263 bytes) or `'>B?256sQ?'` (267 bytes), without the api id. Pyrogram strings
//! carry no address, so DCs are addressed from grammers' table of production DCs (the one
//! `SessionData::default()` holds) or, in test mode, from Telegram's test DCs as Pyrogram lists
//! them.
//!
//! Errors say what is wrong and where, and never repeat the string or any key byte.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use grammers_session::SessionData;
use grammers_session::types::{DcOption, UpdatesState};

use super::SessionSnapshot;

const AUTH_KEY_LEN: usize = 256;
const TELETHON_V4_LEN: usize = 1 + 4 + 2 + AUTH_KEY_LEN;
const TELETHON_V6_LEN: usize = 1 + 16 + 2 + AUTH_KEY_LEN;
const PYROGRAM_LEN: usize = 1 + 4 + 1 + AUTH_KEY_LEN + 8 + 1;
const PYROGRAM_OLD_LEN: usize = 1 + 1 + AUTH_KEY_LEN + 4 + 1;
const PYROGRAM_OLD_64_LEN: usize = 1 + 1 + AUTH_KEY_LEN + 8 + 1;

/// Telegram's test DCs, with the addresses Pyrogram uses for them (port 443).
const TEST_DCS: [(i32, Ipv4Addr, Ipv6Addr); 3] = [
    (
        1,
        Ipv4Addr::new(149, 154, 175, 10),
        Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xe),
    ),
    (
        2,
        Ipv4Addr::new(149, 154, 167, 40),
        Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xe),
    ),
    (
        3,
        Ipv4Addr::new(149, 154, 175, 117),
        Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xe),
    ),
];

/// Why a session string could not be imported. Never carries the string or key bytes.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("empty {lib} session string")]
    Empty { lib: &'static str },
    #[error(
        "not a Telethon string session: it starts with {found:?}, but Telethon writes version \
         '1' first (a Pyrogram string? use the Pyrogram import)"
    )]
    TelethonVersion { found: char },
    #[error("{lib} session string is not url-safe base64: {problem} at character {position}")]
    BadBase64 {
        lib: &'static str,
        position: usize,
        problem: String,
    },
    #[error(
        "{lib} session string is not url-safe base64: {chars} characters is not a possible \
         base64 length (truncated?)"
    )]
    BadBase64Length { lib: &'static str, chars: usize },
    #[error("{lib} session string decodes to {found} bytes; expected {expected}")]
    WrongLength {
        lib: &'static str,
        found: usize,
        expected: &'static str,
    },
    #[error("{lib} session names DC {dc_id}; {allowed}")]
    DcOutOfRange {
        lib: &'static str,
        dc_id: i32,
        allowed: &'static str,
    },
    #[error("{lib} session names port 0 for its DC")]
    BadPort { lib: &'static str },
    #[error("{lib} session names the unspecified address for its DC")]
    BadAddress { lib: &'static str },
    #[error("{lib} session has an all-zero auth key: it was never logged in")]
    ZeroAuthKey { lib: &'static str },
    #[error(
        "{lib} session belongs to a bot; tgingest ingests what user accounts see, so log in \
         with a user account instead"
    )]
    BotSession { lib: &'static str },
}

/// Url-safe alphabet, padding optional (Telethon pads, Pyrogram strips it).
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes url-safe base64; `offset` is the number of characters before `text` in the string, so
/// positions count from the start of what the user pasted (1-based).
fn decode_base64(lib: &'static str, text: &str, offset: usize) -> Result<Vec<u8>, ImportError> {
    URL_SAFE_ANY_PAD.decode(text).map_err(|e| match e {
        base64::DecodeError::InvalidByte(at, byte) => ImportError::BadBase64 {
            lib,
            position: offset + at + 1,
            problem: describe_invalid(byte),
        },
        base64::DecodeError::InvalidLastSymbol(at, _) => ImportError::BadBase64 {
            lib,
            position: offset + at + 1,
            problem: "a final character with bits set past the end of the data".into(),
        },
        base64::DecodeError::InvalidLength(_) => ImportError::BadBase64Length {
            lib,
            chars: text.len(),
        },
        base64::DecodeError::InvalidPadding => ImportError::BadBase64 {
            lib,
            position: offset + text.len(),
            problem: "wrong padding".into(),
        },
    })
}

/// Names an invalid character; base64 alphanumerics are always valid, so this never shows data.
fn describe_invalid(byte: u8) -> String {
    match byte {
        b'+' | b'/' => format!(
            "{:?} (standard base64; these libraries write url-safe '-' and '_')",
            byte as char
        ),
        b'=' => "'=' inside the data".into(),
        b if b.is_ascii_graphic() || b == b' ' => format!("invalid character {:?}", b as char),
        b => format!("invalid byte {b:#04x}"),
    }
}

/// A big-endian integer of up to 8 bytes (Python's `I` and `Q`; `Q` reinterpreted as signed).
fn be_int(bytes: &[u8]) -> i64 {
    bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)) as i64
}

fn auth_key(lib: &'static str, bytes: &[u8]) -> Result<[u8; AUTH_KEY_LEN], ImportError> {
    let mut key = [0u8; AUTH_KEY_LEN];
    key.copy_from_slice(bytes);
    if key.iter().all(|&b| b == 0) {
        return Err(ImportError::ZeroAuthKey { lib });
    }
    Ok(key)
}

/// A snapshot homed on `dc_id`, with grammers' production DC table and `home` replacing it.
fn snapshot_with(home: DcOption, user_id: Option<i64>, test_mode: bool) -> SessionSnapshot {
    let mut data = SessionData {
        home_dc: home.id,
        ..SessionData::default()
    };
    if test_mode {
        data.dc_options.clear();
        for (id, v4, v6) in TEST_DCS {
            data.dc_options.insert(
                id,
                DcOption {
                    id,
                    ipv4: SocketAddrV4::new(v4, 443),
                    ipv6: SocketAddrV6::new(v6, 443, 0, 0),
                    auth_key: None,
                },
            );
        }
    }
    data.dc_options.insert(home.id, home);
    let mut snapshot = SessionSnapshot::from_session_data(&data);
    snapshot.updates_state = UpdatesState::default();
    snapshot.user_id = user_id;
    snapshot.test_mode = test_mode;
    snapshot
}

fn production_dc(id: i32) -> Option<DcOption> {
    SessionData::default().dc_options.remove(&id)
}

/// Decodes a Telethon `StringSession` string (surrounding white space ignored).
pub fn import_telethon(s: &str) -> Result<SessionSnapshot, ImportError> {
    const LIB: &str = "Telethon";
    let s = s.trim();
    let mut chars = s.chars();
    let version = chars.next().ok_or(ImportError::Empty { lib: LIB })?;
    if version != '1' {
        return Err(ImportError::TelethonVersion { found: version });
    }
    let bytes = decode_base64(LIB, chars.as_str(), 1)?;
    let ip_len = match bytes.len() {
        TELETHON_V4_LEN => 4,
        TELETHON_V6_LEN => 16,
        found => {
            return Err(ImportError::WrongLength {
                lib: LIB,
                found,
                expected: "263 (IPv4) or 275 (IPv6)",
            });
        }
    };
    let dc_id = i32::from(bytes[0]);
    let Some(default) = production_dc(dc_id) else {
        return Err(ImportError::DcOutOfRange {
            lib: LIB,
            dc_id,
            allowed: "Telegram's DCs are 1 to 5",
        });
    };
    let ip = &bytes[1..1 + ip_len];
    let port = u16::from_be_bytes([bytes[1 + ip_len], bytes[2 + ip_len]]);
    if port == 0 {
        return Err(ImportError::BadPort { lib: LIB });
    }
    let key = auth_key(LIB, &bytes[3 + ip_len..])?;
    let mut dc = DcOption {
        auth_key: Some(key),
        ..default
    };
    if let Ok(v4) = <[u8; 4]>::try_from(ip) {
        let addr = Ipv4Addr::from(v4);
        if addr.is_unspecified() {
            return Err(ImportError::BadAddress { lib: LIB });
        }
        dc.ipv4 = SocketAddrV4::new(addr, port);
    } else if let Ok(v6) = <[u8; 16]>::try_from(ip) {
        let addr = Ipv6Addr::from(v6);
        if addr.is_unspecified() {
            return Err(ImportError::BadAddress { lib: LIB });
        }
        dc.ipv6 = SocketAddrV6::new(addr, port, 0, 0);
    }
    Ok(snapshot_with(dc, None, false))
}

/// Decodes a Pyrogram session string (current and pre-2.0 formats; white space ignored).
pub fn import_pyrogram(s: &str) -> Result<SessionSnapshot, ImportError> {
    const LIB: &str = "Pyrogram";
    let s = s.trim();
    if s.is_empty() {
        return Err(ImportError::Empty { lib: LIB });
    }
    let bytes = decode_base64(LIB, s, 0)?;
    // (dc_id, test_mode, auth_key, user_id, is_bot) for each format.
    let (dc_id, test_mode, key, user_id, is_bot) = match bytes.len() {
        PYROGRAM_LEN => (
            bytes[0],
            bytes[5],
            &bytes[6..262],
            be_int(&bytes[262..270]),
            bytes[270],
        ),
        PYROGRAM_OLD_LEN => (
            bytes[0],
            bytes[1],
            &bytes[2..258],
            be_int(&bytes[258..262]),
            bytes[262],
        ),
        PYROGRAM_OLD_64_LEN => (
            bytes[0],
            bytes[1],
            &bytes[2..258],
            be_int(&bytes[258..266]),
            bytes[266],
        ),
        found => {
            return Err(ImportError::WrongLength {
                lib: LIB,
                found,
                expected: "271 (Pyrogram 2), or 263 or 267 (before 2.0)",
            });
        }
    };
    let test_mode = test_mode != 0;
    let dc_id = i32::from(dc_id);
    let default = if test_mode {
        TEST_DCS
            .iter()
            .find(|(id, _, _)| *id == dc_id)
            .map(|&(id, v4, v6)| DcOption {
                id,
                ipv4: SocketAddrV4::new(v4, 443),
                ipv6: SocketAddrV6::new(v6, 443, 0, 0),
                auth_key: None,
            })
    } else {
        production_dc(dc_id)
    };
    let Some(default) = default else {
        return Err(ImportError::DcOutOfRange {
            lib: LIB,
            dc_id,
            allowed: if test_mode {
                "Telegram's test DCs are 1 to 3"
            } else {
                "Telegram's DCs are 1 to 5"
            },
        });
    };
    let key = auth_key(LIB, key)?;
    if is_bot != 0 {
        return Err(ImportError::BotSession { lib: LIB });
    }
    let dc = DcOption {
        auth_key: Some(key),
        ..default
    };
    Ok(snapshot_with(dc, Some(user_id), test_mode))
}
