//! The wire layer of Vantage: OTLP types and services (re-exported from the
//! `opentelemetry-proto` crate, never vendored), the error-code enum every network
//! error maps through, and conversions between OTLP and storage records.
//!
//! This crate holds no runtime and does no I/O.

pub mod config;
pub mod error;
pub mod items;
pub mod json;
pub mod logs;
pub mod logs_ref;
pub mod logs_scan;
pub mod opamp;
pub mod otlp_http;
pub mod prom;
pub mod traces;
mod wire;

/// OTLP messages and tonic services, exactly as `opentelemetry-proto` generates them.
pub use opentelemetry_proto::tonic as otlp;

pub use error::ErrorCode;
