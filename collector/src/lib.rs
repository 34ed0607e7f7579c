//! The Vantage collector: OTLP receivers, the durable ingest path, the log index and
//! the query API. The binaries are `vantage-collector` (the server) and `vantage` (the
//! command-line client).

pub mod alerting;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod opamp;
pub mod ratelimit;
pub mod receivers;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod tls;
