//! Anthropic Messages API against the recorded Anthropic fixtures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{
    anthropic_fixture, assert_same_key_order, assert_same_keys, client, parse_sse, reply, tokens, Server, Sse,
};
use serde_json::{json, Value};

async fn post(server: &Server, body: &Value) -> reqwest::Response {
    client().post(server.url("/v1/messages")).header("anthropic-version", "2023-06-01").json(body).send().await.unwrap()
}

fn hello(stream: bool) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 256, "stream": stream,
           "messages": [{"role": "user", "content": "Hello!"}]})
}

/// Event names with pings dropped and runs of deltas collapsed: the grammar
/// of a message stream.
fn grammar(events: &[Sse]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let name = e.event.clone().expect("every Anthropic event is named");
        if name == "ping" || (name == "content_block_delta" && out.last() == Some(&name)) {
            continue;
        }
        out.push(name);
    }
    out
}

/// The first event of each type.
fn first_of_each(events: &[Sse]) -> BTreeMap<String, Sse> {
    let mut out = BTreeMap::new();
    for e in events {
        out.entry(e.event.clone().unwrap()).or_insert_with(|| e.clone());
    }
    out
}

#[tokio::test]
async fn message_json_matches_fixture_with_consistent_usage() {
    let server = Server::default().await;
    let resp = post(&server, &hello(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-mock-provider"], "mock");
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let expected = reply("Hello!");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert_eq!(body["content"], json!([{"type": "text", "text": expected}]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("msg_01") && id.len() == 28, "{id}");
    assert_eq!(body["usage"]["input_tokens"], 2);
    assert_eq!(body["usage"]["output_tokens"], tokens(&expected));

    let fixture = anthropic_fixture("basic.json");
    assert_same_keys("message", &body, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("message", &text, &fixture);
}

#[tokio::test]
async fn message_counts_system_and_blocks_and_caps_output() {
    let server = Server::default().await;
    let req = json!({
        "model": "c", "max_tokens": 1000,
        "system": [{"type": "text", "text": "You are a helpful bot."}],
        "messages": [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": [{"type": "text", "text": "First answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "Second"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}
        ]
    });
    let body: Value = post(&server, &req).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], reply("Second").as_str());
    let input = tokens("You are a helpful bot.") + tokens("First question") + tokens("First answer") + tokens("Second");
    assert_eq!(body["usage"]["input_tokens"], input);

    let mut capped = req.clone();
    capped["max_tokens"] = json!(2);
    let body: Value = post(&server, &capped).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "Mock rep");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 2);

    let mut stopped = req.clone();
    stopped["stop_sequences"] = json!(["to:"]);
    let body: Value = post(&server, &stopped).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "Mock reply ");
    assert_eq!(body["stop_reason"], "stop_sequence");
    assert_eq!(body["stop_sequence"], "to:");
}

#[tokio::test]
async fn message_stream_matches_fixture_event_sequence_and_shapes() {
    let server = Server::default().await;
    let resp = post(&server, &hello(true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: message_start\ndata: {"));
    let events = parse_sse(&text);
    let fixture_text = anthropic_fixture("stream_basic.json");
    let fixture = parse_sse(&fixture_text);

    assert_eq!(grammar(&events), grammar(&fixture));
    assert_eq!(
        grammar(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names[2], "ping", "a ping after content_block_start, as the API sends");
    for e in &events {
        assert_eq!(e.json()["type"], e.event.as_deref().unwrap(), "data.type names the event");
    }

    let ours = first_of_each(&events);
    let theirs = first_of_each(&fixture);
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (name, event) in &ours {
        assert_same_key_order(name, &event.data, &theirs[name].data);
    }

    let expected = reply("Hello!");
    let deltas: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas.len(), 4, "word-sized deltas");
    assert_eq!(deltas.concat(), expected);
    let start = ours["message_start"].json();
    assert_eq!(start["message"]["usage"]["input_tokens"], 2);
    assert_eq!(start["message"]["model"], "claude-haiku-4-5");
    let delta = ours["message_delta"].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], tokens(&expected));
    assert_eq!(delta["usage"]["input_tokens"], 2);
}

fn weather_tool() -> Value {
    json!([{"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}])
}

#[tokio::test]
async fn tool_use_json_matches_fixture() {
    let server = Server::default().await;
    let prompt = "Check the weather with a tool";
    let req = json!({"model": "c", "max_tokens": 100, "tools": weather_tool(),
                     "messages": [{"role": "user", "content": prompt}]});
    let text = post(&server, &req).await.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_01"));
    assert_eq!(block["input"], json!({"query": prompt}));
    let args = serde_json::to_string(&json!({"query": prompt})).unwrap();
    assert_eq!(body["usage"]["output_tokens"], tokens(&args));

    let fixture: Value = serde_json::from_str(&anthropic_fixture("tool.json")).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(block), keys(&fixture["content"][1]), "tool_use block keys");
    // tool.json is hand-trimmed (no stop_sequence); every key it has is there.
    for key in fixture.as_object().unwrap().keys() {
        assert!(body.get(key).is_some(), "{key} missing");
    }
}

#[tokio::test]
async fn tool_use_stream_matches_fixture() {
    let server = Server::default().await;
    let prompt = "use your TOOLS";
    let req = json!({"model": "c", "max_tokens": 100, "stream": true, "tools": weather_tool(),
                     "messages": [{"role": "user", "content": prompt}]});
    let events = parse_sse(&post(&server, &req).await.text().await.unwrap());
    let fixture = parse_sse(&anthropic_fixture("stream_tool.json"));
    assert_eq!(grammar(&events), grammar(&fixture));

    let ours = first_of_each(&events);
    let theirs = first_of_each(&fixture);
    for name in ["content_block_start", "content_block_delta", "content_block_stop", "message_stop"] {
        assert_same_key_order(name, &ours[name].data, &theirs[name].data);
    }
    let start = ours["content_block_start"].json();
    assert_eq!(start["content_block"]["name"], "get_weather");
    assert_eq!(start["content_block"]["input"], json!({}));
    let pieces: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let j = e.json();
            assert_eq!(j["delta"]["type"], "input_json_delta");
            j["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    assert_eq!(serde_json::from_str::<Value>(&pieces.concat()).unwrap(), json!({"query": prompt}));
    let delta = ours["message_delta"].json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], tokens(&pieces.concat()));
}

#[tokio::test]
async fn tool_choice_and_tool_results() {
    let server = Server::default().await;
    let base = |choice: Option<Value>, messages: Value| {
        let mut req = json!({"model": "c", "max_tokens": 100, "tools": weather_tool(), "messages": messages});
        if let Some(c) = choice {
            req["tool_choice"] = c;
        }
        req
    };
    let user = |t: &str| json!([{"role": "user", "content": t}]);
    let stop = |v: &Value| v["stop_reason"].as_str().unwrap().to_owned();

    let body: Value =
        post(&server, &base(Some(json!({"type": "none"})), user("tool please"))).await.json().await.unwrap();
    assert_eq!(stop(&body), "end_turn");
    let body: Value = post(&server, &base(Some(json!({"type": "any"})), user("hi"))).await.json().await.unwrap();
    assert_eq!(stop(&body), "tool_use");
    let body: Value =
        post(&server, &base(Some(json!({"type": "tool", "name": "other"})), user("hi"))).await.json().await.unwrap();
    assert_eq!(body["content"][0]["name"], "other");
    let body: Value = post(&server, &base(None, user("hi"))).await.json().await.unwrap();
    assert_eq!(stop(&body), "end_turn");

    // The tool result turn gets a text answer echoing the last user text.
    let messages = json!([
        {"role": "user", "content": "use the tool"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"query": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
    ]);
    let body: Value = post(&server, &base(None, messages)).await.json().await.unwrap();
    assert_eq!(stop(&body), "end_turn");
    assert_eq!(body["content"][0]["text"], reply("use the tool").as_str());
    assert_eq!(body["usage"]["input_tokens"], tokens("use the tool") + tokens("{\"query\":\"x\"}") + tokens("sunny"));
}

#[tokio::test]
async fn errors_are_anthropic_shaped() {
    let server = Server::default().await;
    let check = |body: &Value, needle: &str| {
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{body}");
        assert_eq!(body.as_object().unwrap().len(), 2);
        assert_eq!(body["error"].as_object().unwrap().len(), 2);
    };
    let cases = [
        (json!({"model": "c", "messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
        (json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}), "model"),
        (json!({"model": "c", "max_tokens": 5}), "messages"),
        (json!({"model": "c", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
        (json!({"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}), "role"),
    ];
    for (req, needle) in cases {
        let resp = post(&server, &req).await;
        assert_eq!(resp.status(), 400, "{req}");
        check(&resp.json().await.unwrap(), needle);
    }
    let resp = client().post(server.url("/v1/messages")).body("nope{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    check(&resp.json().await.unwrap(), "JSON");
}

#[tokio::test]
async fn count_tokens_endpoint() {
    let server = Server::default().await;
    let resp = client()
        .post(server.url("/v1/messages/count_tokens"))
        .json(&json!({"model": "c", "system": "Be nice.", "messages": [{"role": "user", "content": "Hello there!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"input_tokens": tokens("Be nice.") + tokens("Hello there!")}));
}
