//! Control: the agent as an OpAMP client of the collector. The collector offers a
//! remote configuration (one YAML document per entry of an `AgentConfigMap`); the agent
//! merges it over its local configuration, validates it as `check-config` does, applies
//! it without restarting (see `runtime`) and reports the outcome, its effective
//! configuration and the health of every source.
//!
//! - `merge`: the pure part — document order, deep merge, pinned keys, `${env:NAME}`.
//! - `state`: what survives a restart — the instance uid and the last good remote
//!   configuration.
//! - `client`: the protocol (sequence numbers, full state, heartbeats, backoff).
//! - `transport`: WebSocket and plain HTTP, over the agent's rustls setup.

pub(crate) mod client;
pub(crate) mod merge;
pub(crate) mod state;
pub(crate) mod transport;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

pub(crate) use merge::expand;

use crate::config::{ClientTls, ConfigError, parse_duration};

/// OpAMP's default heartbeat: the specification's recommended 30 s, which keeps a
/// thousand idle agents cheap for the collector.
pub(crate) const DEFAULT_HEARTBEAT: &str = "30s";
/// Shortest heartbeat (and HTTP poll) accepted: faster only loads the collector.
pub(crate) const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// The `control:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ControlFile {
    opamp: Option<OpampFile>,
    pinned: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OpampFile {
    endpoint: Option<String>,
    heartbeat: Option<String>,
    labels: BTreeMap<String, String>,
    tls: Option<OpampTlsFile>,
}

/// `control.opamp.tls`: the same keys as `exporter.tls`, for an OpAMP endpoint that is
/// not the exporter's collector (or not behind the same CA).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OpampTlsFile {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
}

/// Which OpAMP transport an endpoint selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `ws://`, `wss://`: one connection held open, a message per binary frame.
    WebSocket,
    /// `http://`, `https://`: one POST per message, polled every heartbeat.
    Http,
}

/// A parsed OpAMP endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) transport: Transport,
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, e.g. `/v1/opamp`.
    pub(crate) path: String,
    /// As written, for logs and the WebSocket request line.
    pub(crate) url: String,
}

impl Endpoint {
    /// Parses `ws://`, `wss://`, `http://` or `https://` URLs with a host.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let (transport, tls) = match uri.scheme_str() {
            Some("ws") => (Transport::WebSocket, false),
            Some("wss") => (Transport::WebSocket, true),
            Some("http") => (Transport::Http, false),
            Some("https") => (Transport::Http, true),
            _ => {
                return Err(format!(
                    "{url:?} must start with ws://, wss://, http:// or https://"
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Endpoint {
            transport,
            tls,
            host,
            port,
            path,
            url: url.to_string(),
        })
    }
}

/// The validated `control:` section.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ControlConfig {
    pub(crate) endpoint: Endpoint,
    /// WebSocket: an `AgentToServer` at least this often; HTTP: the poll interval.
    pub(crate) heartbeat: Duration,
    /// Added to the agent description's non-identifying attributes, for selectors.
    pub(crate) labels: BTreeMap<String, String>,
    /// Dotted key paths the local configuration keeps, whatever the server says.
    pub(crate) pinned: Vec<Vec<String>>,
    /// `control.opamp.tls`; `None`: `wss://`/`https://` use `exporter.tls` (or the
    /// system's roots when the exporter has none).
    pub(crate) tls: Option<ClientTls>,
}

impl ControlConfig {
    /// Validates the section, pushing every problem to `errors` with its key path.
    pub(crate) fn validate(f: ControlFile, errors: &mut Vec<String>) -> Option<ControlConfig> {
        let mut ok = true;
        let mut pinned = Vec::new();
        for p in &f.pinned {
            let path: Vec<String> = p.split('.').map(str::to_string).collect();
            if path.iter().any(|s| s.is_empty()) {
                errors.push(format!(
                    "control.pinned: {p:?} is not a dotted key path (e.g. exporter.endpoint)"
                ));
                ok = false;
            } else {
                pinned.push(path);
            }
        }
        let Some(opamp) = f.opamp else {
            errors.push("control.opamp.endpoint: is required when control is set".to_string());
            return None;
        };
        let endpoint = match opamp.endpoint.as_deref() {
            Some(url) => match Endpoint::parse(url) {
                Ok(e) => Some(e),
                Err(e) => {
                    errors.push(format!("control.opamp.endpoint: {e}"));
                    None
                }
            },
            None => {
                errors.push("control.opamp.endpoint: is required when control is set".into());
                None
            }
        };
        let heartbeat_text = opamp
            .heartbeat
            .unwrap_or_else(|| DEFAULT_HEARTBEAT.to_string());
        let heartbeat = match parse_duration(&heartbeat_text) {
            Ok(d) if d >= MIN_HEARTBEAT => Some(d),
            Ok(_) => {
                errors.push(format!(
                    "control.opamp.heartbeat: must be at least {MIN_HEARTBEAT:?}"
                ));
                None
            }
            Err(e) => {
                errors.push(format!("control.opamp.heartbeat: {e}"));
                None
            }
        };
        let tls = opamp.tls.map(|t| {
            if endpoint.as_ref().is_some_and(|e| !e.tls) {
                errors.push(
                    "control.opamp.tls: TLS settings need a wss:// or https:// control.opamp.endpoint"
                        .to_string(),
                );
                ok = false;
            }
            let identity = match (t.cert_file, t.key_file) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => {
                    errors.push(
                        "control.opamp.tls.cert_file: cert_file and key_file go together"
                            .to_string(),
                    );
                    ok = false;
                    None
                }
            };
            ClientTls {
                ca_file: t.ca_file,
                identity,
                server_name: t.server_name,
            }
        });
        for (k, v) in &opamp.labels {
            if k.is_empty() || k.contains([',', '=', ' ']) || v.contains(',') {
                errors.push(format!(
                    "control.opamp.labels: {k:?}={v:?}: keys need no ',', '=' or spaces, values no ','"
                ));
                ok = false;
            }
        }
        Some(ControlConfig {
            endpoint: endpoint?,
            heartbeat: heartbeat?,
            labels: opamp.labels,
            pinned,
            tls,
        })
        .filter(|_| ok)
    }
}

/// A `ConfigError` with one message, for callers that have exactly one problem.
pub(crate) fn single(message: String) -> ConfigError {
    ConfigError(vec![message])
}

/// The effective configuration tree for a remote offer: `local` with the documents
/// merged in key order, the pinned keys restored from `local`, `${env:}` expanded.
pub(crate) fn effective_tree(
    local: &Value,
    documents: &BTreeMap<String, Vec<u8>>,
    pinned: &[Vec<String>],
    env: &BTreeMap<String, String>,
) -> Result<Value, ConfigError> {
    let mut merged = merge::merge_documents(local, documents).map_err(|e| single(e.to_string()))?;
    merge::apply_pins(&mut merged, local, pinned);
    expand(merged, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_pick_the_transport_and_default_ports() {
        let e = Endpoint::parse("wss://collector:7070/v1/opamp").unwrap();
        assert_eq!(
            (e.transport, e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (Transport::WebSocket, true, "collector", 7070, "/v1/opamp")
        );
        let e = Endpoint::parse("http://10.0.0.1/v1/opamp").unwrap();
        assert_eq!((e.transport, e.tls, e.port), (Transport::Http, false, 80));
        assert_eq!(Endpoint::parse("https://h").unwrap().port, 443);
        assert!(Endpoint::parse("ftp://h/x").is_err());
        assert!(Endpoint::parse("collector:7070").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn opamp_tls_needs_a_tls_endpoint_and_a_whole_identity() {
        let parse = |text: &str| {
            let mut errors = Vec::new();
            let f: ControlFile = serde_yaml_ng::from_str(text).unwrap();
            (ControlConfig::validate(f, &mut errors), errors)
        };
        let (c, errors) = parse(
            "opamp: {endpoint: 'wss://c:7070/v1/opamp', tls: {ca_file: /etc/ca.pem, server_name: collector}}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let tls = c.unwrap().tls.unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("collector"));
        assert_eq!(tls.identity, None);
        // Without the section the exporter's settings apply (decided by the caller).
        let (c, _) = parse("opamp: {endpoint: 'https://c/v1/opamp'}\n");
        assert_eq!(c.unwrap().tls, None);
        let (c, errors) = parse("opamp: {endpoint: 'ws://c/v1/opamp', tls: {ca_file: /ca.pem}}\n");
        assert!(c.is_none());
        assert!(errors[0].starts_with("control.opamp.tls:"), "{errors:?}");
        let (c, errors) =
            parse("opamp: {endpoint: 'wss://c/v1/opamp', tls: {cert_file: /a.pem}}\n");
        assert!(c.is_none());
        assert!(
            errors[0].contains("cert_file and key_file go together"),
            "{errors:?}"
        );
        assert!(
            serde_yaml_ng::from_str::<ControlFile>("opamp: {tls: {ca: /a.pem}}\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn section_errors_name_their_keys() {
        let mut errors = Vec::new();
        let f: ControlFile = serde_yaml_ng::from_str(
            "opamp:\n  endpoint: tcp://x\n  heartbeat: 1ms\n  labels: {'a b': c}\npinned: [exporter..endpoint]\n",
        )
        .unwrap();
        assert!(ControlConfig::validate(f, &mut errors).is_none());
        let all = errors.join("\n");
        assert_eq!(errors.len(), 4, "{all}");
        for key in [
            "control.opamp.endpoint",
            "control.opamp.heartbeat",
            "control.opamp.labels",
            "control.pinned",
        ] {
            assert!(all.contains(key), "{key} missing in {all}");
        }
        let mut errors = Vec::new();
        let f: ControlFile = serde_yaml_ng::from_str(
            "opamp: {endpoint: 'ws://c:7070/v1/opamp', heartbeat: 10s, labels: {env: prod}}\npinned: [exporter.endpoint]\n",
        )
        .unwrap();
        let c = ControlConfig::validate(f, &mut errors).unwrap();
        assert!(errors.is_empty());
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert_eq!(
            c.pinned,
            vec![vec!["exporter".to_string(), "endpoint".into()]]
        );
    }
}
