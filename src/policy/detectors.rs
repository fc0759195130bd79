//! The built-in detectors: what counts as an e-mail, a phone number, a card number, an IBAN, a
//! login code, an API token or a session string in free text.
//!
//! Each detector is a few candidate regexes (compiled once per process) plus a check in code
//! that sees the surrounding text: the `regex` crate has no look-around, and most of the
//! precision lives in those checks (boundaries, Luhn, mod-97, context words, date shapes).
//! A candidate regex never matching means the check never runs, which is what makes the
//! [`RegexSet`](regex::RegexSet) prefilter in [`super::redact`] effective.
//!
//! The detectors see text folded by [`super::fold`]: every script's digits are ASCII digits
//! here, and the spans found are mapped back to the original characters by the caller.
//! Context words come from the per-language tables of [`super::context`].

mod iban;
mod login_code;
mod phone;
mod secrets;

use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

pub use self::iban::{find_ibans, iban_valid};
pub use self::login_code::find_login_codes;
pub use self::phone::{DEFAULT_PHONE_REGIONS, find_phones};
pub(crate) use self::phone::{PhoneRegions, parse_region};
pub use self::secrets::find_api_tokens;
use super::config::DetectorKind;

/// What the built-in checks need from the configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// Regions whose national phone formats count without a phone word.
    pub(crate) phone_regions: PhoneRegions,
}

/// Confirms one candidate match and pushes the byte ranges to mask (none, one, or several).
pub(crate) type Check = fn(&Settings, &str, &Captures<'_>, &mut Vec<Range<usize>>);

/// One candidate pattern of a built-in detector and the check that confirms it.
pub(crate) struct Rule {
    pub(crate) kind: DetectorKind,
    pub(crate) regex: Regex,
    pub(crate) check: Check,
    /// A cheaper pattern that matches wherever `regex` does, for the prefilter (bounded
    /// repetitions of large classes make the prefilter's automaton slow on every event).
    pub(crate) anchor: Option<String>,
    /// In the prefilter of large word alternations, apart from the others (see [`Rule::apart`]).
    pub(crate) apart: bool,
}

impl Rule {
    /// The pattern the prefilter uses for this rule.
    pub(crate) fn prefilter_pattern(&self) -> &str {
        self.anchor.as_deref().unwrap_or(self.regex.as_str())
    }

    /// This rule, prefiltered by `anchor` instead of its own pattern.
    fn anchored(mut self, anchor: &str) -> Rule {
        self.anchor = Some(anchor.to_string());
        self
    }

    /// This rule's prefilter pattern kept apart from the other rules' ([`super::redact`] runs
    /// two prefilters): for the large alternations of words in many languages. In one
    /// automaton with every other rule their states multiply; on the simulated world's varied
    /// texts the cache of the single prefilter thrashed and redaction cost 13 µs per message,
    /// 1.1 with the two.
    fn apart(mut self) -> Rule {
        self.apart = true;
        self
    }
}

/// A rule whose check confirms at most one span and needs no settings.
macro_rules! one {
    ($f:path) => {
        |_: &$crate::policy::detectors::Settings,
         text: &str,
         caps: &regex::Captures<'_>,
         out: &mut Vec<std::ops::Range<usize>>| out.extend($f(text, caps))
    };
}
pub(crate) use one;

fn rule(kind: DetectorKind, pattern: &str, check: Check) -> Rule {
    // The patterns are constants of these files; the unit tests compile every one of them.
    let regex = Regex::new(pattern)
        .unwrap_or_else(|e| panic!("built-in {kind} pattern does not compile: {e}"));
    Rule {
        kind,
        regex,
        check,
        anchor: None,
        apart: false,
    }
}

/// Every built-in rule, compiled on first use and shared by all policies of the process.
pub(crate) static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let mut rules = Vec::new();
    rules.extend(email_rules());
    rules.extend(phone::rules());
    rules.extend(payment_card_rules());
    rules.extend(iban::rules());
    rules.extend(login_code::rules());
    rules.extend(secrets::rules());
    rules.extend(session_string_rules());
    rules
});

/// Runs every rule of `kind` over `text` with default settings (no prefilter, no folding; for
/// tests and one-off use).
fn find_kind(kind: DetectorKind, text: &str) -> Vec<Range<usize>> {
    let settings = Settings::default();
    let mut out: Vec<Range<usize>> = Vec::new();
    for r in RULES.iter().filter(|r| r.kind == kind) {
        for caps in r.regex.captures_iter(text) {
            (r.check)(&settings, text, &caps, &mut out);
        }
    }
    out.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    out.dedup_by(|later, kept| later.start < kept.end);
    out
}

// ---------------------------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------------------------

fn before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

fn before2(text: &str, i: usize) -> Option<char> {
    let mut it = text[..i].chars().rev();
    it.next();
    it.next()
}

fn after(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

fn after2(text: &str, i: usize) -> Option<char> {
    let mut it = text[i..].chars();
    it.next();
    it.next()
}

/// A word character: a number or word glued to it continues (see [`super::context::is_word`]);
/// `_` is not one here, since markdown wraps numbers in it (`_12345_`).
fn is_alnum(c: Option<char>) -> bool {
    c != Some('_') && super::context::is_word(c)
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

fn is_num_sep(c: Option<char>) -> bool {
    matches!(c, Some(' ' | '\u{a0}' | '-' | '.' | '/'))
}

/// The number continues before `start`: a digit, or a separator right after a digit.
fn continues_before(text: &str, start: usize) -> bool {
    let b = before(text, start);
    is_digit(b) || (is_num_sep(b) && is_digit(before2(text, start)))
}

/// The number continues after `end`: a digit, or a separator right before a digit.
fn continues_after(text: &str, end: usize) -> bool {
    let a = after(text, end);
    is_digit(a) || (is_num_sep(a) && is_digit(after2(text, end)))
}

/// The whitespace-delimited token before byte `i`, at most 256 bytes of it (so that scanning a
/// huge token stays linear).
fn token_before(text: &str, i: usize) -> &str {
    let mut from = i.saturating_sub(256);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let head = &text[from..i];
    head.rfind(char::is_whitespace).map_or(head, |w| {
        &head[w + head[w..].chars().next().map_or(1, char::len_utf8)..]
    })
}

/// Byte offset of `part` in `whole`, where `part` is a sub-slice of `whole` (from `split`).
fn offset_in(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// Position after the last occurrence of any of `words` in `hay` as a whole word (words of
/// five or more letters also with an ending: `tickets`, `заказа`).
fn last_word(hay: &str, words: &[&str]) -> Option<usize> {
    let mut best = None;
    for w in words {
        for (i, _) in hay.match_indices(w) {
            let left_ok = !is_alnum(before(hay, i)) || !w.starts_with(char::is_alphanumeric);
            let end = i + w.len();
            let right_ok = !is_alnum(after(hay, end))
                || !w.ends_with(char::is_alphanumeric)
                || w.chars().count() >= 5;
            if left_ok && right_ok {
                best = best.max(Some(end));
            }
        }
    }
    best
}

fn digit_count(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

/// The runs of ASCII digits in `s`.
fn digit_groups(s: &str) -> Vec<&str> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect()
}

/// The non-digit separators between digit groups, with `()` removed and spaces kept.
fn separators(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(|g| g.replace(['(', ')'], ""))
        .collect()
}

/// A currency or an amount word follows the number ending at `end` (`25 000 FCFA`, `1 200 ₽`).
fn amount_after(text: &str, end: usize) -> bool {
    let rest: String = text[end..]
        .trim_start()
        .chars()
        .take(8)
        .collect::<String>()
        .to_lowercase();
    crate::policy::context::AMOUNT_AFTER.iter().any(|c| {
        rest.starts_with(c)
            // Short codes as whole words (`rs` is not `rsync`); longer words may inflect.
            && (c.chars().count() > 3 || !rest[c.len()..].starts_with(char::is_alphabetic))
    })
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// E-mail
// ---------------------------------------------------------------------------------------------

/// E-mail addresses: `local@domain.tld`, Unicode letters allowed on both sides.
///
/// Catches: plain, `+tag`, dotted and sub-domain addresses, internationalized ones
/// (`почта@пример.рф`), addresses inside `mailto:` links and query strings.
/// Deliberately not: `@username` mentions, `user@host` without a dotted domain, package pins
/// (`react@18.2.0`), image names (`icon@2x.png`), fediverse handles (`@user@host.social`), scp
/// remotes (`git@github.com:org/repo`), obfuscated forms (`john [at] example.com`).
pub fn find_emails(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::Email, text)
}

/// File extensions that look like top-level domains after `@2x`-style names.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic", "avif", "js",
    "mjs", "ts", "tsx", "jsx", "css", "scss", "html", "htm", "json", "yaml", "yml", "toml", "lock",
    "txt", "pdf", "mp4", "mp3", "wav", "ogg",
];

/// An e-mail address: the local part (letters of any script, digits, `._%+-`, an apostrophe
/// between letters as in `o'connor`), `@`, and a domain of labels ending in a letter TLD.
const EMAIL: &str = r"[\p{L}\p{N}_%+\-](?:[\p{L}\p{M}\p{N}._%+\-']*[\p{L}\p{M}\p{N}_%+\-])?@(?:[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}\-]*[\p{L}\p{M}\p{N}])?\.)+\p{L}[\p{L}\p{M}]+";

static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(EMAIL).unwrap_or_else(|e| panic!("e-mail pattern does not compile: {e}"))
});

fn email_rules() -> Vec<Rule> {
    vec![rule(DetectorKind::Email, EMAIL, check_emails)]
}

/// Every address in the candidate: text glued to Chinese or Japanese holds one address after
/// another with no space (`联系support@例子.中国或者service@aliyun-help.com`), so after a cut at
/// a change of script the rest is searched again.
fn check_emails(_: &Settings, text: &str, caps: &Captures<'_>, out: &mut Vec<Range<usize>>) {
    if let Some(m) = caps.get(0) {
        rescan(text, m.range(), &EMAIL_RE, check_email, out);
    }
}

/// Confirms `candidate` with `check` and, while a hit ends before its candidate does, the next
/// match of `regex` after the hit too: one candidate may swallow the head of the next
/// (`a@b.org;c@d.org`, `FI98 8403 … 67 et grec GR30 7971 …`).
fn rescan(
    text: &str,
    candidate: Range<usize>,
    regex: &Regex,
    check: fn(&str, Range<usize>) -> Option<Range<usize>>,
    out: &mut Vec<Range<usize>>,
) {
    let mut next = Some(candidate);
    while let Some(candidate) = next.take() {
        let Some(hit) = check(text, candidate.clone()) else {
            break;
        };
        out.push(hit.clone());
        if hit.end < candidate.end {
            next = regex.find_at(text, hit.end).map(|m| m.range());
        }
    }
}

/// Commands whose argument `user@host` is a login on a machine, not a mailbox.
const REMOTE_SHELLS: &[&str] = &["ssh", "scp", "sftp", "mosh", "rsync"];

/// One of [`REMOTE_SHELLS`] stands within the three words before `start` on its line.
fn remote_shell_before(text: &str, start: usize) -> bool {
    let line = text[..start].rsplit('\n').next().unwrap_or_default();
    line.split_whitespace()
        .rev()
        .take(3)
        .any(|w| REMOTE_SHELLS.contains(&w.trim_start_matches(['`', '$']).to_lowercase().as_str()))
}

/// Where an address glued to text of a script written without spaces really starts and ends:
/// a Latin local part after Chinese (`邮箱chen.jie@…` → `chen.jie@…`), a Latin TLD before
/// Chinese (`…@qq.com卡号` → `…@qq.com`), a Chinese TLD before Latin (`…@例子.中国或者service`
/// → `…@例子.中国或者`).
fn unglue(text: &str, mut r: Range<usize>) -> Range<usize> {
    let s = &text[r.clone()];
    let Some(at) = s.find('@') else {
        return r;
    };
    let local = &s[..at];
    if let Some(i) = local.char_indices().rev().find_map(|(i, c)| {
        (super::context::no_space_script(c)
            && i + c.len_utf8() < local.len()
            && local[i + c.len_utf8()..].starts_with(|c: char| c.is_ascii_alphanumeric()))
        .then_some(i + c.len_utf8())
    }) {
        r.start += i;
    }
    let s = &text[r.clone()];
    let tld_start = s.rfind('.').map_or(s.len(), |i| i + 1);
    let tld = &s[tld_start..];
    let mut chars = tld.char_indices();
    if let Some((_, first)) = chars.next() {
        let cjk = super::context::no_space_script(first);
        if let Some((i, _)) = chars.find(|&(_, c)| super::context::no_space_script(c) != cjk) {
            r.end = r.start + tld_start + i;
        }
    }
    r
}

/// One side is of a script written without spaces and the other is not: a word boundary.
fn script_change(a: Option<char>, b: Option<char>) -> bool {
    let cjk = |c: Option<char>| c.is_some_and(super::context::no_space_script);
    cjk(a) != cjk(b)
}

fn check_email(text: &str, candidate: Range<usize>) -> Option<Range<usize>> {
    let mut r = unglue(text, candidate);
    // Markdown emphasis: `_a@b.org_` (the opening `_` was taken as part of the local part).
    if text[r.clone()].starts_with('_') && after(text, r.end) == Some('_') {
        r.start += 1;
        if is_alnum(after2(text, r.end)) {
            return None;
        }
    } else if is_alnum(after(text, r.end))
        && !script_change(before(text, r.end), after(text, r.end))
    {
        return None;
    }
    let s = &text[r.clone()];
    let b = before(text, r.start);
    if b == Some('@') || b == Some('.') || (is_alnum(b) && b != Some('_')) {
        return None;
    }
    let a = after(text, r.end);
    if a == Some('-') || a == Some('@') {
        return None;
    }
    // Code: `q@k.transpose(…)`, `a@b.items[0]`.
    if matches!(a, Some('(' | '[')) {
        return None;
    }
    // scp-style remote: `git@github.com:org/repo.git`
    if a == Some(':') && after2(text, r.end).is_some_and(|c| !c.is_whitespace()) {
        return None;
    }
    // A login on a host: `ssh git@bitbucket.org`, `scp -P 22 deploy@example.com`.
    if remote_shell_before(text, r.start) {
        return None;
    }
    // RFC 5321 limits (checked here: bounded repetitions of Unicode classes make big automata).
    let (local, domain) = s.split_once('@')?;
    let tld_len = domain.rsplit('.').next()?.chars().count();
    if s.contains("..")
        || local.len() > 64
        || domain.len() > 253
        || tld_len > 24
        || domain.split('.').any(|l| l.len() > 63)
    {
        return None;
    }
    // `scheme://user@host`: URL userinfo (a credential, left to the token detectors).
    if token_before(text, r.start).ends_with("://") {
        return None;
    }
    let tld = s.rsplit('.').next()?.to_lowercase();
    if FILE_EXTENSIONS.contains(&tld.as_str()) {
        return None;
    }
    Some(r)
}

// ---------------------------------------------------------------------------------------------
// Payment card
// ---------------------------------------------------------------------------------------------

/// Payment card numbers: 13–19 digits starting with 2–6 (Mir, Mastercard, Amex, JCB, Diners,
/// Visa, Discover, UnionPay, Maestro), unseparated or grouped with one kind of separator (first
/// group of 4), passing the Luhn check. A trailing 3-digit group (a CVV) is left out.
///
/// Deliberately not: numbers failing Luhn, numbers starting with 0, 1, 7, 8 or 9 (timestamps,
/// phone numbers, Telegram ids), runs longer than 19 digits (bank accounts, ids), mixed
/// separators, unseparated numbers right after an id word in the same phrase (`EAN …`,
/// `order number …`, `ISBN …`; see [`card_id_context`]).
pub fn find_payment_cards(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::PaymentCard, text)
}

/// The Luhn checksum over the ASCII digits of `s` (other characters ignored).
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.is_empty() {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn payment_card_rules() -> Vec<Rule> {
    vec![rule(
        DetectorKind::PaymentCard,
        r"[0-9](?:[ \x{A0}\-.]?[0-9]){11,22}",
        one!(check_payment_card),
    )]
}

/// Luhn-valid, of a card's length, in a well-known range (2–6, Troy's 9792, Prostir's 9804) — or, with a card
/// word near (`worded`), in any range (UATP 1…, RuPay and Uzcard 8…, Humo, Belkart, BC Card
/// 9…) and also the 12 digits of an old Maestro.
fn card_number_ok(digits: &str, worded: bool) -> bool {
    let n = digits.len();
    let first = digits.as_bytes()[0];
    let first_ok = (b'2'..=b'6').contains(&first)
        || digits.starts_with("9792")
        || digits.starts_with("9804")
        || worded;
    let maestro12 =
        n == 12 && worded && (digits.starts_with("50") || (b'5'..=b'6').contains(&first));
    ((13..=19).contains(&n) && first_ok && (n != 13 || first == b'4') || maestro12)
        && luhn_valid(digits)
}

/// Characters before a card number searched for a card word.
const CARD_WORD_NEAR: usize = 40;

/// A card word or brand stands before the number in its sentence (`Узкард 8600…`, `وبطاقتي
/// 9682…`, `BC카드 9410…`).
fn card_worded(text: &str, start: usize) -> bool {
    let (_, before) = super::context::before_in_sentence(text, start, CARD_WORD_NEAR);
    super::context::CARD_WORDS.any(&before)
}

/// Words that may stand between an id word and its number (`order number is 4111…`,
/// `заказ № …`, `n° de commande …`, `Order ID: …`) without making it another phrase.
const ID_CONNECTORS: &[&str] = &[
    "#",
    "№",
    "no",
    "no.",
    "nr",
    "nr.",
    "n°",
    "nº",
    "n.",
    "num",
    "num.",
    "number",
    "id",
    "ref",
    "is",
    "was",
    "the",
    "your",
    "my",
    "our",
    "of",
    "de",
    "du",
    "del",
    "la",
    "el",
    "der",
    "des",
    "номер",
    "ваш",
    "ваша",
    "вашего",
    "nummer",
    "numéro",
    "numero",
    "número",
    "-",
    "—",
    "–",
];

/// Number markers that mean an identifier unless a phone word is near (`Phone no. …`).
const NUMBER_MARKERS: &[&str] = &[
    "#", "№", "no.", "nr", "nr.", "id", "ref", "inv", "nº", "n°", "n.", "nro", "núm",
];

/// Tokens ending in a dot that do not end a sentence.
const ABBREVIATIONS: &[&str] = &["no.", "nr.", "n.", "num.", "ref.", "inv.", "tel.", "nro."];

/// How many tokens before an unseparated card-like number are looked at.
const CARD_CONTEXT_TOKENS: usize = 4;

/// The unseparated card-like number at `start` is an identifier: right before it, in the same
/// sentence, stands an id word (`order`, `tracking`, `заказа`) followed only by connectors
/// (`number`, `no.`, `#`, `is`), or a number marker (`#`, `№`, `ref`) that starts the phrase.
///
/// Unlike [`id_context`] (30 characters, any words in between), a word in an earlier sentence,
/// clause, or farther back in the phrase does not count: `the contract draft. pay with 3777…`
/// is a card, `order number 4111…` is not.
fn card_id_context(text: &str, start: usize) -> bool {
    let mut from = start.saturating_sub(96);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let head = &text[from..start];
    // A line break ends the phrase.
    let head = head.rsplit(['\n', '\r']).next().unwrap_or(head);
    let mut marker = false;
    for raw in head.split_whitespace().rev().take(CARD_CONTEXT_TOKENS) {
        let token = raw.to_lowercase();
        if token.ends_with([',', ';', '!', '?', '…', '。', '！', '？'])
            || (token.ends_with('.') && !ABBREVIATIONS.contains(&token.as_str()))
        {
            // The token belongs to the previous sentence or clause.
            return marker;
        }
        let word = token.trim_end_matches(':');
        if word.is_empty() {
            continue;
        }
        if super::context::ID_WORDS.any(word) {
            return true;
        }
        if NUMBER_MARKERS.contains(&word) {
            marker = true;
        } else if !ID_CONNECTORS.contains(&word) {
            return false;
        }
    }
    marker
}

/// Card brands that get glued to the number in text without spaces (`Visa4868…`, `JCB３５６３…`).
const CARD_WORDS: &[&str] = &[
    "visa",
    "mastercard",
    "master",
    "mc",
    "amex",
    "jcb",
    "unionpay",
    "discover",
    "diners",
    "maestro",
    "mir",
    "troy",
    "card",
    "rupay",
    "elo",
    "hipercard",
];

/// The letters glued before `start` are a card brand.
fn glued_card_word(text: &str, start: usize) -> bool {
    let word = super::context::word_ending_at(text, start, |c| c.is_ascii_alphabetic());
    CARD_WORDS.contains(&word.as_str())
}

fn check_payment_card(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    let s = m.as_str();
    let b = before(text, r.start);
    let glued_brand = is_alnum(b) && glued_card_word(text, r.start);
    if (is_alnum(b) && !glued_brand)
        || matches!(b, Some('-' | '.' | ',' | '+'))
        || continues_before(text, r.start)
    {
        return None;
    }
    let seps = separators(s);
    if seps.is_empty() {
        let a = after(text, r.end);
        if is_alnum(a) || continues_after(text, r.end) || card_id_context(text, r.start) {
            return None;
        }
        return card_number_ok(s, card_worded(text, r.start)).then_some(r);
    }
    if seps.iter().any(|x| x != &seps[0]) {
        return None;
    }
    let groups = digit_groups(s);
    if groups[0].len() != 4 || groups[1..].iter().any(|g| !(2..=6).contains(&g.len())) {
        return None;
    }
    // The whole run, or the run without a trailing 3-digit group (a CVV) or the month of an
    // expiry date (`… 0390 06/26`).
    let mut tries = vec![groups.len()];
    let last = groups[groups.len() - 1].len();
    if groups.len() > 2 && (last == 3 || (last == 2 && after(text, r.end) == Some('/'))) {
        tries.push(groups.len() - 1);
    }
    for k in tries {
        let digits: String = groups[..k].concat();
        if !card_number_ok(&digits, card_worded(text, r.start)) {
            continue;
        }
        // Byte end of the k-th group.
        let mut seen = 0;
        let mut end = r.start;
        for (i, c) in s.char_indices() {
            if c.is_ascii_digit() {
                seen += 1;
                if seen == digits.len() {
                    end = r.start + i + 1;
                    break;
                }
            }
        }
        let a = after(text, end);
        if is_alnum(a) || (k == groups.len() && continues_after(text, end)) {
            continue;
        }
        return Some(r.start..end);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Session strings
// ---------------------------------------------------------------------------------------------

/// Telegram session strings and raw auth keys: Telethon `StringSession` (`1` + base64url, 353+
/// characters), Pyrogram session strings (base64url, 350+), and any base64url run of 300+
/// characters mixing upper case, lower case and digits; also exactly 512 hex characters (a
/// 2048-bit auth key as grammers and others dump it).
///
/// Deliberately not: shorter base64 (hashes, ids, JWT parts are tokens), standard-alphabet
/// base64 with `+`/`/` (images in data URIs), hex runs of other lengths (digests), long runs of
/// one character class.
pub fn find_session_strings(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::SessionString, text)
}

fn session_string_rules() -> Vec<Rule> {
    vec![rule(
        DetectorKind::SessionString,
        r"[A-Za-z0-9_\-]{300,}={0,2}",
        one!(check_session_string),
    )]
}

fn check_session_string(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    let b = before(text, r.start);
    let a = after(text, r.end);
    let b64 = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || "+/_-".contains(c));
    // `=` may precede (an assignment) but only padding may follow.
    if b64(b) || b64(a) || a == Some('=') {
        return None;
    }
    let s = m.as_str().trim_end_matches('=');
    if s.len() == 512 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(r);
    }
    let upper = s.bytes().any(|b| b.is_ascii_uppercase());
    let lower = s.bytes().any(|b| b.is_ascii_lowercase());
    let digit = s.bytes().any(|b| b.is_ascii_digit());
    (upper && lower && digit).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(f: fn(&str) -> Vec<Range<usize>>, text: &str) -> Vec<String> {
        f(text).into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn every_builtin_pattern_compiles_and_every_detector_has_rules() {
        for kind in DetectorKind::ALL {
            assert!(RULES.iter().any(|r| r.kind == kind), "{kind}");
        }
    }

    #[test]
    fn luhn_accepts_test_cards_and_refuses_a_changed_digit() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn iban_mod97_accepts_registry_examples_and_refuses_a_changed_digit() {
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(iban_valid("GB29NWBK60161331926819"));
        assert!(!iban_valid("DE89 3704 0044 0532 0130 01"));
        assert!(!iban_valid("DE89 3704 0044 0532 0130"));
        assert!(!iban_valid("ZZ89 3704 0044 0532 0130 00"));
    }

    #[test]
    fn entropy_of_uniform_text_is_its_alphabet_size_in_bits() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn each_detector_finds_its_obvious_case() {
        assert_eq!(found(find_emails, "mail a@example.com!"), ["a@example.com"]);
        assert_eq!(
            found(find_phones, "call +1 555 123 4567"),
            ["+1 555 123 4567"]
        );
        assert_eq!(
            found(find_payment_cards, "card 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            found(find_ibans, "GB29NWBK60161331926819."),
            ["GB29NWBK60161331926819"]
        );
        assert_eq!(
            found(find_login_codes, "Login code: 12345. Do not"),
            ["12345"]
        );
        assert_eq!(
            found(find_api_tokens, "AKIAIOSFODNN7EXAMPLE"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        let hex = "ab".repeat(256);
        assert_eq!(
            found(find_session_strings, &hex),
            std::slice::from_ref(&hex)
        );
    }

    #[test]
    fn an_id_word_far_back_in_the_sentence_leaves_a_valid_international_number_a_phone() {
        let text = "Order update: delivery agent Suresh +91 9812 345 670 will reach by 7pm";
        assert_eq!(found(find_phones, text), ["+91 9812 345 670"]);
        assert!(found(find_phones, "order +91 9812 345 670").is_empty());
    }

    #[test]
    fn robot_secrets_and_a_password_with_no_user_name_are_found() {
        let sign = format!("SEC{}", "d3".repeat(32));
        assert_eq!(
            found(find_api_tokens, &format!("加签 {sign}")),
            [sign.as_str()]
        );
        let hook =
            "https://open.feishu.cn/open-apis/bot/v2/hook/a2133ab7-ea64-4a75-93e2-cf282bffc62a";
        assert_eq!(found(find_api_tokens, hook).len(), 1);
        let redis = found(
            find_api_tokens,
            "REDIS_URL=redis://:Zk9xQ2vL7wRp@10.0.0.9:6379",
        );
        assert!(
            redis.iter().any(|f| f.contains("Zk9xQ2vL7wRp")),
            "{redis:?}"
        );
    }
    #[test]
    fn a_password_standing_alone_is_found_and_addresses_digests_and_names_are_not() {
        for (text, password) in [
            ("панель ISPmanager: admin / Tq9!xW3mLp7K", "Tq9!xW3mLp7K"),
            ("a ot paneli — Hx9!zQ3mWp8L.", "Hx9!zQ3mWp8L"),
            (
                "La contraseña del servidor es Vq82!mLxR7p, usuario soporte",
                "Vq82!mLxR7p",
            ),
            ("«Zr7&uKp2#Lw»", "Zr7&uKp2#Lw"),
        ] {
            let got = found(find_api_tokens, text);
            assert!(got.iter().any(|f| f.contains(password)), "{text}: {got:?}");
        }
        for text in [
            "mailto:billing@acme.io?subject=Invoice%2027",
            "$2b$12$7Em8pMs2KhV2yehbLuBGih2UhCNQ5bvjJvLQx5e1WvjpDdtV",
            "t.me/ShopBot?start=cmVmXzE3MDUyMDJfcHJvbW8",
            "/list?page=2&Sort_Order9!=desc",
            "C++17 and C#10 are fine! Really?",
            "Price: $1,299.99 — 20% off!",
        ] {
            assert!(found(find_api_tokens, text).is_empty(), "{text}");
        }
    }
    #[test]
    fn a_code_in_a_message_that_warns_not_to_share_it_is_found_but_not_the_stop_number() {
        assert_eq!(
            found(
                find_login_codes,
                "Inter: Use 772019 para autorizar o Pix de R$ 1.250,00. Não compartilhe."
            ),
            ["772019"]
        );
        assert_eq!(
            found(
                find_login_codes,
                "Payme kodi: 305119. Hech kimga bermang! / Никому не сообщайте код"
            ),
            ["305119"]
        );
        assert_eq!(
            found(
                find_login_codes,
                "[#] 3381 is your Uber code. Never share this code. reply STOP to 89203 to unsubscribe."
            ),
            ["3381"]
        );
        assert!(found(find_login_codes, "Use 772019 para autorizar o Pix.").is_empty());
    }
    #[test]
    fn passphrases_latin_key_words_escaped_pem_blocks_and_digitless_aws_ids_are_secrets() {
        for (text, secret) in [
            ("пароль от вайфая piano-horse-20", "piano-horse-20"),
            ("parol ot wifi fve4Hq3eE4oc esli chto", "fve4Hq3eE4oc"),
            ("ramz wifi: Ric6Kjv8OxbLuLniyX", "Ric6Kjv8OxbLuLniyX"),
            (
                "aws_access_key_id = AKIAKKWVTPMPLNUEIZIY",
                "AKIAKKWVTPMPLNUEIZIY",
            ),
        ] {
            let got = found(find_api_tokens, text);
            assert!(got.iter().any(|f| f.contains(secret)), "{text}: {got:?}");
        }
        let body = "MIIEpAIBAAKCAQEAC7Bryax61p3SA75PzQGdb1QLasynilob";
        let json = format!(
            r#"{{"private_key": "-----BEGIN PRIVATE KEY-----\n{body}\n{body}\n-----END PRIVATE KEY-----\n", "x": 1}}"#
        );
        let got = found(find_api_tokens, &json);
        assert!(
            got.iter()
                .any(|f| f.contains(body) && f.contains("END PRIVATE KEY-----")),
            "{got:?}"
        );
    }
    #[test]
    fn passwords_of_admin_accounts_glued_key_words_and_keys_in_urls_are_secrets() {
        for (text, secret) in [
            ("Root on the NAS: root / VQWLbdAOrrmCyk", "VQWLbdAOrrmCyk"),
            (
                "Benutzer: k.mueller, Kennwort: Lena1999 (DATEV)",
                "Lena1999",
            ),
            ("服务器root密码QCQO4H56imv，别外传", "QCQO4H56imv"),
            ("パスワードの方ね、WC85mMI8yVu", "WC85mMI8yVu"),
            ("路由器管理密码 etyQMV#FwMKmAd", "etyQMV#FwMKmAd"),
            (
                "百度地图ak：SI1heVSrrBaL217NirdSVBYG",
                "SI1heVSrrBaL217NirdSVBYG",
            ),
            (
                "docker login -u deploy -p admin_935pt reg.io",
                "admin_935pt",
            ),
            (
                "git clone https://Zx81kQm2LpV7rT4nWc9s@git.example.org/app.git",
                "Zx81kQm2LpV7rT4nWc9s",
            ),
            (
                "api_hash من: 31326365 و ac60aca76a000a153bf6f91a77202729",
                "ac60aca76a000a153bf6f91a77202729",
            ),
            (
                "forecast?city=Berlin&appid=ccbab479c1d56c154ac90b3234218f3e",
                "ccbab479c1d56c154ac90b3234218f3e",
            ),
        ] {
            let got = found(find_api_tokens, text);
            assert!(got.iter().any(|f| f.contains(secret)), "{text}: {got:?}");
        }
        for text in [
            "login for the box is admin / password: see the vault",
            "пассажиров 2024Abc1",
            "docker run -p 127.0.0.1:8080:80 nginx",
            "SENTRY_DSN=https://1e7bf8f3b89655b70917b5a6c995bdd3@o44120.ingest.sentry.io/611402",
            "wechat appid=wx1a2b3c4d5e6f7a8b",
            "密码长度至少8位",
            "пароль от WhatsApp не помню",
        ] {
            assert!(found(find_api_tokens, text).is_empty(), "{text}");
        }
    }
    #[test]
    fn a_senders_name_initials_and_letter_codes_after_a_verb_do_not_hide_a_code() {
        for (text, code) in [
            (
                "ICICI Bank: 632920 is the OTP for your net banking login.",
                "632920",
            ),
            ("A-Bank: 4180 - код для підтвердження входу", "4180"),
            (
                "Deine mTAN für die Überweisung an M. Schmidt lautet 437350",
                "437350",
            ),
            ("Ihr Anmeldecode für das ELSTER-Portal: 951832", "951832"),
            ("La Banque Postale : code 199066 à saisir.", "199066"),
            ("[Steam] Your Steam Guard code is 7VSKZ", "7VSKZ"),
        ] {
            assert_eq!(found(find_login_codes, text), [code], "{text}");
        }
        for text in [
            "citofono: codice 1432, poi scala B",
            "Order: 4180 - shipped, see the code below",
            "código del portal 4821",
            "Your promo code is SAVE20X",
        ] {
            assert!(found(find_login_codes, text).is_empty(), "{text}");
        }
    }
    #[test]
    fn recovery_code_lists_app_passwords_passphrases_and_pins_are_secrets() {
        let list = "резервні коди для входу:\nu3wn3-ats93\ncmvo3-hwtwy\nshm9p-p1hku\ncflek-1ssgb\nlgnh6-9lbcy";
        assert_eq!(found(find_api_tokens, list).len(), 5, "{list}");
        let unnamed = "mxezc7hi0n\n3xg55evx86\nm9i7ce513v\njwyz8pxh05\n49eexnqsvq\nrakpqc2qzz";
        assert_eq!(found(find_api_tokens, unnamed).len(), 6);
        // Two lists in one block, each judged under the line above it: digits need the
        // heading, the random run after them stands alone; a short run of words is no list.
        let two = format!(
            "Google backup codes:\n1234 5678\n2345 6789\n3456 7890\n4567 8901\n{unnamed}\nok\nyes\nfine\nthanks"
        );
        assert_eq!(found(find_api_tokens, &two).len(), 10, "{two}");
        let digits_unnamed = "1234 5678\n2345 6789\n3456 7890\n4567 8901";
        assert!(found(find_api_tokens, digits_unnamed).is_empty());
        for (text, secret) in [
            (
                "use peka ilro nemf diqd as the app password",
                "peka ilro nemf diqd",
            ),
            (
                "senha de app do iCloud pdka-khxy-nxqx-ljgk",
                "pdka-khxy-nxqx-ljgk",
            ),
            ("압축파일 비번 candle lemon battery", "candle lemon battery"),
            (
                "Passphrase für den Schlüssel: battery.mango.anchor.pixel",
                "battery.mango.anchor.pixel",
            ),
            ("UPI PIN 659668 hai, kisi ko mat batana", "659668"),
            ("a senha do wifi é 03420704, rede VIVO", "03420704"),
            (
                "the password, which I wrote on the fridge lol, is b26n77p8ug9h",
                "b26n77p8ug9h",
            ),
            (
                "PGPASSWORD=SswSg=k8K?6VnYxULVlt psql -h pg",
                "SswSg=k8K?6VnYxULVlt",
            ),
        ] {
            let got = found(find_api_tokens, text);
            assert!(got.iter().any(|f| f.contains(secret)), "{text}: {got:?}");
        }
        for text in [
            "orders:\nAB12CD\nEF34GH\nIJ56KL\nMN78OP",
            "this will help them move over here",
            "pin code 560001, Bengaluru",
            "पिन कोड 110001 नई दिल्ली",
            "password must be at least 8 characters",
            "wifi password at the café is 12345678 lol",
            "apartman kapı şifresi 1071",
            "NPWP 01.234.567.8-901.000",
            "Bu şifreyi kimseyle paylaşmayınız",
            "password reset on mail.google.com",
        ] {
            assert!(
                found(find_api_tokens, text).is_empty(),
                "{text}: {:?}",
                found(find_api_tokens, text)
            );
        }
    }
}
