//! OpAMP's two transports, client side. WebSocket: one connection held open, every
//! message a binary frame of a varint header (0) and the protobuf. Plain HTTP: one
//! POST per `AgentToServer` (`Content-Type: application/x-protobuf`), one
//! `ServerToAgent` in the answer. Both over the agent's rustls setup, both with
//! `Authorization: Bearer <credential>`, both with bounded message sizes.

use std::time::Duration;

use bytes::{Buf as _, Bytes};
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use vantage_proto::opamp::{AgentToServer, CONTENT_TYPE, ServerToAgent, WS_HEADER};

use super::Endpoint;
use crate::config::{ClientTls, Secret};

/// How long a TCP connect, TLS handshake and WebSocket upgrade may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one HTTP exchange may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `ServerToAgent` accepted: a remote configuration is a few KiB; 16 MiB is
/// far past any real one and bounds what a broken server can make the agent hold.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why an exchange with the server failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("TLS with {addr}: {message}")]
    Tls { addr: String, message: String },
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("http: {0}")]
    Http(String),
    /// 429/503 (or a refused upgrade with them): try again later.
    #[error("server busy (HTTP {status})")]
    Busy {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("server answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("undecodable ServerToAgent: {0}")]
    Decode(String),
    #[error("the server closed the connection")]
    Closed,
}

/// Anything a connection can run over (TCP or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn addr(ep: &Endpoint) -> String {
    format!("{}:{}", ep.host, ep.port)
}

/// TCP, then TLS for `wss://` and `https://`.
async fn dial(ep: &Endpoint, tls: &ClientTls) -> Result<Box<dyn Io>, TransportError> {
    let a = addr(ep);
    let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| TransportError::Connect {
            addr: a.clone(),
            message: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    if !ep.tls {
        return Ok(Box::new(tcp));
    }
    let tls_err = |message: String| TransportError::Tls {
        addr: a.clone(),
        message,
    };
    let config = crate::tlsclient::for_https(tls).map_err(|e| tls_err(format!("{e:#}")))?;
    let name = tls.server_name.clone().unwrap_or_else(|| ep.host.clone());
    let server_name = rustls_pki_types::ServerName::try_from(name)
        .map_err(|e| tls_err(format!("server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(Box::new(stream))
}

/// `Retry-After` in seconds (the HTTP-date form is not worth a parser here).
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn status_error(status: u16, headers: &hyper::HeaderMap, body: &[u8]) -> TransportError {
    if status == 429 || status == 503 {
        TransportError::Busy {
            status,
            retry_after: retry_after(headers),
        }
    } else {
        let body = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        TransportError::Status { status, body }
    }
}

/// A frame's protobuf, after the varint header (0 in this protocol version).
pub(crate) fn decode_frame(frame: &[u8]) -> Result<ServerToAgent, TransportError> {
    let mut buf = frame;
    let header = prost::encoding::decode_varint(&mut buf)
        .map_err(|e| TransportError::Decode(format!("frame header: {e}")))?;
    if header != u64::from(WS_HEADER) {
        return Err(TransportError::Decode(format!(
            "frame header {header} is not {WS_HEADER}"
        )));
    }
    ServerToAgent::decode(buf.chunk()).map_err(|e| TransportError::Decode(e.to_string()))
}

/// A frame for `msg`: the header byte, then the protobuf.
pub(crate) fn encode_frame(msg: &AgentToServer) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + msg.encoded_len());
    out.push(WS_HEADER);
    out.extend(msg.encode_to_vec());
    out
}

fn bearer(credential: Option<&Secret>) -> Option<hyper::header::HeaderValue> {
    credential.and_then(|c| format!("Bearer {}", c.expose()).parse().ok())
}

/// An open WebSocket session.
pub(crate) struct WsSession {
    ws: WebSocketStream<Box<dyn Io>>,
}

impl WsSession {
    /// Connects and upgrades.
    pub(crate) async fn connect(
        ep: &Endpoint,
        tls: &ClientTls,
        credential: Option<&Secret>,
    ) -> Result<WsSession, TransportError> {
        let attempt = async {
            let stream = dial(ep, tls).await?;
            let mut request = ep
                .url
                .as_str()
                .into_client_request()
                .map_err(|e| TransportError::WebSocket(e.to_string()))?;
            if let Some(v) = bearer(credential) {
                request
                    .headers_mut()
                    .insert(hyper::header::AUTHORIZATION, v);
            }
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_MESSAGE_BYTES));
            match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
                Ok((ws, _)) => Ok(WsSession { ws }),
                Err(tungstenite::Error::Http(response)) => {
                    let body = response.body().clone().unwrap_or_default();
                    Err(status_error(
                        response.status().as_u16(),
                        response.headers(),
                        &body,
                    ))
                }
                Err(e) => Err(TransportError::WebSocket(e.to_string())),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| TransportError::Connect {
                addr: addr(ep),
                message: format!("no connection within {CONNECT_TIMEOUT:?}"),
            })?
    }

    /// Sends one message.
    pub(crate) async fn send(&mut self, msg: &AgentToServer) -> Result<(), TransportError> {
        self.ws
            .send(Message::Binary(Bytes::from(encode_frame(msg))))
            .await
            .map_err(|e| TransportError::WebSocket(e.to_string()))
    }

    /// The next message from the server (pings are answered underneath).
    pub(crate) async fn recv(&mut self) -> Result<ServerToAgent, TransportError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => return decode_frame(&b),
                Some(Ok(Message::Close(_))) | None => return Err(TransportError::Closed),
                Some(Ok(Message::Text(_))) => {
                    return Err(TransportError::Decode(
                        "text frame; OpAMP frames are binary".into(),
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(TransportError::WebSocket(e.to_string())),
            }
        }
    }

    /// Closes politely (after the disconnect message).
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// One plain-HTTP exchange: POSTs `msg`, returns the answer.
pub(crate) async fn post(
    ep: &Endpoint,
    tls: &ClientTls,
    credential: Option<&Secret>,
    msg: &AgentToServer,
) -> Result<ServerToAgent, TransportError> {
    let exchange = async {
        let stream = dial(ep, tls).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let mut request = hyper::Request::post(ep.path.as_str())
            .header(hyper::header::HOST, addr(ep))
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some(v) = bearer(credential) {
            request = request.header(hyper::header::AUTHORIZATION, v);
        }
        let request = request
            .body(Full::new(Bytes::from(msg.encode_to_vec())))
            .map_err(|e| TransportError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_MESSAGE_BYTES)
            .collect()
            .await
            .map_err(|e| TransportError::Http(format!("answer body: {e}")))?
            .to_bytes();
        conn.abort();
        if !parts.status.is_success() {
            return Err(status_error(parts.status.as_u16(), &parts.headers, &body));
        }
        ServerToAgent::decode(body).map_err(|e| TransportError::Decode(e.to_string()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| TransportError::Http(format!("no answer within {REQUEST_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_carry_the_header_and_round_trip() {
        let msg = ServerToAgent {
            instance_uid: vec![5; 16],
            flags: 1,
            ..Default::default()
        };
        let mut frame = vec![WS_HEADER];
        frame.extend(msg.encode_to_vec());
        assert_eq!(decode_frame(&frame).unwrap(), msg);
        let out = encode_frame(&AgentToServer {
            sequence_num: 3,
            ..Default::default()
        });
        assert_eq!(out[0], 0);
        assert_eq!(AgentToServer::decode(&out[1..]).unwrap().sequence_num, 3);
        // A non-zero header is refused, not misread as protobuf.
        frame[0] = 1;
        assert!(decode_frame(&frame).is_err());
        assert!(decode_frame(&[]).is_err());
    }

    #[test]
    fn busy_answers_carry_retry_after() {
        let mut h = hyper::HeaderMap::new();
        h.insert(hyper::header::RETRY_AFTER, "7".parse().unwrap());
        match status_error(503, &h, b"") {
            TransportError::Busy { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            status_error(401, &h, b"no"),
            TransportError::Status { status: 401, .. }
        ));
    }

    proptest! {
        #[test]
        fn garbage_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&data);
        }
    }
}
