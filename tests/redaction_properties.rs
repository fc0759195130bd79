//! Properties of redaction that must hold for text nobody here wrote (issue 14): a secret that
//! is detected stays detected when random text in any of the 15 languages surrounds it, when
//! its digits are written in another script, and when it is wrapped in quotes, brackets,
//! markdown or a markdown link. "Detected" is the honest rule: none of its letters or digits
//! survive redaction.

use proptest::prelude::*;
use tgingest::policy::{RedactionConfig, Redactor};

/// Messages with one secret each (`{}` marks where it goes), across the detectors.
const CASES: &[(&str, &str)] = &[
    ("mail me at {} tomorrow", "anna.k@example.org"),
    ("call me on {} after six", "+44 20 7946 0958"),
    ("мой номер {}, звони вечером", "8 (912) 345-67-89"),
    ("card {} exp soon", "4111 1111 1111 1111"),
    ("IBAN {} for the rent", "DE89 3704 0044 0532 0130 00"),
    ("Login code: {}. Do not give this code to anyone", "48213"),
    ("Код для входа в Telegram: {}", "52917"),
    ("کد ورود به تلگرام: {}", "88309"),
    (
        "bot token {} keep it safe",
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ",
    ),
    (
        "export GITHUB_TOKEN={}",
        "ghp_8MsaGvaBboKq5kLfrRc5viEXcGltVrc5EUqX",
    ),
    ("api_hash = {}", "38ce7b91a8b97eef39eb27afe6e6fbbe"),
    ("数据库密码：{}", "9&6Huz$%=WaJVssz"),
];

/// Ordinary chat in the 15 languages (and Korean), no secrets in it.
const FILLER: &[&str] = &[
    "ok see you at seven, bring the charger",
    "Привет! Как дела? Встречаемся у метро",
    "Доброго ранку! Сьогодні зустріч у Zoom",
    "سلام، فردا جلسه داریم، فراموش نکنید",
    "مرحبا، هل وصلت الشحنة إلى المكتب؟",
    "今天下午开会，别迟到",
    "¿Vienes a la cena del sábado?",
    "Bom dia! A reunião foi remarcada para sexta",
    "Kannst du morgen das Paket abholen?",
    "On se retrouve devant la gare ce soir ?",
    "Ci vediamo domani in ufficio",
    "Yarın toplantı var, unutma",
    "कल सुबह मीटिंग है, समय पर आना",
    "Besok pagi kita rapat di kantor ya",
    "明日の会議はよろしくお願いします",
    "내일 오후에 만나요!",
];

/// Where the filler meets the message.
const JOINS: &[&str] = &[" ", "\n", ". ", " — "];

/// Zero digits of scripts people type numbers in.
const ZEROS: &[char] = &['0', '۰', '٠', '०', '০', '０', '๐'];

/// Wrappers around the secret itself.
const WRAPS: &[(&str, &str)] = &[
    ("", ""),
    ("\"", "\""),
    ("'", "'"),
    ("«", "»"),
    ("“", "”"),
    ("(", ")"),
    ("[", "]"),
    ("`", "`"),
    ("**", "**"),
    ("_", "_"),
    ("```", "```"),
    ("[", "](https://example.com/page)"),
];

fn redactor() -> Redactor {
    Redactor::new(&RedactionConfig::default()).expect("default redaction")
}

/// `s` with its ASCII digits written with the digits whose zero is `zero`.
fn in_script(s: &str, zero: char) -> String {
    s.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(u32::from(zero) + d).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// The letters and digits of `secret` (at byte `at` of `text`) that redaction leaves visible.
fn leaked(redactor: &Redactor, text: &str, at: usize, secret: &str) -> String {
    let found = redactor.find(text);
    secret
        .char_indices()
        .filter(|(i, c)| c.is_alphanumeric() && !found.iter().any(|f| f.range.contains(&(at + i))))
        .map(|(_, c)| c)
        .collect()
}

fn compose(
    case: usize,
    wrap: usize,
    zero: char,
    before: &str,
    join: &str,
    after: &str,
) -> (String, usize, String) {
    let (template, secret) = CASES[case];
    let (open, close) = WRAPS[wrap];
    let secret = in_script(secret, zero);
    let template = in_script(template, zero);
    let (head, tail) = template.split_once("{}").unwrap_or((&template, ""));
    let prefix = format!("{before}{join}{head}{open}");
    let text = format!("{prefix}{secret}{close}{tail}{join}{after}");
    (text, prefix.len(), secret)
}

#[test]
fn every_case_is_detected_as_written() {
    let r = redactor();
    for (i, (template, secret)) in CASES.iter().enumerate() {
        let text = template.replace("{}", secret);
        let at = text.find(secret).unwrap_or(0);
        assert_eq!(leaked(&r, &text, at, secret), "", "case {i}: {text:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_detected_secret_survives_no_surrounding_text_script_or_wrapping(
        case in 0..CASES.len(),
        wrap in 0..WRAPS.len(),
        zero in prop::sample::select(ZEROS),
        before in prop::sample::select(FILLER),
        after in prop::sample::select(FILLER),
        join in prop::sample::select(JOINS),
    ) {
        let r = redactor();
        let (text, at, secret) = compose(case, wrap, zero, before, join, after);
        prop_assert_eq!(leaked(&r, &text, at, &secret), "", "{:?}", text);
    }
}
