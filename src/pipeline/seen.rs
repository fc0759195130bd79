//! The dedupe stage's persistent seen-set: event ids it has passed on (or dropped on purpose),
//! remembered for a horizon (default 7 days) so duplicates from catch-up, backfill overlap, a
//! restart or a redelivery are dropped long after JetStream's 2-minute Nats-Msg-Id window.
//!
//! Two sled trees: `seen` (event id → first-seen time) answers lookups; `by_time` (time ‖ id)
//! lets pruning walk the oldest entries without scanning everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the seen-set could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeenSetError {
    #[error("dedupe seen-set at {dir}: {doing}: {source}")]
    Storage {
        dir: PathBuf,
        doing: &'static str,
        source: sled::Error,
    },
    #[error("dedupe seen-set at {dir} is corrupt and cannot be moved aside to {aside}: {source}")]
    SetAside {
        dir: PathBuf,
        aside: PathBuf,
        source: std::io::Error,
    },
}

/// Counter of seen-sets found corrupt at start and replaced by an empty one.
pub const METRIC_SEEN_SET_RESETS: &str = "tgingest_dedupe_seen_set_resets_total";

/// Event ids seen within the horizon.
pub struct SeenSet {
    dir: PathBuf,
    db: sled::Db,
    seen: sled::Tree,
    by_time: sled::Tree,
    horizon: Duration,
}

impl SeenSet {
    /// Opens (or creates) the seen-set in `dir`.
    ///
    /// A seen-set sled finds corrupt (a kill -9 while sled wrote its snapshot) is moved aside to
    /// `<dir>.corrupt-<unix time>` and an empty one is started, with an error logged and
    /// [`METRIC_SEEN_SET_RESETS`] counted: it is a cache of the ids passed on, and without it
    /// recent copies are still dropped by JetStream's Msg-Id window (and `TG_SEEN` in a
    /// cluster) while older ones reach Switchboard, whose idempotency key stores them once; a
    /// node that refused to start would ingest nothing at all.
    pub fn open(dir: &Path, horizon: Duration) -> Result<SeenSet, SeenSetError> {
        Self::open_with(dir, horizon, Self::open_db)
    }

    /// [`SeenSet::open`] with the sled opening passed in (tests inject a corruption).
    fn open_with(
        dir: &Path,
        horizon: Duration,
        open_db: impl Fn(&Path, Duration) -> Result<SeenSet, SeenSetError>,
    ) -> Result<SeenSet, SeenSetError> {
        match open_db(dir, horizon) {
            Err(SeenSetError::Storage {
                source: sled::Error::Corruption { .. },
                ..
            }) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = dir.as_os_str().to_owned();
                aside.push(format!(".corrupt-{stamp}"));
                let aside = PathBuf::from(aside);
                std::fs::rename(dir, &aside).map_err(|source| SeenSetError::SetAside {
                    dir: dir.to_path_buf(),
                    aside: aside.clone(),
                    source,
                })?;
                tracing::error!(dir = %dir.display(), aside = %aside.display(),
                    "the dedupe seen-set is corrupt; moved aside, starting an empty one");
                metrics::counter!(METRIC_SEEN_SET_RESETS).increment(1);
                open_db(dir, horizon)
            }
            other => other,
        }
    }

    fn open_db(dir: &Path, horizon: Duration) -> Result<SeenSet, SeenSetError> {
        let err = |doing| {
            move |source| SeenSetError::Storage {
                dir: dir.to_path_buf(),
                doing,
                source,
            }
        };
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()
            .map_err(err("opening"))?;
        let seen = db.open_tree("seen").map_err(err("opening tree seen"))?;
        let by_time = db
            .open_tree("by_time")
            .map_err(err("opening tree by_time"))?;
        Ok(SeenSet {
            dir: dir.to_path_buf(),
            db,
            seen,
            by_time,
            horizon,
        })
    }

    fn storage(&self, doing: &'static str) -> impl FnOnce(sled::Error) -> SeenSetError + '_ {
        move |source| SeenSetError::Storage {
            dir: self.dir.clone(),
            doing,
            source,
        }
    }

    /// Whether `event_id` was marked within the horizon.
    pub fn contains(&self, event_id: &str) -> Result<bool, SeenSetError> {
        let Some(value) = self
            .seen
            .get(event_id.as_bytes())
            .map_err(self.storage("reading"))?
        else {
            return Ok(false);
        };
        let at = u64::from_be_bytes(value.as_ref().try_into().unwrap_or([0; 8]));
        Ok(now_us().saturating_sub(at) <= self.horizon.as_micros() as u64)
    }

    /// Marks `event_ids` as seen now, in one batch per tree. The dedupe stage marks only ids it
    /// found absent, so a plain insert is enough; re-marking an id moves its time forward, which
    /// only keeps it longer.
    pub fn mark_all<'a>(
        &self,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), SeenSetError> {
        let now = now_us();
        let (mut seen, mut by_time) = (sled::Batch::default(), sled::Batch::default());
        for id in event_ids {
            seen.insert(id.as_bytes(), &now.to_be_bytes()[..]);
            by_time.insert(time_key(now, id), &[][..]);
        }
        self.seen
            .apply_batch(seen)
            .map_err(self.storage("writing"))?;
        self.by_time
            .apply_batch(by_time)
            .map_err(self.storage("writing"))
    }

    /// Makes every mark so far durable.
    pub fn flush(&self) -> Result<(), SeenSetError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(self.storage("flushing"))
    }

    /// Forgets ids older than the horizon; returns how many.
    pub fn prune(&self) -> Result<u64, SeenSetError> {
        let cutoff = now_us().saturating_sub(self.horizon.as_micros() as u64);
        let mut removed = 0;
        for entry in self.by_time.range(..cutoff.to_be_bytes().to_vec()) {
            let (key, _) = entry.map_err(self.storage("pruning"))?;
            if key.len() > 8 {
                // Only if not marked again since (a newer time is in `seen`, and its own
                // `by_time` entry prunes it later).
                let (at, id) = key.split_at(8);
                let forgotten = self
                    .seen
                    .compare_and_swap(id, Some(at), None as Option<&[u8]>)
                    .map_err(self.storage("pruning"))?;
                removed += u64::from(forgotten.is_ok());
            }
            self.by_time.remove(&key).map_err(self.storage("pruning"))?;
        }
        Ok(removed)
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn time_key(at: u64, event_id: &str) -> Vec<u8> {
    let mut key = at.to_be_bytes().to_vec();
    key.extend_from_slice(event_id.as_bytes());
    key
}

fn now_us() -> u64 {
    crate::event::now_us().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_reopen_and_forgets_after_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        {
            let set = SeenSet::open(dir.path(), Duration::from_secs(3600)).unwrap();
            assert!(!set.contains("a").unwrap());
            set.mark_all(["a"]).unwrap();
            set.mark_all(["a"]).unwrap();
            assert!(set.contains("a").unwrap());
            set.flush().unwrap();
        }
        let set = SeenSet::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert!(set.contains("a").unwrap());
        assert_eq!(set.len(), 1);
        assert_eq!(set.prune().unwrap(), 0);
        drop(set);

        let set = SeenSet::open(dir.path(), Duration::from_micros(1)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            !set.contains("a").unwrap(),
            "past the horizon an id counts as new"
        );
        assert_eq!(set.prune().unwrap(), 1);
        assert!(set.is_empty());
    }

    #[test]
    fn pruning_an_old_mark_keeps_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let set = SeenSet::open(dir.path(), Duration::from_millis(300)).unwrap();
        set.mark_all(["a"]).unwrap();
        std::thread::sleep(Duration::from_millis(350));
        set.mark_all(["a"]).unwrap();
        assert_eq!(
            set.prune().unwrap(),
            0,
            "the first mark's time entry goes, the id stays"
        );
        assert!(set.contains("a").unwrap(), "the second mark still counts");
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_corrupt_seen_set_is_moved_aside_and_an_empty_one_starts() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dedupe");
        let set = SeenSet::open(&dir, Duration::from_secs(60)).unwrap();
        set.mark_all(["a", "b"]).unwrap();
        set.db.flush().unwrap();
        drop(set);
        // What sled answered in CI after a kill -9 during start-up ("Read corrupted data at
        // file offset None"); sled's own recovery cannot be made to fail on demand.
        let first = std::cell::Cell::new(true);
        let corrupt_once = |dir: &Path, horizon: Duration| {
            if first.replace(false) {
                return Err(SeenSetError::Storage {
                    dir: dir.to_path_buf(),
                    doing: "opening",
                    source: sled::Error::Corruption { at: None, bt: () },
                });
            }
            SeenSet::open_db(dir, horizon)
        };
        let set = SeenSet::open_with(&dir, Duration::from_secs(60), corrupt_once).unwrap();
        assert!(set.is_empty(), "a fresh seen-set");
        assert!(!set.contains("a").unwrap());
        let aside: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("dedupe.corrupt-"))
            .collect();
        assert_eq!(
            aside.len(),
            1,
            "the corrupt store is kept aside for a post-mortem"
        );
    }
}
