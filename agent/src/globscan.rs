//! Glob expansion that is not repeated while the directory it lists has not changed.
//!
//! The file source expands its globs every poll to find new, rotated and deleted files.
//! With thousands of matching files that is a directory listing plus one `stat` per file
//! per second, most of the agent's idle CPU. A directory's modification time changes
//! whenever an entry is created, removed or renamed in it, which is every event the
//! expansion looks for, so a pattern whose wildcards are all in its last component
//! (`/var/log/*.log`) keeps its last result while its directory's (device, inode,
//! mtime, ctime) are unchanged.
//!
//! Where that is not enough, the pattern is expanded every poll as before: wildcards in
//! a directory component (`/var/log/*/app.log`), a match that is a symlink (its target
//! may be rotated in a directory not looked at), or a directory timestamp too recent to
//! trust (a change within the same timestamp tick as the listing would not move it: the
//! stamp is trusted only once it is [`SETTLE`] older than the listing). And every
//! pattern is expanded in full at least every [`FULL_SCAN_INTERVAL`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much older than the listing a directory's timestamps must be to be trusted.
const SETTLE: Duration = Duration::from_secs(1);
/// Every pattern is listed in full at least this often, whatever the directory says: a
/// safety net only (a directory's timestamps move with every entry added, removed or
/// renamed), so rare enough that 10,000 matches cost no steady CPU.
pub(crate) const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(300);

/// What identifies a directory's contents at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirStamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl DirStamp {
    fn of(dir: &Path) -> Option<DirStamp> {
        let m = std::fs::metadata(dir).ok()?;
        Some(DirStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// The last full expansion of one pattern.
struct Cached<T> {
    stamp: DirStamp,
    at: Instant,
    result: Vec<T>,
}

/// Remembers expansions per pattern; `T` is what the caller keeps per matched path.
pub(crate) struct GlobScan<T> {
    cached: HashMap<(usize, String), Cached<T>>,
}

impl<T> Default for GlobScan<T> {
    fn default() -> Self {
        GlobScan {
            cached: HashMap::new(),
        }
    }
}

/// The directory a pattern lists, when every wildcard is in its last component.
fn listed_dir(pattern: &str) -> Option<&Path> {
    let dir = Path::new(pattern).parent()?;
    let literal = !dir.to_str()?.contains(['*', '?', '[', ']', '{', '}']);
    (literal && !dir.as_os_str().is_empty()).then_some(dir)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A full expansion's outcome, ready to be kept.
pub(crate) struct Listing<T> {
    stamp: Option<DirStamp>,
    started_ns: i128,
    /// A match was a symlink, or could not be opened: list this pattern again next poll.
    pub(crate) uncacheable: bool,
    pub(crate) result: Vec<T>,
}

impl<T> GlobScan<T> {
    /// The last result for pattern `key` when its directory has not changed since (see
    /// the module doc); `None` means: expand it now, then [`GlobScan::store`].
    pub(crate) fn unchanged(&self, key: &(usize, String)) -> Option<&[T]> {
        let c = self.cached.get(key)?;
        if c.at.elapsed() >= FULL_SCAN_INTERVAL {
            return None;
        }
        let dir = listed_dir(&key.1)?;
        (DirStamp::of(dir)? == c.stamp).then_some(c.result.as_slice())
    }

    /// Starts a full expansion of `pattern`: the directory is stamped before it is
    /// listed, so a change during the listing shows as a different stamp next time.
    pub(crate) fn begin(pattern: &str) -> Listing<T> {
        Listing {
            stamp: listed_dir(pattern).and_then(DirStamp::of),
            started_ns: now_ns(),
            uncacheable: false,
            result: Vec::new(),
        }
    }

    /// Whether pattern `key`'s last expansion was kept (see [`GlobScan::store`]).
    pub(crate) fn is_cached(&self, key: &(usize, String)) -> bool {
        self.cached.contains_key(key)
    }

    /// Keeps a full expansion when it may be reused; forgets the pattern otherwise.
    pub(crate) fn store(&mut self, key: (usize, String), listing: Listing<T>) {
        let settled = |s: &DirStamp| {
            let limit = listing.started_ns - SETTLE.as_nanos() as i128;
            s.mtime_ns < limit && s.ctime_ns < limit
        };
        match listing.stamp {
            Some(stamp) if !listing.uncacheable && settled(&stamp) => {
                self.cached.insert(
                    key,
                    Cached {
                        stamp,
                        at: Instant::now(),
                        result: listing.result,
                    },
                );
            }
            _ => {
                self.cached.remove(&key);
            }
        }
    }
}

/// Whether `path` is a symlink (its target may change where no directory is watched).
pub(crate) fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_last_component_wildcards_are_cached() {
        assert_eq!(listed_dir("/var/log/*.log"), Some(Path::new("/var/log")));
        assert_eq!(listed_dir("/var/log/app.log"), Some(Path::new("/var/log")));
        assert_eq!(listed_dir("/var/log/*/app.log"), None);
        assert_eq!(listed_dir("/var/[ab]/x.log"), None);
        assert_eq!(listed_dir("/var/**/x.log"), None);
        assert_eq!(listed_dir("x.log"), None);
    }

    #[test]
    fn a_settled_unchanged_directory_reuses_the_result_and_any_change_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), "x").unwrap();
        let pattern = format!("{}/*.log", dir.path().display());
        let key = (0, pattern.clone());
        let mut scan: GlobScan<u32> = GlobScan::default();
        assert!(scan.unchanged(&key).is_none(), "nothing listed yet");
        // The directory just changed: wait until its stamp is settled.
        std::thread::sleep(SETTLE + Duration::from_millis(50));
        let mut listing = GlobScan::begin(&pattern);
        listing.result.push(7);
        scan.store(key.clone(), listing);
        assert_eq!(scan.unchanged(&key), Some(&[7][..]));
        // A new file changes the directory: list again.
        std::fs::write(dir.path().join("b.log"), "y").unwrap();
        assert!(scan.unchanged(&key).is_none());
        // A fresh stamp (just changed) is not kept.
        let listing = GlobScan::begin(&pattern);
        scan.store(key.clone(), listing);
        assert!(scan.unchanged(&key).is_none());
        // A symlink among the matches is never cached.
        std::thread::sleep(SETTLE + Duration::from_millis(50));
        let mut listing = GlobScan::begin(&pattern);
        listing.uncacheable = true;
        scan.store(key.clone(), listing);
        assert!(scan.unchanged(&key).is_none());
    }
}
