//! Gives the start-up code's pages back once the agent is running.
//!
//! Most of an idle agent's resident memory is its own code, and much of that is code that
//! ran once: argument and configuration parsing, regex compilation, TLS set-up, the first
//! connection. Left alone, it stays mapped for the life of the process, and the kernel
//! keeps it: it maps code in 64 KiB windows around every page touched (fault-around),
//! reads ahead on every fault, and protects mapped executable pages from reclaim. The Linux
//! kernel frees its own `__init` sections after boot for the same reason; a program cannot
//! free its code, but it can drop its mappings of it and the cached copies nothing else
//! maps. So, once, after start-up:
//!
//! 1. the executable's read-only mappings are marked `MADV_RANDOM` (no read-ahead on
//!    their faults from then on: a page comes in when it runs, not its neighbours);
//! 2. their pages are reclaimed where only this process maps them (`MADV_PAGEOUT`, which
//!    also splits the large page-cache folios a freshly written binary is cached in) and
//!    dropped from the page tables (`MADV_DONTNEED`); these are private mappings of the
//!    file that were never written, so nothing is lost: the next access maps the same
//!    bytes again;
//! 3. the executable's cached pages that no process maps any more leave the page cache
//!    (`POSIX_FADV_DONTNEED`; pages another process maps stay).
//!
//! What comes back is the code the agent keeps running, a page at a time: each such page
//! is read from the binary once more in the seconds after the release.

use std::os::unix::fs::MetadataExt;

/// How long after start-up the pages are released: long enough for the first host-metrics
/// cycle, the first export and the first file scan to have run.
pub(crate) const RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// One mapping from `/proc/self/smaps` that may be released.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// Releases the resident pages of this executable's read-only mappings; returns the KiB
/// that were resident in them.
pub(crate) fn release() -> std::io::Result<u64> {
    let mut released = 0;
    for m in own_code()? {
        // MADV_PAGEOUT is best effort: kernels before 5.4 refuse it, and dropping the
        // mappings still helps there.
        for (advice, required) in [
            (rustix::mm::Advice::Random, true),
            (rustix::mm::Advice::LinuxPageOut, false),
            (rustix::mm::Advice::LinuxDontNeed, true),
        ] {
            // SAFETY: `m` is a private, read-only mapping of this executable's file with
            // no anonymous (copied-on-write) page, so its contents are exactly the file's
            // bytes and cannot change while mapped. MADV_RANDOM only changes read-ahead;
            // MADV_PAGEOUT and MADV_DONTNEED only drop clean pages and page-table
            // entries, and the next access maps the same bytes from the file again. No
            // Rust object lives in such a mapping except immutable code and constants.
            #[allow(unsafe_code)]
            let r = unsafe {
                rustix::mm::madvise(m.start as *mut std::ffi::c_void, m.end - m.start, advice)
            };
            if required {
                r.map_err(std::io::Error::from)?;
            }
        }
        released += m.rss_kib;
    }
    // Only clean pages no process maps leave the cache; the kernel skips the rest. A
    // binary copied in moments before the start may still be dirty: written back first.
    let file = std::fs::File::open("/proc/self/exe")?;
    file.sync_data()?;
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(std::io::Error::from)?;
    Ok(released)
}

/// This executable's releasable mappings, as `/proc/self/smaps` shows them now.
fn own_code() -> std::io::Result<Vec<Mapping>> {
    let exe = std::fs::metadata("/proc/self/exe")?;
    let dev = (
        u64::from(rustix::fs::major(exe.dev())),
        u64::from(rustix::fs::minor(exe.dev())),
    );
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    Ok(releasable(&smaps, dev, exe.ino()))
}

/// Releases the pages after [`RELEASE_AFTER`] and logs how much was resident.
pub(crate) async fn release_later(cancel: tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(RELEASE_AFTER) => {}
    }
    match tokio::task::spawn_blocking(release).await {
        Ok(Ok(kib)) => tracing::debug!(resident_kib = kib, "released start-up code pages"),
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot release start-up code pages"),
        Err(e) => tracing::debug!(error = %e, "start-up page release did not run"),
    }
}

/// The mappings of the file `(major, minor, inode)` that are private, not writable, have
/// resident pages and no anonymous ones (a page written by the dynamic linker's
/// relocations, or a debugger's breakpoint, makes the whole mapping ineligible).
fn releasable(smaps: &str, dev: (u64, u64), inode: u64) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let finish = |c: Option<(Mapping, bool)>, out: &mut Vec<Mapping>| {
        if let Some((m, true)) = c
            && m.rss_kib > 0
        {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        if let Some(h) = parse_header(line) {
            finish(current.take(), &mut out);
            let eligible = h.inode == inode
                && h.dev == dev
                && h.perms.as_bytes().get(1) == Some(&b'-')
                && h.perms.as_bytes().get(3) == Some(&b'p');
            current = Some((
                Mapping {
                    start: h.start,
                    end: h.end,
                    rss_kib: 0,
                },
                eligible,
            ));
            continue;
        }
        let Some((m, eligible)) = current.as_mut() else {
            continue;
        };
        if let Some(v) = field_kib(line, "Rss:") {
            m.rss_kib = v;
        } else if let Some(v) = field_kib(line, "Anonymous:")
            && v > 0
        {
            *eligible = false;
        }
    }
    finish(current.take(), &mut out);
    out
}

/// A mapping's header line: `start-end perms offset major:minor inode [path]`.
struct Header<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    dev: (u64, u64),
    inode: u64,
}

/// The header of a mapping, or `None` for a field line.
fn parse_header(line: &str) -> Option<Header<'_>> {
    let mut parts = line.split_ascii_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?;
    let _offset = parts.next()?;
    let (major, minor) = parts.next()?.split_once(':')?;
    let dev = (
        u64::from_str_radix(major, 16).ok()?,
        u64::from_str_radix(minor, 16).ok()?,
    );
    let inode = parts.next()?.parse().ok()?;
    Some(Header {
        start,
        end,
        perms,
        dev,
        inode,
    })
}

/// The value of a `Name:   123 kB` line.
fn field_kib(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
555616843000-555616a9b000 r--p 00000000 fe:00 10019762                   /usr/bin/vantage-agent
Size:               2400 kB
Rss:                1256 kB
Anonymous:             0 kB
555616a9b000-55561735f000 r-xp 00257000 fe:00 10019762                   /usr/bin/vantage-agent
Size:               8976 kB
Rss:                6784 kB
Anonymous:             0 kB
55561735f000-5556173b1000 r--p 00b1a000 fe:00 10019762                   /usr/bin/vantage-agent
Size:                328 kB
Rss:                 328 kB
Anonymous:           320 kB
5556173b1000-5556173b6000 rw-p 00b6b000 fe:00 10019762                   /usr/bin/vantage-agent
Size:                 20 kB
Rss:                  20 kB
Anonymous:            20 kB
7f0000000000-7f0000100000 r-xp 00028000 fe:00 555                        /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1024 kB
Rss:                 984 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 fe:01 10019762                   /other/device/same/inode
Size:               1024 kB
Rss:                 500 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r--s 00000000 fe:00 10019762                   /usr/bin/vantage-agent
Rss:                 100 kB
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 116 kB
Anonymous:           116 kB
";

    #[test]
    fn only_clean_read_only_private_mappings_of_the_executable() {
        let got = releasable(SMAPS, (0xfe, 0), 10019762);
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x555616843000,
                    end: 0x555616a9b000,
                    rss_kib: 1256
                },
                Mapping {
                    start: 0x555616a9b000,
                    end: 0x55561735f000,
                    rss_kib: 6784
                },
            ]
        );
    }

    #[test]
    fn nothing_for_another_file_or_garbage() {
        assert!(releasable(SMAPS, (0xfe, 0), 42).is_empty());
        assert!(releasable("", (0xfe, 0), 10019762).is_empty());
        assert!(releasable("not smaps\nRss: 12 kB\n\u{0}\u{ff}", (0, 0), 0).is_empty());
        // A mapping whose Anonymous line is missing or unparsable is still judged by the rest.
        let cut = "1000-2000 r-xp 0 fe:00 7 /x\nRss: 4 kB\nAnonymous: lots\n";
        assert_eq!(releasable(cut, (0xfe, 0), 7).len(), 1);
    }

    #[test]
    fn resident_code_of_this_test_binary_is_released_and_still_runs() {
        let released = release().expect("release");
        assert!(released > 0, "the test binary's code was resident");
        // Code released a moment ago runs again (reading and parsing the maps once more),
        // and only what it touched is resident again.
        let after = resident_exe_kib();
        assert!(
            after < released,
            "{after} KiB resident after releasing {released} KiB"
        );
    }

    fn resident_exe_kib() -> u64 {
        own_code().unwrap().iter().map(|m| m.rss_kib).sum()
    }
}
