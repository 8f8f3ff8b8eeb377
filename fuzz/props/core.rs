//! Property checks over tollgate-core, one function per fuzz target. Each
//! takes the raw fuzz input and panics (through `assert!`) when a property
//! does not hold. The fuzz targets (`fuzz/fuzz_targets/`) and the corpus
//! test (`core/tests/fuzz_corpus.rs`) call the same functions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common.rs"]
pub mod common;

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use tollgate_core::eventstream::Message;
use tollgate_core::filter_config::FilterConfig;
use tollgate_core::firewall::Firewall;
use tollgate_core::guard::{GuardAction, GuardOutcome, OutputGuard, OutputPolicy, PhraseRule};
use tollgate_core::mcp::{jsonrpc, names, openapi};
use tollgate_core::moderation::Moderator;
use tollgate_core::pii::{MaskMap, PiiScanner};
use tollgate_core::policy::Policy;
use tollgate_core::request::{parse_request_json, request_from_json, TextKind};
use tollgate_core::restore::{invalid_event_ending, is_well_formed, SseRestorer, TextRestorer};
use tollgate_core::translate::Direction;
use tollgate_core::usage::{is_usage_only_chunk, request_stream_usage, usage_from_value};
use tollgate_core::{parse_request, ApiFamily, ApiKind, SseEvent, SseParser, StreamUsage, Usage};

pub use common::input;
pub use common::{holds_placeholder, parse_stream, reparse, scanner, write_all, Shape};
use input::{chunks, str_chunks, Input};

/// Every core target: its name (the corpus directory) and its check.
/// A property check over one fuzz input.
pub type Check = fn(&[u8]);

pub const TARGETS: &[(&str, Check)] = &[
    ("request", request),
    ("sse", sse),
    ("restore", restore),
    ("guard", guard),
    ("translate_json", translate_json),
    ("translate_stream", translate_stream),
    ("translate_frames", translate_frames),
    ("usage_stream", usage_stream),
    ("policy", policy),
    ("mcp", mcp),
    ("eventstream", eventstream),
];

/// The phrase the test guard blocks.
pub const BLOCKED_PHRASE: &str = "project nightingale";

/// The APIs in a fixed order (a corpus byte keeps its meaning), then any
/// that [`ApiKind::ALL`] gains later.
fn apis() -> Vec<ApiKind> {
    let mut v = vec![
        ApiKind::OpenAiChat,
        ApiKind::OpenAiCompletions,
        ApiKind::OpenAiEmbeddings,
        ApiKind::OpenAiResponses,
        ApiKind::AnthropicMessages,
    ];
    let extra: Vec<ApiKind> = ApiKind::ALL.into_iter().filter(|a| !v.contains(a)).collect();
    v.extend(extra);
    v
}

fn api_of(b: u8) -> ApiKind {
    let apis = apis();
    apis[b as usize % apis.len()]
}

/// A guard that redacts secrets and e-mail addresses and blocks one phrase.
fn output_guard() -> &'static Arc<OutputGuard> {
    static G: OnceLock<Arc<OutputGuard>> = OnceLock::new();
    G.get_or_init(|| {
        let mut policy = OutputPolicy {
            phrases: vec![PhraseRule {
                id: "internal".into(),
                phrases: vec![BLOCKED_PHRASE.into()],
                action: GuardAction::Block,
            }],
            window_bytes: 64,
            ..OutputPolicy::default()
        };
        policy.entities.insert("EMAIL_ADDRESS".into(), GuardAction::Redact);
        Arc::new(OutputGuard::new(&policy).expect("the test output policy is valid"))
    })
}

// ---------------------------------------------------------------------------
// request: every API surface's request parser.

/// Byte 0: the API; the rest: the request body.
///
/// - the plain and the JSON-keeping parsers agree (same request or same error);
/// - every text has a pointer into the JSON, and a plain text is the string there;
/// - the JSON re-serialized parses to the same request;
/// - masking keeps the request valid (same model, stream flag, text roles)
///   and each masked plain text restores to the original;
/// - asking a stream for its usage keeps it valid and sets `include_usage`.
pub fn request(data: &[u8]) {
    let mut inp = Input::new(data);
    let api = api_of(inp.byte());
    let body = inp.rest();
    let plain = parse_request(api, body);
    let parsed = parse_request_json(api, body);
    let (r, p) = match (plain, parsed) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the two parsers refuse differently");
            return;
        }
        (a, b) => panic!("the two parsers disagree: {a:?} / {:?}", b.map(|p| p.request)),
    };
    assert_eq!(r, p.request);
    assert_eq!(r.api, api);
    assert_eq!(p.text_pointers.len(), r.texts.len());
    assert_eq!(p.text_kinds.len(), r.texts.len());
    for ((ptr, kind), t) in p.text_pointers.iter().zip(&p.text_kinds).zip(&r.texts) {
        let v = p.json.pointer(ptr).unwrap_or_else(|| panic!("pointer {ptr} names nothing"));
        assert!(!t.text.is_empty(), "empty texts are not reported");
        if *kind == TextKind::Plain {
            assert_eq!(v.as_str(), Some(t.text.as_str()), "plain text at {ptr}");
        }
    }
    assert_eq!(request_from_json(api, &p.json).as_ref(), Ok(&r));
    let again = serde_json::to_vec(&p.json).unwrap();
    assert_eq!(parse_request(api, &again).as_ref(), Ok(&r), "the body re-serialized");

    let mut masked = p.clone();
    let mut map = MaskMap::new(1 << 16);
    if scanner().mask_request(&mut masked, &mut map).is_ok() {
        let body = serde_json::to_vec(&masked.json).unwrap();
        let m = parse_request(api, &body).expect("a masked request still parses");
        assert_eq!(m.model, r.model);
        assert_eq!(m.stream, r.stream);
        assert_eq!(m, masked.request);
        assert_eq!(m.texts.len(), r.texts.len(), "masking keeps every text");
        for (kind, (before, after)) in p.text_kinds.iter().zip(r.texts.iter().zip(&m.texts)) {
            assert_eq!(before.role, after.role);
            if *kind == TextKind::Plain && !holds_placeholder(&map, &before.text) {
                assert_eq!(map.restore_str(&after.text), before.text.as_str(), "restore(mask(x)) == x");
            }
        }
    }

    let mut j = p.json.clone();
    if request_stream_usage(api, &mut j) {
        let body = serde_json::to_vec(&j).unwrap();
        let s = parse_request(api, &body).expect("a stream asked for usage still parses");
        assert!(s.stream && s.include_usage);
    }
}

// ---------------------------------------------------------------------------
// sse: the parser and every event reader.

/// Byte 0: the cap (small caps reach the limit); bytes 1–2: the chunking; the rest: the stream.
///
/// - the events do not depend on the chunking (when neither run hit the cap,
///   the same events; when one did, the other's events start with its events);
/// - the parser never holds more than its cap;
/// - every event written back parses to itself;
/// - over the cap, a `keep_unparsed` parser gives back every byte: its events,
///   written, followed by what it kept and the rest of the stream, parse to
///   the events of a parser without a cap;
/// - every reader of events (usage for each API, the usage-only test, the
///   restorer with nothing to restore) takes any event.
pub fn sse(data: &[u8]) {
    let mut inp = Input::new(data);
    let cap = match inp.byte() % 4 {
        0 => 16,
        1 => 64,
        2 => 1024,
        _ => 1 << 20,
    };
    let seed = inp.u16();
    let stream = inp.rest();
    let whole = parse_stream(stream, 0, cap);
    let split = parse_stream(stream, seed, cap);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "events depend on the chunking"),
        (Ok(a) | Err(a), Ok(b) | Err(b)) => {
            let n = a.len().min(b.len());
            assert_eq!(a[..n], b[..n], "events before the cap depend on the chunking");
        }
    }
    let uncapped = parse_stream(stream, seed, usize::MAX).expect("no cap, no error");
    if let Ok(a) = &whole {
        assert_eq!(a, &uncapped, "the cap changed the events");
    }
    for e in &uncapped {
        assert!(e.event.as_deref().is_none_or(|s| !s.contains(['\n', '\r'])));
        assert!(e.id.as_deref().is_none_or(|s| !s.contains(['\n', '\r', '\0'])));
        assert_eq!(reparse(&e.to_bytes()), vec![e.clone()], "an event written back");
    }
    keep_unparsed(stream, seed, cap, &uncapped);

    for api in apis() {
        let mut usage = StreamUsage::new(api);
        let mut restorer = SseRestorer::new(api);
        let map = MaskMap::new(0);
        let mut out = Vec::new();
        for e in &uncapped {
            usage.observe(e);
            restorer.on_event(&map, e, &mut out);
        }
        restorer.finish(&map, &mut out);
        // Nothing to restore changes nothing, but an event that is not well
        // formed is never passed on: the stream ends there, in the API's shape.
        let expected = match uncapped.iter().position(|e| !is_well_formed(e)) {
            None => write_all(&uncapped),
            Some(i) => {
                let named = uncapped[..=i].iter().any(|e| e.event.is_some());
                let mut w = write_all(&uncapped[..i]);
                w.extend_from_slice(&invalid_event_ending(api, named));
                w
            }
        };
        assert_eq!(out, expected, "nothing to restore changes nothing but an unreadable event");
        if let (Some(u), true) = (usage.usage(), api.family() == ApiFamily::Anthropic) {
            assert!(u.cached_tokens <= u.input_tokens);
            assert_eq!(u.total_tokens, u.input_tokens.saturating_add(u.output_tokens));
        }
    }
    for e in &uncapped {
        if is_usage_only_chunk(e) {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert!(v["usage"].is_object());
        }
    }
}

/// Over the cap, what the parser kept and the rest of the stream carry on
/// where its events stopped: nothing is lost.
fn keep_unparsed(stream: &[u8], seed: u16, cap: usize, uncapped: &[SseEvent]) {
    let mut parser = SseParser::new(cap).keep_unparsed();
    let mut events = Vec::new();
    let mut passed = Vec::new();
    let pieces = chunks(stream, seed);
    let mut failed_at = None;
    for (i, c) in pieces.iter().enumerate() {
        if parser.feed(c, &mut events).is_err() {
            failed_at = Some(i);
            break;
        }
    }
    let Some(i) = failed_at else { return };
    passed.extend_from_slice(&write_all(&events));
    passed.extend_from_slice(&parser.take_unparsed());
    for c in &pieces[i + 1..] {
        passed.extend_from_slice(c);
    }
    // A BOM at the very start was consumed by the first parser.
    let passed_events = parse_stream(&passed, 0, usize::MAX).expect("no cap, no error");
    assert_eq!(passed_events, uncapped, "the stream passed on after the cap lost or changed events");
}

// ---------------------------------------------------------------------------
// restore: restore(mask(x)) == x, for any split.

/// Byte 0: the shape (plain text, JSON fragment, or a stream of one of the
/// APIs; the general path or the splicing one); bytes 1–4: the chunkings;
/// the rest: the text `x`.
pub fn restore(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.byte();
    let seed = inp.u16();
    let wire_seed = inp.u16();
    let text = String::from_utf8_lossy(inp.rest()).into_owned();
    let mut map = MaskMap::new(1 << 20);
    let Ok(masked) = scanner().mask_text(&text, &mut map, &mut Vec::new()) else { return };
    let masked = masked.into_owned();
    if holds_placeholder(&map, &text) {
        return;
    }
    match mode % 8 {
        0 => {
            let mut r = TextRestorer::new();
            let mut out = String::new();
            for piece in str_chunks(&masked, seed) {
                r.push(&map, piece, &mut out);
                assert!(r.held().len() < map.max_placeholder_len().max(1), "holds more than a placeholder");
            }
            r.flush(&map, &mut out);
            assert_eq!(out, text, "restore(mask(x)) == x");
        }
        1 => {
            let source = serde_json::to_string(&masked).unwrap();
            let mut r = TextRestorer::json_fragment();
            let mut out = String::new();
            for piece in str_chunks(&source, seed) {
                r.push(&map, piece, &mut out);
            }
            r.flush(&map, &mut out);
            assert_eq!(serde_json::from_str::<String>(&out).ok().as_deref(), Some(text.as_str()), "JSON: {out}");
        }
        m => {
            let shape = Shape::ALL[(m as usize - 2) % Shape::ALL.len()];
            let general = mode & 0x80 != 0;
            let events = shape.stream(&masked, seed);
            let wire = write_all(&events);
            let parsed = parse_stream(&wire, wire_seed, usize::MAX).expect("our own stream parses");
            let mut r = SseRestorer::new(shape.api());
            if general {
                r = r.general_path_only();
            }
            let mut out = Vec::new();
            for e in &parsed {
                r.on_event(&map, e, &mut out);
            }
            r.finish(&map, &mut out);
            assert!(!r.is_holding());
            let client = reparse(&out);
            assert_eq!(shape.text(&client), text, "restore(mask(x)) == x through {shape:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// guard: the output guard, whole and streamed.

/// Bytes 0–1: how the text is cut into deltas; the rest: the text.
///
/// - a text holding the blocked phrase (ASCII case-insensitively) is blocked;
/// - a redacted text checks clean (but for e-mail addresses: see [`guard_strict`]);
/// - streamed in any cut, the client never gets the phrase: a text that
///   holds it ends with one `output_blocked` error, and otherwise the client
///   text is what the guard makes of the whole text.
pub fn guard(data: &[u8]) {
    guard_check(data, false);
}

/// [`guard`], with every redacted text checking clean. Known not to hold:
/// whether a run is an e-mail address depends on its neighbours (a word
/// character right after the domain, a local part over 64 bytes), and a
/// redaction next to it changes them, so a second check can find an
/// address the first did not (`fuzz/known/guard-*`).
pub fn guard_strict(data: &[u8]) {
    guard_check(data, true);
}

fn guard_check(data: &[u8], strict: bool) {
    let mut inp = Input::new(data);
    let seed = inp.u16();
    let text = String::from_utf8_lossy(inp.rest()).into_owned();
    let g = output_guard();
    let map = MaskMap::new(0);
    let has_phrase = text.to_ascii_lowercase().contains(BLOCKED_PHRASE);
    let whole = g.check(&text, &map);
    match &whole {
        GuardOutcome::Blocked(label) => assert!(!label.is_empty()),
        GuardOutcome::Redacted(out, labels) => {
            assert!(!has_phrase, "the phrase must block");
            assert!(!labels.is_empty());
            match g.check(out, &map) {
                GuardOutcome::Clean => {}
                GuardOutcome::Redacted(_, again) if !strict && again.iter().all(|l| l == "EMAIL_ADDRESS") => {}
                other => panic!("a redacted text checks clean: {out:?}: {other:?}"),
            }
        }
        GuardOutcome::Clean => assert!(!has_phrase, "the phrase must block"),
    }

    let events = Shape::Chat.stream(&text, seed);
    let mut r = SseRestorer::new(ApiKind::OpenAiChat).with_guard(Arc::clone(g));
    let mut out = Vec::new();
    for e in &events {
        r.on_event(&map, e, &mut out);
        assert!(r.held_bytes() <= 2 * g.window_bytes() + text.len(), "held beyond the window");
    }
    r.finish(&map, &mut out);
    let client = reparse(&out);
    let client_text = Shape::Chat.text(&client);
    assert!(!client_text.to_ascii_lowercase().contains(BLOCKED_PHRASE), "the phrase reached the client");
    let errors = client.iter().filter(|e| e.data.contains("\"output_blocked\"")).count();
    match &whole {
        GuardOutcome::Blocked(_) => {
            assert_eq!(errors, 1, "one error event ends a blocked stream");
            assert!(client.last().is_some_and(SseEvent::is_done), "the end marker follows the error");
        }
        GuardOutcome::Redacted(..) | GuardOutcome::Clean => {
            assert_eq!(errors, 0);
            let expected = match &whole {
                GuardOutcome::Redacted(out, _) => out,
                _ => &text,
            };
            if &client_text != expected {
                // A window can see an address the whole text hides (see
                // `guard_strict`): the streamed answer may redact other addresses,
                // and nothing else.
                assert!(!strict, "streamed and whole redaction differ: {client_text:?} / {expected:?}");
                match g.check(&client_text, &map) {
                    GuardOutcome::Clean => {}
                    GuardOutcome::Redacted(_, again) if again.iter().all(|l| l == "EMAIL_ADDRESS") => {}
                    other => panic!("the streamed answer is not clean: {client_text:?}: {other:?}"),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// translate_json: requests, responses and errors, both ways.

/// A translation direction from two bits (the first two as they always were).
fn direction(bits: u8) -> Direction {
    match bits % 4 {
        0 => Direction::OpenAiToAnthropic,
        1 => Direction::AnthropicToOpenAi,
        2 => Direction::OpenAiToGemini,
        _ => Direction::AnthropicToGemini,
    }
}

/// The Bedrock directions, in a fixed order (a corpus byte keeps its meaning).
pub const BEDROCK_DIRECTIONS: [Direction; 3] =
    [Direction::OpenAiToBedrock, Direction::AnthropicToBedrock, Direction::AnthropicOnBedrock];

/// The direction and the part (0 request, 1 response, 2 error) a
/// `translate_json` input's first byte names: bits 5–6 a Bedrock direction
/// (1 Converse for an OpenAI client, 2 Converse for an Anthropic client, 3
/// InvokeModel); when both are 0, bit 0 the client and bit 7 a Gemini
/// provider (the four directions as they always were); the part is
/// `(byte >> 1) % 3`, as it always was.
pub fn translate_json_mode(mode: u8) -> (Direction, u8) {
    let dir = match (mode >> 5) & 3 {
        0 => direction((mode & 1) | ((mode >> 6) & 2)),
        b => BEDROCK_DIRECTIONS[usize::from(b - 1)],
    };
    (dir, (mode >> 1) % 3)
}

/// Byte 0: direction and part (see [`translate_json_mode`]); bytes 1–2: an
/// error status; the rest: a JSON body.
///
/// - a translated request is a valid request of the provider's API, for the
///   upstream model, with the same stream flag (where the body says the
///   model and the flag: Gemini and Bedrock take them from the path);
///   InvokeModel's is the client's without `model` and `stream`, with an
///   `anthropic_version`;
/// - a translated response keeps the provider's token counts (InvokeModel's
///   is the provider's but for `model`, the client's);
/// - a translated error has the client API's error shape.
pub fn translate_json(data: &[u8]) {
    translate_json_check(data, false);
}

/// [`translate_json`], also for client messages that translate to none at
/// all. Known not to hold (`fuzz/known/translate_json-*`): an Anthropic
/// client's user message with `"content": []` becomes an OpenAI request
/// with no messages, which OpenAI (and the gateway's own parser) refuses.
pub fn translate_json_strict(data: &[u8]) {
    translate_json_check(data, true);
}

fn translate_json_check(data: &[u8], strict: bool) {
    let mut inp = Input::new(data);
    let (dir, part) = translate_json_mode(inp.byte());
    let status = inp.u16();
    let Ok(body) = serde_json::from_slice::<Value>(inp.rest()) else { return };
    // Gemini and Bedrock name the model in the path (InvokeModel also whether it streams).
    let in_path = dir.provider_api().model_in_path() || dir == Direction::AnthropicOnBedrock;
    match part {
        0 => {
            // The gateway translates only what it parsed (and refuses the rest itself).
            let client = parse_request(dir.client_api(), &serde_json::to_vec(&body).unwrap());
            // InvokeModel passes the request on as it is: only a valid one stays valid.
            if client.is_err() && (!strict || dir == Direction::AnthropicOnBedrock) {
                return;
            }
            let Ok(out) = dir.request(&body, "upstream-model") else { return };
            assert!(out.is_object());
            if !strict && out.get("messages").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                return;
            }
            if dir == Direction::AnthropicOnBedrock {
                assert!(out.get("model").is_none() && out.get("stream").is_none(), "InvokeModel's body: {out}");
                assert!(out["anthropic_version"].is_string() || body.get("anthropic_version").is_some(), "{out}");
            }
            let mut out = out;
            if in_path {
                // The parser wants the key.
                out["model"] = json!("upstream-model");
            }
            let bytes = serde_json::to_vec(&out).unwrap();
            let r = parse_request(dir.provider_api(), &bytes)
                .unwrap_or_else(|e| panic!("a translated request does not parse: {e}: {out}"));
            if !dir.provider_api().model_in_path() {
                assert_eq!(r.model, "upstream-model");
            }
            if let (Ok(client), false) = (client, in_path) {
                assert_eq!(r.stream, client.stream, "the stream flag");
            }
        }
        1 => {
            let Ok(out) = dir.response(&body, "client-model") else { return };
            assert!(out.is_object() || dir == Direction::AnthropicOnBedrock);
            // Counts that contradict themselves (more cached than input) have no one translation.
            if let Some(u) = usage_from_value(dir.provider_api(), &body).filter(|u| u.cached_tokens <= u.input_tokens) {
                let t = usage_from_value(dir.client_api(), &out).expect("a translated response keeps its usage");
                assert_eq!((t.input_tokens, t.output_tokens), (u.input_tokens, u.output_tokens), "usage: {out}");
            }
            if dir == Direction::AnthropicOnBedrock {
                let (mut sent, mut got) = (body.clone(), out.clone());
                if let (Some(sent), Some(got)) = (sent.as_object_mut(), got.as_object_mut()) {
                    if sent.remove("model").is_some() {
                        assert_eq!(got.remove("model"), Some(json!("client-model")), "the client's model");
                    }
                }
                assert_eq!(got, sent, "InvokeModel's answer is Anthropic's");
            }
        }
        _ => {
            let out = dir.error(&body, status);
            assert_error_shape(dir.client_api(), &out);
        }
    }
}

pub fn assert_error_shape(api: ApiKind, v: &Value) {
    if api.family() == ApiFamily::Anthropic {
        assert_eq!(v["type"], "error", "Anthropic error shape: {v}");
        assert!(v["error"]["type"].is_string() && v["error"]["message"].is_string(), "Anthropic error shape: {v}");
    } else {
        assert!(v["error"]["message"].is_string(), "OpenAI error shape: {v}");
    }
}

// ---------------------------------------------------------------------------
// translate_stream: any provider stream, any chunking.

/// Byte 0: the direction (Anthropic, OpenAI or Gemini provider); bytes 1–2:
/// the chunking; the rest: the provider's stream.
///
/// - the translated stream is the same for any chunking;
/// - every translated event is well-formed SSE and JSON (or OpenAI's `[DONE]`);
/// - it is one stream of the client's API: OpenAI ends in exactly one
///   `[DONE]`; Anthropic starts with `message_start`, names every event by
///   its `type`, and has nothing after `message_stop`.
pub fn translate_stream(data: &[u8]) {
    let mut inp = Input::new(data);
    let dir = direction(inp.byte());
    let seed = inp.u16();
    let stream = inp.rest();
    let cap = 1 << 16;
    let events = |seed| match parse_stream(stream, seed, cap) {
        Ok(e) | Err(e) => e,
    };
    let whole = translate_events(dir, &events(0));
    let split = translate_events(dir, &events(seed));
    assert_eq!(whole, split, "the translation depends on the chunking");
    assert_client_stream(dir.client_api(), &whole);
}

fn translate_events(dir: Direction, events: &[SseEvent]) -> Vec<SseEvent> {
    let mut t = dir.stream("client-model");
    let mut out = Vec::new();
    for e in events {
        out.extend(t.push(e));
    }
    out.extend(t.finish());
    out
}

/// Every event of a translated stream is well-formed SSE whose data is a
/// JSON object (or OpenAI's `[DONE]`); an Anthropic event is named by its `type`.
fn assert_well_formed(api: ApiKind, out: &[SseEvent]) {
    for e in out {
        assert_eq!(reparse(&e.to_bytes()), vec![e.clone()], "a translated event is not well-formed SSE: {e:?}");
        if !(api.family() == ApiFamily::OpenAi && e.is_done()) {
            let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("not JSON: {err}: {e:?}"));
            assert!(v.is_object(), "an event's data is an object: {e:?}");
            if api.family() == ApiFamily::Anthropic {
                assert_eq!(e.event.as_deref(), v["type"].as_str(), "event named by its type: {e:?}");
            }
        }
    }
}

/// A translated stream is well-formed for the client's API.
fn assert_client_stream(api: ApiKind, out: &[SseEvent]) {
    assert_well_formed(api, out);
    if out.is_empty() {
        return;
    }
    if api.family() == ApiFamily::OpenAi {
        {
            let done = out.iter().filter(|e| e.is_done()).count();
            assert_eq!(done, 1, "one [DONE]: {out:?}");
            assert!(out.last().is_some_and(SseEvent::is_done), "[DONE] is last: {out:?}");
        }
    } else if api.family() == ApiFamily::Anthropic {
        {
            let first = out[0].event.as_deref();
            assert!(matches!(first, Some("message_start" | "error")), "the stream starts with message_start: {out:?}");
            let starts = out.iter().filter(|e| e.event.as_deref() == Some("message_start")).count();
            assert!(starts <= 1, "one message_start: {out:?}");
            if let Some(stop) = out.iter().position(|e| e.event.as_deref() == Some("message_stop")) {
                assert_eq!(stop, out.len() - 1, "nothing after message_stop: {out:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// translate_frames: Bedrock's event streams (Converse, InvokeModel), any chunking.

/// Byte 0: the direction (bits 0–1, [`BEDROCK_DIRECTIONS`]) and the stream:
/// bit 2, the rest of the input is the raw stream; else a stream is
/// generated from it ([`provider_frames`]) with an exception frame (bit 3),
/// frames no provider sends (bit 6), then cut short (bit 4) or one byte
/// changed (bit 5). Bytes 1–2: the chunking. A generated stream's input
/// goes on with the cut (2 bytes) and the change (2 bytes: where; 1 byte:
/// the XOR) when asked for, then what [`provider_frames`] reads.
///
/// - the client's events are the same for any chunking;
/// - each is well-formed SSE with a JSON object as data (or `[DONE]`), an
///   Anthropic event named by its `type`;
/// - a Converse direction's (any stream) and InvokeModel's (a generated
///   stream) are one stream of the client's API (see [`translate_stream`]),
///   with at most one error, nothing after it but OpenAI's `[DONE]`;
/// - a generated stream ends in an error exactly when it failed: an
///   exception frame, a changed byte the decoder reached, (Converse) a
///   frame cut short, or (InvokeModel) an end before `message_stop`;
/// - InvokeModel's client events are the Anthropic events its frames carry
///   (`message_start` naming the client's model), up to the failure;
/// - a stream that ended well reports the provider's usage to the client.
pub fn translate_frames(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.byte();
    let dir = BEDROCK_DIRECTIONS[usize::from(mode & 3) % 3];
    let api = dir.client_api();
    let seed = inp.u16();
    if mode & 4 != 0 {
        let stream = inp.rest();
        let whole = translate_bytes(dir, stream, 0);
        assert_eq!(whole, translate_bytes(dir, stream, seed), "the translation depends on the chunking");
        if dir == Direction::AnthropicOnBedrock {
            // Frames may carry any events, in any order.
            assert_well_formed(api, &whole.0);
        } else {
            assert_client_stream(api, &whole.0);
            assert_one_error(api, &whole.0);
        }
        return;
    }
    let cut = (mode & 0x10 != 0).then(|| inp.u16());
    let change = (mode & 0x20 != 0).then(|| (inp.u16(), inp.byte() | 1));
    let odd = mode & 0x40 != 0;
    let sent = provider_frames(dir, mode & 8 != 0, odd, &mut inp);
    let mut stream = sent.bytes.clone();
    let cut = cut.map_or(stream.len(), |c| usize::from(c) % (stream.len() + 1));
    stream.truncate(cut);
    let changed = match change {
        Some((at, x)) if !stream.is_empty() => {
            let at = usize::from(at) % stream.len();
            stream[at] ^= x;
            Some(at)
        }
        _ => None,
    };

    let whole = translate_bytes(dir, &stream, 0);
    assert_eq!(whole, translate_bytes(dir, &stream, seed), "the translation depends on the chunking");
    let events = whole.0;
    if odd && dir == Direction::AnthropicOnBedrock {
        assert_well_formed(api, &events);
        return;
    }
    assert_client_stream(api, &events);
    let errored = assert_one_error(api, &events);

    // Which frames the translator gets whole, and how the stream ends.
    let (delivered, end) = delivered(&sent.frames, cut, changed);
    // InvokeModel's stream must reach `message_stop`: ending before it is a failure.
    let stopped = delivered
        .iter()
        .any(|i| matches!(&sent.frames[*i].0, Sent::Event(Some(e)) if e.event.as_deref() == Some("message_stop")));
    let failed = match end {
        StreamEnd::Exception | StreamEnd::Changed | StreamEnd::CutInFrame if dir != Direction::AnthropicOnBedrock => {
            true
        }
        StreamEnd::Exception | StreamEnd::Changed => true,
        _ if dir == Direction::AnthropicOnBedrock => !stopped,
        StreamEnd::Whole | StreamEnd::CutAtFrame | StreamEnd::CutInFrame => false,
    };
    if !odd {
        // (An odd frame may end a Converse stream early, or carry an error.)
        assert_eq!(errored, failed, "an error event iff the stream failed ({end:?}): {events:?}");
    }
    if dir == Direction::AnthropicOnBedrock {
        let carried: Vec<&SseEvent> = delivered
            .iter()
            .filter_map(|i| if let Sent::Event(e) = &sent.frames[*i].0 { e.as_ref() } else { None })
            .collect();
        let passed = &events[..events.len() - usize::from(errored)];
        assert_eq!(passed.len(), carried.len(), "the events the frames carry: {passed:?} / {carried:?}");
        for (got, want) in passed.iter().zip(carried) {
            assert_eq!(got.event, want.event);
            let (g, w): (Value, Value) =
                (serde_json::from_str(&got.data).unwrap(), serde_json::from_str(&want.data).unwrap());
            assert_eq!(g, w, "an event carried");
            if !want.data.contains('\r') {
                assert_eq!(got.data, want.data, "an event's own bytes");
            }
        }
    }
    if let (StreamEnd::Whole, false, Some((input, output))) = (end, odd, sent.usage) {
        let mut usage = StreamUsage::new(api);
        for e in &events {
            usage.observe(e);
        }
        let u = usage.usage().unwrap_or_else(|| panic!("no usage: {events:?}"));
        assert_eq!((u.input_tokens, u.output_tokens), (input, output), "the provider's usage: {events:?}");
    }
}

/// A binary provider stream through `dir`'s translator in `seed`'s chunks,
/// as the gateway feeds it: nothing more after a bad frame, else `finish`
/// at the end. The events, and whether a frame was bad.
fn translate_bytes(dir: Direction, stream: &[u8], seed: u16) -> (Vec<SseEvent>, bool) {
    let mut t = dir.stream("client-model");
    assert!(t.is_binary());
    let mut out = Vec::new();
    for c in chunks(stream, seed) {
        let (events, failed) = t.push_bytes(c);
        out.extend(events);
        if failed.is_some() {
            return (out, true);
        }
    }
    out.extend(t.finish());
    (out, false)
}

/// At most one error event in a client's stream, with its API's error
/// shape, and nothing after it but OpenAI's `[DONE]`. Whether there is one.
fn assert_one_error(api: ApiKind, out: &[SseEvent]) -> bool {
    let anthropic = api.family() == ApiFamily::Anthropic;
    let is_error = |e: &SseEvent| {
        if anthropic {
            e.event.as_deref() == Some("error")
        } else {
            !e.is_done()
                && serde_json::from_str::<Value>(&e.data).is_ok_and(|v| v.get("error").is_some_and(|x| !x.is_null()))
        }
    };
    let Some(at) = out.iter().position(is_error) else { return false };
    assert_error_shape(api, &serde_json::from_str(&out[at].data).unwrap());
    let after = &out[at + 1..];
    assert!(after.iter().all(|e| !anthropic && e.is_done()), "nothing after the error: {out:?}");
    true
}

/// What a generated frame is.
#[derive(Debug, Clone)]
pub enum Sent {
    /// An event: for InvokeModel, as the client must get it.
    Event(Option<SseEvent>),
    /// An exception or error frame: the provider's stream failed.
    Failure,
    /// A frame no provider sends (its payload from the input).
    Odd,
}

/// A generated provider stream.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    pub bytes: Vec<u8>,
    /// Each frame and where it ends in `bytes`.
    pub frames: Vec<(Sent, usize)>,
    /// The input and output tokens the stream reports at its end.
    pub usage: Option<(u64, u64)>,
}

impl Frames {
    fn push(&mut self, m: &Message, sent: Sent) {
        m.encode_into(&mut self.bytes).expect("a generated frame encodes");
        self.frames.push((sent, self.bytes.len()));
    }
}

/// How a (cut or changed) generated stream ends for the translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// Every frame arrived.
    Whole,
    /// An exception or error frame arrived.
    Exception,
    /// The decoder reached a changed byte.
    Changed,
    /// The stream ends inside a frame.
    CutInFrame,
    /// The stream ends between two frames, before the last.
    CutAtFrame,
}

/// The frames that reach the translator whole (up to the first failure)
/// when the stream is cut at `cut` and the byte at `changed` changed.
fn delivered(frames: &[(Sent, usize)], cut: usize, changed: Option<usize>) -> (Vec<usize>, StreamEnd) {
    use tollgate_core::eventstream::PRELUDE_LEN;
    let mut out = Vec::new();
    let mut start = 0;
    for (i, (sent, end)) in frames.iter().enumerate() {
        let change = changed.filter(|at| (start..*end).contains(at));
        if *end > cut {
            // A changed prelude is seen as soon as the prelude is there.
            let seen = change.is_some_and(|at| at - start < PRELUDE_LEN && start + PRELUDE_LEN <= cut);
            return match (seen, start < cut) {
                (true, _) => (out, StreamEnd::Changed),
                (false, true) => (out, StreamEnd::CutInFrame),
                (false, false) => (out, StreamEnd::CutAtFrame),
            };
        }
        if change.is_some() {
            return (out, StreamEnd::Changed);
        }
        out.push(i);
        if let Sent::Failure = sent {
            return (out, StreamEnd::Exception);
        }
        start = *end;
    }
    (out, StreamEnd::Whole)
}

const EXCEPTIONS: [&str; 7] = [
    "throttlingException",
    "modelStreamErrorException",
    "validationException",
    "internalServerException",
    "serviceUnavailableException",
    "modelTimeoutException",
    "somethingNewException",
];

const CONVERSE_EVENTS: [&str; 7] = [
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "newEvent",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool,
    Thinking,
}

/// A Bedrock stream of `dir`'s provider API made from the input: the end
/// (1 byte: bits 0–2 the stop reason, bit 3 no `messageStop` /
/// `message_delta`, bit 4 no `metadata` / `message_stop`, bits 5–6 the
/// first frame's form), the input and output tokens (1 byte each), then
/// operations of two bytes (an op and its argument: bits 0–4 a length,
/// bits 6–7 the frame's form): a text, tool input or reasoning delta (its
/// text the next bytes), a tool use block, the end of the open block, an
/// exception or error frame (once, when `exception`; bit 7 of the argument:
/// an error frame), a frame no provider sends (when `odd`; its payload the
/// bytes up to the next NUL), a ping or an event added later. A stream
/// always opens with `messageStart` / `message_start` and, when asked for
/// and not given by an operation, has its exception right before the
/// closing events (which follow it regardless).
///
/// Converse events are written in three forms: the event's JSON with
/// Bedrock's `p` padding, wrapped in its name, or wrapped and without
/// `:event-type` (the SDKs' union form). InvokeModel's are `chunk` frames,
/// `{"bytes": base64 of the Anthropic event}`, the event's JSON compact
/// (with or without `p`), pretty-printed, or pretty-printed with CRLF.
pub fn provider_frames(dir: Direction, exception: bool, odd: bool, inp: &mut Input<'_>) -> Frames {
    let invoke = dir == Direction::AnthropicOnBedrock;
    let end = inp.byte();
    let (input, output) = (u64::from(inp.byte()), u64::from(inp.byte()));
    let mut f = Frames::default();
    let frame = |name: &str, body: Value, form: u8| {
        if invoke {
            invoke_frame(&body, form)
        } else {
            (converse_frame(name, body, form), Sent::Event(None))
        }
    };
    let (m, s) = if invoke {
        let start = json!({"type": "message_start", "message": {"id": "msg_bdrk_1", "type": "message",
            "role": "assistant", "model": "claude-on-bedrock", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}});
        frame("message_start", start, end >> 5)
    } else {
        frame("messageStart", json!({"role": "assistant"}), end >> 5)
    };
    f.push(&m, s);
    let mut open: Option<(u64, Block)> = None;
    let mut next = 0u64;
    let mut failed = false;
    let stop = |f: &mut Frames, open: &mut Option<(u64, Block)>, form: u8| {
        if let Some((i, _)) = open.take() {
            let (m, s) = if invoke {
                frame("content_block_stop", json!({"type": "content_block_stop", "index": i}), form)
            } else {
                frame("contentBlockStop", json!({"contentBlockIndex": i}), form)
            };
            f.push(&m, s);
        }
    };
    while !inp.is_empty() && f.frames.len() < 128 {
        let op = inp.byte();
        let arg = inp.byte();
        let form = arg >> 6;
        match op % 8 {
            0 | 2 | 4 => {
                let want = match op % 8 {
                    2 if matches!(open, Some((_, Block::Tool))) => Block::Tool,
                    4 => Block::Thinking,
                    _ => Block::Text,
                };
                let text = String::from_utf8_lossy(inp.take(usize::from(arg & 0x1f))).into_owned();
                let i = match open {
                    Some((i, kind)) if kind == want => i,
                    _ => {
                        stop(&mut f, &mut open, form);
                        let i = next;
                        next += 1;
                        open = Some((i, want));
                        if invoke {
                            let block = if want == Block::Text {
                                json!({"type": "text", "text": ""})
                            } else {
                                json!({"type": "thinking", "thinking": "", "signature": ""})
                            };
                            let (m, s) = frame(
                                "content_block_start",
                                json!({"type": "content_block_start", "index": i, "content_block": block}),
                                form,
                            );
                            f.push(&m, s);
                        }
                        i
                    }
                };
                let (m, s) = if invoke {
                    let delta = match want {
                        Block::Text => json!({"type": "text_delta", "text": text}),
                        Block::Tool => json!({"type": "input_json_delta", "partial_json": text}),
                        Block::Thinking => json!({"type": "thinking_delta", "thinking": text}),
                    };
                    frame(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i, "delta": delta}),
                        form,
                    )
                } else {
                    let delta = match want {
                        Block::Text => json!({"text": text}),
                        Block::Tool => json!({"toolUse": {"input": text}}),
                        Block::Thinking => json!({"reasoningContent": {"text": text}}),
                    };
                    frame("contentBlockDelta", json!({"contentBlockIndex": i, "delta": delta}), form)
                };
                f.push(&m, s);
            }
            1 => {
                stop(&mut f, &mut open, form);
                let i = next;
                next += 1;
                open = Some((i, Block::Tool));
                let name = format!("fn_{}", arg & 0x1f);
                let (m, s) = if invoke {
                    let block = json!({"type": "tool_use", "id": format!("toolu_bdrk_{i}"), "name": name, "input": {}});
                    frame(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": i, "content_block": block}),
                        form,
                    )
                } else {
                    let start = json!({"toolUse": {"toolUseId": format!("tooluse_{i}"), "name": name}});
                    frame("contentBlockStart", json!({"contentBlockIndex": i, "start": start}), form)
                };
                f.push(&m, s);
            }
            3 => stop(&mut f, &mut open, form),
            5 if exception && !failed => {
                failed = true;
                f.push(&failure_frame(arg), Sent::Failure);
            }
            6 if odd => {
                let payload = inp.until(0).to_vec();
                let m = if invoke && arg & 1 == 0 {
                    let wrapped = json!({"bytes": base64(&payload)}).to_string();
                    Message::event("chunk", "application/json", wrapped.into_bytes())
                } else {
                    let name =
                        if invoke { "chunk" } else { CONVERSE_EVENTS[usize::from(arg >> 1) % CONVERSE_EVENTS.len()] };
                    Message::event(name, "application/json", payload)
                };
                f.push(&m, Sent::Odd);
            }
            7 => {
                let (m, s) = if invoke {
                    frame("ping", json!({"type": "ping"}), form)
                } else {
                    frame("newEvent", json!({"n": arg}), form)
                };
                f.push(&m, s);
            }
            _ => {}
        }
    }
    if exception && !failed {
        f.push(&failure_frame(end), Sent::Failure);
    }
    stop(&mut f, &mut open, end >> 5);
    if invoke {
        const STOPS: [&str; 8] =
            ["end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal", "end_turn", "new_reason"];
        let mut out = 1;
        if end & 8 == 0 {
            out = output;
            let delta = json!({"type": "message_delta", "delta": {"stop_reason": STOPS[usize::from(end & 7)],
                "stop_sequence": null}, "usage": {"output_tokens": output}});
            let (m, s) = frame("message_delta", delta, end >> 5);
            f.push(&m, s);
        }
        if end & 0x10 == 0 {
            let metrics = json!({"inputTokenCount": input, "outputTokenCount": out, "invocationLatency": 42,
                "firstByteLatency": 7});
            let (m, s) = frame(
                "message_stop",
                json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
                end >> 5,
            );
            f.push(&m, s);
        }
        f.usage = Some((input, out));
    } else {
        const STOPS: [&str; 8] = [
            "end_turn",
            "tool_use",
            "max_tokens",
            "stop_sequence",
            "guardrail_intervened",
            "content_filtered",
            "model_context_window_exceeded",
            "new_reason",
        ];
        if end & 8 == 0 {
            let (m, s) = frame("messageStop", json!({"stopReason": STOPS[usize::from(end & 7)]}), end >> 5);
            f.push(&m, s);
        }
        if end & 0x10 == 0 {
            let usage = json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output});
            let (m, s) = frame("metadata", json!({"usage": usage, "metrics": {"latencyMs": 120}}), end >> 5);
            f.push(&m, s);
            f.usage = Some((input, output));
        }
    }
    f
}

/// A Converse event in one of its forms (see [`provider_frames`]).
fn converse_frame(name: &str, mut body: Value, form: u8) -> Message {
    use tollgate_core::eventstream::Header;
    let wrapped = |body: Value| {
        let mut o = serde_json::Map::new();
        o.insert(name.to_owned(), body);
        Value::Object(o).to_string().into_bytes()
    };
    match form % 3 {
        0 => {
            body["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEF");
            Message::event(name, "application/json", body.to_string().into_bytes())
        }
        1 => Message::event(name, "application/json", wrapped(body)),
        _ => Message::new(
            vec![Header::string(":content-type", "application/json"), Header::string(":message-type", "event")],
            wrapped(body),
        ),
    }
}

/// An Anthropic event in an InvokeModel `chunk` frame (see
/// [`provider_frames`]), and the event the client must get for it.
fn invoke_frame(event: &Value, form: u8) -> (Message, Sent) {
    let text = match form % 4 {
        0 | 1 => event.to_string(),
        2 => serde_json::to_string_pretty(event).unwrap(),
        _ => serde_json::to_string_pretty(event).unwrap().replace('\n', "\r\n"),
    };
    let mut payload = json!({"bytes": base64(text.as_bytes())});
    if form & 3 == 0 {
        payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEFGH");
    }
    let name = event["type"].as_str().unwrap_or_default().to_owned();
    let data = if name == "message_start" {
        let mut e = event.clone();
        e["message"]["model"] = json!("client-model");
        e.to_string()
    } else {
        text
    };
    let m = Message::event("chunk", "application/json", payload.to_string().into_bytes());
    (m, Sent::Event(Some(SseEvent { event: Some(name), data, id: None })))
}

/// An exception frame (`:message-type: exception`) or, for bit 7 of `arg`,
/// an error frame (`:message-type: error`).
fn failure_frame(arg: u8) -> Message {
    use tollgate_core::eventstream::Header;
    let kind = EXCEPTIONS[usize::from(arg & 0x7f) % EXCEPTIONS.len()];
    if arg & 0x80 == 0 {
        let body = json!({"message": format!("the model failed: {kind}")});
        Message::exception(kind, "application/json", body.to_string().into_bytes())
    } else {
        Message::new(
            vec![
                Header::string(":message-type", "error"),
                Header::string(":error-code", kind),
                Header::string(":error-message", "the stream failed"),
            ],
            Vec::new(),
        )
    }
}

/// Standard base64 with padding (what InvokeModel's `chunk` frames carry).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// usage_stream: usage never decreases while a stream runs.

/// A provider stream made from the input: byte 0: the API (and whether the
/// provider reports usage on every chunk); bytes 1–2: the chunking; then
/// operations, two bytes each (text, a usage report that adds tokens, a
/// ping, a comment, an unrelated event). The counters only grow.
///
/// - read at every event, the usage never decreases and, once known, stays known;
/// - at the end it is the last report's, for any chunking;
/// - translated to the other API, the client's reading also never decreases
///   and ends equal.
pub fn usage_stream(data: &[u8]) {
    let mut inp = Input::new(data);
    let head = inp.byte();
    let seed = inp.u16();
    let provider = match head % 3 {
        0 => ApiKind::OpenAiChat,
        1 => ApiKind::AnthropicMessages,
        _ => ApiKind::OpenAiResponses,
    };
    let (events, expected) = usage_events(provider, head & 0x80 != 0, &mut inp);
    let wire = write_all(&events);
    let parsed = parse_stream(&wire, seed, usize::MAX).expect("our own stream parses");
    assert_eq!(parsed, events);
    let seen = assert_monotone(provider, &parsed);
    assert_eq!(seen, expected, "the usage at the end is the last report's");

    let dir = match provider {
        ApiKind::AnthropicMessages => Direction::OpenAiToAnthropic,
        ApiKind::OpenAiChat => Direction::AnthropicToOpenAi,
        _ => return,
    };
    let translated = translate_events(dir, &parsed);
    assert_client_stream(dir.client_api(), &translated);
    let client = assert_monotone(dir.client_api(), &translated);
    let pair = |u: Option<Usage>| u.map(|u| (u.input_tokens, u.output_tokens));
    assert_eq!(pair(client), pair(expected), "translation changed the usage");
}

/// Read `events` with a [`StreamUsage`], checking after each that nothing decreased.
fn assert_monotone(api: ApiKind, events: &[SseEvent]) -> Option<Usage> {
    let mut usage = StreamUsage::new(api);
    let mut last: Option<Usage> = None;
    for e in events {
        usage.observe(e);
        let now = usage.usage();
        if let Some(before) = last {
            let now = now.unwrap_or_else(|| panic!("usage known, then lost at {e:?}"));
            assert!(
                now.input_tokens >= before.input_tokens
                    && now.output_tokens >= before.output_tokens
                    && now.cached_tokens >= before.cached_tokens
                    && now.total_tokens >= before.total_tokens,
                "usage decreased: {before:?} then {now:?} at {e:?}"
            );
        }
        last = now;
    }
    last
}

/// A stream of `api` with growing counters, and the usage it reports last.
fn usage_events(api: ApiKind, every_chunk: bool, inp: &mut Input<'_>) -> (Vec<SseEvent>, Option<Usage>) {
    let data = |v: Value| SseEvent { event: None, data: v.to_string(), id: None };
    let named = |name: &str, v: Value| SseEvent { event: Some(name.into()), data: v.to_string(), id: None };
    let (mut input, mut output, mut cached) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    let report = |input: u64, output: u64, cached: u64| Usage {
        input_tokens: input,
        output_tokens: output,
        cached_tokens: cached,
        total_tokens: input + output,
    };
    if api == ApiKind::AnthropicMessages {
        input = u64::from(inp.byte());
        cached = u64::from(inp.byte());
        out.push(named(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1",
            "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null,
            "usage": {"input_tokens": input, "cache_read_input_tokens": cached, "output_tokens": 1}}}),
        ));
        output = 1;
        out.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
    }
    let chat = |delta: Value, usage: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}], "usage": usage})
    };
    while !inp.is_empty() && out.len() < 256 {
        let op = inp.byte();
        let arg = inp.byte();
        match op % 5 {
            0 => {
                let text = format!("t{arg}");
                out.push(match api {
                    ApiKind::AnthropicMessages => named(
                        "content_block_delta",
                        json!({"type": "content_block_delta",
                        "index": 0, "delta": {"type": "text_delta", "text": text}}),
                    ),
                    ApiKind::OpenAiChat => data(chat(json!({"content": text}), Value::Null)),
                    _ => named(
                        "response.output_text.delta",
                        json!({"type": "response.output_text.delta",
                        "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text}),
                    ),
                });
            }
            1 => {
                output += u64::from(arg);
                if api == ApiKind::OpenAiChat && input == 0 {
                    input = 7;
                }
                match api {
                    ApiKind::AnthropicMessages => {
                        out.push(named(
                            "message_delta",
                            json!({"type": "message_delta",
                            "delta": {"stop_reason": null}, "usage": {"output_tokens": output}}),
                        ));
                    }
                    ApiKind::OpenAiChat if every_chunk => {
                        let u = json!({"prompt_tokens": input, "completion_tokens": output,
                            "total_tokens": input + output});
                        out.push(data(chat(json!({"content": ""}), u)));
                    }
                    _ => {}
                }
            }
            2 => out.push(match api {
                ApiKind::AnthropicMessages => named("ping", json!({"type": "ping"})),
                _ => data(chat(json!({}), Value::Null)),
            }),
            // An event no reader takes usage from (for Anthropic, one that
            // carries a stale counter).
            3 if api == ApiKind::AnthropicMessages => {
                out.push(named("other", json!({"type": "other", "usage": {"output_tokens": 0}, "n": arg})))
            }
            3 => out.push(named("other", json!({"type": "other", "n": arg}))),
            _ => {}
        }
    }
    match api {
        ApiKind::AnthropicMessages => {
            out.push(named("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            out.push(named(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}),
            ));
            out.push(named("message_stop", json!({"type": "message_stop"})));
        }
        ApiKind::OpenAiChat => {
            out.push(data(json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null})));
            let u = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
            out.push(data(json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [], "usage": u})));
            out.push(SseEvent { data: "[DONE]".into(), ..SseEvent::default() });
        }
        _ => {
            let u = json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output});
            out.push(named(
                "response.completed",
                json!({"type": "response.completed",
                "response": {"id": "resp_1", "status": "completed", "output": [], "usage": u}}),
            ));
        }
    }
    let cached_part = if api == ApiKind::AnthropicMessages { cached } else { 0 };
    (out, Some(report(input + cached_part, output, cached_part)))
}

// ---------------------------------------------------------------------------
// policy: the YAML loader and the filter configuration.

/// Byte 0: YAML policy or the filter's JSON configuration; the rest: the text.
///
/// - a policy that loads (parses and validates) renders a filter
///   configuration that loads back equal, and that the filter can build
///   (scanner, firewall, guard, moderation): what validation accepts, the
///   filter never refuses;
/// - routing any alias it defines, for any API, does not panic.
pub fn policy(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.byte();
    let text = inp.rest();
    let cfg = if mode & 1 == 0 {
        let Ok(text) = std::str::from_utf8(text) else { return };
        let Ok(policy) = Policy::deserialize(serde_yaml_ng::Deserializer::from_str(text)) else { return };
        for model in policy.models.keys() {
            for api in ApiKind::ALL {
                let _ = policy.route(api, model);
            }
        }
        let _ = policy.default_provider();
        let cfg = FilterConfig::from_policy(&policy);
        let back = FilterConfig::from_json(cfg.to_json().as_bytes())
            .unwrap_or_else(|e| panic!("a valid policy's filter configuration does not load: {e}"));
        assert_eq!(back, cfg, "the filter configuration round trip");
        cfg
    } else {
        let Ok(cfg) = FilterConfig::from_json(text) else { return };
        cfg
    };
    PiiScanner::new(&cfg.inspection.pii).expect("a loaded configuration's PII scanner builds");
    Firewall::shared(&cfg.inspection.firewall).expect("a loaded configuration's firewall builds");
    OutputGuard::new(&cfg.inspection.output).expect("a loaded configuration's output guard builds");
    Moderator::new(&cfg.inspection.moderation).expect("a loaded configuration's moderation builds");
}

// ---------------------------------------------------------------------------
// mcp: JSON-RPC messages, tool names, OpenAPI tools.

/// Byte 0: the part (JSON-RPC message, tool names, OpenAPI document and
/// call arguments, an HTTP answer as a tool result); the rest its input.
pub fn mcp(data: &[u8]) {
    let mut inp = Input::new(data);
    match inp.byte() % 4 {
        0 => jsonrpc_message(inp.rest()),
        1 => {
            let server = String::from_utf8_lossy(inp.until(0)).into_owned();
            let tool = String::from_utf8_lossy(inp.rest()).into_owned();
            let _ = names::split(&tool);
            // An upstream tool has a name (an empty one cannot be called).
            if names::valid_server(&server) && !tool.is_empty() {
                let e = names::exposed(&server, &tool);
                assert!(names::valid_tool_name(&e), "exposed name {e:?} is not a valid tool name");
                assert_eq!(names::split(&e).map(|(s, _)| s), Some(server.as_str()), "split(exposed(s, t)).0 == s");
                let plain = format!("{server}_{tool}");
                if names::valid_tool_name(&plain) {
                    assert_eq!(e, plain);
                    assert_eq!(names::split(&e), Some((server.as_str(), tool.as_str())));
                }
            }
        }
        2 => {
            let doc = inp.until(0);
            let Ok(doc) = serde_json::from_slice::<Value>(doc) else { return };
            let args = serde_json::from_slice::<Value>(inp.rest()).unwrap_or(Value::Null);
            let Ok(api) = openapi::Api::from_document(&doc) else { return };
            for tool in api.tools() {
                let name = tool["name"].as_str().expect("a tool has a name");
                // Names from paths may be long; the name a client sees is always valid.
                assert!(names::valid_tool_name(&names::exposed("api", name)), "tool name {name:?}");
                assert!(tool["inputSchema"].is_object(), "tool input schema");
                let op = api.operation(name).expect("a listed tool is an operation");
                if let Ok(call) = op.request(&args) {
                    assert_eq!(call.method, op.method());
                    assert!(call.path_and_query.starts_with('/'), "path {:?}", call.path_and_query);
                }
            }
        }
        _ => {
            let status = inp.u16();
            let content_type = String::from_utf8_lossy(inp.until(0)).into_owned();
            let body = inp.rest();
            let v = openapi::tool_result(status, Some(&content_type), body);
            assert!(v["content"].is_array(), "a tool result has content: {v}");
            if !(200..300).contains(&status) {
                assert_eq!(v["isError"], true, "a failed call is an error: {v}");
            }
        }
    }
}

fn jsonrpc_message(body: &[u8]) {
    match jsonrpc::parse(body) {
        Ok(jsonrpc::Message::Request { id, method, params }) => {
            let again = serde_json::to_vec(&jsonrpc::request(&id, &method, params.as_ref())).unwrap();
            assert_eq!(
                jsonrpc::parse(&again),
                Ok(jsonrpc::Message::Request { id, method, params }),
                "a request written back"
            );
        }
        Ok(jsonrpc::Message::Notification { method, params }) => {
            let again = serde_json::to_vec(&jsonrpc::notification(&method, params.as_ref())).unwrap();
            assert_eq!(
                jsonrpc::parse(&again),
                Ok(jsonrpc::Message::Notification { method, params }),
                "a notification written back"
            );
        }
        Ok(jsonrpc::Message::Response { id }) => assert!(id.is_string() || id.is_i64() || id.is_u64()),
        Err(invalid) => {
            let v = invalid.response();
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["id"], invalid.id);
            assert_eq!(v["error"]["code"], invalid.code);
            assert!(v["error"]["message"].is_string());
        }
    }
}

// ---------------------------------------------------------------------------
// eventstream: AWS event-stream framing (Bedrock's streams).

/// Byte 0: the cap and the mode; bytes 1–2: the chunking. Mode 0: the rest
/// is a raw stream. Mode 1: the rest, cut at NUL bytes, is the payloads
/// of messages encoded here (so the fuzzer reaches valid frames).
///
/// - the messages do not depend on the chunking (before an error, the same
///   ones); the decoder never holds more than its cap;
/// - every decoded message encodes to a frame that decodes to itself;
/// - encoded messages decode back, in any chunking.
pub fn eventstream(data: &[u8]) {
    use tollgate_core::eventstream::{Decoder, Message};
    let mut inp = Input::new(data);
    let head = inp.byte();
    let cap = if head & 2 == 0 { 1 << 16 } else { 64 };
    let seed = inp.u16();
    let decode = |bytes: &[u8], seed: u16| {
        let mut d = Decoder::with_max_message_bytes(cap);
        let mut out = Vec::new();
        for c in chunks(bytes, seed) {
            if d.feed(c, &mut out).is_err() {
                return (out, false);
            }
            assert!(d.buffered() <= cap, "the decoder holds more than its cap");
        }
        let ok = d.finish().is_ok();
        (out, ok)
    };
    let (stream, sent) = if head & 1 == 0 {
        (inp.rest().to_vec(), None)
    } else {
        let mut sent = Vec::new();
        let mut bytes = Vec::new();
        while !inp.is_empty() && sent.len() < 64 {
            let m = Message::event("chunk", "application/json", inp.until(0).to_vec());
            let Ok(frame) = m.encode() else { return };
            bytes.extend_from_slice(&frame);
            sent.push(m);
        }
        (bytes, Some(sent))
    };
    let (whole, whole_ok) = decode(&stream, 0);
    let (split, split_ok) = decode(&stream, seed);
    let n = whole.len().min(split.len());
    assert_eq!(whole[..n], split[..n], "messages depend on the chunking");
    if whole_ok && split_ok {
        assert_eq!(whole, split, "messages depend on the chunking");
    }
    for m in &whole {
        let frame = m.encode().expect("a decoded message encodes");
        assert_eq!(Message::decode(&frame).as_ref(), Ok(m), "a message written back");
    }
    if let Some(sent) = sent {
        let fits = stream.len() <= cap || sent.iter().all(|m| m.encode().is_ok_and(|f| f.len() <= cap));
        if fits {
            assert!(whole_ok && split_ok, "our own frames decode");
            assert_eq!(split, sent, "encoded messages decode back");
        }
    }
}
