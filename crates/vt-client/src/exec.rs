//! The client side of an exec session: a WebSocket of `vt_api::exec` frames
//! ([`crate::Client::exec_connect`]), split into a writer and a reader so that input and
//! output flow independently.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use vt_api::exec::{ClientFrame, ServerFrame, MAX_FRAME};
use vt_api::REQUEST_ID_HEADER;

use crate::{error_body, Error, Result};

/// A WebSocket to the server (an exec session, a node's channel or stream).
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::Message;

/// An open session.
pub struct ExecConnection {
    ws: Ws,
    url: String,
}

impl ExecConnection {
    /// The writer (stdin, resize, signals) and the reader (output, exit, close).
    pub fn split(self) -> (ExecWriter, ExecReader) {
        let (sink, stream) = self.ws.split();
        (ExecWriter { sink, url: self.url.clone() }, ExecReader { stream, url: self.url })
    }
}

pub struct ExecWriter {
    sink: SplitSink<Ws, Message>,
    url: String,
}

impl ExecWriter {
    /// Send one frame; waits while the server does not take more (its session's input is bounded).
    pub async fn send(&mut self, frame: ClientFrame) -> Result<()> {
        self.sink.send(Message::Binary(frame.encode())).await.map_err(|e| ws_error(&self.url, e))
    }

    /// Close the session from this side (the command is hung up on if it still runs).
    pub async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Frame(ServerFrame),
    /// The server closed the session: its close code and reason (`1002` with the reason for
    /// a malformed frame; `1000` after the exit frame).
    Closed {
        code: u16,
        reason: String,
    },
}

pub struct ExecReader {
    stream: SplitStream<Ws>,
    url: String,
}

impl ExecReader {
    /// The next frame or the close; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Result<ExecEvent>> {
        loop {
            let msg = match self.stream.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(ws_error(&self.url, e))),
            };
            return Some(match msg {
                Message::Binary(b) => ServerFrame::decode(b)
                    .map(ExecEvent::Frame)
                    .map_err(|e| Error::Decode { url: self.url.clone(), message: e.to_string() }),
                Message::Close(frame) => Ok(match frame {
                    Some(f) => ExecEvent::Closed { code: f.code.into(), reason: f.reason.to_string() },
                    None => ExecEvent::Closed { code: 1005, reason: String::new() },
                }),
                Message::Text(_) => {
                    Err(Error::Decode { url: self.url.clone(), message: "a text message (frames are binary)".into() })
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            });
        }
    }
}

fn ws_error(url: &str, e: tungstenite::Error) -> Error {
    Error::Connect { url: url.to_owned(), message: e.to_string() }
}

/// `http://host:port` + `/v1/exec/<grant>` → `ws://host:port/v1/exec/<grant>`.
fn ws_url(base: &str, path: &str) -> std::result::Result<String, String> {
    let rest = if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else {
        return Err(format!("the server URL `{base}` is not http:// or https://"));
    };
    Ok(format!("{rest}{path}"))
}

pub(crate) async fn connect(base: &str, token: Option<&str>, path: &str) -> Result<ExecConnection> {
    // Errors name the server, never the path: it holds the grant.
    let shown = format!("{base}/v1/exec/…");
    let ws = websocket(base, token, path, &shown).await?;
    Ok(ExecConnection { ws, url: shown })
}

/// A WebSocket to the server at `path` with `token`, its messages bounded to [`MAX_FRAME`];
/// errors name `shown` (never a path that holds a secret).
pub(crate) async fn websocket(base: &str, token: Option<&str>, path: &str, shown: &str) -> Result<Ws> {
    let shown = shown.to_owned();
    let url = ws_url(base, path).map_err(|message| Error::Connect { url: shown.clone(), message })?;
    let mut req =
        url.into_client_request().map_err(|e| Error::Connect { url: shown.clone(), message: e.to_string() })?;
    if let Some(t) = token {
        let value = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| Error::Connect { url: shown.clone(), message: "the token is not a header value".into() })?;
        req.headers_mut().insert("authorization", value);
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_FRAME);
    config.max_frame_size = Some(MAX_FRAME);
    let tls = crate::tls::config().map_err(|message| Error::Connect { url: shown.clone(), message })?;
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector));
    match tokio::time::timeout(std::time::Duration::from_secs(30), connecting).await {
        Err(_) => Err(Error::Timeout { url: shown }),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let request_id =
                resp.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
            let body = error_body(status, request_id, resp.body().as_deref().unwrap_or_default());
            Err(Error::Api { status: status.as_u16(), body })
        }
        Ok(Err(e)) => Err(ws_error(&shown, e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ws_urls() {
        assert_eq!(super::ws_url("http://127.0.0.1:7411", "/v1/exec/x").unwrap(), "ws://127.0.0.1:7411/v1/exec/x");
        assert_eq!(super::ws_url("https://vt.example", "/v1/exec/x").unwrap(), "wss://vt.example/v1/exec/x");
        assert!(super::ws_url("ftp://x", "/").is_err());
    }
}
