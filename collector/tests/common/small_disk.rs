//! A small disk of a test's own: a tmpfs in a mount namespace that a helper process
//! holds (root only). Shared by the collector's and the agent's test harnesses.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the helper may take to mount its tmpfs on a loaded machine.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// `program` run inside the mount namespace of process `holder` (`nsenter` execs it, so
/// the child is the program itself: its pid, its signals).
pub(crate) fn in_namespace_of(holder: u32, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &holder.to_string(), "-m"]).arg(program);
    c
}

/// A tmpfs of a fixed size on a directory, in a mount namespace of its own that a helper
/// process (`unshare`, root only) holds: filling it touches nothing else, it outlives
/// the collectors started on it (so one can restart on a full disk), and it vanishes
/// when dropped. Seen from outside, the directory stays empty.
pub(crate) struct SmallDisk {
    holder: Child,
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`24m`) on `dir`.
    pub(crate) fn mount(dir: &Path, size: &str) -> SmallDisk {
        let holder = Command::new("unshare")
            .args(["--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$1" tmpfs "$2" && exec sleep infinity"#)
            .args(["sh", size])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare (the small-disk tests need root)");
        let disk = SmallDisk {
            holder,
            dir: dir.to_path_buf(),
        };
        let mount_point = format!(" {} ", dir.display());
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !std::fs::read_to_string(format!("/proc/{}/mountinfo", disk.holder.id()))
            .is_ok_and(|m| m.contains(&mount_point))
        {
            assert!(
                Instant::now() < deadline,
                "the tmpfs on {} was not mounted",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        disk
    }

    /// Changes its size (`512m`): room again, as when an operator grows a volume.
    pub(crate) fn resize(&self, size: &str) {
        let status = self
            .in_namespace("mount")
            .arg("-o")
            .arg(format!("remount,size={size}"))
            .arg(&self.dir)
            .status()
            .expect("run nsenter");
        assert!(status.success(), "remount failed: {status:?}");
    }

    /// Fills what is left of it with a file, as another writer on a shared disk would.
    pub(crate) fn fill(&self) {
        // `cat` stops at ENOSPC, which is the point.
        let _ = self
            .in_namespace("sh")
            .arg("-c")
            .arg(r#"cat /dev/zero > "$1/filler""#)
            .args(["sh"])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .expect("run nsenter");
    }

    /// `program` to run inside its mount namespace, where the directory is the tmpfs.
    pub(crate) fn in_namespace(&self, program: impl AsRef<OsStr>) -> Command {
        in_namespace_of(self.holder_pid(), program)
    }

    /// The process holding the namespace.
    pub(crate) fn holder_pid(&self) -> u32 {
        self.holder.id()
    }

    /// Deletes what [`SmallDisk::fill`] wrote: room again, as when an operator cleans up.
    pub(crate) fn empty_filler(&self) {
        let status = self
            .in_namespace("rm")
            .arg("-f")
            .arg(self.dir.join("filler"))
            .status()
            .expect("run nsenter");
        assert!(status.success(), "rm failed: {status:?}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
