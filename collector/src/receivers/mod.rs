//! OTLP receivers: gRPC on `listen.otlp_grpc`, HTTP (protobuf and JSON) on
//! `listen.otlp_http`. Both decode, then hand the request to [`crate::ingest::Ingest`].

pub mod grpc;
pub mod http;
