//! The stdio transport toward the client: newline-delimited JSON-RPC on the gateway's own
//! standard input and output. Nothing but protocol messages is ever written to the output;
//! logs go to standard error.

use crate::framing::{read_frame, Frame};
use crate::jsonrpc::{self, code};
use crate::session::{ClientSink, Route, Session};
use crate::{Gateway, GatewayError};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Writes messages to the client, one per line, in order; batches whatever is queued into one
/// write.
struct LineSink {
    tx: mpsc::UnboundedSender<String>,
}

impl ClientSink for LineSink {
    fn send(&self, text: String, _route: Route) {
        let _ = self.tx.send(text);
    }
}

impl Gateway {
    /// Serves one client over a pair of byte streams (the process's stdin and stdout, or pipes
    /// in tests) until the input ends. `credential` is the caller's token (`TRUSTSTACK_TOKEN`).
    pub async fn serve_stdio<R, W>(
        &self,
        input: R,
        output: W,
        credential: Option<&str>,
    ) -> Result<(), GatewayError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let identity = self.resolver().resolve(credential)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            let mut output = output;
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            while let Some(first) = rx.recv().await {
                buf.clear();
                buf.extend_from_slice(jsonrpc::one_line(&first).as_bytes());
                buf.push(b'\n');
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(jsonrpc::one_line(&more).as_bytes());
                    buf.push(b'\n');
                }
                if output.write_all(&buf).await.is_err() || output.flush().await.is_err() {
                    break;
                }
            }
        });
        let sink = Arc::new(LineSink { tx: tx.clone() });
        let id = crate::new_session_id();
        tracing::info!(session = %id, agent = %identity.agent, "stdio session started");
        let session = Session::start(Arc::clone(self.core()), identity, id, sink);
        if let Some(c) = credential {
            session.bind_credential(Arc::clone(self.resolver()), c.to_string());
        }
        let max = self.core().limits.max_message_bytes;
        let mut reader = BufReader::with_capacity(64 * 1024, input);
        loop {
            match read_frame(&mut reader, max).await {
                Ok(Frame::Line(text)) => session.on_client(&text),
                Ok(Frame::TooLong { prefix, len }) => {
                    let id = jsonrpc::sniff_id(&prefix);
                    let message = format!(
                        "message of {len} bytes exceeds the gateway's limit of {max} bytes"
                    );
                    tracing::warn!("{message}");
                    let _ = tx.send(jsonrpc::error_response(
                        id.as_ref(),
                        code::INVALID_REQUEST,
                        &message,
                    ));
                }
                Ok(Frame::NotUtf8) => {
                    let _ = tx.send(jsonrpc::error_response(
                        None,
                        code::PARSE_ERROR,
                        "parse error: not UTF-8",
                    ));
                }
                Ok(Frame::Eof) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read from the client");
                    break;
                }
            }
        }
        tracing::info!(session = %session.id, "client closed its input; ending the session");
        // Answers still on their way are delivered before the upstreams are closed.
        session.drain(std::time::Duration::from_secs(5)).await;
        session.close().await;
        drop(session);
        drop(tx);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
        Ok(())
    }
}
