//! Host metrics: `system.*` metrics named, united and attributed per the OpenTelemetry
//! semantic conventions for system metrics, from `sysinfo` (mount list, load average,
//! uptime) and `/proc` where sysinfo has no figure (CPU time per mode, memory by state,
//! network drops, disk I/O, process counts).
//!
//! Counters are cumulative monotonic sums starting at boot time; usage figures are
//! non-monotonic sums; ratios and load averages are gauges. One collection reads a
//! handful of small `/proc` files and one `statvfs` per mount.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio_util::sync::CancellationToken;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use vantage_proto::otlp::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use vantage_proto::otlp::resource::v1::Resource;

use crate::queue::{DiskQueue, Kind, QueueError};
use crate::resource::{kv, kv_int};
use crate::stats::Stats;
use crate::tail::now_ns;

/// Instrumentation scope of host metrics.
const SCOPE: &str = "vantage-agent/hostmetrics";

/// Filesystem types that hold no user data (node_exporter's default exclusion list).
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "sysfs",
    "tracefs",
    "ramfs",
    "efivarfs",
];

/// Whether a filesystem type is one of [`PSEUDO_FILESYSTEMS`].
pub(crate) fn is_pseudo(fs_type: &str) -> bool {
    PSEUDO_FILESYSTEMS.contains(&fs_type)
}

/// CPU time of one CPU, in clock ticks, per mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CpuTimes {
    pub(crate) cpu: i64,
    /// user, nice, system, idle, iowait, interrupt (irq + softirq), steal.
    pub(crate) ticks: [u64; 7],
}

const CPU_MODES: [&str; 7] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "interrupt",
    "steal",
];

/// What `/proc/stat` says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcStat {
    pub(crate) cpus: Vec<CpuTimes>,
    pub(crate) procs_running: u64,
    pub(crate) procs_blocked: u64,
    pub(crate) processes_created: u64,
    pub(crate) boot_time_s: u64,
}

/// Parses `/proc/stat`; unknown or short lines are skipped.
pub(crate) fn parse_stat(text: &str) -> ProcStat {
    let mut s = ProcStat::default();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(key) = f.next() else { continue };
        let nums: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        if let Some(n) = key.strip_prefix("cpu") {
            let Ok(cpu) = n.parse::<i64>() else { continue };
            if nums.len() < 8 {
                continue;
            }
            s.cpus.push(CpuTimes {
                cpu,
                ticks: [
                    nums[0],
                    nums[1],
                    nums[2],
                    nums[3],
                    nums[4],
                    nums[5] + nums[6],
                    nums[7],
                ],
            });
            continue;
        }
        let first = nums.first().copied().unwrap_or(0);
        match key {
            "procs_running" => s.procs_running = first,
            "procs_blocked" => s.procs_blocked = first,
            "processes" => s.processes_created = first,
            "btime" => s.boot_time_s = first,
            _ => {}
        }
    }
    s
}

/// Parses `/proc/meminfo` into bytes per field.
pub(crate) fn parse_meminfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut f = rest.split_ascii_whitespace();
            let n: u64 = f.next()?.parse().ok()?;
            let mult = if f.next() == Some("kB") { 1024 } else { 1 };
            Some((key.to_string(), n.saturating_mul(mult)))
        })
        .collect()
}

/// Counters of one network interface from `/proc/net/dev`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct NetDev {
    pub(crate) name: String,
    /// bytes, packets, errors, dropped: receive then transmit.
    pub(crate) rx: [u64; 4],
    pub(crate) tx: [u64; 4],
}

/// Parses `/proc/net/dev`.
pub(crate) fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let n: Vec<u64> = rest
                .split_ascii_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if n.len() < 16 {
                return None;
            }
            Some(NetDev {
                name: name.trim().to_string(),
                rx: [n[0], n[1], n[2], n[3]],
                tx: [n[8], n[9], n[10], n[11]],
            })
        })
        .collect()
}

/// Counters of one block device from `/proc/diskstats`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DiskStat {
    pub(crate) name: String,
    pub(crate) reads: u64,
    pub(crate) read_sectors: u64,
    pub(crate) read_ms: u64,
    pub(crate) writes: u64,
    pub(crate) write_sectors: u64,
    pub(crate) write_ms: u64,
    pub(crate) io_ms: u64,
}

/// Parses `/proc/diskstats`, skipping loop and RAM devices (no real I/O).
pub(crate) fn parse_diskstats(text: &str) -> Vec<DiskStat> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let name = f[2];
            if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            Some(DiskStat {
                name: name.to_string(),
                reads: n(3),
                read_sectors: n(5),
                read_ms: n(6),
                writes: n(7),
                write_sectors: n(9),
                write_ms: n(10),
                io_ms: n(12),
            })
        })
        .collect()
}

/// Builds the metrics of one collection.
struct Builder {
    metrics: Vec<Metric>,
    now: u64,
    start: u64,
}

enum Num {
    Int(i64),
    Double(f64),
}

impl Builder {
    fn points(&self, points: Vec<(Vec<KeyValue>, Num)>, start: u64) -> Vec<NumberDataPoint> {
        points
            .into_iter()
            .map(|(attributes, v)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                value: Some(match v {
                    Num::Int(i) => number_data_point::Value::AsInt(i),
                    Num::Double(d) => number_data_point::Value::AsDouble(d),
                }),
                ..Default::default()
            })
            .collect()
    }

    fn sum(&mut self, name: &str, unit: &str, monotonic: bool, points: Vec<(Vec<KeyValue>, Num)>) {
        if points.is_empty() {
            return;
        }
        let data_points = self.points(points, self.start);
        self.metrics.push(Metric {
            name: name.to_string(),
            unit: unit.to_string(),
            data: Some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            })),
            ..Default::default()
        });
    }

    fn gauge(&mut self, name: &str, unit: &str, points: Vec<(Vec<KeyValue>, Num)>) {
        if points.is_empty() {
            return;
        }
        let data_points = self.points(points, 0);
        self.metrics.push(Metric {
            name: name.to_string(),
            unit: unit.to_string(),
            data: Some(metric::Data::Gauge(Gauge { data_points })),
            ..Default::default()
        });
    }
}

fn int(v: u64) -> Num {
    Num::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Reads the host's figures; keeps the previous CPU times for utilisation.
pub(crate) struct HostMetrics {
    clock_ticks: f64,
    previous_cpu: Vec<CpuTimes>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            clock_ticks: rustix::param::clock_ticks_per_second().max(1) as f64,
            previous_cpu: Vec::new(),
        }
    }
}

impl HostMetrics {
    /// One collection. Blocking (reads `/proc`, calls `statvfs`). A figure that cannot
    /// be read is left out, never invented.
    pub(crate) fn collect(&mut self) -> Vec<Metric> {
        let stat = std::fs::read_to_string("/proc/stat")
            .map(|t| parse_stat(&t))
            .unwrap_or_default();
        let mut b = Builder {
            metrics: Vec::new(),
            now: now_ns(),
            start: stat.boot_time_s.saturating_mul(1_000_000_000),
        };
        self.cpu(&mut b, &stat);
        if let Ok(load) = sysinfo::System::load_average() {
            for (name, v) in [
                ("system.cpu.load_average.1m", load.one),
                ("system.cpu.load_average.5m", load.five),
                ("system.cpu.load_average.15m", load.fifteen),
            ] {
                b.gauge(name, "{thread}", vec![(Vec::new(), Num::Double(v))]);
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
            memory(&mut b, &parse_meminfo(&text));
        }
        filesystems(&mut b);
        if let Ok(text) = std::fs::read_to_string("/proc/net/dev") {
            network(&mut b, &parse_net_dev(&text));
        }
        if let Ok(text) = std::fs::read_to_string("/proc/diskstats") {
            disks(&mut b, &parse_diskstats(&text));
        }
        if stat.boot_time_s > 0 {
            b.sum(
                "system.process.count",
                "{process}",
                false,
                vec![
                    (
                        vec![kv("process.status", "running")],
                        int(stat.procs_running),
                    ),
                    (
                        vec![kv("process.status", "blocked")],
                        int(stat.procs_blocked),
                    ),
                ],
            );
            b.sum(
                "system.process.created",
                "{process}",
                true,
                vec![(Vec::new(), int(stat.processes_created))],
            );
        }
        if let Ok(up) = sysinfo::System::uptime() {
            b.gauge(
                "system.uptime",
                "s",
                vec![(Vec::new(), Num::Double(up as f64))],
            );
        }
        b.metrics
    }

    fn cpu(&mut self, b: &mut Builder, stat: &ProcStat) {
        let mut time = Vec::new();
        let mut util = Vec::new();
        for c in &stat.cpus {
            for (i, mode) in CPU_MODES.iter().enumerate() {
                time.push((
                    vec![kv_int("cpu.logical_number", c.cpu), kv("cpu.mode", *mode)],
                    Num::Double(c.ticks[i] as f64 / self.clock_ticks),
                ));
            }
            if let Some(prev) = self.previous_cpu.iter().find(|p| p.cpu == c.cpu) {
                let deltas: Vec<u64> = (0..7)
                    .map(|i| c.ticks[i].saturating_sub(prev.ticks[i]))
                    .collect();
                let total: u64 = deltas.iter().sum();
                if total > 0 {
                    for (i, mode) in CPU_MODES.iter().enumerate() {
                        util.push((
                            vec![kv_int("cpu.logical_number", c.cpu), kv("cpu.mode", *mode)],
                            Num::Double(deltas[i] as f64 / total as f64),
                        ));
                    }
                }
            }
        }
        b.sum("system.cpu.time", "s", true, time);
        b.gauge("system.cpu.utilization", "1", util);
        b.gauge(
            "system.cpu.logical.count",
            "{cpu}",
            vec![(Vec::new(), int(stat.cpus.len() as u64))],
        );
        self.previous_cpu = stat.cpus.clone();
    }
}

fn memory(b: &mut Builder, m: &HashMap<String, u64>) {
    let get = |k: &str| m.get(k).copied();
    if let (Some(total), Some(free)) = (get("MemTotal"), get("MemFree")) {
        let buffers = get("Buffers").unwrap_or(0);
        let cached = get("Cached").unwrap_or(0);
        let sreclaimable = get("SReclaimable").unwrap_or(0);
        let sunreclaim = get("SUnreclaim").unwrap_or(0);
        // The hostmetrics receiver's definition: what is neither free nor reclaimable.
        let used = total
            .saturating_sub(free)
            .saturating_sub(buffers)
            .saturating_sub(cached)
            .saturating_sub(sreclaimable);
        let states = [
            ("used", used),
            ("free", free),
            ("buffers", buffers),
            ("cached", cached),
            ("slab_reclaimable", sreclaimable),
            ("slab_unreclaimable", sunreclaim),
        ];
        b.sum(
            "system.memory.usage",
            "By",
            false,
            states
                .iter()
                .map(|(s, v)| (vec![kv("system.memory.state", *s)], int(*v)))
                .collect(),
        );
        if total > 0 {
            b.gauge(
                "system.memory.utilization",
                "1",
                states
                    .iter()
                    .map(|(s, v)| {
                        (
                            vec![kv("system.memory.state", *s)],
                            Num::Double(*v as f64 / total as f64),
                        )
                    })
                    .collect(),
            );
        }
        b.sum(
            "system.memory.limit",
            "By",
            false,
            vec![(Vec::new(), int(total))],
        );
    }
    if let (Some(total), Some(free)) = (get("SwapTotal"), get("SwapFree")) {
        b.sum(
            "system.paging.usage",
            "By",
            false,
            vec![
                (
                    vec![kv("system.paging.state", "used")],
                    int(total.saturating_sub(free)),
                ),
                (vec![kv("system.paging.state", "free")], int(free)),
            ],
        );
    }
}

fn filesystems(b: &mut Builder) {
    let disks =
        sysinfo::Disks::new_with_refreshed_list_specifics(sysinfo::DiskRefreshKind::nothing());
    let Ok(disks) = disks else { return };
    let mut usage = Vec::new();
    let mut inodes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in disks.iter() {
        let fs_type = d.file_system().to_string_lossy().into_owned();
        if is_pseudo(&fs_type) {
            continue;
        }
        let mount = d.mount_point().to_string_lossy().into_owned();
        if !seen.insert(mount.clone()) {
            continue;
        }
        let Ok(st) = rustix::fs::statvfs(d.mount_point()) else {
            continue;
        };
        if st.f_blocks == 0 {
            continue;
        }
        let frsize = if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        };
        let attrs = |state: &str| {
            vec![
                kv("system.device", d.name().to_string_lossy().into_owned()),
                kv(
                    "system.filesystem.mode",
                    if d.is_read_only() { "ro" } else { "rw" },
                ),
                kv("system.filesystem.mountpoint", mount.clone()),
                kv("system.filesystem.type", fs_type.clone()),
                kv("system.filesystem.state", state),
            ]
        };
        let used = st
            .f_blocks
            .saturating_sub(st.f_bfree)
            .saturating_mul(frsize);
        let free = st.f_bavail.saturating_mul(frsize);
        let reserved = st
            .f_bfree
            .saturating_sub(st.f_bavail)
            .saturating_mul(frsize);
        usage.push((attrs("used"), int(used)));
        usage.push((attrs("free"), int(free)));
        usage.push((attrs("reserved"), int(reserved)));
        if st.f_files > 0 {
            inodes.push((attrs("used"), int(st.f_files.saturating_sub(st.f_ffree))));
            inodes.push((attrs("free"), int(st.f_ffree)));
        }
    }
    b.sum("system.filesystem.usage", "By", false, usage);
    b.sum("system.filesystem.inodes.usage", "{inode}", false, inodes);
}

fn network(b: &mut Builder, devs: &[NetDev]) {
    let names = [
        ("system.network.io", "By"),
        ("system.network.packets", "{packet}"),
        ("system.network.errors", "{error}"),
        ("system.network.dropped", "{packet}"),
    ];
    for (i, (name, unit)) in names.iter().enumerate() {
        let mut points = Vec::new();
        for d in devs {
            for (dir, v) in [("receive", d.rx[i]), ("transmit", d.tx[i])] {
                points.push((
                    vec![
                        kv("network.interface.name", d.name.clone()),
                        kv("network.io.direction", dir),
                    ],
                    int(v),
                ));
            }
        }
        b.sum(name, unit, true, points);
    }
}

fn disks(b: &mut Builder, stats: &[DiskStat]) {
    let dir = |d: &DiskStat, direction: &str| {
        vec![
            kv("system.device", d.name.clone()),
            kv("disk.io.direction", direction),
        ]
    };
    let mut io = Vec::new();
    let mut ops = Vec::new();
    let mut op_time = Vec::new();
    let mut io_time = Vec::new();
    for d in stats {
        // /proc/diskstats counts 512-byte sectors whatever the device's sector size.
        io.push((dir(d, "read"), int(d.read_sectors.saturating_mul(512))));
        io.push((dir(d, "write"), int(d.write_sectors.saturating_mul(512))));
        ops.push((dir(d, "read"), int(d.reads)));
        ops.push((dir(d, "write"), int(d.writes)));
        op_time.push((dir(d, "read"), Num::Double(d.read_ms as f64 / 1e3)));
        op_time.push((dir(d, "write"), Num::Double(d.write_ms as f64 / 1e3)));
        io_time.push((
            vec![kv("system.device", d.name.clone())],
            Num::Double(d.io_ms as f64 / 1e3),
        ));
    }
    b.sum("system.disk.io", "By", true, io);
    b.sum("system.disk.operations", "{operation}", true, ops);
    b.sum("system.disk.operation_time", "s", true, op_time);
    b.sum("system.disk.io_time", "s", true, io_time);
}

/// The OTLP request for one collection.
pub(crate) fn request(resource: &Resource, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Collects every `interval` and queues the result, until cancelled.
pub(crate) async fn run(
    interval: Duration,
    resource: Resource,
    queue: DiskQueue,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut source = Some(HostMetrics::default());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => return,
        }
        let Some(mut s) = source.take() else { return };
        let collected = tokio::task::spawn_blocking(move || {
            let metrics = s.collect();
            (s, metrics)
        })
        .await;
        let Ok((s, metrics)) = collected else {
            tracing::error!("host metrics collection panicked; stopping host metrics");
            return;
        };
        source = Some(s);
        stats.host_metrics_collections.add(1);
        let body = request(&resource, metrics).encode_to_vec();
        // While the queue cannot write (a full disk), this sample waits and later ones
        // are not taken.
        tokio::select! {
            pushed = queue.push_patiently("host_metrics", &cancel, Kind::Metrics, &[], &body, false) => {
                match pushed {
                    Ok(_) | Err(QueueError::Cancelled) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot queue host metrics; stopping host metrics");
                        return;
                    }
                }
            }
            () = cancel.cancelled() => return,
        }
    }
}

/// Nanoseconds the calling thread has run on a CPU (`/proc/thread-self/schedstat`,
/// nanosecond resolution where `/proc/<pid>/stat` has 10 ms ticks).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The hidden `bench-host-metrics` subcommand (used by `vantage-agent-bench
/// host-metrics`, see benches/RESULTS.md): `cycles` collections, each encoded as the
/// OTLP request the agent queues, on this thread; prints the CPU time per cycle as one
/// JSON object. The request is not queued or sent: this is the collection's own cost.
pub(crate) fn bench(cycles: u64) -> std::process::ExitCode {
    let resource = crate::resource::host_resource(&Default::default());
    let mut source = HostMetrics::default();
    // One warm-up collection: the first has no CPU deltas and fills the caches.
    let _ = source.collect();
    let (Some(start_ns), started) = (thread_cpu_ns(), std::time::Instant::now()) else {
        eprintln!("/proc/thread-self/schedstat is not readable");
        return std::process::ExitCode::FAILURE;
    };
    let (mut points, mut bytes) = (0usize, 0usize);
    for _ in 0..cycles {
        let metrics = source.collect();
        points = metrics
            .iter()
            .map(|m| match &m.data {
                Some(metric::Data::Sum(s)) => s.data_points.len(),
                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                _ => 0,
            })
            .sum();
        bytes = request(&resource, metrics).encode_to_vec().len();
    }
    let cpu_ns = thread_cpu_ns().unwrap_or(start_ns) - start_ns;
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "cycles": cycles,
            "cpu_ms_total": cpu_ns as f64 / 1e6,
            "cpu_ms_per_cycle": cpu_ns as f64 / 1e6 / cycles.max(1) as f64,
            "wall_ms_per_cycle": wall * 1e3 / cycles.max(1) as f64,
            "points": points,
            "request_bytes": bytes,
        })
    );
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::otlp::common::v1::any_value;

    const STAT: &str = "cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 50 1 15 200 2 3 4 4 0 0\ncpu1 50 1 15 200 3 3 3 4 0 0\nintr 1 2 3\nctxt 99\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n";

    #[test]
    fn proc_stat() {
        let s = parse_stat(STAT);
        assert_eq!(s.cpus.len(), 2, "the aggregate line is not a CPU");
        assert_eq!(s.cpus[0].ticks, [50, 1, 15, 200, 2, 7, 4]);
        assert_eq!(s.boot_time_s, 1_700_000_000);
        assert_eq!(s.processes_created, 4242);
        assert_eq!((s.procs_running, s.procs_blocked), (3, 1));
        assert_eq!(parse_stat("cpu0 garbage\n\n\u{0}"), ProcStat::default());
    }

    #[test]
    fn proc_meminfo_net_and_disks() {
        let m = parse_meminfo("MemTotal:       16 kB\nMemFree: 4 kB\nHugePages_Total: 3\n");
        assert_eq!(m["MemTotal"], 16 * 1024);
        assert_eq!(m["HugePages_Total"], 3);
        let n = parse_net_dev(
            "Inter-|   Receive\n face |bytes\n  eth0: 10 2 1 3 0 0 0 0 20 4 0 5 0 0 0 0\n",
        );
        assert_eq!(
            n,
            vec![NetDev {
                name: "eth0".into(),
                rx: [10, 2, 1, 3],
                tx: [20, 4, 0, 5]
            }]
        );
        let d = parse_diskstats(
            "   8       0 sda 10 0 80 5 20 0 160 7 0 12 12\n   7 0 loop0 1 0 1 1 1 0 1 1 0 1 1\n",
        );
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].read_sectors, d[0].writes, d[0].io_ms), (80, 20, 12));
    }

    fn str_attr<'a>(p: &'a NumberDataPoint, key: &str) -> Option<&'a str> {
        p.attributes.iter().find(|a| a.key == key).and_then(|a| {
            match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    }

    fn points(m: &Metric) -> &[NumberDataPoint] {
        match m.data.as_ref() {
            Some(metric::Data::Sum(s)) => &s.data_points,
            Some(metric::Data::Gauge(g)) => &g.data_points,
            _ => &[],
        }
    }

    fn value(p: &NumberDataPoint) -> f64 {
        match p.value {
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            Some(number_data_point::Value::AsDouble(d)) => d,
            None => f64::NAN,
        }
    }

    /// Collects on this machine twice: names and units per the conventions, cumulative
    /// counters that never go down, no pseudo filesystems.
    #[test]
    fn collects_this_host() {
        let mut h = HostMetrics::default();
        let first = h.collect();
        std::thread::sleep(Duration::from_millis(50));
        let second = h.collect();
        let by_name: HashMap<&str, &Metric> = second.iter().map(|m| (m.name.as_str(), m)).collect();
        let expect = [
            ("system.cpu.time", "s"),
            ("system.cpu.load_average.1m", "{thread}"),
            ("system.memory.usage", "By"),
            ("system.paging.usage", "By"),
            ("system.network.io", "By"),
            ("system.network.dropped", "{packet}"),
            ("system.process.count", "{process}"),
            ("system.uptime", "s"),
        ];
        for (name, unit) in expect {
            let m = by_name
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(m.unit, unit, "{name}");
        }
        assert!(
            by_name.contains_key("system.cpu.utilization"),
            "second collection has deltas"
        );
        let cpu = by_name["system.cpu.time"];
        let Some(metric::Data::Sum(sum)) = &cpu.data else {
            panic!("cpu time is a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert!(points(cpu).iter().all(|p| str_attr(p, "cpu.mode").is_some()
            && p.start_time_unix_nano > 0
            && p.start_time_unix_nano < p.time_unix_nano));
        for m in &second {
            if let Some(metric::Data::Sum(s)) = &m.data
                && s.is_monotonic
            {
                let before = first
                    .iter()
                    .find(|f| f.name == m.name)
                    .map(points)
                    .unwrap_or(&[]);
                for p in points(m) {
                    if let Some(b) = before.iter().find(|b| b.attributes == p.attributes) {
                        assert!(value(p) >= value(b), "{} went down", m.name);
                    }
                }
            }
        }
        let mem = by_name["system.memory.usage"];
        assert!(
            points(mem)
                .iter()
                .any(|p| str_attr(p, "system.memory.state") == Some("used") && value(p) > 0.0)
        );
        if let Some(fs) = by_name.get("system.filesystem.usage") {
            for p in points(fs) {
                let t = str_attr(p, "system.filesystem.type").unwrap_or("");
                assert!(!is_pseudo(t), "pseudo filesystem {t} reported");
                assert!(str_attr(p, "system.filesystem.mountpoint").is_some());
            }
        }
    }
}
