//! Serving a client of one API family from a provider of another: the
//! request is translated once, the answer chunk by chunk (SSE event by
//! event, or for Bedrock AWS event-stream frame by frame; JSON and error
//! bodies whole). The translations themselves live in
//! `tollgate_core::translate`; this keeps the per-stream state.

use serde_json::Value;
use tollgate_core::policy::DEFAULT_MAX_SSE_EVENT_BYTES;
use tollgate_core::translate::{Direction, StreamTranslation};
use tollgate_core::{SseEvent, SseParser};

/// Largest JSON answer translated; a larger one is answered with an error.
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct Translation {
    pub dir: Direction,
    client_model: String,
    body: Body,
    /// The provider's error type header (Bedrock's `x-amzn-errortype`).
    error_type: Option<String>,
    /// A binary stream that could not be read (counted by the caller).
    pub unreadable: bool,
    /// The provider refused on safety grounds (a Gemini `blockReason` or a
    /// `SAFETY`-like `finishReason`), and whether the caller counted it.
    safety_block: bool,
    safety_counted: bool,
}

#[derive(Debug)]
enum Body {
    NotStarted,
    Stream(Box<Stream>),
    /// A JSON answer (or an error body), kept until its end.
    Whole {
        status: u16,
        bytes: Vec<u8>,
        overflow: bool,
    },
}

#[derive(Debug)]
struct Stream {
    parser: SseParser,
    translator: StreamTranslation,
    events: Vec<SseEvent>,
    broken: bool,
}

impl Translation {
    pub fn new(dir: Direction, client_model: &str) -> Translation {
        Translation {
            dir,
            client_model: client_model.to_string(),
            body: Body::NotStarted,
            error_type: None,
            unreadable: false,
            safety_block: false,
            safety_counted: false,
        }
    }

    /// Whether the provider refused on safety grounds, the first time it is
    /// seen (so it is counted once).
    pub fn take_safety_block(&mut self) -> bool {
        let first = self.safety_block && !self.safety_counted;
        self.safety_counted |= first;
        first
    }

    /// The provider's response headers arrived: `stream` for an SSE or an
    /// AWS event-stream answer; `error_type` from `x-amzn-errortype`.
    pub fn start(&mut self, status: u16, stream: bool, error_type: Option<String>) {
        self.error_type = error_type;
        self.body = if stream && (200..300).contains(&status) {
            Body::Stream(Box::new(Stream {
                parser: SseParser::new(DEFAULT_MAX_SSE_EVENT_BYTES),
                translator: self.dir.stream(&self.client_model),
                events: Vec::new(),
                broken: false,
            }))
        } else {
            Body::Whole { status, bytes: Vec::new(), overflow: false }
        };
    }

    /// Translate one chunk of the provider's body into what the client gets
    /// for it (possibly nothing until the body ends).
    pub fn chunk(&mut self, bytes: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        match &mut self.body {
            Body::NotStarted => out.extend_from_slice(bytes),
            Body::Stream(s) if s.translator.is_binary() => {
                if !s.broken {
                    let (events, failed) = s.translator.push_bytes(bytes);
                    for e in events {
                        e.write_to(&mut out);
                    }
                    if let Some(err) = failed {
                        tracing::warn!(error = %err, "provider event stream unreadable: ending the translated stream");
                        s.broken = true;
                        self.unreadable = true;
                    } else if end_of_stream {
                        for e in s.translator.finish() {
                            e.write_to(&mut out);
                        }
                    }
                }
            }
            Body::Stream(s) => {
                if !s.broken {
                    let fed = s.parser.feed(bytes, &mut s.events);
                    let fed = fed.and_then(|()| if end_of_stream { s.parser.finish(&mut s.events) } else { Ok(()) });
                    if let Err(err) = fed {
                        tracing::warn!(error = %err, "provider stream unreadable: ending the translated stream");
                        s.broken = true;
                        s.events.clear();
                        for e in s.translator.finish() {
                            e.write_to(&mut out);
                        }
                        return out;
                    }
                    for event in s.events.drain(..) {
                        self.safety_block |= is_safety_block(&event.data);
                        for e in s.translator.push(&event) {
                            e.write_to(&mut out);
                        }
                    }
                    if end_of_stream {
                        for e in s.translator.finish() {
                            e.write_to(&mut out);
                        }
                    }
                }
            }
            Body::Whole { status, bytes: kept, overflow } => {
                if kept.len() + bytes.len() > MAX_JSON_BYTES {
                    *overflow = true;
                    kept.clear();
                } else if !*overflow {
                    kept.extend_from_slice(bytes);
                }
                if end_of_stream {
                    self.safety_block |= !*overflow && is_safety_block(&String::from_utf8_lossy(kept));
                    let error_type = self.error_type.as_deref();
                    out = whole(self.dir, &self.client_model, *status, kept, *overflow, error_type);
                }
            }
        }
        out
    }
}

/// Whether a provider's answer (or stream event) reports a safety refusal:
/// Gemini's `promptFeedback.blockReason`, or a candidate stopped for
/// safety, recitation or prohibited content.
fn is_safety_block(data: &str) -> bool {
    /// The finish reasons that mean a safety refusal (as JSON, with or
    /// without a space after the colon, as Google formats its answers).
    const REFUSALS: [&str; 6] = ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"];
    if data.contains("\"blockReason\"") {
        return true;
    }
    const KEY: &str = "\"finishReason\"";
    data.match_indices(KEY).any(|(at, _)| {
        let value = data[at + KEY.len()..].trim_start_matches([':', ' ']);
        REFUSALS
            .iter()
            .any(|r| value.strip_prefix('"').and_then(|v| v.strip_prefix(r)).is_some_and(|v| v.starts_with('"')))
    })
}

/// A complete JSON answer or error body, in the client's shape.
fn whole(
    dir: Direction,
    client_model: &str,
    status: u16,
    bytes: &[u8],
    overflow: bool,
    error_type: Option<&str>,
) -> Vec<u8> {
    let parsed: Option<Value> = if overflow { None } else { serde_json::from_slice(bytes).ok() };
    let translated = match (parsed, (200..300).contains(&status)) {
        (Some(v), true) => dir.response(&v, client_model).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "provider answer cannot be translated");
            dir.error(&unreadable(&format!("the provider's answer could not be translated: {err}")), 502)
        }),
        (Some(v), false) => dir.error_typed(&v, status, error_type),
        (None, ok) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            let message = if ok { "the provider's answer was not readable JSON".to_string() } else { text };
            dir.error(&unreadable(&message), if ok { 502 } else { status })
        }
    };
    serde_json::to_vec(&translated).unwrap_or_default()
}

/// A provider-neutral error body the translators understand.
fn unreadable(message: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": "api_error"}, "type": "error"})
}

#[cfg(test)]
mod tests {
    use super::is_safety_block;

    #[test]
    fn safety_refusals_are_recognised_in_any_candidate_and_spacing() {
        assert!(is_safety_block(r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#));
        assert!(is_safety_block(r#"{"candidates":[{"finishReason": "SAFETY"}]}"#));
        assert!(is_safety_block(r#"{"candidates":[{"finishReason":"STOP"},{"finishReason":"RECITATION"}]}"#));
        assert!(!is_safety_block(r#"{"candidates":[{"finishReason":"STOP"}]}"#));
        assert!(!is_safety_block(r#"{"candidates":[{"finishReason":"MAX_TOKENS"}],"text":"SAFETY"}"#));
        assert!(!is_safety_block(r#"{"candidates":[{"finishReason":"SAFETYX"}]}"#));
    }
}
