//! Incremental server-sent-events framer.
//!
//! Follows the WHATWG event-stream algorithm: bytes are buffered per line and
//! decoded only once a whole event is known, so a multi-byte character split
//! across reads is never broken; `\r\n`, `\n` and a lone `\r` all end a line,
//! including a `\r` at the end of one read whose `\n` starts the next. It
//! never owns the bytes it is fed: callers pass every byte on as it arrives
//! and use the reported offsets when they must cut an event out.
//!
//! Memory is bounded: a line longer than `max_line_bytes` is dropped (and its
//! event with it), never buffered without limit.

/// One dispatched event. `data` joins the event's `data:` lines with `\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a str,
    pub data: &'a str,
}

/// The framer's state between reads.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    has_data: bool,
    /// The previous read ended in `\r`: a leading `\n` belongs to that line end.
    skip_lf: bool,
    /// The current line grew past the bound and is being skipped.
    overflowed: bool,
    /// The current event lost a line to the bound and must not be dispatched.
    event_damaged: bool,
    max_line_bytes: usize,
}

/// The default bound on one line: a Responses `response.completed` event
/// repeats the whole output, so it must be generous.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(DEFAULT_MAX_LINE_BYTES)
    }
}

impl SseParser {
    pub fn new(max_line_bytes: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            has_data: false,
            skip_lf: false,
            overflowed: false,
            event_damaged: false,
            max_line_bytes,
        }
    }

    /// Feeds one read. `on_event` is called for each event completed inside
    /// `chunk`, with the offset in `chunk` just past the line end that
    /// completed it.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>, usize)) {
        let mut pos = 0;
        if self.skip_lf {
            self.skip_lf = false;
            if chunk.first() == Some(&b'\n') {
                pos = 1;
            }
        }
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.push_partial(rest);
                    return;
                }
                Some(at) => {
                    let terminator = rest[at];
                    let mut next = pos + at + 1;
                    if terminator == b'\r' {
                        match chunk.get(next) {
                            Some(b'\n') => next += 1,
                            Some(_) => {}
                            None => self.skip_lf = true,
                        }
                    }
                    self.push_partial(&rest[..at]);
                    let dispatched = self.end_line();
                    if dispatched {
                        if let Some(event) = self.take_event() {
                            on_event(event, next);
                        }
                        self.reset_event();
                    }
                    pos = next;
                }
            }
        }
    }

    /// Ends the stream: a last event that was not followed by a blank line is
    /// dispatched anyway (a lenient reading that keeps usage a truncated
    /// stream did carry).
    pub fn finish(&mut self, mut on_event: impl FnMut(SseEvent<'_>)) {
        if !self.line.is_empty() || self.overflowed {
            self.end_line();
        }
        if let Some(event) = self.take_event() {
            on_event(event);
        }
        self.reset_event();
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line_bytes {
            self.overflowed = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// Processes the buffered line; returns true when it was blank (the event
    /// is complete).
    fn end_line(&mut self) -> bool {
        if self.overflowed {
            self.overflowed = false;
            self.event_damaged = true;
            self.line.clear();
            return false;
        }
        if self.line.is_empty() {
            return true;
        }
        let line = std::mem::take(&mut self.line);
        if line[0] != b':' {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    (&line[..colon], value)
                }
                None => (&line[..], &[][..]),
            };
            match field {
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                b"event" => {
                    self.event.clear();
                    self.event.extend_from_slice(value);
                }
                _ => {}
            }
        }
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
        false
    }

    fn take_event(&self) -> Option<SseEvent<'_>> {
        if !self.has_data || self.event_damaged {
            return None;
        }
        let data = std::str::from_utf8(&self.data).ok()?;
        let event = std::str::from_utf8(&self.event).unwrap_or("");
        Some(SseEvent { event, data })
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.event.clear();
        self.has_data = false;
        self.event_damaged = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |event, _| {
                out.push((event.event.to_string(), event.data.to_string()))
            });
        }
        parser.finish(|event| out.push((event.event.to_string(), event.data.to_string())));
        out
    }

    #[test]
    fn joins_data_lines_and_reads_fields() {
        let events = collect(&[b"event: a\ndata: 1\ndata:2\n\n: comment\n\ndata: x\r\n\r\n"]);
        assert_eq!(
            events,
            vec![
                ("a".to_string(), "1\n2".to_string()),
                (String::new(), "x".to_string())
            ]
        );
    }

    #[test]
    fn cr_then_lf_across_reads_is_one_line_end() {
        let events = collect(&[b"data: 1\r", b"\n\r", b"\ndata: 2\r\r"]);
        assert_eq!(
            events,
            vec![
                (String::new(), "1".to_string()),
                (String::new(), "2".to_string())
            ]
        );
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let text = "data: 👋é\n\n".as_bytes();
        for cut in 1..text.len() {
            let events = collect(&[&text[..cut], &text[cut..]]);
            assert_eq!(
                events,
                vec![(String::new(), "👋é".to_string())],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn reports_offsets_after_the_blank_line() {
        let mut parser = SseParser::default();
        let mut ends = Vec::new();
        let chunk = b"data: a\n\ndata: b\n\ndata: c";
        parser.feed(chunk, |_, end| ends.push(end));
        assert_eq!(ends, vec![9, 18]);
    }

    #[test]
    fn an_overlong_line_drops_its_event_only() {
        let mut parser = SseParser::new(8);
        let mut out = Vec::new();
        parser.feed(b"data: 0123456789\n\ndata: ok\n\n", |event, _| {
            out.push(event.data.to_string())
        });
        assert_eq!(out, vec!["ok".to_string()]);
    }

    proptest::proptest! {
        /// Any split of any bytes yields the same events as the whole.
        #[test]
        fn split_invariance(body in proptest::collection::vec(proptest::prop_oneof![
            proptest::strategy::Just(b'\n'), proptest::strategy::Just(b'\r'), proptest::strategy::Just(b':'),
            proptest::strategy::Just(b' '), proptest::strategy::Just(b'd'), proptest::strategy::Just(b'a'),
            proptest::strategy::Just(b't'), proptest::strategy::Just(0xC3u8), proptest::strategy::Just(0xA9u8),
            proptest::num::u8::ANY], 0..300), cuts in proptest::collection::vec(0usize..300, 0..20)) {
            let mut sorted = cuts.clone();
            sorted.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for cut in sorted {
                if cut > last && cut < body.len() {
                    pieces.push(&body[last..cut]);
                    last = cut;
                }
            }
            pieces.push(&body[last..]);
            proptest::prop_assert_eq!(collect(&[&body]), collect(&pieces));
        }
    }
}
