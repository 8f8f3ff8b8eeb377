//! Usage extraction from recorded provider responses, JSON and streamed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::Value;
use tollgate_core::{usage_from_json, ApiKind, SseParser, StreamUsage, Usage};

fn u(input: u64, output: u64, cached: u64, total: u64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, cached_tokens: cached, total_tokens: total }
}

/// Stream usage for raw SSE bytes, fed in `chunk`-byte pieces.
fn stream_usage(api: ApiKind, sse: &[u8], chunk: usize) -> Option<Usage> {
    let mut parser = SseParser::new(1 << 20);
    let mut usage = StreamUsage::new(api);
    let mut events = Vec::new();
    for piece in sse.chunks(chunk) {
        parser.feed(piece, &mut events).unwrap();
        events.drain(..).for_each(|e| usage.observe(&e));
    }
    parser.finish(&mut events).unwrap();
    events.drain(..).for_each(|e| usage.observe(&e));
    usage.usage()
}

/// Usage for a recorded OpenAI interaction, whichever its response format.
fn recorded_usage(name: &str) -> Option<Usage> {
    let it = common::cassette(name);
    let api = common::api_for_url(&it.request.url).unwrap();
    if it.response.is_sse() {
        stream_usage(api, it.response.body.as_bytes(), 4096)
    } else {
        usage_from_json(api, it.response.body.as_bytes()).unwrap()
    }
}

#[test]
fn openai_json_responses() {
    assert_eq!(recorded_usage("chat-basic"), Some(u(8, 377, 0, 385)));
    assert_eq!(recorded_usage("azure-chat-basic"), Some(u(8, 271, 0, 279)));
    assert_eq!(recorded_usage("chat-multimodal"), Some(u(2245, 100, 0, 2345)));
    assert_eq!(recorded_usage("chat-audio-to-text"), Some(u(28, 17, 0, 45)));
    assert_eq!(recorded_usage("chat-openai-agents-python"), Some(u(171, 1962, 0, 2133)));
    assert_eq!(recorded_usage("completion-basic"), Some(u(31, 25, 0, 56)));
    assert_eq!(recorded_usage("completion-token-batch"), Some(u(49, 57, 0, 106)));
    assert_eq!(recorded_usage("completion-suffix"), Some(u(25, 30, 0, 55)));
}

#[test]
fn openai_embeddings_have_no_output_tokens() {
    assert_eq!(recorded_usage("embeddings-basic"), Some(u(7, 0, 0, 7)));
    assert_eq!(recorded_usage("embeddings-large-text"), Some(u(111, 0, 0, 111)));
    assert_eq!(recorded_usage("embeddings-max-tokens"), Some(u(1139, 0, 0, 1139)));
    assert_eq!(recorded_usage("embeddings-mixed-batch"), Some(u(79, 0, 0, 79)));
}

#[test]
fn openai_streams() {
    // stream_options.include_usage: the final `choices: []` chunk.
    assert_eq!(recorded_usage("chat-streaming-detailed-usage"), Some(u(12, 100, 0, 112)));
    assert_eq!(recorded_usage("completion-streaming-usage"), Some(u(31, 25, 0, 56)));
    // Without it, no usage is sent.
    assert_eq!(recorded_usage("chat-streaming"), None);
    assert_eq!(recorded_usage("chat-streaming-web-search"), None);
    assert_eq!(recorded_usage("completion-streaming"), None);
}

#[test]
fn openai_error_bodies_have_no_usage() {
    for name in [
        "chat-bad-request",
        "chat-no-messages",
        "chat-unknown-model",
        "completion-bad-request",
        "completion-unknown-model",
        "embeddings-bad-request",
        "embeddings-unknown-model",
    ] {
        let it = common::cassette(name);
        assert!(it.response.code >= 400, "{name}");
        assert_eq!(recorded_usage(name), None, "{name}");
    }
}

/// Every recorded 200 JSON response: the extracted numbers are the ones in
/// its `usage` object, read here independently with serde_json.
#[test]
fn every_recorded_json_usage_matches_its_usage_object() {
    let mut checked = 0;
    for (name, c) in common::cassettes() {
        for it in c.interactions {
            if it.response.is_sse() {
                continue;
            }
            let api = common::api_for_url(&it.request.url).unwrap();
            let got = usage_from_json(api, it.response.body.as_bytes()).unwrap();
            let v: Value = serde_json::from_str(&it.response.body).unwrap();
            let usage = &v["usage"];
            if it.response.code != 200 {
                assert!(usage.is_null(), "{name}");
                assert_eq!(got, None, "{name}");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("{name}: no usage"));
            assert_eq!(Some(got.input_tokens), usage["prompt_tokens"].as_u64(), "{name}");
            assert_eq!(got.output_tokens, usage["completion_tokens"].as_u64().unwrap_or(0), "{name}");
            assert_eq!(Some(got.total_tokens), usage["total_tokens"].as_u64(), "{name}");
            assert_eq!(
                got.cached_tokens,
                usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
                "{name}"
            );
            assert!(got.total_tokens >= got.input_tokens, "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
}

#[test]
fn recorded_stream_usage_is_independent_of_chunking() {
    for (name, api, bytes) in common::recorded_streams() {
        let whole = stream_usage(api, &bytes, bytes.len().max(1));
        for chunk in [1, 2, 3, 7, 64, 1000] {
            assert_eq!(stream_usage(api, &bytes, chunk), whole, "{name} chunk {chunk}");
        }
    }
}

#[test]
fn anthropic_json_responses() {
    let json = |name: &str| usage_from_json(ApiKind::AnthropicMessages, &common::anthropic(name)).unwrap();
    // input = input_tokens + cache_read + cache_creation; cached = cache_read.
    assert_eq!(json("basic.json"), Some(u(15 + 12 + 13, 21, 12, 61)));
    assert_eq!(json("tool.json"), Some(u(558 + 2 + 1, 48, 2, 609)));
    assert_eq!(json("thinking.json"), Some(u(47 + 2 + 1, 251, 2, 301)));
    assert_eq!(json("multiple_text_blocks.json"), Some(u(15, 21, 0, 36)));
    // count_tokens answers carry a bare `input_tokens`, no usage object.
    assert_eq!(json("count_tokens.json"), None);
}

#[test]
fn anthropic_streams() {
    let stream = |name: &str| stream_usage(ApiKind::AnthropicMessages, &common::anthropic(name), 4096);
    assert_eq!(stream("stream_basic.json"), Some(u(15, 21, 0, 36)));
    assert_eq!(stream("stream_tool.json"), Some(u(15, 12, 0, 27)));
    assert_eq!(stream("stream_tool_empty_args.json"), Some(u(15, 8, 0, 23)));
    assert_eq!(stream("stream_thinking.json"), Some(u(47, 264, 0, 311)));
    // message_delta restates the input side (3883 uncached + 30464 read from
    // cache), replacing message_start's 34824.
    assert_eq!(stream("stream_message_delta_usage.json"), Some(u(3883 + 30464, 49, 30464, 3883 + 30464 + 49)));
}

#[test]
fn anthropic_stream_usage_before_the_delta() {
    for (name, want) in
        [("stream_basic.json", u(15, 5, 0, 20)), ("stream_message_delta_usage.json", u(34824, 0, 0, 34824))]
    {
        let events = common::parse_all(&common::anthropic(name));
        let mut usage = StreamUsage::new(ApiKind::AnthropicMessages);
        assert_eq!(usage.usage(), None);
        for e in events.iter().take_while(|e| e.event.as_deref() != Some("message_delta")) {
            usage.observe(e);
        }
        assert_eq!(usage.usage(), Some(want), "{name}");
    }
}

#[test]
fn wrong_api_streams_yield_nothing() {
    // The responses reader needs `response.usage`, the Anthropic reader
    // `message_start` / `message_delta` events: neither is in the other's stream.
    let bytes = common::anthropic("stream_basic.json");
    assert_eq!(stream_usage(ApiKind::OpenAiResponses, &bytes, 4096), None);
    let it = common::cassette("chat-streaming-detailed-usage");
    assert_eq!(stream_usage(ApiKind::AnthropicMessages, it.response.body.as_bytes(), 4096), None);
}
