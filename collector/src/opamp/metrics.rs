//! The OpAMP server's self-metrics, named in one place like the rest of
//! [`crate::telemetry`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metric names (counters without the `_total` suffix the encoder adds).
pub mod names {
    /// Agents connected now (an open WebSocket, or a plain-HTTP poll in the last
    /// two minutes).
    pub const AGENTS_CONNECTED: &str = "vantage_opamp_agents_connected";
    /// Known agents by configuration state: `applied`, `applying`, `failed`, `lagging`
    /// (desired differs from applied for more than a minute), `none` (takes no remote
    /// configuration).
    pub const AGENTS_BY_CONFIG_STATE: &str = "vantage_opamp_agents_by_config_state";
    /// Remote configurations sent to agents (pushes and poll answers).
    pub const CONFIG_PUSHES: &str = "vantage_opamp_config_pushes";
    /// OpAMP messages refused or failed, by reason.
    pub const PROTOCOL_ERRORS: &str = "vantage_opamp_protocol_errors";
}

/// Labels of the per-state agent gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigStateLabels {
    /// See [`names::AGENTS_BY_CONFIG_STATE`].
    pub state: &'static str,
}

/// Labels of protocol errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Short machine-readable reason: `malformed`, `oversized`, `uid_conflict`, ...
    pub reason: &'static str,
}

/// The OpAMP server's metrics.
pub struct OpampMetrics {
    /// See [`names::AGENTS_CONNECTED`].
    pub agents_connected: Gauge,
    /// See [`names::AGENTS_BY_CONFIG_STATE`].
    pub agents_by_state: Family<ConfigStateLabels, Gauge>,
    /// See [`names::CONFIG_PUSHES`].
    pub config_pushes: Counter,
    /// See [`names::PROTOCOL_ERRORS`].
    pub protocol_errors: Family<ReasonLabels, Counter>,
}

impl OpampMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> OpampMetrics {
        let m = OpampMetrics {
            agents_connected: Gauge::default(),
            agents_by_state: Family::default(),
            config_pushes: Counter::default(),
            protocol_errors: Family::default(),
        };
        registry.register(
            names::AGENTS_CONNECTED,
            "OpAMP agents connected",
            m.agents_connected.clone(),
        );
        registry.register(
            names::AGENTS_BY_CONFIG_STATE,
            "OpAMP agents by remote configuration state",
            m.agents_by_state.clone(),
        );
        registry.register(
            names::CONFIG_PUSHES,
            "Remote configurations sent to OpAMP agents",
            m.config_pushes.clone(),
        );
        registry.register(
            names::PROTOCOL_ERRORS,
            "OpAMP messages refused or failed, by reason",
            m.protocol_errors.clone(),
        );
        m
    }

    /// Counts one protocol error.
    pub fn error(&self, reason: &'static str) {
        self.protocol_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
