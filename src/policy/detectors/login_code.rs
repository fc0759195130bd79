//! Login and verification codes: a code-sized number with a code word (or the service that
//! sends codes) near it in the same sentence, in any of the languages of
//! [`crate::policy::context`]; and the web-login codes of `my.telegram.org`.

use std::ops::Range;

use regex::Captures;

use super::{
    Rule, after, after2, before, continues_after, continues_before, digit_groups, is_alnum,
    is_digit, offset_in, one, rule, token_before,
};
use crate::policy::config::DetectorKind;
use crate::policy::context::{
    CODE_NOT_WORDS, CODE_SERVICES, CODE_WORDS, Words, after_in_sentence, before_in_sentence,
};

/// Login and verification codes: 5–6 digits of any script (also split as `12 345`, `676-917`
/// or `1 2 3 4 5`) with a code word near in the same sentence (`Login code: 12345`, `Код для
/// входа: 12345`, `کد ورود: ۸۸۳۰۹`, `验证码是494336`, `12345 is your code`), or right next to
/// the name of a service that sends them (`hab 92706 von Telegram bekommen`), or answering a
/// question about a code (`which code came? — «79 067»`); the digits of a `t.me/login/…` link;
/// and the 10–11 character web-login code after `my.telegram.org`.
///
/// Deliberately not: 5–6 digit numbers without such context, codes of other kinds (`zip code`,
/// `error code`, `промокод`, `取件码`, `code 12345 for 20% off`…), 4-digit PINs, thousands
/// (`12.500`), codes in another sentence or line than their word.
pub fn find_login_codes(text: &str) -> Vec<Range<usize>> {
    super::find_kind(DetectorKind::LoginCode, text)
}

/// Characters of context looked at before and after a code.
const BEFORE: usize = 36;
const AFTER: usize = 28;
/// A service name counts only this close (characters).
const SERVICE_NEAR: usize = 16;

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

pub(super) fn rules() -> Vec<Rule> {
    let k = DetectorKind::LoginCode;
    vec![
        rule(k, r"[0-9](?:[ \-]?[0-9]){4,5}", one!(check_code)),
        rule(k, r"(?i)my\.telegram\.org", one!(check_web_code)),
    ]
}

/// Boundaries of a code: not part of a longer number, word, amount, time or decimal.
fn run_ok(text: &str, r: &Range<usize>) -> bool {
    let b = before(text, r.start);
    let a = after(text, r.end);
    !continues_before(text, r.start)
        && !continues_after(text, r.end)
        && !is_alnum(b)
        && !is_alnum(a)
        && !matches!(
            b,
            Some('+' | '#' | '№' | '$' | '€' | '£' | '₽' | '-' | '.' | ',')
        )
        && !matches!(a, Some('%' | '$' | '€' | '₽'))
        && !(a == Some(':') && is_digit(after2(text, r.end)))
        && !(matches!(a, Some('.' | ',')) && is_digit(after2(text, r.end)))
}

/// How codes are grouped when they are: one run, single digits, or two or three groups of two
/// or three (`12 345`, `676-917`, `12 34 56`).
fn grouping_ok(s: &str) -> bool {
    let groups = digit_groups(s);
    groups.len() == 1
        || groups.iter().all(|g| g.len() == 1)
        || ((2..=3).contains(&groups.len()) && groups.iter().all(|g| (2..=3).contains(&g.len())))
}

fn discount_after(text: &str, end: usize) -> bool {
    let next: String = text[end..]
        .chars()
        .take(25)
        .collect::<String>()
        .to_lowercase();
    DISCOUNT_WORDS.iter().any(|w| next.contains(w))
}

fn check_code(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    if !run_ok(text, &r) || !grouping_ok(&text[r.clone()]) {
        return None;
    }
    // The digits of a Telegram login link: t.me/login/12345.
    if token_before(text, r.start).ends_with("login/") {
        return Some(r);
    }
    if discount_after(text, r.end) {
        return None;
    }
    let (from, before) = before_in_sentence(text, r.start, BEFORE);
    let after = after_in_sentence(text, r.end, AFTER);
    // `12345 lines`: the word right after the number says what it counts.
    if first_word(&after).is_some_and(|w| is_exactly(&CODE_NOT_WORDS, &w)) {
        return None;
    }
    if let Some(kw) = CODE_WORDS.find(&before).last() {
        // `promo code 12345`, `код ошибки 12345`: another kind of code.
        let modifier =
            last_word(&before[..kw.start]).is_some_and(|w| is_exactly(&CODE_NOT_WORDS, &w));
        return (!modifier && !CODE_NOT_WORDS.any(&before[kw.end..])).then_some(r);
    }
    // `Order 12345`, `Line 12345`: the word right before says what the number is.
    if last_word(&before).is_some_and(|w| is_exactly(&CODE_NOT_WORDS, &w)) {
        return None;
    }
    if let Some(kw) = CODE_WORDS.find(&after).next() {
        let gap = &after[..kw.start];
        let linked = !gap.contains(',') && gap.split_whitespace().count() <= 3;
        return (linked && !CODE_NOT_WORDS.any(gap)).then_some(r);
    }
    let near_before: String = {
        let rev: String = before.chars().rev().take(SERVICE_NEAR).collect();
        rev.chars().rev().collect()
    };
    let near_after: String = after.chars().take(SERVICE_NEAR + 4).collect();
    if CODE_SERVICES.any(&near_before) || CODE_SERVICES.any(&near_after) {
        return Some(r);
    }
    // An answer to a question about a code: `which code came? — «79 067»`.
    if let Some(q) = before_char(text, from).filter(|c| matches!(c, '?' | '？' | '؟'))
        && text[from..r.start].chars().count() <= 8
    {
        let (_, question) = before_in_sentence(text, from - q.len_utf8(), BEFORE);
        if CODE_WORDS.any(&question) && !CODE_NOT_WORDS.any(&question) {
            return Some(r);
        }
    }
    None
}

/// The first word (letters only) of `s`.
fn first_word(s: &str) -> Option<String> {
    s.split(|c: char| !c.is_alphabetic())
        .find(|w| !w.is_empty())
        .map(str::to_string)
}

/// The word (letters only) that `s` ends with, spaces and hyphens aside (`zip ` → `zip`;
/// `【line】` → none: a bracket parts it from what follows).
fn last_word(s: &str) -> Option<String> {
    let s = s.trim_end_matches([' ', '-', '\u{a0}']);
    let w: String = s.chars().rev().take_while(|c| c.is_alphabetic()).collect();
    (!w.is_empty()).then(|| w.chars().rev().collect())
}

/// `w` is one of the table's words exactly (no ending).
fn is_exactly(table: &Words, w: &str) -> bool {
    table.find(w).any(|m| m.start == 0 && m.end == w.len())
}

fn before_char(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

/// The 10–11 character code after `my.telegram.org`: letters and digits (also `_`, `-`) with
/// at least two of upper case, lower case and digits.
fn check_web_code(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let host_end = m.start() + "my.telegram.org".len();
    let rest = &text[host_end..];
    let mut stop = rest.len().min(64);
    while !rest.is_char_boundary(stop) {
        stop -= 1;
    }
    let window = rest[..stop].split('\n').next().unwrap_or_default();
    for token in window.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        let at = host_end + offset_in(window, token);
        if !(10..=11).contains(&token.len()) || is_alnum(after(text, at + token.len())) {
            continue;
        }
        let upper = token.bytes().any(|b| b.is_ascii_uppercase());
        let lower = token.bytes().any(|b| b.is_ascii_lowercase());
        let digit = token.bytes().any(|b| b.is_ascii_digit());
        if [upper, lower, digit].iter().filter(|x| **x).count() >= 2 {
            return Some(at..at + token.len());
        }
    }
    None
}
