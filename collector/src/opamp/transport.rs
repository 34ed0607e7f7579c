//! The two OpAMP transports on `/v1/opamp`: a plain-HTTP `POST` (one `AgentToServer`
//! in, one `ServerToAgent` out) and a WebSocket (`GET` with an upgrade; every binary
//! frame is a varint header of 0 followed by one message; the server may push at any
//! time). Both authenticate with `Authorization: Bearer` holding the `ingest` scope.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use tokio::sync::mpsc;
use vantage_proto::ErrorCode;
use vantage_proto::opamp::{CONTENT_TYPE, ServerErrorResponseType, ServerToAgent, WS_HEADER};
use vantage_storage::meta::Scope;

use super::{Conn, MAX_MESSAGE_BYTES, OpampServer, SEND_QUEUE, decode, error_response};
use crate::api::{ApiError, ApiState, authenticate};

/// Whether this connection may carry secrets: the API listener has TLS, or
/// `secrets.without_tls` permits the peer (read when a WebSocket opens, per poll on HTTP).
fn may_carry_secrets(state: &ApiState, extensions: &Extensions) -> bool {
    let config = state.live.get();
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    config
        .secrets_without_tls
        .permits(config.tls.is_some(), peer)
}

fn protobuf(status: StatusCode, msg: &ServerToAgent) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        msg.encode_to_vec(),
    )
        .into_response()
}

fn bad_request(
    server: &OpampServer,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Response {
    server.metrics().error(reason);
    tracing::debug!(reason, error = %message, "refused an opamp http request");
    protobuf(
        status,
        &error_response(Vec::new(), ServerErrorResponseType::BadRequest, message),
    )
}

/// Reads at most `limit` bytes of `reader`; `None` when there are more.
fn read_bounded(reader: impl std::io::Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

/// Bytes of an oversized body read and dropped before answering 413, so the client
/// reads the answer instead of a connection reset; beyond this the connection is cut.
const MAX_DRAIN_BYTES: usize = 16 * MAX_MESSAGE_BYTES;

/// The body if it is at most [`MAX_MESSAGE_BYTES`]; `None` (after draining up to
/// [`MAX_DRAIN_BYTES`]) when it is larger.
async fn read_body(body: Body) -> Result<Option<Vec<u8>>, axum::Error> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > MAX_DRAIN_BYTES {
            return Ok(None);
        }
        if seen <= MAX_MESSAGE_BYTES {
            out.extend_from_slice(&data);
        }
    }
    Ok((seen <= MAX_MESSAGE_BYTES).then_some(out))
}

/// `POST /v1/opamp`: the plain-HTTP transport.
pub(crate) async fn http(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Ingest)?;
    let server = &state.opamp;
    let raw = match read_body(body).await {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            return Ok(bad_request(
                server,
                StatusCode::PAYLOAD_TOO_LARGE,
                "oversized",
                format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        Err(e) => {
            return Ok(bad_request(
                server,
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("request body could not be read: {e}"),
            ));
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "identity" | "" => raw,
        "gzip" => match read_bounded(flate2::read::GzDecoder::new(&raw[..]), MAX_MESSAGE_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Ok(bad_request(
                    server,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "oversized",
                    format!("decompressed message larger than {MAX_MESSAGE_BYTES} bytes"),
                ));
            }
            Err(e) => {
                return Ok(bad_request(
                    server,
                    StatusCode::BAD_REQUEST,
                    "bad_gzip",
                    format!("gzip body: {e}"),
                ));
            }
        },
        other => {
            return Ok(bad_request(
                server,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_encoding",
                format!("content-encoding {other:?}: only gzip is accepted"),
            ));
        }
    };
    let msg = match decode(&bytes) {
        Ok(msg) => msg,
        Err(e) => {
            return Ok(bad_request(
                server,
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("body is not an AgentToServer protobuf: {e}"),
            ));
        }
    };
    let secure = may_carry_secrets(&state, &extensions);
    let reply = server.handle(&principal, msg, &Conn::Http, secure).await;
    Ok(protobuf(StatusCode::OK, &reply))
}

/// Read buffer of one WebSocket, allocated when it opens. The library's default
/// (128 KiB) made 1,000 idle agents cost 160 MiB of collector memory; OpAMP messages
/// are a few hundred bytes, and a larger one is still read whole (the buffer is only
/// the unit of reading), up to [`MAX_MESSAGE_BYTES`].
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Splits the WebSocket header (a varint, 0 in this protocol version) off a frame.
fn strip_header(frame: &[u8]) -> Result<&[u8], String> {
    match frame.first() {
        Some(&WS_HEADER) => Ok(&frame[1..]),
        Some(other) => Err(format!("websocket header {other}: expected 0")),
        None => Err("empty websocket frame".into()),
    }
}

fn ws_frame(msg: &ServerToAgent) -> Message {
    let mut out = Vec::with_capacity(msg.encoded_len() + 1);
    out.push(WS_HEADER);
    msg.encode(&mut out).unwrap_or_default();
    Message::Binary(out.into())
}

/// `GET /v1/opamp` with an upgrade: the WebSocket transport.
pub(crate) async fn websocket(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Ingest)?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("GET /v1/opamp is the OpAMP WebSocket transport: {e}; plain HTTP uses POST"),
        )
    })?;
    let Some(conn_id) = state.opamp.open_connection(&principal.tenant) else {
        state.opamp.metrics().error("connection_limit");
        return Err(ApiError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "tenant {} holds {} OpAMP connections already",
                principal.tenant,
                super::MAX_CONNECTIONS_PER_TENANT
            ),
        ));
    };
    let server = state.opamp.clone();
    let shutdown = state.shutdown.clone();
    let secure = may_carry_secrets(&state, &extensions);
    Ok(upgrade
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES + 16)
        .max_frame_size(MAX_MESSAGE_BYTES + 16)
        .on_upgrade(move |socket| async move {
            let tenant = principal.tenant.clone();
            serve(server.clone(), principal, socket, conn_id, secure, shutdown).await;
            server.close_connection(&tenant, conn_id);
        }))
}

async fn serve(
    server: Arc<OpampServer>,
    principal: crate::auth::Principal,
    socket: WebSocket,
    conn_id: u64,
    secure: bool,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<ServerToAgent>(SEND_QUEUE);
    let (close_tx, mut close_rx) = mpsc::channel::<CloseFrame>(1);
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        if sink.send(ws_frame(&msg)).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                frame = close_rx.recv() => {
                    if let Some(frame) = frame {
                        let _ = sink.send(Message::Close(Some(frame))).await;
                    }
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    let conn = Conn::Ws {
        id: conn_id,
        tx: tx.clone(),
    };
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = shutdown.cancelled() => break,
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let text = e.to_string();
                let (reason, code) = if text.contains("too long")
                    || text.contains("Space limit")
                    || text.contains("size")
                {
                    ("oversized", 1009)
                } else {
                    ("ws_error", 1002)
                };
                server.metrics().error(reason);
                tracing::debug!(tenant = %principal.tenant, error = %text, "opamp websocket read failed");
                let _ = close_tx
                    .send(CloseFrame {
                        code,
                        reason: format!("{reason}: message limit is {MAX_MESSAGE_BYTES} bytes")
                            .into(),
                    })
                    .await;
                break;
            }
        };
        let data = match frame {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(_) => {
                server.metrics().error("text_frame");
                let reply = error_response(
                    Vec::new(),
                    ServerErrorResponseType::BadRequest,
                    "OpAMP frames are binary",
                );
                if tx.send(reply).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let reply = match strip_header(&data)
            .map_err(|e| e.to_string())
            .and_then(|body| {
                decode(body).map_err(|e| format!("frame is not an AgentToServer protobuf: {e}"))
            }) {
            Ok(msg) => {
                let disconnect = msg.agent_disconnect.is_some();
                let reply = server.handle(&principal, msg, &conn, secure).await;
                if disconnect {
                    let _ = tx.send(reply).await;
                    break;
                }
                reply
            }
            Err(e) => {
                server.metrics().error("malformed");
                error_response(Vec::new(), ServerErrorResponseType::BadRequest, e)
            }
        };
        // Bounded: a client that does not read its answers stops being read.
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    drop(conn);
    drop(tx);
    drop(close_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_must_be_zero() {
        assert_eq!(strip_header(&[0, 1, 2]).unwrap(), &[1, 2]);
        assert!(strip_header(&[]).is_err());
        assert!(strip_header(&[1, 0]).is_err());
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![0u8; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(
            read_bounded(flate2::read::GzDecoder::new(&gz[..]), 100)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            read_bounded(flate2::read::GzDecoder::new(&gz[..]), 10_000)
                .unwrap()
                .unwrap()
                .len(),
            10_000
        );
    }
}
