//! Property checks over the wasm filter's state machine
//! (`tollgate_filter::filter::Filter`), driven natively through a mock host
//! the way Envoy drives it: request headers, the request body in chunks
//! (buffered while the filter pauses), response headers, the response body
//! in chunks. The fuzz target `filter` and the corpus test
//! (`wasm-filter/tests/fuzz_corpus.rs`) call the same function.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common.rs"]
pub mod common;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use tollgate_core::filter_config::FilterConfig;
use tollgate_core::pii::PiiAction;
use tollgate_core::policy::FailMode;
use tollgate_core::request::parse_request_json;
use tollgate_core::{parse_request, ApiFamily, ApiKind};
use tollgate_filter::filter::{Filter, Inspector, Verdict, API_PROPERTY, OUTPUT_PROPERTY, USAGE_PROPERTY};
use tollgate_filter::host::{Host, Metric, TaggedMetric};

use common::input::{chunks, Input};
use common::{holds_placeholder, parse_stream, reparse, Shape};

/// The filter's target (its corpus directory) and its check.
/// A property check over one fuzz input.
pub type Check = fn(&[u8]);

pub const TARGETS: &[(&str, Check)] = &[("filter", filter)];

/// A recording host: headers, the body Envoy holds, what the filter did.
#[derive(Default)]
struct MockHost {
    request_headers: HashMap<String, String>,
    response_headers: HashMap<String, String>,
    request_body: Vec<u8>,
    /// The response body Envoy currently holds (one chunk, or all buffered).
    response_body: Vec<u8>,
    replaced: bool,
    replies: Vec<(u16, Vec<u8>)>,
    properties: HashMap<String, Vec<u8>>,
    metrics: HashMap<Metric, u64>,
    resets: u32,
}

impl Host for MockHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.request_headers.get(name).cloned()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.request_headers.insert(name.into(), v.into()),
            None => self.request_headers.remove(name),
        };
    }
    fn set_response_header(&mut self, name: &str, value: &str) {
        self.response_headers.insert(name.into(), value.into());
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers.get(name).cloned()
    }
    fn remove_response_header(&mut self, name: &str) {
        self.response_headers.remove(name);
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.request_body = body.to_vec();
    }
    fn set_response_body(&mut self, body: &[u8]) {
        self.response_body = body.to_vec();
        self.replaced = true;
    }
    fn request_body(&self, len: usize) -> Option<Vec<u8>> {
        Some(self.request_body[..len.min(self.request_body.len())].to_vec())
    }
    fn response_body(&self, len: usize) -> Option<Vec<u8>> {
        Some(self.response_body[..len.min(self.response_body.len())].to_vec())
    }
    fn send_response(&mut self, status: u16, _headers: &[(&str, &str)], body: &[u8]) {
        self.replies.push((status, body.to_vec()));
    }
    fn reset_stream(&mut self) {
        self.resets += 1;
    }
    fn set_property(&mut self, name: &str, value: &[u8]) {
        self.properties.insert(name.into(), value.to_vec());
    }
    fn increment(&mut self, metric: Metric, by: u64) {
        *self.metrics.entry(metric).or_default() += by;
    }
    fn increment_tagged(&mut self, _family: TaggedMetric, _tag: &str, _by: u64) {}
    fn new_request_id(&mut self) -> String {
        "fuzz".into()
    }
}

impl MockHost {
    fn metric(&self, m: Metric) -> u64 {
        self.metrics.get(&m).copied().unwrap_or(0)
    }
}

/// The filter configurations the input picks from (bit 0: fail mode, bit 1:
/// small caps, bit 2: output guard off, bit 3: PII off).
fn inspector(bits: u8) -> Arc<Inspector> {
    static CACHE: OnceLock<Vec<Arc<Inspector>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        (0u8..16)
            .map(|b| {
                let mut cfg = FilterConfig {
                    fail_mode: if b & 1 == 0 { FailMode::Closed } else { FailMode::Open },
                    ..FilterConfig::default()
                };
                if b & 2 != 0 {
                    cfg.inspection.max_body_bytes = 512;
                    cfg.inspection.max_response_bytes = 256;
                    cfg.inspection.max_sse_event_bytes = 128;
                    cfg.inspection.max_mask_bytes = 96;
                }
                if b & 4 != 0 {
                    cfg.inspection.output.entities.clear();
                }
                if b & 8 != 0 {
                    cfg.inspection.pii.entities.clear();
                }
                Arc::new(Inspector::new(cfg).expect("the test configurations are valid"))
            })
            .collect()
    });
    Arc::clone(&all[bits as usize % all.len()])
}

/// What one exchange did.
struct Exchange {
    host: MockHost,
    /// The request went upstream (not answered by the filter).
    forwarded: bool,
    /// The bytes the client received, chunk by chunk.
    client: Vec<Vec<u8>>,
}

/// Drive one exchange. `response`: (content type, body chunks); `None`: the
/// request gets no upstream answer (a local reply, or the test stops).
fn exchange(
    inspector: Arc<Inspector>,
    headers: &[(&str, String)],
    request: &[&[u8]],
    response: Option<(&str, Vec<&[u8]>)>,
) -> Exchange {
    let mut f = Filter::new(inspector);
    let mut h = MockHost::default();
    for (k, v) in headers {
        h.request_headers.insert((*k).into(), v.clone());
    }
    let body_len: usize = request.iter().map(|c| c.len()).sum();
    let v = f.on_request_headers(&mut h, body_len == 0);
    let mut forwarded = h.replies.is_empty() && v == Verdict::Continue;
    if forwarded && body_len > 0 {
        // Envoy buffers while the filter pauses and passes on what it lets go.
        let mut held = Vec::new();
        for (i, c) in request.iter().enumerate() {
            held.extend_from_slice(c);
            h.request_body = held.clone();
            let eos = i + 1 == request.len();
            let v = f.on_request_body(&mut h, held.len(), eos);
            if !h.replies.is_empty() {
                forwarded = false;
                break;
            }
            if eos {
                assert_eq!(v, Verdict::Continue, "the request would hang at its end");
            }
            if v == Verdict::Continue && !eos {
                held.clear();
            }
        }
    }
    assert!(h.replies.len() <= 1, "one local reply at most");
    let mut client = Vec::new();
    if let Some((status, body)) = h.replies.first().cloned() {
        // A local reply goes back through the filter's response path unchanged.
        assert!(status >= 400, "a local reply is an error");
        let v: Value = serde_json::from_slice(&body).expect("a local reply is JSON");
        assert!(v.get("error").is_some(), "a local reply is an error body: {v}");
        h.response_headers.insert("content-type".into(), "application/json".into());
        f.on_response_headers(&mut h, false);
        h.response_body = body.clone();
        h.replaced = false;
        assert_eq!(f.on_response_body(&mut h, body.len(), true), Verdict::Continue);
        assert!(!h.replaced, "the filter rewrote its own reply");
        client.push(body);
        return Exchange { host: h, forwarded: false, client };
    }
    let Some((content_type, chunks)) = response else {
        return Exchange { host: h, forwarded, client };
    };
    if !content_type.is_empty() {
        h.response_headers.insert("content-type".into(), content_type.into());
    }
    let empty = chunks.iter().all(|c| c.is_empty());
    assert_eq!(f.on_response_headers(&mut h, empty), Verdict::Continue);
    if !empty {
        let mut held: Vec<u8> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let eos = i + 1 == chunks.len();
            held.extend_from_slice(c);
            h.response_body = held.clone();
            h.replaced = false;
            let v = f.on_response_body(&mut h, held.len(), eos);
            if eos {
                assert_eq!(v, Verdict::Continue, "the answer would hang at its end");
            }
            if v == Verdict::Continue {
                client.push(std::mem::take(&mut h.response_body));
                held.clear();
            } else {
                held = h.response_body.clone();
            }
            if h.resets > 0 {
                break;
            }
        }
    }
    assert!(h.resets <= 1, "one reset at most");
    if forwarded && h.properties.contains_key(API_PROPERTY) {
        // Every answer to an inspected, forwarded request is counted once: its usage or its absence.
        let counted = u64::from(h.properties.contains_key(USAGE_PROPERTY)) + h.metric(Metric::UsageMissing);
        assert!(counted <= 1, "the answer was counted twice");
        if h.resets == 0 {
            assert_eq!(counted, 1, "the answer was not counted");
        }
    }
    Exchange { host: h, forwarded, client }
}

const PATHS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/chat/completions?x=1",
    "/v1/models",
    "/v1/messages/",
];

const CONTENT_TYPES: [&str; 5] =
    ["application/json", "text/event-stream", "Text/Event-Stream; charset=utf-8", "", "text/plain"];

/// Byte 0: the configuration; byte 1: the scenario. Bit 7 of byte 1: the
/// echo round trip (see [`echo`]); otherwise arbitrary traffic (see [`arbitrary`]).
pub fn filter(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = inp.byte();
    let scenario = inp.byte();
    if scenario & 0x80 != 0 {
        echo(cfg, scenario, &mut inp);
    } else {
        arbitrary(cfg, scenario, &mut inp);
    }
}

/// Arbitrary headers, request and answer: bytes 2–3 and 4–5 chunk the
/// request and the answer, bytes 6–7 give the request body's length, then
/// the request body and the answer.
///
/// Beyond what [`exchange`] checks (no hang, one local reply in the
/// API's error shape, every answer counted once, one reset at most):
/// - what the filter forwards parses as a request of the API, and nothing
///   the PII policy masks or redacts is left in its texts;
/// - once the filter ended a stream (blocked, or withheld over a cap), the
///   client gets nothing more.
fn arbitrary(cfg: u8, scenario: u8, inp: &mut Input<'_>) {
    let req_seed = inp.u16();
    let resp_seed = inp.u16();
    let req_len = inp.u16() as usize;
    let body = inp.take(req_len);
    let answer = inp.rest();
    let path = PATHS[scenario as usize % PATHS.len()];
    let content_type = CONTENT_TYPES[(scenario as usize / PATHS.len()) % CONTENT_TYPES.len()];
    let mut headers = vec![(":method", "POST".to_string()), (":path", path.to_string())];
    if scenario & 0x40 != 0 {
        headers.push(("content-length", body.len().to_string()));
    }
    let inspector = inspector(cfg);
    let request = chunks(body, req_seed);
    let response = chunks(answer, resp_seed);
    let x = exchange(Arc::clone(&inspector), &headers, &request, Some((content_type, response)));
    let api = ApiKind::from_path(path);
    if let (true, Some(api)) = (x.forwarded, api) {
        let sent = &x.host.request_body;
        let r = parse_request(api, sent).unwrap_or_else(|e| panic!("the filter forwarded what it cannot parse: {e}"));
        if x.host.metric(Metric::FailOpen) == 0 {
            let scanner = tollgate_core::pii::PiiScanner::new(&inspector.config.inspection.pii).unwrap();
            for t in &r.texts {
                for finding in scanner.find(&t.text) {
                    assert!(
                        finding.action == PiiAction::Log,
                        "{} left in a forwarded text: {:?}",
                        finding.entity,
                        &t.text[finding.start..finding.end]
                    );
                }
            }
        }
    }
    if let Some(v) = x.host.properties.get(OUTPUT_PROPERTY) {
        if v.starts_with(b"blocked:") || v.starts_with(b"withheld:") {
            // Find the chunk that carried the end; nothing follows it.
            let end = x.client.iter().rposition(|c| !c.is_empty());
            if let (Some(end), true) = (end, content_type.to_ascii_lowercase().starts_with("text/event-stream")) {
                let last = reparse_lossy(&x.client[end]);
                assert!(
                    last.iter().any(|e| e.data.contains("\"error\"") || e.is_done()),
                    "the last bytes of an ended stream are its error and end marker"
                );
            }
        }
    }
}

fn reparse_lossy(bytes: &[u8]) -> Vec<tollgate_core::SseEvent> {
    match parse_stream(bytes, 0, usize::MAX) {
        Ok(e) | Err(e) => e,
    }
}

/// The round trip through the whole filter: a request whose user text is
/// the input goes through (masked), the provider answers with the text it
/// received, JSON or streamed in any chunking, and the client gets its
/// own text back. Bit 0 of byte 1: streamed; bits 1–3: the API shape;
/// bytes 2–5: the chunkings; the rest: the text. The output guard is off
/// (it may rightly redact what the client wrote).
fn echo(cfg: u8, scenario: u8, inp: &mut Input<'_>) {
    let seed = inp.u16();
    let wire_seed = inp.u16();
    let text = String::from_utf8_lossy(inp.rest()).into_owned();
    let streamed = scenario & 1 != 0;
    let anthropic = scenario & 2 != 0;
    let (path, body) = if anthropic {
        (
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": streamed,
            "messages": [{"role": "user", "content": text}]}),
        )
    } else {
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": streamed,
            "messages": [{"role": "user", "content": text}]}),
        )
    };
    let api = if anthropic { ApiKind::AnthropicMessages } else { ApiKind::OpenAiChat };
    let body = serde_json::to_vec(&body).unwrap();
    let headers = [(":method", "POST".to_string()), (":path", path.to_string())];
    // Guard off, PII on, caps as the input says.
    let inspector = inspector((cfg & 3) | 4);
    let first = exchange(Arc::clone(&inspector), &headers, &[&body], None);
    if !first.forwarded {
        return;
    }
    let Ok(sent) = parse_request_json(api, &first.host.request_body) else {
        panic!("the forwarded body does not parse")
    };
    let masked = sent.request.texts.first().map(|t| t.text.clone()).unwrap_or_default();
    let mut map = tollgate_core::pii::MaskMap::new(1 << 20);
    let _ = common::scanner().mask_text(&text, &mut map, &mut Vec::new());
    if holds_placeholder(&map, &text) {
        return;
    }
    // The same exchange again, now with the provider echoing what it got.
    let shape = if anthropic { Shape::AnthropicText } else { Shape::Chat };
    let wire = if streamed {
        common::write_all(&shape.stream(&masked, seed))
    } else if anthropic {
        serde_json::to_vec(&json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": masked}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 5}}))
        .unwrap()
    } else {
        serde_json::to_vec(&json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": masked}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}))
        .unwrap()
    };
    let content_type = if streamed { "text/event-stream" } else { "application/json" };
    let x = exchange(inspector, &headers, &[&body], Some((content_type, chunks(&wire, wire_seed))));
    assert_eq!(x.host.request_body, first.host.request_body, "the same request is masked the same way");
    let client: Vec<u8> = x.client.concat();
    if x.host.metric(Metric::FailOpen) > 0 || x.host.metric(Metric::RestoreSkipped) > 0 {
        // Over a cap: the answer passed as it came or was withheld.
        return;
    }
    let got = if streamed {
        shape.text(&reparse(&client))
    } else {
        let v: Value = serde_json::from_slice(&client).expect("the client gets JSON");
        let t = if anthropic { &v["content"][0]["text"] } else { &v["choices"][0]["message"]["content"] };
        t.as_str().unwrap_or_default().to_string()
    };
    assert_eq!(got, text, "the client gets its own text back (restore(mask(x)) == x through the filter)");
    if api.family() == ApiFamily::OpenAi && streamed {
        assert!(reparse(&client).last().is_some_and(tollgate_core::SseEvent::is_done));
    }
}
