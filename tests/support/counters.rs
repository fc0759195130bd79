//! Reading counters from a `metrics-util` debugging recorder.

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, Snapshotter};

/// The counter `name`'s values by its label `label` (an absent label reads as "").
pub fn by_label(snapshotter: &Snapshotter, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if let (true, DebugValue::Counter(n)) = (key.name() == name, value) {
            let value = key
                .labels()
                .find(|l| l.key() == label)
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            out.insert(value, n);
        }
    }
    out
}
