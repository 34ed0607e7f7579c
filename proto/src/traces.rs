//! OTLP traces helpers.

use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;

/// Number of spans in a request.
pub fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}
