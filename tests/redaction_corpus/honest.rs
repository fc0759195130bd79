//! The independently written corpora, scored by the honest rule (issue 14).
//!
//! Each line is `{"id", "lang", "text", "expect": {"<kind>": ["<exact substring>", …]}, "near"}`.
//! An expected span counts as caught only when none of its letters or digits survive redaction,
//! whichever detector masked them (nothing leaked). A finding is a false positive of its kind
//! when it masks no letter or digit of any expected span. Recall is per expected kind,
//! precision per finding kind.
//!
//! Each file was written by a session that never read the detectors, then scored once before
//! anyone looked at its misses; that first score is the honest figure, and
//! `tests/fixtures/redaction/README.md` records it. A file whose misses have been seen (and
//! tuned on) is only a regression guard: every detector is held to [`SEEN_BAR`], or to the
//! floor listed for it where it does not reach that. Only the newest file is a fair measure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use tgingest::policy::{DetectorKind, RedactionConfig, Redactor};

/// The target on text nobody tuned on, for every detector's recall and precision.
const TARGET: f64 = 0.98;

/// What every detector keeps on a corpus it has been tuned on, unless a floor says otherwise.
const SEEN_BAR: f64 = 0.98;

/// One corpus file and the floors (kind, recall, precision) of the detectors that stay under
/// [`SEEN_BAR`] on it.
struct Corpus {
    file: &'static str,
    floors: &'static [(&'static str, f64, f64)],
}

/// The first corpus's tuning half.
const TUNING: Corpus = Corpus {
    file: "tuning.jsonl",
    floors: &[],
};

/// The first corpus's frozen half: first scored 2026-12-07, then seen.
const FROZEN: Corpus = Corpus {
    file: "frozen.jsonl",
    floors: &[],
};

/// The second corpus (1,375 cases): first scored, then tuned on.
const SECOND: Corpus = Corpus {
    file: "second.jsonl",
    floors: &[],
};

/// The third corpus (1,519 cases): first scored, then tuned on. Its remaining misses are
/// parcel pickup codes (which the first corpus counts as not login codes) and codes given with
/// no code word in their sentence.
const THIRD: Corpus = Corpus {
    file: "third.jsonl",
    floors: &[("login_code", 0.965, 1.0)],
};

/// The fourth corpus (1,437 cases): first scored, then tuned on. What it still misses: codes
/// split over lines or given with no word at all (`ага, 7 0 3 5`), codes read aloud in kana,
/// passwords many words after their key word, keys in another sentence than their key word.
const FOURTH: Corpus = Corpus {
    file: "fourth.jsonl",
    floors: &[("login_code", 0.965, 1.0)],
};

/// The fifth corpus (1,299 cases): first scored, then tuned on. What it still misses:
/// passwords given many words after their key word or with no key word (`Sunflower#8812x`
/// beside `admin /` without a login word), keys in another sentence, codes with no word at all,
/// phones written with `00` for `+`; and where its labels differ from the earlier corpora's
/// (a Razorpay `key_id` is public here, a secret in the second corpus).
const FIFTH: Corpus = Corpus {
    file: "fifth.jsonl",
    floors: &[("login_code", 0.970, 0.99), ("phone", 0.98, 0.985)],
};

/// The sixth corpus (1,403 cases, weighted to codes, credentials and phones): first scored,
/// then tuned on. What it still misses: keys named many words before their colon or glued to
/// their name by `_` (`Client_Secret_2662…`), UUIDs it calls secret (`api_id`, `merchant_id`),
/// a 4-digit PIN of a till, codes with no code word or spelled in kana; and where its labels
/// differ (the whole `Server=…;Password=…;` string, not just the password).
const SIXTH: Corpus = Corpus {
    file: "sixth.jsonl",
    floors: &[("api_token", 0.96, 0.99), ("login_code", 0.965, 1.0)],
};

/// The seventh corpus (1,770 cases), first scored whole on 2026-12-07, then split by a hash of
/// each case's id: the tuning half was tuned on, the frozen half scored only at the end. What
/// the tuning half still misses: codes whose code word is in another sentence, passwords given
/// a clause after their key word or after a login (`admin / Tq9!…`), short secrets (10–12
/// characters) after their key word, secrets separated from `client_secret` by a space; and
/// where its labels differ (a Razorpay `key_id` is public here, a pickup code a login code).
const SEVENTH_TUNING: Corpus = Corpus {
    file: "seventh-tuning.jsonl",
    floors: &[("api_token", 0.96, 0.965), ("login_code", 0.975, 0.93)],
};

/// The seventh corpus's frozen half (see [`SEVENTH_TUNING`]): tuning on the other half case by
/// case moved it from api_token recall 0.851 to 0.856 and phone precision 0.960 to 0.966,
/// nothing else; a shape rule (a password standing alone, every character class with a
/// password symbol) then moved api_token recall to 0.952, and a code near a warning not to
/// share it (`Não compartilhe.`) login_code recall to 0.945, with no new false positive here or
/// in any other corpus; the kinds of miss of the eighth and ninth corpora then moved api_token
/// to 0.963 / 0.974 and login_code to 0.957 / 0.945.
const SEVENTH_FROZEN: Corpus = Corpus {
    file: "seventh-frozen.jsonl",
    floors: &[
        ("api_token", 0.96, 0.97),
        ("email", 1.0, 0.975),
        ("login_code", 0.95, 0.94),
        ("payment_card", 0.96, 1.0),
        ("phone", 0.98, 0.965),
    ],
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    lang: String,
    text: String,
    expect: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    near: Option<String>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/redaction")
        .join(name)
}

fn load(name: &str) -> Option<Vec<Case>> {
    let path = fixture(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let cases = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect();
    Some(cases)
}

/// Recall and precision counts of one detector kind.
#[derive(Default, Debug)]
struct Tally {
    expected: u32,
    caught: u32,
    findings: u32,
    false_positives: u32,
}

impl Tally {
    fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            f64::from(self.caught) / f64::from(self.expected)
        }
    }
    fn precision(&self) -> f64 {
        if self.findings == 0 {
            1.0
        } else {
            f64::from(self.findings - self.false_positives) / f64::from(self.findings)
        }
    }
}

/// Byte ranges of the expected spans of `case`, by kind (each substring at its next
/// occurrence after the previous one of the same kind).
fn expected_spans(case: &Case) -> Vec<(String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for (kind, subs) in &case.expect {
        let mut from = 0;
        for s in subs {
            let at = case.text[from..]
                .find(s.as_str())
                .map(|i| from + i)
                .unwrap_or_else(|| panic!("{}: {s:?} not in its text", case.id));
            out.push((kind.clone(), at..at + s.len()));
            from = at + s.len();
        }
    }
    out
}

/// Scores `cases`: tallies per kind, and one line per wrong answer.
fn score(cases: &[Case]) -> (BTreeMap<String, Tally>, Vec<String>) {
    let redactor = Redactor::new(&RedactionConfig::default()).expect("default redaction");
    let mut tallies: BTreeMap<String, Tally> = DetectorKind::ALL
        .iter()
        .map(|k| (k.to_string(), Tally::default()))
        .collect();
    let mut wrong = Vec::new();
    for case in cases {
        let found = redactor.find(&case.text);
        let masked = |i: usize| found.iter().any(|f| f.range.contains(&i));
        let expected = expected_spans(case);
        for (kind, span) in &expected {
            let t = tallies.entry(kind.clone()).or_default();
            t.expected += 1;
            let leaked: String = case.text[span.clone()]
                .char_indices()
                .filter(|(i, c)| c.is_alphanumeric() && !masked(span.start + i))
                .map(|(_, c)| c)
                .collect();
            if leaked.is_empty() {
                t.caught += 1;
            } else {
                wrong.push(format!(
                    "{} [{}] missed {kind} {:?} (leaked {leaked:?})",
                    case.id,
                    case.lang,
                    &case.text[span.clone()]
                ));
            }
        }
        for f in &found {
            let t = tallies.entry(f.kind.name().to_string()).or_default();
            t.findings += 1;
            let hits_expected = case.text[f.range.clone()]
                .char_indices()
                .filter(|(_, c)| c.is_alphanumeric())
                .any(|(i, _)| {
                    let at = f.range.start + i;
                    expected.iter().any(|(_, s)| s.contains(&at))
                });
            if !hits_expected {
                t.false_positives += 1;
                wrong.push(format!(
                    "{} [{}] false {} {:?} in {:?}{}",
                    case.id,
                    case.lang,
                    f.kind,
                    &case.text[f.range.clone()],
                    case.text,
                    case.near
                        .as_deref()
                        .map(|n| format!(" (near {n})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    (tallies, wrong)
}

fn print_table(name: &str, cases: &[Case], tallies: &BTreeMap<String, Tally>, wrong: &[String]) {
    println!();
    println!("{name}: {} cases", cases.len());
    println!(
        "{:<16} {:>8} {:>7} {:>9} {:>5} {:>8} {:>10}",
        "detector", "expected", "caught", "findings", "fp", "recall", "precision"
    );
    for (kind, t) in tallies {
        println!(
            "{:<16} {:>8} {:>7} {:>9} {:>5} {:>8.3} {:>10.3}",
            kind,
            t.expected,
            t.caught,
            t.findings,
            t.false_positives,
            t.recall(),
            t.precision()
        );
    }
    for w in wrong {
        println!("  {w}");
    }
}

/// Scores `corpus`, prints its table, and holds every detector to its floor or [`SEEN_BAR`].
fn hold(corpus: &Corpus) {
    let cases = load(corpus.file)
        .unwrap_or_else(|| panic!("tests/fixtures/redaction/{} is in the repo", corpus.file));
    let (tallies, wrong) = score(&cases);
    print_table(corpus.file, &cases, &tallies, &wrong);
    for (kind, t) in &tallies {
        let (recall, precision) = corpus
            .floors
            .iter()
            .find(|(k, _, _)| k == kind)
            .map_or((SEEN_BAR, SEEN_BAR), |&(_, r, p)| (r, p));
        assert!(
            t.recall() >= recall && t.precision() >= precision,
            "{}: {kind} recall {:.3}, precision {:.3}, below its floor ({recall}, {precision}); \
             run with --nocapture for the list",
            corpus.file,
            t.recall(),
            t.precision()
        );
        if t.recall() < TARGET || t.precision() < TARGET {
            println!(
                "{}: below the target {TARGET}: {kind} recall {:.3}, precision {:.3}",
                corpus.file,
                t.recall(),
                t.precision()
            );
        }
    }
}

/// The eighth corpus (1,141 cases), written on 2026-12-08 by a session that read neither the
/// detectors nor the other corpora, scored once as it came (first score in
/// `tests/fixtures/redaction/README.md`), then tuned on by kind, not by case: passphrases
/// (`purple-cloud-69`) after a password word, key words typed in Latin letters (`parol`, `mima`,
/// `ramz`, `bibeon`), PEM blocks with `\n` escapes (a JSON service-account key), an AWS key id
/// without a digit on an `aws_…` line, a code near a warning not to share it despite an account
/// named beside it; then, by the kinds of its remaining misses (passwords of `root`/`admin`,
/// CJK password words glued to their value, `mTAN`, letter codes like `7VSKZ`), to api_token
/// 0.994 and login_code 0.996. Where its labels differ: a GCP `private_key_id` is not a secret
/// here, a parcel pickup code (or a parcel locker's PIN) is no login code.
const EIGHTH: Corpus = Corpus {
    file: "eighth.jsonl",
    floors: &[("login_code", 0.99, 0.955)],
};

#[test]
fn every_detector_holds_its_floor_on_the_tuning_half_of_the_first_corpus() {
    hold(&TUNING);
}

#[test]
fn every_detector_holds_its_floor_on_the_frozen_half_of_the_first_corpus() {
    hold(&FROZEN);
}

#[test]
fn every_detector_holds_its_floor_on_the_second_corpus() {
    hold(&SECOND);
}

#[test]
fn every_detector_holds_its_floor_on_the_third_corpus() {
    hold(&THIRD);
}

#[test]
fn every_detector_holds_its_floor_on_the_fourth_corpus() {
    hold(&FOURTH);
}

#[test]
fn every_detector_holds_its_floor_on_the_fifth_corpus() {
    hold(&FIFTH);
}

#[test]
fn every_detector_holds_its_floor_on_the_sixth_corpus() {
    hold(&SIXTH);
}

#[test]
fn every_detector_holds_its_floor_on_the_tuning_half_of_the_seventh_corpus() {
    hold(&SEVENTH_TUNING);
}

#[test]
fn every_detector_holds_its_floor_on_the_frozen_half_of_the_seventh_corpus() {
    hold(&SEVENTH_FROZEN);
}

#[test]
fn every_detector_holds_its_floor_on_the_eighth_corpus() {
    hold(&EIGHTH);
}

/// The ninth corpus (1,393 cases, weighted to credentials and codes: recovery-code lists, app
/// passwords, word passphrases, PINs), written on 2026-12-08 by a session that read neither the
/// detectors nor the other corpora, scored once whole as it came (api_token 0.706 / 0.962,
/// login_code 0.882 / 0.994, email 0.949, phone 0.980 / 0.987), then split by the first byte of
/// the SHA-256 of each case's id (below 128: tuning). Tuned on this half by kind of miss; what
/// it still misses: passwords with no key word at all (`la solita, Gattino_68`), and where its
/// labels differ (a merchant's UUID and a Sentry DSN's key are secrets here, a parcel pickup
/// code is a login code).
const NINTH_TUNING: Corpus = Corpus {
    file: "ninth-tuning.jsonl",
    floors: &[("api_token", 0.96, 0.995), ("login_code", 0.96, 0.995)],
};

/// The ninth corpus's frozen half (see [`NINTH_TUNING`]): before the tuning on the other half
/// api_token 0.711 / 0.964, login_code 0.890 / 0.987; after it 0.926 / 0.988 and 0.916 / 0.986.
/// (Its list of misses was printed once during that tuning, by a filter that failed to hold it
/// back; no rule was made from a case only it has.)
const NINTH_FROZEN: Corpus = Corpus {
    file: "ninth-frozen.jsonl",
    floors: &[
        ("api_token", 0.92, 0.985),
        ("email", 0.89, 1.0),
        ("login_code", 0.91, 0.98),
        ("payment_card", 1.0, 0.96),
        ("phone", 0.95, 0.98),
    ],
};

#[test]
fn every_detector_holds_its_floor_on_the_tuning_half_of_the_ninth_corpus() {
    hold(&NINTH_TUNING);
}

#[test]
fn every_detector_holds_its_floor_on_the_frozen_half_of_the_ninth_corpus() {
    hold(&NINTH_FROZEN);
}

/// The tenth corpus (599 cases, weighted to credentials and codes), written on 2026-12-08 by a
/// session that read neither the detectors nor the other corpora, after the ninth's tuning was
/// done: scored once, as it came, and not tuned on; its misses have not been read. Its first
/// score is these floors. Where its labels differ: parcel pickup and recovery codes are login
/// codes.
const TENTH: Corpus = Corpus {
    file: "tenth.jsonl",
    floors: &[
        ("api_token", 0.93, 0.96),
        ("login_code", 0.94, 0.99),
        ("phone", 1.0, 0.98),
    ],
};

#[test]
fn every_detector_holds_its_floor_on_the_tenth_corpus() {
    hold(&TENTH);
}
