//! The HTTP listener: accepted connections, and the bilingual body of the answers the HTTP
//! library gives on its own.
//!
//! hyper refuses a request it cannot parse before any route sees it: an over-long URI (414),
//! too many or too large headers (431), a request that is not HTTP/1.1 (400). Its answer is a
//! bare status line with an empty body, and it closes the connection after it. Every other
//! error of the API has the bilingual body, so each connection is wrapped in [`Connection`],
//! which recognises such a bare answer on its way out (a 400, 414 or 431 head with no
//! `content-type`: every answer of the engine's own routes has one) and writes the same status
//! with the API's error body instead.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The stream of accepted connections served by warp. It never ends with an error: an accept
/// that fails (out of file descriptors, say) is logged and retried after a pause, as hyper's
/// own listener does, so the server keeps serving the connections it has.
pub fn accepted(listener: TcpListener) -> impl Stream<Item = Result<Connection, io::Error>> {
    futures_util::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    // Answers are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(Connection::new(stream)), listener));
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Binds the listener (port 0 picks a free one).
pub async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// An accepted connection whose bare protocol-error answers are given the API's error body.
pub struct Connection {
    stream: TcpStream,
    /// The replacement answer still to be written, and how much of it was.
    replacement_opt: Option<(Vec<u8>, usize)>,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            replacement_opt: None,
        }
    }

    /// Writes what is left of the replacement answer.
    fn poll_drain(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement_opt {
            if *written == bytes.len() {
                self.replacement_opt = None;
                break;
            }
            let count = ready!(Pin::new(&mut self.stream).poll_write(context, &bytes[*written..]))?;
            if count == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += count;
        }
        Poll::Ready(Ok(()))
    }

    /// If `buf` starts with a bare protocol-error answer, takes it over: the replacement is
    /// written instead, and the whole of `buf` reported written.
    fn take_over(
        &mut self,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        let status = bare_error_status(buf)?;
        metrics::counter!(crate::metrics::HTTP_PROTOCOL_ERRORS, "status" => status.to_string())
            .increment(1);
        tracing::info!(status, "request refused before routing");
        self.replacement_opt = Some((replacement(status), 0));
        Some(match self.poll_drain(context) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            // Whatever is left is written by the flush that follows.
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(context))?;
        if let Some(poll) = self.take_over(context, buf) {
            return poll;
        }
        Pin::new(&mut self.stream).poll_write(context, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(context))?;
        // hyper writes an answer's head as the first buffer of its queue.
        if let Some(first) = buffers.iter().find(|buffer| !buffer.is_empty()) {
            if bare_error_status(first).is_some() {
                let total = buffers.iter().map(|buffer| buffer.len()).sum();
                return match self.take_over(context, first) {
                    Some(Poll::Ready(Ok(_))) => Poll::Ready(Ok(total)),
                    Some(other) => other,
                    None => Poll::Ready(Ok(total)),
                };
            }
        }
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(context))?;
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(context))?;
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// The status of a bare answer hyper gives on its own (400, 414 or 431, no `content-type`),
/// when `buf` starts with a whole one.
fn bare_error_status(buf: &[u8]) -> Option<u16> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => 400,
        b"414 " => 414,
        b"431 " => 431,
        _ => return None,
    };
    let head_end = buf.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = &buf[..head_end];
    let has_content_type = head
        .split(|byte| *byte == b'\n')
        .any(|line| line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:"));
    (!has_content_type).then_some(status)
}

/// The same status with the API's bilingual error body; the connection closes after it, as it
/// would have after hyper's own answer.
fn replacement(status: u16) -> Vec<u8> {
    let (reason, code, error, error_vi) = match status {
        414 => (
            "URI Too Long",
            "uri_too_long",
            "the request's URI is too long",
            "địa chỉ URI của yêu cầu quá dài",
        ),
        431 => (
            "Request Header Fields Too Large",
            "headers_too_large",
            "the request has too many headers, or headers that are too large",
            "yêu cầu có quá nhiều tiêu đề, hoặc tiêu đề quá lớn",
        ),
        _ => (
            "Bad Request",
            "malformed_http",
            "the request is not valid HTTP/1.1",
            "yêu cầu không phải HTTP/1.1 hợp lệ",
        ),
    };
    let body =
        serde_json::json!({ "code": code, "error": error, "error_vi": error_vi }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_protocol_error_heads_are_recognised() {
        assert_eq!(
            bare_error_status(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
            ),
            Some(431)
        );
        assert_eq!(
            bare_error_status(b"HTTP/1.1 414 URI Too Long\r\ndate: x\r\n\r\n"),
            Some(414)
        );
        // The engine's own 400s carry a content type.
        assert_eq!(
            bare_error_status(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{}"
            ),
            None
        );
        assert_eq!(bare_error_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(bare_error_status(b"{\"code\":\"HTTP/1.1 431 \"}"), None);
        assert_eq!(bare_error_status(b"HTTP/1.1 431 Request Header"), None);
    }

    #[test]
    fn the_replacement_is_a_whole_answer_with_the_error_body() {
        let answer = String::from_utf8(replacement(431)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "headers_too_large");
        assert!(body["error_vi"].as_str().unwrap().contains("tiêu đề"));
    }
}
