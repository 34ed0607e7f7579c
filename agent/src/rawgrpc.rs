//! A gRPC client call whose request is already-encoded protobuf bytes: the disk queue
//! holds each batch as the encoded OTLP request, and the exporter hands those bytes to
//! tonic as they are instead of decoding them into messages, cloning them and encoding
//! them again. Everything else is tonic's own unary path (the channel with its
//! interceptor, metadata, compression, status handling), so the request on the wire is
//! byte for byte what the generated client sent.

use std::marker::PhantomData;

use bytes::{BufMut as _, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{GrpcMethod, Status};

/// Initial size of tonic's encode buffers for one request; they grow once to the batch.
const BUFFER_BYTES: usize = 64 * 1024;

/// The codec: encodes [`Bytes`] by copying them, decodes the response `R` with prost.
pub(crate) struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder<R>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder<R> {
        ResponseDecoder(PhantomData)
    }
}

/// Writes the request bytes as they are.
pub(crate) struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER_BYTES, BUFFER_BYTES)
    }
}

/// Decodes the (small) export response.
pub(crate) struct ResponseDecoder<R>(PhantomData<fn() -> R>);

impl<R: prost::Message + Default> Decoder for ResponseDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// One OTLP export method: its path and names as the generated clients use them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Method {
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
}

/// `LogsService/Export`.
pub(crate) const LOGS_EXPORT: Method = Method {
    service: "opentelemetry.proto.collector.logs.v1.LogsService",
    method: "Export",
    path: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
};
/// `MetricsService/Export`.
pub(crate) const METRICS_EXPORT: Method = Method {
    service: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    method: "Export",
    path: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
};
/// `TraceService/Export`.
pub(crate) const TRACES_EXPORT: Method = Method {
    service: "opentelemetry.proto.collector.trace.v1.TraceService",
    method: "Export",
    path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
};

/// Sends `request` (an encoded request message) to `method` and decodes the response.
pub(crate) async fn unary<T, R>(
    grpc: &mut tonic::client::Grpc<T>,
    method: Method,
    mut request: tonic::Request<Bytes>,
) -> Result<tonic::Response<R>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError>,
    T::Error: Into<tonic::codegen::StdError>,
    R: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
    request
        .extensions_mut()
        .insert(GrpcMethod::new(method.service, method.method));
    grpc.unary(
        request,
        PathAndQuery::from_static(method.path),
        RawCodec::<R>::default(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message as _;
    use tonic::codec::CompressionEncoding;
    use tonic::transport::Channel;
    use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
    use vantage_proto::otlp::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use vantage_proto::otlp::common::v1::{AnyValue, any_value};
    use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    /// What the capturing server saw of one request.
    #[derive(Debug, PartialEq)]
    struct Seen {
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    /// An HTTP/2 server that records every request and answers a gRPC success whose
    /// message is a partial success with 3 rejected records.
    async fn capture() -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let mut headers: Vec<(String, String)> = req
                                    .headers()
                                    .iter()
                                    .filter(|(k, _)| !matches!(k.as_str(), "user-agent"))
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect();
                                headers.sort();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                seen.lock().unwrap().push(Seen {
                                    path,
                                    headers,
                                    body: body.to_vec(),
                                });
                                let message = ExportLogsServiceResponse {
                                    partial_success: Some(ExportLogsPartialSuccess {
                                        rejected_log_records: 3,
                                        error_message: "three".into(),
                                    }),
                                }
                                .encode_to_vec();
                                let mut framed = vec![0u8];
                                framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                                framed.extend_from_slice(&message);
                                let mut trailers = hyper::HeaderMap::new();
                                trailers.insert("grpc-status", "0".parse().unwrap());
                                let body = Full::new(Bytes::from(framed))
                                    .with_trailers(async move { Some(Ok(trailers)) });
                                let mut response = hyper::Response::new(body);
                                response
                                    .headers_mut()
                                    .insert("content-type", "application/grpc".parse().unwrap());
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn sample() -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (0..500)
                        .map(|i| LogRecord {
                            observed_time_unix_nano: i,
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(format!(
                                    "line {i} of a sample batch"
                                ))),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn with_metadata<T>(message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert(
            "x-vantage-batch-id",
            "0123456789abcdef0123456789abcdef".parse().unwrap(),
        );
        r.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        r
    }

    /// The raw call puts on the wire exactly what the generated client does (path,
    /// headers, compressed body), and reads the response the same way.
    #[tokio::test]
    async fn the_raw_call_sends_what_the_generated_client_sends() {
        let (endpoint, seen) = capture().await;
        let channel = Channel::from_shared(endpoint).unwrap().connect_lazy();
        for encoding in [
            Some(CompressionEncoding::Zstd),
            Some(CompressionEncoding::Gzip),
            None,
        ] {
            seen.lock().unwrap().clear();
            let mut typed = LogsServiceClient::new(channel.clone());
            let mut raw = tonic::client::Grpc::new(channel.clone());
            if let Some(e) = encoding {
                typed = typed.send_compressed(e).accept_compressed(e);
                raw = raw.send_compressed(e).accept_compressed(e);
            }
            let typed_resp = typed.export(with_metadata(sample())).await.unwrap();
            let bytes = Bytes::from(sample().encode_to_vec());
            let raw_resp: tonic::Response<ExportLogsServiceResponse> =
                unary(&mut raw, LOGS_EXPORT, with_metadata(bytes))
                    .await
                    .unwrap();
            assert_eq!(typed_resp.into_inner(), raw_resp.into_inner());
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            assert_eq!(seen[0], seen[1], "{encoding:?}");
            assert_eq!(seen[1].path, LOGS_EXPORT.path);
            assert_eq!(seen[1].body[0], encoding.is_some() as u8);
        }
    }

    #[test]
    fn paths_name_their_services() {
        for m in [LOGS_EXPORT, METRICS_EXPORT, TRACES_EXPORT] {
            assert_eq!(m.path, format!("/{}/{}", m.service, m.method));
        }
    }
}
