//! IBANs by the official registry: every country's length and BBAN structure (the
//! `iban_validate` crate carries the SWIFT IBAN registry), checked with ISO 13616 mod-97.

use std::ops::Range;

use iban::{BaseIban, Iban, ParseIbanError};
use regex::Captures;

use super::{Rule, after, before, is_alnum, one, rule};
use crate::policy::config::DetectorKind;

/// IBANs: a country code of the SWIFT registry (or one of the few national IBANs outside it,
/// [`OUTSIDE_REGISTRY`]), two check digits and the BBAN in that country's length and structure,
/// passing mod-97; upper or lower case, unseparated or grouped by single spaces.
///
/// Deliberately not: strings failing mod-97, the country's length or its BBAN structure,
/// unknown country codes, national account numbers without the IBAN prefix.
pub fn find_ibans(text: &str) -> Vec<Range<usize>> {
    super::find_kind(DetectorKind::Iban, text)
}

/// National IBANs in use but not in the SWIFT registry: country, length, BBAN all digits.
const OUTSIDE_REGISTRY: &[(&str, usize)] = &[
    ("IR", 26),
    ("DZ", 26),
    ("AO", 25),
    ("MZ", 25),
    ("CV", 25),
    ("MA", 28),
    ("BJ", 28),
    ("CI", 28),
    ("SN", 28),
];

/// True when `s` (spaces allowed, any case) is a valid IBAN.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    match compact.parse::<Iban>() {
        Ok(_) => true,
        Err(ParseIbanError::UnknownCountry(base)) => outside_registry_ok(&base),
        Err(_) => false,
    }
}

fn outside_registry_ok(base: &BaseIban) -> bool {
    use iban::IbanLike;
    let s = base.electronic_str();
    OUTSIDE_REGISTRY.iter().any(|(c, len)| {
        s.starts_with(c) && s.len() == *len && s[4..].bytes().all(|b| b.is_ascii_digit())
    })
}

pub(super) fn rules() -> Vec<Rule> {
    vec![
        rule(
            DetectorKind::Iban,
            r"(?i)[a-z]{2}[0-9]{2}(?:[ \x{A0}\-]?[a-z0-9]){11,30}",
            one!(check_iban),
        )
        .anchored(r"[A-Za-z]{2}[0-9]{2}[ \x{A0}\-]?[A-Za-z0-9]{4}"),
    ]
}

fn check_iban(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    if is_alnum(before(text, r.start)) {
        return None;
    }
    let s = m.as_str();
    let cc = &s[..2];
    // Mixed-case country codes (`De12…`) are words, not IBANs.
    if !(cc.bytes().all(|b| b.is_ascii_uppercase()) || cc.bytes().all(|b| b.is_ascii_lowercase())) {
        return None;
    }
    // The candidate may run into the next word: try every end that is followed by a boundary,
    // longest first.
    let mut ends: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphanumeric())
        .map(|(i, c)| r.start + i + c.len_utf8())
        .filter(|&e| !is_alnum(after(text, e)))
        .collect();
    ends.reverse();
    ends.into_iter()
        .find(|&e| {
            let n = text[r.start..e]
                .bytes()
                .filter(u8::is_ascii_alphanumeric)
                .count();
            (15..=34).contains(&n) && iban_valid(&text[r.start..e].replace(['\u{a0}', '-'], " "))
        })
        .map(|e| r.start..e)
}
