//! The fuzz corpora (`fuzz/corpus/<target>/`) as plain tests: every input
//! is run through the same property check its fuzz target runs
//! (`fuzz/props/core.rs`), so what fuzzing found stays fixed on stable Rust.
//!
//! `cargo test -p tollgate-core --test fuzz_corpus -- --ignored write_seeds`
//! writes the seed inputs (`seed-*`) from the recorded fixtures again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../../fuzz/props/core.rs"]
mod props;

use std::path::{Path, PathBuf};

use serde_json::json;
use tollgate_core::eventstream::Message;
use tollgate_core::translate::Direction;
use tollgate_core::ApiKind;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus")
}

/// Every file of a target's corpus, sorted.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Run every input of `target`, naming each one that fails.
fn run(target: &str) {
    let check = props::TARGETS.iter().find(|(name, _)| *name == target).map(|(_, f)| *f).unwrap();
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "the {target} corpus is empty");
    let mut failed = Vec::new();
    for (name, data) in &inputs {
        if std::panic::catch_unwind(|| check(data)).is_err() {
            failed.push(name.clone());
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} inputs fail: {failed:?}", failed.len(), inputs.len());
}

#[test]
fn request() {
    run("request");
}

#[test]
fn sse() {
    run("sse");
}

#[test]
fn restore() {
    run("restore");
}

#[test]
fn guard() {
    run("guard");
}

#[test]
fn translate_json() {
    run("translate_json");
}

#[test]
fn translate_stream() {
    run("translate_stream");
}

#[test]
fn translate_frames() {
    run("translate_frames");
}

#[test]
fn usage_stream() {
    run("usage_stream");
}

#[test]
fn policy() {
    run("policy");
}

#[test]
fn mcp() {
    run("mcp");
}

#[test]
fn eventstream() {
    run("eventstream");
}

#[test]
fn every_target_has_a_test() {
    let dirs: Vec<String> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for (name, _) in props::TARGETS {
        assert!(dirs.iter().any(|d| d == name), "no corpus for {name}");
    }
}

// ---------------------------------------------------------------------------
// Seeds from the recorded fixtures.

fn api_byte(api: ApiKind) -> u8 {
    ApiKind::ALL.iter().position(|a| *a == api).unwrap() as u8
}

fn with_head(head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = head.to_vec();
    v.extend_from_slice(body);
    v
}

const PII_TEXT: &str = "Mail jane.doe@example.com or call +1 (415) 555-0100; card 4111 1111 1111 1111, \
    SSN 123-45-6789, IBAN DE89 3704 0044 0532 0130 00, from 10.1.2.3, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z, \
    employee EMP-123456 on bluebird. Zoë <b>bold</b> <EMAIL_ADDR and \"quotes\" \\ done.";

const ANTHROPIC_REQUEST: &str = r#"{"model":"claude-haiku-4-5","max_tokens":256,"stream":true,
  "system":[{"type":"text","text":"You are terse."}],
  "tools":[{"name":"lookup","description":"find","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}],
  "messages":[{"role":"user","content":"mail jane@example.com"},
    {"role":"assistant","content":[{"type":"text","text":"calling"},{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"jane@example.com"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"found"}]},
      {"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc text"},"title":"t"}]}]}"#;

const RESPONSES_REQUEST: &str = r#"{"model":"gpt-4o-mini","instructions":"be brief","stream":true,
  "input":[{"role":"user","content":[{"type":"input_text","text":"hello 4111 1111 1111 1111"}]},
    {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"a\":\"jane@example.com\"}"},
    {"type":"function_call_output","call_id":"c1","output":"ok"}]}"#;

const OPENAPI_DOC: &str = r#"{"openapi":"3.0.3","info":{"title":"pets","version":"1"},
  "paths":{"/pets/{petId}":{"parameters":[{"name":"petId","in":"path","required":true,"schema":{"type":"integer"}}],
    "get":{"operationId":"getPet","parameters":[{"name":"verbose","in":"query","schema":{"type":"boolean"}}]},
    "put":{"operationId":"updatePet","requestBody":{"required":true,"content":{"application/json":{"schema":
      {"type":"object","required":["name"],"properties":{"name":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}}}}}}}}},
  "/pets":{"get":{"operationId":"listPets","parameters":[{"name":"limit","in":"query","schema":{"type":"integer","maximum":100}},
    {"name":"x-trace","in":"header","schema":{"type":"string"}}]}}}}"#;

/// Write the seed inputs of every core target (files named `seed-*`).
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: String, data: Vec<u8>| seeds.push((target, name, data));

    for (name, c) in common::cassettes() {
        for (i, it) in c.interactions.into_iter().enumerate() {
            let Some(api) = common::api_for_url(&it.request.url) else { continue };
            let tag = format!("{name}-{i}");
            add("request", format!("seed-{tag}"), with_head(&[api_byte(api)], it.request.body.as_bytes()));
            if it.response.is_sse() {
                add("sse", format!("seed-{tag}"), with_head(&[3, 0, 0], it.response.body.as_bytes()));
                add("sse", format!("seed-{tag}-small"), with_head(&[1, 7, 0], it.response.body.as_bytes()));
                if api == ApiKind::OpenAiChat {
                    add("translate_stream", format!("seed-{tag}"), with_head(&[1, 9, 0], it.response.body.as_bytes()));
                }
            } else if api == ApiKind::OpenAiChat {
                let part = if it.response.code >= 400 { 4 } else { 2 };
                add(
                    "translate_json",
                    format!("seed-{tag}"),
                    with_head(&[part | 1, 0x90, 1], it.response.body.as_bytes()),
                );
            }
            if api == ApiKind::OpenAiChat {
                add("translate_json", format!("seed-{tag}-request"), with_head(&[0, 0, 0], it.request.body.as_bytes()));
            }
        }
    }
    for name in ["basic.json", "multiple_text_blocks.json", "tool.json", "thinking.json", "count_tokens.json"] {
        add("translate_json", format!("seed-anthropic-{name}"), with_head(&[2, 0, 0], &common::anthropic(name)));
    }
    for (name, bytes) in common::anthropic_streams() {
        add("sse", format!("seed-anthropic-{name}"), with_head(&[2, 3, 0], &bytes));
        add("translate_stream", format!("seed-anthropic-{name}"), with_head(&[0, 5, 0], &bytes));
    }
    let anthropic_error = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    add("translate_json", "seed-anthropic-error".into(), with_head(&[4, 0xf5, 1], anthropic_error.as_bytes()));
    add("translate_json", "seed-anthropic-request".into(), with_head(&[1, 0, 0], ANTHROPIC_REQUEST.as_bytes()));
    add(
        "request",
        "seed-anthropic".into(),
        with_head(&[api_byte(ApiKind::AnthropicMessages)], ANTHROPIC_REQUEST.as_bytes()),
    );
    add(
        "request",
        "seed-responses".into(),
        with_head(&[api_byte(ApiKind::OpenAiResponses)], RESPONSES_REQUEST.as_bytes()),
    );

    for mode in 0u8..16 {
        let mode = if mode < 8 { mode } else { (mode - 8 + 2) | 0x80 };
        add("restore", format!("seed-mode{mode:02x}"), with_head(&[mode, 3, 0, 11, 0], PII_TEXT.as_bytes()));
    }
    for (i, text) in [
        "All fine here, nothing to see.",
        "the key is sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z and mail ops@example.org",
        "About PROJECT Nightingale: it ships soon.",
        PII_TEXT,
    ]
    .iter()
    .enumerate()
    {
        add("guard", format!("seed-{i}"), with_head(&[5, 0], text.as_bytes()));
    }
    for (i, ops) in [
        &[0u8, 0, 4, 2, 9, 0, 7, 0, 5, 1, 4, 0][..],
        &[0x80, 3, 0, 1, 20, 0, 1, 1, 5, 2, 0, 1, 3][..],
        &[2, 0, 0, 1, 3, 3, 1, 0, 4],
    ]
    .iter()
    .enumerate()
    {
        for api in 0u8..3 {
            let mut data = ops.to_vec();
            data[0] = (data[0] & 0x80) | api;
            add("usage_stream", format!("seed-{i}-{api}"), data);
        }
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (i, file) in ["envoy/policy.yaml", "ext-proc-server/tests/golden/quickstart-policy.yaml"].iter().enumerate() {
        let text = std::fs::read(root.join(file)).unwrap();
        add("policy", format!("seed-policy-{i}"), with_head(&[0], &text));
        let policy =
            tollgate_core::policy::Policy::deserialize(serde_yaml_ng::Deserializer::from_slice(&text)).unwrap();
        let cfg = tollgate_core::filter_config::FilterConfig::from_policy(&policy);
        add("policy", format!("seed-filter-config-{i}"), with_head(&[1], cfg.to_json().as_bytes()));
    }

    for (i, msg) in [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}),
        json!({"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"demo_echo","arguments":{"text":"hi"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":7,"result":{}}),
        json!([{"jsonrpc":"2.0","id":1,"method":"ping"}]),
        json!({"jsonrpc":"1.0","id":null,"method":""}),
    ]
    .iter()
    .enumerate()
    {
        add("mcp", format!("seed-jsonrpc-{i}"), with_head(&[0], msg.to_string().as_bytes()));
    }
    add("mcp", "seed-names-0".into(), b"\x01crm\0lookup".to_vec());
    add(
        "mcp",
        "seed-names-1".into(),
        b"\x01weather-api\0get forecast/for a city \xc3\xa9 and more words to be long".to_vec(),
    );
    let mut doc = vec![2];
    doc.extend_from_slice(OPENAPI_DOC.as_bytes());
    doc.push(0);
    doc.extend_from_slice(br#"{"petId":7,"verbose":true,"name":"rex","tags":["a"],"limit":3,"x-trace":"t"}"#);
    add("mcp", "seed-openapi".into(), doc);
    add("mcp", "seed-result-json".into(), b"\x03\xc8\x00application/json\0{\"a\":1}".to_vec());
    add("mcp", "seed-result-error".into(), b"\x03\xf4\x01text/plain\0not found".to_vec());
    add("mcp", "seed-result-image".into(), b"\x03\xc8\x00image/png\0\x89PNG".to_vec());

    // Gemini: a streamed answer (SSE) and a whole one, for both clients.
    let gemini_chunks = [
        json!({"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"index":0}],
            "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1,"totalTokenCount":6},"modelVersion":"gemini-2.5-flash"}),
        json!({"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"lookup","args":{"q":"x"}}}]},"index":0}]}),
        json!({"candidates":[{"content":{"role":"model","parts":[{"text":" there"}]},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"cachedContentTokenCount":2,"totalTokenCount":8}}),
    ];
    let gemini_stream: String = gemini_chunks.iter().map(|c| format!("data: {c}\r\n\r\n")).collect();
    let gemini_whole = json!({"candidates":[{"content":{"role":"model","parts":[{"text":"Hello there"}]},"finishReason":"STOP","index":0}],
        "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8}});
    let gemini_error = json!({"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}});
    for (dir, client) in [(2u8, "openai"), (3, "anthropic")] {
        add("translate_stream", format!("seed-gemini-{client}"), with_head(&[dir, 7, 0], gemini_stream.as_bytes()));
        let bit = (dir & 1) | 0x80;
        add(
            "translate_json",
            format!("seed-gemini-{client}-response"),
            with_head(&[bit | 2, 0, 0], gemini_whole.to_string().as_bytes()),
        );
        add(
            "translate_json",
            format!("seed-gemini-{client}-error"),
            with_head(&[bit | 4, 0xad, 1], gemini_error.to_string().as_bytes()),
        );
    }
    add(
        "translate_json",
        "seed-gemini-openai-request".into(),
        with_head(&[0x80], &with_head(&[0, 0], common::cassette("chat-tools").request.body.as_bytes())),
    );
    add(
        "translate_json",
        "seed-gemini-anthropic-request".into(),
        with_head(&[0x81, 0, 0], ANTHROPIC_REQUEST.as_bytes()),
    );

    // AWS event-stream: frames encoded here (raw), and payloads to encode.
    let mut frames = Vec::new();
    for (i, payload) in [
        "{\"contentBlockDelta\":{\"delta\":{\"text\":\"Hi\"},\"contentBlockIndex\":0}}",
        "{\"messageStop\":{\"stopReason\":\"end_turn\"}}",
        "{\"metadata\":{\"usage\":{\"inputTokens\":5,\"outputTokens\":2,\"totalTokens\":7}}}",
    ]
    .iter()
    .enumerate()
    {
        let m = tollgate_core::eventstream::Message::event(
            ["contentBlockDelta", "messageStop", "metadata"][i],
            "application/json",
            payload.as_bytes().to_vec(),
        );
        frames.extend_from_slice(&m.encode().unwrap());
    }
    add("eventstream", "seed-frames".into(), with_head(&[0, 5, 0], &frames));
    add("eventstream", "seed-frames-small-cap".into(), with_head(&[2, 1, 0], &frames));
    add("eventstream", "seed-payloads".into(), with_head(&[1, 3, 0], b"{\"a\":1}\0{\"b\":[true,null]}\0\0x"));

    // Bedrock: Converse for both clients, InvokeModel for Anthropic clients.
    let bedrock = common::fixtures().join("bedrock");
    let json_mode =
        |dir: Direction, part: u8| (0..=255u8).find(|m| props::translate_json_mode(*m) == (dir, part)).unwrap();
    for (dir, client) in [(Direction::OpenAiToBedrock, "openai"), (Direction::AnthropicToBedrock, "anthropic")] {
        for name in ["converse_text", "converse_tool_use", "converse_cache_usage", "converse_reasoning"] {
            let body = std::fs::read(bedrock.join(format!("{name}.json"))).unwrap();
            add(
                "translate_json",
                format!("seed-bedrock-{client}-{name}"),
                with_head(&[json_mode(dir, 1), 0, 0], &body),
            );
        }
        let typed = json!({"__type": "com.amazon.bedrock#ThrottlingException",
            "message": "Too many requests, please wait before trying again."});
        add(
            "translate_json",
            format!("seed-bedrock-{client}-error-type"),
            with_head(&[json_mode(dir, 2), 0x90, 1], typed.to_string().as_bytes()),
        );
    }
    add(
        "translate_json",
        "seed-bedrock-openai-request".into(),
        with_head(
            &[json_mode(Direction::OpenAiToBedrock, 0), 0, 0],
            common::cassette("chat-tools").request.body.as_bytes(),
        ),
    );
    add(
        "translate_json",
        "seed-bedrock-anthropic-request".into(),
        with_head(&[json_mode(Direction::AnthropicToBedrock, 0), 0, 0], ANTHROPIC_REQUEST.as_bytes()),
    );
    let invoke = Direction::AnthropicOnBedrock;
    add(
        "translate_json",
        "seed-invoke-request".into(),
        with_head(&[json_mode(invoke, 0), 0, 0], ANTHROPIC_REQUEST.as_bytes()),
    );
    let answer = std::fs::read(common::fixtures().join("bedrock-mock").join("invoke_claude.json")).unwrap();
    add("translate_json", "seed-invoke-response".into(), with_head(&[json_mode(invoke, 1), 0, 0], &answer));
    let denied = br#"{"Message":"You don't have access to the model with the specified model ID."}"#;
    add("translate_json", "seed-invoke-error".into(), with_head(&[json_mode(invoke, 2), 0x93, 1], denied));

    // Bedrock's event streams: the recorded events as frames (raw streams) ...
    let converse_frames = |name: &str| {
        let text = std::fs::read_to_string(bedrock.join(format!("{name}.jsonl"))).unwrap();
        let mut bytes = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (event, payload): (String, serde_json::Value) = serde_json::from_str(line).unwrap();
            Message::event(&event, "application/json", payload.to_string().into_bytes())
                .encode_into(&mut bytes)
                .unwrap();
        }
        bytes
    };
    for name in ["converse_stream_text", "converse_stream_tool", "converse_stream_reasoning"] {
        for (dir, client) in [(0u8, "openai"), (1, "anthropic")] {
            add(
                "translate_frames",
                format!("seed-raw-{client}-{name}"),
                with_head(&[4 | dir, 7, 0], &converse_frames(name)),
            );
        }
    }
    let invoke_stream =
        std::fs::read_to_string(common::fixtures().join("bedrock-mock").join("invoke_stream_claude.jsonl")).unwrap();
    let mut chunks = Vec::new();
    for line in invoke_stream.lines().filter(|l| !l.trim().is_empty()) {
        let payload = json!({"bytes": props::base64(line.as_bytes()), "p": "abcdefghijklmnopqrstu"});
        Message::event("chunk", "application/json", payload.to_string().into_bytes()).encode_into(&mut chunks).unwrap();
    }
    add("translate_frames", "seed-raw-invoke".into(), with_head(&[6, 5, 0], &chunks));
    let recorded = std::fs::read(bedrock.join("eventstream").join("invoke_stream_chunk.bin")).unwrap();
    add("translate_frames", "seed-raw-invoke-recorded".into(), with_head(&[6, 3, 0], &recorded));
    // ... and generated ones: mode, chunking, [cut], [change], end, tokens, operations.
    let ops = |ops: &[(u8, u8, &str)]| {
        let mut v = Vec::new();
        for (op, arg, text) in ops {
            v.extend_from_slice(&[*op, *arg]);
            v.extend_from_slice(text.as_bytes());
        }
        v
    };
    let answer = ops(&[
        (0, 0x06, "Hello!"),
        (7, 0, ""),
        (0, 0x85, " the "),
        (0, 0xc4, "song"),
        (4, 0x47, "thought"),
        (1, 0x83, ""),
        (2, 0x08, "{\"q\":\"x\""),
        (2, 0x41, "}"),
        (3, 0, ""),
    ]);
    for (dir, client) in [(0u8, "openai"), (1, "anthropic"), (2, "invoke")] {
        let tool_use = 1;
        add("translate_frames", format!("seed-{client}"), with_head(&[dir, 5, 0, tool_use, 25, 9], &answer));
        let failing = ops(&[(0, 5, "Hello"), (5, 0, ""), (0, 3, "bye")]);
        add("translate_frames", format!("seed-{client}-exception"), with_head(&[dir | 8, 3, 0, 0, 10, 2], &failing));
        let error_frame = ops(&[(0, 5, "Hello"), (5, 0x80, "")]);
        add(
            "translate_frames",
            format!("seed-{client}-error-frame"),
            with_head(&[dir | 8, 0, 0, 0x40, 10, 2], &error_frame),
        );
        // Cut at byte 1000; byte 1500 changed.
        add(
            "translate_frames",
            format!("seed-{client}-cut"),
            with_head(&[dir | 0x10, 2, 0, 0xe8, 3, 0, 10, 2], &answer),
        );
        add(
            "translate_frames",
            format!("seed-{client}-changed"),
            with_head(&[dir | 0x20, 9, 0, 0xdc, 5, 0x40, 0, 10, 2], &answer),
        );
        add(
            "translate_frames",
            format!("seed-{client}-odd"),
            with_head(
                &[dir | 0x40, 4, 0, 0x18, 10, 2],
                &ops(&[(0, 2, "Hi"), (6, 4, "{\"type\":\"ping\"}\0"), (6, 5, "{}\0")]),
            ),
        );
    }

    for (target, name, data) in seeds {
        let dir = corpus_root().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
}

// ---------------------------------------------------------------------------
// What fuzzing found, pinned.

/// Found by the `guard` target: a key that runs into an e-mail address
/// (`sk-…jane.doe@example.com`). The e-mail candidate overlapped the key
/// and was dropped whole, so after masking the key the rest of the address
/// (`doe@example.com`) still went to the provider in clear, and the output
/// guard let it through the same way. Overlapping findings now become one.
#[test]
fn a_value_overlapping_another_is_masked_whole() {
    use tollgate_core::pii::{MaskMap, PiiPolicy, PiiScanner};
    let scanner = PiiScanner::new(&PiiPolicy::default()).unwrap();
    let text = "my key is sk-hroail2janeBBBBBBBBBBBBBBBBBBBBBBBBBB.doe@example.com or call me";
    let mut map = MaskMap::new(4096);
    let masked = scanner.mask_text(text, &mut map, &mut Vec::new()).unwrap();
    let left: Vec<_> = scanner.find(&masked).into_iter().map(|f| masked[f.start..f.end].to_string()).collect();
    assert!(left.is_empty(), "left in the masked text {masked:?}: {left:?}");
    assert_eq!(map.restore_str(&masked), text);
}

/// Found by the `guard` target, not fixed: whether a run is an e-mail
/// address depends on its neighbours, and a redaction next to it changes
/// them. `guard-email-suffix-after-long-match`: `sk-…BBBB.doe@example.com`
/// with a local part over 64 bytes fails as a whole and the search goes on
/// after it, so `doe@example.com` is never tried; once the key is redacted
/// it is found. `guard-email-glued-to-a-key`: an address followed directly
/// by a key's characters is not an address (a word character after the
/// domain); once the key is redacted, it is. `guard-email-seen-by-the-window`:
/// streamed, a window cuts the over-long run and the address is redacted,
/// where the whole text lets it through. The guard target checks the
/// weaker property (a second check finds nothing but e-mail addresses; a
/// streamed answer may redact more addresses than the whole text).
#[test]
#[ignore = "known: a second check can find an e-mail address the first did not"]
fn a_redacted_text_checks_clean_even_for_addresses() {
    for name in ["guard-email-suffix-after-long-match", "guard-email-glued-to-a-key", "guard-email-seen-by-the-window"]
    {
        let data = std::fs::read(corpus_root().join("../known").join(name)).unwrap();
        props::guard_strict(&data);
    }
}

/// Found by the `translate_json` target: an Anthropic client's request
/// whose one user message has `"content": []` passed the gateway's parser
/// and translated to an OpenAI request with `"messages": []`, which OpenAI
/// refuses, so the client got the provider's 400 instead of the gateway's.
/// The translation now refuses it itself, naming the field.
#[test]
fn an_anthropic_request_translates_to_a_valid_openai_request() {
    let data = std::fs::read(corpus_root().join("../known/translate_json-empty-content")).unwrap();
    props::translate_json_strict(&data);
}
