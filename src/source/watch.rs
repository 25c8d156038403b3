//! Filtered, debounced file-system notifications with a cheap safety poll: the one watch
//! behind the config file origin, TLS certificate and key files, and `stunnerd cds-server`.
//!
//! * Notifications come from `notify` (inotify on Linux) on the *directories* holding the
//!   followed paths, non-recursively: that is what sees a Kubernetes ConfigMap `..data`
//!   symlink swap, an editor renaming a new file over the old, and a file created again
//!   after a delete.
//! * Access events (open, read, close without a write) are dropped in the notify thread:
//!   reading a file must not look like a change of it, or a watcher that re-reads on every
//!   event triggers itself forever. So are events about other files of a watched directory
//!   (`/etc` or `/tmp` are busy): for a followed file only events naming the file itself or
//!   a symlink on its way to its content in the same directory (a ConfigMap's `..data`)
//!   count; for a followed directory, every entry counts.
//! * A burst of events (a rename or a symlink swap is several) is coalesced into one wakeup:
//!   [`Watch::changed`] returns [`DEBOUNCE`] after the first event of a burst.
//! * The safety poll, for changes no notification reports (a file system that does not
//!   notify, an in-place write below a watched directory), only stats: one `statx` per
//!   followed path (and per entry of a followed directory) every [`SAFETY_POLL`], the file
//!   is read only when its identity, size or times moved. Without notifications the poll
//!   runs every [`FALLBACK_POLL`] instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

/// Wait after the first event of a burst before reporting it.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// The safety poll period while notifications work.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);
/// The poll period when notifications are unavailable.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// What the safety poll compares: identity, size and times of a path (symlinks followed),
/// and of the entries of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
    entries: Vec<(PathBuf, u64, u64, Option<SystemTime>)>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let mut entries = Vec::new();
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                if let Ok(em) = e.metadata() {
                    entries.push((e.path(), em.ino(), em.len(), em.modified().ok()));
                }
            }
        }
        entries.sort();
    }
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
        ctime: (m.ctime(), m.ctime_nsec()),
        entries,
    })
}

/// Whether a notification can mean a change: everything but reads, opens and closes of
/// files opened read-only.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directory whose notifications cover `path`: the path itself for a directory, else
/// its parent.
fn watch_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Which event paths count: exact paths (followed files and the symlinks leading to their
/// content) and every entry of followed directories.
#[derive(Debug, Default)]
struct Relevant {
    paths: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Relevant {
    fn matches(&self, p: &Path) -> bool {
        self.paths.contains(p)
            || self.dirs.contains(p)
            || p.parent().is_some_and(|d| self.dirs.contains(d))
    }

    /// Add `path` (as its events will name it: its watched directory joined with its name),
    /// and the symlinks in that directory that its content is reached through.
    fn add(&mut self, path: &Path) {
        if path.is_dir() {
            self.dirs.insert(path.to_path_buf());
            return;
        }
        let dir = watch_dir(path);
        let Some(name) = path.file_name() else {
            return;
        };
        let mut cur = dir.join(name);
        // Bounded: a symlink loop ends here too.
        for _ in 0..8 {
            self.paths.insert(cur.clone());
            let Ok(target) = std::fs::read_link(&cur) else {
                break;
            };
            match target.components().next() {
                Some(Component::Normal(first)) => cur = dir.join(first),
                // Absolute or `../`: outside the watched directory; the poll covers it.
                _ => break,
            }
        }
    }
}

/// A watch over a set of paths; see the module doc.
pub struct Watch {
    /// Log target of the owner (`config-file-client`, `cds-server`, ...).
    target: &'static str,
    watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<()>,
    relevant: Arc<Mutex<Relevant>>,
    dirs: BTreeSet<PathBuf>,
    stamps: BTreeMap<PathBuf, Option<Stamp>>,
}

impl Watch {
    /// A watch following nothing yet; `target` names the owner in log lines.
    pub fn new(target: &'static str) -> Watch {
        let (tx, rx) = mpsc::channel::<()>(1);
        let relevant = Arc::new(Mutex::new(Relevant::default()));
        let filter = Arc::clone(&relevant);
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else {
                return;
            };
            let wanted = || {
                let r = filter.lock().unwrap_or_else(PoisonError::into_inner);
                // No path: the backend lost track (queue overflow); re-read to be safe.
                ev.paths.is_empty() || ev.paths.iter().any(|p| r.matches(p))
            };
            if is_change(&ev.kind) && wanted() {
                // Full means a wakeup is already pending: it covers this event too.
                let _ = tx.try_send(());
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(target: "watch", "{target}: file notifications unavailable ({e}); polling every {}s", FALLBACK_POLL.as_secs());
                None
            }
        };
        Watch {
            target,
            watcher,
            rx,
            relevant,
            dirs: BTreeSet::new(),
            stamps: BTreeMap::new(),
        }
    }

    /// Follow exactly `paths` (files or directories) from now on, and take the poll's
    /// reference stamps. Call again after reading, so the poll compares with what was read.
    pub fn follow<I: IntoIterator<Item = PathBuf>>(&mut self, paths: I) {
        let paths: BTreeSet<PathBuf> = paths.into_iter().collect();
        let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| watch_dir(p)).collect();
        let mut relevant = Relevant::default();
        for p in &paths {
            relevant.add(p);
        }
        *self.relevant.lock().unwrap_or_else(PoisonError::into_inner) = relevant;
        if let Some(w) = &mut self.watcher {
            for gone in self.dirs.difference(&dirs) {
                let _ = w.unwatch(gone);
            }
            for new in dirs.difference(&self.dirs) {
                if let Err(e) = w.watch(new, RecursiveMode::NonRecursive) {
                    warn!(target: "watch", "{}: cannot watch {} ({e}); the {}s poll covers it", self.target, new.display(), SAFETY_POLL.as_secs());
                }
            }
        }
        self.dirs = dirs;
        self.stamps = paths.into_iter().map(|p| (p.clone(), stamp(&p))).collect();
    }

    /// Whether notifications work (else only the poll runs).
    pub fn notifies(&self) -> bool {
        self.watcher.is_some()
    }

    /// Wait until something under the followed paths may have changed: a notification
    /// (debounced) or a poll that found a stamp moved. Cancel-safe.
    pub async fn changed(&mut self) {
        let period = if self.watcher.is_some() {
            SAFETY_POLL
        } else {
            FALLBACK_POLL
        };
        loop {
            tokio::select! {
                got = self.rx.recv() => {
                    if got.is_none() {
                        // The notify thread is gone: poll from now on.
                        self.watcher = None;
                        tokio::time::sleep(FALLBACK_POLL).await;
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while self.rx.try_recv().is_ok() {}
                    return;
                }
                _ = tokio::time::sleep(period) => {
                    let moved = self.stamps.iter().any(|(p, s)| stamp(p) != *s);
                    if moved {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_events_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }

    #[test]
    fn stamps_see_rewrites_and_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let link = dir.path().join("link");
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let s1 = stamp(&link).unwrap();
        assert_eq!(stamp(&link), Some(s1.clone()), "stable while nothing moves");
        let tmp = dir.path().join("tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert_ne!(stamp(&link), Some(s1));
        let d1 = stamp(dir.path()).unwrap();
        std::fs::write(&a, "longer text").unwrap();
        assert_ne!(stamp(dir.path()), Some(d1), "an entry grew");
        assert_eq!(stamp(&dir.path().join("missing")), None);
    }

    #[test]
    fn relevant_paths_follow_configmap_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/c.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/c.yaml", d.join("c.yaml")).unwrap();
        std::fs::write(d.join("other"), "y").unwrap();
        let mut r = Relevant::default();
        r.add(&d.join("c.yaml"));
        assert!(r.matches(&d.join("c.yaml")));
        assert!(r.matches(&d.join("..data")));
        assert!(r.matches(&d.join("..v1")));
        assert!(!r.matches(&d.join("other")));
        assert!(!r.matches(&d.join("..data_tmp")));
        let mut r = Relevant::default();
        r.add(d);
        assert!(r.matches(&d.join("other")));
    }

    #[tokio::test]
    async fn reading_a_followed_file_does_not_wake_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "x").unwrap();
        let mut w = Watch::new("test");
        assert!(w.notifies());
        w.follow([f.clone()]);
        for _ in 0..5 {
            let _ = std::fs::read_to_string(&f).unwrap();
        }
        std::fs::write(dir.path().join("neighbour"), "n").unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(400), w.changed()).await;
        assert!(woke.is_err(), "reads or a neighbour woke the watch");
        std::fs::write(&f, "y").unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(2), w.changed()).await;
        assert!(woke.is_ok(), "a write did not wake the watch");
    }
}
