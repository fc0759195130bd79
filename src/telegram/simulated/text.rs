//! Varied message texts, names and titles, and the personal data embedded in some texts.
//!
//! Draws go through [`below`] and [`chance`], which use only `next_u64` of the ChaCha stream, so
//! the output depends on nothing but the ChaCha8 keystream (stable across platforms and versions
//! of `rand`'s distribution code).

use std::ops::Range;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::event::{Media, MediaKind};

/// A uniform draw in `0..n` (`0` when `n` is 0); the bias of the multiply-shift is below 2^-50.
pub(crate) fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// True with probability `p`.
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    unit < p
}

fn pick<'a>(rng: &mut ChaCha8Rng, list: &[&'a str]) -> &'a str {
    list[below(rng, list.len() as u64) as usize]
}

/// Picks from `list` by a structural hash (names and titles, which must not cost a ChaCha stream).
fn pick_by<'a>(h: u64, list: &[&'a str]) -> &'a str {
    list[(h % list.len() as u64) as usize]
}

/// Kinds of personal or secret data that the simulator embeds in texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address.
    Email,
    /// A phone number in international format.
    Phone,
    /// A payment card number that passes the Luhn check.
    CardNumber,
    /// An IBAN with valid check digits (DE, GB or NL).
    Iban,
    /// A Telegram login code (every message of chat 777000).
    LoginCode,
    /// An API credential (Telegram bot token, GitHub token or AWS access key id).
    ApiToken,
}

impl PiiKind {
    /// The kinds that ordinary chats embed at `pii_rate` (login codes come only from 777000).
    pub const IN_CHATS: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::CardNumber,
        PiiKind::Iban,
        PiiKind::ApiToken,
    ];
}

/// The personal data embedded in a text: its kind, the exact substring and where it sits, so
/// tests of redaction can check that it is gone and compute the masked text without a detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pii {
    /// What it is.
    pub kind: PiiKind,
    /// The substring as it appears in the text.
    pub value: String,
    /// Byte range of `value` in the event's text (`text[span] == value`).
    pub span: Range<usize>,
}

impl Pii {
    /// The same label for the value moved `by` bytes to the right (text put in front of it).
    pub(crate) fn shifted(mut self, by: usize) -> Pii {
        self.span = self.span.start + by..self.span.end + by;
        self
    }
}

const FIRST_NAMES: &[&str] = &[
    "Anna", "Boris", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiroshi", "Ines", "Jonas",
    "Katya", "Lucas", "Mei", "Nikolai", "Olga", "Pedro", "Qiu", "Rosa", "Sven", "Tamar", "Umar",
    "Vera", "Wojtek", "Ximena", "Yusuf", "Zoë", "Léa", "Søren", "Ayşe", "Matías",
];

const LAST_NAMES: &[&str] = &[
    "Ivanova",
    "Schmidt",
    "Rossi",
    "Kovalenko",
    "Yılmaz",
    "Haddad",
    "Lindqvist",
    "Tanaka",
    "García",
    "Novak",
    "Petrov",
    "Dubois",
    "Chen",
    "Okafor",
    "Müller",
    "Silva",
    "Kowalski",
    "Nakamura",
    "O'Brien",
    "Horvat",
];

/// A person's display name, chosen by a structural hash.
pub(crate) fn person_name(h: u64) -> String {
    let first = pick_by(h, FIRST_NAMES);
    let last = pick_by(h >> 20, LAST_NAMES);
    format!("{first} {last}")
}

/// A username-like handle for a display name.
pub(crate) fn handle(h: u64) -> String {
    let first = pick_by(h, FIRST_NAMES);
    let ascii: String = first
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("{ascii}_{}", h % 10_000)
}

const GROUP_ADJ: &[&str] = &[
    "Weekend",
    "Family",
    "Office",
    "Night",
    "Book",
    "Running",
    "Board game",
    "Garden",
    "Climbing",
    "Kitchen",
    "Neighbourhood",
    "Alumni",
];
const GROUP_NOUN: &[&str] = &[
    "Crew", "Club", "Chat", "Squad", "Circle", "Gang", "Friends", "Team",
];
const TOPIC_NAMES: &[&str] = &[
    "General",
    "Announcements",
    "Help",
    "Off-topic",
    "Releases",
    "Jobs",
];
const CHANNEL_NAMES: &[&str] = &[
    "Daily Digest",
    "Rail Updates",
    "City News",
    "Dev Notes",
    "Market Watch",
    "Recipe of the Day",
    "Tech Briefing",
    "Weather Alerts",
];

/// A basic group's or supergroup's title.
pub(crate) fn group_title(h: u64) -> String {
    format!("{} {}", pick_by(h, GROUP_ADJ), pick_by(h >> 16, GROUP_NOUN))
}

/// A forum's title.
pub(crate) fn forum_title(h: u64) -> String {
    format!("{} Community", pick_by(h, CHANNEL_NAMES))
}

/// A broadcast channel's title.
pub(crate) fn channel_title(h: u64) -> String {
    pick_by(h, CHANNEL_NAMES).to_string()
}

/// The title of forum topic `i` (0 is General).
pub(crate) fn topic_title(i: usize) -> &'static str {
    TOPIC_NAMES[i % TOPIC_NAMES.len()]
}

const OPENERS: &[&str] = &[
    "",
    "",
    "",
    "Hey, ",
    "So ",
    "Quick update: ",
    "Honestly, ",
    "FYI ",
    "Good morning! ",
    "Btw, ",
    "Ok so ",
    "Hi all, ",
];
const SUBJECTS: &[&str] = &[
    "I",
    "we",
    "the team",
    "my sister",
    "Anna",
    "the landlord",
    "our neighbour",
    "the courier",
    "Jonas",
    "the kids",
    "the plumber",
    "my boss",
];
const VERBS: &[&str] = &[
    "will bring",
    "forgot",
    "found",
    "ordered",
    "fixed",
    "can't find",
    "just sent",
    "is looking at",
    "finally returned",
    "needs",
    "already paid for",
    "is picking up",
];
const OBJECTS: &[&str] = &[
    "the keys",
    "the tickets",
    "the report",
    "a new router",
    "the invoice",
    "the cake",
    "two pizzas",
    "the slides",
    "the charger",
    "the contract draft",
    "the spare bike",
    "the photos from Saturday",
];
const WHEN: &[&str] = &[
    "tomorrow",
    "tonight",
    "after lunch",
    "on Friday",
    "next week",
    "in ten minutes",
    "before the meeting",
    "right now",
    "",
];
const QUESTIONS: &[&str] = &[
    "Did anyone see {o}?",
    "Can you send me {o}?",
    "Who has {o}?",
    "Should we move the meeting to {w}?",
    "Is {o} still needed {w}?",
];
const SHORT: &[&str] = &[
    "ok 👍",
    "haha",
    "Thanks!",
    "Sounds good",
    "Не знаю, посмотрим",
    "¡Perfecto!",
    "Bis später 👋",
    "On my way 🚗",
    "+1",
    "🙏",
    "Ça marche",
    "了解",
    "lol, no way",
];
const POSTS: &[&str] = &[
    "Today's digest: three stories you should not miss.",
    "Service notice: maintenance tonight from 01:00 to 03:00 UTC.",
    "New release is out — changelog in the comments.",
    "Weekly roundup: what changed and what comes next.",
    "Reminder: the survey closes on Sunday.",
];

fn sentence(rng: &mut ChaCha8Rng) -> String {
    match below(rng, 10) {
        0..=1 => pick(rng, SHORT).to_string(),
        2..=3 => pick(rng, QUESTIONS)
            .replace("{o}", pick(rng, OBJECTS))
            .replace("{w}", pick(rng, WHEN).trim()),
        _ => {
            let opener = pick(rng, OPENERS);
            let subject = pick(rng, SUBJECTS);
            let verb = pick(rng, VERBS);
            let object = pick(rng, OBJECTS);
            let when = pick(rng, WHEN);
            let mut s = format!("{opener}{subject} {verb} {object}");
            if !when.is_empty() {
                s.push(' ');
                s.push_str(when);
            }
            s.push(if chance(rng, 0.2) { '!' } else { '.' });
            s
        }
    }
}

/// An ordinary message text: usually one sentence, sometimes several, rarely a long paragraph.
pub(crate) fn message_text(rng: &mut ChaCha8Rng) -> String {
    let sentences = match below(rng, 100) {
        0..=69 => 1,
        70..=94 => 2 + below(rng, 2),
        _ => 6 + below(rng, 30),
    };
    let mut text = sentence(rng);
    for _ in 1..sentences {
        text.push(' ');
        text.push_str(&sentence(rng));
    }
    text
}

/// A broadcast channel post.
pub(crate) fn channel_post(rng: &mut ChaCha8Rng) -> String {
    let mut text = pick(rng, POSTS).to_string();
    if chance(rng, 0.5) {
        text.push_str("\n\n");
        text.push_str(&message_text(rng));
    }
    text
}

/// A service message's text ("Anna joined the group"), for a group-like chat or a channel.
pub(crate) fn service_text(
    rng: &mut ChaCha8Rng,
    actor: Option<&str>,
    other: &str,
    title: &str,
) -> String {
    let Some(actor) = actor else {
        return match below(rng, 3) {
            0 => "Channel photo updated".to_string(),
            1 => "Live stream started".to_string(),
            _ => format!("Channel renamed to “{title}”"),
        };
    };
    match below(rng, 7) {
        0 => format!("{actor} joined the group"),
        1 => format!("{actor} left the group"),
        2 => format!("{actor} pinned a message"),
        3 => format!("{actor} changed the group name to “{title}”"),
        4 => format!("{actor} added {other}"),
        5 => format!("{actor} started a video chat"),
        _ => format!("{actor} changed the group photo"),
    }
}

fn digits(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + below(rng, 10) as u8))
        .collect()
}

fn alnum(rng: &mut ChaCha8Rng, n: usize, alphabet: &[u8]) -> String {
    (0..n)
        .map(|_| char::from(alphabet[below(rng, alphabet.len() as u64) as usize]))
        .collect()
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const BASE62: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// The Luhn check digit that completes `payload` (digits only).
pub fn luhn_check_digit(payload: &str) -> u8 {
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Whether a digit string passes the Luhn check (spaces are ignored).
pub fn luhn_valid(number: &str) -> bool {
    let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (payload, check) = digits.split_at(digits.len() - 1);
    luhn_check_digit(payload) == check.as_bytes()[0] - b'0'
}

/// ISO 13616 remainder of an IBAN (spaces ignored); a valid IBAN gives 1.
pub fn iban_mod97(iban: &str) -> Option<u32> {
    let compact: Vec<u8> = iban.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.len() < 5 {
        return None;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem = 0u32;
    for &b in rearranged {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return None,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    Some(rem)
}

fn group4(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

fn email(rng: &mut ChaCha8Rng) -> String {
    let first = pick(
        rng,
        &[
            "anna", "boris", "chiara", "dmitri", "elif", "jonas", "mei", "sven",
        ],
    );
    let last = pick(
        rng,
        &[
            "ivanova", "schmidt", "rossi", "novak", "chen", "silva", "tanaka",
        ],
    );
    let sep = pick(rng, &[".", "_", ""]);
    let domain = pick(
        rng,
        &[
            "example.com",
            "example.org",
            "mail.example.net",
            "post.example.de",
            "inbox.test",
        ],
    );
    format!("{first}{sep}{last}{}@{domain}", below(rng, 100))
}

fn phone(rng: &mut ChaCha8Rng) -> String {
    match below(rng, 4) {
        0 => format!("+49 151 {} {}", digits(rng, 4), digits(rng, 4)),
        1 => format!("+1 (415) 555-{}", digits(rng, 4)),
        2 => format!("+44 7700 {}", digits(rng, 6)),
        _ => format!(
            "+7 912 {}-{}-{}",
            digits(rng, 3),
            digits(rng, 2),
            digits(rng, 2)
        ),
    }
}

fn card_number(rng: &mut ChaCha8Rng) -> String {
    let (prefix, len) = match below(rng, 3) {
        0 => ("4".to_string(), 16),
        1 => (format!("5{}", 1 + below(rng, 5)), 16),
        _ => (pick(rng, &["34", "37"]).to_string(), 15),
    };
    let mut payload = prefix;
    let rest = len - 1 - payload.len();
    payload.push_str(&digits(rng, rest));
    let check = luhn_check_digit(&payload);
    payload.push(char::from(b'0' + check));
    if len == 16 && chance(rng, 0.5) {
        group4(&payload)
    } else {
        payload
    }
}

fn iban(rng: &mut ChaCha8Rng) -> String {
    let (country, bban) = match below(rng, 3) {
        0 => ("DE", digits(rng, 18)),
        1 => ("GB", format!("{}{}", alnum(rng, 4, UPPER), digits(rng, 14))),
        _ => ("NL", format!("{}{}", alnum(rng, 4, UPPER), digits(rng, 10))),
    };
    let probe = format!("{country}00{bban}");
    let rem = iban_mod97(&probe).unwrap_or(0);
    let compact = format!("{country}{:02}{bban}", 98 - rem);
    if chance(rng, 0.5) {
        group4(&compact)
    } else {
        compact
    }
}

fn api_token(rng: &mut ChaCha8Rng) -> String {
    match below(rng, 3) {
        0 => format!(
            "{}{}:AA{}",
            1 + below(rng, 9),
            digits(rng, 9),
            alnum(rng, 33, BASE64URL)
        ),
        1 => format!("ghp_{}", alnum(rng, 36, BASE62)),
        _ => format!("AKIA{}", alnum(rng, 16, UPPER_DIGITS)),
    }
}

/// A sentence that embeds one piece of personal data of `kind`.
pub(crate) fn pii_sentence(rng: &mut ChaCha8Rng, kind: PiiKind) -> (String, Pii) {
    let (value, templates): (String, &[&str]) = match kind {
        PiiKind::Email => (
            email(rng),
            &[
                "You can write to me at {v}.",
                "My new address is {v}",
                "Send the invoice to {v} please",
            ],
        ),
        PiiKind::Phone => (
            phone(rng),
            &[
                "Call me at {v}",
                "my number changed: {v}",
                "The courier's phone is {v}.",
            ],
        ),
        PiiKind::CardNumber => (
            card_number(rng),
            &[
                "Card number is {v}, expiry 09/28",
                "pay with {v} if the other one fails",
            ],
        ),
        PiiKind::Iban => (
            iban(rng),
            &["Transfer to {v} please", "IBAN: {v} (reference: rent)"],
        ),
        PiiKind::LoginCode => login_code_value(rng),
        PiiKind::ApiToken => (
            api_token(rng),
            &[
                "here is the token {v}",
                "use this key: {v} — don't share it",
            ],
        ),
    };
    let template = pick(rng, templates);
    // Every template has exactly one `{v}`, so its offset is where the value lands.
    let start = template.find("{v}").unwrap_or(0);
    let text = template.replace("{v}", &value);
    let span = start..start + value.len();
    (text, Pii { kind, value, span })
}

fn login_code_value(rng: &mut ChaCha8Rng) -> (String, &'static [&'static str]) {
    (
        digits(rng, 5),
        &[
            "Login code: {v}. Do not give this code to anyone, even if they say they are from Telegram!\n\nThis code can be used to log in to your Telegram account. We never ask it for anything else.\n\nIf you didn't request this code by trying to log in on another device, simply ignore this message.",
        ],
    )
}

/// Attached media for a message; `captionable` limits the choice to kinds that carry a caption.
/// Returns the media and whether it carries text (a caption, a link, a poll question).
pub(crate) fn media(rng: &mut ChaCha8Rng, captionable: bool) -> (Media, bool) {
    let roll = if captionable {
        below(rng, 59)
    } else {
        below(rng, 100)
    };
    let (kind, mime, size, name, text): (
        MediaKind,
        Option<&str>,
        Option<u64>,
        Option<String>,
        bool,
    ) = match roll {
        0..=34 => (
            MediaKind::Photo,
            Some("image/jpeg"),
            Some(40_000 + below(rng, 3_000_000)),
            None,
            true,
        ),
        35..=46 => (
            MediaKind::Video,
            Some("video/mp4"),
            Some(1_000_000 + below(rng, 80_000_000)),
            Some(format!("VID_2026{:04}.mp4", below(rng, 10_000))),
            true,
        ),
        47..=58 => {
            let (name, mime) = match below(rng, 3) {
                0 => ("invoice_2026_03.pdf", "application/pdf"),
                1 => (
                    "slides.pptx",
                    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                ),
                _ => ("notes.txt", "text/plain"),
            };
            (
                MediaKind::Document,
                Some(mime),
                Some(1_000 + below(rng, 5_000_000)),
                Some(name.to_string()),
                true,
            )
        }
        59..=70 => (
            MediaKind::Voice,
            Some("audio/ogg"),
            Some(5_000 + below(rng, 500_000)),
            None,
            false,
        ),
        71..=74 => (
            MediaKind::Audio,
            Some("audio/mpeg"),
            Some(2_000_000 + below(rng, 8_000_000)),
            Some("track.mp3".to_string()),
            true,
        ),
        75..=86 => (
            MediaKind::Sticker,
            Some("application/x-tgsticker"),
            Some(10_000 + below(rng, 60_000)),
            None,
            false,
        ),
        87..=90 => (MediaKind::Location, None, None, None, false),
        91..=94 => (MediaKind::Poll, None, None, None, true),
        _ => (MediaKind::WebPage, None, None, None, true),
    };
    (
        Media {
            kind,
            mime_type: mime.map(str::to_string),
            size_bytes: size,
            file_name: name,
        },
        text,
    )
}

/// The text that goes with media of `kind` that carries text.
pub(crate) fn media_text(rng: &mut ChaCha8Rng, kind: MediaKind) -> String {
    match kind {
        MediaKind::Poll => pick(
            rng,
            &[
                "Where do we meet on Friday?",
                "Pizza or sushi?",
                "Which date works best?",
            ],
        )
        .to_string(),
        MediaKind::WebPage => format!(
            "{} https://news.example.com/articles/{}",
            pick(rng, &["Look at this:", "Interesting read", "FYI"]),
            below(rng, 1_000_000)
        ),
        _ if chance(rng, 0.5) => message_text(rng),
        _ => String::new(),
    }
}
