//! Vantage's embedded storage engines, each behind a small interface the collector
//! calls: the write-ahead log that makes ingest durable, the Tantivy log index, and the
//! SQLite metadata store (tenants, API keys), and the metrics store with its PromQL
//! evaluator, and the Tantivy span store.
mod deep_stack;
pub mod freshness;
mod keyword;
pub mod log_throttle;
pub mod logs;
pub mod meta;
pub mod metrics;
mod partitioned;
pub mod traces;
pub mod wal;
