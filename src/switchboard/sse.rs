//! A minimal server-sent-events reader: bytes in, `(event, data)` out.
//!
//! Both MCP transports use it: a streamable-HTTP reply may be an SSE body, and the legacy
//! transport's whole downstream is one long SSE stream.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The most bytes one event may take (its lines not yet ended plus its data so far). A
/// Switchboard reply is a JSON-RPC message of a few KiB; a peer that streams on without ending
/// a line or an event (a broken proxy, a hostile server) is cut off here instead of growing the
/// buffer until the process runs out of memory.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The stream went past [`MAX_EVENT_BYTES`] inside one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server-sent event stream holds {held} bytes of one unfinished event, more than the \
     {MAX_EVENT_BYTES} this reader accepts"
)]
pub struct EventTooLarge {
    pub held: usize,
}

/// Incremental parser: feed chunks as they arrive, collect the events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Appends a chunk and returns the events it completed (in order), or the error that ends
    /// the stream once one event grows past [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        self.buf.drain(..start);
        let held = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if held > MAX_EVENT_BYTES {
            return Err(EventTooLarge { held });
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseEvent {
                event: event.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings_are_reassembled() {
        let mut p = SseParser::default();
        assert!(
            p.push(b"event: endpoint\r\ndata: /messages/?session")
                .unwrap()
                .is_empty()
        );
        let evs = p
            .push(b"_id=ab\r\n\r\n: ping\n\ndata: {\"a\":\ndata: 1}\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "endpoint".into(),
                    data: "/messages/?session_id=ab".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "{\"a\":\n1}".into()
                },
            ]
        );
    }

    #[test]
    fn a_line_or_an_event_past_the_limit_ends_the_stream_and_a_long_one_under_it_does_not() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut fed = 0;
        let err = loop {
            match p.push(&chunk) {
                Ok(evs) => assert!(evs.is_empty()),
                Err(e) => break e,
            }
            fed += chunk.len();
            assert!(
                fed <= MAX_EVENT_BYTES,
                "no error after {fed} bytes of one line"
            );
        };
        assert!(err.held > MAX_EVENT_BYTES);
        assert!(err.to_string().contains("unfinished event"), "{err}");

        // Many short data lines of one event count too.
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(1000));
        let over = (0..=MAX_EVENT_BYTES / 1000).find_map(|_| p.push(line.as_bytes()).err());
        assert!(over.is_some(), "an endless event was never cut off");

        // A large event that ends under the limit is read whole.
        let mut p = SseParser::default();
        let data = "z".repeat(MAX_EVENT_BYTES / 2);
        let evs = p.push(format!("data: {data}\n\n").as_bytes()).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data.len(), data.len());
    }
}
