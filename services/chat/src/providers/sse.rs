//! An incremental decoder of Server-Sent Events (the WHATWG `text/event-stream` format), fed bytes as they
//! arrive. Written here rather than taken from a crate because it is small, must work on arbitrary chunk
//! boundaries (a UTF-8 character or a `\r\n` split across reads), and must report comments so that keep-alives
//! are seen for what they are; it is unit-tested at every split point of the recorded samples.

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// What a line produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A comment line (`: keep-alive`), with its text.
    Comment(String),
}

#[derive(Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_carriage_return: bool,
}

impl SseDecoder {
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    /// Feeds bytes; returns what they completed. Incomplete lines wait for the next call.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<SseItem> {
        let mut items = Vec::new();
        if self.after_carriage_return {
            self.after_carriage_return = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        let mut start = 0;
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            if byte == b'\n' || byte == b'\r' {
                if self.buffer.is_empty() {
                    // The usual case: the whole line is in this chunk, and is read where it is.
                    self.line(&bytes[start..index], &mut items);
                } else {
                    self.buffer.extend_from_slice(&bytes[start..index]);
                    let mut line = std::mem::take(&mut self.buffer);
                    self.line(&line, &mut items);
                    line.clear();
                    self.buffer = line;
                }
                if byte == b'\r' {
                    if index + 1 == bytes.len() {
                        self.after_carriage_return = true;
                    } else if bytes[index + 1] == b'\n' {
                        index += 1;
                    }
                }
                start = index + 1;
            }
            index += 1;
        }
        self.buffer.extend_from_slice(&bytes[start..]);
        items
    }

    fn line(&mut self, line: &[u8], items: &mut Vec<SseItem>) {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                items.push(SseItem::Event(SseEvent { event: self.event.take(), data }));
            }
            self.event = None;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            items.push(SseItem::Comment(comment.trim_start().to_string()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // `id` and `retry` matter to browsers reconnecting, not to a gateway reading one response.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: Option<&str>, data: &str) -> SseItem {
        SseItem::Event(SseEvent { event: event.map(str::to_string), data: data.to_string() })
    }

    fn decode_in_two(input: &[u8], split: usize) -> Vec<SseItem> {
        let mut decoder = SseDecoder::new();
        let mut items = decoder.push(&input[..split]);
        items.extend(decoder.push(&input[split..]));
        items
    }

    #[test]
    fn events_comments_and_multi_line_data_at_every_split_point() {
        let input = ": OPENROUTER PROCESSING\r\n\r\nevent: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\ndata: a\ndata: b\n\ndata:é\r\r".as_bytes();
        let expected = vec![
            SseItem::Comment("OPENROUTER PROCESSING".into()),
            event(Some("ping"), "{\"type\": \"ping\"}"),
            event(None, "a\nb"),
            event(None, "é"),
        ];
        for split in 0..=input.len() {
            assert_eq!(decode_in_two(input, split), expected, "split at {split}");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let mut decoder = SseDecoder::new();
        assert_eq!(decoder.push(b"data: [DONE]"), vec![]);
        assert_eq!(decoder.push(b"\n"), vec![]);
        assert_eq!(decoder.push(b"\n"), vec![event(None, "[DONE]")]);
    }

    #[test]
    fn the_event_name_does_not_leak_into_the_next_event_and_unknown_fields_are_ignored() {
        let mut decoder = SseDecoder::new();
        let items = decoder.push(b"event: error\nid: 7\nretry: 10\ndata: x\n\ndata: y\n\nevent: lonely\n\ndata\n\n");
        assert_eq!(items, vec![event(Some("error"), "x"), event(None, "y"), event(None, "")]);
    }
}
