//! The metrics catalogue (`docs/metrics.md`) and the code name the same metrics: every
//! `tgingest_*`/`connector_*` name written in `src/` is documented, and every documented name is
//! still written somewhere in `src/`.

use std::collections::BTreeSet;
use std::path::Path;

/// String literals of that form that are not metrics (a heartbeat field).
const NOT_METRICS: &[&str] = &["connector_type"];

fn names_in(text: &str, quote: char) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(quote) {
        let rest = &text[i + 1..];
        if !(rest.starts_with("tgingest_") || rest.starts_with("connector_")) {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if rest[name.len()..].starts_with(quote) && !NOT_METRICS.contains(&name.as_str()) {
            out.insert(name);
        }
    }
    out
}

fn source_names(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("src readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_names(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.extend(names_in(
                &std::fs::read_to_string(&path).expect("source"),
                '"',
            ));
        }
    }
}

#[test]
fn every_metric_in_the_code_is_in_the_catalogue_and_back() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = BTreeSet::new();
    source_names(&repo.join("src"), &mut code);
    let docs = names_in(
        &std::fs::read_to_string(repo.join("docs/metrics.md")).expect("docs/metrics.md"),
        '`',
    );
    assert!(code.contains("tgingest_replay_events_total"), "{code:?}");
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let gone: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/metrics.md: {undocumented:?}"
    );
    assert!(
        gone.is_empty(),
        "docs/metrics.md lists metrics the code no longer has: {gone:?}"
    );
}
