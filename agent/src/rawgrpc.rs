//! A gRPC unary call whose request message is already encoded AND already compressed: the
//! disk queue stores each batch as the message that goes on the wire (compressed once, at
//! enqueue, see [`crate::queue::BatchCodec`]), and the exporter sends those bytes with the
//! compressed-flag byte set and `grpc-encoding` naming the codec. tonic's codec path
//! cannot do that (it compresses what its encoder writes, or sends it with the flag 0),
//! so the HTTP/2 request is built here and sent on tonic's `Channel` (TLS, timeouts,
//! `user-agent`, connection handling stay tonic's); the response is read with tonic's own
//! [`Streaming`] decoder as tonic's unary call does (trailers-only status, `grpc-status`
//! from the trailers, compressed responses, HTTP errors).

use std::marker::PhantomData;

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::Full;
use tonic::codec::{CompressionEncoding, DecodeBuf, Decoder, Streaming};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::{Code, Status};

use crate::queue::Stored;

/// Decodes the (small) export response.
pub(crate) struct ResponseDecoder<R>(PhantomData<fn() -> R>);

impl<R> Default for ResponseDecoder<R> {
    fn default() -> Self {
        ResponseDecoder(PhantomData)
    }
}

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

/// The length-prefixed gRPC frame of one message: flag byte (1: compressed with the
/// request's `grpc-encoding`), big-endian length, the bytes.
fn frame(stored: Stored, message: &[u8]) -> Result<Bytes, Status> {
    let len = u32::try_from(message.len())
        .map_err(|_| Status::invalid_argument("batch larger than a gRPC message can be"))?;
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(u8::from(stored != Stored::Raw));
    out.put_u32(len);
    out.put_slice(message);
    Ok(out.freeze())
}

/// The HTTP/2 request of a unary call of `method` with `message` stored as `stored`, and
/// the given extra headers (authorization, batch id): the headers tonic's client sends
/// (`te`, `content-type`, `grpc-encoding`, `grpc-accept-encoding`), the channel adds the
/// origin and `user-agent`.
pub(crate) fn request(
    method: Method,
    stored: Stored,
    message: &[u8],
    extra: &HeaderMap,
) -> Result<http::Request<tonic::body::Body>, Status> {
    let body = tonic::body::Body::new(Full::new(frame(stored, message)?));
    let mut request = http::Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    *request.uri_mut() = http::Uri::from_static(method.path);
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new(method.service, method.method));
    let headers = request.headers_mut();
    headers.clone_from(extra);
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(encoding) = stored.grpc_encoding() {
        headers.insert("grpc-encoding", HeaderValue::from_static(encoding));
        let accept = match stored {
            Stored::Gzip => "gzip,identity",
            _ => "zstd,identity",
        };
        headers.insert("grpc-accept-encoding", HeaderValue::from_static(accept));
    }
    Ok(request)
}

/// The compression of a response, from its `grpc-encoding` header.
fn response_encoding(headers: &HeaderMap) -> Result<Option<CompressionEncoding>, Status> {
    match headers.get("grpc-encoding").map(HeaderValue::as_bytes) {
        None | Some(b"identity") => Ok(None),
        Some(b"zstd") => Ok(Some(CompressionEncoding::Zstd)),
        Some(b"gzip") => Ok(Some(CompressionEncoding::Gzip)),
        Some(other) => Err(Status::unimplemented(format!(
            "response compressed with {}, which the agent does not read",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Sends `message` (an encoded request message, compressed as `stored` says) to `method`
/// with the `extra` headers, and decodes the response `R`. Errors are the call's status:
/// a transport failure, a trailers-only status, or the `grpc-status` of the trailers.
pub(crate) async fn unary_stored<S, R>(
    service: &mut S,
    method: Method,
    stored: Stored,
    message: &[u8],
    extra: &HeaderMap,
) -> Result<R, Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError>,
    R: prost::Message + Default + Send + 'static,
{
    let request = request(method, stored, message, extra)?;
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
    let response = service
        .call(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let encoding = response_encoding(response.headers())?;
    let status_code = response.status();
    let mut stream = match Status::from_header_map(response.headers()) {
        Some(status) if status.code() != Code::Ok => return Err(status),
        // Trailers-only success: no message will come.
        Some(_) => Streaming::new_empty(ResponseDecoder::<R>::default(), response.into_body()),
        None => Streaming::new_response(
            ResponseDecoder::<R>::default(),
            response.into_body(),
            status_code,
            encoding,
            None,
        ),
    };
    let message = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing response message."))?;
    // Drains the body: a `grpc-status` other than OK in the trailers is the call's error.
    stream.trailers().await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::io::Read as _;
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message as _;
    use tonic::transport::Channel;
    use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
    use vantage_proto::otlp::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use vantage_proto::otlp::common::v1::{AnyValue, any_value};
    use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use crate::queue::BatchCodec;

    /// What the capturing server saw of one request.
    #[derive(Debug, PartialEq)]
    struct Seen {
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    /// How the test server answers.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        /// A partial success with 3 rejected records, `grpc-status: 0` in the trailers;
        /// the message zstd-compressed when `true`.
        Partial(bool),
        /// The message, then `grpc-status: 14` in the trailers.
        FailInTrailers,
        /// No body, `grpc-status: 8` in the headers.
        TrailersOnly,
    }

    fn partial() -> Vec<u8> {
        ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "three".into(),
            }),
        }
        .encode_to_vec()
    }

    /// An HTTP/2 server that records every request and answers as `answer` says.
    async fn capture(answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
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
                                    // The stored call's body has a known length, so
                                    // hyper adds `content-length` (valid in HTTP/2);
                                    // tonic's streamed body has none.
                                    .filter(|(k, _)| {
                                        !matches!(k.as_str(), "user-agent" | "content-length")
                                    })
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
                                let (compressed, message, status) = match answer {
                                    Answer::Partial(true) => {
                                        (true, zstd::encode_all(&partial()[..], 1).unwrap(), "0")
                                    }
                                    Answer::Partial(false) => (false, partial(), "0"),
                                    Answer::FailInTrailers => (false, partial(), "14"),
                                    Answer::TrailersOnly => (false, Vec::new(), "8"),
                                };
                                let mut trailers = hyper::HeaderMap::new();
                                trailers.insert("grpc-status", status.parse().unwrap());
                                trailers.insert("grpc-message", "from-the-test".parse().unwrap());
                                let mut framed = Vec::new();
                                if !matches!(answer, Answer::TrailersOnly) {
                                    framed.push(u8::from(compressed));
                                    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                                    framed.extend_from_slice(&message);
                                }
                                let only = matches!(answer, Answer::TrailersOnly);
                                let body = Full::new(Bytes::from(framed))
                                    .with_trailers(async move { (!only).then_some(Ok(trailers)) });
                                let mut response = hyper::Response::new(body);
                                let h = response.headers_mut();
                                h.insert("content-type", "application/grpc".parse().unwrap());
                                if compressed {
                                    h.insert("grpc-encoding", "zstd".parse().unwrap());
                                }
                                if only {
                                    h.insert("grpc-status", "8".parse().unwrap());
                                    h.insert("grpc-message", "slow%20down".parse().unwrap());
                                }
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

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn with_metadata<T>(message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut()
            .insert("x-vantage-batch-id", ID.parse().unwrap());
        r.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        r
    }

    fn extra() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-vantage-batch-id", HeaderValue::from_static(ID));
        h.insert("authorization", HeaderValue::from_static("Bearer t0ken"));
        h
    }

    /// The message of a captured gRPC body, decompressed as its flag and the request's
    /// `grpc-encoding` say.
    fn message_of(seen: &Seen) -> Vec<u8> {
        let len = u32::from_be_bytes(seen.body[1..5].try_into().unwrap()) as usize;
        assert_eq!(seen.body.len(), 5 + len, "one whole frame");
        let payload = &seen.body[5..];
        if seen.body[0] == 0 {
            return payload.to_vec();
        }
        let encoding = seen
            .headers
            .iter()
            .find(|(k, _)| k == "grpc-encoding")
            .map(|(_, v)| v.as_str());
        match encoding {
            Some("zstd") => zstd::decode_all(payload).unwrap(),
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(payload)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            other => panic!("compressed flag with grpc-encoding {other:?}"),
        }
    }

    /// A stored batch goes on the wire as the generated client sends the same request
    /// (path, headers, flag byte, the same message once decompressed), compressed once
    /// at enqueue instead of by tonic, and the response is read the same way.
    #[tokio::test]
    async fn a_stored_batch_is_sent_as_the_generated_client_sends_it() {
        let (endpoint, seen) = capture(Answer::Partial(false)).await;
        let mut channel = Channel::from_shared(endpoint).unwrap().connect_lazy();
        for (stored, encoding) in [
            (Stored::Zstd, Some(CompressionEncoding::Zstd)),
            (Stored::Gzip, Some(CompressionEncoding::Gzip)),
            (Stored::Raw, None),
        ] {
            seen.lock().unwrap().clear();
            let mut typed = LogsServiceClient::new(channel.clone());
            if let Some(e) = encoding {
                typed = typed.send_compressed(e).accept_compressed(e);
            }
            let typed_resp = typed.export(with_metadata(sample())).await.unwrap();
            let mut message = Vec::new();
            BatchCodec { stored, level: 1 }
                .compress_into(&sample().encode_to_vec(), &mut message)
                .unwrap();
            let resp: ExportLogsServiceResponse =
                unary_stored(&mut channel, LOGS_EXPORT, stored, &message, &extra())
                    .await
                    .unwrap();
            assert_eq!(typed_resp.into_inner(), resp);
            assert_eq!(resp.partial_success.unwrap().rejected_log_records, 3);
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            assert_eq!(seen[0].path, seen[1].path);
            assert_eq!(seen[1].path, LOGS_EXPORT.path);
            assert_eq!(seen[0].headers, seen[1].headers, "{stored:?}");
            assert_eq!(seen[0].body[0], seen[1].body[0], "{stored:?}");
            assert_eq!(seen[1].body[0], u8::from(stored != Stored::Raw));
            assert_eq!(message_of(&seen[1]), sample().encode_to_vec());
            assert_eq!(message_of(&seen[0]), message_of(&seen[1]));
            // Sent as stored, not compressed again.
            assert_eq!(&seen[1].body[5..], &message[..]);
        }
    }

    #[tokio::test]
    async fn a_compressed_response_is_decoded() {
        let (endpoint, _seen) = capture(Answer::Partial(true)).await;
        let mut channel = Channel::from_shared(endpoint).unwrap().connect_lazy();
        let resp: ExportLogsServiceResponse =
            unary_stored(&mut channel, LOGS_EXPORT, Stored::Raw, b"", &extra())
                .await
                .unwrap();
        assert_eq!(resp.partial_success.unwrap().error_message, "three");
    }

    /// A failure in the trailers after a message, and a trailers-only failure, are the
    /// call's status (the exporter retries or drops by it).
    #[tokio::test]
    async fn statuses_in_trailers_and_headers_are_the_calls_error() {
        for (answer, code) in [
            (Answer::FailInTrailers, Code::Unavailable),
            (Answer::TrailersOnly, Code::ResourceExhausted),
        ] {
            let (endpoint, _seen) = capture(answer).await;
            let mut channel = Channel::from_shared(endpoint).unwrap().connect_lazy();
            let err = unary_stored::<_, ExportLogsServiceResponse>(
                &mut channel,
                LOGS_EXPORT,
                Stored::Zstd,
                &zstd::encode_all(&b""[..], 1).unwrap(),
                &extra(),
            )
            .await
            .unwrap_err();
            assert_eq!(err.code(), code, "{answer:?}: {err:?}");
        }
    }

    /// No server: a transport failure, which the exporter retries.
    #[tokio::test]
    async fn an_unreachable_collector_is_a_retryable_status() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let err = unary_stored::<_, ExportLogsServiceResponse>(
            &mut channel,
            LOGS_EXPORT,
            Stored::Raw,
            b"",
            &HeaderMap::new(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                crate::export::classify(&err),
                crate::export::Verdict::Retry(_)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn frames_carry_the_flag_and_length() {
        let f = frame(Stored::Zstd, b"abc").unwrap();
        assert_eq!(&f[..], &[1, 0, 0, 0, 3, b'a', b'b', b'c']);
        let f = frame(Stored::Raw, b"").unwrap();
        assert_eq!(&f[..], &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_response_encodings_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(response_encoding(&h).unwrap(), None);
        h.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert_eq!(response_encoding(&h).unwrap(), None);
        h.insert("grpc-encoding", HeaderValue::from_static("snappy"));
        assert_eq!(
            response_encoding(&h).unwrap_err().code(),
            Code::Unimplemented
        );
    }

    #[test]
    fn paths_name_their_services() {
        for m in [LOGS_EXPORT, METRICS_EXPORT, TRACES_EXPORT] {
            assert_eq!(m.path, format!("/{}/{}", m.service, m.method));
        }
    }
}
