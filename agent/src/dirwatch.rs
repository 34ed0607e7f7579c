//! Directory watches (inotify) that tell the file source which quiet files changed, so
//! that thousands of matching files that never grow cost no `fstat` each per poll.
//!
//! One watch per directory holding tailed files covers every file in it. A drain, at
//! the start of each poll, returns the paths named by events since the last one; only
//! those quiet files are looked at (the rest are swept in full every
//! [`SWEEP_INTERVAL`], as a safety net). Where events can be missed, the old polling
//! stays: a file reached through a symlink or with more than one hard link (a write
//! through the other name reports to the other directory), a directory that could not
//! be watched (no inotify, `max_user_watches` reached), and everything after a queue
//! overflow or a lost watch (one full sweep, then events again), and a directory on a
//! network or user-space file system (NFS, SMB, FUSE, Ceph, …: a write from another
//! host or from the server never raises an event here). Writes the kernel does not
//! report on a local file system (through `mmap`) are seen by the sweep.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// Every quiet file in a watched directory is looked at this often anyway. Five minutes,
/// not one: watched directories are local (remote file systems are polled), where only an
/// `mmap` write goes unreported, and each sweep costs one `fstat` per tracked file.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// `statfs` magic numbers of file systems whose files can change without an inotify
/// event on this host: their directories are never watched, their files are polled.
const UNREPORTED_FS_MAGIC: &[u64] = &[
    0x6969,      // NFS
    0x517B,      // SMB
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE (sshfs, GlusterFS, s3fs, …)
    0x00C3_6400, // Ceph
    0x5346_414F, // AFS
    0x0102_1997, // 9P
    0x0BD0_0BD0, // Lustre
    0x4750_4653, // GPFS
];

/// Whether a file system of this `statfs` type reports every change through inotify.
fn events_cover(f_type: u64) -> bool {
    !UNREPORTED_FS_MAGIC.contains(&(f_type & 0xFFFF_FFFF))
}
/// Events read per `read` call (a few hundred events).
const EVENT_BUFFER: usize = 16 * 1024;
/// Distinct changed paths kept per drain; past this a drain asks for a sweep instead of
/// growing (a directory of busy files being rewritten wholesale).
const MAX_CHANGED: usize = 4096;

/// The events a drain found.
#[derive(Default)]
pub(crate) struct Changes {
    /// Paths (watched directory + name) that were written, created or touched.
    pub(crate) paths: HashSet<PathBuf>,
    /// Events were lost (queue overflow, a watch removed or moved): look at every file,
    /// and re-check which directories are still watched.
    pub(crate) resync: bool,
}

/// The inotify instance and its directory watches.
pub(crate) struct DirWatch {
    fd: OwnedFd,
    by_dir: HashMap<PathBuf, i32>,
    by_wd: HashMap<i32, PathBuf>,
    buf: Vec<MaybeUninit<u8>>,
}

impl DirWatch {
    /// A new inotify instance; `None` (polling only) where the kernel refuses one.
    pub(crate) fn new() -> Option<DirWatch> {
        match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => Some(DirWatch {
                fd,
                by_dir: HashMap::new(),
                by_wd: HashMap::new(),
                buf: Vec::new(),
            }),
            Err(e) => {
                tracing::info!(error = %e, "inotify unavailable; quiet files are polled");
                None
            }
        }
    }

    /// Watches `dir` (once); false when it cannot be watched (its files are polled).
    pub(crate) fn watch(&mut self, dir: &Path) -> bool {
        if self.by_dir.contains_key(dir) {
            return true;
        }
        match rustix::fs::statfs(dir) {
            // `f_type` is a signed word on some targets: the magic is its low 32 bits.
            Ok(fs) if !events_cover(fs.f_type as u64) => {
                tracing::info!(dir = %dir.display(), "network or user-space file system; its quiet files are polled");
                return false;
            }
            _ => {}
        }
        let mask = WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        match inotify::add_watch(&self.fd, dir, mask) {
            Ok(wd) => {
                // Two paths to one directory (a bind mount, a symlinked parent) share a
                // descriptor: keep the first path, poll the files under the second.
                if self.by_wd.contains_key(&wd) {
                    return false;
                }
                self.by_dir.insert(dir.to_path_buf(), wd);
                self.by_wd.insert(wd, dir.to_path_buf());
                true
            }
            Err(e) => {
                tracing::info!(dir = %dir.display(), error = %e, "cannot watch directory; its quiet files are polled");
                false
            }
        }
    }

    /// Whether `dir` is watched now (a resync re-checks every file's directory).
    pub(crate) fn is_watched(&self, dir: &Path) -> bool {
        self.by_dir.contains_key(dir)
    }

    /// Reads every pending event without blocking.
    pub(crate) fn drain(&mut self) -> Changes {
        let mut changes = Changes::default();
        if self.buf.is_empty() {
            self.buf = vec![MaybeUninit::uninit(); EVENT_BUFFER];
        }
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "inotify read failed; sweeping every file");
                    changes.resync = true;
                    break;
                }
            };
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                changes.resync = true;
                continue;
            }
            let wd = event.wd();
            if flags.intersects(ReadFlags::IGNORED | ReadFlags::MOVE_SELF) {
                // The directory is gone, unmounted or moved: its path no longer names
                // it. Forget it; its files fall back to polling at the resync.
                if let Some(dir) = self.by_wd.remove(&wd) {
                    self.by_dir.remove(&dir);
                    if !flags.contains(ReadFlags::IGNORED) {
                        let _ = inotify::remove_watch(&self.fd, wd);
                    }
                }
                changes.resync = true;
                continue;
            }
            let (Some(dir), Some(name)) = (self.by_wd.get(&wd), event.file_name()) else {
                continue;
            };
            if changes.paths.len() >= MAX_CHANGED {
                changes.resync = true;
                continue;
            }
            changes
                .paths
                .insert(dir.join(OsStr::from_bytes(name.to_bytes())));
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_write_names_the_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "1\n").unwrap();
        let mut w = DirWatch::new().expect("inotify");
        assert!(w.watch(dir.path()));
        assert!(
            w.watch(dir.path()),
            "a second watch of the same directory is fine"
        );
        assert!(w.drain().paths.is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&a)
            .unwrap()
            .write_all(b"2\n")
            .unwrap();
        let changes = w.drain();
        assert!(!changes.resync);
        assert_eq!(changes.paths, HashSet::from([a.clone()]));
        assert!(w.drain().paths.is_empty(), "a drain consumes the events");
        // Truncation is a modification too (copytruncate).
        std::fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(w.drain().paths, HashSet::from([b]));
    }

    #[test]
    fn a_removed_directory_asks_for_a_resync_and_is_no_longer_watched() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        let mut w = DirWatch::new().expect("inotify");
        assert!(w.watch(&dir));
        std::fs::remove_dir(&dir).unwrap();
        let changes = w.drain();
        assert!(changes.resync);
        assert!(!w.is_watched(&dir));
        // A moved directory: its old path no longer leads to it.
        std::fs::create_dir(&dir).unwrap();
        assert!(w.watch(&dir));
        std::fs::rename(&dir, root.path().join("moved")).unwrap();
        assert!(w.drain().resync);
        assert!(!w.is_watched(&dir));
    }

    #[test]
    fn only_file_systems_that_report_every_change_are_watched() {
        for local in [0xEF53, 0x0102_1994, 0x5846_5342, 0x9123_683E, 0x794C_7630] {
            assert!(
                events_cover(local),
                "{local:#x} (ext4, tmpfs, xfs, btrfs, overlay)"
            );
        }
        for remote in [0x6969, 0xFF53_4D42, 0xFE53_4D42, 0x6573_5546, 0x00C3_6400] {
            assert!(
                !events_cover(remote),
                "{remote:#x} (NFS, CIFS, SMB2, FUSE, Ceph)"
            );
        }
        // A signed 32-bit word sign-extended to 64 bits is still recognised.
        assert!(!events_cover(0xFFFF_FFFF_FF53_4D42));
    }

    #[test]
    fn a_missing_directory_is_not_watched() {
        let root = tempfile::tempdir().unwrap();
        let mut w = DirWatch::new().expect("inotify");
        assert!(!w.watch(&root.path().join("absent")));
        assert!(!w.is_watched(&root.path().join("absent")));
    }
}
