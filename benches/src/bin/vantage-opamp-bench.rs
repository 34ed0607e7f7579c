//! OpAMP fleet benchmark: N simulated agents (default 1,000) hold WebSocket connections
//! to one release collector, send a heartbeat every 10 s, and apply whatever
//! configuration they are sent at once (answering APPLIED with its hash). One config
//! change is made through the API; the figures are the time from that request until
//! every agent has received the change and sent its APPLIED status (the agents' view),
//! and until the fleet view (`GET /api/v1/agents`) shows every agent applied at the new
//! version. Collector RSS (and peak) and CPU seconds are read from /proc. Bounded in
//! time: `--max-seconds`.
//!
//! Each agent holds one socket here and one in the collector: the soft limit of open
//! files must be above the agent count (`ulimit -n 4096`; checked at start).
//!
//! ```sh
//! cargo build --release -p vantage-collector -p vantage-benches
//! ulimit -n 4096; target/release/vantage-opamp-bench --agents 1000
//! ```

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use vantage_benches::collector::Collector;
use vantage_benches::process::LogEcho;
use vantage_benches::procfs::{cpu_seconds, loadavg, mib, open_files_limit, status_bytes};
use vantage_proto::opamp::{
    AgentCapabilities, AgentDescription, AgentToServer, AnyValue, KeyValue, RemoteConfigStatus,
    RemoteConfigStatuses, ServerToAgent, any_value,
};

#[derive(Debug, Parser)]
struct Args {
    /// The collector binary.
    #[arg(long, default_value = "target/release/vantage-collector")]
    collector: PathBuf,
    /// Scratch data directory (wiped first).
    #[arg(long, default_value = "target/opamp-bench")]
    data_dir: PathBuf,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 10)]
    heartbeat_s: u64,
    /// Seconds connected before the change (at least one heartbeat round).
    #[arg(long, default_value_t = 15)]
    settle_s: u64,
    /// Whole run bound.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

/// A minimal HTTP/1.1 request on loopback.
fn http(c: &Collector, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let mut stream = TcpStream::connect(c.api())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        c.api(),
        c.token().unwrap_or_default(),
        body.len()
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, rest) = text.split_once("\r\n\r\n").context("no header end")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 2"),
        "{method} {path}: {}",
        head.lines().next().unwrap_or("")
    );
    // Chunked or not: the JSON object is between the first '{' and the last '}'.
    let json = match (rest.find('{'), rest.rfind('}')) {
        (Some(a), Some(b)) => &rest[a..=b],
        _ => "null",
    };
    Ok(serde_json::from_str(json)?)
}

fn description(i: usize) -> AgentDescription {
    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
    };
    AgentDescription {
        identifying_attributes: vec![kv("service.name", "bench-agent".into())],
        non_identifying_attributes: vec![
            kv("host.name", format!("host-{i}")),
            kv("env", "prod".into()),
        ],
    }
}

const CAPS: u64 = AgentCapabilities::ReportsStatus as u64
    | AgentCapabilities::AcceptsRemoteConfig as u64
    | AgentCapabilities::ReportsRemoteConfig as u64;

fn frame(msg: &AgentToServer) -> WsMessage {
    let mut out = vec![0u8];
    out.extend(msg.encode_to_vec());
    WsMessage::Binary(out.into())
}

/// What the simulated agents tell the bench.
#[derive(Default)]
struct Fleet {
    /// Agents whose first message was sent.
    connected: AtomicUsize,
    /// Agents that received a configuration after their first one and reported it
    /// applied.
    changed: AtomicUsize,
    /// Agents that gave up (connection refused or closed).
    failed: AtomicUsize,
}

/// Connects, retrying a refused or reset handshake a few times (a thousand connects
/// at once can overflow the listen backlog).
async fn connect(
    url: &str,
    token: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut tries = 0;
    loop {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => return Ok(ws),
            Err(_) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One simulated agent: connect, full state, then heartbeats (the first after
/// `offset`, so the fleet's heartbeats spread over the period); applies every config.
async fn agent(
    i: usize,
    url: String,
    token: String,
    heartbeat: Duration,
    offset: Duration,
    fleet: Arc<Fleet>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let ws = connect(&url, &token).await?;
    let (mut sink, mut stream) = ws.split();
    let mut uid = [0u8; 16];
    uid[..8].copy_from_slice(&(i as u64).to_be_bytes());
    uid[8] = 0xbe;
    let mut seq = 1u64;
    let mut applied: Vec<u8> = Vec::new();
    sink.send(frame(&AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: CAPS,
        agent_description: Some(description(i)),
        ..Default::default()
    }))
    .await?;
    fleet.connected.fetch_add(1, Ordering::Relaxed);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
    let mut configs = 0u32;
    loop {
        let reply = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                seq += 1;
                sink.send(frame(&AgentToServer {
                    instance_uid: uid.to_vec(),
                    sequence_num: seq,
                    capabilities: CAPS,
                    ..Default::default()
                })).await?;
                continue;
            }
            next = stream.next() => match next {
                Some(Ok(WsMessage::Binary(data))) => ServerToAgent::decode(&data[1..])?,
                Some(Ok(_)) => continue,
                _ => anyhow::bail!("agent {i}: connection closed"),
            },
        };
        if let Some(rc) = reply.remote_config
            && rc.config_hash != applied
        {
            applied = rc.config_hash.clone();
            configs += 1;
            seq += 1;
            sink.send(frame(&AgentToServer {
                instance_uid: uid.to_vec(),
                sequence_num: seq,
                capabilities: CAPS,
                remote_config_status: Some(RemoteConfigStatus {
                    last_remote_config_hash: rc.config_hash,
                    status: RemoteConfigStatuses::Applied as i32,
                    error_message: String::new(),
                }),
                ..Default::default()
            }))
            .await?;
            if configs == 2 {
                fleet.changed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn applied_count(c: &Collector) -> anyhow::Result<usize> {
    let fleet = http(c, "GET", "/api/v1/agents", None)?;
    Ok(fleet["agents"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["config_status"] == "applied").count())
        .unwrap_or(0))
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
fn load_average() -> String {
    loadavg()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let need = 2 * args.agents as u64 + 256;
    if let Some(limit) = open_files_limit() {
        anyhow::ensure!(
            limit >= need,
            "open files limit is {limit}; {} agents need about {need} (one socket each here and in the collector): run `ulimit -n 4096` first",
            args.agents
        );
    }
    let load_at_start = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let c = Collector::builder(&args.collector, &args.data_dir)
        .log_echo(LogEcho::Warnings)
        .start()?;
    let pid = c.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(args.max_seconds);
    http(
        &c,
        "POST",
        "/api/v1/configs",
        Some(
            &json!({"name": "base", "selector": "env=prod", "body": "logs:\n  files: [/var/log/a.log]\n", "message": "v1"}),
        ),
    )?;
    let key = http(
        &c,
        "POST",
        "/api/v1/keys",
        Some(&json!({"name": "bench agents", "scopes": ["ingest"]})),
    )?["key"]
        .as_str()
        .context("no key")?
        .to_string();
    let fleet = Arc::new(Fleet::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let url = format!("ws://{}/v1/opamp", c.api());
    let heartbeat = Duration::from_secs(args.heartbeat_s);
    let cpu_before_connect = cpu_seconds(pid)?;
    let connect_started = std::time::Instant::now();
    let tasks: Vec<_> = (0..args.agents)
        .map(|i| {
            let fleet = fleet.clone();
            let offset = heartbeat.mul_f64(i as f64 / args.agents as f64);
            let task = agent(
                i,
                url.clone(),
                key.clone(),
                heartbeat,
                offset,
                fleet.clone(),
                stop.clone(),
            );
            runtime.spawn(async move {
                let result = task.await;
                if let Err(e) = &result
                    && fleet.failed.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("agent {i}: {e:#}");
                }
                result
            })
        })
        .collect();
    let wait = |what: &str, done: &dyn Fn() -> anyhow::Result<bool>| -> anyhow::Result<()> {
        loop {
            if done()? {
                return Ok(());
            }
            anyhow::ensure!(
                fleet.failed.load(Ordering::Relaxed) == 0,
                "{} agents failed while waiting for {what}",
                fleet.failed.load(Ordering::Relaxed)
            );
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{what}: not within --max-seconds"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("every agent to connect", &|| {
        Ok(fleet.connected.load(Ordering::Relaxed) >= args.agents)
    })?;
    // Everyone applied version 1 first.
    wait("version 1 applied everywhere", &|| {
        Ok(applied_count(&c)? >= args.agents)
    })?;
    let connect_and_v1_s = connect_started.elapsed().as_secs_f64();
    let cpu_connected = cpu_seconds(pid)?;
    std::thread::sleep(Duration::from_secs(args.settle_s));
    let cpu_idle = cpu_seconds(pid)? - cpu_connected;
    let rss_idle = status_bytes(pid, "VmRSS").unwrap_or(0);

    let cpu_before_change = cpu_seconds(pid)?;
    let started = std::time::Instant::now();
    http(
        &c,
        "PUT",
        "/api/v1/configs/base",
        Some(
            &json!({"body": "logs:\n  files: [/var/log/a.log, /var/log/b.log]\n", "message": "v2"}),
        ),
    )?;
    let api_answered = started.elapsed();
    // The agents' view: every agent received version 2 and sent APPLIED.
    let mut all_received = None;
    while std::time::Instant::now() < deadline {
        if fleet.changed.load(Ordering::Relaxed) >= args.agents {
            all_received = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The fleet view: every agent listed as applied at version 2.
    let mut all_applied = None;
    while all_received.is_some() && std::time::Instant::now() < deadline {
        let fleet = http(&c, "GET", "/api/v1/agents", None)?;
        let agents = fleet["agents"].as_array().cloned().unwrap_or_default();
        let done = agents
            .iter()
            .filter(|a| {
                a["config_status"] == "applied" && a["desired_config_versions"]["base"] == 2
            })
            .count();
        if done >= args.agents {
            all_applied = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_change = cpu_seconds(pid)? - cpu_before_change;
    let rss_peak = status_bytes(pid, "VmHWM").unwrap_or(0);
    let rss_after = status_bytes(pid, "VmRSS").unwrap_or(0);
    let cpu_total = cpu_seconds(pid)?;
    stop.cancel();
    for t in tasks {
        let _ = runtime.block_on(t);
    }
    let _ = c.stop();
    let report = json!({
        "agents": args.agents,
        "heartbeat_s": args.heartbeat_s,
        "connect_and_v1_applied_s": connect_and_v1_s,
        "change_api_answered_s": api_answered.as_secs_f64(),
        "all_received_and_reported_s": all_received.map(|d| d.as_secs_f64()),
        "fleet_view_all_applied_s": all_applied.map(|d| d.as_secs_f64()),
        "rss_idle_mib": mib(rss_idle),
        "rss_after_change_mib": mib(rss_after),
        "rss_peak_mib": mib(rss_peak),
        "cpu_s_connect_and_apply_v1": cpu_connected - cpu_before_connect,
        "cpu_s_idle_per_s": cpu_idle / args.settle_s as f64,
        "cpu_s_change": cpu_change,
        "cpu_s_total": cpu_total,
        "load_average_at_start": load_at_start,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{report}");
    anyhow::ensure!(
        all_applied.is_some(),
        "not every agent applied within the time bound"
    );
    Ok(())
}
