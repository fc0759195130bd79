//! Phone numbers, validated by libphonenumber's metadata (the `phonenumber` crate) rather than
//! by hand-written national shapes.

use std::ops::Range;
use std::str::FromStr;

use phonenumber::country::Id;
use regex::Captures;

use super::{
    NUMBER_MARKERS, Rule, Settings, after, after2, before, before2, continues_after,
    continues_before, digit_count, digit_groups, is_alnum, is_digit, one, rule, separators,
    token_before,
};
use crate::policy::config::DetectorKind;
use crate::policy::context::{
    ID_WORDS, NUMBER_WORDS, PHONE_WORDS, after_in_sentence, before_in_sentence,
};

/// Phone numbers. International ones (`+` and a country code) whenever libphonenumber finds
/// them valid, or with a phone word near; national ones (no `+`) when a phone word stands near
/// them in the same sentence (`tel`, `звоните`, `تلفن`, `电话`, `携帯`…, see
/// [`crate::policy::context::PHONE`]), or when they are grouped and valid for one of the
/// configured regions (`policy.redaction.phone_regions`). Digits of any script count.
///
/// Deliberately not: dates and times, amounts (a currency after), version strings and IP
/// addresses, numbers after id words (`order`, `заказ`, `订单`…) or number markers (`#`, `№`),
/// numbers inside URLs, unseparated national numbers without a phone word, lists of one- and
/// two-digit numbers (lottery draws), numbers longer than the run they sit in.
pub fn find_phones(text: &str) -> Vec<Range<usize>> {
    super::find_kind(DetectorKind::Phone, text)
}

/// The regions whose national formats count without a phone word.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PhoneRegions(Vec<Id>);

/// The default of `policy.redaction.phone_regions`: the countries where the languages the
/// context tables cover are spoken (all of the Spanish- and Arabic-speaking ones), and the
/// large Telegram markets around them.
pub const DEFAULT_PHONE_REGIONS: &[&str] = &[
    // English
    "US", "CA", "GB", "IE", "AU", "NZ", "IN", "SG", "PK", "NG", "PH",
    // Russian, Ukrainian and their neighbours
    "RU", "KZ", "BY", "UA", "UZ", "KG", // Persian, Arabic
    "IR", "AF", "SA", "AE", "EG", "IQ", "MA", "DZ", "TN", "LY", "JO", "LB", "SY", "KW", "QA", "BH",
    "OM", "YE", "SD", // Chinese
    "CN", "HK", "TW", "MO", // Spanish, Portuguese
    "ES", "MX", "AR", "CO", "CL", "PE", "VE", "EC", "BO", "PY", "UY", "GT", "CR", "PA", "DO", "CU",
    "BR", "PT", "AO", "MZ", // German, French, Italian, Turkish
    "DE", "AT", "CH", "LU", "FR", "BE", "IT", "TR",
    // Hindi, Indonesian, Japanese, Korean
    "NP", "ID", "MY", "JP", "KR",
];

impl Default for PhoneRegions {
    fn default() -> Self {
        PhoneRegions(
            DEFAULT_PHONE_REGIONS
                .iter()
                .filter_map(|r| parse_region(r))
                .collect(),
        )
    }
}

impl PhoneRegions {
    /// Regions from their ISO 3166 codes; the first code libphonenumber does not know is the
    /// error.
    pub(crate) fn new(codes: &[String]) -> Result<PhoneRegions, String> {
        codes
            .iter()
            .map(|c| parse_region(c).ok_or_else(|| c.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map(PhoneRegions)
    }
}

/// A region code libphonenumber has metadata for (`DE`, `BR`), upper case.
pub(crate) fn parse_region(code: &str) -> Option<Id> {
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let id = Id::from_str(code).ok()?;
    phonenumber::metadata::DATABASE
        .by_id(id.as_ref())
        .map(|_| id)
}

pub(super) fn rules() -> Vec<Rule> {
    let k = DetectorKind::Phone;
    vec![
        // International: + country code, then groups.
        rule(
            k,
            r"\+[ \x{A0}]?[0-9]{1,4}(?:[ \x{A0}]?[\-.]?[ \x{A0}]?(?:\([0-9]{1,5}\)|[0-9]{1,6}))*",
            |s, text, caps, out| out.extend(check_international(s, text, caps)),
        ),
        // National: a run of digits and single separators (also ` / `), 7–15 digits.
        rule(
            k,
            r"\(?[0-9](?:[ \x{A0}\-./()]{0,3}[0-9]){6,}",
            |s, text, caps, out| out.extend(check_national(s, text, caps)),
        ),
        // Messenger and dial links carry the international number without its `+`.
        rule(
            k,
            r"(?i)(?:wa\.me/|whatsapp\.com/send/?\?phone=|viber://chat\?number=|tel:)(?:\+|%2b)?(?P<num>[0-9]{8,15})",
            one!(check_link),
        ),
    ]
}

/// The number of a `wa.me/447…`, `api.whatsapp.com/send?phone=…`, `viber://…` or `tel:…` link,
/// valid as an international number.
fn check_link(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let num = caps.get(0).and(caps.name("num"))?;
    if is_alnum(after(text, num.end())) || is_alnum(before(text, caps.get(0)?.start())) {
        return None;
    }
    valid_international(&format!("+{}", num.as_str())).then(|| num.range())
}

/// Shared boundary and shape checks of every phone candidate.
/// Keys whose value is a phone number in logs and configs (`to=+1415…`, `msisdn=90532…`).
const PHONE_KEYS: &[&str] = &[
    "to",
    "from",
    "tel",
    "phone",
    "mobile",
    "msisdn",
    "dest",
    "recipient",
    "number",
    "cell",
    "whatsapp",
];

/// Abbreviations of "telephone" written right against the number (`тел.89031427758`).
const PHONE_ABBREVIATIONS: &[&str] = &["tel", "тел", "tlf", "telf", "mob", "моб", "cel", "tél"];

/// The number is the value of a phone key (`to=`, `mobile=`) or follows a phone abbreviation
/// and its dot (`тел.`).
fn phone_key_before(text: &str, start: usize) -> bool {
    let table = match before(text, start) {
        Some('=') => PHONE_KEYS,
        Some('.') => PHONE_ABBREVIATIONS,
        _ => return false,
    };
    let key =
        crate::policy::context::word_ending_at(text, start - 1, |c| c.is_alphabetic() || c == '_');
    let last = key.rsplit('_').next().unwrap_or_default();
    table.contains(&last)
}

fn phone_common(text: &str, r: &Range<usize>) -> bool {
    let s = &text[r.clone()];
    let b = before(text, r.start);
    if phone_key_before(text, r.start) {
        // `to=+14155550987`: the key says what the value is.
    } else if is_alnum(b)
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
    if super::amount_after(text, r.end) || masked_next_to(text, r) {
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
    if groups.len() < 3 || seps.is_empty() {
        return false;
    }
    let same_sep = seps.iter().take(2).all(|x| x == &seps[0]) && seps[0].trim() != "";
    let (g0, g1, g2) = (groups[0].len(), groups[1].len(), groups[2].len());
    let ymd = g0 == 4
        && (groups[0].starts_with("19")
            || groups[0].starts_with("20")
            || groups[0].starts_with("14"))
        && g1 <= 2
        && g2 <= 2;
    // `07-12-2026`, also followed by an hour after another separator (`07-12-2026 6 baje`).
    let date_then_other = g2 == 4 && seps.get(2).is_some_and(|x| x != &seps[0]);
    let dmy = g0 <= 2 && g1 <= 2 && (g2 == 4 || g2 == 2) && (groups.len() == 3 || date_then_other);
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

/// A group of masked digits next to the number (`6037-9975-****-1234`): the visible part of a
/// card or account number. (A mask right against it is markdown: `**+44 20 7946 0958**`.)
fn masked_next_to(text: &str, r: &Range<usize>) -> bool {
    let mask = |c: Option<char>| matches!(c, Some('*' | '•' | '●' | '×'));
    let sep = |c: Option<char>| matches!(c, Some('-' | ' ' | '.'));
    (sep(after(text, r.end)) && mask(after2(text, r.end)))
        || (sep(before(text, r.start)) && mask(before2(text, r.start)))
}

/// Characters of context looked at before and after a number.
const BEFORE: usize = 40;
const AFTER: usize = 24;

/// What the same sentence says about the number at `r`.
#[derive(Debug, PartialEq)]
enum Said {
    /// A phone word is near, and no id word stands between it and the number.
    Phone,
    /// An id word (or a number marker with no phone word) is right before.
    Id,
    /// Nothing either way.
    Nothing,
}

fn context(text: &str, r: &Range<usize>) -> Said {
    let (_, before) = before_in_sentence(text, r.start, BEFORE);
    let phone = PHONE_WORDS.find(&before).map(|m| m.end).max();
    let id = ID_WORDS.find(&before).map(|m| m.end).max();
    match (phone, id) {
        (Some(p), Some(i)) if i > p => return Said::Id,
        // The same word in both tables (`cep`: a mobile in Turkish, a postcode in Portuguese).
        (Some(p), Some(i)) if i == p => return Said::Nothing,
        (Some(_), _) => return Said::Phone,
        (None, Some(_)) => return Said::Id,
        (None, None) => {}
    }
    let tail: String = before.chars().rev().take(12).collect::<String>();
    let tail: String = tail.chars().rev().collect();
    // A marker right before the number (`# 12345`, `№ 12`); not one that a word follows
    // (`my canadian # is +1-506-…`: there `#` is the word "number").
    if let Some(end) = super::last_word(&tail, NUMBER_MARKERS)
        && tail[end..]
            .chars()
            .all(|c| c.is_whitespace() || matches!(c, ':' | '.' | '-'))
    {
        return Said::Id;
    }
    let after = after_in_sentence(text, r.end, AFTER);
    if ID_WORDS.any(&after) {
        return Said::Nothing;
    }
    if NUMBER_WORDS.any(&before) || PHONE_WORDS.any(&after) {
        return Said::Phone;
    }
    Said::Nothing
}

/// Shapes that are numbers of other kinds: IP addresses, decimals (`116.4074`), counts grouped
/// in thousands (`8 336 817`), and a run right after an IBAN-like head (`NL69 DGPA 3186 …`).
fn other_number(text: &str, r: &Range<usize>) -> bool {
    let s = &text[r.clone()];
    let groups = digit_groups(s);
    let seps = separators(s);
    let dots = !seps.is_empty() && seps.iter().all(|x| x == ".");
    if dots
        && groups.len() == 4
        && groups
            .iter()
            .all(|g| g.len() <= 3 && g.parse::<u16>().is_ok_and(|v| v <= 255))
    {
        return true;
    }
    if dots && groups.len() == 2 {
        return true;
    }
    // Brazilian postcodes (CEP): 01310-100.
    if seps.len() == 1
        && seps[0] == "-"
        && groups.len() == 2
        && groups[0].len() == 5
        && groups[1].len() == 3
    {
        return true;
    }
    let thousands = groups.len() >= 2
        && groups[0].len() <= 2
        && groups[1..].iter().all(|g| g.len() == 3)
        && seps.iter().all(|x| x == &seps[0]);
    if thousands && !s.starts_with('0') {
        return true;
    }
    iban_like_head(text, r.start)
}

/// The groups before `start` on its line walk back, through groups of four letters and digits
/// (`1614 9P4T`), to an IBAN head (`KZ51`): the run continues an IBAN, valid or not.
fn iban_like_head(text: &str, start: usize) -> bool {
    let line = text[..start].rsplit('\n').next().unwrap_or_default();
    for t in line.split_whitespace().rev().take(8) {
        let b = t.as_bytes();
        if b.len() == 4
            && b[..2].iter().all(u8::is_ascii_uppercase)
            && b[2..].iter().all(u8::is_ascii_digit)
        {
            return true;
        }
        if !(b.len() == 4 && b.iter().all(u8::is_ascii_alphanumeric)) {
            return false;
        }
    }
    false
}

/// Only digits, spaces and the separators libphonenumber reads (so odd input never reaches it).
fn sanitized(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
        .collect()
}

fn valid_international(s: &str) -> bool {
    phonenumber::parse(None, sanitized(s)).is_ok_and(|n| phonenumber::is_valid(&n))
}

fn valid_in(regions: &PhoneRegions, s: &str) -> bool {
    national_in(regions, s, |_| true, |_, _| true)
}

/// Valid as a mobile number of one of the regions and written with that region's national
/// prefix (`09384892661`, `082277723937`): distinctive enough to stand without grouping. Ten
/// digits without the prefix are as often a timestamp (`1710498712`) as a German mobile.
fn mobile_in(regions: &PhoneRegions, s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let with_prefix = |id: Id| {
        let meta = phonenumber::metadata::DATABASE.by_id(id.as_ref());
        meta.and_then(|m| m.national_prefix())
            .is_some_and(|prefix| digits.starts_with(prefix))
    };
    national_in(regions, s, with_prefix, |_, n| {
        n.number_type(&phonenumber::metadata::DATABASE) == phonenumber::Type::Mobile
    })
}

/// Valid for one of `regions` (those `worth` a parse) as written there, and of the `kind`
/// asked. `worth` is a check on the region alone, made before any parse: parsing and
/// validating run the region's regexes, which phonenumber keeps in a cache of only 100, so
/// every region skipped here is regexes not compiled again.
fn national_in(
    regions: &PhoneRegions,
    s: &str,
    worth: impl Fn(Id) -> bool,
    kind: impl Fn(Id, &phonenumber::PhoneNumber) -> bool,
) -> bool {
    let s = sanitized(s);
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    regions.0.iter().filter(|&&id| worth(id)).any(|&id| {
        phonenumber::parse(Some(id), &s).is_ok_and(|n| {
            phonenumber::is_valid(&n) && written_nationally(id, &digits, &n) && kind(id, &n)
        })
    })
}

/// The number as written (`digits`, no `+`) is how the region writes it at home: with its
/// national prefix where the region's national format has one (`010-…` in Korea), without
/// where it has none or it is optional (`(11) 92321-5961` in Brazil). Without this, any
/// eight digits are some country's number with the trunk `0` left out.
fn written_nationally(id: Id, digits: &str, n: &phonenumber::PhoneNumber) -> bool {
    let Some(meta) = phonenumber::metadata::DATABASE.by_id(id.as_ref()) else {
        return false;
    };
    let Some(prefix) = meta.national_prefix() else {
        return true;
    };
    if digits.starts_with(prefix) {
        return true;
    }
    let national = n.national().to_string();
    let format = meta.formats().iter().find(|f| {
        let leading = f
            .leading_digits()
            .last()
            .is_none_or(|re| re.find(&national).is_some_and(|m| m.start() == 0));
        let whole = f
            .pattern()
            .find(&national)
            .is_some_and(|m| m.start() == 0 && m.end() == national.len());
        leading && whole
    });
    format.is_none_or(|f| {
        f.is_national_prefix_optional()
            || f.national_prefix().is_none_or(|rule| !rule.contains("$NP"))
    })
}

/// How close (characters) an id word must stand to a valid international number to make it
/// an id.
const ID_NEAR: usize = 24;

fn check_international(_: &Settings, text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    let n = digit_count(&text[r.clone()]);
    if !(8..=15).contains(&n) || !phone_common(text, &r) {
        return None;
    }
    match context(text, &r) {
        Said::Phone => Some(r),
        // An id word far back in the sentence does not make a valid international number an
        // id (`Order update: delivery agent Suresh +91 9812 345 670`); one right before does.
        Said::Id => {
            let (_, near) = before_in_sentence(text, r.start, ID_NEAR);
            (!ID_WORDS.any(&near) && valid_international(&text[r.clone()])).then_some(r)
        }
        Said::Nothing => {
            // Valid by the metadata, or at least written like a phone number (three or more
            // groups, or a bracketed area code): fictional 555 numbers are still numbers.
            let s = &text[r.clone()];
            let formatted = digit_groups(s).len() >= 3 || s.contains('(');
            (valid_international(s) || formatted).then_some(r)
        }
    }
}

fn check_national(settings: &Settings, text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let mut r = caps.get(0)?.range();
    // A `(` or `)` at an edge that has no partner belongs to the sentence.
    while text[r.clone()].ends_with(')')
        && text[r.clone()].matches('(').count() < text[r.clone()].matches(')').count()
    {
        r.end -= 1;
    }
    if text[r.clone()].starts_with('(')
        && text[r.clone()].matches('(').count() > text[r.clone()].matches(')').count()
    {
        r.start += 1;
    }
    let s = &text[r.clone()];
    let n = digit_count(s);
    if !(7..=15).contains(&n) || !phone_common(text, &r) {
        return None;
    }
    let groups = digit_groups(s);
    // Lists of small numbers ("05 12 23 34 45") are not phones; French 2-2-2-2-2 is.
    let small = groups.iter().all(|g| g.len() <= 2) && groups.len() != 5;
    if small || other_number(text, &r) {
        return None;
    }
    let regions = &settings.phone_regions;
    match context(text, &r) {
        Said::Phone => Some(r),
        Said::Id => None,
        // Seven digits without a word are as often a postcode (`100-0005`, `1000-001`).
        Said::Nothing => (groups.len() >= 2 && n >= 8 && valid_in(regions, s)
            || groups.len() == 1 && n >= 10 && mobile_in(regions, s))
        .then_some(r),
    }
}
