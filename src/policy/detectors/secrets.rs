//! API tokens and other secrets: the shapes secret scanners know (facts from gitleaks' rule
//! list; the code is ours), and a generic rule for a high-entropy value right after a key word
//! of any of the languages of [`crate::policy::context::SECRET_KEY`].

use std::ops::Range;

use regex::Captures;

use super::{Rule, Settings, after, before, entropy, is_digit, one, rule};
use crate::policy::config::DetectorKind;
use crate::policy::context::{
    CODE_NOT_WORDS, ID_WORDS, LOGIN_WORDS, RECOVERY_WORDS, SECRET_KEY, SECRET_NOT_WORDS,
    after_in_sentence, before_in_sentence, no_space_script,
};

/// API tokens and keys: Telegram bot tokens (also inside `api.telegram.org/bot…` URLs); the
/// prefixed shapes of OpenAI and Anthropic (`sk-…`, `sk-ant-…`), Stripe (`sk_live_…`,
/// `rk_test_…`, `whsec_…`), AWS (`AKIA…`, with the 40-character secret that follows it),
/// Alibaba Cloud (`LTAI…`), GitHub, GitLab, Slack (tokens and webhook URLs), Google (`AIza…`),
/// Hugging Face, DigitalOcean, Shopify, PyPI, npm, Yandex OAuth, Midtrans, SendGrid, Twilio,
/// Discord (bot tokens and webhooks), Mailgun, Contentful, Buildkite, CircleCI, HubSpot,
/// Scaleway; webhook URLs of Bitrix24, Make, WeCom and Mattermost; JWTs; PEM private key
/// blocks; `Bearer …` and `Authorization: Basic …`; a Telegram `api_hash` (32 hex); a URL with a
/// password (`scheme://user:password@host/…`, masked whole); the password on a command line
/// (`mysql -p…`, `redis-cli -a …`, `curl -u user:…`); the halves of an `AK`/`SK` cloud key
/// pair; and the value after a key word (`secret`, `token`, `key`, `hash`, `password`, `pwd`,
/// `пароль`, `密码`, `senha`, `şifre`, `パスワード`…) in `k=v`, `k: v`, `"k": "v"`, URL query,
/// `.env` and XML-element forms, glued to a key word of a script without spaces (`令牌dbd0…`),
/// or after just a space (`API 키 4d27…`, `--token …`), when it looks like a secret:
/// a password of 8+ characters mixing character classes, or a key of 16+ characters mixing
/// letters and digits (or both cases) with at least 3 bits of entropy per character.
///
/// Deliberately not: placeholders (`YOUR_API_KEY`, `xxxx…`, `<token>`, `${VAR}`), plain words
/// (`password: sunflower`), short or low-entropy values, public values named by their key
/// (`commit hash:`, `public key:`, `ssh-ed25519 …`) or by a remark in brackets after them
/// (`(public, di frontend)`), words like `tokenizer`, Stripe publishable keys (`pk_…`), the key
/// name of an assignment (only its value is masked).
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
    r"Mid-server-[A-Za-z0-9_\-]{20,}",
    r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}",
    r"SK[0-9a-f]{32}",
    r"sq0(?:atp|csp)-[0-9A-Za-z_\-]{22,43}",
    r"glc_[A-Za-z0-9+/]{32,}={0,2}",
    r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}",
    r"lin_api_[A-Za-z0-9]{40}",
    // Discord bot tokens: the bot's id in base64, a timestamp, an HMAC.
    r"[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,40}",
    // Mailgun's private API key.
    r"key-[0-9a-f]{32}",
    // Tencent Cloud SecretId.
    r"AKID[A-Za-z0-9]{32}",
    // age secret keys.
    r"AGE-SECRET-KEY-1[0-9A-Z]{58}",
    // Yandex Cloud IAM tokens.
    r"t1\.9euel[A-Za-z0-9_\-.]{50,}",
    // Braintree access tokens.
    r"access_token\$production\$[a-z0-9]{16}\$[a-f0-9]{32}",
    // Airtable personal access tokens.
    r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}",
    r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{20,}",
    // Contentful, Buildkite, CircleCI, HubSpot private apps, Scaleway access keys.
    r"CFPAT-[A-Za-z0-9_\-]{43}",
    r"bkua_[a-f0-9]{40}",
    r"CCIPAT_[A-Za-z0-9]{22}_[a-f0-9]{40}",
    r"pat-(?:na|eu|ap)[0-9]-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    r"SCW[A-Z0-9]{17}",
    // DingTalk robots' signing secret.
    r"SEC[0-9a-f]{64}",
    // Mercado Pago access tokens.
    r"(?:APP_USR|TEST)-[0-9]{16}-[0-9]{6}-[0-9a-f]{32}-[0-9]{6,12}",
];

/// Webhook URLs whose path is the credential: whoever has one can post (or read) as the
/// integration. Masked whole.
const WEBHOOKS: &[&str] = &[
    r"[a-z0-9\-]+\.webhook\.office\.com/webhookb2/[^\s]{40,}",
    r"hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]+/[A-Z0-9]+/[A-Za-z0-9]{16,}",
    r"(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_\-]{40,}",
    // Bitrix24 inbound webhooks: /rest/<user>/<key>/.
    r"[a-z0-9\-]+\.bitrix24\.[a-z]{2,3}/rest/[0-9]+/[a-z0-9]{16}/?",
    // Make (Integromat) and WeCom (企业微信) group robots.
    r"hook\.[a-z]{2}[0-9]\.make\.com/[a-z0-9]{32}",
    r"qyapi\.weixin\.qq\.com/cgi-bin/webhook/send\?key=[0-9a-f\-]{36}",
    // Feishu / Lark custom bots.
    r"open\.(?:feishu\.cn|larksuite\.com)/open-apis/bot/v2/hook/[0-9a-f\-]{36}",
    // Mattermost (and Rocket.Chat-style) incoming hooks: /hooks/<26 lower-case characters>.
    r"[a-z0-9.\-]+/hooks/[a-z0-9]{26}",
];

/// Key words naming digests, which name a secret only as the word itself.
const HASH_WORDS: &[&str] = &["hash", "хеш", "хэш"];

/// `&name=` inside a value: the start of the next URL or form parameter.
static NEXT_PARAM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"[&#][A-Za-z_][A-Za-z0-9_.\-]*=")
        .unwrap_or_else(|e| panic!("parameter pattern does not compile: {e}"))
});

/// `; name=` inside a value: the start of the next setting.
static NEXT_KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r";[ \t]*[A-Za-z_][A-Za-z0-9_\-]*[ \t]*[:=]")
        .unwrap_or_else(|e| panic!("next-key pattern does not compile: {e}"))
});

/// A reference in code to where the secret is kept (`os.environ[`, `process.env.TOKEN`,
/// `config.get(`), not the secret: dotted names of letters only (dotted tokens like
/// `dp.pt.YEryV0B…` have digits).
fn code_reference(v: &str) -> bool {
    let head = v.trim_end_matches(['[', '(', ')', ']', ';']);
    head.contains('.')
        && head.split('.').all(|p| {
            (1..=24).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
        })
}

/// An IPFS content id (`Qm…` base58 of 46 characters, or a base32 `bafy…`): the public name
/// of a file.
fn content_id(v: &str) -> bool {
    let v = v.trim_end_matches(['.', ',']);
    let base58 = |b: u8| b.is_ascii_alphanumeric() && !b"0OIl".contains(&b);
    (v.len() == 46 && v.starts_with("Qm") && v.bytes().all(base58))
        || (v.len() >= 50
            && v.starts_with("bafy")
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
}

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
    "كلمة سر",
    "كلمة مرور",
    "الرقم السري",
    "رمز",
    "الباسورد",
    "باسورد",
    "الرمز السري",
    "密码",
    "密碼",
    "口令",
    "contraseña",
    "contrasena",
    "senha",
    "passwort",
    "kennwort",
    "mot de passe",
    "mdp",
    "şifre",
    "şifresi",
    "sifre",
    "sifresi",
    "parola",
    "पासवर्ड",
    "kata sandi",
    "sandi",
    "パスワード",
    "비밀번호",
    "비번",
    "암호",
    "패스워드",
    // Written in Latin letters, as people type them: `parol`, `mima` (密码), `ramz` (رمز),
    // `kalimat al sir` (كلمة السر), `bibeon` (비번).
    "pw",
    "parol",
    "mima",
    "ramz",
    "pasvord",
    "пасс",
    "пасворд",
    "пассворд",
    "parola d'ordine",
    "parola d’ordine",
    "palavra-passe",
    "kalimat al sir",
    "kalimat alsir",
    "kalimat sir",
    "kalimat al murur",
    "bibeon",
    "bimilbeonho",
];

/// Key words that name a secret outright: their values may be as short as a password's.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "секрет",
    "segredo",
    "secreto",
    "segreto",
    "geheimnis",
];

/// `words` as a pattern's alternation (`a|b|c`), escaped, longest first so that a word is not
/// cut short by another that starts it.
fn alternation<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    let mut words: Vec<&str> = words.into_iter().collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    words.dedup();
    words
        .iter()
        .map(|w| regex::escape(w))
        .collect::<Vec<_>>()
        .join("|")
}

/// The first character of `w` belongs to a script written without spaces (`令牌`, `密码`).
fn glued_script(w: &str) -> bool {
    w.chars()
        .next()
        .is_some_and(crate::policy::context::no_space_script)
}

/// The key words of every language.
fn key_words() -> String {
    alternation(SECRET_KEY.iter().flat_map(|(_, ws)| ws.iter().copied()))
}

/// Commands that take a password on their command line.
const COMMANDS: &str = "(?:mysql|mysqldump|mariadb|redis-cli|sshpass|openssl|curl|wget|psql|mongosh|mongo|smbclient|sqlcmd|lftp|7z|zip|unzip|rar|(?:docker|podman|nerdctl|buildah|skopeo|helm[ \\t]+registry)[ \\t]+login)";

/// The key words of scripts written without spaces (`令牌`, `トークン`, `토큰`).
fn glued_key_words() -> String {
    alternation(
        SECRET_KEY
            .iter()
            .flat_map(|(_, ws)| ws.iter().copied())
            .filter(|w| glued_script(w)),
    )
}

/// The password words of scripts written without spaces (`密码`, `パスワード`, `비번`).
fn glued_password_words() -> String {
    alternation(PASSWORD_WORDS.iter().copied().filter(|w| glued_script(w)))
}

/// The password given to a command on its command line: a password-looking value, not a path,
/// a URL, an option or a port.
fn check_command_password(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let v = caps.name("value")?;
    let s = v.as_str();
    let option_or_path = s.starts_with(['-', '/', '$', '~', '.']) || s.contains("://");
    // `-pTq7xK2vLr9`: glued to its flag, so only its end must be free.
    (!option_or_path && (password_ok(s) || secret_value_ok(s)) && !token_char(after(text, v.end())))
        .then_some(v.range())
}

/// One half of a cloud key pair after `AK`/`SK` (`百度地图ak：…`): a key-looking value.
fn check_key_pair_half(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let v = caps.name("value")?;
    let start = caps.get(0)?.start();
    (before(text, start)
        .is_none_or(|c| !c.is_alphanumeric() || crate::policy::context::no_space_script(c))
        && secret_value_ok(v.as_str())
        && bounded(text, &v.range()))
    .then_some(v.range())
}

/// A key word, a few more characters of its name, a sign (`=`, `:`, `=>`, `:=`) and the value.
fn assigned_pattern() -> String {
    format!(
        r#"(?i)(?P<kw>{})[\p{{L}}\p{{M}}_\-]*[^\n:=：.!?。]{{0,32}}?["'\)\]]?[ \t]*(?:=>|:=|[:=]|[はが是为는은])[ \t]*(?:\n[ \t]*)?["'`*_«“(\[「『]*(?P<value>[^\s"'`<>,、。「」『』]{{6,}})"#,
        key_words()
    )
}

/// [`assigned_pattern`] again, to look for the next key inside a match whose value was cut
/// short (`api_key=…&api_secret=…`).
static ASSIGNED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(&assigned_pattern())
        .unwrap_or_else(|e| panic!("assignment pattern does not compile: {e}"))
});

/// [`check_assigned`] on a match and on every further assignment inside what it took in: a
/// value cut short (`api_key=…&api_secret=…`), or a key word inside another word whose match
/// swallowed the real one (`Подключение к базе: …;Password=…`).
fn check_assigned_rescanning(
    s: &Settings,
    text: &str,
    caps: &Captures<'_>,
    out: &mut Vec<Range<usize>>,
) {
    let Some(whole) = caps.get(0) else {
        return;
    };
    let mut candidate = Some(caps);
    let mut owned;
    while let Some(c) = candidate.take() {
        let from = match check_assigned(s, text, c) {
            Some(r) => {
                let end = r.end;
                out.push(r);
                end
            }
            None => match c.name("kw") {
                Some(kw) => kw.end(),
                None => return,
            },
        };
        if from >= whole.end() {
            return;
        }
        owned = ASSIGNED.captures_at(text, from);
        candidate = owned
            .as_ref()
            .filter(|n| n.get(0).is_some_and(|m| m.start() < whole.end()));
    }
}

pub(super) fn rules() -> Vec<Rule> {
    let k = DetectorKind::ApiToken;
    let words = key_words();
    vec![
        rule(k, r"[0-9]{8,10}:[A-Za-z0-9_\-]{35}", one!(check_bot_token)),
        rule(
            k,
            r"[a-z][a-z0-9]{1,7}_(?:[a-z]{2,6}_)?[A-Za-z0-9][A-Za-z0-9_\-]{19,}",
            one!(check_vendor_prefixed),
        ),
        rule(
            k,
            r"rzp_(?:live|test)_[A-Za-z0-9]{14}",
            one!(check_razorpay_key_id),
        ),
        rule(
            k,
            &format!("(?:{})", SHAPES.join("|")),
            one!(check_prefixed_token),
        )
        .apart(),
        rule(
            k,
            r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}",
            check_aws,
        ),
        rule(
            k,
            &format!("https?://(?:{})", WEBHOOKS.join("|")),
            one!(check_webhook),
        ),
        rule(
            k,
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            one!(check_pem_block),
        ),
        rule(
            k,
            r"(?i)(?P<kw>api[_\-. ]?hash)[^\n]{0,48}?(?P<value>[0-9a-f]{32})",
            one!(check_api_hash),
        ),
        rule(
            k,
            r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]{0,64}:(?P<value>[^\s@/]{4,128})@[A-Za-z0-9.\-]+",
            one!(check_url_password),
        ),
        rule(
            k,
            r"[a-zA-Z][a-zA-Z0-9+.\-]*://(?P<value>[A-Za-z0-9_\-]{16,128})@[A-Za-z0-9.\-]+",
            one!(check_url_user_token),
        ),
        rule(
            k,
            r"(?i)authorization[\x22']?\s*[:=]\s*[\x22']?(?P<kw>basic)\s+(?P<value>[A-Za-z0-9+/]{8,}={0,2})",
            |_, text, caps, out| out.extend(check_basic_auth(text, caps)),
        ),
        rule(
            k,
            r"(?i)(?P<kw>bearer|ssws)\s+(?P<value>[A-Za-z0-9_\-.~+/]{20,}=*)",
            |s, text, caps, out| out.extend(check_assigned(s, text, caps)),
        ),
        // `<password>f87kDBGyfEqN</password>`, `<apiKey>…</apiKey>`: an XML element named by
        // its key word.
        rule(
            k,
            &format!(
                r"(?i)<[A-Za-z_:\-]*?(?P<kw>{})[A-Za-z_\-]*>[ \t]*(?P<value>[^<\s]{{6,}})[ \t]*</",
                words
            ),
            |s, text, caps, out| out.extend(check_assigned(s, text, caps)),
        )
        .anchored("</"),
        // The password of a command line (`mysql -u root -pTq7xK2vLr9`, `redis-cli -a …`,
        // `sshpass -p '…'`, `curl -u admin:…`, `openssl enc -k …`).
        rule(
            k,
            &format!(r#"{COMMANDS}(?-u:\b)[^\n|;&]*?[ \t](?:(?:-p|-a|-k|--password|--pass)(?:[ \t]+|=)|-p|-u[ \t]+[^\s:'"]{{1,32}}:|--user[= ][^\s:'"]{{1,32}}:)['"]?(?P<value>[^\s'"]{{6,64}})"#),
            one!(check_command_password),
        )
        .anchored(COMMANDS),
        // A cloud key pair named by the usual abbreviations (`AK=… SK=…`, `AK … / SK …`).
        rule(
            k,
            r"(?i:AK|SK|AccessKey|SecretKey)[ \t]*[=:：]?[ \t]*(?P<value>[A-Za-z0-9/+_\-]{16,64})",
            one!(check_key_pair_half),
        ),
        // A key word of a script written without spaces, the value glued to it
        // (`私人令牌dbd0d070…`, `アクセストークン8b0c6e7d-…`).
        rule(
            k,
            &format!(
                r"(?P<kw>{})[ \t]*[:：=]?[ \t]*(?P<value>[A-Za-z0-9_\-+/=.]{{16,}})",
                glued_key_words()
            ),
            |s, text, caps, out| out.extend(check_spaced(s, text, caps)),
        ),
        // A password word of such a script, a few of its letters (`パスワードの方ね、`,
        // `管理密码 `) and the password (`服务器root密码QCQO4H56imv`).
        rule(
            k,
            &format!(
                r"(?P<kw>{})[^\x00-\x7F\s]{{0,6}}?[ \t]*[:：=]?[ \t]*(?P<value>[A-Za-z0-9!#$%^&*~?@_\-+/=.]{{6,64}})",
                glued_password_words()
            ),
            |s, text, caps, out| out.extend(check_assigned(s, text, caps)),
        )
        .anchored(&glued_password_words()),
        rule(k, &assigned_pattern(), check_assigned_rescanning)
            .anchored(&format!(r"(?i)(?:{})", words))
            .apart(),
        rule(
            k,
            r"[A-Za-z0-9!#$%^&*~?.+_\-]*[!#$%^&*~?][A-Za-z0-9!#$%^&*~?.+_\-]*",
            one!(check_standalone_password),
        )
        .anchored("[!#$%^&*~?]"),
        rule(
            k,
            r#"(?P<user>[\p{L}\p{N}._@+\-]+)[ \t]*/[ \t]*(?P<value>[^\s"'`<>,、。「」『』/]{8,})"#,
            one!(check_credential_pair),
        )
        .anchored("/"),
        // The value right after its key word with no sign between, or up to four words on
        // (`API 키 4d27…`, `пароль до адмінки PnO#AWBt-cl2`, `segreto AWS 2aM8…`).
        rule(
            k,
            &format!(
                r#"(?i)(?P<kw>{})[\p{{L}}\p{{M}}_\-]*(?:[ \t]+[\p{{L}}\p{{M}}'’\-]+){{0,4}}[ \t]+(?P<value>[^\s"'`<>,、。「」『』]{{8,}})"#,
                words
            ),
            |s, text, caps, out| out.extend(check_spaced(s, text, caps)),
        )
        .anchored(&format!(r"(?i)(?:{})", words))
        .apart(),
        // A password word, more of its sentence, a verb and the password (`the password, which
        // I wrote on the fridge lol, is b26n77p8ug9h`).
        rule(
            k,
            &format!(
                r#"(?i)(?P<kw>{})(?P<rest>[\p{{L}}\p{{M}}]*)[^\n.!?。]{{0,64}}?[ \t,](?:is|es|é|è|est|ist|lautet|adalah|era|это)[ \t]+(?P<value>[^\s"'`<>,、。「」『』]{{6,}})"#,
                password_words()
            ),
            |s, text, caps, out| out.extend(check_password_after_verb(s, text, caps)),
        )
        .anchored(&format!(r"(?i)(?:{})", password_words()))
        .apart(),
        // A password or PIN of digits (`kart şifresi 6822`, `UPI PIN 659668`, `a senha do wifi
        // é 03420704`).
        rule(
            k,
            &format!(
                r"(?i)(?P<kw>{})(?P<rest>[\p{{L}}\p{{M}}\-]*)[^\n.!?。0-9]{{0,48}}?(?P<value>[0-9]{{4,8}})",
                numeric_password_words()
            ),
            one!(check_numeric_password),
        )
        .anchored(&format!(r"(?i)(?:{})", numeric_password_words()))
        .apart(),
        // An app password: four groups of four letters (`peka ilro nemf diqd`).
        rule(
            k,
            r"(?-u:\b)[a-z]{4}[ \-][a-z]{4}[ \-][a-z]{4}[ \-][a-z]{4}(?-u:\b)",
            one!(check_app_password),
        ),
        // Words in Latin letters after a password word of another script (`압축파일 비번
        // candle lemon battery`): a passphrase.
        rule(
            k,
            &format!(
                r"(?P<kw>{})[^\n]{{0,48}}?(?P<value>[a-z]{{3,10}}(?: [a-z]{{3,10}}){{2,5}})",
                foreign_password_words()
            ),
            one!(check_foreign_passphrase),
        )
        .anchored(&foreign_password_words())
        .apart(),
        // One line of a list of recovery codes (`u3wn3-ats93`, `mxezc7hi0n`).
        rule(k, &list_block(), check_recovery_codes),
    ]
}

/// Words for a PIN (a password of digits).
const PIN_WORDS: &[&str] = &[
    "pin",
    "пін",
    "пин",
    "पिन",
    "پین",
    "핀",
    "ピン",
    "暗証番号",
    "pin码",
    "pin碼",
];

/// Password words that also mean "code" in general (`رمز`, `ramz`): a number after them is a
/// login code's business, not a password's.
const CODE_TOO: &[&str] = &["رمز", "ramz"];

/// The words a password of digits or a PIN follows: the password words (not those that mean
/// any code) and the PIN words.
fn numeric_password_words() -> String {
    alternation(
        PASSWORD_WORDS
            .iter()
            .chain(PIN_WORDS)
            .copied()
            .filter(|w| !CODE_TOO.contains(w)),
    )
}

/// Every password word.
fn password_words() -> String {
    alternation(PASSWORD_WORDS.iter().copied())
}

/// The password words not written in Latin letters (`пароль`, `비번`, `پسورد`; not `şifre`).
fn foreign_password_words() -> String {
    alternation(
        PASSWORD_WORDS
            .iter()
            .copied()
            .filter(|w| w.chars().all(|c| c == ' ' || u32::from(c) > 0x024F)),
    )
}

/// A short password word (`pass`, `pw`, `mdp`) must stand alone: `passenger` is no key.
fn key_word_whole(caps: &Captures<'_>) -> bool {
    let kw = caps.name("kw").map_or("", |m| m.as_str());
    let rest = caps.name("rest").map_or("", |m| m.as_str());
    rest.is_empty() || kw.chars().count() >= 5
}

/// The password a verb gives further along the password word's sentence: as
/// [`check_spaced`] (a digit or a generated look).
fn check_password_after_verb(
    s: &Settings,
    text: &str,
    caps: &Captures<'_>,
) -> Option<Range<usize>> {
    if !key_word_whole(caps) {
        return None;
    }
    check_spaced(s, text, caps)
}

/// A password or PIN of 4–8 digits shortly after its word: not a year, an amount, a count, a
/// phone or a postal PIN code (`pin code 560001`), and not a number another word names
/// (`пароль к заказу 123456`).
fn check_numeric_password(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?;
    let v = caps.name("value")?;
    let r = v.range();
    let digits = v.as_str();
    let glued_kw = no_space_script(kw.as_str().chars().next()?);
    if !key_word_whole(caps)
        || (!glued_kw && before(text, kw.start()).is_some_and(char::is_alphanumeric))
        || before(text, r.start).is_some_and(|c| {
            c.is_alphanumeric() || matches!(c, '+' | '-' | '.' | ',' | '$' | '€' | '£' | '#' | '№')
        })
        || after(text, r.end).is_some_and(|c| {
            (c.is_alphanumeric() && !no_space_script(c)) || matches!(c, '%' | '$' | '€' | '-' | '/')
        })
        || (matches!(after(text, r.end), Some('.' | ',' | ':'))
            && is_digit(super::after2(text, r.end)))
        || super::amount_after(text, r.end)
    {
        return None;
    }
    let between = text[kw.end()..r.start].to_lowercase();
    let signed = between.trim_end().ends_with([':', '=', '：']);
    let year = digits.len() == 4 && (digits.starts_with("19") || digits.starts_with("20"));
    // India's postal PIN code (`pin code 560001`, `पिन कोड 110001`, `पिन 110092`).
    let kw_lower = kw.as_str().to_lowercase();
    let postal = PIN_WORDS.contains(&kw_lower.as_str())
        && digits.len() == 6
        && (kw_lower == "पिन"
            || ["code", "कोड"]
                .iter()
                .any(|c| between.trim_start_matches([' ', '-']).starts_with(c)));
    // What everyone knows is no secret: `12345678`, `0000`.
    let d = digits.as_bytes();
    let trivial = d.windows(2).all(|w| w[0] == w[1])
        || d.windows(2).all(|w| w[1] == w[0] + 1)
        || d.windows(2).all(|w| w[0] == w[1] + 1);
    // A word of another kind of code before the password word (`apartman kapı şifresi`).
    let (_, lead) = before_in_sentence(text, kw.start(), 24);
    let after_words = after_in_sentence(text, r.end, 16);
    let counted = after_words
        .trim_start()
        .split(|c: char| !c.is_alphabetic())
        .next()
        .is_some_and(is_unit);
    if (year && !signed)
        || postal
        || trivial
        || counted
        || CODE_NOT_WORDS.any(&lead)
        // (A PIN word among them is this number's own: `رمز PIN للبطاقة 4844`.)
        || CODE_NOT_WORDS
            .find(&between)
            .any(|m| !PIN_WORDS.contains(&&between[m]))
        || ID_WORDS.any(&between)
    {
        return None;
    }
    Some(r)
}

/// Words that make a number a count, a length or a time (`8 символов`, `30 days`).
fn is_unit(w: &str) -> bool {
    // Prefixes: `char` is also `characters`, `символ` also `символов`.
    const UNITS: &[&str] = &[
        "char",
        "digit",
        "day",
        "hour",
        "minute",
        "times",
        "attempt",
        "символ",
        "цифр",
        "дней",
        "раз",
        "попыт",
        "caracter",
        "dígito",
        "día",
        "caractère",
        "chiffre",
        "jour",
        "zeichen",
        "stelle",
        "tage",
        "karakter",
        "hane",
        "gün",
        "hari",
        "kali",
        "文字",
        "位",
        "자",
    ];
    let w = w.to_lowercase();
    UNITS.iter().any(|u| w.starts_with(u))
}

/// How far from its four groups an app password's password word may stand.
const APP_PASSWORD_NEAR: usize = 64;

/// An app password (`peka ilro nemf diqd`, `pdka-khxy-nxqx-ljgk`: what Google, Apple and
/// Microsoft hand out): four groups of four lower-case letters with one separator, and a
/// password word in its line or sentence (four ordinary words of four letters have none).
fn check_app_password(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    let seps: Vec<u8> = m
        .as_str()
        .bytes()
        .filter(|b| !b.is_ascii_lowercase())
        .collect();
    if seps.windows(2).any(|w| w[0] != w[1])
        || before(text, r.start).is_some_and(|c| c.is_alphanumeric() || c == '-')
        || after(text, r.end).is_some_and(|c| c.is_alphanumeric() || c == '-')
    {
        return None;
    }
    let (_, lead) = before_in_sentence(text, r.start, APP_PASSWORD_NEAR);
    let tail = after_in_sentence(text, r.end, APP_PASSWORD_NEAR);
    let named = |s: &str| {
        PASSWORD_WORDS
            .iter()
            .any(|w| w.chars().count() >= 4 && s.contains(w))
    };
    (named(&lead) || named(&tail)).then_some(r)
}

/// A passphrase of three to six words in Latin letters after a password word of another
/// script (`пароль від архіву з документами silver candle pixel river`): the words end the
/// line or give way to the other script again, so they are not an English sentence.
fn check_foreign_passphrase(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let v = caps.name("value")?;
    let r = v.range();
    let lead_ok = before(text, r.start).is_some_and(|c| !c.is_alphanumeric())
        && text[..r.start]
            .trim_end_matches([' ', '\t', ':', '：'])
            .chars()
            .next_back()
            .is_some_and(|c| !c.is_ascii());
    let end_ok = text[r.end..]
        .trim_start_matches([' ', '\t'])
        .chars()
        .next()
        .is_none_or(|c| c == '\n' || !c.is_ascii());
    (lead_ok && end_ok).then_some(r)
}

/// One line that may hold one code of a list: an optional list marker, one to three groups of
/// letters and digits.
const LIST_LINE: &str = r"[ \t]*(?:[-*•]|[0-9]{1,2}[.)])?[ \t]*([A-Za-z0-9]{3,10}(?:[- ][A-Za-z0-9]{3,10}){0,2})[ \t]*\r?";

/// How many codes of one shape make a list.
const LIST_MIN: usize = 4;
/// How many codes, all of letters and digits, make a list of codes without a heading.
const LIST_MIN_UNNAMED: usize = 6;

/// [`LIST_MIN`] lines or more in a row that may each hold a code: the candidate of
/// [`check_recovery_codes`], which reads the block once (a check per line that looked at its
/// neighbours was quadratic in a long list).
fn list_block() -> String {
    format!(r"(?m)^{LIST_LINE}(?:\n{LIST_LINE}){{{},}}$", LIST_MIN - 1)
}

/// [`LIST_LINE`] as a whole line, to take the code out of it.
static LIST_LINE_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(&format!("^{LIST_LINE}$"))
        .unwrap_or_else(|e| panic!("list line pattern does not compile: {e}"))
});

/// The shape of a code: `x` for each letter or digit, its separators kept (`xxxxx-xxxxx`).
fn code_shape(code: &str) -> String {
    code.chars()
        .map(|c| if c.is_ascii_alphanumeric() { 'x' } else { c })
        .collect()
}

/// Lists of recovery codes (`u3wn3-ats93`, `mxezc7hi0n`, `1234 5678`) in a block of short lines:
/// every run of at least four lines in a row whose codes have one shape, under a heading that
/// names recovery or backup codes (`резервні коди для входу`, `备用验证码`, `kode cadangan`), or
/// of six and more of letters and digits mixed (random, as no list of words or order numbers
/// is). The heading of the block's first run is the line above the block; of a later run, the
/// line before it.
fn check_recovery_codes(
    _: &Settings,
    text: &str,
    caps: &Captures<'_>,
    out: &mut Vec<Range<usize>>,
) {
    let Some(block) = caps.get(0) else {
        return;
    };
    let above = text[..block.start()]
        .strip_suffix('\n')
        .and_then(|t| t.rsplit('\n').next())
        .unwrap_or_default();
    // Each line of the block and the range of its code (the block's pattern is made of
    // `LIST_LINE`s, so every line has one).
    let mut lines: Vec<(&str, Range<usize>)> = Vec::new();
    let mut at = block.start();
    for line in block.as_str().split('\n') {
        if let Some(code) = LIST_LINE_RE.captures(line).and_then(|c| c.get(1)) {
            lines.push((line, at + code.start()..at + code.end()));
        }
        at += line.len() + 1;
    }
    let mut heading = above;
    let mut run_start = 0;
    for i in 1..=lines.len() {
        let shape_of = |j: usize| code_shape(&text[lines[j].1.clone()]);
        if i < lines.len() && shape_of(i) == shape_of(run_start) {
            continue;
        }
        let codes: Vec<&str> = lines[run_start..i]
            .iter()
            .map(|(_, r)| &text[r.clone()])
            .collect();
        if recovery_list(&codes, heading) {
            out.extend(lines[run_start..i].iter().map(|(_, r)| r.clone()));
        }
        heading = lines[i - 1].0;
        run_start = i;
    }
}

/// `codes`, all of one shape under `heading`, are a list of recovery codes (see
/// [`check_recovery_codes`]).
fn recovery_list(codes: &[&str], heading: &str) -> bool {
    if codes.len() < LIST_MIN {
        return false;
    }
    let digit = |c: &&&str| c.bytes().any(|b| b.is_ascii_digit());
    let letter = |c: &&&str| c.bytes().any(|b| b.is_ascii_alphabetic());
    let mixed = codes.iter().filter(|c| digit(c) && letter(c)).count();
    let words = codes.iter().filter(|c| !digit(c)).count();
    let heading = heading.to_lowercase();
    // Under a heading that names recovery codes, codes of digits count (`1234 5678`); a few
    // of letters alone may be among random ones (`lhgsj-runzu`), not most.
    let named = RECOVERY_WORDS.any(&heading) && !CODE_NOT_WORDS.any(&heading);
    let random = codes.len() >= LIST_MIN_UNNAMED
        && codes.iter().all(|c| letter(&c))
        && mixed * 4 >= codes.len() * 3;
    (named && words * 4 <= codes.len()) || random
}

/// A value after its key word and a space: as [`check_assigned`], but never after a digest
/// word (`hash 9f86d0…` names a digest) and never a `0x…` address or number.
fn check_spaced(s: &Settings, text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?.as_str().to_lowercase();
    let value = caps.name("value")?.as_str();
    // Without a sign, a value is taken for a secret when it has a digit, or (after a password
    // word) the look of a generated password: a password symbol among both letter cases
    // (`etyQMV#FwMKmAd`), or letters whose case keeps changing (`piLPnNtOrlLL`). A name may
    // follow the key word (`رمز WhatsApp`, `Passwort für den Kunden-Login ist …`).
    let password = PASSWORD_WORDS.iter().any(|w| kw.starts_with(w));
    let upper = value.bytes().any(|b| b.is_ascii_uppercase());
    let lower = value.bytes().any(|b| b.is_ascii_lowercase());
    let generated = password
        && ((upper
            && lower
            && (value.bytes().any(|b| PASSWORD_SYMBOLS.contains(&b))
                || (value.bytes().all(|b| b.is_ascii_alphabetic()) && case_switches(value) >= 4)))
            || word_passphrase(value.trim_end_matches(['.', ','])));
    // A digit and a capitalised word is a product's name (`1Password`, `7Zip`).
    let name = value.trim_start_matches(|c: char| c.is_ascii_digit());
    let product = name.len() < value.len()
        && name.len() > 1
        && name.as_bytes()[0].is_ascii_uppercase()
        && name.as_bytes()[1..].iter().all(u8::is_ascii_lowercase);
    if HASH_WORDS.contains(&kw.as_str())
        || product
        || value.starts_with("0x")
        || !(value.bytes().any(|b| b.is_ascii_digit()) || generated)
        || (phrase(value.trim_end_matches(['.', ',', '!', '?'])) && !generated)
    {
        return None;
    }
    check_assigned(s, text, caps)
}

/// How far before a `user / password` pair a login word may stand.
const LOGIN_NEAR: usize = 48;

/// The accounts every system ships with: `root / VQWLbdAOrrmCyk` is a credential pair without
/// a login word announcing it.
const ADMIN_ACCOUNTS: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "sa",
    "postgres",
    "ubuntu",
    "pi",
    "superuser",
    "sysadmin",
    "supervisor",
];

/// The password of a `user / password` pair that a login word announces (`admin login for the
/// WordPress is admin / Sunflower#8812x`, `Zugang zum Router-Admin: admin / R0uter_Hx72q`), or
/// whose user is a system's own administrator (`root / …`): a password (with a digit, unless
/// the user is such an account), not a path, a date or a fraction.
fn check_credential_pair(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let user = caps.name("user")?;
    let value = caps.name("value")?;
    let mut r = value.range();
    // The sentence's punctuation, not the password's (which may end in `!`).
    while text[r.clone()].ends_with(['.', ',', ';', ')']) {
        r.end -= 1;
    }
    let v = &text[r.clone()];
    let admin = ADMIN_ACCOUNTS.contains(&user.as_str().to_ascii_lowercase().as_str());
    // (Lengths are checked here: bounded repetitions of Unicode classes make big automata.)
    if !(2..=40).contains(&user.as_str().chars().count())
        || before(text, user.start()).is_some_and(|c| c.is_alphanumeric() || c == '/')
        || token_before_is_url(text, user.start())
        || !(admin || v.bytes().any(|b| b.is_ascii_digit()))
        || v.ends_with(':')
        || !password_ok(v)
        || phrase(v)
    {
        return None;
    }
    let (_, lead) = before_in_sentence(text, user.start(), LOGIN_NEAR);
    (admin || LOGIN_WORDS.any(&lead)).then_some(r)
}

/// Symbols that password generators and password rules use (not `@`, `/`, `:` or `=`, which
/// belong to addresses, paths and assignments).
const PASSWORD_SYMBOLS: &[u8] = b"!#$%^&*~?";

/// A password standing alone, with no key word near it (`admin / Tq9!xW3mLp7K`, `... a ot
/// paneli — Hx9!zQ3mWp8L`, `La contraseña del servidor es Vq82!mLxR7p`): a whole token of
/// every character class, a password symbol among them. That is the shape generators and
/// password rules produce, and one ordinary words, numbers, prices, URLs, identifiers and
/// encodings (base64 has no such symbol; a bcrypt digest `$2b$…` is a hash, not a secret) do
/// not have, in any language. (A password like `Tq9%4x…` would pass for percent-encoding and
/// stay: a lost finding, not a masked URL.)
fn check_standalone_password(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let mut r = caps.get(0)?.range();
    // The sentence's punctuation, not the password's (which may end in `!` or `?`).
    while text[r.clone()].ends_with(['.', ',']) {
        r.end -= 1;
    }
    let v = &text[r.clone()];
    let apart = |c: Option<char>| {
        c.is_none_or(|c| c.is_whitespace() || "\"'`«»“”„‘’()[]{}<>:|,;—–".contains(c))
    };
    let classes = v.bytes().any(|b| b.is_ascii_lowercase())
        && v.bytes().any(|b| b.is_ascii_uppercase())
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| PASSWORD_SYMBOLS.contains(&b));
    (classes
        && (apart(before(text, r.start)) || before(text, r.start) == Some('='))
        // Followed by `=`, it is the name of an assignment (`…&grant_type=`).
        && (apart(after(text, r.end)) || after(text, r.end) == Some('.'))
        && !v.starts_with("$2")
        && !percent_encoded(v)
        && password_ok(v))
    .then_some(r)
}

/// `Invoice%2027`: a URL's percent-encoding, not a password's `%`.
fn percent_encoded(v: &str) -> bool {
    v.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// The text right before `i` is part of a URL (`https://host/a / b`).
fn token_before_is_url(text: &str, i: usize) -> bool {
    let line = text[..i].rsplit('\n').next().unwrap_or_default();
    line.split_whitespace()
        .next_back()
        .is_some_and(|t| t.contains("://"))
}

/// From the PEM header over the base64 body to the end line (or as far as the body goes).
fn check_pem_block(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let header = caps.get(0)?.range();
    // The body: base64 and line breaks, also written as `\n` escapes (the `private_key` of a
    // JSON service-account file).
    let rest = &text.as_bytes()[header.end..];
    let mut body_len = 0;
    while body_len < rest.len() {
        let b = rest[body_len];
        if b.is_ascii_alphanumeric() || b"+/=\r\n\t ".contains(&b) {
            body_len += 1;
        } else if b == b'\\' && matches!(rest.get(body_len + 1), Some(b'n' | b'r')) {
            body_len += 2;
        } else {
            break;
        }
    }
    let mut end = header.end + body_len;
    let tail = &text[end..];
    if tail.starts_with("-----END ")
        && let Some(close) = tail["-----END ".len()..].find("-----")
    {
        end += "-----END ".len() + close + "-----".len();
        // The escaped line break a JSON string ends the block with (`…-----\n"`).
        if text[end..].starts_with("\\n") {
            end += 2;
        }
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

/// The `vendor_` convention of current token formats (`dckr_pat_…`, `glsa_…`, `figd_…`,
/// `r8_…`, `rzp_live_…`, `sntrys_…`): a short lower-case prefix, an underscore and a long
/// random body. Random means both letter cases and a digit (or 30+ characters of both cases)
/// at high entropy, which `snake_case_identifiers` and hex digests never are; Stripe-style
/// publishable keys (`pk_…`) are public.
fn check_vendor_prefixed(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    let r = m.range();
    if !bounded(text, &r) || m.as_str().starts_with("pk_") {
        return None;
    }
    let body = m.as_str().split_once('_').map_or("", |(_, b)| b);
    let upper = body.bytes().any(|b| b.is_ascii_uppercase());
    let lower = body.bytes().any(|b| b.is_ascii_lowercase());
    let digit = body.bytes().any(|b| b.is_ascii_digit());
    let random = upper && lower && (digit || body.len() >= 30) && entropy(body) >= 3.5;
    (random && !is_placeholder(body) && !said_public_after(text, r.end)).then_some(r)
}

/// A Razorpay key id (`rzp_live_` and 14 characters, too short for the `vendor_` rule): masked
/// with its secret, as the key's id is half the credential (unless a remark calls it public).
fn check_razorpay_key_id(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let r = caps.get(0)?.range();
    let body = &text[r.start + "rzp_live_".len()..r.end];
    let mixed = body.bytes().any(|b| b.is_ascii_uppercase())
        && body
            .bytes()
            .any(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let (_, lead) = before_in_sentence(text, r.start, PUBLIC_NEAR);
    let public_before = PUBLIC_WORDS.iter().any(|w| lead.contains(w));
    (bounded(text, &r) && mixed && !public_before && !said_public_after(text, r.end)).then_some(r)
}

/// How long a remark in brackets after a key may be.
const PUBLIC_NEAR: usize = 48;

/// Words that call a key public (`(public, di frontend)`, `(ok côté client)`, `(공개용)`).
const PUBLIC_WORDS: &[&str] = &[
    "public",
    "publiable",
    "publishable",
    "publik",
    "público",
    "publico",
    "pubblica",
    "öffentlich",
    "frontend",
    "front-end",
    "côté client",
    "client-side",
    "公开",
    "公開",
    "공개",
    "सार्वजनिक",
];

/// A remark in brackets right after a key calls it public (`rzp_live_… (ye public hai)`): a
/// publishable or client key. A remark that names another key (`(client key Mid-client-… itu
/// public)`, `(… live_ck_… 공개용)`) speaks of that one.
fn said_public_after(text: &str, end: usize) -> bool {
    let rest = text[end..].trim_start_matches([' ', '\t']);
    let Some(inner) = rest.strip_prefix('(').or_else(|| rest.strip_prefix('（')) else {
        return false;
    };
    let remark: String = inner
        .chars()
        .take_while(|c| !matches!(c, ')' | '）' | '\n'))
        .take(PUBLIC_NEAR)
        .collect::<String>()
        .to_lowercase();
    let other_key = remark.contains(['…', '_']) || remark.bytes().any(|b| b.is_ascii_digit());
    !other_key && PUBLIC_WORDS.iter().any(|w| remark.contains(w))
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
    (has_digit && has_alpha && !said_public_after(text, r.end)).then_some(r)
}

/// A webhook URL up to its secret part (the method a Bitrix24 URL goes on to name is not
/// part of it), not glued to a word before it.
fn check_webhook(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let m = caps.get(0)?;
    (!token_char(before(text, m.start()))).then_some(m.range())
}

/// An AWS access key id, and the 40-character secret access key when it follows within the
/// next two lines (`aws_secret_access_key = …`, `AKIA… / …`).
fn check_aws(_: &Settings, text: &str, caps: &Captures<'_>, out: &mut Vec<Range<usize>>) {
    // An id is base32 (`A–Z`, `2–7`): one in thirty has no digit, which the shared check asks
    // for; the name of its line (`aws_access_key_id = AKIA…`) vouches for such a one.
    let Some(id) = check_prefixed_token(text, caps).or_else(|| {
        let r = caps.get(0)?.range();
        let line = text[..r.start].rsplit('\n').next().unwrap_or_default();
        (bounded(text, &r) && line.to_ascii_lowercase().contains("aws")).then_some(r)
    }) else {
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

/// `Authorization: Basic <base64 of user:password>`: the credentials themselves, whatever
/// their entropy.
fn check_basic_auth(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let v = caps.name("value")?;
    (!token_char(after(text, v.end())) && !is_placeholder(v.as_str())).then(|| v.range())
}

/// A Telegram `api_hash`: 32 hex after its name, also further along its line (`api_id و
/// api_hash من: 31326365 و ac60aca7…`), never part of a longer hex run.
fn check_api_hash(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let kw = caps.name("kw")?;
    let value = caps.name("value")?;
    let glued = before(text, kw.start())
        .is_some_and(|c| c.is_alphanumeric() && !crate::policy::context::no_space_script(c));
    let hex = |c: Option<char>| c.is_some_and(|c| c.is_ascii_hexdigit());
    if glued || hex(after(text, value.end())) || hex(before(text, value.start())) {
        return None;
    }
    Some(value.range())
}

/// A URL with a password in it (`postgres://app:Lr8sX2vQm4Zt@db:5432/app`): masked whole, since
/// the user, host and database it opens belong with the password.
fn check_url_password(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let whole = caps.get(0)?;
    let s = caps.name("value")?.as_str();
    let placeholder = is_placeholder(s) || s.chars().all(|c| c == '*' || c == 'x');
    if placeholder || before(text, whole.start()).is_some_and(|c| c.is_alphanumeric()) {
        return None;
    }
    let rest = &text[whole.end()..];
    let mut end = whole.end()
        + rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(rest.len());
    while let Some(c) = text[..end].chars().next_back()
        && matches!(
            c,
            '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '}' | '»' | '”'
        )
    {
        end -= c.len_utf8();
    }
    Some(whole.start()..end)
}

/// A key standing as a URL's user name (`https://ghp_…@github.com/…`,
/// `https://<token>@registry.example/…`): whoever has the URL can use the key. The key alone is
/// masked: a user name is never that long and random. Not a Sentry DSN's key
/// (`https://030c8ce0…@o4507.ingest.sentry.io/…`): Sentry documents it as safe to ship in
/// clients, since it only lets one submit events.
fn check_url_user_token(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let whole = caps.get(0)?;
    let v = caps.name("value")?;
    let host = &text[v.end()..whole.end()];
    (!before(text, whole.start()).is_some_and(char::is_alphanumeric)
        && !host.contains("sentry.io")
        && secret_value_ok(v.as_str()))
    .then(|| v.range())
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
    ]
    .iter()
    .any(|p| l.contains(p))
        || v.contains("%s")
        || shell_variable(v)
        || constant_name(v)
}

/// `API_KEY_HERE`, `TOKEN`, `SHA256`: the name of a constant. Capitals with three or more
/// digits and no `_` (`GAWM17FSROLJVIVM2L804VSQAEOB7M2P`, a cloud access key) are a key.
fn constant_name(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
        && (v.contains('_') || v.bytes().filter(u8::is_ascii_digit).count() < 3)
}

/// `$NAME`, `$name`, `${…}`: a reference to a variable. A `$` leading a value of mixed case
/// (`$VWQhzwPciRGai_P`) is a password's first character.
fn shell_variable(v: &str) -> bool {
    let Some(name) = v.strip_prefix('$') else {
        return false;
    };
    let one_case = !(name.bytes().any(|b| b.is_ascii_uppercase())
        && name.bytes().any(|b| b.is_ascii_lowercase()));
    name.starts_with('{')
        || (one_case && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
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

/// Lower-case words joined by `-`, `_` or `.`, a year perhaps ending them
/// (`patience-and-practice-2024`): a phrase, not a password. Two or three words and a short
/// number (`purple-cloud-69`, `piano-horse-20`) are the passphrases generators and people make
/// (a key word before them decides).
fn phrase(v: &str) -> bool {
    let parts: Vec<&str> = v.split(['-', '_', '.']).collect();
    let Some((last, words)) = parts.split_last() else {
        return false;
    };
    let words_only = |ps: &[&str]| {
        ps.iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
    };
    if parts.len() < 2 {
        return false;
    }
    if words_only(&parts) {
        return true;
    }
    let number = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    // A word or up to three and a number that is no year (`tianya_902`, `purple-cloud-69`).
    let passphrase = (1..=3).contains(&words.len()) && matches!(last.len(), 1..=3 | 5..=6);
    number && words_only(words) && !passphrase
}

/// Three to six lower-case words joined by one `-` or `.` (`battery.mango.anchor.pixel`,
/// `staple-pixel-walnut`): the passphrases password managers generate. Not a host name (a last
/// word of three letters or fewer: `mail.google.com`).
fn word_passphrase(v: &str) -> bool {
    let Some(sep) = v.chars().find(|c| matches!(c, '-' | '.')) else {
        return false;
    };
    let words: Vec<&str> = v.split(sep).collect();
    (3..=6).contains(&words.len())
        && words
            .iter()
            .all(|w| (3..=10).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()))
        && words.last().is_some_and(|w| w.len() > 3)
}

/// A password-looking value: 8–64 visible ASCII characters, at least two classes of lower,
/// upper, digit and symbol, and letters-only values only when their case keeps changing (a
/// capitalised word is not a password).
fn password_ok(v: &str) -> bool {
    let n = v.chars().count();
    // Latin letters with accents count (`cañas2024Bar!`); other scripts are the sentence going
    // on (`パスワードは8文字以上で…`).
    let visible = v
        .chars()
        .all(|c| c.is_ascii_graphic() || (c.is_alphabetic() && u32::from(c) < 0x0250));
    if !(8..=64).contains(&n) || !visible || is_placeholder(v) {
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
    if phrase(v) && !word_passphrase(v) {
        return false;
    }
    if !digit && !symbol {
        return case_switches(v) >= 3;
    }
    // A name and a year (`Lena1999`, `Mimi1983`), the password people pick most, repeats
    // characters; one without letters of both cases must vary more (a date: `2023-10-05`).
    entropy(v) >= if lower && upper && digit { 2.25 } else { 2.5 }
}

/// How often the letter case changes along `v` (`piLPnNtOrlLL`: 7; `WhatsApp`: 3).
fn case_switches(v: &str) -> usize {
    v.as_bytes()
        .windows(2)
        .filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase())
        .count()
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
    // A boundary before the key word; camelCase counts (`accessKey`, `clientSecret`). `пасс`
    // (slang for a password) only as a word of its own: `пассажир` is a passenger.
    let b = before(text, kw.start());
    if kw_text == "пасс" && after(text, kw.end()).is_some_and(char::is_alphabetic) {
        return None;
    }
    let camel = b.is_some_and(|c| c.is_ascii_lowercase())
        && kw.as_str().starts_with(|c: char| c.is_ascii_uppercase());
    // An environment variable's name glues a password word to its program's (`PGPASSWORD`,
    // `MYSQL_PWD` has its `_`).
    let shouting = b.is_some_and(|c| c.is_ascii_uppercase())
        && kw.as_str().bytes().all(|c| c.is_ascii_uppercase())
        && kw_text.len() >= 6
        && PASSWORD_WORDS.contains(&kw_text.as_str());
    if spaced && b.is_some_and(char::is_alphanumeric) && !camel && !shouting {
        return None;
    }
    // `hashes: …` lists digests; only the word itself names a secret, and a value of a
    // digest's length in hex (SHA-1, SHA-256, SHA-512) is the digest of something.
    if HASH_WORDS.contains(&kw_text.as_str()) {
        let v = caps.name("value")?.as_str();
        let digest = [40, 64, 128].contains(&v.trim_end_matches(['.', ',']).len())
            && v.trim_end_matches(['.', ','])
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if after(text, kw.end()).is_some_and(char::is_alphabetic) || digest || content_id(v) {
            return None;
        }
    }
    let m = caps.name("value")?;
    // The words before the key word and the rest of the key's name (`public key:`, `site key
    // (herkese açık):`, `MERCADO_PAGO_PUBLIC_KEY=`).
    let (_, lead) = before_in_sentence(text, kw.start(), 16);
    let name = text[kw.end()..m.start()].to_lowercase();
    let identifier = lead
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default();
    if SECRET_NOT_WORDS.any(&format!("{lead}{kw_text}"))
        || SECRET_NOT_WORDS.any(&name)
        || identifier.contains("public")
        || identifier.contains("publishable")
    {
        return None;
    }
    let mut r = m.range();
    // In a list of settings the value ends where the next key starts (`…; secret=…`). (A
    // comma, fullwidth ones included — the detectors see them folded to `,` — always ends it.)
    if let Some(next) = NEXT_KEY.find(&text[r.clone()]) {
        r.end = r.start + next.start();
    }
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
    // A key's fingerprint (`SHA256:Hei9fCmK…`) is public.
    let fingerprint = ["SHA256:", "SHA1:", "MD5:"]
        .iter()
        .any(|p| v.starts_with(p));
    // A password's stored hash (`$2b$12$…` bcrypt, `$argon2id$…`, crypt's `$6$…`) is no password.
    let hashed = ["$2a$", "$2b$", "$2y$", "$argon2", "$6$", "$5$", "$1$"]
        .iter()
        .any(|p| v.starts_with(p));
    // What stands between the key word and its sign is the rest of its name, not an address
    // or a variable (`postgres://user:${DB_PASSWORD}@localhost:5432/app`).
    let through_address = text[kw.end()..m.start()].contains(['@', '}']);
    // `--from-literal=username=app`: the value of another assignment; `//host/path`: the rest
    // of a URL whose `https:` the pattern took for a sign.
    let assignment = v.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    });
    if fingerprint
        || hashed
        || through_address
        || assignment
        || v.starts_with("//")
        || v.contains("://")
        || (v.contains('@') && v.contains('.'))
        || (code_reference(v) && !word_passphrase(v))
    {
        return None;
    }
    // An `appid` is a public id (`wx…`, digits) unless it has a key's length: some APIs call
    // their key that (`appid=ccbab479…`, 32 hex).
    if kw_text == "appid" && v.len() < 32 {
        return None;
    }
    // A password, or a secret named as one (`Client Secret: eJcyJ908kJ`): shorter values count.
    let password = PASSWORD_WORDS.iter().any(|w| kw_text.starts_with(w))
        || SECRET_WORDS.iter().any(|w| kw_text.contains(w));
    let ok = if password {
        password_ok(v) || secret_value_ok(v)
    } else {
        v.bytes().all(|b| b.is_ascii_graphic()) && secret_value_ok(v)
    };
    (ok && !said_public_after(text, r.end)).then_some(r)
}
