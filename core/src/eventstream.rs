//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the
//! binary stream of Bedrock's `ConverseStream` and
//! `InvokeModelWithResponseStream` (and of every other AWS streaming API).
//!
//! A stream is a sequence of messages; each message is:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | total length of the message, big-endian, this field and the CRC included |
//! | 4 | length of the headers section |
//! | 4 | CRC32 (IEEE) of the 8 bytes before it (the prelude CRC) |
//! | headers length | headers, one after another |
//! | total − headers − 16 | payload |
//! | 4 | CRC32 of every byte before it (the message CRC) |
//!
//! A header is a 1-byte name length, the name (UTF-8), a 1-byte value type
//! and the value: 0 true and 1 false (no bytes), 2 byte (i8), 3 short (i16),
//! 4 integer (i32), 5 long (i64), 6 byte array and 7 string (a 2-byte length,
//! then the bytes), 8 timestamp (i64 milliseconds since the epoch), 9 UUID
//! (16 bytes). All integers are big-endian.
//!
//! [`Decoder`] takes the stream in chunks of any size and hands out whole
//! messages; it holds at most one message's bytes (bounded by
//! [`Decoder::with_max_message_bytes`]) and checks both CRCs.
//! [`Message::encode`] writes a message with both CRCs computed, so a message
//! can be decoded, changed and written again.
//!
//! Nothing here panics: every read is bounds-checked.

use std::fmt;

/// The prelude: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// The smallest message: a prelude and a message CRC, no headers, no payload.
pub const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;
/// The largest message the decoder takes unless told otherwise: AWS's limit
/// for one event-stream message (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The longest header name (its length is one byte).
pub const MAX_HEADER_NAME_LEN: usize = 255;
/// The longest byte-array or string header value the encoder writes (AWS's
/// implementations stop at `i16::MAX` although the length field is 2 bytes).
pub const MAX_HEADER_VALUE_LEN: usize = i16::MAX as usize;

const TYPE_TRUE: u8 = 0;
const TYPE_FALSE: u8 = 1;
const TYPE_BYTE: u8 = 2;
const TYPE_INT16: u8 = 3;
const TYPE_INT32: u8 = 4;
const TYPE_INT64: u8 = 5;
const TYPE_BYTES: u8 = 6;
const TYPE_STRING: u8 = 7;
const TYPE_TIMESTAMP: u8 = 8;
const TYPE_UUID: u8 = 9;

/// What is wrong with an event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The prelude's CRC does not match its first 8 bytes.
    #[error("event-stream prelude checksum mismatch (expected {expected:#010x}, computed {computed:#010x})")]
    PreludeChecksum { expected: u32, computed: u32 },
    /// The message's CRC does not match its bytes.
    #[error("event-stream message checksum mismatch (expected {expected:#010x}, computed {computed:#010x})")]
    MessageChecksum { expected: u32, computed: u32 },
    /// The prelude's lengths cannot describe a message.
    #[error("invalid event-stream prelude: total length {total}, headers length {headers}")]
    InvalidPrelude { total: u32, headers: u32 },
    /// A message longer than the decoder's bound.
    #[error("event-stream message of {length} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { length: usize, limit: usize },
    /// A header that does not fit its section, has an unknown type or a name
    /// or string that is not UTF-8.
    #[error("invalid event-stream header: {0}")]
    InvalidHeader(String),
    /// The stream ended inside a message.
    #[error("event stream ended inside a message ({buffered} bytes of an unfinished message)")]
    Truncated { buffered: usize },
    /// Bytes after the one message [`Message::decode`] was given.
    #[error("{extra} bytes after the event-stream message")]
    TrailingBytes { extra: usize },
    /// A message the encoder cannot write (a name or value too long).
    #[error("cannot encode event-stream message: {0}")]
    Encode(String),
}

impl Error {
    /// The HTTP status a client gets when a provider's stream is bad: 502.
    pub fn status(&self) -> u16 {
        502
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MessageTooLarge { .. } => "upstream_event_too_large",
            Error::Truncated { .. } => "upstream_stream_truncated",
            _ => "upstream_invalid_stream",
        }
    }
}

/// A header's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The string, for a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    fn type_byte(&self) -> u8 {
        match self {
            HeaderValue::Bool(true) => TYPE_TRUE,
            HeaderValue::Bool(false) => TYPE_FALSE,
            HeaderValue::Byte(_) => TYPE_BYTE,
            HeaderValue::Int16(_) => TYPE_INT16,
            HeaderValue::Int32(_) => TYPE_INT32,
            HeaderValue::Int64(_) => TYPE_INT64,
            HeaderValue::Bytes(_) => TYPE_BYTES,
            HeaderValue::String(_) => TYPE_STRING,
            HeaderValue::Timestamp(_) => TYPE_TIMESTAMP,
            HeaderValue::Uuid(_) => TYPE_UUID,
        }
    }

    /// Bytes of the encoded value after the type byte.
    fn encoded_len(&self) -> usize {
        match self {
            HeaderValue::Bool(_) => 0,
            HeaderValue::Byte(_) => 1,
            HeaderValue::Int16(_) => 2,
            HeaderValue::Int32(_) => 4,
            HeaderValue::Int64(_) | HeaderValue::Timestamp(_) => 8,
            HeaderValue::Bytes(b) => 2 + b.len(),
            HeaderValue::String(s) => 2 + s.len(),
            HeaderValue::Uuid(_) => 16,
        }
    }
}

/// One header: a name and a typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: HeaderValue,
}

impl Header {
    pub fn new(name: impl Into<String>, value: HeaderValue) -> Self {
        Header { name: name.into(), value }
    }

    /// A string header, the usual kind (`:event-type`, `:content-type` ...).
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header { name: name.into(), value: HeaderValue::String(value.into()) }
    }
}

/// One event-stream message: headers in wire order and the payload.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub headers: Vec<Header>,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("headers", &self.headers)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .finish()
    }
}

impl Message {
    pub fn new(headers: Vec<Header>, payload: impl Into<Vec<u8>>) -> Self {
        Message { headers, payload: payload.into() }
    }

    /// An event as AWS services send one: `:event-type`, `:content-type`
    /// and `:message-type: event` headers, then the payload.
    pub fn event(event_type: &str, content_type: &str, payload: impl Into<Vec<u8>>) -> Self {
        Message::new(
            vec![
                Header::string(":event-type", event_type),
                Header::string(":content-type", content_type),
                Header::string(":message-type", "event"),
            ],
            payload,
        )
    }

    /// An exception as AWS services send one: `:exception-type`,
    /// `:content-type` and `:message-type: exception` headers.
    pub fn exception(exception_type: &str, content_type: &str, payload: impl Into<Vec<u8>>) -> Self {
        Message::new(
            vec![
                Header::string(":exception-type", exception_type),
                Header::string(":content-type", content_type),
                Header::string(":message-type", "exception"),
            ],
            payload,
        )
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|h| h.name == name).map(|h| &h.value)
    }

    /// The first header named `name`, when it is a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }

    /// `:message-type`: `event`, `exception` or `error`.
    pub fn message_type(&self) -> Option<&str> {
        self.header_str(":message-type")
    }

    /// `:event-type` of an event.
    pub fn event_type(&self) -> Option<&str> {
        self.header_str(":event-type")
    }

    /// `:exception-type` of an exception.
    pub fn exception_type(&self) -> Option<&str> {
        self.header_str(":exception-type")
    }

    /// The length of the encoded headers section.
    fn headers_len(&self) -> usize {
        self.headers.iter().map(|h| 2 + h.name.len() + h.value.encoded_len()).sum()
    }

    /// The whole message in wire form, both CRCs computed.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Append the message in wire form to `out` (nothing is appended on error).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        for h in &self.headers {
            if h.name.len() > MAX_HEADER_NAME_LEN {
                return Err(Error::Encode(format!("header name of {} bytes (at most 255)", h.name.len())));
            }
            let value_len = match &h.value {
                HeaderValue::Bytes(b) => b.len(),
                HeaderValue::String(s) => s.len(),
                _ => 0,
            };
            if value_len > MAX_HEADER_VALUE_LEN {
                return Err(Error::Encode(format!(
                    "header `{}` value of {value_len} bytes (at most {MAX_HEADER_VALUE_LEN})",
                    h.name
                )));
            }
        }
        let headers_len = self.headers_len();
        let total = MIN_MESSAGE_LEN.saturating_add(headers_len).saturating_add(self.payload.len());
        let (Ok(total32), Ok(headers32)) = (u32::try_from(total), u32::try_from(headers_len)) else {
            return Err(Error::Encode(format!("message of {total} bytes")));
        };
        let start = out.len();
        out.reserve(total);
        out.extend_from_slice(&total32.to_be_bytes());
        out.extend_from_slice(&headers32.to_be_bytes());
        let prelude_crc = crc32fast::hash(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        for h in &self.headers {
            // Checked above: the name fits in a byte, the values in 2 bytes.
            out.push(h.name.len() as u8);
            out.extend_from_slice(h.name.as_bytes());
            out.push(h.value.type_byte());
            match &h.value {
                HeaderValue::Bool(_) => {}
                HeaderValue::Byte(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int16(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int32(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int64(v) | HeaderValue::Timestamp(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Bytes(b) => {
                    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    out.extend_from_slice(b);
                }
                HeaderValue::String(s) => {
                    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                HeaderValue::Uuid(u) => out.extend_from_slice(u),
            }
        }
        out.extend_from_slice(&self.payload);
        let message_crc = crc32fast::hash(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&message_crc.to_be_bytes());
        Ok(())
    }

    /// Decode exactly one whole message (no bytes before or after it).
    pub fn decode(frame: &[u8]) -> Result<Message, Error> {
        let prelude = Prelude::read(frame, usize::MAX)?.ok_or(Error::Truncated { buffered: frame.len() })?;
        let Some(first) = frame.get(..prelude.total) else {
            return Err(Error::Truncated { buffered: frame.len() });
        };
        let message = decode_body(first, &prelude)?;
        match frame.len() - prelude.total {
            0 => Ok(message),
            extra => Err(Error::TrailingBytes { extra }),
        }
    }
}

/// A checked prelude.
#[derive(Debug, Clone, Copy)]
struct Prelude {
    total: usize,
    headers: usize,
}

impl Prelude {
    /// The prelude at the start of `bytes`; `None` when fewer than 12 bytes.
    fn read(bytes: &[u8], max_message_bytes: usize) -> Result<Option<Prelude>, Error> {
        let (Some(total), Some(headers), Some(expected), Some(head)) =
            (be_u32(bytes, 0), be_u32(bytes, 4), be_u32(bytes, 8), bytes.get(..8))
        else {
            return Ok(None);
        };
        let computed = crc32fast::hash(head);
        if computed != expected {
            return Err(Error::PreludeChecksum { expected, computed });
        }
        let (total_len, headers_len) = (total as usize, headers as usize);
        if total_len < MIN_MESSAGE_LEN || headers_len > total_len - MIN_MESSAGE_LEN {
            return Err(Error::InvalidPrelude { total, headers });
        }
        if total_len > max_message_bytes {
            return Err(Error::MessageTooLarge { length: total_len, limit: max_message_bytes });
        }
        Ok(Some(Prelude { total: total_len, headers: headers_len }))
    }
}

/// The message in `frame` (exactly `prelude.total` bytes, prelude checked).
fn decode_body(frame: &[u8], prelude: &Prelude) -> Result<Message, Error> {
    let crc_at = prelude.total - 4;
    let (Some(body), Some(expected)) = (frame.get(..crc_at), be_u32(frame, crc_at)) else {
        return Err(Error::Truncated { buffered: frame.len() });
    };
    let computed = crc32fast::hash(body);
    if computed != expected {
        return Err(Error::MessageChecksum { expected, computed });
    }
    let headers_end = PRELUDE_LEN + prelude.headers;
    let (Some(header_bytes), Some(payload)) = (body.get(PRELUDE_LEN..headers_end), body.get(headers_end..)) else {
        return Err(Error::InvalidPrelude { total: prelude.total as u32, headers: prelude.headers as u32 });
    };
    Ok(Message { headers: decode_headers(header_bytes)?, payload: payload.to_vec() })
}

fn decode_headers(mut bytes: &[u8]) -> Result<Vec<Header>, Error> {
    let mut headers = Vec::new();
    while let Some((&name_len, rest)) = bytes.split_first() {
        let bad = |what: &str| Error::InvalidHeader(what.to_owned());
        let (name, rest) = take(rest, name_len as usize).ok_or_else(|| bad("name runs past the headers"))?;
        let name = std::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?.to_owned();
        let (&kind, rest) = rest.split_first().ok_or_else(|| bad(&format!("`{name}` has no value type")))?;
        let short = || Error::InvalidHeader(format!("`{name}` value runs past the headers"));
        let (value, rest) = match kind {
            TYPE_TRUE => (HeaderValue::Bool(true), rest),
            TYPE_FALSE => (HeaderValue::Bool(false), rest),
            TYPE_BYTE => {
                let (b, rest) = take_array::<1>(rest).ok_or_else(short)?;
                (HeaderValue::Byte(i8::from_be_bytes(b)), rest)
            }
            TYPE_INT16 => {
                let (b, rest) = take_array::<2>(rest).ok_or_else(short)?;
                (HeaderValue::Int16(i16::from_be_bytes(b)), rest)
            }
            TYPE_INT32 => {
                let (b, rest) = take_array::<4>(rest).ok_or_else(short)?;
                (HeaderValue::Int32(i32::from_be_bytes(b)), rest)
            }
            TYPE_INT64 | TYPE_TIMESTAMP => {
                let (b, rest) = take_array::<8>(rest).ok_or_else(short)?;
                let v = i64::from_be_bytes(b);
                (if kind == TYPE_INT64 { HeaderValue::Int64(v) } else { HeaderValue::Timestamp(v) }, rest)
            }
            TYPE_BYTES | TYPE_STRING => {
                let (len, rest) = take_array::<2>(rest).ok_or_else(short)?;
                let (value, rest) = take(rest, u16::from_be_bytes(len) as usize).ok_or_else(short)?;
                if kind == TYPE_BYTES {
                    (HeaderValue::Bytes(value.to_vec()), rest)
                } else {
                    let s = std::str::from_utf8(value)
                        .map_err(|_| Error::InvalidHeader(format!("`{name}` string value is not UTF-8")))?;
                    (HeaderValue::String(s.to_owned()), rest)
                }
            }
            TYPE_UUID => {
                let (b, rest) = take_array::<16>(rest).ok_or_else(short)?;
                (HeaderValue::Uuid(b), rest)
            }
            other => return Err(Error::InvalidHeader(format!("`{name}` has unknown value type {other}"))),
        };
        headers.push(Header { name, value });
        bytes = rest;
    }
    Ok(headers)
}

fn take(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

fn take_array<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    let (head, rest) = take(bytes, N)?;
    Some((head.try_into().ok()?, rest))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Incremental decoder: feed the stream's bytes in chunks of any size,
/// collect whole messages.
///
/// The prelude is checked as soon as its 12 bytes are in, so a bad length or
/// a message over the bound fails before its bytes are buffered. After an
/// error the decoder stays failed: every later call returns the same error
/// (a stream cannot be resynchronised after a bad frame).
#[derive(Debug)]
pub struct Decoder {
    max_message_bytes: usize,
    /// The bytes of the unfinished message.
    buf: Vec<u8>,
    failed: Option<Error>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder taking messages up to [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub fn new() -> Self {
        Decoder::with_max_message_bytes(DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A decoder refusing messages longer than `max_message_bytes` (whole
    /// message, prelude and CRC included).
    pub fn with_max_message_bytes(max_message_bytes: usize) -> Self {
        Decoder { max_message_bytes: max_message_bytes.max(MIN_MESSAGE_LEN), buf: Vec::new(), failed: None }
    }

    /// Bytes held of an unfinished message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decode the messages `chunk` completes, appending them to `out`.
    /// Messages before a bad one are appended before the error is returned.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Message>) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(chunk, out);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    fn feed_inner(&mut self, mut chunk: &[u8], out: &mut Vec<Message>) -> Result<(), Error> {
        // Complete the message already begun, copying only what it needs.
        if !self.buf.is_empty() {
            if self.buf.len() < PRELUDE_LEN {
                let (head, rest) = chunk.split_at((PRELUDE_LEN - self.buf.len()).min(chunk.len()));
                self.buf.extend_from_slice(head);
                chunk = rest;
            }
            let Some(prelude) = Prelude::read(&self.buf, self.max_message_bytes)? else {
                return Ok(());
            };
            let (head, rest) = chunk.split_at(prelude.total.saturating_sub(self.buf.len()).min(chunk.len()));
            self.buf.extend_from_slice(head);
            chunk = rest;
            if self.buf.len() < prelude.total {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.buf);
            out.push(decode_body(&frame, &prelude)?);
        }
        // Whole messages straight from the chunk.
        while let Some(prelude) = Prelude::read(chunk, self.max_message_bytes)? {
            let Some(frame) = chunk.get(..prelude.total) else {
                break;
            };
            out.push(decode_body(frame, &prelude)?);
            chunk = chunk.get(prelude.total..).unwrap_or_default();
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The end of the stream: an error if it stopped inside a message (or
    /// the decoder had failed).
    pub fn finish(&mut self) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.buf.is_empty() {
            let e = Error::Truncated { buffered: self.buf.len() };
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_message_is_sixteen_bytes() {
        let bytes = Message::default().encode().unwrap();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        assert_eq!(Message::decode(&bytes).unwrap(), Message::default());
    }

    #[test]
    fn a_prelude_split_across_chunks_is_completed() {
        let m = Message::event("chunk", "application/json", b"{}".to_vec());
        let bytes = m.encode().unwrap();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out, vec![m]);
    }
}
