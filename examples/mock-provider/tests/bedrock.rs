//! Amazon Bedrock Runtime (Converse, ConverseStream, InvokeModel and
//! InvokeModelWithResponseStream for Anthropic models) against the shapes of
//! `core/tests/fixtures/bedrock-mock/`, the streams decoded with the
//! gateway's own event-stream codec (both CRCs checked).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{assert_same_key_order, assert_same_keys, bedrock_fixture, client, reply, tokens, Server};
use serde_json::{json, Value};
use tollgate_core::eventstream::{Decoder, Message};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const NAMESPACE: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";

/// A model id as AWS SDKs put it in a path (`:` and `/` percent-encoded).
fn encode(model: &str) -> String {
    model.replace(':', "%3A").replace('/', "%2F")
}

fn path(model: &str, op: &str) -> String {
    format!("/model/{}/{op}", encode(model))
}

/// `x-amz-date` now and a SigV4 `Authorization` of the right form for it
/// (the mock checks the form and the scope, not the signature).
fn sigv4(region: &str, service: &str) -> [(String, String); 2] {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let amz = amz_date(secs);
    let day = &amz[..8];
    [
        ("x-amz-date".to_owned(), amz.clone()),
        (
            "authorization".to_owned(),
            format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{day}/{region}/{service}/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={}", "a1".repeat(32)),
        ),
    ]
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time.
fn amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

async fn post(server: &Server, path: &str, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(server.url(path)).json(body);
    for (k, v) in sigv4("us-east-1", "bedrock") {
        req = req.header(k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn hello(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
}

fn tools() -> Value {
    json!({"tools": [{"toolSpec": {"name": "top_song", "description": "The most popular song on a station.",
        "inputSchema": {"json": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}}}}]})
}

/// The frames of an event-stream body (both CRCs checked, nothing left over).
fn frames(body: &[u8]) -> Vec<Message> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    // Fed in small pieces, as a network would.
    for piece in body.chunks(7) {
        decoder.feed(piece, &mut out).unwrap();
    }
    decoder.finish().unwrap();
    out
}

/// `(event type, payload)` of each event frame, checking Bedrock's headers
/// and the `p` padding.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    frames(body)
        .into_iter()
        .map(|m| {
            let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(names, [":event-type", ":content-type", ":message-type"], "{m:?}");
            assert_eq!(m.message_type(), Some("event"));
            assert_eq!(m.header_str(":content-type"), Some("application/json"));
            let payload: Value = serde_json::from_slice(&m.payload).unwrap();
            let p = payload["p"].as_str().unwrap_or_else(|| panic!("no p padding: {payload}"));
            assert!("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".starts_with(p) && p.len() >= 16);
            let text = String::from_utf8(m.payload.clone()).unwrap();
            let keys: Vec<String> = common::key_orders(&text)[""].clone();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "keys sorted as Bedrock writes them: {text}");
            (m.event_type().unwrap().to_owned(), payload)
        })
        .collect()
}

/// The `[event, payload]` lines of a stream fixture.
fn fixture_events(name: &str) -> Vec<(String, Value)> {
    bedrock_fixture(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v[0].as_str().unwrap().to_owned(), v[1].clone())
        })
        .collect()
}

/// Event types with runs of `contentBlockDelta` collapsed, to compare
/// sequences of different lengths.
fn shape(events: &[(String, Value)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, _) in events {
        if out.last() != Some(name) || name != "contentBlockDelta" {
            out.push(name.clone());
        }
    }
    out
}

/// Payload key paths per event type must match the fixture's.
fn assert_event_keys(mock: &[(String, Value)], fixture: &[(String, Value)]) {
    for (name, payload) in fixture {
        // `text`, `toolUse`, `reasoningContent.text`, `reasoningContent.signature`.
        let delta_kind = |p: &Value| {
            p["delta"].as_object().and_then(|d| d.iter().next()).map(|(k, v)| match v.as_object() {
                Some(inner) if k == "reasoningContent" => {
                    format!("{k}.{}", inner.keys().next().cloned().unwrap_or_default())
                }
                _ => k.clone(),
            })
        };
        let same = mock.iter().find(|(n, p)| n == name && delta_kind(p) == delta_kind(payload));
        let (_, ours) = same.unwrap_or_else(|| panic!("no {name} event like {payload}"));
        let mut ours = ours.clone();
        let mut theirs = payload.clone();
        // The mock does not use the fixtures' cache counters.
        for v in [&mut ours, &mut theirs] {
            if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
                u.retain(|k, _| !k.starts_with("cache"));
            }
        }
        assert_same_keys(name, &ours, &theirs);
    }
}

fn assert_error(resp_status: u16, headers: &reqwest::header::HeaderMap, body: &Value, status: u16, kind: &str) {
    assert_eq!(resp_status, status, "{body}");
    assert_eq!(headers["x-amzn-errortype"].to_str().unwrap(), format!("{kind}{NAMESPACE}"));
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("x-amzn-requestid"));
    let message = body.get("message").or_else(|| body.get("Message"));
    assert!(message.and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "{body}");
}

async fn error_of(resp: reqwest::Response, status: u16, kind: &str) -> String {
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_error(code, &headers, &body, status, kind);
    body.get("message").or_else(|| body.get("Message")).and_then(Value::as_str).unwrap().to_owned()
}

#[tokio::test]
async fn converse_matches_the_recorded_shape() {
    let server = Server::default().await;
    let mut body = hello("Hello there");
    body["system"] = json!([{"text": "Be brief."}]);
    body["inferenceConfig"] = json!({"maxTokens": 512, "temperature": 0.5, "topP": 0.9});
    let resp = post(&server, &path(MODEL, "converse"), &body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-amzn-requestid"].to_str().unwrap().len(), 36);
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let expected = reply("Hello there");
    assert_eq!(v["output"]["message"], json!({"role": "assistant", "content": [{"text": expected}]}));
    assert_eq!(v["stopReason"], "end_turn");
    let input = tokens("Hello there") + tokens("Be brief.");
    assert_eq!(
        v["usage"],
        json!({"inputTokens": input, "outputTokens": tokens(&expected), "totalTokens": input + tokens(&expected)})
    );
    assert!(v["metrics"]["latencyMs"].as_u64().unwrap() >= 1);
    let fixture = bedrock_fixture("converse_text.json");
    assert_same_keys("converse", &v, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("converse", &text, &fixture);

    // Limits and stop sequences.
    let mut capped = hello("Please answer at some length");
    capped["inferenceConfig"] = json!({"maxTokens": 2});
    let v: Value = post(&server, &path(MODEL, "converse"), &capped, &[]).await.json().await.unwrap();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["output"]["message"]["content"][0]["text"], "Mock rep");
    let mut stopped = hello("stop here please");
    stopped["inferenceConfig"] = json!({"stopSequences": ["here"]});
    let v: Value = post(&server, &path(MODEL, "converse"), &stopped, &[]).await.json().await.unwrap();
    assert_eq!(v["stopReason"], "stop_sequence");
    assert_eq!(v["output"]["message"]["content"][0]["text"], "Mock reply to: stop ");

    // Images, documents, cache points and a multi-turn conversation are read.
    let rich = json!({"messages": [
        {"role": "user", "content": [{"text": "First"}]},
        {"role": "assistant", "content": [{"text": "Answer"}]},
        {"role": "user", "content": [
            {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
            {"document": {"format": "txt", "name": "notes", "source": {"bytes": "aGVsbG8="}}},
            {"text": "Describe these"},
            {"cachePoint": {"type": "default"}}
        ]}
    ]});
    let v: Value =
        post(&server, &path(MODEL, "converse"), &rich, &[("x-mock-append", "[extra]")]).await.json().await.unwrap();
    assert_eq!(v["output"]["message"]["content"][0]["text"], format!("{} [extra]", reply("Describe these")));
    assert_eq!(v["usage"]["inputTokens"], tokens("First") + tokens("Answer") + tokens("Describe these"));
}

#[tokio::test]
async fn converse_calls_tools_by_the_mock_rules() {
    let server = Server::default().await;
    let mut body = hello("Use the tool for WZPZ");
    body["toolConfig"] = tools();
    let resp = post(&server, &path(MODEL, "converse"), &body, &[]).await;
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stopReason"], "tool_use");
    let call = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(call["name"], "top_song");
    assert_eq!(call["input"], json!({"query": "Use the tool for WZPZ"}));
    let id = call["toolUseId"].as_str().unwrap();
    assert!(id.starts_with("tooluse_") && id.len() == 30, "{id}");
    // The arguments differ (the mock's are `{"query": …}`).
    let fixture = bedrock_fixture("converse_tool_use.json").replace(r#""sign": "WZPZ""#, r#""query": "x""#);
    assert_same_keys("tool use", &v, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("tool use", &text, &fixture);

    // No mention of a tool: text, unless the choice forces a call.
    let mut plain = hello("What is on WZPZ?");
    plain["toolConfig"] = tools();
    let v: Value = post(&server, &path(MODEL, "converse"), &plain, &[]).await.json().await.unwrap();
    assert_eq!(v["stopReason"], "end_turn");
    for choice in [json!({"any": {}}), json!({"tool": {"name": "top_song"}})] {
        plain["toolConfig"]["toolChoice"] = choice.clone();
        let v: Value = post(&server, &path(MODEL, "converse"), &plain, &[]).await.json().await.unwrap();
        assert_eq!(v["stopReason"], "tool_use", "{choice}");
    }

    // The tool's result answered: text again, the call and result counted.
    let answered = json!({
        "messages": [
            {"role": "user", "content": [{"text": "Use the tool for WZPZ"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": id, "name": "top_song", "input": {"sign": "WZPZ"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"json": {"song": "Elemental Hotel"}}], "status": "success"}}]}
        ],
        "toolConfig": tools()
    });
    let v: Value = post(&server, &path(MODEL, "converse"), &answered, &[]).await.json().await.unwrap();
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(v["output"]["message"]["content"][0]["text"], reply("Use the tool for WZPZ"));
    let input =
        tokens("Use the tool for WZPZ") + tokens(r#"{"sign":"WZPZ"}"#) + tokens(r#"{"song":"Elemental Hotel"}"#);
    assert_eq!(v["usage"]["inputTokens"], input);
}

#[tokio::test]
async fn converse_reasons_when_thinking_is_on() {
    let server = Server::default().await;
    let mut body = hello("Think first");
    body["additionalModelRequestFields"] = json!({"thinking": {"type": "enabled", "budget_tokens": 1024}});
    let text = post(&server, &path(MODEL, "converse"), &body, &[]).await.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let content = &v["output"]["message"]["content"];
    assert_eq!(content[0]["reasoningContent"]["reasoningText"]["text"], "Thinking about: Think first");
    assert!(!content[0]["reasoningContent"]["reasoningText"]["signature"].as_str().unwrap().is_empty());
    assert_eq!(content[1]["text"], reply("Think first"));
    assert_eq!(v["usage"]["outputTokens"], tokens("Thinking about: Think first") + tokens(&reply("Think first")));
    let fixture = bedrock_fixture("converse_reasoning.json");
    assert_same_keys("reasoning", &v, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("reasoning", &text, &fixture);

    let resp = post(&server, &path(MODEL, "converse-stream"), &body, &[]).await;
    let ev = events(&resp.bytes().await.unwrap());
    let fixture = fixture_events("converse_stream_reasoning.jsonl");
    assert_eq!(shape(&ev)[..3], ["messageStart", "contentBlockDelta", "contentBlockStop"]);
    assert_eq!(shape(&ev)[3..], shape(&fixture)[3..]);
    assert_event_keys(&ev, &fixture);
    let texts: String = ev.iter().filter_map(|(_, p)| p["delta"]["text"].as_str()).collect();
    assert_eq!(texts, reply("Think first"));
}

#[tokio::test]
async fn converse_stream_frames_decode_with_valid_checksums() {
    let server = Server::default().await;
    let resp = post(&server, &path(MODEL, "converse-stream"), &hello("Stream me a reply"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/vnd.amazon.eventstream");
    assert!(resp.headers().contains_key("x-amzn-requestid"));
    let ev = events(&resp.bytes().await.unwrap());
    let fixture = fixture_events("converse_stream_text.jsonl");
    assert_eq!(shape(&ev), shape(&fixture));
    assert_event_keys(&ev, &fixture);
    assert_eq!(ev[0].1["role"], "assistant");
    let deltas: Vec<&str> = ev.iter().filter_map(|(_, p)| p["delta"]["text"].as_str()).collect();
    assert_eq!(deltas, ["Mock", " reply", " to:", " Stream", " me", " a", " reply"]);
    let stop = ev.iter().find(|(n, _)| n == "messageStop").unwrap();
    assert_eq!(stop.1["stopReason"], "end_turn");
    let meta = &ev.last().unwrap().1;
    let out = tokens(&reply("Stream me a reply"));
    let input = tokens("Stream me a reply");
    assert_eq!(meta["usage"], json!({"inputTokens": input, "outputTokens": out, "totalTokens": input + out}));

    // A tool call streams its input in pieces after a contentBlockStart.
    let mut body = hello("Call the tool please");
    body["toolConfig"] = tools();
    let ev = events(&post(&server, &path(MODEL, "converse-stream"), &body, &[]).await.bytes().await.unwrap());
    let fixture = fixture_events("converse_stream_tool.jsonl");
    assert_eq!(shape(&ev), shape(&fixture));
    assert_event_keys(&ev, &fixture);
    let input: String = ev.iter().filter_map(|(_, p)| p["delta"]["toolUse"]["input"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), json!({"query": "Call the tool please"}));
    assert!(ev.iter().filter(|(_, p)| p["delta"]["toolUse"].is_object()).count() >= 2);
    assert_eq!(ev.iter().find(|(n, _)| n == "messageStop").unwrap().1["stopReason"], "tool_use");
}

#[tokio::test]
async fn invoke_model_speaks_anthropic_messages() {
    let server = Server::default().await;
    let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "Hello Claude"}]});
    let resp = post(&server, &path(ARN, "invoke"), &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["content"][0]["text"], reply("Hello Claude"));
    assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    assert!(v["id"].as_str().unwrap().starts_with("msg_bdrk_01"));
    let input = tokens("Hello Claude") + tokens("Be brief.");
    assert_eq!(v["usage"]["input_tokens"], input);
    assert_eq!(h["x-amzn-bedrock-input-token-count"].to_str().unwrap(), input.to_string());
    assert_eq!(h["x-amzn-bedrock-output-token-count"].to_str().unwrap(), tokens(&reply("Hello Claude")).to_string());
    assert!(h.contains_key("x-amzn-bedrock-invocation-latency"));
    let fixture: Value = serde_json::from_str(&bedrock_fixture("invoke_claude.json")).unwrap();
    let mut ours = v.clone();
    ours["usage"].as_object_mut().unwrap().remove("service_tier");
    assert_same_keys("invoke", &ours, &fixture);

    // The recording shows the decoded model id and the SigV4 scope.
    let recorded: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    let last = recorded.last().unwrap();
    assert!(last["path"].as_str().unwrap().contains("%2Fus.anthropic."), "{last}");
    assert_eq!(last["bedrock"]["modelId"], ARN);
    assert_eq!(last["bedrock"]["operation"], "InvokeModel");
    let auth = &last["bedrock"]["auth"];
    assert_eq!(
        (auth["scheme"].as_str(), auth["region"].as_str(), auth["service"].as_str()),
        (Some("sigv4"), Some("us-east-1"), Some("bedrock"))
    );
    assert_eq!(auth["signedHeaders"], json!(["content-type", "host", "x-amz-date"]));

    // Streamed: chunk events carrying base64 Anthropic events, metrics last.
    let resp = post(&server, &path(MODEL, "invoke-with-response-stream"), &body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/vnd.amazon.eventstream");
    assert_eq!(resp.headers()["x-amzn-bedrock-content-type"], "application/json");
    let ev = events(&resp.bytes().await.unwrap());
    assert!(ev.iter().all(|(n, _)| n == "chunk"));
    let inner: Vec<Value> = ev
        .iter()
        .map(|(_, p)| {
            serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD.decode(p["bytes"].as_str().unwrap()).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let types: Vec<&str> = inner.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let fixture: Vec<Value> =
        bedrock_fixture("invoke_stream_claude.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut expected: Vec<&str> = fixture.iter().map(|e| e["type"].as_str().unwrap()).collect();
    expected.dedup();
    let mut got = types.clone();
    got.dedup();
    assert_eq!(got, expected, "no ping on Bedrock");
    let text: String = inner.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, reply("Hello Claude"));
    assert_eq!(inner[0]["message"]["model"], "claude-3-5-sonnet-20240620");
    let metrics = &inner.last().unwrap()["amazon-bedrock-invocationMetrics"];
    assert_same_keys("invocation metrics", metrics, &fixture.last().unwrap()["amazon-bedrock-invocationMetrics"]);
    assert_eq!(metrics["inputTokenCount"], input);
    assert_eq!(metrics["outputTokenCount"], tokens(&reply("Hello Claude")));

    // A tool call through InvokeModel.
    let tool_body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256,
        "tools": [{"name": "top_song", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Use the tool"}]});
    let v: Value = post(&server, &path(MODEL, "invoke"), &tool_body, &[]).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"query": "Use the tool"}));
}

#[tokio::test]
async fn bad_requests_get_validation_exceptions() {
    let server = Server::default().await;
    let converse = path(MODEL, "converse");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"messages": []}), "A conversation must start with a user message"),
        (json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}), "must start with a user message"),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]}),
            "must alternate between user and assistant",
        ),
        (
            json!({"messages": [{"role": "bot", "content": [{"text": "a"}]}]}),
            "Member must satisfy enum value set: [user, assistant]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}),
            "The text field in the ContentBlock object at messages.0.content.0 is blank",
        ),
        (json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}), "extraneous key [type]"),
        (json!({"messages": [{"role": "user", "content": []}]}), "at 'messages.0.member.content'"),
        (
            json!({"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]}]}),
            "Member must satisfy enum value set: [png, jpeg, gif, webp]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"maxTokens": 0}}),
            "Value '0' at 'inferenceConfig.maxTokens'",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"temperature": 1.5}}),
            "less than or equal to 1",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "system": [{"text": ""}]}),
            "SystemContentBlock object at system.0 is blank",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "toolConfig": {"tools": []}}),
            "'toolConfig.tools'",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "toolConfig": {"tools": [{"toolSpec": {"name": "bad name", "inputSchema": {"json": {}}}}]}}),
            "regular expression pattern",
        ),
        (
            json!({"messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
            {"role": "user", "content": [{"text": "no result"}]}
          ], "toolConfig": tools()}),
            "Expected toolResult blocks at messages.2.content for the following Ids: t1",
        ),
        (
            json!({"messages": [
              {"role": "user", "content": [{"text": "hi"}]},
              {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
              {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "ok"}]}}]}
            ]}),
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ),
    ];
    for (body, expected) in cases {
        let message = error_of(post(&server, &converse, &body, &[]).await, 400, "ValidationException").await;
        assert!(message.contains(expected), "{body}: {message}");
    }
    let resp = client()
        .post(server.url(&converse))
        .headers(reqwest::header::HeaderMap::new())
        .body("{not json")
        .header("authorization", "Bearer k")
        .send()
        .await
        .unwrap();
    error_of(resp, 400, "SerializationException").await;

    let invoke = path(MODEL, "invoke");
    let cases = [
        (
            json!({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            "required key [anthropic_version] not found",
        ),
        (
            json!({"anthropic_version": "2023-06-01", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            "not a valid enum value",
        ),
        (
            json!({"anthropic_version": "bedrock-2023-05-31", "model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            "extraneous key [model]",
        ),
        (
            json!({"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens: Field required",
        ),
    ];
    for (body, expected) in cases {
        let message = error_of(post(&server, &invoke, &body, &[]).await, 400, "ValidationException").await;
        assert!(message.contains(expected), "{body}: {message}");
    }
    // An unknown operation.
    let resp = post(&server, &path(MODEL, "generate"), &hello("x"), &[]).await;
    error_of(resp, 404, "UnknownOperationException").await;
}

#[tokio::test]
async fn authentication_is_checked_and_recorded() {
    let server = Server::default().await;
    let url = server.url(&path(MODEL, "converse"));
    let send = |headers: Vec<(String, String)>| {
        let mut req = client().post(&url).json(&hello("hi"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let resp = send(vec![]).await.unwrap();
    let message = error_of(resp, 403, "MissingAuthenticationTokenException").await;
    assert_eq!(message, "Missing Authentication Token");

    let resp = send(vec![("authorization".into(), "Bearer ABSKQmVkcm9ja0FQSUtleS1test".into())]).await.unwrap();
    assert_eq!(resp.status(), 200);

    let resp = send(sigv4("eu-west-3", "s3").to_vec()).await.unwrap();
    let message = error_of(resp, 403, "InvalidSignatureException").await;
    assert!(message.contains("Credential should be scoped to correct service: 'bedrock'"), "{message}");

    let [date, auth] = sigv4("us-east-1", "bedrock");
    let resp = send(vec![auth.clone()]).await.unwrap();
    let message = error_of(resp, 403, "IncompleteSignatureException").await;
    assert!(message.contains("X-Amz-Date"), "{message}");

    let stale = amz_date(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 3600);
    let stale_auth = auth.1.replace(&date.1[..8], &stale[..8]);
    let resp = send(vec![("x-amz-date".into(), stale), ("authorization".into(), stale_auth)]).await.unwrap();
    let message = error_of(resp, 403, "InvalidSignatureException").await;
    assert!(message.contains("Signature expired"), "{message}");

    let unsigned_header = auth.1.replace("content-type;host;x-amz-date", "host;x-amz-date;x-amz-security-token");
    let resp = send(vec![date.clone(), ("authorization".into(), unsigned_header)]).await.unwrap();
    error_of(resp, 403, "InvalidSignatureException").await;

    let resp = send(vec![("authorization".into(), "Basic dXNlcjpwYXNz".into())]).await.unwrap();
    error_of(resp, 403, "IncompleteSignatureException").await;

    let ok = send(sigv4("ap-southeast-2", "bedrock").to_vec()).await.unwrap();
    assert_eq!(ok.status(), 200);
    let recorded: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    let schemes: Vec<&str> = recorded.iter().map(|r| r["bedrock"]["auth"]["scheme"].as_str().unwrap()).collect();
    assert_eq!(schemes, ["none", "bearer", "sigv4", "sigv4", "sigv4", "sigv4", "other", "sigv4"]);
    assert_eq!(recorded.last().unwrap()["bedrock"]["auth"]["region"], "ap-southeast-2");
    assert_eq!(recorded.last().unwrap()["bedrock"]["auth"]["accessKeyId"], "AKIDEXAMPLE");
}

#[tokio::test]
async fn control_headers_give_bedrock_errors() {
    let server = Server::default().await;
    let converse = path(MODEL, "converse");
    for (status, kind) in [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ] {
        let code = status.to_string();
        let resp = post(&server, &converse, &hello("x"), &[("x-mock-status", &code)]).await;
        error_of(resp, status, kind).await;
    }
    let fixture: Value = serde_json::from_str(&bedrock_fixture("errors.json")).unwrap();
    let resp = post(&server, &converse, &hello("x"), &[("x-mock-status", "403")]).await;
    let body: Value = resp.json().await.unwrap();
    assert_same_keys("access denied", &body, &fixture["AccessDeniedException"]["body"]);

    // x-mock-fail-model names the decoded model id (an ARN here).
    let rule = format!("{ARN}=429,other=500");
    let resp = post(&server, &path(ARN, "converse-stream"), &hello("x"), &[("x-mock-fail-model", &rule)]).await;
    error_of(resp, 429, "ThrottlingException").await;
    let resp = post(&server, &converse, &hello("x"), &[("x-mock-fail-model", &rule)]).await;
    assert_eq!(resp.status(), 200);

    // Mid-stream exceptions: part of the answer, then an exception frame.
    for (op, code, member) in [
        ("converse-stream", "429", "throttlingException"),
        ("converse-stream", "424", "modelStreamErrorException"),
        ("invoke-with-response-stream", "408", "modelTimeoutException"),
        ("invoke-with-response-stream", "500", "internalServerException"),
    ] {
        let body = if op == "converse-stream" {
            hello("A long enough answer to cut")
        } else {
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": [{"role": "user", "content": "A long enough answer to cut"}]})
        };
        let resp = post(&server, &path(MODEL, op), &body, &[("x-mock-bedrock-stream-error", code)]).await;
        assert_eq!(resp.status(), 200);
        let all = frames(&resp.bytes().await.unwrap());
        let (last, before) = all.split_last().unwrap();
        assert_eq!(last.message_type(), Some("exception"));
        assert_eq!(last.exception_type(), Some(member));
        let names: Vec<&str> = last.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, [":exception-type", ":content-type", ":message-type"]);
        let payload: Value = serde_json::from_slice(&last.payload).unwrap();
        assert!(payload["message"].as_str().unwrap().contains("simulated"), "{payload}");
        assert!(before.len() >= 2 && before.iter().all(|m| m.message_type() == Some("event")), "{op}");
    }

    // Chunk delay and latency show in the metrics; reset drops the connection.
    let started = std::time::Instant::now();
    let resp = post(
        &server,
        &path(MODEL, "converse-stream"),
        &hello("a b c"),
        &[("x-mock-chunk-delay-ms", "20"), ("x-mock-latency-ms", "30")],
    )
    .await;
    let ev = events(&resp.bytes().await.unwrap());
    assert!(started.elapsed() >= std::time::Duration::from_millis(30 + 20 * (ev.len() as u64 - 1)));
    assert!(ev.last().unwrap().1["metrics"]["latencyMs"].as_u64().unwrap() >= 30);
    let reset = client()
        .post(server.url(&converse))
        .json(&hello("x"))
        .header("authorization", "Bearer k")
        .header("x-mock-reset", "1")
        .send()
        .await;
    assert!(reset.is_err(), "{reset:?}");
}
