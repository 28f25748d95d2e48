//! Message framing: newline-delimited JSON (stdio) and server-sent events (Streamable HTTP),
//! both with a size limit that is enforced while reading, so an oversized message never
//! occupies more than the limit in memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How much of an oversized message is kept to find out whose message it was.
pub const SNIFF_BYTES: usize = 512;

/// One frame of a newline-delimited stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message (without its newline; a trailing `\r` is removed).
    Line(String),
    /// A line that is not UTF-8.
    NotUtf8,
    /// A message longer than the limit: its first bytes and its full length.
    TooLong { prefix: Vec<u8>, len: usize },
    /// End of stream.
    Eof,
}

/// Reads the next non-empty line, refusing to buffer more than `max` bytes of it.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Frame> {
    let mut line: Vec<u8> = Vec::new();
    let mut len = 0usize;
    let mut too_long = false;
    loop {
        let (done, used) = {
            let buf = reader.fill_buf().await?;
            if buf.is_empty() {
                // End of stream: a last line without a newline still counts.
                if len == 0 {
                    return Ok(Frame::Eof);
                }
                (true, 0)
            } else {
                let (part, done, used) = match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => (buf.get(..i).unwrap_or_default(), true, i + 1),
                    None => (buf, false, buf.len()),
                };
                len += part.len();
                if !too_long {
                    line.extend_from_slice(part);
                    if len > max {
                        // Past the limit only a prefix is kept, to name the message.
                        too_long = true;
                        line.truncate(SNIFF_BYTES);
                    }
                }
                (done, used)
            }
        };
        reader.consume(used);
        if !done {
            continue;
        }
        if too_long {
            return Ok(Frame::TooLong { prefix: line, len });
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            if used == 0 {
                return Ok(Frame::Eof);
            }
            line.clear();
            len = 0;
            continue;
        }
        return Ok(match String::from_utf8(line) {
            Ok(s) => Frame::Line(s),
            Err(_) => Frame::NotUtf8,
        });
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry_ms: Option<u64>,
    /// The data exceeded the limit: `data` holds its first bytes only.
    pub too_long: bool,
}

/// An incremental parser of `text/event-stream` (the WHATWG rules that matter here: `data`
/// lines are joined with `\n`, `id`, `event` and `retry` fields, comments, CR/LF/CRLF).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    pending_cr: bool,
    current: SseEvent,
    has_data: bool,
    max: usize,
}

impl SseParser {
    pub fn new(max: usize) -> SseParser {
        SseParser {
            max,
            ..SseParser::default()
        }
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.pending_cr = true;
                    self.end_line(&mut out);
                }
                _ => {
                    if self.line.len() <= self.max.saturating_add(64) {
                        self.line.push(b);
                    }
                }
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data || self.current.id.is_some() || self.current.retry_ms.is_some() {
                out.push(std::mem::take(&mut self.current));
            }
            self.current = SseEvent::default();
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.has_data = true;
                if self.current.data.len() + value.len() > self.max {
                    self.current.too_long = true;
                    let room = SNIFF_BYTES.saturating_sub(self.current.data.len());
                    let cut = value
                        .char_indices()
                        .map(|(i, _)| i)
                        .take_while(|i| *i <= room)
                        .last()
                        .unwrap_or(0);
                    self.current.data.push_str(value.get(..cut).unwrap_or(""));
                } else if !self.current.too_long {
                    self.current.data.push_str(value);
                }
            }
            "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
            "event" => self.current.event = Some(value.to_string()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.current.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
}

/// One SSE event carrying a JSON-RPC message (data lines must not hold raw newlines: JSON
/// text's newlines are whitespace, so they are replaced).
pub fn sse_message(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 16);
    s.push_str("event: message\ndata: ");
    s.push_str(&crate::jsonrpc::one_line(text));
    s.push_str("\n\n");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_lines_and_refuses_oversized_ones() {
        let input =
            b"{\"a\":1}\r\n\n  \n{\"big\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n{\"b\":2}"
                .to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &input[..]);
        assert_eq!(
            read_frame(&mut r, 20).await.unwrap(),
            Frame::Line("{\"a\":1}".into())
        );
        match read_frame(&mut r, 20).await.unwrap() {
            Frame::TooLong { prefix, len } => {
                assert_eq!(len, "{\"big\":\"\"}".len() + 34);
                assert!(prefix.starts_with(b"{\"big\""));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            read_frame(&mut r, 20).await.unwrap(),
            Frame::Line("{\"b\":2}".into())
        );
        assert_eq!(read_frame(&mut r, 20).await.unwrap(), Frame::Eof);
    }

    #[test]
    fn parses_sse_across_chunks() {
        let mut p = SseParser::new(1000);
        let mut events =
            p.feed(b"id: 1\nretry: 50\ndata:\n\n: comment\r\nevent: message\r\ndata: {\"a\":");
        events.extend(p.feed(b"1}\r\ndata: 2\r\n\r\n"));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].retry_ms, Some(50));
        assert_eq!(events[0].data, "");
        assert_eq!(events[1].data, "{\"a\":1}\n2");
        assert_eq!(events[1].event.as_deref(), Some("message"));
    }

    #[test]
    fn sse_data_over_the_limit_is_flagged() {
        let mut p = SseParser::new(8);
        let events = p.feed(b"data: {\"id\":3,\"result\":\"long long\"}\n\n");
        assert!(events[0].too_long);
        assert!(events[0].data.starts_with("{\"id\":3"));
    }
}
