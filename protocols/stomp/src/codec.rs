//! The STOMP frame codec, sans-IO.
//!
//! A frame is a command line, header lines, a blank line, a body and a NUL. A `content-length`
//! header makes the body binary (it may contain NULs); without it the body ends at the first
//! NUL. Lines may end in LF or CRLF, and bare EOLs between frames are heart-beats. Header values
//! are escaped in STOMP 1.1+ (`\n`, `\r`, `\c`, `\\`), except in CONNECT and CONNECTED frames.
//! Every part is bounded, and a frame that passes a bound is an error before it is buffered
//! whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Limits on what a client may send. RabbitMQ's STOMP plugin uses similar orders of magnitude.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest command or header line, in bytes.
    pub line_bytes_max: usize,
    /// The most headers in one frame.
    pub headers_max: usize,
    /// The largest body, in bytes.
    pub body_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { line_bytes_max: 8 * 1024, headers_max: 100, body_bytes_max: 16 * 1024 * 1024 }
    }
}

/// A decoded or outgoing frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    /// In order; when a name repeats, the first occurrence counts (STOMP 1.2 section 3.2.1).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: &str) -> Frame {
        Frame { command: command.to_owned(), headers: Vec::new(), body: Bytes::new() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Frame {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("a line exceeds {line_bytes_max} bytes")]
    LineTooLong { line_bytes_max: usize },
    #[error("more than {headers_max} headers")]
    TooManyHeaders { headers_max: usize },
    #[error("body exceeds {body_bytes_max} bytes")]
    BodyTooLarge { body_bytes_max: usize },
    #[error("header line without a colon")]
    HeaderWithoutColon,
    #[error("invalid escape sequence in a header")]
    BadEscape,
    #[error("frame text is not UTF-8")]
    NotUtf8,
    #[error("invalid content-length")]
    BadContentLength,
    #[error("body not terminated by NUL")]
    MissingNul,
}

/// How header values are escaped, by version; never in CONNECT/CONNECTED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escaping {
    /// STOMP 1.0: no escapes.
    None,
    /// STOMP 1.1: `\n`, `\c` and `\\`.
    Stomp11,
    /// STOMP 1.2: 1.1's, and `\r`.
    Stomp12,
}

/// Decodes one frame from the front of `buffer`; `Ok(None)` until one is complete. Heart-beat
/// EOLs before it are consumed. Each call searches the body from the start; a connection uses
/// `decode_resuming`.
pub fn decode(buffer: &mut BytesMut, limits: &Limits, escaping: Escaping) -> Result<Option<Frame>, CodecError> {
    decode_resuming(buffer, limits, escaping, &mut 0)
}

/// As `decode`, remembering in `searched` how much of a NUL-terminated body has been searched
/// already, so a body arriving in many reads is scanned once, not once per read (which would be
/// quadratic up to the body bound). Start with 0 and keep it between calls for one buffer.
pub fn decode_resuming(
    buffer: &mut BytesMut,
    limits: &Limits,
    escaping: Escaping,
    searched: &mut usize,
) -> Result<Option<Frame>, CodecError> {
    let result = decode_inner(buffer, limits, escaping, searched);
    if !matches!(result, Ok(None)) {
        *searched = 0;
    }
    result
}

fn decode_inner(
    buffer: &mut BytesMut,
    limits: &Limits,
    escaping: Escaping,
    searched: &mut usize,
) -> Result<Option<Frame>, CodecError> {
    while matches!(buffer.first(), Some(b'\n' | b'\r')) {
        if buffer[0] == b'\r' && buffer.get(1).is_some_and(|byte| *byte != b'\n') {
            break;
        }
        buffer.advance(1);
        *searched = 0;
    }
    let Some(header_end) = find_header_end(buffer, limits)? else { return Ok(None) };
    let head = std::str::from_utf8(&buffer[..header_end.text_end]).map_err(|_| CodecError::NotUtf8)?;
    let mut lines = head.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
    let command = lines.next().unwrap_or_default().to_owned();
    let escaping =
        if matches!(command.as_str(), "CONNECT" | "STOMP" | "CONNECTED") { Escaping::None } else { escaping };
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        if headers.len() == limits.headers_max {
            return Err(CodecError::TooManyHeaders { headers_max: limits.headers_max });
        }
        let (name, value) = line.split_once(':').ok_or(CodecError::HeaderWithoutColon)?;
        headers.push((unescape(name, escaping)?, unescape(value, escaping)?));
    }
    let length = headers.iter().find(|(name, _)| name == "content-length").map(|(_, value)| value.trim());
    let body_start = header_end.body_start;
    let available = &buffer[body_start..];
    let body_length = match length {
        Some(text) => {
            let length: usize = text.parse().map_err(|_| CodecError::BadContentLength)?;
            if length > limits.body_bytes_max {
                return Err(CodecError::BodyTooLarge { body_bytes_max: limits.body_bytes_max });
            }
            if available.len() < length + 1 {
                return Ok(None);
            }
            if available[length] != 0 {
                return Err(CodecError::MissingNul);
            }
            length
        }
        None => {
            let from = searched.saturating_sub(body_start).min(available.len());
            match available[from..].iter().position(|byte| *byte == 0) {
                Some(position) => from + position,
                None if available.len() > limits.body_bytes_max => {
                    return Err(CodecError::BodyTooLarge { body_bytes_max: limits.body_bytes_max });
                }
                None => {
                    *searched = buffer.len();
                    return Ok(None);
                }
            }
        }
    };
    let mut frame_bytes = buffer.split_to(body_start + body_length + 1);
    frame_bytes.advance(body_start);
    frame_bytes.truncate(body_length);
    Ok(Some(Frame { command, headers, body: frame_bytes.freeze() }))
}

struct HeaderEnd {
    /// Where the command and header text ends (before the blank line).
    text_end: usize,
    /// Where the body starts.
    body_start: usize,
}

/// Finds the blank line that ends the headers, enforcing the line-length bound on the way.
fn find_header_end(buffer: &[u8], limits: &Limits) -> Result<Option<HeaderEnd>, CodecError> {
    let mut line_start = 0;
    let mut lines = 0;
    for (index, byte) in buffer.iter().enumerate() {
        if *byte != b'\n' {
            if index - line_start > limits.line_bytes_max {
                return Err(CodecError::LineTooLong { line_bytes_max: limits.line_bytes_max });
            }
            continue;
        }
        let line = &buffer[line_start..index];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limits.line_bytes_max {
            return Err(CodecError::LineTooLong { line_bytes_max: limits.line_bytes_max });
        }
        if line.is_empty() && lines > 0 {
            return Ok(Some(HeaderEnd { text_end: line_start, body_start: index + 1 }));
        }
        lines += 1;
        if lines > limits.headers_max + 1 {
            return Err(CodecError::TooManyHeaders { headers_max: limits.headers_max });
        }
        line_start = index + 1;
    }
    // A partial line may still be followed by its CR: allow one byte for it, so a line is
    // judged the same whether or not its end has arrived.
    if buffer.len() - line_start > limits.line_bytes_max + 1 {
        return Err(CodecError::LineTooLong { line_bytes_max: limits.line_bytes_max });
    }
    Ok(None)
}

fn unescape(text: &str, escaping: Escaping) -> Result<String, CodecError> {
    if escaping == Escaping::None || !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(character) = chars.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        out.push(match chars.next() {
            Some('n') => '\n',
            Some('r') if escaping == Escaping::Stomp12 => '\r',
            Some('c') => ':',
            Some('\\') => '\\',
            // Undefined escapes (and `\r` before 1.2) are fatal, as the spec requires.
            _ => return Err(CodecError::BadEscape),
        });
    }
    Ok(out)
}

fn escape(text: &str, escaping: Escaping, out: &mut BytesMut) {
    if escaping == Escaping::None {
        // STOMP 1.0 cannot carry these in a header; they are replaced rather than corrupt the
        // frame.
        for character in text.chars() {
            match character {
                '\n' | '\r' => out.put_u8(b' '),
                other => out.put_slice(other.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        return;
    }
    for character in text.chars() {
        match character {
            '\n' => out.put_slice(b"\\n"),
            '\r' if escaping == Escaping::Stomp12 => out.put_slice(b"\\r"),
            // STOMP 1.1 has no escape for CR: replaced, as in 1.0, rather than corrupt the frame.
            '\r' => out.put_u8(b' '),
            ':' => out.put_slice(b"\\c"),
            '\\' => out.put_slice(b"\\\\"),
            other => out.put_slice(other.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// Encodes a frame, with a `content-length` whenever it has a body.
pub fn encode(frame: &Frame, escaping: Escaping, out: &mut BytesMut) {
    let escaping = if frame.command == "CONNECTED" { Escaping::None } else { escaping };
    out.put_slice(frame.command.as_bytes());
    out.put_u8(b'\n');
    for (name, value) in &frame.headers {
        escape(name, escaping, out);
        out.put_u8(b':');
        escape(value, escaping, out);
        out.put_u8(b'\n');
    }
    if !frame.body.is_empty() && frame.header("content-length").is_none() {
        out.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

/// The length of the first frame in `bytes` as `encode` writes it (LF line ends, and a
/// `content-length` whenever there is a body), or `None` until all of it is there. Heart-beat
/// EOLs before a frame are not counted: the caller skips them. Used to hand a WebSocket one
/// frame per message, as Web-STOMP clients expect.
pub fn encoded_frame_len(bytes: &[u8]) -> Option<usize> {
    let header_end = bytes.windows(2).position(|pair| pair == b"\n\n")?;
    let body_start = header_end + 2;
    let length = bytes[..header_end]
        .split(|byte| *byte == b'\n')
        .skip(1)
        .find_map(|line| line.strip_prefix(b"content-length:"))
        .and_then(|value| std::str::from_utf8(value).ok()?.trim().parse::<usize>().ok());
    let end = match length {
        Some(length) => body_start + length,
        None => body_start + bytes[body_start..].iter().position(|byte| *byte == 0)?,
    };
    (end < bytes.len()).then_some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, CodecError> {
        decode(&mut BytesMut::from(bytes), &Limits::default(), Escaping::Stomp12)
    }

    #[test]
    fn round_trips_in_any_split() {
        let frame = Frame::new("SEND")
            .with("destination", "/queue/a")
            .with("odd", "colon:new\nline\\back")
            .with("content-type", "application/octet-stream");
        let frame = Frame { body: Bytes::from_static(b"bin\0ary"), ..frame };
        let mut encoded = BytesMut::new();
        encode(&frame, Escaping::Stomp12, &mut encoded);
        let mut expected = frame.clone();
        expected.headers.push(("content-length".into(), "7".into()));
        for split in 0..encoded.len() {
            let mut buffer = BytesMut::from(&encoded[..split]);
            assert_eq!(decode(&mut buffer, &Limits::default(), Escaping::Stomp12), Ok(None), "split at {split}");
            buffer.extend_from_slice(&encoded[split..]);
            let decoded = decode(&mut buffer, &Limits::default(), Escaping::Stomp12).expect("valid").expect("complete");
            assert_eq!(decoded, expected);
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn heartbeats_and_crlf_are_accepted() {
        let frame = decode_one(b"\n\r\nSEND\r\ndestination:/topic/x\r\n\r\nhello\0").expect("valid").expect("complete");
        assert_eq!(frame.command, "SEND");
        assert_eq!(frame.header("destination"), Some("/topic/x"));
        assert_eq!(&frame.body[..], b"hello");
    }

    #[test]
    fn carriage_return_escapes_only_in_1_2() {
        let frame = Frame::new("MESSAGE").with("k", "a\rb");
        let mut stomp12 = BytesMut::new();
        encode(&frame, Escaping::Stomp12, &mut stomp12);
        assert!(stomp12.windows(2).any(|pair| pair == b"\\r"));
        let mut stomp11 = BytesMut::new();
        encode(&frame, Escaping::Stomp11, &mut stomp11);
        assert!(!stomp11.windows(2).any(|pair| pair == b"\\r"));
        let mut input = BytesMut::from(&b"SEND\nk:a\\rb\n\n\0"[..]);
        assert_eq!(decode(&mut input, &Limits::default(), Escaping::Stomp11), Err(CodecError::BadEscape));
    }

    #[test]
    fn connect_headers_are_not_unescaped() {
        let frame = decode_one(b"CONNECT\nlogin:a\\b\n\n\0").expect("valid").expect("complete");
        assert_eq!(frame.header("login"), Some("a\\b"));
    }

    #[test]
    fn bounds_are_errors() {
        let limits = Limits { line_bytes_max: 16, headers_max: 2, body_bytes_max: 4 };
        let mut long = BytesMut::from(&b"SEND\nk:aaaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert_eq!(decode(&mut long, &limits, Escaping::Stomp12), Err(CodecError::LineTooLong { line_bytes_max: 16 }));
        // Exactly one byte over, complete or not, with or without CR.
        for over in [&b"SEND\nk:aaaaaaaaaaaaaaa\n\n\0"[..], b"SEND\nk:aaaaaaaaaaaaaaa\r\n\n\0"] {
            let mut buffer = BytesMut::from(over);
            assert!(matches!(decode(&mut buffer, &limits, Escaping::Stomp12), Err(CodecError::LineTooLong { .. })));
        }
        let mut exact = BytesMut::from(&b"SEND\nk:aaaaaaaaaaaaaa\r\n\n\0"[..]);
        assert!(decode(&mut exact, &limits, Escaping::Stomp12).expect("16 bytes is allowed").is_some());
        let mut many = BytesMut::from(&b"SEND\na:1\nb:2\nc:3\n\n\0"[..]);
        assert!(matches!(decode(&mut many, &limits, Escaping::Stomp12), Err(CodecError::TooManyHeaders { .. })));
        let roomy_lines = Limits { line_bytes_max: 64, ..limits };
        let mut big = BytesMut::from(&b"SEND\ncontent-length:99\n\n"[..]);
        assert!(matches!(decode(&mut big, &roomy_lines, Escaping::Stomp12), Err(CodecError::BodyTooLarge { .. })));
        let mut unterminated = BytesMut::from(&b"SEND\n\nabcdefgh"[..]);
        assert!(matches!(decode(&mut unterminated, &limits, Escaping::Stomp12), Err(CodecError::BodyTooLarge { .. })));
        assert_eq!(decode_one(b"SEND\nnocolon\n\n\0"), Err(CodecError::HeaderWithoutColon));
        assert_eq!(decode_one(b"SEND\na:\\x\n\n\0"), Err(CodecError::BadEscape));
        assert_eq!(decode_one(b"SEND\ncontent-length:2\n\nabc\0"), Err(CodecError::MissingNul));
    }

    #[test]
    fn encoded_frame_len_finds_each_frame_in_a_stream() {
        let frames = [
            Frame { body: Bytes::from_static(b"bin\0ary\n\n"), ..Frame::new("MESSAGE").with("a", "x:y") },
            Frame::new("RECEIPT").with("receipt-id", "7"),
            Frame { body: Bytes::from_static("é".as_bytes()), ..Frame::new("MESSAGE") },
        ];
        let mut stream = BytesMut::new();
        let mut lengths = Vec::new();
        for frame in &frames {
            let before = stream.len();
            encode(frame, Escaping::Stomp12, &mut stream);
            lengths.push(stream.len() - before);
        }
        let mut offset = 0;
        for length in lengths {
            for cut in offset..offset + length {
                assert_eq!(encoded_frame_len(&stream[offset..cut]), None, "cut at {cut}");
            }
            assert_eq!(encoded_frame_len(&stream[offset..]), Some(length));
            offset += length;
        }
        assert_eq!(encoded_frame_len(&stream[offset..]), None);
    }
}
