//! OTLP receivers: gRPC on `listen.otlp_grpc`, HTTP (protobuf and JSON) on
//! `listen.otlp_http`. Both decode, then hand the request to [`crate::ingest::Ingest`],
//! with the protobuf bytes it was decoded from when it came as protobuf.

pub mod grpc;
pub mod http;
pub mod keep_bytes;
