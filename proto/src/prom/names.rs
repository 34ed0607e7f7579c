//! Prometheus names from OTLP names: metric-name normalisation (unit and type
//! suffixes), label-name sanitising, and the float formatting of `le`/`quantile`.
//!
//! This mirrors the OpenTelemetry Collector's `pkg/translator/prometheus`
//! (`normalize_name.go`, `normalize_label.go`) with its name normalisation enabled,
//! which is also what Prometheus's own OTLP receiver does by default, so a dashboard
//! written against either finds the same names here. One deliberate difference: only
//! ASCII letters and digits are kept (Go's translator keeps any Unicode letter), because
//! Vantage's label names are `[a-zA-Z_][a-zA-Z0-9_]*` and a PromQL selector cannot name
//! anything else.

/// What kind of OTLP metric a name belongs to; the suffixes depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpKind {
    /// An OTLP gauge (the only kind that gets `_ratio` for unit `1`).
    Gauge,
    /// An OTLP sum; monotonic sums are Prometheus counters and get `_total`.
    Sum {
        /// Whether the sum only goes up.
        monotonic: bool,
    },
    /// An explicit-bucket histogram.
    Histogram,
    /// An exponential histogram.
    ExponentialHistogram,
    /// A summary.
    Summary,
}

/// OTLP (UCUM) units to Prometheus base-unit words, as the translator's `unitMap`.
/// `1` maps to nothing: a dimensionless count gets no unit word.
fn main_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        "$" => "dollars",
        other => other,
    }
}

/// The denominator of a `x/y` unit, as the translator's `perUnitMap` (singular).
fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// Splits on everything that is not an ASCII letter or digit, dropping empty pieces
/// (so `_` runs collapse and leading/trailing separators vanish).
fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// `CleanUpString`: the tokens of `s` joined by `_`.
fn clean_up(s: &str) -> String {
    tokens(s).collect::<Vec<_>>().join("_")
}

/// The unit words a metric of `unit` gets, e.g. `By/s` -> `["bytes", "per", "second"]`.
/// Annotations (`{packets}`) and blanks give nothing.
fn unit_words(unit: &str) -> (Option<String>, Option<String>) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let per = parts.next().unwrap_or("").trim();
    let keep = |u: &str| !u.is_empty() && !u.contains(['{', '}']);
    let main = keep(main)
        .then(|| clean_up(main_unit(main)))
        .filter(|s| !s.is_empty());
    let per = keep(per)
        .then(|| clean_up(per_unit(per)))
        .filter(|s| !s.is_empty());
    (main, per)
}

/// The unit as Prometheus spells it for metadata: `bytes`, `bytes_per_second`,
/// `ratio` for a dimensionless gauge, empty when OTLP's unit carries no Prometheus
/// unit (`1` on a non-gauge, `{requests}`, blank).
pub fn prometheus_unit(unit: &str, kind: OtlpKind) -> String {
    if unit == "1" && kind == OtlpKind::Gauge {
        return "ratio".to_owned();
    }
    match unit_words(unit) {
        (Some(m), Some(p)) => format!("{m}_per_{p}"),
        (Some(m), None) => m,
        (None, Some(p)) => format!("per_{p}"),
        (None, None) => String::new(),
    }
}

/// The Prometheus metric name of an OTLP metric (for histograms and summaries, the
/// family name without `_bucket`/`_sum`/`_count`).
///
/// Rules, in the translator's order: split the name into ASCII alphanumeric tokens;
/// append the unit word unless it is already one of the tokens; append `per_<unit>`
/// for a `x/y` unit likewise; a monotonic sum gets `total` moved to the end; a gauge
/// with unit `1` gets `ratio` moved to the end; join with `_`; prefix `_` when the
/// result starts with a digit. Returns an empty string when nothing usable remains
/// (the caller rejects such a metric).
pub fn normalize_metric_name(name: &str, unit: &str, kind: OtlpKind) -> String {
    let mut toks: Vec<String> = tokens(name).map(str::to_owned).collect();
    let (main, per) = unit_words(unit);
    if let Some(m) = main
        && !toks.contains(&m)
    {
        toks.push(m);
    }
    if let Some(p) = per
        && !toks.contains(&p)
    {
        toks.push("per".to_owned());
        toks.push(p);
    }
    if kind == (OtlpKind::Sum { monotonic: true }) {
        toks.retain(|t| t != "total");
        toks.push("total".to_owned());
    }
    if unit == "1" && kind == OtlpKind::Gauge {
        toks.retain(|t| t != "ratio");
        toks.push("ratio".to_owned());
    }
    let out = toks.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{out}")
    } else {
        out
    }
}

/// A Prometheus label name from an OTLP attribute key: every character other than an
/// ASCII letter or digit becomes `_`; a leading digit gets `key_` in front; a single
/// leading `_` gets `key` in front (`_x` -> `key_x`, while `__x` stays reserved-looking
/// as the translator leaves it). Empty stays empty (the caller drops it).
pub fn sanitize_label_name(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    let s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{s}")
    } else if s.starts_with('_') && !s.starts_with("__") {
        format!("key{s}")
    } else {
        s
    }
}

/// Whether `name` is a valid Prometheus label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a valid Prometheus metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A bucket bound or quantile as a label value, as the translator writes it
/// (Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits that round-trip, no
/// exponent), with `+Inf`/`-Inf`/`NaN` spelled as Prometheus spells them.
pub fn format_float_label(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f == f64::INFINITY {
        "+Inf".to_owned()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        // Rust's `Display` for f64 is the shortest round-trip form without exponent,
        // which is exactly Go's 'f' with precision -1.
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: OtlpKind = OtlpKind::Gauge;
    const C: OtlpKind = OtlpKind::Sum { monotonic: true };
    const UD: OtlpKind = OtlpKind::Sum { monotonic: false };

    fn n(name: &str, unit: &str, kind: OtlpKind) -> String {
        normalize_metric_name(name, unit, kind)
    }

    // Cases from the translator's normalize_name_test.go.
    #[test]
    fn translator_cases_units_and_suffixes() {
        let cases: &[(&str, &str, OtlpKind, &str)] = &[
            (
                "system.filesystem.usage",
                "By",
                G,
                "system_filesystem_usage_bytes",
            ),
            ("system.io", "By", C, "system_io_bytes_total"),
            (
                "network_transmitted_bytes_total",
                "By",
                C,
                "network_transmitted_bytes_total",
            ),
            (
                "\t system.filesystem.usage       ",
                "  By\t",
                G,
                "system_filesystem_usage_bytes",
            ),
            (
                "system.network.dropped",
                "{packets}",
                G,
                "system_network_dropped",
            ),
            (
                "system.network.dropped",
                "{packets}",
                C,
                "system_network_dropped_total",
            ),
            (
                "system.network.dropped",
                "packets",
                G,
                "system_network_dropped_packets",
            ),
            (
                "system.network.packets.dropped",
                "packets",
                G,
                "system_network_packets_dropped",
            ),
            (
                "system.network.packets",
                "packets",
                G,
                "system_network_packets",
            ),
            (
                "system.network.dropped",
                "packets",
                C,
                "system_network_dropped_packets_total",
            ),
            (
                "system.network.packets",
                "packets",
                C,
                "system_network_packets_total",
            ),
            (
                "hw.gpu.memory.utilization",
                "1",
                G,
                "hw_gpu_memory_utilization_ratio",
            ),
            ("hw.fan.speed_ratio", "1", G, "hw_fan_speed_ratio"),
            ("objects", "1", C, "objects_total"),
            ("hw.cpu.speed_limit", "Hz", G, "hw_cpu_speed_limit_hertz"),
            (
                "broken.metric.speed",
                "km/h",
                G,
                "broken_metric_speed_km_per_hour",
            ),
            (
                "astro.light.speed_limit",
                "m/s",
                G,
                "astro_light_speed_limit_meters_per_second",
            ),
            (
                "broken.metric.success_ratio",
                "%",
                G,
                "broken_metric_success_ratio_percent",
            ),
            (
                "broken.metric.success_percent",
                "%",
                G,
                "broken_metric_success_percent",
            ),
            (
                "crypto.bitcoin.value",
                "$",
                G,
                "crypto_bitcoin_value_dollars",
            ),
            (
                "crypto.bitcoin.value.dollars",
                "$",
                G,
                "crypto_bitcoin_value_dollars",
            ),
            ("test.metric.no_unit", "", G, "test_metric_no_unit"),
            ("test.metric.spaces", "   \t  ", G, "test_metric_spaces"),
            (
                "unsupported.metric.temperature",
                "°F",
                G,
                "unsupported_metric_temperature_F",
            ),
            (
                "unsupported.metric.weird",
                "+=.:,!* & #",
                G,
                "unsupported_metric_weird",
            ),
            (
                "unsupported.metric.redundant",
                "__test $/°C",
                G,
                "unsupported_metric_redundant_test_per_C",
            ),
            (
                "active_directory.ds.replication.object.rate",
                "{objects}/s",
                G,
                "active_directory_ds_replication_object_rate_per_second",
            ),
            (
                "active_directory.ds.ldap.bind.last_successful.time",
                "ms",
                G,
                "active_directory_ds_ldap_bind_last_successful_time_milliseconds",
            ),
            (
                "apache.workers",
                "connections",
                G,
                "apache_workers_connections",
            ),
            ("apache.requests", "1", C, "apache_requests_total"),
            (
                "system.cpu.utilization",
                "1",
                G,
                "system_cpu_utilization_ratio",
            ),
            (
                "system.disk.operation_time",
                "s",
                C,
                "system_disk_operation_time_seconds_total",
            ),
            (
                "system.cpu.load_average.15m",
                "1",
                G,
                "system_cpu_load_average_15m_ratio",
            ),
            (
                "mongodbatlas.process.journaling.data_files",
                "MiBy",
                G,
                "mongodbatlas_process_journaling_data_files_mebibytes",
            ),
            (
                "mongodbatlas.process.network.io",
                "By/s",
                G,
                "mongodbatlas_process_network_io_bytes_per_second",
            ),
            (
                "mongodbatlas.process.oplog.rate",
                "GiBy/h",
                G,
                "mongodbatlas_process_oplog_rate_gibibytes_per_hour",
            ),
            (
                "mongodbatlas.process.db.query_targeting.scanned_per_returned",
                "{scanned}/{returned}",
                G,
                "mongodbatlas_process_db_query_targeting_scanned_per_returned",
            ),
            (
                "nsxt.node.memory.usage",
                "KBy",
                G,
                "nsxt_node_memory_usage_kilobytes",
            ),
            (
                "redis.latest_fork",
                "us",
                G,
                "redis_latest_fork_microseconds",
            ),
            ("3.14 digits", "", G, "_3_14_digits"),
            (
                "envoy__rule_engine_zlib_buf_error",
                "",
                G,
                "envoy_rule_engine_zlib_buf_error",
            ),
            (":foo::bar", "", G, "foo_bar"),
            (":foo::bar", "", C, "foo_bar_total"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(&n(name, unit, *kind), want, "{name} [{unit}] {kind:?}");
        }
    }

    #[test]
    fn ratio_only_for_gauges_and_total_only_for_monotonic_sums() {
        assert_eq!(n("queue.depth", "1", UD), "queue_depth");
        assert_eq!(n("queue.depth", "1", OtlpKind::Histogram), "queue_depth");
        assert_eq!(
            n("http.server.duration", "s", OtlpKind::Histogram),
            "http_server_duration_seconds"
        );
        assert_eq!(n("requests_total", "", UD), "requests_total");
        assert_eq!(n("total.requests.total", "", C), "requests_total");
    }

    #[test]
    fn unusable_names_become_empty() {
        assert_eq!(n("%%%", "", G), "");
        assert_eq!(n("", "", G), "");
        // Non-ASCII letters are not kept (Prometheus names are ASCII).
        assert_eq!(n("température", "", G), "temp_rature");
    }

    #[test]
    fn prometheus_units() {
        assert_eq!(prometheus_unit("By/s", G), "bytes_per_second");
        assert_eq!(prometheus_unit("s", C), "seconds");
        assert_eq!(prometheus_unit("1", G), "ratio");
        assert_eq!(prometheus_unit("1", C), "");
        assert_eq!(prometheus_unit("{requests}", C), "");
        assert_eq!(prometheus_unit("{objects}/s", G), "per_second");
    }

    #[test]
    fn label_sanitising() {
        assert_eq!(sanitize_label_name("http.method"), "http_method");
        assert_eq!(sanitize_label_name("0abc"), "key_0abc");
        assert_eq!(sanitize_label_name("_abc"), "key_abc");
        assert_eq!(sanitize_label_name("__abc"), "__abc");
        assert_eq!(sanitize_label_name("a-b/c d"), "a_b_c_d");
        assert_eq!(sanitize_label_name("é"), "key_");
        assert_eq!(sanitize_label_name(""), "");
        for k in ["http.method", "0abc", "_abc", "a-b/c d", "é", "ü1"] {
            assert!(is_valid_label_name(&sanitize_label_name(k)), "{k}");
        }
    }

    #[test]
    fn validity_checks() {
        assert!(is_valid_label_name("job"));
        assert!(is_valid_label_name("_x9"));
        assert!(!is_valid_label_name("9x"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name(""));
        assert!(is_valid_metric_name("a:b_c"));
        assert!(is_valid_metric_name(":x"));
        assert!(!is_valid_metric_name("1x"));
        assert!(!is_valid_metric_name("a.b"));
    }

    #[test]
    fn float_labels_like_go_f_minus_one() {
        assert_eq!(format_float_label(1.0), "1");
        assert_eq!(format_float_label(0.5), "0.5");
        assert_eq!(format_float_label(0.005), "0.005");
        assert_eq!(format_float_label(1e-7), "0.0000001");
        assert_eq!(format_float_label(2.5e6), "2500000");
        assert_eq!(format_float_label(f64::INFINITY), "+Inf");
        assert_eq!(format_float_label(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float_label(-0.25), "-0.25");
    }
}
