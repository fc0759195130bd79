//! The built-in detectors: what counts as an e-mail, a phone number, a card number, an IBAN, a
//! login code, an API token or a session string in free text.
//!
//! Each detector is a few candidate regexes (compiled once per process) plus a check in code
//! that sees the surrounding text: the `regex` crate has no look-around, and most of the
//! precision lives in those checks (boundaries, Luhn, mod-97, context words, date shapes).
//! A candidate regex never matching means the check never runs, which is what makes the
//! [`RegexSet`](regex::RegexSet) prefilter in [`super::redact`] effective.

use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::config::DetectorKind;

/// Confirms one candidate match and pushes the byte ranges to mask (none, one, or several).
pub(crate) type Check = fn(&str, &Captures<'_>, &mut Vec<Range<usize>>);

/// One candidate pattern of a built-in detector and the check that confirms it.
pub(crate) struct Rule {
    pub(crate) kind: DetectorKind,
    pub(crate) regex: Regex,
    pub(crate) check: Check,
}

/// A rule whose check confirms at most one span.
macro_rules! one {
    ($f:path) => {
        |text: &str, caps: &Captures<'_>, out: &mut Vec<Range<usize>>| out.extend($f(text, caps))
    };
}

fn rule(kind: DetectorKind, pattern: &str, check: Check) -> Rule {
    // The patterns are constants of this file; the unit tests compile every one of them.
    let regex = Regex::new(pattern)
        .unwrap_or_else(|e| panic!("built-in {kind} pattern does not compile: {e}"));
    Rule { kind, regex, check }
}

/// Every built-in rule, compiled on first use and shared by all policies of the process.
pub(crate) static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let mut rules = Vec::new();
    rules.extend(email_rules());
    rules.extend(phone_rules());
    rules.extend(payment_card_rules());
    rules.extend(iban_rules());
    rules.extend(login_code_rules());
    rules.extend(api_token_rules());
    rules.extend(session_string_rules());
    rules
});

/// Runs every rule of `kind` over `text` (no prefilter; for tests and one-off use).
fn find_kind(kind: DetectorKind, text: &str) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for r in RULES.iter().filter(|r| r.kind == kind) {
        for caps in r.regex.captures_iter(text) {
            (r.check)(text, &caps, &mut out);
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

fn is_alnum(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
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

/// The last `n` characters before byte `i`, lower-cased.
fn window_before(text: &str, i: usize, n: usize) -> String {
    let chars: Vec<char> = text[..i].chars().rev().take(n).collect();
    chars.into_iter().rev().collect::<String>().to_lowercase()
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

fn email_rules() -> Vec<Rule> {
    vec![rule(
        DetectorKind::Email,
        r"[\p{L}\p{N}_%+\-](?:[\p{L}\p{N}._%+\-]*[\p{L}\p{N}_%+\-])?@(?:[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?\.)+\p{L}{2,}",
        one!(check_email),
    )]
}

fn check_email(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let s = m.as_str();
    let b = before(text, m.start());
    if b == Some('@') || b == Some('.') || is_alnum(b) {
        return None;
    }
    let a = after(text, m.end());
    if is_alnum(a) || a == Some('-') || a == Some('@') {
        return None;
    }
    // Code: `q@k.transpose(…)`, `a@b.items[0]`.
    if matches!(a, Some('(' | '[')) {
        return None;
    }
    // scp-style remote: `git@github.com:org/repo.git`
    if a == Some(':') && after2(text, m.end()).is_some_and(|c| !c.is_whitespace()) {
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
    if token_before(text, m.start()).ends_with("://") {
        return None;
    }
    let tld = s.rsplit('.').next()?.to_lowercase();
    if FILE_EXTENSIONS.contains(&tld.as_str()) {
        return None;
    }
    Some(m.range())
}

// ---------------------------------------------------------------------------------------------
// Phone
// ---------------------------------------------------------------------------------------------

/// Phone numbers: international `+` numbers (8–15 digits, any common grouping, `(0)` trunk
/// marks), North American `(555) 123-4567` / `555.123.4567` / `1-800-555-0199`, Russian/CIS
/// `8 (912) 345-67-89` / `912 345-67-89`, European trunk-0 numbers with one kind of separator
/// (`020 7946 0958`, `06 12 34 56 78`, `030/1234567`), and any 7–15 digit number right after a
/// phone word (`tel:`, `phone`, `call me at`, `телефон`, `Handy`…).
///
/// Deliberately not: dates and times (`2024-03-15`, `15.03.2024 14:30`), amounts (`$1 234 567`,
/// `+5 000 000 ₽`, percentages), version strings and IP addresses, numbers after id words
/// (`order`, `ticket`, `invoice`, `#`, `№`, `заказ`…), numbers inside URLs (`wa.me/…` links are
/// missed on purpose), unseparated national numbers without a phone word, numbers longer than
/// the run they sit in (part of a card, IBAN or id).
pub fn find_phones(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::Phone, text)
}

const PHONE_WORDS: &[&str] = &[
    "phone",
    "tel",
    "tel.",
    "telephone",
    "mobile",
    "mob",
    "cell",
    "whatsapp",
    "viber",
    "call",
    "text me",
    "sms",
    "телефон",
    "тел",
    "тел.",
    "моб",
    "мобильный",
    "звоните",
    "звони",
    "позвони",
    "handy",
    "telefon",
    "rufnummer",
    "téléphone",
    "tél",
    "portable",
    "móvil",
    "teléfono",
    "celular",
];

/// Words that make the number after them an identifier, whatever else is around.
const ID_WORDS: &[&str] = &[
    "order",
    "invoice",
    "ticket",
    "tracking",
    "reference",
    "isbn",
    "issn",
    "ean",
    "ssn",
    "account",
    "acct",
    "version",
    "build",
    "serial",
    "sku",
    "case",
    "txn",
    "transaction",
    "passport",
    "policy",
    "imei",
    "imsi",
    "iccid",
    "document",
    "contract",
    "patent",
    "заказ",
    "счет",
    "счёт",
    "трек",
    "накладная",
    "паспорт",
    "договор",
    "инн",
    "снилс",
    "bestellung",
    "rechnung",
    "vertrag",
    "commande",
    "facture",
    "pedido",
];

/// Number markers that mean an identifier unless a phone word is near (`Phone no. …`).
const NUMBER_MARKERS: &[&str] = &["#", "№", "no.", "nr", "nr.", "id", "ref", "inv"];

const CURRENCY_AFTER: &[&str] = &[
    "$", "€", "£", "₽", "¥", "₴", "₸", "%", "usd", "eur", "rub", "gbp", "uah", "руб", "р.", "грн",
    "тыс", "млн", "dollar", "euro", "pounds",
];

fn phone_rules() -> Vec<Rule> {
    let k = DetectorKind::Phone;
    vec![
        // International: + country code, then groups.
        rule(
            k,
            r"\+[0-9]{1,4}(?:[ \x{A0}]?[\-.]?[ \x{A0}]?(?:\([0-9]{1,5}\)|[0-9]{1,6}))*",
            one!(check_phone_international),
        ),
        // North America: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0199.
        rule(
            k,
            r"(?:1[ \x{A0}\-.])?(?:\([2-9][0-9]{2}\)[ \x{A0}]?|[2-9][0-9]{2}[ \x{A0}\-.])[0-9]{3}[ \x{A0}\-.][0-9]{4}",
            one!(check_phone_national),
        ),
        // Russia/CIS with trunk 8: 8 (912) 345-67-89, 8-912-345-67-89.
        rule(
            k,
            r"8[ \x{A0}\-]?\(?[0-9]{3}\)?[ \x{A0}\-]?[0-9]{3}[ \x{A0}\-]?[0-9]{2}[ \x{A0}\-]?[0-9]{2}",
            one!(check_phone_ru_trunk),
        ),
        // Russia/CIS without trunk: (912) 345-67-89, 912 345 67 89.
        rule(
            k,
            r"(?:\([0-9]{3}\)[ \x{A0}]?|[0-9]{3}[ \x{A0}\-])[0-9]{3}[ \x{A0}\-][0-9]{2}[ \x{A0}\-][0-9]{2}",
            one!(check_phone_national),
        ),
        // European trunk 0, one kind of separator.
        rule(
            k,
            r"0[0-9]{1,4}(?:[ \x{A0}][0-9]{2,8}){1,4}|0[0-9]{1,4}(?:-[0-9]{2,8}){1,4}|0[0-9]{1,4}(?:\.[0-9]{2,8}){1,4}|0[0-9]{1,4}/[0-9]{3,8}(?:[ \-][0-9]{2,8})?|\(0[0-9]{1,4}\)[ \x{A0}]?[0-9]{3,8}(?:[ \-][0-9]{2,8}){0,3}",
            one!(check_phone_trunk0),
        ),
        // Any number right after a phone word.
        rule(
            k,
            r"(?i)(?P<kw>phone|tel\.?|telephone|mobile|mob\.?|cell|whats\s?app|viber|signal|call(?:\s+me)?(?:\s+(?:at|on))?|text\s+me(?:\s+(?:at|on))?|sms|телефон|тел\.?|моб\.?|мобильный|сотовый|звоните|звони|позвони(?:те)?|handy|telefon|rufnummer|téléphone|tél\.?|portable|móvil|teléfono|celular)(?:\s*(?:number|no\.?|num|номер|nummer|número))?\s*(?:is\s+)?[:=\-–—]?\s*(?P<num>\+?\(?[0-9][0-9 \x{A0}\-.()]{4,22}[0-9]\)?)",
            one!(check_phone_context),
        ),
    ]
}

/// Shared boundary and shape checks of every phone rule.
fn phone_common(text: &str, r: &Range<usize>) -> bool {
    let s = &text[r.clone()];
    let b = before(text, r.start);
    if is_alnum(b)
        || matches!(
            b,
            Some(
                '+' | '/'
                    | '='
                    | '#'
                    | '№'
                    | '$'
                    | '€'
                    | '£'
                    | '₽'
                    | '&'
                    | '?'
                    | '@'
                    | '-'
                    | '.'
                    | ','
            )
        )
    {
        return false;
    }
    let a = after(text, r.end);
    if is_alnum(a) || matches!(a, Some('%' | '@' | '/' | '=' | '€' | '₽' | '$')) {
        return false;
    }
    if continues_before(text, r.start) || continues_after(text, r.end) {
        return false;
    }
    // Times: 14:30, 10:00-12:00.
    if matches!(a, Some(':' | ',')) && is_digit(after2(text, r.end)) {
        return false;
    }
    if b == Some(':') && is_digit(before2(text, r.start)) {
        return false;
    }
    // Amounts: a currency right after the number.
    let rest: String = text[r.end..]
        .trim_start()
        .chars()
        .take(8)
        .collect::<String>()
        .to_lowercase();
    if CURRENCY_AFTER.iter().any(|c| rest.starts_with(c)) {
        return false;
    }
    // Unbalanced parentheses mean we cut a larger expression.
    if s.matches('(').count() != s.matches(')').count() {
        return false;
    }
    !looks_like_date(s) && !in_url(text, r.start)
}

/// `2024-03-15`, `15.03.2024`, `03/15/24`: three groups, one separator, date-sized.
fn looks_like_date(s: &str) -> bool {
    let groups = digit_groups(s);
    let seps = separators(s);
    if groups.len() < 3 {
        return false;
    }
    let same_sep = seps.iter().take(2).all(|x| x == &seps[0]) && seps[0].trim() != "";
    let (g0, g1, g2) = (groups[0].len(), groups[1].len(), groups[2].len());
    let ymd = g0 == 4
        && (groups[0].starts_with("19") || groups[0].starts_with("20"))
        && g1 <= 2
        && g2 <= 2;
    let dmy = g0 <= 2 && g1 <= 2 && (g2 == 4 || g2 == 2) && groups.len() == 3;
    same_sep && (ymd || dmy)
}

/// The whitespace-delimited token holding `start` is a URL or a path.
fn in_url(text: &str, start: usize) -> bool {
    let prefix = token_before(text, start);
    prefix.contains("://")
        || prefix.starts_with("www.")
        || prefix.contains(".com/")
        || prefix.contains(".me/")
}

/// In the 30 characters before: an id word (order, ticket…) after the last phone word, or a
/// number marker (#, №, no.) with no phone word at all.
fn id_context(text: &str, start: usize) -> bool {
    let w = window_before(text, start, 30);
    let phone = last_word(&w, PHONE_WORDS);
    if let Some(id) = last_word(&w, ID_WORDS)
        && phone.is_none_or(|p| p < id)
    {
        return true;
    }
    phone.is_none() && last_word(&w, NUMBER_MARKERS).is_some()
}

fn check_phone_international(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    let n = digit_count(&text[r.clone()]);
    ((8..=15).contains(&n) && phone_common(text, &r)).then_some(r)
}

fn check_phone_national(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    (phone_common(text, &r) && !id_context(text, r.start)).then_some(r)
}

fn check_phone_ru_trunk(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    let s = &text[r.clone()];
    // Unseparated 8XXXXXXXXXX is left to the phone-word rule.
    let marks = s.chars().filter(|c| !c.is_ascii_digit()).count();
    (marks >= 2 && phone_common(text, &r) && !id_context(text, r.start)).then_some(r)
}

fn check_phone_trunk0(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    let s = &text[r.clone()];
    let n = digit_count(s);
    let groups = digit_groups(s);
    // Lists of small numbers ("01 02 03") are not phones; French 2-2-2-2-2 is.
    let short = groups.iter().all(|g| g.len() <= 2) && groups.len() != 5;
    ((9..=12).contains(&n)
        && groups.len() >= 2
        && !short
        && phone_common(text, &r)
        && !id_context(text, r.start))
    .then_some(r)
}

fn check_phone_context(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?;
    if is_alnum(before(text, kw.start())) {
        return None;
    }
    let m = caps.name("num")?;
    let mut r = m.range();
    // The regex may end on `)` that belongs to the sentence.
    let s = &text[r.clone()];
    if s.ends_with(')') && s.matches('(').count() < s.matches(')').count() {
        r.end -= 1;
    }
    let s = &text[r.clone()];
    if s.contains("  ") {
        return None;
    }
    let n = digit_count(s);
    let groups = digit_groups(s);
    let short = groups.len() <= 4 && groups.iter().all(|g| g.len() <= 2);
    ((7..=15).contains(&n) && !short && phone_common(text, &r)).then_some(r)
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
        r"[0-9](?:[ \x{A0}\-]?[0-9]){12,22}",
        one!(check_payment_card),
    )]
}

fn card_number_ok(digits: &str) -> bool {
    let n = digits.len();
    let first = digits.as_bytes()[0];
    (13..=19).contains(&n)
        && (b'2'..=b'6').contains(&first)
        && (n != 13 || first == b'4')
        && luhn_valid(digits)
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
        if last_word(word, ID_WORDS).is_some() {
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

fn check_payment_card(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    let s = m.as_str();
    let b = before(text, r.start);
    if is_alnum(b) || matches!(b, Some('-' | '.' | ',' | '+')) || continues_before(text, r.start) {
        return None;
    }
    let seps = separators(s);
    if seps.is_empty() {
        let a = after(text, r.end);
        if is_alnum(a) || continues_after(text, r.end) || card_id_context(text, r.start) {
            return None;
        }
        return card_number_ok(s).then_some(r);
    }
    if seps.iter().any(|x| x != &seps[0]) {
        return None;
    }
    let groups = digit_groups(s);
    if groups[0].len() != 4 || groups[1..].iter().any(|g| !(2..=6).contains(&g.len())) {
        return None;
    }
    // The whole run, or the run without a trailing 3-digit group (a CVV).
    let mut tries = vec![groups.len()];
    if groups.len() > 2 && groups[groups.len() - 1].len() == 3 {
        tries.push(groups.len() - 1);
    }
    for k in tries {
        let digits: String = groups[..k].concat();
        if !card_number_ok(&digits) {
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
// IBAN
// ---------------------------------------------------------------------------------------------

/// IBANs: a registered country code, two check digits and the BBAN, at exactly that country's
/// length, with or without single spaces (anywhere after the check digits), passing the ISO 13616 mod-97 check.
///
/// Deliberately not: strings failing mod-97 or the country's length, unknown country codes,
/// lower-case country codes, national account numbers without the IBAN prefix.
pub fn find_ibans(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::Iban, text)
}

/// IBAN lengths by country (the SWIFT IBAN registry).
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16),
    ("BG", 22), ("BH", 22), ("BI", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22),
    ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27), ("DK", 18), ("DO", 28), ("EE", 20),
    ("EG", 29), ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27), ("GB", 22),
    ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HR", 21), ("HU", 28),
    ("IE", 22), ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30), ("KW", 30),
    ("KZ", 20), ("LB", 28), ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20), ("LV", 21),
    ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22), ("MK", 19), ("MN", 20), ("MR", 27),
    ("MT", 31), ("MU", 30), ("NI", 28), ("NL", 18), ("NO", 15), ("OM", 23), ("PK", 24),
    ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22), ("RU", 33),
    ("SA", 24), ("SC", 31), ("SD", 18), ("SE", 24), ("SI", 19), ("SK", 24), ("SM", 27),
    ("SO", 23), ("ST", 25), ("SV", 28), ("TL", 23), ("TN", 24), ("TR", 26), ("UA", 29),
    ("VA", 22), ("VG", 24), ("XK", 20), ("YE", 30),
];

/// The ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97.
pub fn iban_valid(s: &str) -> bool {
    let compact: Vec<char> = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if compact.len() < 5 || !compact.iter().all(char::is_ascii_alphanumeric) {
        return false;
    }
    let country: String = compact[..2].iter().collect();
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == country) else {
        return false;
    };
    if compact.len() != len {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = c.to_digit(36).unwrap_or(0);
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

fn iban_rules() -> Vec<Rule> {
    vec![rule(
        DetectorKind::Iban,
        r"[A-Z]{2}[0-9]{2}(?:[ \x{A0}]?[A-Za-z0-9]){10,30}",
        one!(check_iban),
    )]
}

fn check_iban(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    if is_alnum(before(text, r.start)) {
        return None;
    }
    let s = m.as_str();
    let &(_, len) = IBAN_LENGTHS.iter().find(|(c, _)| *c == &s[..2])?;
    // Take exactly `len` alphanumerics; the candidate may run into the next word.
    let mut seen = 0;
    let mut end = None;
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphanumeric() {
            seen += 1;
            if seen == len {
                end = Some(r.start + i + 1);
                break;
            }
        }
    }
    let end = end?;
    if is_alnum(after(text, end)) {
        return None;
    }
    iban_valid(&text[r.start..end]).then_some(r.start..end)
}

// ---------------------------------------------------------------------------------------------
// Login code
// ---------------------------------------------------------------------------------------------

/// Login and verification codes: 5–6 digits (optionally split as `12-345` or `1 2 3 4 5`) next
/// to a login-code phrase in English, Russian, German, French, Spanish, Italian, Polish,
/// Turkish or Chinese: `Login code: 12345`, `Код для входа в Telegram: 12345`, `your code is
/// 12345`, `12345 is your verification code`.
///
/// Deliberately not: 5–6 digit numbers without such a phrase, codes of other kinds (`zip code`,
/// `error code`, `booking code`, `код товара`, `code 12345 for 20% off`…), 4-digit PINs, codes separated from the phrase by
/// more than a few words or a line break.
pub fn find_login_codes(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::LoginCode, text)
}

const CODE_PHRASES: &str = r"login\s+code|log-in\s+code|sign-in\s+code|verification\s+code|confirmation\s+code|security\s+code|access\s+code|auth(?:entication)?\s+code|one[-\s]time\s+(?:pass)?code|one[-\s]time\s+password|passcode|otp|2fa\s+code|sms\s+code|код\s+для\s+входа|код\s+подтверждения|код\s+авторизации|код\s+доступа|код\s+из\s+смс|код\s+входа|код|código\s+de\s+(?:acceso|verificación|inicio\s+de\s+sesión|confirmación)|código|codice\s+di\s+(?:accesso|verifica)|codice|anmeldecode|bestätigungscode|zugangscode|code\s+de\s+(?:connexion|vérification|confirmation)|kod\s+logowania|kod\s+weryfikacyjny|giriş\s+kodu|doğrulama\s+kodu|kodu|kod|验证码|登录码|code";

/// Words right before a code phrase that make it another kind of code.
const CODE_MODIFIERS: &[&str] = &[
    "zip",
    "postal",
    "post",
    "area",
    "country",
    "error",
    "status",
    "exit",
    "return",
    "response",
    "http",
    "promo",
    "discount",
    "coupon",
    "gift",
    "referral",
    "invite",
    "invitation",
    "product",
    "item",
    "tax",
    "dialing",
    "dialling",
    "source",
    "bar",
    "qr",
    "color",
    "colour",
    "hex",
    "ascii",
    "unicode",
    "machine",
    "byte",
    "op",
    "iso",
    "sort",
    "swift",
    "bic",
    "bank",
    "branch",
    "region",
    "airport",
    "station",
    "course",
    "class",
    "почтовый",
    "промо",
    "postleitzahl",
    "reference",
    "ref",
    "booking",
    "tracking",
    "voucher",
    "order",
    "ticket",
    "reservation",
    "sku",
    "article",
    "part",
    "style",
    "model",
    "бронирования",
];

/// Words shortly after a code that make it a discount code.
const DISCOUNT_WORDS: &[&str] = &[
    "% off",
    " off",
    "discount",
    "скидк",
    "rabatt",
    "descuento",
    "réduction",
    "promo",
    "coupon",
];

/// Words between a code phrase and the number that make it another kind of code.
const CODE_OTHER_KINDS: &[&str] = &[
    "ошибки",
    "ошибка",
    "товара",
    "продукта",
    "региона",
    "страны",
    "города",
    "купона",
    "скидки",
    "заказа",
    "error",
    "product",
    "item",
    "country",
    "region",
    "pocztowy",
    "postal",
    "zip",
];

/// Words that may link a phrase and the code without a colon (`code is 12345`).
const CODE_LINKS: &[&str] = &[
    "is",
    "was",
    "are",
    "equals",
    "это",
    "равен",
    "est",
    "ist",
    "lautet",
    "es",
    "è",
    "to",
    "as",
    "your",
    "ваш",
    "the",
];

fn login_code_rules() -> Vec<Rule> {
    vec![rule(
        DetectorKind::LoginCode,
        &format!(r"(?i){CODE_PHRASES}"),
        check_login_code,
    )]
}

/// A code run (5–6 digits, single separators) starting at the start of its input.
static CODE_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\A[0-9](?:[ \-.]?[0-9]){4,5}")
        .unwrap_or_else(|e| panic!("code run pattern does not compile: {e}"))
});

/// Letters-only words of `s`.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn code_run_ok(text: &str, r: &Range<usize>) -> bool {
    let n = digit_count(&text[r.clone()]);
    let b = before(text, r.start);
    let a = after(text, r.end);
    (5..=6).contains(&n)
        && !continues_before(text, r.start)
        && !continues_after(text, r.end)
        && !is_alnum(b)
        && !is_alnum(a)
        && !matches!(a, Some('%' | '$' | '€' | '₽'))
        && !(a == Some(':') && is_digit(after2(text, r.end)))
        && !(matches!(a, Some('.' | ',')) && is_digit(after2(text, r.end)))
}

/// `kw` is a whole word (or phrase) and not, say, `zip code` or `промокод`.
fn phrase_ok(text: &str, kw: &Range<usize>) -> bool {
    // Chinese has no spaces between words: its phrases need no boundary.
    let cjk = text[kw.clone()]
        .chars()
        .next()
        .is_some_and(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    if !cjk && (is_alnum(before(text, kw.start)) || is_alnum(after(text, kw.end))) {
        return false;
    }
    let prev = words(&window_before(text, kw.start, 20));
    !prev
        .last()
        .is_some_and(|w| CODE_MODIFIERS.contains(&w.as_str()))
}

/// A discount phrase within 25 characters after the code (`code 12345 for 20% off`).
fn discount_after(text: &str, end: usize) -> bool {
    let next: String = text[end..]
        .chars()
        .take(25)
        .collect::<String>()
        .to_lowercase();
    DISCOUNT_WORDS.iter().any(|w| next.contains(w))
}

fn check_login_code(text: &str, caps: &Captures<'_>, out: &mut Vec<Range<usize>>) {
    let Some(kw) = caps.get(0).map(|m| m.range()) else {
        return;
    };
    if !phrase_ok(text, &kw) {
        return;
    }
    out.extend(code_after_phrase(text, &kw));
    out.extend(code_before_phrase(text, &kw));
}

/// `Login code: 12345`, `your code is 12345`, `Код для входа в Telegram: 12345`.
fn code_after_phrase(text: &str, kw: &Range<usize>) -> Option<Range<usize>> {
    let rest = &text[kw.end..];
    let (gap_len, _) = rest
        .char_indices()
        .take(41)
        .find(|(_, c)| c.is_ascii_digit() || *c == '\n')?;
    if !rest[gap_len..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let gap = &rest[..gap_len];
    let start = kw.end + gap_len;
    let run = CODE_RUN.find(&text[start..])?;
    let code = start..start + run.end();
    if !code_run_ok(text, &code) || discount_after(text, code.end) {
        return None;
    }
    let ws = words(gap);
    if ws.len() > 4 || ws.iter().any(|w| CODE_OTHER_KINDS.contains(&w.as_str())) {
        return None;
    }
    let trimmed = gap.trim_end();
    let punct_end = trimmed.ends_with([':', '=', '—', '–', '-', '：', '→']);
    let linked = ws.last().is_none_or(|w| CODE_LINKS.contains(&w.as_str()));
    // A gap with sentence punctuation is another sentence.
    if !(punct_end || linked) || gap.contains(['.', '!', '?', ';']) {
        return None;
    }
    Some(code)
}

/// `12345 is your login code`, `48213 — ваш код`.
fn code_before_phrase(text: &str, kw: &Range<usize>) -> Option<Range<usize>> {
    let head = &text[..kw.start];
    let (gap_start, _) = head
        .char_indices()
        .rev()
        .take(31)
        .find(|(_, c)| c.is_ascii_digit() || *c == '\n')?;
    if !head[gap_start..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let end = gap_start + 1;
    let gap = &head[end..];
    // Walk back over the run: digits with single separators.
    let bytes = head.as_bytes();
    let mut start = gap_start;
    while start >= 2
        && matches!(bytes[start - 1], b' ' | b'-' | b'.')
        && bytes[start - 2].is_ascii_digit()
    {
        start -= 2;
        while start >= 1 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
    }
    while start >= 1 && bytes[start - 1].is_ascii_digit() {
        start -= 1;
    }
    let code = start..end;
    if !code_run_ok(text, &code) {
        return None;
    }
    let ws = words(gap);
    if ws.is_empty() && gap.trim().is_empty() {
        return None;
    }
    if ws.len() > 4 || gap.contains(['.', '!', '?', ';', ',']) {
        return None;
    }
    let lead = gap.trim_start();
    let linked = lead.starts_with(['—', '–', '-', ':'])
        || ws
            .first()
            .is_some_and(|w| ["is", "это", "est", "ist", "es", "as"].contains(&w.as_str()));
    linked.then_some(code)
}

// ---------------------------------------------------------------------------------------------
// API tokens
// ---------------------------------------------------------------------------------------------

/// API tokens and keys: Telegram bot tokens (also inside `api.telegram.org/bot…` URLs), OpenAI
/// `sk-…`, Stripe `sk_live_…`/`rk_test_…`, AWS `AKIA…`/`ASIA…`, GitHub `ghp_…`/`github_pat_…`,
/// GitLab `glpat-…`, Slack `xox[abprs]-…`, Google `AIza…`, JWTs, PEM private key blocks,
/// `Bearer …` values, and the value of `api_key=`/`token:`/`secret=`/`password:` assignments
/// when it is long (≥ 16), mixes letters with digits (or both cases, from 24 characters), and
/// has high entropy (≥ 3 bits per character).
///
/// Deliberately not: placeholders (`YOUR_API_KEY`, `xxxx…`, `<token>`), short or low-entropy
/// values, words like `tokenizer` or `sk-learn`, Stripe publishable keys (`pk_…`), the key name
/// of an assignment (only its value is masked).
pub fn find_api_tokens(text: &str) -> Vec<Range<usize>> {
    find_kind(DetectorKind::ApiToken, text)
}

fn api_token_rules() -> Vec<Rule> {
    let k = DetectorKind::ApiToken;
    vec![
        rule(k, r"[0-9]{8,10}:[A-Za-z0-9_\-]{35}", one!(check_bot_token)),
        rule(
            k,
            r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_\-]{20,}",
            one!(check_prefixed_token),
        ),
        rule(
            k,
            r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
            one!(check_prefixed_token),
        ),
        rule(k, r"(?:AKIA|ASIA)[0-9A-Z]{16}", one!(check_prefixed_token)),
        rule(k, r"gh[pousr]_[A-Za-z0-9]{36,}", one!(check_prefixed_token)),
        rule(
            k,
            r"github_pat_[A-Za-z0-9_]{22,}",
            one!(check_prefixed_token),
        ),
        rule(k, r"glpat-[A-Za-z0-9_\-]{20,}", one!(check_prefixed_token)),
        rule(
            k,
            r"xox[abprs]-[A-Za-z0-9\-]{10,}",
            one!(check_prefixed_token),
        ),
        rule(k, r"AIza[0-9A-Za-z_\-]{35}", one!(check_prefixed_token)),
        rule(
            k,
            r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{20,}",
            one!(check_prefixed_token),
        ),
        rule(
            k,
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
            one!(check_pem_block),
        ),
        rule(
            k,
            r"(?i)(?P<kw>bearer)\s+(?P<value>[A-Za-z0-9_\-.~+/]{20,}=*)",
            one!(check_assigned_value),
        ),
        rule(
            k,
            r#"(?i)(?P<kw>api[_\-.]?key|apikey|api[_\-.]?secret|secret[_\-.]?key|client[_\-.]?secret|access[_\-.]?key(?:[_\-.]?id)?|secret|access[_\-.]?token|auth[_\-.]?token|refresh[_\-.]?token|bot[_\-.]?token|token|password|passwd|pwd|private[_\-.]?key)["']?\s*(?:=>|:=|[:=])\s*["']?(?P<value>[A-Za-z0-9_\-./+=~]{16,})"#,
            one!(check_assigned_value),
        ),
    ]
}

/// From the PEM header over the base64 body to the end line (or as far as the body goes).
fn check_pem_block(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let header = caps.get(0)?.range();
    let body_len = text[header.end..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=\r\n\t ".contains(c)))
        .unwrap_or(text.len() - header.end);
    let mut end = header.end + body_len;
    let tail = &text[end..];
    if tail.starts_with("-----END ")
        && let Some(close) = tail["-----END ".len()..].find("-----")
    {
        end += "-----END ".len() + close + "-----".len();
    } else {
        end = header.end + text[header.end..end].trim_end().len();
    }
    Some(header.start..end)
}

fn token_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_bot_token(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    // `bot123456:AA…` inside a Bot API URL is fine; a longer digit run is not a token.
    if is_digit(before(text, r.start)) || token_char(after(text, r.end)) {
        return None;
    }
    Some(r)
}

fn check_prefixed_token(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    if token_char(before(text, r.start)) || token_char(after(text, r.end)) {
        return None;
    }
    let s = m.as_str();
    let has_digit = s.bytes().any(|b| b.is_ascii_digit());
    let has_alpha = s.bytes().skip(4).any(|b| b.is_ascii_alphabetic());
    (has_digit && has_alpha).then_some(r)
}

/// A secret-looking value: long, high entropy, not a placeholder, and either letters with
/// digits or (24+ characters) both letter cases.
fn secret_value_ok(v: &str) -> bool {
    let has_digit = v.bytes().any(|b| b.is_ascii_digit());
    let has_upper = v.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = v.bytes().any(|b| b.is_ascii_lowercase());
    let mixed = (has_upper || has_lower) && has_digit || (has_upper && has_lower && v.len() >= 24);
    let placeholder = v.to_ascii_lowercase().contains("xxxx")
        || v.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
    v.len() >= 16 && mixed && !placeholder && entropy(v) >= 3.0
}

fn check_assigned_value(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?;
    let b = before(text, kw.start());
    if b.is_some_and(|c| c.is_alphanumeric()) {
        return None;
    }
    let m = caps.name("value")?;
    let mut r = m.range();
    // Sentence punctuation after the value is not part of it.
    while text[..r.end].ends_with(['.', '/']) {
        r.end -= 1;
    }
    if token_char(after(text, r.end)) && !text[r.end..].starts_with(['.', '/']) {
        return None;
    }
    secret_value_ok(&text[r.clone()]).then_some(r)
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
}
