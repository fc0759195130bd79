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
    CODE_NOT_WORDS, CODE_SERVICES, CODE_WORDS, DIGIT_NAMES, ID_WORDS, LONGEST_DIGIT_NAME,
    SHARE_WARNINGS, Words, after_in_sentence, before_in_sentence, digit_named, no_space_script,
};

/// Login and verification codes: 4–8 digits of any script (also split as `12 345`, `676-917`
/// or `1 2 3 4 5`) with a code word near in the same sentence (`Login code: 12345`, `Код для
/// входа: 12345`, `کد ورود: ۸۸۳۰۹`, `验证码是494336`, `12345 is your code`); five or six digits
/// also right next to the name of a service that sends them (`hab 92706 von Telegram
/// bekommen`), answering a question about a code (`which code came? — «79 067»`), as the short
/// reply to a message that asked for one, or in a message that warns not to share it (`Use
/// 772019 para autorizar o Pix. Não compartilhe.`); five to eight digits read out one by one
/// (`4 8 1 7 2`) or written after the words that spelled them (`four one nine two seven →
/// 41927`); the code of an origin-bound SMS (`@apple.com #902374`); capitals and digits after a
/// code word and a colon (`Einmalpasswort: ZX4TQ9`); the digits of a `t.me/login/…` link; and
/// the 10–11 character web-login code near `my.telegram.org`.
///
/// Deliberately not: numbers without such context, codes of other kinds (`zip code`, `error
/// code`, `промокод`, `取件码`, `code 12345 for 20% off`…), amounts (`25 000 FCFA`), the value
/// of a key that is no code word (`appid=4421`), numbers an id word names (`код банку, МФО
/// 305299`), thousands (`12.500`), codes in another sentence or line than their word.
pub fn find_login_codes(text: &str) -> Vec<Range<usize>> {
    super::find_kind(DetectorKind::LoginCode, text)
}

/// Characters of context looked at before and after a code.
const BEFORE: usize = 64;
const AFTER: usize = 40;
/// A service name counts only this close (characters).
const SERVICE_NEAR: usize = 16;

/// Verbs that link a name to its value (`… est 295 031`, `… is 4821`).
const COPULAS: &[&str] = &[
    "is", "est", "ist", "es", "é", "è", "era", "adalah", "hai", "lautet", "是", "это",
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

pub(super) fn rules() -> Vec<Rule> {
    let k = DetectorKind::LoginCode;
    vec![
        rule(k, r"[0-9](?:[ \-]?[0-9]){3,7}", one!(check_code)),
        rule(k, r"(?i)my\.telegram\.org", one!(check_web_code)),
        rule(
            k,
            r"(?:[:：][ \t]*|(?:is|est|ist|lautet|es|é|è|adalah|это)[ \t]+|[是为はが는은][ \t]*|(?P<bare>[ \t]))(?P<value>[A-Z0-9]{4,8}(?:-[A-Z0-9]{3,5})?)",
            one!(check_letter_code),
        ),
        rule(k, &spelled_pair(), one!(check_spelled_code)).apart(),
    ]
}

/// What may stand between digits read aloud (`four, one, nine`, `ご、よん`, `sieben-null`).
const SPELLED_SEPARATORS: &str = r"[\s,、，\-–—]";

/// [`SPELLED_SEPARATORS`], for code.
fn spelled_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '、' | '，' | '-' | '–' | '—')
}

/// A character of a word: letters, apostrophes (`дев'ять`) and Devanagari's marks (`शून्य`).
fn word_char(c: char) -> bool {
    c.is_alphabetic() || matches!(c, '\'' | '’' | 'ʼ' | '\u{0900}'..='\u{097F}')
}

/// Two digit names in a row, where a run of them may start; [`check_spelled_code`] reads the
/// rest of the run in code (a pattern for the whole run, four to eight names of every
/// language, made the detector a hundred times slower).
fn spelled_pair() -> String {
    let name = digit_name_alternation();
    format!("(?i)(?:{name}){SPELLED_SEPARATORS}*(?:{name})")
}

/// Every digit name, longest first, escaped for a pattern.
fn digit_name_alternation() -> String {
    let mut names: Vec<&str> = DIGIT_NAMES
        .iter()
        .flat_map(|(_, names)| names.iter().map(|(name, _)| *name))
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names.dedup();
    names
        .iter()
        .map(|n| regex::escape(n))
        .collect::<Vec<_>>()
        .join("|")
}

/// The words of `s` (a character of a script written without spaces is a word of its own) and
/// where each ends.
fn spelled_words(s: &str) -> Vec<(&str, usize)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if no_space_script(c) || !word_char(c) {
            if let Some(st) = start.take() {
                words.push((&s[st..i], i));
            }
            if no_space_script(c) {
                words.push((&s[i..i + c.len_utf8()], i + c.len_utf8()));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        words.push((&s[st..], s.len()));
    }
    words
}

/// The run of digit names that starts at `from`, only separators between them: its range and
/// how many names it has (counting stops at `max`).
fn spelled_run(text: &str, from: usize, max: usize) -> (Range<usize>, usize) {
    let (mut names, mut end) = (0, from);
    let mut word: Option<usize> = None;
    for (i, c) in text[from..].char_indices() {
        let at = from + i;
        if word_char(c) && !no_space_script(c) {
            word.get_or_insert(at);
            continue;
        }
        if let Some(w) = word.take() {
            if !names_digit(&text[w..at]) {
                return (from..end, names);
            }
            (names, end) = (names + 1, at);
        }
        if names >= max {
            return (from..end, names);
        }
        if no_space_script(c) {
            if !names_digit(&text[at..at + c.len_utf8()]) {
                return (from..end, names);
            }
            (names, end) = (names + 1, at + c.len_utf8());
        } else if !spelled_separator(c) {
            return (from..end, names);
        }
    }
    if let Some(w) = word
        && names_digit(&text[w..])
    {
        (names, end) = (names + 1, text.len());
    }
    (from..end, names)
}

fn names_digit(word: &str) -> bool {
    word.chars().count() <= LONGEST_DIGIT_NAME && digit_named(&word.to_lowercase()).is_some()
}

/// The code is also written in digits shortly before or after its spoken form (`nine three
/// four four oh two … 934402`): the digits are the code to mask, the words only its reading.
fn written_nearby(text: &str, r: &Range<usize>) -> bool {
    let mut from = r.start.saturating_sub(SPELLED_BACK);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut to = (r.end + SPELLED_BACK).min(text.len());
    while !text.is_char_boundary(to) {
        to -= 1;
    }
    [&text[from..r.start], &text[r.end..to]].iter().any(|part| {
        part.split(|c: char| !(c.is_ascii_digit() || c == ' '))
            .any(|run| run.bytes().filter(u8::is_ascii_digit).count() >= 4)
    })
}

/// How many characters around a run of digit names are looked at for a neighbouring name.
const SPELLED_NEAR: usize = 24;

/// A code read aloud and written down only as words (`the code is seven two zero nine one
/// four`, `«восемь три ноль один пять»`, `九四零二七三`): four to eight digit names and nothing
/// else. A longer run is a phone or an account number read aloud; five or more names are a
/// code by themselves, four (a year, a count) need a code word shortly before.
fn check_spelled_code(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let start = caps.get(0)?.start();
    let spaced_letter =
        |c: Option<char>| c.is_some_and(|c| c.is_alphabetic() && !no_space_script(c));
    if spaced_letter(before(text, start)) {
        return None;
    }
    // Up to nine names: a ninth makes the run too long to be a code.
    let (r, names) = spelled_run(text, start, 9);
    if !(4..=8).contains(&names) || spaced_letter(after(text, r.end)) {
        return None;
    }
    // The run starts here: no digit name just before it.
    let mut head_start = r.start.saturating_sub(SPELLED_NEAR);
    while !text.is_char_boundary(head_start) {
        head_start += 1;
    }
    let head = text[head_start..r.start].trim_end_matches(spelled_separator);
    if spelled_words(head)
        .last()
        .is_some_and(|(w, end)| *end == head.len() && names_digit(w))
    {
        return None;
    }
    let (_, sentence) = before_in_sentence(text, r.start, BEFORE);
    if CODE_NOT_WORDS.any(&sentence.to_lowercase()) || written_nearby(text, &r) {
        return None;
    }
    if names >= 5 {
        return Some(r);
    }
    let mut back = r.start.saturating_sub(REQUEST_BACK);
    while !text.is_char_boundary(back) {
        back += 1;
    }
    CODE_WORDS
        .any(&text[back..r.start].to_lowercase())
        .then_some(r)
}

/// How far before the colon a letter code's code word may stand (`Einmalpasswort für die
/// ELSTER-Anmeldung:`).
const LETTER_CODE_BEFORE: usize = 48;

/// How far before a letter code its code word may end when only words stand between them
/// (`Steam Guard code 63BDG`, `كود التحقق على الإيميل VB67XY`).
const LETTER_CODE_BARE: usize = 32;

/// A code of capitals and digits (5–8, or two dashed groups: `BV6E-OWQB`) after a code word and
/// a colon, a verb or a particle (`Einmalpasswort für die ELSTER-Anmeldung: ZX4TQ9`, `Your
/// Steam Guard code is 7VSKZ`, `確認コードはR5X2D0`), or a few words after one (`邮箱验证码
/// 75RLPJ`); not a promo, booking or other kind of code (`Promo code: SUMMER24`, `booking code:
/// XK4T9P`).
fn check_letter_code(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let v = caps.name("value")?;
    let code = v.as_str();
    let bare = caps.name("bare").is_some();
    let word_verb = !bare
        && caps
            .get(0)?
            .as_str()
            .starts_with(|c: char| c.is_ascii_alphabetic());
    let length = code.bytes().filter(u8::is_ascii_alphanumeric).count();
    if (word_verb && is_alnum(before(text, caps.get(0)?.start())))
        || !(5..=if code.contains('-') { 10 } else { 8 }).contains(&length)
        || is_alnum(after(text, v.end()))
        || matches!(after(text, v.end()), Some(':' | '-'))
        || !code.bytes().any(|b| b.is_ascii_digit())
        || !code.bytes().any(|b| b.is_ascii_uppercase())
    {
        return None;
    }
    let at = caps.get(0)?.start();
    let (_, before) = before_in_sentence(text, at, LETTER_CODE_BEFORE);
    let kw = CODE_WORDS.find(&before).last()?;
    // With nothing between, a code needs the look of one: two letters and two digits at
    // least, not a word and a number (`DIWALI50`, `MATH1020`, `APE 6201Z`).
    let letters = code.bytes().filter(u8::is_ascii_uppercase).count();
    let digits = code.bytes().filter(u8::is_ascii_digit).count();
    let word_number = code
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .bytes()
        .all(|b| b.is_ascii_uppercase());
    if bare
        && (before[kw.end..].chars().count() > LETTER_CODE_BARE
            || letters < 2
            || digits < 2
            || word_number)
    {
        return None;
    }
    (!modifier(&before[..kw.start]) && !CODE_NOT_WORDS.any(&before)).then(|| v.range())
}

/// Boundaries of a code: not part of a longer number, word, amount, time or decimal; a sender's
/// letter prefix (`G-556397`) is fine.
fn run_ok(text: &str, r: &Range<usize>) -> bool {
    let b = before(text, r.start);
    if (b == Some('-') && sender_prefix(text, r.start - 1))
        || (b == Some('#') && web_otp_origin(text, r.start - 1))
    {
        return !continues_after(text, r.end) && !is_alnum(after(text, r.end));
    }
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
        && !masked_card_part(text, r)
        && !(a == Some(':') && is_digit(after2(text, r.end)))
        && !(matches!(a, Some('.' | ','))
            && is_digit(after2(text, r.end))
            && !clause_comma(text, r.end))
}

/// The number is a visible end of a masked card (`5168****1140`): a mask joins it to more
/// digits. (A mask alone around it is markdown: `**482913**`.)
fn masked_card_part(text: &str, r: &Range<usize>) -> bool {
    let mask = |c: &char| matches!(c, '*' | '•');
    let mut after = text[r.end..].chars().skip_while(mask);
    let mut before = text[..r.start].chars().rev().skip_while(mask);
    (text[r.end..].starts_with(['*', '•']) && after.next().is_some_and(|c| c.is_ascii_digit()))
        || (text[..r.start].ends_with(['*', '•'])
            && before.next().is_some_and(|c| c.is_ascii_digit()))
}

/// The comma after a number ends a clause of text written without spaces (`验证码：7302，5分钟内
/// 有效`: the detectors see the fullwidth comma as `,`), so it is no decimal comma.
fn clause_comma(text: &str, comma: usize) -> bool {
    text[comma + 1..]
        .chars()
        .find(|c| !c.is_ascii_digit())
        .is_some_and(no_space_script)
}

/// The `@host #` before a code of an origin-bound SMS (`@apple.com #902374`, the WebOTP
/// format browsers read): `hash` is the `#`.
fn web_otp_origin(text: &str, hash: usize) -> bool {
    let line = text[..hash].rsplit('\n').next().unwrap_or_default();
    let Some(host) = line.trim_end().rsplit(' ').next() else {
        return false;
    };
    line.ends_with(' ')
        && host.len() > 3
        && host.starts_with('@')
        && host.contains('.')
        && host[1..]
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
}

/// One to three capital letters standing alone before the `-` at `dash` (`G-`, `FB-`): the
/// prefix some senders put on their codes.
fn sender_prefix(text: &str, dash: usize) -> bool {
    let letters = text[..dash]
        .chars()
        .rev()
        .take_while(char::is_ascii_uppercase)
        .count();
    (1..=3).contains(&letters) && !is_alnum(before(text, dash - letters))
}

/// How codes are grouped when they are: one run, single digits, or two or three groups of two
/// to four (`12 345`, `676-917`, `12 34 56`, `8812 0475`).
fn grouping_ok(s: &str) -> bool {
    let groups = digit_groups(s);
    groups.len() == 1
        || groups.iter().all(|g| g.len() == 1)
        || ((2..=3).contains(&groups.len()) && groups.iter().all(|g| (2..=4).contains(&g.len())))
}

/// How strongly a code of this many digits needs its context: five and six digits (Telegram's
/// own, and most services') stand next to a service name or after a question about a code;
/// four (`3381 is your Uber code`) and seven or eight (`одноразовий пароль: 88120475`) are as
/// often years, PINs of other things or counts, so they need a code word.
fn common_length(s: &str) -> bool {
    (5..=6).contains(&super::digit_count(s))
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
    if !run_ok(text, &r) || !grouping_ok(&text[r.clone()]) || sender_tag(text, &r) {
        return None;
    }
    // The digits of a Telegram login link: t.me/login/12345.
    if token_before(text, r.start).ends_with("login/") {
        return Some(r);
    }
    if before(text, r.start) == Some('#') {
        return Some(r);
    }
    if discount_after(text, r.end) || super::amount_after(text, r.end) {
        return None;
    }
    if dictated(&text[r.clone()]) || spelled_out_before(text, &r) {
        let (_, sentence) = before_in_sentence(text, r.start, BEFORE);
        return (!CODE_NOT_WORDS.any(&sentence)).then_some(r);
    }
    // `appid=4421`, a nested `  admin: 81234567` of YAML: the value of a key that is not a
    // code word.
    if let Some(key) = settings_key(text, r.start)
        && !is_exactly(&CODE_WORDS, &key.to_lowercase())
    {
        return None;
    }
    let (from, before) = before_in_sentence(text, r.start, BEFORE);
    let after = after_in_sentence(text, r.end, AFTER);
    // `12345 lines`: the word right after the number says what it counts (not a word in
    // brackets: `７７０２（LINE）` names the sender).
    let counted = after
        .trim_start()
        .starts_with(|c: char| c.is_alphabetic())
        .then(|| first_word(&after))
        .flatten();
    if counted.is_some_and(|w| is_exactly(&CODE_NOT_WORDS, &w)) {
        return None;
    }
    let common = common_length(&text[r.clone()]);
    let warned = common && warned_not_to_share(text, &r, &before);
    // The sender's name opening the message (`ICICI Bank: `) says nothing of the number.
    let lead = if sender_label(&before) { "" } else { &before };
    // A warning not to share it outweighs an account or bank named near the number (`رمز
    // التحقق لحساب إنستاباي: 465666 لا تشاركه`, `ICICI Bank: 632920 is the OTP …`), unless its
    // sentence names another kind of code (`promo code 12345 — don't share`).
    if warned && !CODE_NOT_WORDS.any(lead) {
        return Some(r);
    }
    // Four, seven and eight digits need the code word itself, not an inflection of it
    // (`tokens=1234` counts tokens); a phrase may inflect (`doğrulama kodunu`).
    let whole = |hay: &str, m: &Range<usize>| {
        common || !is_alnum(hay[m.end..].chars().next()) || hay[m.clone()].contains(' ')
    };
    if let Some(kw) = CODE_WORDS
        .find(&before)
        .filter(|m| whole(&before, m))
        .last()
    {
        let modifier = modifier(&before[..kw.start]);
        // An id word at most two words before the number names it (`код ПриватБанку,
        // публічний, МФО 305299`, `account ending 4411`), unless a verb links them (`code de
        // connexion à votre compte est 295 031`); a bare `ID` is the name of a login service
        // (`Ваш код Яндекс ID: 393407`, `Apple ID`).
        let between = &before[kw.end..];
        let named = ID_WORDS.find(between).any(|m| {
            let rest: Vec<&str> = between[m.end..]
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect();
            !between[m.clone()].eq_ignore_ascii_case("id")
                && rest.len() <= 2
                && !rest.iter().any(|w| COPULAS.contains(w))
        });
        // A code word of its own (`Anmeldecode`, `verification code`) is not vetoed by what
        // follows it (`… für das ELSTER-Portal: 951832`); a bare `code` may be another kind's
        // (`código del portal 4821`).
        let specific = {
            let w = &before[kw.clone()];
            w.chars().count() >= 8 || w.contains(' ')
        };
        let vetoed = !specific && CODE_NOT_WORDS.any(between);
        return (!modifier && !vetoed && !named).then_some(r);
    }
    // `Order 12345`, `Line 12345`: the word right before says what the number is.
    if last_word(lead).is_some_and(|w| is_exactly(&CODE_NOT_WORDS, &w)) {
        return None;
    }
    if let Some(kw) = CODE_WORDS.find(&after).find(|m| whole(&after, m)) {
        let gap = &after[..kw.start];
        let linked = !gap.contains(',') && gap.split_whitespace().count() <= 4;
        return (linked && !CODE_NOT_WORDS.any(gap)).then_some(r);
    }
    // The service's name ends at most this close before the number, or starts this close
    // after it (`Authenticator zeigt 593244`, `92706 von Telegram`).
    let service_before = CODE_SERVICES
        .find(&before)
        .any(|m| before[m.end..].chars().count() <= SERVICE_NEAR);
    let service_after = CODE_SERVICES
        .find(&after)
        .any(|m| after[..m.start].chars().count() <= SERVICE_NEAR + 4);
    if warned || (common && (service_before || service_after)) {
        return Some(r);
    }
    // An answer to a question about a code: `which code came? — «79 067»`.
    if let Some(q) = before_char(text, from).filter(|c| matches!(c, '?' | '？' | '؟'))
        && text[from..r.start].chars().count() <= ANSWER_NEAR
    {
        let (_, question) = before_in_sentence(text, from - q.len_utf8(), BEFORE);
        if CODE_WORDS.any(&question) && !CODE_NOT_WORDS.any(&question) {
            return Some(r);
        }
    }
    (reply_to_code_request(text, &r) || short_answer_after_code(text, &r, from)).then_some(r)
}

/// How far from a number (characters, either side, across sentences) the warning of a code
/// message may stand.
const WARNING_NEAR: usize = 100;

/// The message warns not to pass something on (`Inter: Use 772019 para autorizar o Pix. Não
/// compartilhe.`, `Payme kodi: 305119. … Никому не сообщайте код`): what one-time-code messages
/// say in every language, often in a sentence of their own, so it is looked for across
/// sentences but only near the number. `lead` is the number's sentence before it, lower-cased.
fn warned_not_to_share(text: &str, r: &Range<usize>, lead: &str) -> bool {
    let start = text[..r.start]
        .char_indices()
        .rev()
        .take(WARNING_NEAR)
        .last()
        .map_or(r.start, |(i, _)| i);
    let end = text[r.end..]
        .char_indices()
        .nth(WARNING_NEAR)
        .map_or(text.len(), |(i, _)| r.end + i);
    // `reply STOP to 89203`, `envía STOP al 12345`: the short number that takes the opt-out
    // keyword every SMS service uses, whatever its language.
    if lead
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| w == "stop")
    {
        return false;
    }
    SHARE_WARNINGS.any(&text[start..r.start].to_lowercase())
        || SHARE_WARNINGS.any(&text[r.end..end].to_lowercase())
}

/// The sentence before a number is only a sender's name and a colon (`ICICI Bank:`,
/// `A-Bank:`): a word of another kind of number in it (`bank`) names who sends the message, not
/// what the number is. (A label of such words alone, `Order:`, `Booking ref:`, still names it.)
fn sender_label(before: &str) -> bool {
    let Some(label) = before.trim_end().strip_suffix(':') else {
        return false;
    };
    let words: Vec<&str> = label
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    (1..=3).contains(&words.len())
        && !CODE_WORDS.any(label)
        && words.iter().any(|w| !is_exactly(&CODE_NOT_WORDS, w))
}

/// The key whose value the number is: `key=` anywhere, `key: ` when it opens an indented line
/// (YAML).
fn settings_key(text: &str, start: usize) -> Option<String> {
    let head = &text[..start];
    if let Some(key) = head.strip_suffix('=') {
        return last_word(key);
    }
    let key = head.strip_suffix(": ")?;
    let line = key.rsplit('\n').next().unwrap_or_default();
    let name = line.trim_start();
    (line.starts_with([' ', '\t']) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| name.to_string())
}

/// Five to eight single digits with a space between each (`4 8 1 7 2`): a code read out or
/// copied digit by digit. (Four could as well be a PIN or a score; those need a code word.)
fn dictated(s: &str) -> bool {
    let groups = digit_groups(s);
    (5..=8).contains(&groups.len())
        && groups.iter().all(|g| g.len() == 1)
        && s.bytes().all(|b| b.is_ascii_digit() || b == b' ')
}

/// How far before a number its digits may have been spelled out.
const SPELLED_BACK: usize = 160;

/// The number's digits, spelled out as words shortly before it (`four one nine two seven →
/// 41927`, `cinco, ocho, cero, dos, siete → 58027`, `사, 일, 구, 공, 이 → 41902`): a code
/// read aloud, then written down.
fn spelled_out_before(text: &str, r: &Range<usize>) -> bool {
    let digits: Vec<u8> = text[r.clone()]
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let mut from = r.start.saturating_sub(SPELLED_BACK);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let head = &text[from..r.start];
    // Words as in [`spelled_words`] (`四一九` is three), walked without collecting them: runs of
    // consecutive digit names are compared with the number as they end. (This runs for every
    // 4–8-digit number, so words too long to be a digit name are not lower-cased or looked up.)
    let mut run: Vec<u8> = Vec::new();
    let mut matched = false;
    // One buffer for every word's lower case: this runs for each short word before each number.
    let mut lower = String::new();
    let mut end_word = |word: &str, run: &mut Vec<u8>| {
        let named = (word.chars().count() <= LONGEST_DIGIT_NAME)
            .then(|| {
                lower.clear();
                lower.extend(word.chars().flat_map(char::to_lowercase));
                digit_named(&lower)
            })
            .flatten();
        match named {
            Some(d) => run.push(d),
            None => {
                matched |= *run == digits;
                run.clear();
            }
        }
    };
    let mut start = None;
    for (i, c) in head.char_indices() {
        if no_space_script(c) || !word_char(c) {
            if let Some(s) = start.take() {
                end_word(&head[s..i], &mut run);
            }
            if no_space_script(c) {
                end_word(&head[i..i + c.len_utf8()], &mut run);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        end_word(&head[s..], &mut run);
    }
    matched || run == digits
}

/// The number stands in a sentence of its own with few words (`а, уже пришло? 5520 вот этот
/// да?`, `ah ok 88 21 07 gracias`) and the message spoke of a code shortly before.
fn short_answer_after_code(text: &str, r: &Range<usize>, from: usize) -> bool {
    let after = after_in_sentence(text, r.end, AFTER);
    let words = text[from..r.start]
        .split_whitespace()
        .chain(after.split_whitespace())
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count();
    if words > 3 || from == 0 {
        return false;
    }
    let mut back = from.saturating_sub(REQUEST_BACK);
    while !text.is_char_boundary(back) {
        back += 1;
    }
    let earlier = text[back..from].to_lowercase();
    CODE_WORDS.any(&earlier) && !CODE_NOT_WORDS.any(&earlier) && !ID_WORDS.any(&earlier)
}

/// A code's answer stands this close after the question mark (`код видишь? 👀 — ага, 2 7 0 9 1`).
const ANSWER_NEAR: usize = 16;
/// What else a reply line may say besides the code (`> ok its`, `— sí,`, `→`).
const REPLY_LINE_REST: usize = 12;
/// How far back the request a reply answers may be.
const REQUEST_BACK: usize = 240;

/// The number is the reply on its own line (`> 4 8 2 1 3`, `— 5593`, `ok its 48213`) to an
/// earlier line that asks for or announces a code (`скинь код плиз`, `OTP आया होगा`,
/// `인증번호 왔지?`).
fn reply_to_code_request(text: &str, r: &Range<usize>) -> bool {
    let line_start = text[..r.start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[r.end..].find('\n').map_or(text.len(), |i| r.end + i);
    if line_start == 0 {
        return false;
    }
    let rest = text[line_start..r.start].chars().count() + text[r.end..line_end].chars().count();
    let words = text[line_start..r.start]
        .split_whitespace()
        .chain(text[r.end..line_end].split_whitespace())
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count();
    // The code opens its line (`— 7720 тримай, але більше так не роби`): the rest of the
    // line may say anything that is not another kind of code.
    let lead = &text[line_start..r.start];
    let opens_line = lead.chars().count() <= REPLY_LINE_REST
        && lead
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count()
            <= 1
        && !CODE_NOT_WORDS.any(&text[r.end..line_end].to_lowercase());
    if !opens_line && (rest > REPLY_LINE_REST + 8 || words > 3) {
        return false;
    }
    let mut from = (line_start - 1).saturating_sub(REQUEST_BACK);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let request = text[from..line_start - 1].to_lowercase();
    CODE_WORDS.any(&request) && !CODE_NOT_WORDS.any(&request)
}

/// The number is a sender's tag (`【12306】验证码…`, or `[1234]` opening a line), not the code;
/// `인증번호 [482910]를` highlights the code itself.
fn sender_tag(text: &str, r: &Range<usize>) -> bool {
    match (before(text, r.start), after(text, r.end)) {
        (Some('【'), Some('】')) | (Some('〔'), Some('〕')) => true,
        (Some('['), Some(']')) => {
            let line = text[..r.start - 1].rsplit('\n').next().unwrap_or_default();
            line.trim().is_empty()
        }
        _ => false,
    }
}

/// The word right before a code word makes it another kind of code (`promo code 12345`,
/// `citofono: codice 1432`), unless a sender's name ends there (`La Banque Postale : code
/// 199066`).
fn modifier(head: &str) -> bool {
    let Some(w) = last_word(head) else {
        return false;
    };
    // `e-posta doğrulama kodu`: the second half of a one-letter compound is a word of its own.
    let trimmed = head.trim_end_matches([' ', '-', '\u{a0}', ':']);
    let compound = crate::policy::context::letter_compound(trimmed, trimmed.len() - w.len());
    is_exactly(&CODE_NOT_WORDS, &w) && !compound && !sender_label(head)
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
    let s = s.trim_end_matches([' ', '-', '\u{a0}', ':']);
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

/// How far from `my.telegram.org` its web-login code may stand (the service message names the
/// site, then greets, then gives the code on a line of its own; some languages give the code
/// first).
const WEB_CODE_WINDOW: usize = 400;

/// The 10–11 character code near `my.telegram.org`: letters and digits (also `_`, `-`) with a
/// digit or at least two capitals, and at least two of upper case, lower case and digits (so
/// `Information` is not one).
fn check_web_code(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let mut start = m.start().saturating_sub(WEB_CODE_WINDOW);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut stop = (m.end() + WEB_CODE_WINDOW).min(text.len());
    while !text.is_char_boundary(stop) {
        stop -= 1;
    }
    let window = &text[start..stop];
    for token in window.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        let at = start + offset_in(window, token);
        if !(10..=11).contains(&token.len()) || is_alnum(after(text, at + token.len())) {
            continue;
        }
        // `Login-Code`, `Anmelde-Code`: words, not a code.
        if token.contains('-')
            && token.split('-').all(|w| {
                !w.is_empty()
                    && w.bytes().all(|b| b.is_ascii_alphabetic())
                    && w.bytes().skip(1).all(|b| b.is_ascii_lowercase())
            })
        {
            continue;
        }
        let uppers = token.bytes().filter(u8::is_ascii_uppercase).count();
        let lower = token.bytes().any(|b| b.is_ascii_lowercase());
        let digit = token.bytes().any(|b| b.is_ascii_digit());
        let classes = [uppers > 0, lower, digit].iter().filter(|x| **x).count();
        if classes >= 2 && (digit || uppers >= 2) {
            return Some(at..at + token.len());
        }
    }
    None
}
