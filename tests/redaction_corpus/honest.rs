//! The independently written corpus, scored by the honest rule (issue 14).
//!
//! Each line is `{"id", "lang", "text", "expect": {"<kind>": ["<exact substring>", …]}, "near"}`.
//! An expected span counts as caught only when none of its letters or digits survive redaction,
//! whichever detector masked them (nothing leaked). A finding is a false positive of its kind
//! when it masks no letter or digit of any expected span. Recall is per expected kind,
//! precision per finding kind.
//!
//! `tuning.jsonl` is the half the detectors were tuned on. `frozen.jsonl` was kept from the
//! detector work and scored once, at its end (2026-12-07): the target is
//! [`FROZEN_TARGET`] for every detector, and the detectors did not reach it on every one. Until
//! they do, the test holds each detector to what it reached then ([`FROZEN_FLOORS`], a
//! regression guard) and prints the ones still under the target. Its misses have now been seen:
//! tune on them and it stops being a fair check — a new held-out set has to replace it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use tgingest::policy::{DetectorKind, RedactionConfig, Redactor};

/// The target on text nobody tuned on, for every detector's recall and precision.
const FROZEN_TARGET: f64 = 0.98;

/// What each detector reached on the frozen half when it was first scored: (kind, recall,
/// precision), rounded down. Falling below is a regression.
const FROZEN_FLOORS: &[(&str, f64, f64)] = &[
    ("api_token", 0.954, 1.0),
    ("email", 1.0, 1.0),
    ("iban", 0.980, 1.0),
    ("login_code", 0.960, 1.0),
    ("payment_card", 1.0, 0.989),
    ("phone", 0.947, 0.956),
    ("session_string", 1.0, 1.0),
];

/// What the detectors honestly reach on the tuning half (per detector, recall and precision);
/// a drop below it is a regression.
const TUNING_BAR: f64 = 0.98;

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

fn assert_bar(name: &str, tallies: &BTreeMap<String, Tally>, bar: f64) {
    for (kind, t) in tallies {
        assert!(
            t.recall() >= bar && t.precision() >= bar,
            "{name}: {kind} recall {:.3}, precision {:.3} (bar {bar}); run with --nocapture for the list",
            t.recall(),
            t.precision()
        );
    }
}

#[test]
fn every_detector_holds_its_bar_on_the_tuning_half_of_the_independent_corpus() {
    let cases = load("tuning.jsonl").expect("tests/fixtures/redaction/tuning.jsonl is in the repo");
    let (tallies, wrong) = score(&cases);
    print_table("tuning half", &cases, &tallies, &wrong);
    assert_bar("tuning half", &tallies, TUNING_BAR);
}

#[test]
fn no_detector_falls_below_what_it_reached_on_the_frozen_half() {
    let cases = load("frozen.jsonl").expect("tests/fixtures/redaction/frozen.jsonl is in the repo");
    let (tallies, wrong) = score(&cases);
    print_table("frozen half", &cases, &tallies, &wrong);
    assert_eq!(
        tallies.keys().collect::<Vec<_>>(),
        FROZEN_FLOORS.iter().map(|(k, _, _)| k).collect::<Vec<_>>(),
        "every detector has a floor"
    );
    for (kind, recall, precision) in FROZEN_FLOORS {
        let t = &tallies[*kind];
        assert!(
            t.recall() >= *recall && t.precision() >= *precision,
            "frozen half: {kind} recall {:.3}, precision {:.3}, below its floor ({recall}, {precision})",
            t.recall(),
            t.precision()
        );
        if t.recall() < FROZEN_TARGET || t.precision() < FROZEN_TARGET {
            println!(
                "below the target {FROZEN_TARGET}: {kind} recall {:.3}, precision {:.3}",
                t.recall(),
                t.precision()
            );
        }
    }
}
