//! What the end-to-end benchmarks read about a server process and its data, the same
//! way in every benchmark so their figures compare: CPU time and memory from `/proc`,
//! the machine's load and this process's open-files limit, bytes of a directory,
//! percentiles, and query-string encoding.

use std::fmt::Display;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// Kernel clock ticks per second (`getconf CLK_TCK`), for `/proc/<pid>/stat` times.
/// Asked once: samplers call this several times a second, and a process spawned per
/// sample would be CPU on the cores being measured.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: impl Display) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, secs) = parse_stat(&stat).context("bad /proc stat")?;
    Ok(secs)
}

/// The name and utime + stime in seconds of a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` line. The name is in parentheses and may hold spaces
/// and parentheses itself, so the fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let (head, after) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((name, (utime + stime) / clock_ticks()))
}

/// CPU seconds (utime + stime) of each thread of a process now: `(tid, name, seconds)`.
/// Threads that already exited are not listed; sample while they run (Tantivy's merge
/// threads come and go) to see them.
pub fn thread_cpu_seconds(pid: impl Display) -> Vec<(u64, String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (name, secs) = parse_stat(&stat)?;
            Some((tid, name.to_string(), secs))
        })
        .collect()
}

/// Sums per-thread CPU seconds by thread name with trailing digits dropped
/// (`merge_thread_3` and `merge_thread_7` are one line), largest first.
pub fn cpu_by_thread_name<'a>(
    threads: impl IntoIterator<Item = &'a (String, f64)>,
) -> Vec<(String, f64)> {
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    for (name, secs) in threads {
        let base = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        *by_name.entry(base).or_default() += secs;
    }
    let mut out: Vec<(String, f64)> = by_name.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// A `VmRSS:`/`VmHWM:`/`RssAnon:` line of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(pid: impl Display, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `/proc/loadavg`, trimmed (empty if unreadable): the machine is shared, so a report
/// records how busy the neighbours were beside its figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The soft limit of open files of this process (which its children inherit), from
/// `/proc/self/limits`: a benchmark holding a socket per simulated client checks it
/// before it starts instead of failing half-way.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Bytes of every file under `path` (0 if it does not exist).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The `q` quantile of already sorted values (nearest rank); NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Percent-encodes a query-string value.
pub fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis() {
        let ticks = clock_ticks();
        let line = "42 (merge (x) 1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let (name, secs) = parse_stat(line).unwrap();
        assert_eq!(name, "merge (x) 1");
        assert!((secs - 300.0 / ticks).abs() < 1e-9);
        assert_eq!(parse_stat("42 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parentheses"), None);
    }

    #[test]
    fn this_process_has_a_load_average_and_an_open_files_limit() {
        assert_eq!(loadavg().split_whitespace().count(), 5, "{}", loadavg());
        assert!(open_files_limit().is_some_and(|n| n > 0));
        assert!(cpu_seconds(std::process::id()).is_ok_and(|s| s >= 0.0));
        assert!(status_bytes(std::process::id(), "VmRSS:").is_some_and(|b| b > 0));
    }
}
