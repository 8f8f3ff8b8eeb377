//! Deterministic helpers shared by both APIs: token estimates, the echoed
//! reply, word-sized chunking, ids and a small PRNG.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest part of the user's text echoed back in a reply, in chars.
pub const ECHO_LIMIT_CHARS: usize = 200;

/// Prefix of every text reply.
pub const REPLY_PREFIX: &str = "Mock reply to: ";

/// The mock's token estimate for one piece of text: `ceil(chars / 4)`
/// (0 for the empty string). Input usage is the sum of this over every text
/// segment of the request (at least 1); output usage is this for the reply
/// (at least 1).
pub fn approx_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4)
}

/// Sum of [`approx_tokens`] over segments, at least 1.
pub fn sum_tokens<'a>(segments: impl IntoIterator<Item = &'a str>) -> u64 {
    segments.into_iter().map(approx_tokens).sum::<u64>().max(1)
}

/// The first `max` chars of `text` (cut on a char boundary).
pub fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

/// The deterministic text reply for a prompt.
pub fn reply_for(user_text: &str) -> String {
    format!("{REPLY_PREFIX}{}", truncate_chars(user_text, ECHO_LIMIT_CHARS))
}

/// The reply for a prompt plus the `x-mock-append` header's text, which lets
/// tests make the "model" say something the prompt did not contain.
pub fn reply_with_append(user_text: &str, headers: &axum::http::HeaderMap) -> String {
    let mut reply = reply_for(user_text);
    if let Some(extra) = headers.get(crate::headers::APPEND).and_then(|v| v.to_str().ok()) {
        reply.push(' ');
        reply.push_str(extra);
    }
    reply
}

/// Why a text answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Natural end of the reply.
    Stop,
    /// Cut by the request's max tokens.
    Length,
    /// Cut before one of the request's stop sequences (which one).
    StopSequence(String),
}

/// Applies stop sequences, then the max-tokens cap (approximate: 4 chars per
/// token) to a reply.
pub fn shape_reply(reply: String, stop: &[String], max_tokens: Option<u64>) -> (String, Finish) {
    let mut text = reply;
    let mut finish = Finish::Stop;
    let earliest = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|pos| (pos, s.clone())))
        .min_by_key(|(pos, _)| *pos);
    if let Some((pos, seq)) = earliest {
        text.truncate(pos);
        finish = Finish::StopSequence(seq);
    }
    if let Some(max) = max_tokens {
        if approx_tokens(&text) > max {
            let limit = usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX);
            let cut = truncate_chars(&text, limit).len();
            text.truncate(cut);
            finish = Finish::Length;
        }
    }
    (text, finish)
}

/// Splits text into word-sized pieces, each carrying the whitespace before
/// it (`"Mock reply to: Hi"` → `["Mock", " reply", " to:", " Hi"]`).
pub fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut prev_is_space = false;
    for ch in text.chars() {
        let is_space = ch.is_whitespace();
        if is_space && !prev_is_space && !current.is_empty() && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(ch);
        prev_is_space = is_space;
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Splits a string into `parts` pieces of roughly equal char length (never
/// empty pieces; fewer when the string is short).
pub fn split_even(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let parts = parts.clamp(1, chars.len());
    let size = chars.len().div_ceil(parts);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Whether the text mentions "tool" (case-insensitive substring).
pub fn mentions_tool(text: &str) -> bool {
    text.to_lowercase().contains("tool")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64 step: a small deterministic PRNG.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

/// Unique, provider-looking ids (`chatcmpl-…`, `msg_01…`, `toolu_01…`).
#[derive(Debug)]
pub struct IdGen {
    seed: u64,
    counter: AtomicU64,
}

impl IdGen {
    pub fn new() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Self { seed: nanos ^ (u64::from(std::process::id()) << 32), counter: AtomicU64::new(0) }
    }

    fn state(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chars(&self, alphabet: &[u8], len: usize) -> String {
        let mut state = self.state();
        (0..len)
            .map(|_| {
                let idx = (splitmix(&mut state) % alphabet.len() as u64) as usize;
                char::from(alphabet.get(idx).copied().unwrap_or(b'0'))
            })
            .collect()
    }

    /// `prefix` followed by `len` base62 chars.
    pub fn base62(&self, prefix: &str, len: usize) -> String {
        format!("{prefix}{}", self.chars(BASE62, len))
    }

    /// `prefix` followed by `len` lowercase hex chars.
    pub fn hex(&self, prefix: &str, len: usize) -> String {
        format!("{prefix}{}", self.chars(HEX, len))
    }

    /// A random-looking UUID (version 4 layout), like AWS request ids.
    pub fn uuid(&self) -> String {
        let hex = self.chars(HEX, 32);
        let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or("0");
        format!("{}-{}-4{}-a{}-{}", part(0..8), part(8..12), part(13..16), part(17..20), part(20..32))
    }

    /// Padding like OpenAI's stream `obfuscation` field: evens out chunk sizes.
    pub fn obfuscation(&self, content_chars: usize) -> String {
        let len = 15 - (content_chars % 16).min(15);
        self.chars(BASE62, len)
    }
}

/// Standard base64 (with padding), for `encoding_format: base64` embeddings.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |idx: u32| char::from(ALPHABET.get((idx & 63) as usize).copied().unwrap_or(b'A'));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// A deterministic unit-length vector of `dims` floats for some input.
pub fn embedding_for(input: &[u8], dims: usize) -> Vec<f32> {
    let mut state = fnv1a(input);
    let raw: Vec<f64> = (0..dims)
        .map(|_| {
            let bits = splitmix(&mut state) >> 11; // 53 random bits
            (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// Decodes unpadded (or padded) base64url, as in JWTs; `None` on a bad
/// character or length.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    };
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n: u32 = 0;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(bytes.get(1..chunk.len()).unwrap_or_default());
    }
    Some(out)
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a
/// space, `%XX` a byte); invalid escapes are kept as they are.
pub fn form_decode(text: &str) -> String {
    decode_escapes(text, true)
}

/// Decodes a percent-encoded URL path segment (`%XX` a byte, `+` kept, as
/// AWS SDKs encode labels like a model ARN's `:` and `/`); invalid escapes
/// are kept as they are.
pub fn percent_decode(text: &str) -> String {
    decode_escapes(text, false)
}

fn decode_escapes(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields of a form body (`a=1&b=2`), decoded; later repeats win.
pub fn form_fields(body: &str) -> std::collections::BTreeMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// An RFC 3339 UTC timestamp with microseconds (`2025-01-01T00:00:00.000000Z`).
pub fn rfc3339_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_ceil_of_quarter_chars() {
        assert_eq!(approx_tokens(""), 0);
        assert_eq!(approx_tokens("abcd"), 1);
        assert_eq!(approx_tokens("abcde"), 2);
        assert_eq!(approx_tokens("éééé"), 1);
        assert_eq!(sum_tokens(["", ""]), 1);
        assert_eq!(sum_tokens(["abcde", "a"]), 3);
    }

    #[test]
    fn truncation_is_on_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("hé", 5), "hé");
        let long = "ü".repeat(300);
        assert_eq!(reply_for(&long).chars().count(), REPLY_PREFIX.len() + ECHO_LIMIT_CHARS);
    }

    #[test]
    fn words_keep_their_leading_space() {
        assert_eq!(split_words("Mock reply to: Hi  there"), vec!["Mock", " reply", " to:", " Hi", "  there"]);
        assert_eq!(split_words(" a"), vec![" a"]);
        assert_eq!(split_words("").len(), 0);
        assert_eq!(split_words("a b\nc").concat(), "a b\nc");
    }

    #[test]
    fn shape_reply_caps_and_stops() {
        let (t, f) = shape_reply("Mock reply to: hello world".into(), &[], Some(2));
        assert_eq!(t, "Mock rep");
        assert_eq!(f, Finish::Length);
        let (t, f) = shape_reply("Mock reply to: hello world".into(), &["hello".into()], None);
        assert_eq!(t, "Mock reply to: ");
        assert_eq!(f, Finish::StopSequence("hello".into()));
        let (t, f) = shape_reply("short".into(), &[], Some(100));
        assert_eq!((t.as_str(), f), ("short", Finish::Stop));
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_deterministic_and_normalised() {
        let a = embedding_for(b"hello", 8);
        assert_eq!(a, embedding_for(b"hello", 8));
        assert_ne!(a, embedding_for(b"hellp", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn split_even_never_yields_empty_pieces() {
        assert_eq!(split_even("abcdef", 2), vec!["abc", "def"]);
        assert_eq!(split_even("ab", 5), vec!["a", "b"]);
        assert!(split_even("", 3).is_empty());
    }

    #[test]
    fn base64url_and_form_decoding() {
        assert_eq!(base64url_decode("Zm9vYmFy").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(base64url_decode("Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64url_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64url_decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert!(base64url_decode("a+b/").is_none());
        assert!(base64url_decode("abcde").is_none());
        assert_eq!(form_decode("a+b%3Ac%zz"), "a b:c%zz");
        assert_eq!(
            percent_decode("arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.a+b%3A0"),
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.a+b:0"
        );
        let f = form_fields("grant_type=urn%3Aietf&assertion=x.y.z");
        assert_eq!(f.get("grant_type").map(String::as_str), Some("urn:ietf"));
        assert_eq!(f.get("assertion").map(String::as_str), Some("x.y.z"));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T", "{t}");
    }
}
