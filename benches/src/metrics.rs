//! Deterministic node-exporter-like metric generator for the metrics benchmarks.
//!
//! A [`Fleet`] is a set of hosts, each exporting the same [`SERIES_PER_HOST`] series: a
//! node exporter (`job="node"`: CPU seconds, network and disk counters, filesystem and
//! memory gauges, load averages, netstat and vmstat counters) and an application
//! histogram (`job="api"`: `http_request_duration_seconds` with 10 buckets plus `+Inf`,
//! `_sum` and `_count`, per handler and method). Series `i` belongs to host
//! `i / SERIES_PER_HOST`, so the first `n` series of a fleet are always the same.
//!
//! Values follow what real exporters report, which is what storage compression sees:
//! counters grow by whole multiples of their unit (CPU ticks of 0.01 s, bytes, sectors
//! of 512 bytes, packets) so they are exact decimals; most gauges are constant or move by
//! a page (4096 bytes) now and then; load averages move by hundredths. Every value
//! depends only on `(seed, series, scrape)`, so two runs, or the two servers of one run,
//! get the same samples. Scrapes are every `interval_ms`, and all series of one host and
//! job share the scrape's timestamp, which is jittered by a few milliseconds as a real
//! scrape loop's is.
//!
//! Two mixes ([`Mix`]): the default, noisy on purpose (a stress figure for
//! compression), and a realistic one that records samples as Prometheus's scrape loop
//! would from a typical host; see [`Mix::Realistic`] for exactly what differs.

use std::ops::Range;
use std::str::FromStr;

use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples};

/// Series each host exports; a fleet of `n` series has `n / SERIES_PER_HOST` full hosts.
pub const SERIES_PER_HOST: usize = 400;

/// Upper bound of the per-scrape timestamp jitter, in milliseconds.
pub const MAX_JITTER_MS: i64 = 5;

/// Upper bounds of the histogram buckets, `+Inf` last.
pub const HISTOGRAM_LE: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// `handler` values of the histogram, with requests per scrape (mean) and the bucket a
/// typical request falls in.
const HANDLERS: [(&str, f64, usize); 4] = [
    ("/api/v1/orders", 300.0, 4),
    ("/api/v1/users", 120.0, 3),
    ("/api/v1/cart", 60.0, 5),
    ("/healthz", 15.0, 0),
];
const METHODS: [&str; 2] = ["GET", "POST"];

const CPU_MODES: [(&str, f64); 8] = [
    // Mean CPU ticks (0.01 s) per 15 s scrape of one core.
    ("idle", 1200.0),
    ("iowait", 20.0),
    ("irq", 0.0),
    ("nice", 2.0),
    ("softirq", 10.0),
    ("steal", 5.0),
    ("system", 60.0),
    ("user", 180.0),
];
const CPUS: usize = 8;

const NET_DEVICES: [(&str, f64); 4] = [
    // Traffic scale of the device.
    ("docker0", 0.05),
    ("eth0", 1.0),
    ("eth1", 0.1),
    ("lo", 0.2),
];
const NET_COUNTERS: [(&str, f64, f64); 8] = [
    // (name, unit, mean units per scrape at scale 1)
    ("node_network_receive_bytes_total", 1.0, 2.0e6),
    ("node_network_receive_drop_total", 1.0, 0.05),
    ("node_network_receive_errs_total", 1.0, 0.01),
    ("node_network_receive_packets_total", 1.0, 1500.0),
    ("node_network_transmit_bytes_total", 1.0, 1.2e6),
    ("node_network_transmit_drop_total", 1.0, 0.02),
    ("node_network_transmit_errs_total", 1.0, 0.01),
    ("node_network_transmit_packets_total", 1.0, 1100.0),
];

const DISK_DEVICES: [(&str, f64); 4] =
    [("dm-0", 0.5), ("nvme0n1", 1.0), ("sda", 0.3), ("sdb", 0.05)];
const DISK_COUNTERS: [(&str, f64, f64); 9] = [
    ("node_disk_io_time_seconds_total", 0.001, 1500.0),
    ("node_disk_read_bytes_total", 512.0, 2000.0),
    ("node_disk_read_time_seconds_total", 0.001, 300.0),
    ("node_disk_reads_completed_total", 1.0, 30.0),
    ("node_disk_reads_merged_total", 1.0, 5.0),
    ("node_disk_write_time_seconds_total", 0.001, 2000.0),
    ("node_disk_writes_completed_total", 1.0, 200.0),
    ("node_disk_writes_merged_total", 1.0, 50.0),
    ("node_disk_written_bytes_total", 512.0, 8000.0),
];

const MOUNTS: [(&str, &str, &str, f64); 6] = [
    // (mountpoint, device, fstype, size in GiB)
    ("/", "/dev/nvme0n1p1", "ext4", 100.0),
    ("/boot", "/dev/nvme0n1p2", "ext4", 1.0),
    ("/data", "/dev/mapper/vg-data", "xfs", 2000.0),
    ("/run", "tmpfs", "tmpfs", 3.2),
    ("/var/lib/docker", "/dev/sda1", "ext4", 500.0),
    ("/var/log", "/dev/sdb1", "ext4", 50.0),
];

const MEMORY_CONST: [&str; 10] = [
    "node_memory_CmaTotal_bytes",
    "node_memory_CommitLimit_bytes",
    "node_memory_DirectMap1G_bytes",
    "node_memory_DirectMap2M_bytes",
    "node_memory_HugePages_Total",
    "node_memory_Hugepagesize_bytes",
    "node_memory_MemTotal_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_VmallocTotal_bytes",
    "node_memory_HardwareCorrupted_bytes",
];
const MEMORY_MOVING: [&str; 30] = [
    "node_memory_Active_anon_bytes",
    "node_memory_Active_bytes",
    "node_memory_Active_file_bytes",
    "node_memory_AnonHugePages_bytes",
    "node_memory_AnonPages_bytes",
    "node_memory_Bounce_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_Committed_AS_bytes",
    "node_memory_Dirty_bytes",
    "node_memory_Inactive_anon_bytes",
    "node_memory_Inactive_bytes",
    "node_memory_Inactive_file_bytes",
    "node_memory_KReclaimable_bytes",
    "node_memory_KernelStack_bytes",
    "node_memory_Mapped_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_Mlocked_bytes",
    "node_memory_NFS_Unstable_bytes",
    "node_memory_PageTables_bytes",
    "node_memory_Percpu_bytes",
    "node_memory_SReclaimable_bytes",
    "node_memory_SUnreclaim_bytes",
    "node_memory_Shmem_bytes",
    "node_memory_Slab_bytes",
    "node_memory_SwapCached_bytes",
    "node_memory_SwapFree_bytes",
    "node_memory_VmallocUsed_bytes",
    "node_memory_Writeback_bytes",
];

const NETSTAT: [&str; 30] = [
    "Icmp_InErrors",
    "Icmp_InMsgs",
    "Icmp_OutMsgs",
    "Icmp6_InErrors",
    "Icmp6_InMsgs",
    "Icmp6_OutMsgs",
    "Ip_Forwarding",
    "Ip6_InOctets",
    "Ip6_OutOctets",
    "IpExt_InOctets",
    "IpExt_OutOctets",
    "Tcp_ActiveOpens",
    "Tcp_CurrEstab",
    "Tcp_InErrs",
    "Tcp_InSegs",
    "Tcp_OutRsts",
    "Tcp_OutSegs",
    "Tcp_PassiveOpens",
    "Tcp_RetransSegs",
    "TcpExt_ListenDrops",
    "TcpExt_ListenOverflows",
    "TcpExt_SyncookiesFailed",
    "TcpExt_SyncookiesRecv",
    "TcpExt_SyncookiesSent",
    "TcpExt_TCPSynRetrans",
    "TcpExt_TCPTimeouts",
    "Udp_InDatagrams",
    "Udp_InErrors",
    "Udp_NoPorts",
    "Udp_OutDatagrams",
];

const VMSTAT: [&str; 20] = [
    "oom_kill",
    "pgfault",
    "pgmajfault",
    "pgpgin",
    "pgpgout",
    "pswpin",
    "pswpout",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgrefill",
    "pgactivate",
    "pgdeactivate",
    "pgfree",
    "pgalloc_normal",
    "pgalloc_dma32",
    "numa_hit",
    "numa_miss",
    "thp_fault_alloc",
];

/// Which samples a [`Fleet`] generates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mix {
    /// Every counter moves each scrape by a random amount around its mean, gauges
    /// change on 50–90 % of scrapes, and every scrape's timestamp is 0–5 ms late.
    #[default]
    Noisy,
    /// The noisy mix with four differences, each what a typical host and Prometheus's
    /// scrape loop produce:
    /// - timestamps as Prometheus 2.42's scrape loop records them: the scrape is 0–5 ms
    ///   late as in the noisy mix, but a scrape at most 2 ms late gets its slot's exact
    ///   timestamp (`--scrape.timestamp-tolerance`, default 2 ms, alignment on), so
    ///   about half of the scrapes are on the 15 s grid;
    /// - the lightly used devices (`docker0`, `eth1`, `sdb`: traffic scale ≤ 0.1) are
    ///   idle on 90 % of scrapes; their counters move on the other 10 %, by ten times
    ///   the noisy mix's increment, so their mean rates are unchanged;
    /// - the memory gauges of features the host does not use (no swap, no NFS, no
    ///   mlock, no bounce buffers: `SwapCached`, `SwapFree`, `NFS_Unstable`, `Bounce`,
    ///   `Mlocked`) stay constant;
    /// - the `/boot` and `/run` filesystems' free space and free inodes change on 2 %
    ///   of scrapes instead of 50–70 %.
    ///
    /// CPU seconds still move in 0.01 s ticks on every scrape, busy counters by a
    /// random amount every scrape, other gauges as in the noisy mix. Still noisier than
    /// a real host: Prometheus needs ~4 B/sample on it and 1.8 on real node_exporter
    /// scrapes, which `--mix node-exporter` replays (`crate::nodecap`).
    Realistic,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        match s {
            "noisy" => Ok(Mix::Noisy),
            "realistic" => Ok(Mix::Realistic),
            other => Err(format!("unknown mix {other:?} (noisy, realistic)")),
        }
    }
}

impl Mix {
    /// The name `FromStr` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Noisy => "noisy",
            Mix::Realistic => "realistic",
        }
    }
}

/// Largest lateness Prometheus's scrape loop snaps back onto the scrape's slot
/// (`--scrape.timestamp-tolerance`).
pub const PROMETHEUS_TIMESTAMP_TOLERANCE_MS: i64 = 2;

/// How one series' value moves from scrape to scrape.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Grows by a whole number of `unit`s per scrape, `mean` units on average.
    Counter { unit: f64, mean: f64 },
    /// Never changes.
    Const(f64),
    /// Starts at `base` and, with probability `p_change` per scrape, moves by up to
    /// `max_steps` multiples of `quantum` either way, staying within `[0, 2 × base]`.
    Walk {
        base: f64,
        quantum: f64,
        p_change: f64,
        max_steps: u32,
    },
    /// Cumulative bucket `le` (index into [`HISTOGRAM_LE`]) of histogram group `group`.
    Bucket { group: u32, le: usize },
    /// `_sum` of histogram group `group`.
    HistSum { group: u32 },
}

#[derive(Clone, Debug)]
struct Template {
    name: String,
    job: &'static str,
    extra: Vec<(&'static str, String)>,
    kind: Kind,
}

/// What the generator keeps per series: its labels, how it moves and where it is.
#[derive(Clone, Debug)]
struct SeriesState {
    labels: Labels,
    host: u32,
    kind: Kind,
    /// Value at the last generated scrape (for counters: in units).
    value: f64,
    /// Next scrape to generate.
    next_scrape: u64,
    /// Share of scrapes on which a counter moves (1 except idle devices, realistic mix).
    active: f64,
}

/// A deterministic fleet of hosts and their series; see the module documentation.
#[derive(Clone, Debug)]
pub struct Fleet {
    seed: u64,
    mix: Mix,
    start_ms: i64,
    interval_ms: i64,
    series: Vec<SeriesState>,
}

impl Fleet {
    /// The first `series` series of the fleet for `seed`; scrape `k` is at
    /// `start_ms + k × interval_ms` plus a jitter of at most [`MAX_JITTER_MS`].
    pub fn new(seed: u64, series: usize, start_ms: i64, interval_ms: i64) -> Fleet {
        Fleet::with_mix(seed, series, start_ms, interval_ms, Mix::Noisy)
    }

    /// As [`Fleet::new`], generating `mix`.
    pub fn with_mix(seed: u64, series: usize, start_ms: i64, interval_ms: i64, mix: Mix) -> Fleet {
        let templates = host_templates();
        debug_assert_eq!(templates.len(), SERIES_PER_HOST);
        let series = (0..series)
            .map(|i| {
                let host = (i / SERIES_PER_HOST) as u32;
                let t = &templates[i % SERIES_PER_HOST];
                let kind = match t.kind {
                    // Each host's histogram groups are numbered apart from the others'.
                    Kind::Bucket { group, le } => Kind::Bucket {
                        group: host * HIST_GROUPS_PER_HOST + group,
                        le,
                    },
                    Kind::HistSum { group } => Kind::HistSum {
                        group: host * HIST_GROUPS_PER_HOST + group,
                    },
                    k => scale_for(k, seed, host, i),
                };
                let (kind, active) = match mix {
                    Mix::Noisy => (kind, 1.0),
                    Mix::Realistic => realistic(t, kind),
                };
                SeriesState {
                    labels: series_labels(t, host),
                    host,
                    value: initial_value(kind, seed, i),
                    kind,
                    next_scrape: 0,
                    active,
                }
            })
            .collect();
        Fleet {
            seed,
            mix,
            start_ms,
            interval_ms,
            series,
        }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether the fleet has no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Labels of series `i`.
    pub fn labels(&self, i: usize) -> &Labels {
        &self.series[i].labels
    }

    /// The timestamp of scrape `scrape` of series `i`, in milliseconds.
    pub fn timestamp_ms(&self, i: usize, scrape: u64) -> i64 {
        let s = &self.series[i];
        let job = u64::from(matches!(s.kind, Kind::Bucket { .. } | Kind::HistSum { .. }));
        let mut jitter = (hash(&[self.seed, 0x7177, u64::from(s.host), job, scrape])
            % (MAX_JITTER_MS as u64 + 1)) as i64;
        if self.mix == Mix::Realistic && jitter <= PROMETHEUS_TIMESTAMP_TOLERANCE_MS {
            jitter = 0;
        }
        self.start_ms + scrape as i64 * self.interval_ms + jitter
    }

    /// The next sample of series `i`: each call advances that series by one scrape.
    pub fn next_sample(&mut self, i: usize) -> Sample {
        let seed = self.seed;
        let scrape = self.series[i].next_scrape;
        let t = self.timestamp_ms(i, scrape);
        let s = &mut self.series[i];
        s.next_scrape += 1;
        let v = match s.kind {
            Kind::Counter { unit, mean } => {
                let h = hash(&[seed, 1, i as u64, scrape]);
                if s.active >= 1.0 {
                    s.value += increment(mean, h);
                } else if unit_f64(hash(&[seed, 7, i as u64, scrape])) < s.active {
                    s.value += increment(mean / s.active, h);
                }
                s.value * unit
            }
            Kind::Const(v) => v,
            Kind::Walk {
                base,
                quantum,
                p_change,
                max_steps,
            } => {
                let h = hash(&[seed, 2, i as u64, scrape]);
                if unit_f64(h) < p_change {
                    let steps = 1 + (h >> 40) % u64::from(max_steps.max(1));
                    let up = (h >> 20) & 1 == 1;
                    let delta = steps as f64 * quantum;
                    let next = if up { s.value + delta } else { s.value - delta };
                    if (0.0..=2.0 * base).contains(&next) {
                        s.value = next;
                    }
                }
                s.value
            }
            Kind::Bucket { group, le } => {
                s.value += (0..=le)
                    .map(|j| bucket_count(seed, group, scrape, j))
                    .sum::<f64>();
                s.value
            }
            Kind::HistSum { group } => {
                s.value += (0..HISTOGRAM_LE.len())
                    .map(|j| bucket_count(seed, group, scrape, j) * BUCKET_MIDPOINTS[j])
                    .sum::<f64>();
                // As a client library's float sum: rounded to microseconds.
                (s.value * 1e6).round() / 1e6
            }
        };
        Sample { t, v }
    }

    /// The next `scrapes` samples of each series in `range`, as one batch.
    pub fn batch(&mut self, range: Range<usize>, scrapes: usize) -> MetricBatch {
        let series = range
            .map(|i| SeriesSamples {
                labels: self.series[i].labels.clone(),
                samples: (0..scrapes).map(|_| self.next_sample(i)).collect(),
            })
            .collect();
        MetricBatch {
            series,
            metadata: Vec::new(),
        }
    }
}

const HIST_GROUPS_PER_HOST: u32 = (HANDLERS.len() * METHODS.len()) as u32;

/// A representative latency per bucket, for `_sum`.
const BUCKET_MIDPOINTS: [f64; 11] = [
    0.003, 0.0075, 0.0175, 0.0375, 0.075, 0.175, 0.375, 0.75, 1.75, 3.75, 7.5,
];

/// Requests of histogram group `group` that fell into (non-cumulative) bucket `j` during
/// scrape `scrape`.
fn bucket_count(seed: u64, group: u32, scrape: u64, j: usize) -> f64 {
    let per_host = group % HIST_GROUPS_PER_HOST;
    let (_, rate, typical) = HANDLERS[per_host as usize / METHODS.len()];
    let rate = if per_host as usize % METHODS.len() == 1 {
        rate * 0.3
    } else {
        rate
    };
    // Most requests land in the typical bucket, fewer in each bucket further away.
    let distance = (j as i64 - typical as i64).unsigned_abs() as i32;
    let share = 0.5 * 0.35f64.powi(distance);
    increment(
        rate * share,
        hash(&[seed, 3, u64::from(group), scrape, j as u64]),
    )
}

/// A whole-number increment with mean `mean`: `mean × (0.5 + u)` rounded stochastically.
fn increment(mean: f64, h: u64) -> f64 {
    let u1 = unit_f64(h);
    let u2 = unit_f64(mix64(h));
    (mean * (0.5 + u1) + u2).floor()
}

/// Per-host and per-series variation of a template, so hosts are not copies.
fn scale_for(kind: Kind, seed: u64, host: u32, i: usize) -> Kind {
    let host_factor = 0.5 + unit_f64(hash(&[seed, 4, u64::from(host)]));
    let series_factor = 0.8 + 0.4 * unit_f64(hash(&[seed, 5, i as u64]));
    match kind {
        Kind::Counter { unit, mean } => Kind::Counter {
            unit,
            mean: mean * host_factor * series_factor,
        },
        Kind::Walk {
            base,
            quantum,
            p_change,
            max_steps,
        } => Kind::Walk {
            // Whole quanta, so values stay exact.
            base: (base * host_factor / quantum).round() * quantum,
            quantum,
            p_change,
            max_steps,
        },
        k => k,
    }
}

/// How the realistic mix differs for one series (see [`Mix::Realistic`]): its kind and
/// the share of scrapes on which it moves.
fn realistic(t: &Template, kind: Kind) -> (Kind, f64) {
    let extra = |name: &str| {
        t.extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    let idle_device = NET_DEVICES
        .iter()
        .chain(&DISK_DEVICES)
        .any(|(d, scale)| *scale <= 0.1 && extra("device") == Some(d));
    match kind {
        Kind::Counter { .. } if idle_device => (kind, 0.1),
        Kind::Walk { base, .. }
            if [
                "node_memory_SwapCached_bytes",
                "node_memory_SwapFree_bytes",
                "node_memory_NFS_Unstable_bytes",
                "node_memory_Bounce_bytes",
                "node_memory_Mlocked_bytes",
            ]
            .contains(&t.name.as_str()) =>
        {
            (Kind::Const(base), 1.0)
        }
        Kind::Walk {
            base,
            quantum,
            max_steps,
            ..
        } if matches!(extra("mountpoint"), Some("/boot" | "/run")) => (
            Kind::Walk {
                base,
                quantum,
                p_change: 0.02,
                max_steps,
            },
            1.0,
        ),
        k => (k, 1.0),
    }
}

fn initial_value(kind: Kind, seed: u64, i: usize) -> f64 {
    let u = unit_f64(hash(&[seed, 6, i as u64]));
    match kind {
        // Hosts have been up for a while: counters start at 1–30 days of increments.
        Kind::Counter { mean, .. } => (mean * 5760.0 * (1.0 + 29.0 * u)).floor(),
        Kind::Walk { base, .. } => base,
        Kind::Const(v) => v,
        Kind::Bucket { .. } | Kind::HistSum { .. } => 0.0,
    }
}

fn series_labels(t: &Template, host: u32) -> Labels {
    let instance = format!(
        "10.{}.{}.{}:{}",
        1 + host / 65_536 % 200,
        host / 256 % 256,
        host % 256,
        if t.job == "node" { 9100 } else { 8080 }
    );
    let region = ["eu-west-1", "us-east-1", "ap-south-1"][host as usize % 3];
    let mut pairs: Vec<(&str, String)> = vec![
        ("__name__", t.name.clone()),
        ("job", t.job.to_owned()),
        ("instance", instance),
        ("env", "prod".to_owned()),
        ("region", region.to_owned()),
    ];
    pairs.extend(t.extra.iter().cloned());
    Labels::from_pairs(pairs)
}

/// The [`SERIES_PER_HOST`] series of one host.
fn host_templates() -> Vec<Template> {
    let mut out = Vec::with_capacity(SERIES_PER_HOST);
    let mut push =
        |name: &str, job: &'static str, extra: Vec<(&'static str, String)>, kind: Kind| {
            out.push(Template {
                name: name.to_owned(),
                job,
                extra,
                kind,
            })
        };
    let counter = |unit: f64, mean: f64| Kind::Counter { unit, mean };
    let walk = |base: f64, quantum: f64, p_change: f64, max_steps: u32| Kind::Walk {
        base,
        quantum,
        p_change,
        max_steps,
    };

    for cpu in 0..CPUS {
        for (mode, ticks) in CPU_MODES {
            push(
                "node_cpu_seconds_total",
                "node",
                vec![("cpu", cpu.to_string()), ("mode", mode.to_owned())],
                counter(0.01, ticks),
            );
        }
        for mode in ["nice", "user"] {
            push(
                "node_cpu_guest_seconds_total",
                "node",
                vec![("cpu", cpu.to_string()), ("mode", mode.to_owned())],
                Kind::Const(0.0),
            );
        }
    }
    for (device, scale) in NET_DEVICES {
        for (name, unit, mean) in NET_COUNTERS {
            push(
                name,
                "node",
                vec![("device", device.to_owned())],
                counter(unit, mean * scale),
            );
        }
    }
    for (device, scale) in DISK_DEVICES {
        for (name, unit, mean) in DISK_COUNTERS {
            push(
                name,
                "node",
                vec![("device", device.to_owned())],
                counter(unit, mean * scale),
            );
        }
        push(
            "node_disk_io_now",
            "node",
            vec![("device", device.to_owned())],
            walk(1.0, 1.0, 0.3, 1),
        );
    }
    for (mountpoint, device, fstype, gib) in MOUNTS {
        let labels = || {
            vec![
                ("device", device.to_owned()),
                ("fstype", fstype.to_owned()),
                ("mountpoint", mountpoint.to_owned()),
            ]
        };
        let size = (gib * 1024.0 * 1024.0 * 1024.0 / 4096.0).round() * 4096.0;
        let files = (size / 16384.0).round();
        push(
            "node_filesystem_size_bytes",
            "node",
            labels(),
            Kind::Const(size),
        );
        push(
            "node_filesystem_free_bytes",
            "node",
            labels(),
            walk(size * 0.4, 4096.0, 0.7, 500),
        );
        push(
            "node_filesystem_avail_bytes",
            "node",
            labels(),
            walk(size * 0.35, 4096.0, 0.7, 500),
        );
        push(
            "node_filesystem_files",
            "node",
            labels(),
            Kind::Const(files),
        );
        push(
            "node_filesystem_files_free",
            "node",
            labels(),
            walk(files * 0.9, 1.0, 0.5, 20),
        );
        push(
            "node_filesystem_readonly",
            "node",
            labels(),
            Kind::Const(0.0),
        );
        push(
            "node_filesystem_device_error",
            "node",
            labels(),
            Kind::Const(0.0),
        );
    }
    for (k, name) in MEMORY_CONST.iter().enumerate() {
        push(
            name,
            "node",
            vec![],
            Kind::Const(((k as f64 + 1.0) * 1.7e9 / 4096.0).round() * 4096.0),
        );
    }
    for (k, name) in MEMORY_MOVING.iter().enumerate() {
        let base = ((k as f64 + 1.0) * 2.3e8 / 4096.0).round() * 4096.0;
        push(name, "node", vec![], walk(base, 4096.0, 0.6, 256));
    }
    push("node_load1", "node", vec![], walk(1.5, 0.01, 0.9, 30));
    push("node_load5", "node", vec![], walk(1.5, 0.01, 0.8, 10));
    push("node_load15", "node", vec![], walk(1.5, 0.01, 0.6, 4));
    for (k, name) in NETSTAT.iter().enumerate() {
        let mean = [0.01, 2.0, 40.0, 200.0][k % 4];
        push(
            &format!("node_netstat_{name}"),
            "node",
            vec![],
            counter(1.0, mean),
        );
    }
    for (k, name) in VMSTAT.iter().enumerate() {
        let mean = [0.0, 5.0, 300.0, 5000.0][k % 4];
        push(
            &format!("node_vmstat_{name}"),
            "node",
            vec![],
            counter(1.0, mean),
        );
    }
    push(
        "node_context_switches_total",
        "node",
        vec![],
        counter(1.0, 30_000.0),
    );
    push("node_intr_total", "node", vec![], counter(1.0, 20_000.0));
    push("node_forks_total", "node", vec![], counter(1.0, 150.0));
    push("node_procs_running", "node", vec![], walk(3.0, 1.0, 0.5, 2));
    push("node_procs_blocked", "node", vec![], walk(1.0, 1.0, 0.1, 1));
    push(
        "node_boot_time_seconds",
        "node",
        vec![],
        Kind::Const(1_700_000_000.0),
    );
    push(
        "node_entropy_available_bits",
        "node",
        vec![],
        walk(3500.0, 1.0, 0.9, 50),
    );
    push(
        "node_exporter_build_info",
        "node",
        vec![
            ("goversion", "go1.21.4".to_owned()),
            ("version", "1.7.0".to_owned()),
        ],
        Kind::Const(1.0),
    );
    push("up", "node", vec![], Kind::Const(1.0));

    for (h, (handler, _, _)) in HANDLERS.iter().enumerate() {
        for (m, method) in METHODS.iter().enumerate() {
            let group = (h * METHODS.len() + m) as u32;
            let labels = || {
                vec![
                    ("handler", (*handler).to_owned()),
                    ("method", (*method).to_owned()),
                ]
            };
            for (le, bound) in HISTOGRAM_LE.iter().enumerate() {
                let mut l = labels();
                l.push(("le", (*bound).to_owned()));
                push(
                    "http_request_duration_seconds_bucket",
                    "api",
                    l,
                    Kind::Bucket { group, le },
                );
            }
            push(
                "http_request_duration_seconds_sum",
                "api",
                labels(),
                Kind::HistSum { group },
            );
            push(
                "http_request_duration_seconds_count",
                "api",
                labels(),
                Kind::Bucket {
                    group,
                    le: HISTOGRAM_LE.len() - 1,
                },
            );
        }
    }
    out
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9e37_79b9_7f4a_7c15, |acc, &p| {
        mix64(acc ^ mix64(p.wrapping_add(0x632b_e59b_d9b4_e019)))
    })
}

fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    const START: i64 = 1_750_000_000_000;

    #[test]
    fn a_host_has_the_promised_series_and_labels_are_unique() {
        assert_eq!(host_templates().len(), SERIES_PER_HOST);
        let fleet = Fleet::new(1, 3 * SERIES_PER_HOST + 7, START, 15_000);
        assert_eq!(fleet.len(), 3 * SERIES_PER_HOST + 7);
        let distinct: HashSet<&Labels> = (0..fleet.len()).map(|i| fleet.labels(i)).collect();
        assert_eq!(distinct.len(), fleet.len());
        assert!(
            (0..fleet.len()).all(|i| fleet.labels(i).get("instance").is_some()
                && fleet.labels(i).get("job").is_some())
        );
    }

    #[test]
    fn same_seed_same_samples_and_prefixes_agree() {
        let mut a = Fleet::new(9, 2 * SERIES_PER_HOST, START, 15_000);
        let mut b = Fleet::new(9, SERIES_PER_HOST, START, 15_000);
        let mut c = Fleet::new(10, SERIES_PER_HOST, START, 15_000);
        let ba = a.batch(0..SERIES_PER_HOST, 20);
        let bb = b.batch(0..SERIES_PER_HOST, 20);
        assert_eq!(ba, bb);
        assert_ne!(ba, c.batch(0..SERIES_PER_HOST, 20));
        // Splitting the scrapes into several batches gives the same samples.
        let mut d = Fleet::new(9, SERIES_PER_HOST, START, 15_000);
        let first = d.batch(0..SERIES_PER_HOST, 7);
        let rest = d.batch(0..SERIES_PER_HOST, 13);
        for (i, s) in ba.series.iter().enumerate() {
            let joined: Vec<Sample> = first.series[i]
                .samples
                .iter()
                .chain(&rest.series[i].samples)
                .copied()
                .collect();
            assert_eq!(s.samples, joined);
        }
    }

    #[test]
    fn counters_never_decrease_and_timestamps_follow_the_interval() {
        let mut fleet = Fleet::new(3, 2 * SERIES_PER_HOST, START, 15_000);
        let batch = fleet.batch(0..fleet.len(), 50);
        for s in &batch.series {
            let name = s.labels.metric_name().unwrap_or("");
            for (k, w) in s.samples.windows(2).enumerate() {
                let dt = w[1].t - w[0].t;
                assert!((15_000 - MAX_JITTER_MS..=15_000 + MAX_JITTER_MS).contains(&dt));
                assert!(w[0].t >= START + k as i64 * 15_000);
                if name.ends_with("_total") || name.ends_with("_bucket") || name.ends_with("_count")
                {
                    assert!(w[1].v >= w[0].v, "{} decreased", s.labels);
                }
            }
            assert!(s.samples.iter().all(|x| x.v.is_finite() && x.v >= 0.0));
        }
    }

    #[test]
    fn buckets_are_cumulative_and_count_equals_inf_bucket() {
        let mut fleet = Fleet::new(5, SERIES_PER_HOST, START, 15_000);
        let batch = fleet.batch(0..fleet.len(), 30);
        type Key = (String, String);
        let mut groups: HashMap<Key, Vec<(f64, &[Sample])>> = HashMap::new();
        let mut counts: HashMap<Key, &[Sample]> = HashMap::new();
        for s in &batch.series {
            let key = || {
                (
                    s.labels.get("handler").unwrap_or("").to_owned(),
                    s.labels.get("method").unwrap_or("").to_owned(),
                )
            };
            match s.labels.metric_name() {
                Some("http_request_duration_seconds_bucket") => {
                    let le = s.labels.get("le").unwrap_or("");
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(0.0)
                    };
                    groups.entry(key()).or_default().push((bound, &s.samples));
                }
                Some("http_request_duration_seconds_count") => {
                    counts.insert(key(), &s.samples);
                }
                _ => {}
            }
        }
        assert_eq!(groups.len(), 8);
        for (key, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(buckets.len(), HISTOGRAM_LE.len());
            for (k, count) in counts[&key].iter().enumerate() {
                assert!(buckets.windows(2).all(|w| w[0].1[k].v <= w[1].1[k].v));
                assert_eq!(buckets[HISTOGRAM_LE.len() - 1].1[k].v, count.v);
            }
            assert!(buckets[HISTOGRAM_LE.len() - 1].1[29].v > 0.0);
        }
    }

    #[test]
    fn the_realistic_mix_aligns_timestamps_and_idles_what_it_says() {
        let n = 2 * SERIES_PER_HOST;
        let mut noisy = Fleet::new(4, n, START, 15_000);
        let mut real = Fleet::with_mix(4, n, START, 15_000, Mix::Realistic);
        let (a, b) = (noisy.batch(0..n, 200), real.batch(0..n, 200));
        let (mut on_grid, mut total) = (0, 0);
        for (x, y) in a.series.iter().zip(&b.series) {
            assert_eq!(x.labels, y.labels);
            for (k, (sx, sy)) in x.samples.iter().zip(&y.samples).enumerate() {
                let slot = START + k as i64 * 15_000;
                // The same lateness, snapped to the slot within Prometheus's tolerance.
                if sx.t - slot <= PROMETHEUS_TIMESTAMP_TOLERANCE_MS {
                    assert_eq!(sy.t, slot);
                } else {
                    assert_eq!(sy.t, sx.t);
                }
                on_grid += usize::from(sy.t == slot);
                total += 1;
            }
            let moves = y.samples.windows(2).filter(|w| w[0].v != w[1].v).count();
            let name = y.labels.metric_name().unwrap_or("");
            if name == "node_memory_SwapFree_bytes" {
                assert_eq!(moves, 0);
            }
            if y.labels.get("device") == Some("docker0") && name.ends_with("_bytes_total") {
                assert!((5..=40).contains(&moves), "{moves} moves of {}", y.labels);
            }
            if y.labels.get("device") == Some("eth0") && name.ends_with("_bytes_total") {
                assert_eq!(moves, 199);
            }
        }
        let share = on_grid as f64 / total as f64;
        assert!((0.4..0.6).contains(&share), "{share} on the grid");
        assert_eq!("realistic".parse::<Mix>(), Ok(Mix::Realistic));
        assert!("other".parse::<Mix>().is_err());
    }

    #[test]
    fn batches_survive_the_remote_write_codec() {
        use vantage_proto::prom::remote::{decode_write_request, encode_write_request};
        let mut fleet = Fleet::new(2, SERIES_PER_HOST, START, 15_000);
        let batch = fleet.batch(0..fleet.len(), 3);
        let body = encode_write_request(&batch).expect("encodes");
        let decoded = decode_write_request(&body, 64 << 20).expect("decodes");
        assert_eq!(decoded.rejected_samples, 0);
        assert_eq!(decoded.batch, batch);
    }
}
