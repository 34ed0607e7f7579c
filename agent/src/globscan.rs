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
use std::path::{Path, PathBuf};
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

/// A regular file a pattern matched.
pub(crate) struct Match {
    pub(crate) path: PathBuf,
    /// (device, inode) of the file (of its target, for a symlink).
    pub(crate) key: (u64, u64),
    /// The path is a symlink (its target may change where no directory is watched).
    pub(crate) symlink: bool,
    /// The file's metadata; `None` when the caller already tracks `key` at `path`, which
    /// the directory listing alone showed, without a `stat`.
    pub(crate) meta: Option<std::fs::Metadata>,
}

/// Expands `pattern` to the regular files it matches, in path order, leaving out paths
/// `excluded` names. A file the caller already tracks at the same path
/// (`tracked(key, path)`) costs no `stat`: with wildcards only in the last component, the
/// directory listing's inode numbers identify it. That is what keeps the periodic full
/// expansion of 10,000 quiet files cheap: one listing instead of 20,000 `stat`s. A
/// listed inode that is not tracked at that path (a new or replaced file, or a
/// filesystem whose listing numbers differ from `stat`'s, such as some overlayfs set-ups)
/// is `stat`ed, so the result is always what `stat` says. `None`: the pattern is invalid.
pub(crate) fn expand(
    pattern: &str,
    excluded: impl Fn(&Path) -> bool,
    tracked: impl Fn((u64, u64), &Path) -> bool,
) -> Option<Vec<Match>> {
    if let Some((dir, name)) = listed_dir(pattern).zip(last_component_wildcard(pattern)) {
        let name = glob::Pattern::new(name).ok()?;
        return Some(expand_listing(dir, &name, excluded, tracked));
    }
    expand_glob(pattern, excluded)
}

/// Any pattern, through `glob`: one `lstat` per matched path (two for a symlink).
fn expand_glob(pattern: &str, excluded: impl Fn(&Path) -> bool) -> Option<Vec<Match>> {
    let mut out = Vec::new();
    for path in glob::glob(pattern).ok()?.flatten() {
        if excluded(&path) {
            continue;
        }
        if let Some(m) = stat_match(path) {
            out.push(m);
        }
    }
    Some(out)
}

/// The last component when it has a wildcard (a single-level one: `**` recurses, which
/// only `glob` does).
fn last_component_wildcard(pattern: &str) -> Option<&str> {
    let name = Path::new(pattern).file_name()?.to_str()?;
    (name.contains(['*', '?', '[']) && !name.contains("**")).then_some(name)
}

fn expand_listing(
    dir: &Path,
    name: &glob::Pattern,
    excluded: impl Fn(&Path) -> bool,
    tracked: impl Fn((u64, u64), &Path) -> bool,
) -> Vec<Match> {
    use std::os::unix::fs::DirEntryExt as _;
    let Ok(dir_meta) = std::fs::metadata(dir) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut listed: Vec<(PathBuf, u64, Option<std::fs::FileType>)> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| name.matches(n)))
        .map(|e| (e.path(), e.ino(), e.file_type().ok()))
        .collect();
    listed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(listed.len());
    for (path, ino, file_type) in listed {
        if excluded(&path) {
            continue;
        }
        let key = (dir_meta.dev(), ino);
        if file_type.is_some_and(|t| t.is_file()) && tracked(key, &path) {
            out.push(Match {
                path,
                key,
                symlink: false,
                meta: None,
            });
            continue;
        }
        if file_type.is_some_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(m) = stat_match(path) {
            out.push(m);
        }
    }
    out
}

/// `path` as a match when it is (or leads to) a regular file: one `lstat`, and a `stat`
/// more for a symlink.
fn stat_match(path: PathBuf) -> Option<Match> {
    let link = std::fs::symlink_metadata(&path).ok()?;
    let symlink = link.file_type().is_symlink();
    let meta = if symlink {
        std::fs::metadata(&path).ok()?
    } else {
        link
    };
    if !meta.is_file() {
        return None;
    }
    Some(Match {
        key: (meta.dev(), meta.ino()),
        path,
        symlink,
        meta: Some(meta),
    })
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

    fn summary(matches: &[Match]) -> Vec<(String, (u64, u64), bool, bool)> {
        matches
            .iter()
            .map(|m| {
                let name = m.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, m.key, m.symlink, m.meta.is_some())
            })
            .collect()
    }

    fn key_of(path: &Path) -> (u64, u64) {
        let m = std::fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn the_listing_finds_what_glob_finds_and_stats_only_untracked_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let other = root.path().join("elsewhere");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(other.join("target.log")).ok();
        std::fs::write(other.join("real.log"), "r").unwrap();
        for name in [
            "b.log",
            "a.log",
            ".hidden.log",
            "c.txt",
            "skip.log",
            "[x].log",
        ] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        std::fs::create_dir(dir.join("sub.log")).unwrap();
        std::os::unix::fs::symlink(other.join("real.log"), dir.join("link.log")).unwrap();
        std::os::unix::fs::symlink(other.join("gone.log"), dir.join("dangling.log")).unwrap();
        std::os::unix::fs::symlink(other.join("target.log"), dir.join("dirlink.log")).unwrap();
        let pattern = format!("{}/*.log", dir.display());
        let excluded = |p: &Path| p.ends_with("skip.log");

        let listed = expand(&pattern, excluded, |_, _| false).unwrap();
        let globbed = expand_glob(&pattern, excluded).unwrap();
        assert_eq!(summary(&listed), summary(&globbed));
        let names: Vec<String> = summary(&listed).into_iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            [".hidden.log", "[x].log", "a.log", "b.log", "link.log"],
            "regular files and links to them, in path order; no directory, dangling link, \
             other suffix or excluded path"
        );
        let link = listed
            .iter()
            .find(|m| m.path.ends_with("link.log"))
            .unwrap();
        assert!(link.symlink);
        assert_eq!(
            link.key,
            key_of(&other.join("real.log")),
            "the target's identity"
        );

        // A file tracked at its path costs no stat; tracked elsewhere, or a key the
        // listing cannot vouch for, is stat'ed.
        let a = (dir.join("a.log"), key_of(&dir.join("a.log")));
        let b_key = key_of(&dir.join("b.log"));
        let tracked = |key: (u64, u64), path: &Path| {
            (key == a.1 && path == a.0) || (key == b_key && path.ends_with("moved.log"))
        };
        let listed = expand(&pattern, excluded, tracked).unwrap();
        for m in &listed {
            let stat_free = m.path.ends_with("a.log");
            assert_eq!(m.meta.is_none(), stat_free, "{}", m.path.display());
        }
        assert_eq!(
            summary(&listed)
                .into_iter()
                .map(|s| s.1)
                .collect::<Vec<_>>(),
            summary(&globbed)
                .into_iter()
                .map(|s| s.1)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn patterns_the_listing_does_not_take_go_through_glob() {
        assert_eq!(last_component_wildcard("/var/log/*.log"), Some("*.log"));
        assert_eq!(
            last_component_wildcard("/var/log/app-?.log"),
            Some("app-?.log")
        );
        assert_eq!(
            last_component_wildcard("/var/log/[ab].log"),
            Some("[ab].log")
        );
        assert_eq!(last_component_wildcard("/var/log/syslog"), None);
        assert_eq!(last_component_wildcard("/var/log/**"), None);
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("x/y")).unwrap();
        std::fs::write(root.path().join("x/y/deep.log"), "d").unwrap();
        std::fs::write(root.path().join("x/top.log"), "t").unwrap();
        let found = |pattern: String| {
            let mut names: Vec<String> = expand(&pattern, |_| false, |_, _| false)
                .unwrap()
                .iter()
                .map(|m| {
                    m.path
                        .strip_prefix(root.path())
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            found(format!("{}/*/*.log", root.path().display())),
            ["x/top.log"]
        );
        assert_eq!(
            found(format!("{}/x/top.log", root.path().display())),
            ["x/top.log"]
        );
        assert_eq!(
            found(format!("{}/**/*.log", root.path().display())),
            ["x/top.log", "x/y/deep.log"]
        );
        assert!(found(format!("{}/nowhere/*.log", root.path().display())).is_empty());
        assert!(expand("/var/log/[.log", |_| false, |_, _| false).is_none());
    }
}
