//! The README's Status paragraph keeps up with the tree: every part that exists is named as in
//! place, and none of them is listed among what is not built yet.

use std::path::Path;

/// A part the Status paragraph must name, and the path whose existence shows it is built.
const BUILT: &[(&str, &str)] = &[
    ("grammers adapter", "src/telegram/grammers/gateway.rs"),
    ("fake Telegram DC", "src/telegram/fakedc"),
    ("replays", "src/pipeline/replay.rs"),
    ("Grafana dashboards", "deploy/grafana/dashboards"),
    ("alert rules", "deploy/prometheus"),
    ("load-test crate", "loadtest/Cargo.toml"),
    ("systemd unit", "deploy/systemd/tgingest.service"),
];

/// Words that introduce what is not there yet.
const NOT_YET: &[&str] = &["not built yet", "being built", "not yet", "planned"];

#[test]
fn the_status_paragraph_names_what_exists_and_lists_none_of_it_as_unbuilt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let status: String = readme
        .split("\n\n")
        .find(|p| p.starts_with("Status:"))
        .expect("a paragraph starting with \"Status:\"")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cut = NOT_YET
        .iter()
        .filter_map(|w| status.find(w))
        .min()
        .unwrap_or(status.len());
    let (in_place, unbuilt) = status.split_at(cut);
    for (part, path) in BUILT {
        assert!(root.join(path).exists(), "{path} is gone: update this test");
        assert!(
            in_place.contains(part),
            "the Status paragraph does not name the {part} as in place: {status}"
        );
        assert!(
            !unbuilt.contains(part),
            "the Status paragraph lists the {part} as not built: {status}"
        );
    }
}
