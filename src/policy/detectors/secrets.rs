//! API tokens and other secrets: the shapes secret scanners know (facts from gitleaks' rule
//! list; the code is ours), and a generic rule for a high-entropy value right after a key word
//! of any of the languages of [`crate::policy::context::SECRET_KEY`].

use std::ops::Range;

use regex::Captures;

use super::{Rule, Settings, after, before, entropy, is_digit, one, rule};
use crate::policy::config::DetectorKind;
use crate::policy::context::{SECRET_KEY, SECRET_NOT_WORDS, before_in_sentence};

/// API tokens and keys: Telegram bot tokens (also inside `api.telegram.org/bot…` URLs); the
/// prefixed shapes of OpenAI and Anthropic (`sk-…`, `sk-ant-…`), Stripe (`sk_live_…`,
/// `rk_test_…`, `whsec_…`), AWS (`AKIA…`, with the 40-character secret that follows it),
/// Alibaba Cloud (`LTAI…`), GitHub, GitLab, Slack (tokens and webhook URLs), Google (`AIza…`),
/// Hugging Face, DigitalOcean, Shopify, PyPI, npm, Yandex OAuth, Midtrans, SendGrid, Twilio,
/// Discord webhooks; JWTs; PEM private key blocks; `Bearer …`; a Telegram `api_hash` (32 hex);
/// the password in `scheme://user:password@host`; and the value after a key word (`secret`,
/// `token`, `key`, `hash`, `password`, `pwd`, `пароль`, `密码`, `senha`, `şifre`, `パスワード`…)
/// in `k=v`, `k: v`, `"k": "v"`, URL query and `.env` forms, when it looks like a secret:
/// a password of 8+ characters mixing character classes, or a key of 16+ characters mixing
/// letters and digits (or both cases) with at least 3 bits of entropy per character.
///
/// Deliberately not: placeholders (`YOUR_API_KEY`, `xxxx…`, `<token>`, `${VAR}`), plain words
/// (`password: sunflower`), short or low-entropy values, public values named by their key
/// (`commit hash:`, `public key:`, `ssh-ed25519 …`), words like `tokenizer`, Stripe publishable
/// keys (`pk_…`), the key name of an assignment (only its value is masked).
pub fn find_api_tokens(text: &str) -> Vec<Range<usize>> {
    super::find_kind(DetectorKind::ApiToken, text)
}

/// Prefixed token shapes that are secrets by themselves.
const SHAPES: &[&str] = &[
    r"sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin|sid)[0-9]{2}-)?[A-Za-z0-9_\-]{20,}",
    r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
    r"whsec_[A-Za-z0-9+/]{24,}",
    r"LTAI[A-Za-z0-9]{12,24}",
    r"gh[pousr]_[A-Za-z0-9]{36,}",
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"gl(?:pat|ptt|dt|rt|cbt|imt|oas|ft|soat|agent)-[A-Za-z0-9_\-]{20,}",
    r"xox[abposre]-[A-Za-z0-9\-]{10,}",
    r"xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"hf_[A-Za-z0-9]{30,}",
    r"do[opr]_v1_[a-f0-9]{64}",
    r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
    r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}",
    r"npm_[A-Za-z0-9]{36}",
    r"y0_[A-Za-z0-9_\-]{40,}",
    r"Mid-(?:server|client)-[A-Za-z0-9_\-]{20,}",
    r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}",
    r"SK[0-9a-f]{32}",
    r"sq0(?:atp|csp)-[0-9A-Za-z_\-]{22,43}",
    r"glc_[A-Za-z0-9+/]{32,}={0,2}",
    r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}",
    r"lin_api_[A-Za-z0-9]{40}",
    r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{20,}",
];

/// Key words naming digests, which name a secret only as the word itself.
const HASH_WORDS: &[&str] = &["hash", "хеш", "хэш"];

/// `&name=` inside a value: the start of the next URL or form parameter.
static NEXT_PARAM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"[&#][A-Za-z_][A-Za-z0-9_.\-]*=")
        .unwrap_or_else(|e| panic!("parameter pattern does not compile: {e}"))
});

/// Key words whose values are passwords (short is fine, but they must not be plain words).
const PASSWORD_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "пароль",
    "رمز عبور",
    "پسورد",
    "كلمة السر",
    "كلمة المرور",
    "الباسورد",
    "باسورد",
    "الرمز السري",
    "密码",
    "密碼",
    "口令",
    "contraseña",
    "senha",
    "passwort",
    "kennwort",
    "mot de passe",
    "mdp",
    "şifre",
    "şifresi",
    "parola",
    "पासवर्ड",
    "kata sandi",
    "sandi",
    "パスワード",
    "비밀번호",
    "비번",
    "암호",
];

pub(super) fn rules() -> Vec<Rule> {
    let k = DetectorKind::ApiToken;
    let mut words: Vec<&str> = SECRET_KEY
        .iter()
        .flat_map(|(_, ws)| ws.iter().copied())
        .collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    words.dedup();
    let words: Vec<String> = words.iter().map(|w| regex::escape(w)).collect();
    vec![
        rule(k, r"[0-9]{8,10}:[A-Za-z0-9_\-]{35}", one!(check_bot_token)),
        rule(
            k,
            &format!("(?:{})", SHAPES.join("|")),
            one!(check_prefixed_token),
        ),
        rule(
            k,
            r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}",
            check_aws,
        ),
        rule(
            k,
            r"https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]+/[A-Z0-9]+/[A-Za-z0-9]{16,}|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_\-]{40,})",
            one!(check_prefixed_token),
        ),
        rule(
            k,
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            one!(check_pem_block),
        ),
        rule(
            k,
            r"(?i)(?P<kw>api[_\-. ]?hash)\W{0,8}(?P<value>[0-9a-f]{32})",
            one!(check_api_hash),
        ),
        rule(
            k,
            r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]{1,64}:(?P<value>[^\s@/]{4,128})@[A-Za-z0-9.\-]+",
            one!(check_url_password),
        ),
        rule(
            k,
            r"(?i)(?P<kw>bearer)\s+(?P<value>[A-Za-z0-9_\-.~+/]{20,}=*)",
            |s, text, caps, out| out.extend(check_assigned(s, text, caps)),
        ),
        rule(
            k,
            &format!(
                r#"(?i)(?P<kw>{})[\p{{L}}\p{{M}}_\-]*[^\n:=：.!?。]{{0,24}}?["'\)\]]?[ \t]*(?:=>|:=|[:=])[ \t]*["'`*_«“(\[]*(?P<value>[^\s"'`<>]{{6,}})"#,
                words.join("|")
            ),
            |s, text, caps, out| out.extend(check_assigned(s, text, caps)),
        )
        .anchored(&format!(r"(?i)(?:{})", words.join("|"))),
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

/// Nothing token-like glued to either end of `r`, or markdown emphasis around it (`_…_`).
fn bounded(text: &str, r: &Range<usize>) -> bool {
    let (b, a) = (before(text, r.start), after(text, r.end));
    (!token_char(b) && !token_char(a)) || (b == Some('_') && a == Some('_'))
}

fn check_bot_token(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    // `bot123456:AA…` inside a Bot API URL is fine; a longer digit run is not a token.
    let emphasis = before(text, r.start) == Some('_') && after(text, r.end) == Some('_');
    if is_digit(before(text, r.start)) || (token_char(after(text, r.end)) && !emphasis) {
        return None;
    }
    Some(r)
}

fn check_prefixed_token(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    if !bounded(text, &r) {
        return None;
    }
    let s = m.as_str();
    let has_digit = s.bytes().any(|b| b.is_ascii_digit());
    let has_alpha = s.bytes().skip(4).any(|b| b.is_ascii_alphabetic());
    (has_digit && has_alpha).then_some(r)
}

/// An AWS access key id, and the 40-character secret access key when it follows within the
/// next two lines (`aws_secret_access_key = …`, `AKIA… / …`).
fn check_aws(_: &Settings, text: &str, caps: &Captures<'_>, out: &mut Vec<Range<usize>>) {
    let Some(id) = check_prefixed_token(text, caps) else {
        return;
    };
    let end = id.end;
    out.push(id);
    let rest = &text[end..];
    let mut stop = rest.len().min(200);
    while !rest.is_char_boundary(stop) {
        stop -= 1;
    }
    let stop = rest
        .match_indices('\n')
        .nth(2)
        .map_or(stop, |(i, _)| i.min(stop));
    let window = &rest[..stop];
    let secret = window
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '+'))
        .find(|t| t.len() == 40 && secret_value_ok(t));
    if let Some(t) = secret {
        let start = end + super::offset_in(window, t);
        out.push(start..start + t.len());
    }
}

fn check_api_hash(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?;
    let value = caps.name("value")?;
    if before(text, kw.start()).is_some_and(char::is_alphanumeric)
        || after(text, value.end()).is_some_and(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    Some(value.range())
}

fn check_url_password(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let v = caps.name("value")?;
    let s = v.as_str();
    let placeholder = is_placeholder(s) || s.chars().all(|c| c == '*' || c == 'x');
    (!placeholder && before(text, caps.get(0)?.start()).is_none_or(|c| !c.is_alphanumeric()))
        .then_some(v.range())
}

/// A value that stands for a secret instead of being one.
fn is_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    [
        "xxxx",
        "****",
        "your",
        "changeme",
        "placeholder",
        "redacted",
        "dummy",
        "<",
        "{",
        "${",
        "%s",
    ]
    .iter()
    .any(|p| l.contains(p))
        || v.starts_with('$')
        || v.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
}

/// A secret-looking key: long, high entropy, not a placeholder, and either letters with
/// digits or (20+ characters) both letter cases.
fn secret_value_ok(v: &str) -> bool {
    let has_digit = v.bytes().any(|b| b.is_ascii_digit());
    let has_upper = v.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = v.bytes().any(|b| b.is_ascii_lowercase());
    let mixed = (has_upper || has_lower) && has_digit || (has_upper && has_lower && v.len() >= 20);
    v.len() >= 16 && mixed && !is_placeholder(v) && entropy(v) >= 3.0
}

/// A password-looking value: 8–64 visible ASCII characters, at least two classes of lower,
/// upper, digit and symbol, and letters-only values only when their case keeps changing (a
/// capitalised word is not a password).
fn password_ok(v: &str) -> bool {
    let n = v.chars().count();
    if !(8..=64).contains(&n) || !v.bytes().all(|b| b.is_ascii_graphic()) || is_placeholder(v) {
        return false;
    }
    let lower = v.bytes().any(|b| b.is_ascii_lowercase());
    let upper = v.bytes().any(|b| b.is_ascii_uppercase());
    let digit = v.bytes().any(|b| b.is_ascii_digit());
    let symbol = v.bytes().any(|b| !b.is_ascii_alphanumeric());
    let classes = [lower, upper, digit, symbol].iter().filter(|x| **x).count();
    if classes < 2 {
        return false;
    }
    // Lower-case words joined by `-`, `_` or `.` are a phrase, not a password.
    if !digit
        && !upper
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b"-_.".contains(&b))
    {
        return false;
    }
    if !digit && !symbol {
        let switches = v
            .as_bytes()
            .windows(2)
            .filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase())
            .count();
        return switches >= 3;
    }
    entropy(v) >= 2.5
}

/// The value after a key word, when it looks like a secret of that kind of key.
fn check_assigned(_: &Settings, text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?;
    let kw_text = kw.as_str().to_lowercase();
    let spaced = kw_text.starts_with(char::is_alphabetic)
        && !kw_text
            .chars()
            .next()
            .is_some_and(crate::policy::context::no_space_script);
    // A boundary before the key word; camelCase counts (`accessKey`, `clientSecret`).
    let b = before(text, kw.start());
    let camel = b.is_some_and(|c| c.is_ascii_lowercase())
        && kw.as_str().starts_with(|c: char| c.is_ascii_uppercase());
    if spaced && b.is_some_and(char::is_alphanumeric) && !camel {
        return None;
    }
    // `hashes: …` lists digests; only the word itself names a secret.
    if HASH_WORDS.contains(&kw_text.as_str())
        && after(text, kw.end()).is_some_and(char::is_alphabetic)
    {
        return None;
    }
    let (_, lead) = before_in_sentence(text, kw.start(), 16);
    if SECRET_NOT_WORDS.any(&lead) {
        return None;
    }
    let m = caps.name("value")?;
    let mut r = m.range();
    // In a URL query (or a form body) the value ends at the next parameter.
    let query = matches!(b, Some('?' | '&'));
    if let Some(amp) = NEXT_PARAM.find(&text[r.clone()]).map(|m| m.start())
        && (query || amp > 0)
    {
        r.end = r.start + amp;
    } else if query && let Some(amp) = text[r.clone()].find(['&', '#']) {
        r.end = r.start + amp;
    }
    // Punctuation after the value is the sentence's, not the secret's.
    while let Some(c) = text[r.clone()].chars().next_back()
        && matches!(
            c,
            '.' | ','
                | ';'
                | ':'
                | '!'
                | '?'
                | ')'
                | ']'
                | '}'
                | '»'
                | '”'
                | '（'
                | '、'
                | '。'
                | '，'
        )
    {
        r.end -= c.len_utf8();
    }
    // A markdown link around the value: `[value](https://…)`.
    if let Some(i) = text[r.clone()].find("](") {
        r.end = r.start + i;
    }
    let v = &text[r.clone()];
    if v.contains("://") || (v.contains('@') && v.contains('.')) {
        return None;
    }
    let password = PASSWORD_WORDS.iter().any(|w| kw_text.starts_with(w));
    let ok = if password {
        password_ok(v) || secret_value_ok(v)
    } else {
        v.bytes().all(|b| b.is_ascii_graphic()) && secret_value_ok(v)
    };
    ok.then_some(r)
}
