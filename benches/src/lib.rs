//! Deterministic OTLP log-record generator shared by `vantage-loadgen` and the
//! benchmarks.
//!
//! [`log_batch`] builds one `ExportLogsServiceRequest` from a seed and a record index,
//! so the same arguments always give the same bytes and a benchmark can regenerate the
//! exact data a load run sent. Record content (body, severity, attributes, ids) depends
//! only on `(seed, record index)`, never on how records were split into batches; the
//! resource and the timestamps depend on the batch.
//!
//! Bodies are a templated log message (an HTTP access line, a cache miss, a
//! "connection reset by peer", …) followed by words drawn from a fixed vocabulary of
//! [`VOCABULARY_SIZE`] words with a Zipf-like rank distribution, mixed with numbers, hex
//! ids, `key=value` pairs and IP-like tokens. [`query_terms`] names words whose
//! frequency is known, for search benchmarks.

#![warn(missing_docs)]

pub mod ceiling;
pub mod collector;
pub mod metrics;
pub mod nodecap;
pub mod otlp_wire;
pub mod process;
pub mod procfs;

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use vantage_proto::otlp::resource::v1::Resource;

/// `service.name` values; each batch picks one.
pub const SERVICE_NAMES: [&str; 5] = ["checkout", "payments", "inventory", "auth", "frontend"];

/// `host.name` values; service `i` runs on hosts `4 * i .. 4 * i + 4`.
#[rustfmt::skip]
pub const HOST_NAMES: [&str; 20] = [
    "ip-10-0-1-11", "ip-10-0-1-12", "ip-10-0-1-13", "ip-10-0-1-14", // checkout
    "ip-10-0-2-21", "ip-10-0-2-22", "ip-10-0-2-23", "ip-10-0-2-24", // payments
    "ip-10-0-3-31", "ip-10-0-3-32", "ip-10-0-3-33", "ip-10-0-3-34", // inventory
    "ip-10-0-4-41", "ip-10-0-4-42", "ip-10-0-4-43", "ip-10-0-4-44", // auth
    "ip-10-0-5-51", "ip-10-0-5-52", "ip-10-0-5-53", "ip-10-0-5-54", // frontend
];

const HOSTS_PER_SERVICE: usize = HOST_NAMES.len() / SERVICE_NAMES.len();

/// Number of distinct words bodies draw from: the hand-written list below, then
/// pronounceable synthetic words up to this size. A few thousand words gives term
/// dictionaries and posting lists a realistic shape.
pub const VOCABULARY_SIZE: usize = 4096;

/// Vocabulary rank of [`QueryTerms::common`]: drawn with probability
/// ln(6/5) / ln(4097) ≈ 2.2 % per word, so it is in roughly 40 % of 200-byte bodies.
const COMMON_RANK: usize = 4;

/// Vocabulary rank of [`QueryTerms::rare`]: drawn with probability
/// ln(2502/2501) / ln(4097) ≈ 0.005 % per word, so it is in roughly 0.1 % of
/// 200-byte bodies.
const RARE_RANK: usize = 2500;

/// Spacing of `time_unix_nano` between consecutive records of one batch.
const RECORD_SPACING_NS: u64 = 1_000;

/// Upper bound of the random delay between `time_unix_nano` and
/// `observed_time_unix_nano`; times are placed so that observed times never exceed
/// `now_ns`.
const MAX_OBSERVE_LAG_NS: u64 = 2_000_000;

/// Users are drawn log-uniformly (Zipf-like) from this many ids.
const USER_COUNT: u64 = 100_000;

/// Words with a known frequency in generated bodies, for search benchmarks.
///
/// Fractions are of records with the default 200-byte body; longer bodies contain more
/// vocabulary words, so `common` and `rare` become more frequent while `phrase` (which
/// comes from the message templates) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryTerms {
    /// A frequent word: in roughly 40 % of records.
    pub common: &'static str,
    /// An infrequent word: in roughly 0.1 % of records.
    pub rare: &'static str,
    /// A two-word phrase from the WARN and ERROR templates ("connection reset"): in
    /// roughly 2 % of records.
    pub phrase: &'static str,
    /// A word that is never generated: queries for it match nothing.
    pub absent: &'static str,
}

/// Words and a phrase of known frequency; see [`QueryTerms`].
pub fn query_terms() -> QueryTerms {
    let words = vocabulary();
    QueryTerms {
        common: &words[COMMON_RANK],
        rare: &words[RARE_RANK],
        phrase: "connection reset",
        absent: "xylophone",
    }
}

/// The vocabulary in rank order: index 0 is the most frequent word.
pub fn vocabulary() -> &'static [Box<str>] {
    static VOCABULARY: OnceLock<Vec<Box<str>>> = OnceLock::new();
    VOCABULARY.get_or_init(build_vocabulary)
}

/// Builds one export request of `batch_size` records, numbered from `start_index`.
///
/// All records share one `ResourceLogs` (a service and one of its hosts, chosen from
/// `seed` and `start_index`) and one scope. Record `k` of the batch has
/// `time_unix_nano = now_ns - 2 ms - (batch_size - 1 - k) µs`, so times increase
/// through the batch and end just before `now_ns`; the observed time is up to 2 ms
/// later, never after `now_ns`.
///
/// Bodies are about `body_bytes` long: at most `body_bytes`, and at most ~20 bytes
/// shorter, unless the templated message alone is longer (short `body_bytes`), in which
/// case the body is just the message.
pub fn log_batch(
    seed: u64,
    start_index: u64,
    batch_size: usize,
    body_bytes: usize,
    now_ns: u64,
) -> ExportLogsServiceRequest {
    let words = vocabulary();
    let mut batch_rng = Rng::for_key(seed, start_index, Stream::Resource);
    let service = batch_rng.below(SERVICE_NAMES.len() as u64) as usize;
    let host = service * HOSTS_PER_SERVICE + batch_rng.below(HOSTS_PER_SERVICE as u64) as usize;
    let service_name = SERVICE_NAMES[service];

    let last_time_ns = now_ns.saturating_sub(MAX_OBSERVE_LAG_NS);
    let log_records = (0..batch_size)
        .map(|k| {
            let index = start_index + k as u64;
            let behind = (batch_size - 1 - k) as u64 * RECORD_SPACING_NS;
            let time_ns = last_time_ns.saturating_sub(behind);
            log_record(words, seed, index, body_bytes, time_ns)
        })
        .collect();

    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name", service_name),
                    string_kv("host.name", HOST_NAMES[host]),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: format!("com.example.{service_name}"),
                    version: "2.3.0".to_owned(),
                    ..Default::default()
                }),
                log_records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Text bytes a request carries, as an honest "raw log bytes" figure: bodies, severity
/// texts, every attribute key and value (record, scope and resource; resource and scope
/// counted once per `ResourceLogs`/`ScopeLogs`, as sent) and scope names and versions.
/// Numbers count as the length of their decimal text, bytes values as their length.
/// Timestamps, severity numbers, flags and trace/span ids are not counted.
pub fn raw_text_len(req: &ExportLogsServiceRequest) -> usize {
    let mut total = 0;
    for resource_logs in &req.resource_logs {
        if let Some(resource) = &resource_logs.resource {
            total += attributes_len(&resource.attributes);
        }
        for scope_logs in &resource_logs.scope_logs {
            if let Some(scope) = &scope_logs.scope {
                total += scope.name.len() + scope.version.len() + attributes_len(&scope.attributes);
            }
            for record in &scope_logs.log_records {
                total += record.severity_text.len()
                    + record.body.as_ref().map_or(0, any_value_len)
                    + attributes_len(&record.attributes);
            }
        }
    }
    total
}

/// Number of log records in a request (the one definition, in `vantage-proto`).
pub use vantage_proto::logs::record_count;

fn attributes_len(attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, any_value_len))
        .sum()
}

fn any_value_len(value: &AnyValue) -> usize {
    use any_value::Value;
    match &value.value {
        None => 0,
        Some(Value::StringValue(s)) => s.len(),
        Some(Value::BoolValue(b)) => display_len(b),
        Some(Value::IntValue(i)) => display_len(i),
        Some(Value::DoubleValue(d)) => display_len(d),
        Some(Value::BytesValue(b)) => b.len(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(any_value_len).sum(),
        Some(Value::KvlistValue(kvs)) => attributes_len(&kvs.values),
        // An index into a dictionary this crate never sends; no text of its own.
        Some(Value::StringValueStrindex(_)) => 0,
    }
}

/// Length of a value's `Display` text, without allocating it.
fn display_len(value: &impl fmt::Display) -> usize {
    struct Counter(usize);
    impl fmt::Write for Counter {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Counter never fails.
    let _ = write!(counter, "{value}");
    counter.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Debug,
    Info,
    Warn,
    Error,
}

impl Severity {
    /// 10 % DEBUG, 78 % INFO, 8 % WARN, 4 % ERROR.
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..10 => Self::Debug,
            10..88 => Self::Info,
            88..96 => Self::Warn,
            _ => Self::Error,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }

    fn number(self) -> SeverityNumber {
        match self {
            Self::Debug => SeverityNumber::Debug,
            Self::Info => SeverityNumber::Info,
            Self::Warn => SeverityNumber::Warn,
            Self::Error => SeverityNumber::Error,
        }
    }
}

/// Per-record values that appear both as attributes and inside the message.
struct Request {
    method: &'static str,
    status: i64,
    duration_ms: f64,
    user: u64,
}

impl Request {
    fn draw(rng: &mut Rng, severity: Severity) -> Self {
        let method = match rng.below(100) {
            0..70 => "GET",
            70..90 => "POST",
            90..95 => "PUT",
            _ => "DELETE",
        };
        let (statuses, mean_ms): (&[i64], f64) = match severity {
            Severity::Debug | Severity::Info => (&[200, 200, 200, 200, 200, 201, 204, 304], 25.0),
            Severity::Warn => (&[400, 401, 403, 404, 404, 409, 429, 429], 400.0),
            Severity::Error => (&[500, 500, 502, 503, 503, 504], 1500.0),
        };
        let status = statuses[rng.below(statuses.len() as u64) as usize];
        // Exponential around the mean, rounded to microseconds as a tracer would.
        let duration_ms = (-(1.0 - rng.unit()).ln() * mean_ms * 1000.0).round() / 1000.0;
        let user = rng.zipf(USER_COUNT as usize) as u64;
        Self {
            method,
            status,
            duration_ms,
            user,
        }
    }
}

fn log_record(
    words: &[Box<str>],
    seed: u64,
    index: u64,
    body_bytes: usize,
    time_ns: u64,
) -> LogRecord {
    let mut rng = Rng::for_key(seed, index, Stream::Record);
    let severity = Severity::draw(&mut rng);
    let request = Request::draw(&mut rng, severity);
    let observed_ns = time_ns + rng.below(MAX_OBSERVE_LAG_NS + 1);

    let mut body = String::with_capacity(body_bytes.max(64) + 16);
    write_message(&mut body, &mut rng, severity, &request);
    pad_with_words(&mut body, &mut rng, words, body_bytes);

    let user_id = format!("u-{:06}", request.user);
    let (trace_id, span_id, flags) = if rng.below(2) == 0 {
        (rng.bytes::<16>().to_vec(), rng.bytes::<8>().to_vec(), 1)
    } else {
        (Vec::new(), Vec::new(), 0)
    };

    LogRecord {
        time_unix_nano: time_ns,
        observed_time_unix_nano: observed_ns,
        severity_number: severity.number() as i32,
        severity_text: severity.text().to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: vec![
            string_kv("http.method", request.method),
            kv(
                "http.status_code",
                any_value::Value::IntValue(request.status),
            ),
            kv("user.id", any_value::Value::StringValue(user_id)),
            kv(
                "duration_ms",
                any_value::Value::DoubleValue(request.duration_ms),
            ),
        ],
        dropped_attributes_count: 0,
        flags,
        trace_id,
        span_id,
        event_name: String::new(),
    }
}

const TOPICS: [&str; 4] = ["orders", "payments", "inventory-events", "audit"];
const TABLES: [&str; 5] = ["orders", "users", "line_items", "payments", "sessions"];
const PORTS: [u16; 6] = [443, 5432, 6379, 8080, 9092, 9200];

/// Writes the templated part of a body. Templates are chosen Zipf-like within the
/// severity, so the first template of each list dominates, as in real services.
fn write_message(out: &mut String, rng: &mut Rng, severity: Severity, r: &Request) {
    let ms = r.duration_ms.round();
    // Writing to a String cannot fail; `w!` drops the always-Ok result.
    macro_rules! w {
        ($($arg:tt)*) => {{ let _ = write!(out, $($arg)*); }};
    }
    match severity {
        Severity::Debug => match rng.zipf(4) {
            0 => {
                w!("cache miss for key ");
                write_cache_key(out, rng, r);
            }
            1 => {
                w!("opening connection to ");
                write_ip_port(out, rng);
                w!(" pool size {}", 1 + rng.below(64));
            }
            2 => w!(
                "parsed request headers count={} bytes={}",
                3 + rng.below(30),
                200 + rng.below(4000)
            ),
            _ => {
                w!("span ");
                write_hex(out, rng, 16);
                w!(" started parent ");
                write_hex(out, rng, 16);
            }
        },
        Severity::Info => match rng.zipf(7) {
            0 => {
                w!("{} ", r.method);
                write_path(out, rng, r);
                w!(" completed with status {} in {ms} ms", r.status);
            }
            1 => {
                w!("user u-{:06} logged in from ", r.user);
                write_ip(out, rng);
            }
            2 => {
                w!("cache hit for key ");
                write_cache_key(out, rng, r);
            }
            3 => {
                w!("order ");
                write_hex(out, rng, 12);
                w!(
                    " created for user u-{:06} total {}.{:02}",
                    r.user,
                    rng.below(500),
                    rng.below(100)
                );
            }
            4 => w!(
                "published {} messages to topic {} partition {}",
                1 + rng.below(500),
                TOPICS[rng.below(TOPICS.len() as u64) as usize],
                rng.below(12)
            ),
            5 => {
                w!("scheduled job ");
                write_hex(out, rng, 8);
                w!(" finished in {ms} ms");
            }
            _ => {
                w!("health check passed for upstream ");
                write_ip_port(out, rng);
            }
        },
        Severity::Warn => match rng.zipf(5) {
            0 => {
                w!("{} ", r.method);
                write_path(out, rng, r);
                w!(" returned status {} in {ms} ms", r.status);
            }
            1 => w!(
                "slow query on table {} took {ms} ms rows={}",
                TABLES[rng.below(TABLES.len() as u64) as usize],
                rng.below(100_000)
            ),
            2 => {
                w!("connection reset by peer ");
                write_ip_port(out, rng);
                w!(", reconnecting");
            }
            3 => {
                w!("retrying upstream request to ");
                write_ip_port(out, rng);
                w!(" attempt {} of 5", 1 + rng.below(5));
            }
            _ => w!(
                "rate limit approaching for user u-{:06} ({} requests per minute)",
                r.user,
                500 + rng.below(500)
            ),
        },
        Severity::Error => match rng.zipf(5) {
            0 => {
                w!("{} ", r.method);
                write_path(out, rng, r);
                w!(" failed with status {} after {ms} ms", r.status);
            }
            1 => {
                w!("connection reset by peer ");
                write_ip_port(out, rng);
                w!(" while writing response");
            }
            2 => {
                w!("failed to process order ");
                write_hex(out, rng, 12);
                w!(": upstream timeout after {ms} ms");
            }
            3 => {
                w!("database transaction ");
                write_hex(out, rng, 8);
                w!(" rolled back: deadlock detected");
            }
            _ => w!(
                "unhandled exception in worker {}: null pointer dereference",
                rng.below(16)
            ),
        },
    }
}

fn write_path(out: &mut String, rng: &mut Rng, r: &Request) {
    let _ = match rng.zipf(7) {
        0 => write!(out, "/api/v1/products/{}", rng.zipf(50_000)),
        1 => write!(out, "/api/v1/users/u-{:06}", r.user),
        2 => write!(out, "/api/v1/cart"),
        3 => {
            out.push_str("/api/v1/orders/");
            write_hex(out, rng, 12);
            Ok(())
        }
        4 => write!(out, "/api/v1/payments"),
        5 => write!(out, "/login"),
        _ => write!(out, "/healthz"),
    };
}

fn write_cache_key(out: &mut String, rng: &mut Rng, r: &Request) {
    let _ = if rng.below(2) == 0 {
        write!(out, "user:u-{:06}:profile", r.user)
    } else {
        write!(out, "product:{}", rng.zipf(50_000))
    };
}

fn write_ip(out: &mut String, rng: &mut Rng) {
    let _ = write!(
        out,
        "10.{}.{}.{}",
        rng.below(4),
        rng.below(256),
        1 + rng.below(254)
    );
}

fn write_ip_port(out: &mut String, rng: &mut Rng) {
    write_ip(out, rng);
    let _ = write!(out, ":{}", PORTS[rng.below(PORTS.len() as u64) as usize]);
}

fn write_hex(out: &mut String, rng: &mut Rng, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = rng.next_u64();
    for i in 0..digits {
        if i % 16 == 0 && i > 0 {
            bits = rng.next_u64();
        }
        out.push(HEX[(bits & 0xf) as usize] as char);
        bits >>= 4;
    }
}

/// Appends space-separated tokens while the body stays within `body_bytes`: mostly
/// vocabulary words, with some numbers, `key=value` pairs, hex ids and IP addresses.
fn pad_with_words(out: &mut String, rng: &mut Rng, words: &[Box<str>], body_bytes: usize) {
    while out.len() < body_bytes {
        let before = out.len();
        out.push(' ');
        match rng.below(100) {
            0..88 => out.push_str(&words[rng.zipf(words.len())]),
            88..92 => {
                let _ = write!(out, "{}", rng.below(1000));
            }
            92..94 => {
                let _ = write!(out, "{}", rng.next_u64() >> 44);
            }
            94..96 => {
                let _ = write!(out, "{}={}", words[rng.zipf(64)], rng.below(10_000));
            }
            96..98 => write_hex(out, rng, 8),
            _ => write_ip(out, rng),
        }
        if out.len() > body_bytes {
            out.truncate(before);
            break;
        }
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Independent random streams derived from the same `(seed, index)`.
#[derive(Clone, Copy)]
enum Stream {
    Resource = 1,
    Record = 2,
    Vocabulary = 3,
}

/// splitmix64: tiny, fast, and statistically good enough for test data.
struct Rng(u64);

impl Rng {
    fn for_key(seed: u64, index: u64, stream: Stream) -> Self {
        let mixed = mix64(seed ^ mix64(index ^ ((stream as u64) << 56)));
        Self(mixed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (multiply-shift; the bias for small `n` is negligible here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Zipf-like rank in `0..n`: `P(k) = ln((k + 2) / (k + 1)) / ln(n + 1)`, close to a
    /// Zipf law with exponent 1, sampled without a table.
    fn zipf(&mut self, n: usize) -> usize {
        let rank = (n as f64 + 1.0).powf(self.unit()) as usize;
        rank.saturating_sub(1).min(n - 1)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for chunk in out.chunks_mut(8) {
            let bits = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bits[..chunk.len()]);
        }
        out
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hand-written words, most frequent first; synthetic words follow them in rank order.
#[rustfmt::skip]
const BASE_WORDS: &[&str] = &[
    // Function words and very common log words.
    "the", "to", "for", "and", "session", "of", "in", "on", "with", "is", "from", "at", "by",
    "not", "was", "will", "be", "after", "before", "new", "request", "user", "service", "data",
    "value", "client", "server", "time", "event", "id", "state", "node", "cluster", "queue",
    "message", "token", "account", "cache", "update", "read", "write", "open", "close", "start",
    "stop", "ready", "pending", "active", "idle", "running", "received", "sent", "processing",
    "processed", "handled", "accepted", "rejected", "skipped", "loaded", "saved", "stored",
    "deleted", "created", "updated", "enqueued", "dequeued", "flushed", "committed", "scheduled",
    "expired", "refreshed", "validated", "resolved", "retry", "backoff", "batch", "buffer",
    "stream", "socket", "channel", "handler", "router", "gateway", "proxy", "backend",
    "frontend", "endpoint", "route", "header", "payload", "body", "field", "schema", "record",
    "index", "shard", "segment", "replica", "leader", "follower", "partition", "offset", "lag",
    "commit", "snapshot", "checkpoint", "journal", "log", "metric", "trace", "span", "sample",
    "config", "setting", "option", "flag", "feature", "version", "release", "deploy", "rollout",
    "build", "image", "container", "pod", "volume", "disk", "memory", "cpu", "thread",
    "process", "task", "job", "worker", "pool", "lock", "mutex", "semaphore", "timer", "clock",
    "deadline", "budget", "quota", "limit", "threshold", "window", "interval", "period",
    "duration", "latency", "throughput", "bandwidth", "capacity", "usage", "load", "pressure",
    "spike", "burst", "drop", "loss", "error", "warning", "notice", "info", "debug", "fatal",
    "panic", "crash", "restart", "recover", "healthy", "unhealthy", "degraded", "available",
    "unavailable", "online", "offline", "primary", "secondary", "standby", "failover",
    "migration", "upgrade", "downgrade", "rollback", "patch", "hotfix", "tenant", "customer",
    "merchant", "vendor", "product", "catalog", "inventory", "stock", "warehouse", "shipment",
    "delivery", "invoice", "receipt", "refund", "charge", "card", "wallet", "balance", "ledger",
    "transfer", "price", "discount", "coupon", "cart", "checkout", "basket", "wishlist",
    "review", "rating", "search", "filter", "sort", "page", "cursor", "query", "result",
    "response", "status", "code", "reason", "cause", "detail", "context", "scope", "region",
    "zone", "datacenter", "rack", "host", "address", "port", "domain", "certificate", "tls",
    "handshake", "cipher", "key", "secret", "credential", "password", "login", "logout",
    "signup", "profile", "avatar", "email", "phone", "notification", "alert", "incident",
    "oncall", "pager", "ticket", "comment",
    // Plain English, less frequent.
    "quick", "slow", "large", "small", "empty", "full", "valid", "invalid", "missing",
    "unknown", "default", "custom", "local", "remote", "internal", "external", "public",
    "private", "shared", "global", "daily", "hourly", "weekly", "monthly", "first", "last",
    "next", "previous", "current", "initial", "final", "partial", "complete", "total",
    "average", "maximum", "minimum", "median", "count", "number", "amount", "size", "length",
    "width", "height", "weight", "color", "blue", "green", "red", "yellow", "black", "white",
    "orange", "purple", "apple", "banana", "river", "mountain", "forest", "ocean", "island",
    "valley", "desert", "garden", "bridge", "tower", "castle", "village", "city", "street",
    "market", "school", "library", "museum", "station", "airport", "harbor", "office",
    "factory", "kitchen", "morning", "evening", "night", "today", "tomorrow", "yesterday",
    "spring", "summer", "autumn", "winter", "north", "south", "east", "west", "center",
    "border", "corner", "edge", "surface", "layer", "level", "stage", "phase", "step", "round",
    "cycle", "loop", "branch", "tree", "leaf", "root", "seed", "flower", "grass", "stone",
    "metal", "glass", "paper", "cotton", "silver", "golden", "copper", "iron", "steel",
    "engine", "motor", "wheel", "signal", "sensor", "device", "gadget", "machine", "robot",
    "pilot", "driver", "rider", "player", "member", "owner", "admin", "operator", "guest",
    "visitor", "author", "editor", "reader", "viewer", "listener", "speaker", "teacher",
    "student", "doctor", "farmer", "baker", "painter", "writer", "singer", "dancer", "hunter",
    "captain", "soldier", "sailor", "traveler", "stranger", "neighbor", "friend", "partner",
    "family", "parent", "child", "brother", "sister", "cousin", "uncle", "nephew", "journey",
    "voyage", "mission", "project", "program", "plan", "strategy", "policy", "rule", "law",
    "contract", "agreement", "promise", "answer", "question", "problem", "solution", "idea",
    "theory", "method", "approach", "pattern", "model", "design", "sketch", "draft", "story",
    "chapter", "section", "paragraph", "sentence", "word", "letter", "symbol", "digit",
    "figure", "chart", "table", "column", "row", "cell", "grid", "map", "list", "set", "array",
    "vector", "matrix", "graph", "vertex", "circle", "square", "triangle",
    "sphere", "cube", "angle", "curve", "line", "point", "dot", "spot", "mark", "label", "tag",
    "badge", "banner", "button", "slider", "toggle", "switch", "lever", "handle", "knob",
    "dial", "gauge", "meter", "scale", "ruler", "compass", "anchor", "harness", "ladder",
    "rope", "chain", "cable", "wire", "pipe", "valve", "pump", "tank", "barrel", "bucket",
    "basin", "fountain", "lantern", "candle", "torch", "beacon", "mirror", "lens", "prism",
    "crystal", "diamond", "pearl", "emerald", "ruby", "sapphire", "amber", "ivory", "marble",
    "granite", "velvet", "silk", "linen", "wool", "leather", "feather", "shadow", "thunder",
    "lightning", "rainbow", "storm", "breeze", "cloud", "fog", "mist", "frost", "snow", "ice",
    "flame", "ember", "ash", "smoke", "dust", "sand", "clay", "mud", "pebble", "boulder",
    "cliff", "canyon", "meadow", "prairie", "tundra", "glacier", "volcano", "lagoon", "delta",
    "harvest", "orchard", "vineyard", "pasture", "cottage", "mansion", "palace", "temple",
    "chapel", "tavern", "bakery", "workshop", "studio", "gallery", "theater", "stadium",
    "arena", "plaza", "avenue", "alley", "highway", "tunnel", "harbour", "pier", "lighthouse",
];

/// Syllables for the synthetic part of the vocabulary: pronounceable and lower-case,
/// without `x`, `y`, `p` or `h`, so [`QueryTerms::absent`] ("xylophone") can never be
/// generated.
const SYLLABLES: [&str; 40] = [
    "ba", "be", "bi", "bo", "da", "de", "di", "do", "ka", "ke", "ko", "la", "le", "li", "lo", "ma",
    "me", "mi", "mo", "na", "ne", "ni", "no", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta",
    "te", "ti", "to", "va", "ve", "vi", "tor", "len",
];
const ENDINGS: [&str; 6] = ["", "n", "r", "s", "l", "t"];

fn build_vocabulary() -> Vec<Box<str>> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(VOCABULARY_SIZE);
    let mut words: Vec<Box<str>> = Vec::with_capacity(VOCABULARY_SIZE);
    for &word in BASE_WORDS {
        if seen.insert(word) {
            words.push(word.into());
        }
    }
    let mut synthetic: HashSet<String> = HashSet::new();
    let mut rng = Rng::for_key(0, 0, Stream::Vocabulary);
    while words.len() < VOCABULARY_SIZE {
        let syllables = 2 + rng.below(2) as usize;
        let mut word = String::with_capacity(8);
        for _ in 0..syllables {
            word.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
        }
        let ending = ENDINGS[rng.below(ENDINGS.len() as u64) as usize];
        if word.ends_with(['a', 'e', 'i', 'o']) {
            word.push_str(ending);
        }
        if !seen.contains(word.as_str()) && synthetic.insert(word.clone()) {
            words.push(word.into());
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_NS: u64 = 1_750_000_000_000_000_000;

    fn records(req: &ExportLogsServiceRequest) -> &[LogRecord] {
        &req.resource_logs[0].scope_logs[0].log_records
    }

    fn body(record: &LogRecord) -> &str {
        match record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("body is not a string: {other:?}"),
        }
    }

    #[test]
    fn same_arguments_give_the_same_batch() {
        let a = log_batch(42, 1_000, 200, 200, NOW_NS);
        let b = log_batch(42, 1_000, 200, 200, NOW_NS);
        assert_eq!(a, b);
        assert_ne!(a, log_batch(43, 1_000, 200, 200, NOW_NS));
        assert_ne!(a, log_batch(42, 1_200, 200, 200, NOW_NS));
    }

    #[test]
    fn record_content_does_not_depend_on_batch_boundaries() {
        let whole = log_batch(7, 0, 100, 200, NOW_NS);
        let second_half = log_batch(7, 50, 50, 200, NOW_NS);
        for (a, b) in records(&whole)[50..].iter().zip(records(&second_half)) {
            assert_eq!(body(a), body(b));
            assert_eq!(a.attributes, b.attributes);
            assert_eq!(a.trace_id, b.trace_id);
        }
    }

    #[test]
    fn bodies_are_close_to_the_requested_size() {
        for body_bytes in [120, 200, 1_000, 4_000] {
            let req = log_batch(1, 0, 500, body_bytes, NOW_NS);
            for record in records(&req) {
                let len = body(record).len();
                assert!(
                    len <= body_bytes && len + 24 >= body_bytes,
                    "body of {len} bytes for body_bytes={body_bytes}: {:?}",
                    body(record)
                );
            }
        }
        // Shorter than the message: the message alone.
        let req = log_batch(1, 0, 100, 10, NOW_NS);
        assert!(records(&req).iter().all(|r| !body(r).is_empty()));
    }

    #[test]
    fn ids_times_and_severities_are_well_formed() {
        let req = log_batch(3, 0, 2_000, 200, NOW_NS);
        let records = records(&req);
        let with_ids = records.iter().filter(|r| !r.trace_id.is_empty()).count();
        assert!(
            (800..1_200).contains(&with_ids),
            "{with_ids} records with ids"
        );
        for r in records {
            assert!(r.trace_id.is_empty() || r.trace_id.len() == 16);
            assert_eq!(r.trace_id.is_empty(), r.span_id.is_empty());
            assert!(r.span_id.is_empty() || r.span_id.len() == 8);
            assert!(r.time_unix_nano <= r.observed_time_unix_nano);
            assert!(r.observed_time_unix_nano <= NOW_NS);
            assert!(NOW_NS - r.time_unix_nano < 10_000_000);
            let expected = match r.severity_text.as_str() {
                "DEBUG" => SeverityNumber::Debug,
                "INFO" => SeverityNumber::Info,
                "WARN" => SeverityNumber::Warn,
                "ERROR" => SeverityNumber::Error,
                other => panic!("unexpected severity {other}"),
            };
            assert_eq!(r.severity_number, expected as i32);
            assert_eq!(r.attributes.len(), 4);
        }
        assert!(
            records
                .windows(2)
                .all(|w| w[0].time_unix_nano < w[1].time_unix_nano)
        );
        let info = records.iter().filter(|r| r.severity_text == "INFO").count();
        assert!(info > records.len() / 2);
    }

    #[test]
    fn vocabulary_is_distinct_and_query_terms_have_the_promised_frequency() {
        let words = vocabulary();
        assert_eq!(words.len(), VOCABULARY_SIZE);
        let distinct: HashSet<&str> = words.iter().map(|w| &**w).collect();
        assert_eq!(
            distinct.len(),
            VOCABULARY_SIZE,
            "duplicate vocabulary words"
        );
        let base: HashSet<&str> = BASE_WORDS.iter().copied().collect();
        assert_eq!(base.len(), BASE_WORDS.len(), "duplicate BASE_WORDS");
        assert!(!base.contains(query_terms().absent));

        let terms = query_terms();
        let (mut common, mut rare, mut phrase, mut absent) = (0, 0, 0, 0);
        let total = 50_000;
        for start in (0..total).step_by(1_000) {
            let req = log_batch(11, start, 1_000, 200, NOW_NS);
            for r in records(&req) {
                let text = body(r);
                let has = |w: &str| {
                    text.split(|c: char| !c.is_ascii_alphanumeric())
                        .any(|t| t == w)
                };
                common += usize::from(has(terms.common));
                rare += usize::from(has(terms.rare));
                absent += usize::from(has(terms.absent));
                phrase += usize::from(text.contains(terms.phrase));
            }
        }
        let pct = |n: usize| n as f64 * 100.0 / total as f64;
        assert!(
            (25.0..55.0).contains(&pct(common)),
            "common {}%",
            pct(common)
        );
        assert!(rare > 0 && pct(rare) < 0.5, "rare {}%", pct(rare));
        assert!((0.5..5.0).contains(&pct(phrase)), "phrase {}%", pct(phrase));
        assert_eq!(absent, 0);
    }

    #[test]
    fn raw_text_len_counts_bodies_and_attributes() {
        let req = log_batch(5, 0, 10, 200, NOW_NS);
        let bodies: usize = records(&req).iter().map(|r| body(r).len()).sum();
        let len = raw_text_len(&req);
        // Ten bodies plus at least the attribute keys of every record.
        assert!(len > bodies + 10 * "http.methodhttp.status_codeuser.idduration_ms".len());
        assert!(len < bodies + 10 * 120 + 200);
        assert_eq!(record_count(&req), 10);
        assert_eq!(display_len(&12.5_f64), 4);
    }
}
