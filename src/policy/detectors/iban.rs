//! IBANs by the official registry: every country's length and BBAN structure (the
//! `iban_validate` crate carries the SWIFT IBAN registry), checked with ISO 13616 mod-97.

use std::ops::Range;

use iban::{BaseIban, Iban, ParseIbanError};
use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::{Rule, Settings, after, before, is_alnum, rule};
use crate::policy::config::DetectorKind;

/// IBANs: a country code of the SWIFT registry (or one of the countries the crate lacks,
/// [`OUTSIDE_CRATE`]), two check digits and the BBAN in that country's length and structure,
/// passing mod-97; upper or lower case, unseparated or grouped by single spaces.
///
/// Deliberately not: strings failing mod-97, the country's length or its BBAN structure,
/// unknown country codes, national account numbers without the IBAN prefix.
pub fn find_ibans(text: &str) -> Vec<Range<usize>> {
    super::find_kind(DetectorKind::Iban, text)
}

/// IBAN countries `iban_validate` does not know: registry countries its generated table misses
/// (Pakistan, Honduras) and national IBANs in use outside the SWIFT registry (Iran's Sheba,
/// the Maghreb, the West and Central African monetary unions). Each with its BBAN structure in
/// registry notation: `(count, class)`, class `n` digits, `a` upper-case letters, `c` either.
const OUTSIDE_CRATE: &[(&str, &[(usize, u8)])] = &[
    ("PK", &[(4, b'a'), (16, b'c')]),
    ("HN", &[(4, b'a'), (20, b'n')]),
    ("IR", &[(22, b'n')]),
    ("DZ", &[(22, b'n')]),
    ("MA", &[(24, b'n')]),
    ("AO", &[(21, b'n')]),
    ("MZ", &[(21, b'n')]),
    ("CV", &[(21, b'n')]),
    ("GW", &[(2, b'c'), (19, b'n')]),
    ("BJ", &[(2, b'c'), (22, b'n')]),
    ("BF", &[(2, b'c'), (22, b'n')]),
    ("CI", &[(2, b'c'), (22, b'n')]),
    ("ML", &[(2, b'c'), (22, b'n')]),
    ("NE", &[(2, b'c'), (22, b'n')]),
    ("SN", &[(2, b'c'), (22, b'n')]),
    ("TG", &[(2, b'c'), (22, b'n')]),
    ("CM", &[(23, b'n')]),
    ("CF", &[(23, b'n')]),
    ("CG", &[(23, b'n')]),
    ("GA", &[(23, b'n')]),
    ("GQ", &[(23, b'n')]),
    ("TD", &[(23, b'n')]),
    ("KM", &[(23, b'n')]),
    ("MG", &[(23, b'n')]),
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
        Err(ParseIbanError::UnknownCountry(base)) => outside_crate_ok(&base),
        Err(_) => false,
    }
}

/// `base` (mod-97 already checked by `iban_validate`) has the structure [`OUTSIDE_CRATE`]
/// gives its country.
fn outside_crate_ok(base: &BaseIban) -> bool {
    use iban::IbanLike;
    let s = base.electronic_str();
    let Some((_, bban)) = OUTSIDE_CRATE.iter().find(|(c, _)| s.starts_with(c)) else {
        return false;
    };
    let mut rest = s.as_bytes().get(4..).unwrap_or_default();
    for &(count, class) in *bban {
        let Some((head, tail)) = rest.split_at_checked(count) else {
            return false;
        };
        let ok = head.iter().all(|b| match class {
            b'n' => b.is_ascii_digit(),
            b'a' => b.is_ascii_uppercase(),
            _ => b.is_ascii_alphanumeric(),
        });
        if !ok {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}

/// A country code, check digits and up to 30 more letters and digits, grouped or not.
const IBAN: &str = r"(?i)[a-z]{2}[0-9]{2}(?:[ \x{A0}\-]?[a-z0-9]){11,30}";

static IBAN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(IBAN).unwrap_or_else(|e| panic!("IBAN pattern does not compile: {e}"))
});

pub(super) fn rules() -> Vec<Rule> {
    vec![
        rule(DetectorKind::Iban, IBAN, check_ibans)
            .anchored(r"[A-Za-z]{2}[0-9]{2}[ \x{A0}\-]?[A-Za-z0-9]{4}"),
    ]
}

/// Every IBAN in the candidate: grouped IBANs run into the words after them, so the candidate
/// of the first may swallow the head of the next (`FI98 8403 … 67 et grec GR30 7971 …`).
fn check_ibans(_: &Settings, text: &str, caps: &Captures<'_>, out: &mut Vec<Range<usize>>) {
    if let Some(m) = caps.get(0) {
        super::rescan(text, m.range(), &IBAN_RE, check_iban, out);
    }
}

fn check_iban(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    if is_alnum(before(text, r.start)) {
        return None;
    }
    let s = &text[r.clone()];
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
