//! The pure part of an OTLP/HTTP receiver, shared by the collector's and the agent's:
//! which encoding a `Content-Type` names, gzip decompression bounded by the size limit
//! (so a gzip bomb costs at most the limit), decoding a protobuf or OTLP/JSON body into
//! the request message, and encoding answers and `google.rpc.Status` errors in the
//! request's own encoding, as the OTLP specification says.
//!
//! No I/O: reading the body (with its limit) is the server's job; it hands the bytes here.

use std::io::Read as _;

use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorCode;

/// `Content-Type` of binary protobuf OTLP.
pub const PROTOBUF: &str = "application/x-protobuf";
/// `Content-Type` of OTLP/JSON.
pub const JSON: &str = "application/json";

/// The encoding of a request, which is also the encoding of its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, lowerCamelCase fields).
    Json,
}

impl Encoding {
    /// The `Content-Type` of an answer in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// Why a body was refused: the code the answer carries and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    /// What the client is told (413, 415, 400 ...).
    pub code: ErrorCode,
    /// What exactly was wrong, safe to send back.
    pub message: String,
}

impl BodyError {
    fn new(code: ErrorCode, message: String) -> BodyError {
        BodyError { code, message }
    }

    /// The answer to a body whose raw bytes exceeded `limit`.
    pub fn too_large(limit: usize) -> BodyError {
        BodyError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is over the limit of {limit} bytes"),
        )
    }
}

/// The encoding a `Content-Type` header value names (parameters such as `charset`
/// ignored, case-insensitive); 415 for anything else.
pub fn encoding_of(content_type: &str) -> Result<Encoding, BodyError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(BodyError::new(
            ErrorCode::UnsupportedMediaType,
            format!("content-type {content_type:?} is not supported: use {PROTOBUF} or {JSON}"),
        )),
    }
}

/// Undoes `Content-Encoding` (`identity`/absent or `gzip`), refusing a result over
/// `limit` bytes without ever holding more than `limit + 1` of it.
pub fn decompress(content_encoding: &str, raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    match content_encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(raw.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
            if let Err(e) = decoder.read_to_end(&mut out) {
                return Err(BodyError::new(
                    ErrorCode::InvalidArgument,
                    format!("gzip body does not decompress: {e}"),
                ));
            }
            if out.len() > limit {
                return Err(BodyError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("decompressed body is over the limit of {limit} bytes"),
                ));
            }
            Ok(out)
        }
        other => Err(BodyError::new(
            ErrorCode::UnsupportedMediaType,
            format!("content-encoding {other:?} is not supported: use gzip or none"),
        )),
    }
}

/// Decodes a (decompressed) body into an OTLP request message.
pub fn decode_message<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, BodyError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            BodyError::new(
                ErrorCode::InvalidArgument,
                format!("body is not a valid OTLP protobuf message: {e}"),
            )
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            // serde_json names only its own limit; say what it means for OTLP values.
            let nesting = if e.to_string().starts_with("recursion limit exceeded") {
                "it nests deeper than 128 JSON levels (about 30 nested kvlistValue or \
                 arrayValue values): "
            } else {
                ""
            };
            BodyError::new(
                ErrorCode::InvalidArgument,
                format!("body is not valid OTLP/JSON: {nesting}{e}"),
            )
        }),
    }
}

/// An answer message in `encoding`. An absent partial success is `{}` in JSON, not
/// `{"partialSuccess": null}`.
pub fn encode_message<T: Message + Serialize>(
    encoding: Encoding,
    message: &T,
) -> Result<Vec<u8>, serde_json::Error> {
    match encoding {
        Encoding::Protobuf => Ok(message.encode_to_vec()),
        Encoding::Json => {
            let mut value = serde_json::to_value(message)?;
            if let Some(map) = value.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            Ok(value.to_string().into_bytes())
        }
    }
}

/// `google.rpc.Status` without details: what an OTLP/HTTP error body holds.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The body of an error answer: `google.rpc.Status` with the gRPC code of `code`, as
/// protobuf or as JSON `{"code": .., "message": ..}`.
pub fn status_body(encoding: Encoding, code: ErrorCode, message: &str) -> Vec<u8> {
    let code = code.grpc_code() as i32;
    match encoding {
        Encoding::Protobuf => RpcStatus {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use proptest::prelude::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn content_types_with_parameters_and_case() {
        assert_eq!(
            encoding_of("application/json; charset=utf-8"),
            Ok(Encoding::Json)
        );
        assert_eq!(
            encoding_of("Application/X-Protobuf"),
            Ok(Encoding::Protobuf)
        );
        let e = encoding_of("text/plain").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedMediaType);
        assert!(e.message.contains("text/plain"));
    }

    #[test]
    fn gzip_bomb_is_cut_at_the_limit_and_garbage_named() {
        let bomb = gzip(&vec![0u8; 1 << 20]);
        let e = decompress("gzip", &bomb, 1000).unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        assert_eq!(decompress("GZIP", &gzip(b"abc"), 3).unwrap(), b"abc");
        let e = decompress("gzip", b"not gzip", 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(
            decompress("br", b"x", 100).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        assert_eq!(decompress("", b"x", 100).unwrap(), b"x");
    }

    #[test]
    fn otlp_json_nesting_past_serde_json_s_limit_is_named() {
        let body = |levels: usize| {
            let mut v = r#"{"stringValue":"leaf"}"#.to_string();
            for i in 0..levels {
                v = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k{i}","value":{v}}}]}}}}"#);
            }
            format!(
                r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"attributes":[{{"key":"deep","value":{v}}}]}}]}}]}}]}}"#
            )
        };
        let decode = |levels| {
            decode_message::<crate::otlp::collector::logs::v1::ExportLogsServiceRequest>(
                Encoding::Json,
                body(levels).as_bytes(),
            )
        };
        assert!(decode(25).is_ok());
        let e = decode(40).unwrap_err();
        assert!(
            e.message.starts_with(
                "body is not valid OTLP/JSON: it nests deeper than 128 JSON levels (about 30 \
                 nested kvlistValue or arrayValue values): recursion limit exceeded at line 1"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn otlp_json_hex_ids_decode_and_bad_ids_are_named() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
        let r: ExportTraceServiceRequest = decode_message(Encoding::Json, body).unwrap();
        let span = &r.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#;
        let e = decode_message::<ExportTraceServiceRequest>(Encoding::Json, bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn error_bodies_in_both_encodings() {
        let pb = status_body(Encoding::Protobuf, ErrorCode::ResourceExhausted, "full");
        let s = RpcStatus::decode(&pb[..]).unwrap();
        assert_eq!(s.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(s.message, "full");
        let js: serde_json::Value = serde_json::from_slice(&status_body(
            Encoding::Json,
            ErrorCode::InvalidArgument,
            "m",
        ))
        .unwrap();
        assert_eq!(js["code"], 3);
        let ok = encode_message(
            Encoding::Json,
            &crate::otlp::collector::logs::v1::ExportLogsServiceResponse {
                partial_success: None,
            },
        )
        .unwrap();
        assert_eq!(ok, b"{}");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_message::<ExportLogsServiceRequest>(Encoding::Protobuf, &data);
            let _ = decode_message::<ExportLogsServiceRequest>(Encoding::Json, &data);
            let _ = decompress("gzip", &data, 1024);
        }
    }
}
