//! The redaction detectors against labelled corpora.
//!
//! Two kinds of corpus are scored here. The independently written one
//! (`tests/fixtures/redaction/tuning.jsonl`, and `frozen.jsonl` beside it once the lead adds it)
//! is the yardstick, scored by the honest rule of [`honest`]: a secret counts as caught only
//! when none of its letters or digits survive. The old corpus
//! (`tests/fixtures/redaction-corpus.jsonl`), written beside the detectors, stays as a regression
//! set with exact-span scoring (below).
//!
//! Each line is `{"text": …, "expect": {"<kind>": ["<exact substring>", …]}, "near": "<kind>"}`:
//! positives list every span a detector must mask; negatives (`expect` empty) are near-misses
//! aimed at the detector named in `near` (or ordinary text). Scoring is per detector at the
//! span level: a finding counts only with the exact bytes and the right kind. `cargo test --test
//! redaction_corpus -- --nocapture` prints the table.

use std::collections::BTreeMap;

use serde::Deserialize;
use tgingest::policy::{
    CustomDetectorConfig, DetectorKind, RedactionConfig, RedactionTally, Redactor,
};

#[path = "redaction_corpus/honest.rs"]
mod honest;

const CORPUS: &str = include_str!("fixtures/redaction-corpus.jsonl");

/// The bar every detector must clear on the corpus, for precision and for recall.
const MIN_SCORE: f64 = 0.95;

/// Corpus texts the detectors are known to get wrong, and why. Any other wrong answer fails
/// `no_case_goes_wrong_beyond_the_known_ones`, so a regression on one case is caught even while
/// the scores stay above the bar.
const KNOWN_WRONG: &[(&str, &str)] = &[
    (
        "Lottery numbers 05 12 23 34 45",
        "laid out exactly like a French number (0X XX XX XX XX); nothing but the word says otherwise",
    ),
    (
        "4111 1111 short",
        "eight digits in two groups are a valid national number of default phone regions (libphonenumber: Indonesia, Korea) whose national format does not require the trunk 0",
    ),
    (
        "the 12345 code words",
        "`code` qualifies `words` here; telling it from `12345 is your code` (code word after the number, in any language) needs a parser, not context words",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    text: String,
    expect: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    near: Option<String>,
}

fn cases() -> Vec<(usize, Case)> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let case: Case =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("corpus line {}: {e}", i + 1));
            (i + 1, case)
        })
        .collect()
}

fn redactor() -> Redactor {
    Redactor::new(&RedactionConfig {
        detectors: DetectorKind::ALL.to_vec(),
        custom: vec![CustomDetectorConfig {
            name: "employee_id".into(),
            pattern: "EMP-[0-9]{6}".into(),
        }],
        ..RedactionConfig::default()
    })
    .expect("corpus config compiles")
}

/// Expected (start, end, kind) spans: each substring at its next occurrence in the text.
fn expected_spans(case: &Case, line: usize) -> Vec<(usize, usize, String)> {
    let mut spans = Vec::new();
    for (kind, subs) in &case.expect {
        let mut from = 0;
        for s in subs {
            let at = case.text[from..]
                .find(s.as_str())
                .map(|i| i + from)
                .unwrap_or_else(|| panic!("corpus line {line}: {s:?} not in text"));
            spans.push((at, at + s.len(), kind.clone()));
            from = at + s.len();
        }
    }
    spans.sort();
    spans
}

#[derive(Default)]
struct Score {
    tp: u32,
    fp: u32,
    fn_: u32,
    positives: u32,
    near_misses: u32,
}

impl Score {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            f64::from(self.tp) / f64::from(self.tp + self.fp)
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            f64::from(self.tp) / f64::from(self.tp + self.fn_)
        }
    }
}

/// Per-detector scores, and every wrong answer as (case text, description).
fn evaluate() -> (BTreeMap<String, Score>, Vec<(String, String)>) {
    let redactor = redactor();
    let cases = cases();
    let mut kinds: Vec<String> = DetectorKind::ALL.iter().map(|k| k.to_string()).collect();
    kinds.push("employee_id".into());
    let mut scores: BTreeMap<String, Score> = kinds
        .iter()
        .map(|k| (k.clone(), Score::default()))
        .collect();
    let mut failures = Vec::new();

    for (line, case) in &cases {
        let expected = expected_spans(case, *line);
        let found: Vec<(usize, usize, String)> = redactor
            .find(&case.text)
            .into_iter()
            .map(|f| (f.range.start, f.range.end, f.kind.name().to_string()))
            .collect();
        for e in &expected {
            let s = scores
                .get_mut(&e.2)
                .unwrap_or_else(|| panic!("corpus line {line}: unknown kind {}", e.2));
            s.positives += 1;
            if found.contains(e) {
                s.tp += 1;
            } else {
                s.fn_ += 1;
                failures.push((
                    case.text.clone(),
                    format!("line {line}: missed {} {:?}", e.2, &case.text[e.0..e.1]),
                ));
            }
        }
        for f in &found {
            if !expected.contains(f) {
                scores.entry(f.2.clone()).or_default().fp += 1;
                failures.push((
                    case.text.clone(),
                    format!(
                        "line {line}: false {} {:?} in {:?}",
                        f.2,
                        &case.text[f.0..f.1],
                        shorten(&case.text)
                    ),
                ));
            }
        }
        if let Some(near) = &case.near
            && let Some(s) = scores.get_mut(near)
        {
            s.near_misses += 1;
        }
    }
    (scores, failures)
}

#[test]
fn every_detector_meets_the_precision_and_recall_bar_on_the_corpus() {
    let (scores, failures) = evaluate();
    println!();
    println!(
        "{:<16} {:>9} {:>11} {:>5} {:>5} {:>5} {:>10} {:>8}",
        "detector", "positives", "near-misses", "tp", "fp", "fn", "precision", "recall"
    );
    for (kind, s) in &scores {
        println!(
            "{:<16} {:>9} {:>11} {:>5} {:>5} {:>5} {:>10.3} {:>8.3}",
            kind,
            s.positives,
            s.near_misses,
            s.tp,
            s.fp,
            s.fn_,
            s.precision(),
            s.recall()
        );
    }
    println!("{} cases", cases().len());
    for (_, f) in &failures {
        println!("  {f}");
    }

    for (kind, s) in &scores {
        assert!(
            s.precision() >= MIN_SCORE && s.recall() >= MIN_SCORE,
            "{kind}: precision {:.3}, recall {:.3} (bar {MIN_SCORE}); see the list above",
            s.precision(),
            s.recall()
        );
    }
}

#[test]
fn no_case_goes_wrong_beyond_the_known_ones() {
    let (_, failures) = evaluate();
    let unexpected: Vec<&String> = failures
        .iter()
        .filter(|(text, _)| !KNOWN_WRONG.iter().any(|(k, _)| k == text))
        .map(|(_, f)| f)
        .collect();
    assert!(unexpected.is_empty(), "new wrong answers: {unexpected:#?}");
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

#[test]
fn the_corpus_is_large_and_every_detector_has_positives_and_near_misses() {
    let cases = cases();
    assert!(cases.len() >= 250, "{} cases", cases.len());
    for kind in DetectorKind::ALL {
        let positives = cases
            .iter()
            .filter(|(_, c)| c.expect.contains_key(kind.as_str()))
            .count();
        let near = cases
            .iter()
            .filter(|(_, c)| c.near.as_deref() == Some(kind.as_str()))
            .count();
        assert!(positives >= 8, "{kind}: {positives} positive cases");
        assert!(near >= 8, "{kind}: {near} near-miss cases");
    }
}

#[test]
fn redacted_output_never_contains_a_secret_of_a_positive_case() {
    let redactor = redactor();
    for (line, case) in cases() {
        let mut tally = RedactionTally::default();
        let out = redactor.redact(&case.text, &mut tally);
        for (kind, subs) in &case.expect {
            for s in subs {
                assert!(
                    !out.contains(s.as_str()),
                    "line {line}: {kind} {s:?} survived in {out:?}"
                );
            }
            let marker = format!("[REDACTED:{kind}]");
            assert!(
                out.matches(&marker).count() >= subs.len(),
                "line {line}: expected {} × {marker} in {out:?}",
                subs.len()
            );
        }
    }
}

/// The demo's own world: card numbers sit in sentences after unrelated ones ("the contract
/// draft.", "the tickets"). Every one of them must be masked, whatever came before it.
#[test]
fn no_card_number_the_simulation_embeds_survives_redaction() {
    use tgingest::policy::{Decision, Policy, PolicyConfig};
    use tgingest::telegram::simulated::{PiiKind, SimulatedWorld, SimulatorConfig};

    let policy = Policy::new(&PolicyConfig::default()).expect("default policy");
    let mut cards = 0;
    let mut leaked = Vec::new();
    for seed in 1..=4 {
        let world = SimulatedWorld::new(SimulatorConfig {
            accounts: 2,
            messages_per_account: 1500,
            seed,
            pii_rate: 0.3,
            ..SimulatorConfig::default()
        })
        .expect("world");
        for account in 0..2 {
            for n in 0..1500 {
                let position = world.event_at(account, n);
                let Some(pii) = position.pii.filter(|p| p.kind == PiiKind::CardNumber) else {
                    continue;
                };
                for event in position.events {
                    if let Decision::Keep { event, .. } = policy.decide_owned(event) {
                        cards += 1;
                        if event.text.contains(&pii.value) {
                            leaked.push(event.text);
                        }
                    }
                }
            }
        }
    }
    assert!(
        cards > 100,
        "the simulation should embed card numbers: {cards}"
    );
    assert!(
        leaked.is_empty(),
        "{} of {cards} cards kept in clear: {leaked:#?}",
        leaked.len()
    );
}
