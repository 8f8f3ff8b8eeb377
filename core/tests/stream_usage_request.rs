//! Asking a stream for its usage, and recognising the chunk to strip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollgate_core::usage::{is_usage_only_chunk, request_stream_usage};
use tollgate_core::{ApiKind, SseEvent};

#[test]
fn adds_include_usage_only_where_missing() {
    let mut v = json!({"model": "m", "stream": true, "messages": []});
    assert!(request_stream_usage(ApiKind::OpenAiChat, &mut v));
    assert_eq!(v["stream_options"]["include_usage"], true);
    // Already asked: untouched.
    assert!(!request_stream_usage(ApiKind::OpenAiChat, &mut v));
    let mut v = json!({"model": "m", "stream": true, "stream_options": {"include_usage": false, "x": 1}});
    assert!(request_stream_usage(ApiKind::OpenAiCompletions, &mut v));
    assert_eq!(v["stream_options"], json!({"include_usage": true, "x": 1}));
    // `stream_options: null` is what SDKs send for "not set".
    let mut v = json!({"model": "m", "stream": true, "stream_options": null, "messages": []});
    assert!(request_stream_usage(ApiKind::OpenAiChat, &mut v));
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    // Not streamed, or not an API that needs it.
    let mut v = json!({"model": "m", "messages": []});
    assert!(!request_stream_usage(ApiKind::OpenAiChat, &mut v));
    assert!(v.get("stream_options").is_none());
    let mut v = json!({"model": "m", "stream": true});
    assert!(!request_stream_usage(ApiKind::AnthropicMessages, &mut v));
    let mut v: Value = json!({"model": "m", "stream": true, "stream_options": "bad"});
    assert!(!request_stream_usage(ApiKind::OpenAiChat, &mut v));
}

#[test]
fn recognises_the_usage_only_chunk() {
    let ev = |data: &str| SseEvent { data: data.into(), ..SseEvent::default() };
    assert!(is_usage_only_chunk(&ev(
        r#"{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
    )));
    assert!(!is_usage_only_chunk(&ev(
        r#"{"id":"x","choices":[{"index":0,"delta":{"content":"usage"}}],"usage":null}"#
    )));
    assert!(!is_usage_only_chunk(&ev(r#"{"id":"x","choices":[],"usage":null}"#)));
    assert!(!is_usage_only_chunk(&ev("[DONE]")));
    assert!(!is_usage_only_chunk(&ev(r#"{"choices":[{"index":0,"delta":{}}],"usage":{"total_tokens":1}}"#)));
}
