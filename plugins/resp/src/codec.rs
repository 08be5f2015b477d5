//! RESP2, sans-IO: bytes in, commands out; replies encoded into a buffer. A command is an array
//! of bulk strings (what every client library sends) or an inline line (what a person types
//! into telnet). Every size is bounded.

/// The longest line: an array or bulk header, or an inline command.
const LINE_BYTES_MAX: usize = 64 * 1024;

/// The most arguments in one command from a logged-in client (a BLPOP of many keys, an RPUSH of
/// many values).
pub const ARGUMENTS_MAX: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// What Redis says after "Protocol error: ".
    Invalid(String),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::Invalid(reason) => write!(formatter, "Protocol error: {reason}"),
        }
    }
}

/// One command's arguments, and how many bytes of the input it took.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses the first command in `input`, refusing more than `arguments_max` arguments or a bulk
/// string over `bulk_bytes_max`. `Ok(None)`: more bytes are needed.
pub fn parse(input: &[u8], arguments_max: usize, bulk_bytes_max: usize) -> Result<Option<Parsed>, ProtocolError> {
    match input.first() {
        None => Ok(None),
        Some(b'*') => parse_array(input, arguments_max, bulk_bytes_max),
        Some(_) => parse_inline(input, arguments_max),
    }
}

/// The line starting at `start`, without its CRLF, and the offset after it.
fn line(input: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window = &input[start..input.len().min(start + LINE_BYTES_MAX + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some((&window[..end], start + end + 2))),
        None if window.len() > LINE_BYTES_MAX => Err(ProtocolError::Invalid("too big inline request".into())),
        None => Ok(None),
    }
}

fn number(text: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ProtocolError::Invalid(format!("invalid {what}")))
}

fn parse_array(input: &[u8], arguments_max: usize, bulk_bytes_max: usize) -> Result<Option<Parsed>, ProtocolError> {
    let Some((header, mut offset)) = line(input, 0)? else { return Ok(None) };
    let count = number(&header[1..], "multibulk length")?;
    if count > arguments_max as i64 {
        return Err(ProtocolError::Invalid("invalid multibulk length".into()));
    }
    let count = usize::try_from(count.max(0)).unwrap_or(0);
    let mut arguments = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((header, after)) = line(input, offset)? else { return Ok(None) };
        if header.first() != Some(&b'$') {
            let found = header.first().map_or(String::new(), |byte| (*byte as char).to_string());
            return Err(ProtocolError::Invalid(format!("expected '$', got '{found}'")));
        }
        let length = number(&header[1..], "bulk length")?;
        if length < 0 || length as u64 > bulk_bytes_max as u64 {
            return Err(ProtocolError::Invalid("invalid bulk length".into()));
        }
        let length = length as usize;
        if input.len() < after + length + 2 {
            return Ok(None);
        }
        if &input[after + length..after + length + 2] != b"\r\n" {
            return Err(ProtocolError::Invalid("bulk string not terminated by CRLF".into()));
        }
        arguments.push(input[after..after + length].to_vec());
        offset = after + length + 2;
    }
    Ok(Some((arguments, offset)))
}

fn parse_inline(input: &[u8], arguments_max: usize) -> Result<Option<Parsed>, ProtocolError> {
    // Inline commands may end with a bare LF, as telnet users type them.
    let window = &input[..input.len().min(LINE_BYTES_MAX + 1)];
    let Some(end) = window.iter().position(|byte| *byte == b'\n') else {
        if window.len() > LINE_BYTES_MAX {
            return Err(ProtocolError::Invalid("too big inline request".into()));
        }
        return Ok(None);
    };
    let text = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
    let arguments: Vec<Vec<u8>> =
        text.split(|byte| byte.is_ascii_whitespace()).filter(|word| !word.is_empty()).map(<[u8]>::to_vec).collect();
    if arguments.len() > arguments_max {
        return Err(ProtocolError::Invalid("too many arguments".into()));
    }
    Ok(Some((arguments, end + 1)))
}

/// Reply encoders, appending to `out`.
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An error reply; `text` starts with its code (`ERR`, `NOAUTH`, `WRONGPASS`, ...).
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    // An error is one line: a client's bytes echoed in it must not break the framing.
    out.extend(text.bytes().map(|byte| if byte == b'\r' || byte == b'\n' { b' ' } else { byte }));
    out.extend_from_slice(b"\r\n");
}

pub fn integer(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(format!(":{value}\r\n").as_bytes());
}

pub fn bulk(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Which RESP a connection speaks: 2 until `HELLO 3` switches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Resp2,
    Resp3,
}

/// A missing value: `$-1` in RESP2 (a nil bulk string), `_` in RESP3.
pub fn null_bulk(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(if version == Version::Resp3 { b"_\r\n" } else { b"$-1\r\n" });
}

/// A missing array (a blocking pop that timed out): `*-1` in RESP2, `_` in RESP3.
pub fn null_array(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(if version == Version::Resp3 { b"_\r\n" } else { b"*-1\r\n" });
}

pub fn array(out: &mut Vec<u8>, length: usize) {
    out.extend_from_slice(format!("*{length}\r\n").as_bytes());
}

/// A map of `pairs` entries: RESP3's `%`, or a flat array twice as long in RESP2.
pub fn map(out: &mut Vec<u8>, pairs: usize, version: Version) {
    match version {
        Version::Resp3 => out.extend_from_slice(format!("%{pairs}\r\n").as_bytes()),
        Version::Resp2 => array(out, pairs * 2),
    }
}

/// An out-of-band message (pub/sub): RESP3's push type `>`, a plain array in RESP2.
pub fn push(out: &mut Vec<u8>, length: usize, version: Version) {
    match version {
        Version::Resp3 => out.extend_from_slice(format!(">{length}\r\n").as_bytes()),
        Version::Resp2 => array(out, length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn arrays_parse_whole_and_byte_by_byte() {
        let input = b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n+rest";
        let (arguments, used) = parse(input, ARGUMENTS_MAX, MAX).expect("valid").expect("complete");
        assert_eq!(arguments, vec![b"PUBLISH".to_vec(), b"ch".to_vec(), b"he\r\nl".to_vec()]);
        assert_eq!(&input[used..], b"+rest");
        for cut in 0..used {
            assert_eq!(parse(&input[..cut], ARGUMENTS_MAX, MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn inline_commands_split_on_whitespace() {
        let (arguments, used) = parse(b"PING  hello\r\nX", ARGUMENTS_MAX, MAX).expect("valid").expect("complete");
        assert_eq!(arguments, vec![b"PING".to_vec(), b"hello".to_vec()]);
        assert_eq!(used, 13);
        assert_eq!(parse(b"PING", ARGUMENTS_MAX, MAX), Ok(None));
    }

    #[test]
    fn bad_and_oversized_input_is_a_protocol_error() {
        assert!(parse(b"*1\r\n:5\r\n", ARGUMENTS_MAX, MAX).is_err());
        assert!(parse(b"*x\r\n", ARGUMENTS_MAX, MAX).is_err());
        assert!(parse(b"*1\r\n$2000000\r\n", ARGUMENTS_MAX, MAX).is_err(), "bulk over the bound");
        assert!(parse(b"*1\r\n$-5\r\n", ARGUMENTS_MAX, MAX).is_err());
        assert!(parse(b"*99999\r\n", ARGUMENTS_MAX, MAX).is_err(), "too many arguments");
        assert!(parse(b"*1\r\n$1\r\nab\r\n", ARGUMENTS_MAX, MAX).is_err(), "missing CRLF after the bulk");
        assert!(parse(&vec![b'a'; LINE_BYTES_MAX + 10], ARGUMENTS_MAX, MAX).is_err(), "endless inline line");
    }

    #[test]
    fn errors_stay_on_one_line() {
        let mut out = Vec::new();
        error(&mut out, "ERR unknown command 'a\r\nb'");
        assert_eq!(out, b"-ERR unknown command 'a  b'\r\n");
    }
}
