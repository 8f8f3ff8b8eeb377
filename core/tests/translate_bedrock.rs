//! An OpenAI Chat Completions client served by an Amazon Bedrock model
//! through the Converse API: requests into Converse bodies, Converse
//! answers (whole, streamed as AWS event-stream frames, errors) back into
//! OpenAI's shape, usage for budgets, and the routing that picks Bedrock. The Bedrock payloads are under
//! `fixtures/bedrock/` (README names each one's source).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollgate_core::eventstream::{Decoder, Header, Message};
use tollgate_core::policy::Policy;
use tollgate_core::translate::openai_to_bedrock::{
    self as bedrock, client_status, error_type_name, finish_reason, StreamTranslator,
};
use tollgate_core::translate::Direction;
use tollgate_core::{ApiKind, SseEvent, Usage};

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/bedrock/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).unwrap()
}

/// A `.jsonl` stream fixture as event-stream messages, as Bedrock frames them.
fn stream_messages(name: &str) -> Vec<Message> {
    String::from_utf8(fixture_bytes(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let pair: (String, Value) = serde_json::from_str(l).unwrap();
            Message::event(&pair.0, "application/json", pair.1.to_string())
        })
        .collect()
}

fn stream_bytes(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        m.encode_into(&mut out).unwrap();
    }
    out
}

fn json_of(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap_or(Value::Null)
}

fn translate(messages: &[Message]) -> Vec<SseEvent> {
    let mut t = StreamTranslator::new("client-model");
    let mut out: Vec<SseEvent> = messages.iter().flat_map(|m| t.push_message(m)).collect();
    out.extend(t.finish());
    assert!(t.finish().is_empty(), "a finished stream adds nothing");
    out
}

/// The client's view of a stream: content, reasoning, tool calls (id, name,
/// arguments), finish reason and usage, checked to be well formed.
struct Seen {
    content: String,
    reasoning: String,
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
}

fn assemble(events: &[SseEvent]) -> Seen {
    let mut seen =
        Seen { content: String::new(), reasoning: String::new(), calls: Vec::new(), finish: None, usage: None };
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    assert_eq!(events.iter().filter(|e| e.is_done()).count(), 1);
    for e in &events[..events.len() - 1] {
        let v = json_of(e);
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        assert_eq!(v["model"], "client-model");
        if v["choices"].as_array().unwrap().is_empty() {
            seen.usage = Some(v["usage"].clone());
            continue;
        }
        assert!(seen.usage.is_none(), "the usage chunk is last");
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            seen.content.push_str(t);
        }
        if let Some(t) = delta["reasoning_content"].as_str() {
            seen.reasoning.push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == seen.calls.len() {
                seen.calls.push((
                    call["id"].as_str().unwrap().to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            seen.calls[index].2.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            assert!(seen.finish.is_none(), "one finish chunk");
            seen.finish = Some(f.to_owned());
        }
    }
    seen
}

#[test]
fn an_openai_request_becomes_a_converse_body() {
    let req = json!({
        "model": "claude-on-bedrock",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and what is the top song on WZPZ?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "file", "file": {"filename": "Q3 report (final).pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
            ]},
            {"role": "user", "content": "Please."},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                 "function": {"name": "top_song", "arguments": "{\"sign\":\"WZPZ\"}"}},
                {"id": "tooluse_2", "type": "function", "function": {"name": "now", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "content": "{\"song\": \"Elemental Hotel\", \"artist\": \"8 Storey Hike\"}"},
            {"role": "tool", "tool_call_id": "tooluse_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks."}
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "top_song", "description": "Get the most popular song played on a radio station.",
                "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]},
                "strict": true}},
            {"type": "function", "function": {"name": "now"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "top_song"}},
        "temperature": 0.5, "top_p": 0.9, "max_completion_tokens": 512, "max_tokens": 100, "stop": ["END", "STOP"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "song", "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}},
        "stream": true, "stream_options": {"include_usage": true}, "user": "u-1", "parallel_tool_calls": false,
        "reasoning_effort": "low", "n": 1, "logprobs": false, "logit_bias": {}
    });
    let out = bedrock::request(&req, "anthropic.claude-3-5-sonnet-20240620-v1:0").unwrap();
    assert_eq!(
        out,
        json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is in this picture, and what is the top song on WZPZ?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                    {"document": {"format": "pdf", "name": "Q3 report (final)", "source": {"bytes": "JVBERi0x"}}},
                    {"text": "Please."}
                ]},
                {"role": "assistant", "content": [
                    {"text": "Let me check."},
                    {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}},
                    {"toolUse": {"toolUseId": "tooluse_2", "name": "now", "input": {}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                                    "content": [{"json": {"song": "Elemental Hotel", "artist": "8 Storey Hike"}}]}},
                    {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "noon"}]}},
                    {"text": "Thanks."}
                ]}
            ],
            "system": [{"text": "Be brief."}, {"text": "Answer in English."}],
            "inferenceConfig": {"temperature": 0.5, "topP": 0.9, "maxTokens": 512, "stopSequences": ["END", "STOP"]},
            "toolConfig": {
                "tools": [
                    {"toolSpec": {"name": "top_song", "description": "Get the most popular song played on a radio station.",
                                  "inputSchema": {"json": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}}}},
                    {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}}
                ],
                "toolChoice": {"tool": {"name": "top_song"}}
            },
            "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
                "schema": "{\"properties\":{\"title\":{\"type\":\"string\"}},\"type\":\"object\"}", "name": "song"}}}}
        })
    );
}

#[test]
fn tool_choice_maps_and_none_drops_the_tools_or_is_refused() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let base = |choice: Value, messages: Value| json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": choice});
    let plain = json!([{"role": "user", "content": "hi"}]);
    for (choice, expected) in [(json!("auto"), json!({"auto": {}})), (json!("required"), json!({"any": {}}))] {
        let out = bedrock::request(&base(choice, plain.clone()), "m").unwrap();
        assert_eq!(out["toolConfig"]["toolChoice"], expected);
    }
    // No choice: Bedrock's default (auto), no toolChoice member.
    let mut req = base(Value::Null, plain.clone());
    req.as_object_mut().unwrap().remove("tool_choice");
    assert!(bedrock::request(&req, "m").unwrap()["toolConfig"].get("toolChoice").is_none());
    // none without tool history: the tools are left out.
    let out = bedrock::request(&base(json!("none"), plain), "m").unwrap();
    assert!(out.get("toolConfig").is_none(), "{out}");
    // none with tool history: Converse would need the tools, so refused.
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    ]);
    let err = bedrock::request(&base(json!("none"), history), "m").unwrap_err().to_string();
    assert!(err.contains("`tool_choice`"), "{err}");
}

#[test]
fn requests_bedrock_cannot_take_are_refused_naming_the_field() {
    let base = |extra: Value| {
        let mut req = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    };
    for (extra, field) in [
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"functions": []}), "functions"),
        (json!({"function_call": "auto"}), "function_call"),
        (json!({"web_search_options": {}}), "web_search_options"),
        (json!({"n": 2}), "n"),
        (json!({"n": 0}), "n"),
        (json!({"seed": 7}), "seed"),
        (json!({"presence_penalty": 0.5}), "presence_penalty"),
        (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
        (json!({"max_tokens": 0}), "max_completion_tokens"),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"stop": 3}), "stop"),
        (json!({"response_format": {"type": "json_object"}}), "response_format"),
        (json!({"response_format": {"type": "xml"}}), "response_format.type"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "response_format.json_schema.schema",
        ),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}),
            "messages[0].content[0].file.file_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/zip;base64,UEsD"}}]}]}),
            "messages[0].content[0].file.file_data",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
        (json!({"messages": [{"role": "function", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "critic", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": []}), "messages"),
    ] {
        let err = bedrock::request(&base(extra.clone()), "m").unwrap_err();
        assert_eq!(err.status(), 400);
        let err = err.to_string();
        assert!(err.contains(&format!("`{field}")), "{extra}: {err}");
    }
    // Only system text becomes the user turn; response_format text is nothing.
    let only_system = json!({"model": "m", "messages": [{"role": "system", "content": "Say hi"}],
        "response_format": {"type": "text"}});
    assert_eq!(
        bedrock::request(&only_system, "m").unwrap(),
        json!({"messages": [{"role": "user", "content": [{"text": "Say hi"}]}]})
    );
    // A file without a usable name gets a numbered one.
    let doc = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "...", "file_data": "data:text/csv;base64,YSxi"}},
        {"type": "file", "file": {"file_data": "data:text/markdown;base64,IyBh"}}]}]});
    let out = bedrock::request(&doc, "m").unwrap();
    assert_eq!(out["messages"][0]["content"][0]["document"]["name"], "document-1");
    assert_eq!(out["messages"][0]["content"][0]["document"]["format"], "csv");
    assert_eq!(out["messages"][0]["content"][1]["document"]["name"], "document-2");
    assert_eq!(out["messages"][0]["content"][1]["document"]["format"], "md");
}

#[test]
fn converse_answers_become_chat_completions() {
    let out = bedrock::response(&fixture("converse_text.json"), "gpt-alias").unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "gpt-alias");
    assert_eq!(out["created"], 0);
    let choice = &out["choices"][0];
    assert!(choice["message"]["content"].as_str().unwrap().starts_with("Here is a list of 3 pop songs"));
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 125, "completion_tokens": 60, "total_tokens": 185, "prompt_tokens_details": {"cached_tokens": 0}})
    );

    let out = bedrock::response(&fixture("converse_tool_use.json"), "m").unwrap();
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "To find the most popular song on WZPZ, I will use the top_song tool.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "top_song");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"sign": "WZPZ"})
    );
    // The call goes back to Bedrock as the same toolUse on the next turn.
    let back = json!({"model": "m", "messages": [
        {"role": "user", "content": "top song?"}, choice["message"].clone(),
        {"role": "tool", "tool_call_id": call["id"], "content": "Elemental Hotel"}]});
    let req = bedrock::request(&back, "m").unwrap();
    assert_eq!(
        req["messages"][1]["content"][1]["toolUse"],
        fixture("converse_tool_use.json")["output"]["message"]["content"][1]["toolUse"]
    );

    let out = bedrock::response(&fixture("converse_reasoning.json"), "m").unwrap();
    assert!(out["choices"][0]["message"]["reasoning_content"].as_str().unwrap().starts_with("The user asks"));
    assert!(out["choices"][0]["message"]["content"].as_str().unwrap().starts_with("I don't have live radio charts"));

    let out = bedrock::response(&fixture("converse_guardrail.json"), "m").unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");

    // Cache reads and writes are part of the prompt, reads reported as cached.
    let out = bedrock::response(&fixture("converse_cache_usage.json"), "m").unwrap();
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 2072, "completion_tokens": 15, "total_tokens": 2087, "prompt_tokens_details": {"cached_tokens": 2048}})
    );
    assert!(bedrock::response(&json!({"message": "x"}), "m").is_err());
}

#[test]
fn every_stop_reason_has_a_finish_reason() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ] {
        assert_eq!(finish_reason(stop), finish, "{stop}");
        let body =
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop});
        assert_eq!(bedrock::response(&body, "m").unwrap()["choices"][0]["finish_reason"], finish);
    }
}

#[test]
fn usage_is_read_from_bodies_and_metadata_events() {
    let u = bedrock::usage_from_body(&fixture_bytes("converse_cache_usage.json")).unwrap();
    assert_eq!(u, Some(Usage { input_tokens: 2072, output_tokens: 15, cached_tokens: 2048, total_tokens: 2087 }));
    let u = bedrock::usage_from_body(&fixture_bytes("converse_text.json")).unwrap();
    assert_eq!(u, Some(Usage { input_tokens: 125, output_tokens: 60, cached_tokens: 0, total_tokens: 185 }));
    assert_eq!(bedrock::usage_from_body(&fixture_bytes("error_throttling.json")).unwrap(), None);
    assert!(bedrock::usage_from_body(b"not json").is_err());

    let messages = stream_messages("converse_stream_reasoning.jsonl");
    let found: Vec<Usage> = messages.iter().filter_map(bedrock::usage_from_message).collect();
    assert_eq!(found, vec![Usage { input_tokens: 1042, output_tokens: 40, cached_tokens: 1024, total_tokens: 1082 }]);
    // The JSON (union) form of the event counts too; an exception never does.
    let wrapped = Message::new(
        vec![Header::string(":event-type", "metadata")],
        r#"{"metadata":{"usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3}}}"#,
    );
    assert_eq!(bedrock::usage_from_message(&wrapped).map(|u| u.total_tokens), Some(3));
    let exception = Message::exception("throttlingException", "application/json", r#"{"usage":{"inputTokens":1}}"#);
    assert_eq!(bedrock::usage_from_message(&exception), None);
}

#[test]
fn a_converse_stream_becomes_openai_chunks() {
    let events = translate(&stream_messages("converse_stream_text.jsonl"));
    let first = json_of(&events[0]);
    assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    let seen = assemble(&events);
    assert_eq!(seen.content, "Here is a song by Oasis.");
    assert_eq!(seen.finish.as_deref(), Some("stop"));
    assert_eq!(
        seen.usage,
        Some(
            json!({"prompt_tokens": 22, "completion_tokens": 9, "total_tokens": 31, "prompt_tokens_details": {"cached_tokens": 0}})
        )
    );
}

#[test]
fn a_streamed_tool_call_is_one_call_with_its_arguments_in_pieces() {
    let events = translate(&stream_messages("converse_stream_tool.jsonl"));
    let seen = assemble(&events);
    assert_eq!(seen.content, "I'll look up the top song on WZPZ.");
    assert_eq!(
        seen.calls,
        vec![("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".to_owned(), "top_song".to_owned(), "{\"sign\": \"WZPZ\"}".to_owned())]
    );
    assert_eq!(seen.finish.as_deref(), Some("tool_calls"));
    assert_eq!(seen.usage.unwrap()["total_tokens"], 454);
    // The first tool chunk carries id, type and name at OpenAI index 0 (block 1).
    let start = events.iter().map(json_of).find(|v| v["choices"][0]["delta"]["tool_calls"].is_array()).unwrap();
    assert_eq!(
        start["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function", "function": {"name": "top_song", "arguments": ""}})
    );
}

#[test]
fn streamed_reasoning_and_cache_usage() {
    let seen = assemble(&translate(&stream_messages("converse_stream_reasoning.jsonl")));
    assert_eq!(seen.reasoning, "The user wants one word.");
    assert_eq!(seen.content, "Hello.");
    assert_eq!(seen.finish.as_deref(), Some("length"));
    assert_eq!(
        seen.usage,
        Some(
            json!({"prompt_tokens": 1042, "completion_tokens": 40, "total_tokens": 1082, "prompt_tokens_details": {"cached_tokens": 1024}})
        )
    );
}

#[test]
fn the_byte_level_translator_takes_frames_in_any_chunks() {
    let messages = stream_messages("converse_stream_tool.jsonl");
    let bytes = stream_bytes(&messages);
    let whole = translate(&messages);
    for size in [1, 7, 64, 1000, bytes.len()] {
        let mut t = StreamTranslator::new("client-model");
        let mut out = Vec::new();
        for chunk in bytes.chunks(size) {
            out.extend(t.push_bytes(chunk).unwrap());
        }
        out.extend(t.finish());
        assert_eq!(out, whole, "chunks of {size}");
        assert_eq!(t.usage().map(|u| u.total_tokens), Some(454));
    }
    // The real messageStart frame starts a stream as well.
    let mut t = StreamTranslator::new("client-model");
    let out = t.push_bytes(&fixture_bytes("eventstream/converse_stream_message_start.bin")).unwrap();
    assert_eq!(json_of(&out[0])["choices"][0]["delta"]["role"], "assistant");
}

#[test]
fn an_exception_frame_is_one_error_chunk_and_done() {
    let mut messages = stream_messages("converse_stream_text.jsonl");
    messages.truncate(2);
    messages.push(Message::exception(
        "throttlingException",
        "application/json",
        fixture_bytes("error_throttling.json"),
    ));
    let bytes = stream_bytes(&messages);
    let mut t = StreamTranslator::new("client-model");
    let mut out = t.push_bytes(&bytes).unwrap();
    out.extend(t.finish());
    assert_eq!(out.len(), 4, "{out:?}"); // role, text, error, [DONE]
    let err = json_of(&out[2]);
    assert_eq!(
        err,
        json!({"error": {"message": "Too many requests, please wait before trying again.", "type": "rate_limit_error",
                         "param": null, "code": "ThrottlingException"}})
    );
    assert!(out[3].is_done());
    // Nothing after it counts.
    assert!(t.push_message(&stream_messages("converse_stream_text.jsonl")[1]).is_empty());

    // An event-stream error message (`:message-type: error`) too.
    let error = Message::new(
        vec![
            Header::string(":message-type", "error"),
            Header::string(":error-code", "InternalFailure"),
            Header::string(":error-message", "We encountered an internal error."),
        ],
        Vec::new(),
    );
    let out = translate(&[error]);
    assert_eq!(out.len(), 2);
    assert_eq!(json_of(&out[0])["error"]["message"], "We encountered an internal error.");
    assert_eq!(json_of(&out[0])["error"]["code"], "InternalFailure");
    assert_eq!(json_of(&out[0])["error"]["type"], "server_error");
}

#[test]
fn a_bad_or_truncated_frame_ends_the_stream_with_an_error_chunk() {
    let messages = stream_messages("converse_stream_text.jsonl");
    let mut bytes = stream_bytes(&messages);
    // Flip a byte inside the third frame's payload.
    let third = stream_bytes(&messages[..2]).len() + 40;
    bytes[third] ^= 0x20;
    let mut t = StreamTranslator::new("client-model");
    let err = t.push_bytes(&bytes).unwrap_err();
    assert!(matches!(err, tollgate_core::eventstream::Error::MessageChecksum { .. }), "{err:?}");
    // More bytes after the failure change nothing.
    assert_eq!(t.push_bytes(&bytes), Err(err));
    let out = t.finish();
    // role + first text (decoded before the bad frame), error, [DONE].
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(json_of(&out[1])["choices"][0]["delta"]["content"], "Here is");
    let e = json_of(&out[2]);
    assert_eq!(e["error"]["type"], "server_error");
    assert_eq!(e["error"]["code"], "upstream_invalid_stream");
    assert!(out[3].is_done());
    assert!(t.push_bytes(b"more").is_err());
    assert!(t.finish().is_empty());

    // Cut inside a frame: the error comes at finish.
    let bytes = stream_bytes(&messages);
    let mut t = StreamTranslator::new("client-model");
    let mut out = t.push_bytes(&bytes[..bytes.len() - 10]).unwrap();
    out.extend(t.finish());
    let seen_error = out.iter().map(json_of).find(|v| v.get("error").is_some()).unwrap();
    assert_eq!(seen_error["error"]["code"], "upstream_stream_truncated");
    assert!(out.last().unwrap().is_done());

    // A frame over the decoder's bound.
    let mut t = StreamTranslator::with_decoder("client-model", Decoder::with_max_message_bytes(64));
    assert!(t.push_bytes(&bytes).is_err());
    let out = t.finish();
    assert!(out.iter().map(json_of).any(|v| v["error"]["code"] == "upstream_event_too_large"));
}

#[test]
fn a_stream_without_metadata_is_closed_by_finish() {
    let mut messages = stream_messages("converse_stream_text.jsonl");
    messages.truncate(3);
    let seen = assemble(&translate(&messages));
    assert_eq!(seen.content, "Here is a song by");
    assert_eq!(seen.finish.as_deref(), Some("stop"));
    assert_eq!(seen.usage.unwrap()["total_tokens"], 0);
    // An empty stream still gives the client a whole (empty) answer.
    let seen = assemble(&translate(&[]));
    assert_eq!(seen.content, "");
    assert_eq!(seen.finish.as_deref(), Some("stop"));
}

#[test]
fn the_json_union_form_of_events_is_understood() {
    let mut t = StreamTranslator::new("client-model");
    let mut out = Vec::new();
    for line in [
        "{\"messageStart\":{\"role\":\"assistant\"}}",
        "{\"contentBlockDelta\":{\"delta\":{\"text\":\"Hello\"},\"contentBlockIndex\":0}}",
    ] {
        let m = Message::new(vec![Header::string(":message-type", "event")], line);
        out.extend(t.push_message(&m));
    }
    out.extend(t.push_event("messageStop", &json!({"stopReason": "end_turn"})));
    out.extend(t.push_event("metadata", &json!({"metadata": {"usage": {"inputTokens": 10, "outputTokens": 5}}})));
    out.extend(t.finish());
    let seen = assemble(&out);
    assert_eq!(seen.content, "Hello");
    assert_eq!(seen.usage.unwrap()["total_tokens"], 15);
}

#[test]
fn bedrock_errors_take_the_openai_shape() {
    for (file, header, status, client, kind) in [
        (
            "error_throttling.json",
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            429,
            429,
            "rate_limit_error",
        ),
        ("error_validation.json", Some("ValidationException"), 400, 400, "invalid_request_error"),
        ("error_access_denied.json", Some("AccessDeniedException"), 403, 403, "permission_error"),
        ("error_model_timeout.json", Some("ModelTimeoutException"), 408, 504, "server_error"),
        ("error_validation.json", None, 400, 400, "invalid_request_error"),
    ] {
        let body = fixture(file);
        let out = bedrock::error(&body, status, header);
        assert_eq!(out["error"]["message"], body["message"], "{file}");
        assert_eq!(out["error"]["type"], kind, "{file}");
        assert_eq!(client_status(header, status), client, "{file}");
        let code = header.map(error_type_name).unwrap_or_else(|| "upstream_error".to_owned());
        assert_eq!(out["error"]["code"], code.as_str());
    }
    for (raw, status) in [
        ("ServiceUnavailableException", 503),
        ("serviceUnavailableException", 503),
        ("modelStreamErrorException", 502),
        ("InternalServerException", 500),
        ("ModelNotReadyException", 429),
        ("ResourceNotFoundException", 404),
        ("com.amazon.coral.service#UnknownThing", 418),
    ] {
        assert_eq!(client_status(Some(raw), 418), status, "{raw}");
    }
    assert_eq!(error_type_name("com.amazon.bedrock#ValidationException"), "ValidationException");
    // The body's `__type` names the error when no header does; `Message` is read too.
    let out = bedrock::error(
        &json!({"__type": "com.amazon.coral.service#ThrottlingException", "Message": "Rate exceeded"}),
        400,
        None,
    );
    assert_eq!(out["error"]["code"], "ThrottlingException");
    assert_eq!(out["error"]["type"], "rate_limit_error");
    assert_eq!(out["error"]["message"], "Rate exceeded");
}

fn yaml(s: &str) -> Policy {
    Policy::deserialize(serde_yaml_ng::Deserializer::from_str(s)).unwrap()
}

#[test]
fn bedrock_models_route_to_a_bedrock_provider_with_escaped_model_paths() {
    let policy = yaml(
        "providers:\n  aws: {kind: bedrock, baseUrl: 'https://bedrock-runtime.us-east-1.amazonaws.com', region: us-east-1}\n  o: {kind: openai, baseUrl: 'https://api.openai.com'}\n",
    );
    for model in [
        "amazon.nova-pro-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:1:inference-profile/x",
    ] {
        let r = policy.route(ApiKind::OpenAiChat, model).unwrap();
        assert_eq!((r.provider, r.api), ("aws", ApiKind::BedrockConverse), "{model}");
        assert_eq!(policy.translation(ApiKind::OpenAiChat, r.provider, r.api), Some(Direction::OpenAiToBedrock));
        // An Anthropic client reaches Claude through InvokeModel, anything else through Converse.
        let r = policy.route(ApiKind::AnthropicMessages, model).unwrap();
        let expected = if model.contains("anthropic.claude") {
            (ApiKind::AnthropicMessages, Direction::AnthropicOnBedrock)
        } else {
            (ApiKind::BedrockConverse, Direction::AnthropicToBedrock)
        };
        assert_eq!(
            (r.api, policy.translation(ApiKind::AnthropicMessages, r.provider, r.api)),
            (expected.0, Some(expected.1))
        );
    }
    // A Claude model by its Anthropic name is not a Bedrock id.
    assert!(
        policy.route(ApiKind::OpenAiChat, "claude-haiku-4-5").is_err()
            || policy.route(ApiKind::OpenAiChat, "claude-haiku-4-5").unwrap().provider != "aws"
    );
    let aws = &policy.providers["aws"];
    assert_eq!(
        aws.request_path(ApiKind::BedrockConverse, "arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0", true),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0/converse-stream"
    );
    assert_eq!(
        aws.request_path(ApiKind::BedrockConverse, "amazon.nova-pro-v1:0", false),
        "/model/amazon.nova-pro-v1%3A0/converse"
    );
    // The region is required, and Bedrock's fields belong to Bedrock.
    for (bad, field) in [
        ("providers:\n  aws: {kind: bedrock, baseUrl: 'https://x'}\n", "providers.aws.region"),
        ("providers:\n  o: {kind: openai, baseUrl: 'https://x', region: us-east-1}\n", "providers.o"),
    ] {
        let err = Policy::deserialize(serde_yaml_ng::Deserializer::from_str(bad)).unwrap_err().to_string();
        assert!(err.contains(field), "{bad}: {err}");
    }
}
