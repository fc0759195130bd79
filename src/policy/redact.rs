//! Finding and masking: the enabled detectors and custom patterns behind two `RegexSet`
//! prefilters (the large word alternations in one, everything else in the other, see
//! `Rule::apart`), overlapping matches merged, each masked as `[REDACTED:<kind>]`.
//!
//! Most messages contain nothing to mask; for them the cost is one pass of each prefilter over
//! the text and no allocation.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use regex::{Regex, RegexSet, RegexSetBuilder};

use super::config::{
    CUSTOM_REGEX_SIZE_LIMIT, CustomDetectorConfig, DetectorKind, RedactionConfig, check_custom,
    check_phone_regions, compile_custom,
};
use super::detectors::{Check, PhoneRegions, RULES, Settings};
use super::fold::fold;
use crate::config_error::ConfigError;

/// What a masked span was: a built-in detector or a custom pattern (by its configured name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RedactionKind {
    /// A built-in detector.
    Builtin(DetectorKind),
    /// A custom pattern from `policy.redaction.custom`.
    Custom(Arc<str>),
}

impl RedactionKind {
    /// The name in markers, metric labels and `policy test` output.
    pub fn name(&self) -> &str {
        match self {
            RedactionKind::Builtin(k) => k.as_str(),
            RedactionKind::Custom(name) => name,
        }
    }

    /// Which kind wins when spans of different kinds overlap equally long (lower wins).
    fn rank(&self) -> u8 {
        match self {
            RedactionKind::Custom(_) => 0,
            RedactionKind::Builtin(k) => match k {
                DetectorKind::SessionString => 1,
                DetectorKind::ApiToken => 2,
                DetectorKind::PaymentCard => 3,
                DetectorKind::Iban => 4,
                DetectorKind::Email => 5,
                DetectorKind::LoginCode => 6,
                DetectorKind::Phone => 7,
            },
        }
    }
}

impl fmt::Display for RedactionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One span to mask, in byte offsets of the text it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Byte range in the scanned text.
    pub range: Range<usize>,
    /// What was found there.
    pub kind: RedactionKind,
}

/// Counts of masked spans by kind, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionTally(Vec<(RedactionKind, u32)>);

impl RedactionTally {
    /// Adds one span of `kind`.
    pub fn add(&mut self, kind: &RedactionKind) {
        match self.0.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => self.0.push((kind.clone(), 1)),
        }
    }

    /// True when nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counts, sorted by kind name.
    pub fn into_sorted(mut self) -> Vec<(RedactionKind, u32)> {
        self.0.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        self.0
    }
}

enum Confirm {
    Builtin(Check),
    Whole,
}

struct CompiledRule {
    kind: RedactionKind,
    regex: Regex,
    confirm: Confirm,
    prefilter: String,
    apart: bool,
}

/// One overlapping search for the distinct prefilter patterns of some rules.
struct Prefilter {
    set: RegexSet,
    /// The rules of each pattern of `set`.
    members: Vec<Vec<usize>>,
}

impl Prefilter {
    /// The prefilter of the rules `of` selects (by index in `rules`).
    fn new(
        rules: &[CompiledRule],
        of: impl Fn(&CompiledRule) -> bool,
        key: &str,
    ) -> Result<Self, ConfigError> {
        let mut patterns: Vec<&str> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, r) in rules.iter().enumerate().filter(|(_, r)| of(r)) {
            match patterns.iter().position(|p| *p == r.prefilter) {
                Some(at) => members[at].push(i),
                None => {
                    patterns.push(&r.prefilter);
                    members.push(vec![i]);
                }
            }
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(64 * CUSTOM_REGEX_SIZE_LIMIT)
            .dfa_size_limit(PREFILTER_DFA_CACHE)
            .build()
            .map_err(|e| ConfigError::Invalid {
                origin: String::new(),
                key: key.to_string(),
                value: format!("{} patterns", patterns.len()),
                allowed: format!("patterns that compile together: {e}"),
            })?;
        Ok(Prefilter { set, members })
    }

    /// The rules whose prefilter pattern matches somewhere in `text`.
    fn hits(&self, text: &str) -> impl Iterator<Item = usize> + '_ {
        let hits = self.set.matches(text);
        hits.into_iter()
            .flat_map(|i| self.members[i].iter().copied())
    }
}

/// How much memory each prefilter's lazy DFA may use for its cache (the regex crate's default
/// is 2 MiB). Varied text in many scripts needs many states; when they do not fit, the cache is
/// cleared and rebuilt on the next events: on the simulated world's texts that made redaction
/// cost about 13 µs per message, 3–4× more at 8 MiB than at this. The cache grows only as
/// text needs it.
const PREFILTER_DFA_CACHE: usize = 32 << 20;

/// The compiled redaction rules of one policy (global, or one account's override).
pub struct Redactor {
    rules: Vec<CompiledRule>,
    /// The rules kept apart (`Rule::apart`): the large word alternations.
    words: Prefilter,
    /// Every other rule, custom patterns included.
    others: Prefilter,
    settings: Settings,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.rules.iter().map(|r| r.kind.name()).collect();
        f.debug_struct("Redactor").field("rules", &kinds).finish()
    }
}

impl Redactor {
    /// Compiles the enabled built-in detectors and the custom patterns.
    pub fn new(config: &RedactionConfig) -> Result<Self, ConfigError> {
        Self::from_parts(
            &config.detectors,
            &config.custom,
            &config.phone_regions,
            "policy.redaction",
        )
    }

    /// Compiles detectors, custom patterns and phone regions; `key` is the config section they
    /// came from (`policy.redaction`, `policy.accounts.42.redaction`), for errors.
    pub(crate) fn from_parts(
        detectors: &[DetectorKind],
        custom: &[CustomDetectorConfig],
        phone_regions: &[String],
        key: &str,
    ) -> Result<Self, ConfigError> {
        let custom_key = format!("{key}.custom");
        let custom_key = custom_key.as_str();
        check_custom(custom_key, custom)?;
        let regions_key = format!("{key}.phone_regions");
        check_phone_regions(&regions_key, phone_regions)?;
        let phone_regions = PhoneRegions::new(phone_regions).map_err(|bad| {
            crate::config_error::invalid(&regions_key, bad, "a region code libphonenumber knows")
        })?;
        let mut rules = Vec::new();
        for r in RULES.iter().filter(|r| detectors.contains(&r.kind)) {
            rules.push(CompiledRule {
                kind: RedactionKind::Builtin(r.kind),
                regex: r.regex.clone(),
                confirm: Confirm::Builtin(r.check),
                prefilter: r.prefilter_pattern().to_string(),
                apart: r.apart,
            });
        }
        for (i, c) in custom.iter().enumerate() {
            let regex = compile_custom(&c.pattern).map_err(|e| ConfigError::Invalid {
                origin: String::new(),
                key: format!("{custom_key}[{i}].pattern"),
                value: format!("{:?}", c.pattern),
                allowed: format!("a regular expression that compiles: {e}"),
            })?;
            rules.push(CompiledRule {
                kind: RedactionKind::Custom(Arc::from(c.name.as_str())),
                regex,
                confirm: Confirm::Whole,
                prefilter: c.pattern.clone(),
                apart: false,
            });
        }
        Ok(Redactor {
            words: Prefilter::new(&rules, |r| r.apart, custom_key)?,
            others: Prefilter::new(&rules, |r| !r.apart, custom_key)?,
            rules,
            settings: Settings { phone_regions },
        })
    }

    /// Every span to mask in `text`, sorted, overlaps merged (the longest member names the
    /// kind; on a tie the more specific kind wins). The detectors see the text with every
    /// script's digits folded to ASCII ([`super::fold`]); the spans are the original's.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        if text.is_empty() {
            return Vec::new();
        }
        let folded = fold(text);
        let scanned: &str = &folded.text;
        let mut raw: Vec<(Range<usize>, usize)> = Vec::new();
        let mut spans = Vec::new();
        for i in self.others.hits(scanned).chain(self.words.hits(scanned)) {
            let rule = &self.rules[i];
            match rule.confirm {
                Confirm::Whole => raw.extend(
                    rule.regex
                        .find_iter(scanned)
                        .filter(|m| !m.is_empty())
                        .map(|m| (m.range(), i)),
                ),
                Confirm::Builtin(check) => {
                    for caps in rule.regex.captures_iter(scanned) {
                        spans.clear();
                        check(&self.settings, scanned, &caps, &mut spans);
                        raw.extend(spans.drain(..).map(|r| (r, i)));
                    }
                }
            }
        }
        for (r, _) in &mut raw {
            *r = folded.original(r.clone());
        }
        merge(raw, |i| &self.rules[i].kind)
    }

    /// `text` with every finding replaced by `[REDACTED:<kind>]` (borrowed when nothing was
    /// found), counting what was masked into `tally`.
    pub fn redact<'a>(&self, text: &'a str, tally: &mut RedactionTally) -> Cow<'a, str> {
        let found = self.find(text);
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &found {
            out.push_str(&text[at..f.range.start]);
            out.push_str("[REDACTED:");
            out.push_str(f.kind.name());
            out.push(']');
            at = f.range.end;
            tally.add(&f.kind);
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}

/// Unions overlapping spans; the longest member (then the lowest rank) names the kind.
fn merge<'k>(
    mut raw: Vec<(Range<usize>, usize)>,
    kind_of: impl Fn(usize) -> &'k RedactionKind,
) -> Vec<Finding> {
    raw.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut out: Vec<Finding> = Vec::new();
    let mut best_len = 0usize;
    for (r, i) in raw {
        let kind = kind_of(i);
        let len = r.end - r.start;
        match out.last_mut() {
            Some(last) if r.start < last.range.end => {
                last.range.end = last.range.end.max(r.end);
                if len > best_len || (len == best_len && kind.rank() < last.kind.rank()) {
                    last.kind = kind.clone();
                    best_len = len;
                }
            }
            _ => {
                best_len = len;
                out.push(Finding {
                    range: r,
                    kind: kind.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_in_exactly_one_prefilter_and_a_shared_pattern_is_searched_once() {
        let r = redactor();
        let mut places = vec![0; r.rules.len()];
        for p in [&r.words, &r.others] {
            assert_eq!(p.set.len(), p.members.len());
            for &i in p.members.iter().flatten() {
                places[i] += 1;
            }
        }
        assert!(places.iter().all(|&n| n == 1), "{places:?}");
        let shared = r.words.members.iter().find(|m| m.len() >= 2);
        assert!(shared.is_some(), "the key-word rules share one pattern");
        // Both rules behind that pattern still run: a value after `=` and one after a phrase.
        for text in [
            "db password = Tq9xK2vLr9mZ",
            "пароль до адмінки PnO#AWBt-cl2",
        ] {
            let kinds: Vec<_> = r.find(text).into_iter().map(|f| f.kind).collect();
            assert_eq!(
                kinds,
                [RedactionKind::Builtin(DetectorKind::ApiToken)],
                "{text}"
            );
        }
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
        .unwrap()
    }

    #[test]
    fn text_without_findings_is_borrowed_and_untallied() {
        let mut tally = RedactionTally::default();
        let out = redactor().redact("nothing to see here, 42 cats", &mut tally);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert!(tally.is_empty());
    }

    #[test]
    fn every_finding_is_replaced_by_its_marker_and_counted() {
        let mut tally = RedactionTally::default();
        let out = redactor().redact(
            "a@example.com and b@example.org, badge EMP-123456",
            &mut tally,
        );
        assert_eq!(
            out,
            "[REDACTED:email] and [REDACTED:email], badge [REDACTED:employee_id]"
        );
        let counts: Vec<(String, u32)> = tally
            .into_sorted()
            .into_iter()
            .map(|(k, n)| (k.name().to_string(), n))
            .collect();
        assert_eq!(
            counts,
            [("email".to_string(), 2), ("employee_id".to_string(), 1)]
        );
    }

    #[test]
    fn overlapping_spans_merge_into_one_marker_named_by_the_longest() {
        let kinds = [
            RedactionKind::Builtin(DetectorKind::Phone),
            RedactionKind::Builtin(DetectorKind::Email),
        ];
        let merged = merge(vec![(5..10, 0), (0..20, 1), (18..25, 0)], |i| &kinds[i]);
        assert_eq!(
            merged,
            [Finding {
                range: 0..25,
                kind: kinds[1].clone()
            }]
        );
    }

    #[test]
    fn disabled_detectors_find_nothing() {
        let r = Redactor::new(&RedactionConfig {
            detectors: vec![DetectorKind::Phone],
            custom: Vec::new(),
            ..RedactionConfig::default()
        })
        .unwrap();
        assert!(r.find("a@example.com").is_empty());
        assert_eq!(r.find("call +1 555 123 4567").len(), 1);
    }
}
