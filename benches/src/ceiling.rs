//! Raw Tantivy's side of the ceiling: the few fields of a log record it indexes, so the
//! e2e ceiling and the merge probe build the same documents.

use tantivy::TantivyDocument;
use tantivy::schema::{FAST, Field, STORED, STRING, Schema, TEXT};
use vantage_proto::json::any_value_to_json;
use vantage_proto::logs::LogView;

/// The ceiling's schema: time as a column, severity and service as keywords, the body
/// as full text with positions.
pub struct CeilingFields {
    /// The schema to create the index with.
    pub schema: Schema,
    timestamp: Field,
    severity: Field,
    service: Field,
    body: Field,
}

impl CeilingFields {
    /// The fields, the body also in the doc store when `store_body` (the ceiling keeps a
    /// doc store as any log index does; the merge probe leaves it out, since a merge
    /// without deletes copies its blocks as they are).
    pub fn new(store_body: bool) -> Self {
        let mut b = Schema::builder();
        let timestamp = b.add_i64_field("timestamp", FAST);
        let severity = b.add_text_field("severity_text", STRING);
        let service = b.add_text_field("service", STRING);
        let body = if store_body {
            b.add_text_field("body", TEXT | STORED)
        } else {
            b.add_text_field("body", TEXT)
        };
        CeilingFields {
            schema: b.build(),
            timestamp,
            severity,
            service,
            body,
        }
    }

    /// The document of one record, its time moved by `shift_ns`.
    pub fn document(&self, view: &LogView<'_>, shift_ns: i64) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_i64(
            self.timestamp,
            view.effective_time_unix_nano() as i64 + shift_ns,
        );
        doc.add_text(self.severity, &view.record.severity_text);
        doc.add_text(self.service, view.service_name().unwrap_or(""));
        if let Some(b) = &view.record.body {
            doc.add_text(self.body, any_value_to_json(b).as_str().unwrap_or(""));
        }
        doc
    }
}
