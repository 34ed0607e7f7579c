//! Vantage's embedded storage engines, each behind a small interface the collector
//! calls: the write-ahead log that makes ingest durable, and the Tantivy log index.
pub mod logs;
pub mod wal;
