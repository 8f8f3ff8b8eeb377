//! The official Python SDKs as real clients of the gateway's translation: the
//! OpenAI SDK asking for a `claude-*` model (served over the Anthropic
//! Messages API) and the Anthropic SDK asking for a `gpt-*` model (served by
//! the OpenAI chat API), and both asking for a `gemini-*` model (served by
//! the Gemini API's `generateContent`): JSON and streamed, tool calls, usage
//! and errors.
//!
//! The scripts in `tests/sdk/` run with the Tollgate venv's Python
//! (`$TOLLGATE_HOME/venv`, default `~/.tollgate/venv`), where
//! `scripts/install.sh` installs the SDKs from `scripts/requirements-sdk.txt`.
//! A missing venv or SDK fails the test; it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::{json, Value};
use tollgate_e2e::{Gateway, Options};

/// Run `tests/sdk/SCRIPT BASE_URL [ARGS]` and parse the JSON it prints.
async fn run_script(gw: &Gateway, script: &str, args: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join(script);
    let args: Vec<String> = std::iter::once(gw.url.clone()).chain(args.iter().map(|a| a.to_string())).collect();
    let out = tollgate_e2e::python::run(&path, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let hint = if stderr.contains("ModuleNotFoundError") {
            "\nthe SDKs are not installed in the venv: run scripts/install.sh"
        } else {
            ""
        };
        panic!(
            "{script} failed ({}){hint}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- mock received\n{}\n--- gateway log\n{}",
            out.status,
            serde_json::to_string_pretty(&gw.mock_requests().await).unwrap(),
            gw.log_text()
        );
    }
    eprintln!("{script} printed:\n{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// OpenAI usage: both parts counted and adding up to the total.
fn assert_openai_usage(usage: &Value) {
    let (input, output, total) =
        (num(usage, "prompt_tokens"), num(usage, "completion_tokens"), num(usage, "total_tokens"));
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(input + output, total, "{usage}");
}

fn assert_anthropic_usage(usage: &Value) {
    assert!(num(usage, "input_tokens") > 0 && num(usage, "output_tokens") > 0, "{usage}");
}

/// The requests the mock received, with their JSON bodies parsed.
async fn received(gw: &Gateway) -> Vec<(Value, Value)> {
    gw.mock_requests()
        .await
        .into_iter()
        .map(|req| {
            let body = req["body"].as_str().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
            (req, body)
        })
        .collect()
}

/// What the OpenAI SDK parsed (`tests/sdk/openai_client.py`), whatever the
/// provider behind `model`.
fn assert_openai_client(out: &Value, model: &str) {
    // Non-streamed text.
    let chat = &out["chat"];
    assert_eq!(chat["object"], "chat.completion", "{chat}");
    assert_eq!(chat["model"], model, "{chat}");
    assert_eq!(chat["role"], "assistant", "{chat}");
    let content = text(chat, "content");
    assert!(content.contains("Mock reply to:") && content.contains("Say hello to Ada"), "{chat}");
    assert_eq!(chat["finish_reason"], "stop", "{chat}");
    assert_eq!(chat["tool_calls"], serde_json::json!([]), "{chat}");
    assert_openai_usage(&chat["usage"]);

    // Streamed text with `stream_options.include_usage`: one usage chunk.
    let stream = &out["stream"];
    assert_eq!(stream["objects"], serde_json::json!(["chat.completion.chunk"]), "{stream}");
    assert_eq!(stream["ids"], 1, "one id across the chunks: {stream}");
    let content = text(stream, "content");
    assert!(content.contains("Mock reply to:") && content.contains("Say hello to Babbage"), "{stream}");
    assert_eq!(stream["finish_reason"], "stop", "{stream}");
    assert_eq!(stream["usage_chunks"], 1, "{stream}");
    assert_openai_usage(&stream["usage"]);

    // Streamed without asking for usage: none reaches the client.
    let plain = &out["stream_no_usage"];
    assert!(text(plain, "content").contains("Say hello to Lovelace"), "{plain}");
    assert_eq!(plain["finish_reason"], "stop", "{plain}");
    assert_eq!(plain["usage_chunks"], 0, "{plain}");

    // Tool call, JSON.
    let tool = &out["tool"];
    assert_eq!(tool["finish_reason"], "tool_calls", "{tool}");
    let calls = tool["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{tool}");
    assert_eq!(calls[0]["type"], "function", "{tool}");
    assert_eq!(calls[0]["name"], "lookup", "{tool}");
    assert!(text(&calls[0]["arguments"], "query").contains("find Ada"), "{tool}");
    assert!(!text(&calls[0], "id").is_empty(), "{tool}");
    assert_openai_usage(&tool["usage"]);

    // The tool's result sent back: a text answer.
    let answer = &out["tool_result"];
    assert_eq!(answer["finish_reason"], "stop", "{answer}");
    assert!(text(answer, "content").contains("Mock reply to:"), "{answer}");
    assert_openai_usage(&answer["usage"]);

    // Tool call, streamed (name and argument fragments joined by index).
    let tool = &out["tool_stream"];
    assert_eq!(tool["finish_reason"], "tool_calls", "{tool}");
    let calls = tool["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{tool}");
    assert_eq!(calls[0]["name"], "lookup", "{tool}");
    assert!(text(&calls[0]["arguments"], "query").contains("find Grace"), "{tool}");
    assert!(!text(&calls[0], "id").is_empty(), "{tool}");
    assert_openai_usage(&tool["usage"]);

    // The SDK's strict stream accumulator builds a complete answer.
    let helper = &out["stream_helper"];
    assert!(text(helper, "content").contains("Mock reply to:"), "{helper}");
    assert!(text(helper, "content").contains("Say hello to Turing"), "{helper}");
    assert_eq!(helper["finish_reason"], "stop", "{helper}");
    assert_openai_usage(&helper["usage"]);

    // The provider's 429 is the SDK's RateLimitError, streamed or not.
    for case in ["error", "error_stream"] {
        let err = &out[case];
        assert_eq!(err["class"], "RateLimitError", "{case}: {err}");
        assert_eq!(err["status"], 429, "{case}: {err}");
    }
}

#[tokio::test]
async fn openai_sdk_is_served_by_an_anthropic_model() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let out = run_script(&gw, "openai_client.py", &[]).await;
    assert_openai_client(&out, "claude-haiku-4-5");

    // Every request reached the provider as an Anthropic Messages request.
    let seen = received(&gw).await;
    assert_eq!(seen.len(), 9, "{seen:?}");
    for (req, body) in &seen {
        assert_eq!(req["path"], "/v1/messages", "{req}");
        assert_eq!(body["model"], "claude-haiku-4-5", "{body}");
        assert!(body["max_tokens"].as_u64().is_some(), "{body}");
        assert!(body.get("stream_options").is_none() && body.get("tool_choice") != Some(&"required".into()), "{body}");
    }
    let (_, first) = &seen[0];
    let system = first["system"].as_str().map(str::to_string).unwrap_or_else(|| first["system"].to_string());
    assert!(system.contains("Be brief."), "{first}");
    let streamed = seen.iter().filter(|(_, b)| b["stream"] == true).count();
    assert_eq!(streamed, 5, "{seen:?}");
    let tools: Vec<&Value> = seen.iter().map(|(_, b)| b).filter(|b| b.get("tool_choice").is_some()).collect();
    assert_eq!(tools.len(), 2, "{seen:?}");
    for body in tools {
        assert_eq!(body["tool_choice"]["type"], "any", "{body}");
        assert_eq!(body["tools"][0]["name"], "lookup", "{body}");
        assert!(body["tools"][0]["input_schema"]["properties"]["query"].is_object(), "{body}");
    }
    // The tool round trip as Anthropic blocks: the assistant's `tool_use`, then
    // the user's `tool_result` for the same id.
    let call_id = text(&out["tool_result"], "call_id");
    let (_, round) = seen.iter().find(|(_, b)| b["messages"].as_array().is_some_and(|m| m.len() == 3)).unwrap();
    let messages = round["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant", "{round}");
    let tool_use = messages[1]["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(tool_use["id"], call_id, "{round}");
    assert_eq!(tool_use["name"], "lookup", "{round}");
    assert_eq!(tool_use["input"]["query"], "find Ada", "{round}");
    assert_eq!(messages[2]["role"], "user", "{round}");
    let result = &messages[2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{round}");
    assert_eq!(result["tool_use_id"], call_id, "{round}");
    assert!(result["content"].to_string().contains("Ada Lovelace, 1815"), "{round}");
}

/// What the Anthropic SDK parsed (`tests/sdk/anthropic_client.py`), whatever
/// the provider behind `model`.
fn assert_anthropic_client(out: &Value, model: &str) {
    // Non-streamed text.
    let msg = &out["message"];
    assert_eq!(msg["type"], "message", "{msg}");
    assert_eq!(msg["role"], "assistant", "{msg}");
    assert_eq!(msg["model"], model, "{msg}");
    let t = text(msg, "text");
    assert!(t.contains("Mock reply to:") && t.contains("Say hello to Grace"), "{msg}");
    assert_eq!(msg["blocks"], serde_json::json!(["text"]), "{msg}");
    assert_eq!(msg["stop_reason"], "end_turn", "{msg}");
    assert_anthropic_usage(&msg["usage"]);

    // `messages.stream(...)`: the text stream and the accumulated message agree.
    let stream = &out["stream"];
    let t = text(stream, "streamed_text");
    assert!(t.contains("Mock reply to:") && t.contains("Say hello to Hopper"), "{stream}");
    assert_eq!(stream["text"], stream["streamed_text"], "{stream}");
    assert_eq!(stream["stop_reason"], "end_turn", "{stream}");
    assert_anthropic_usage(&stream["usage"]);

    // The raw event sequence.
    let names: Vec<&str> = out["stream_events"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    for name in ["content_block_start", "content_block_delta", "content_block_stop", "message_delta"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }

    // Tool use, JSON and streamed (`input_json_delta` joined by the SDK).
    for (case, prompt) in [("tool", "find Grace"), ("tool_stream", "find Ada")] {
        let tool = &out[case];
        assert_eq!(tool["stop_reason"], "tool_use", "{case}: {tool}");
        let uses = tool["tool_uses"].as_array().unwrap();
        assert_eq!(uses.len(), 1, "{case}: {tool}");
        assert_eq!(uses[0]["name"], "lookup", "{case}: {tool}");
        assert!(text(&uses[0]["input"], "query").contains(prompt), "{case}: {tool}");
        assert!(!text(&uses[0], "id").is_empty(), "{case}: {tool}");
        assert_anthropic_usage(&tool["usage"]);
    }

    // The tool's result sent back: a text answer.
    let answer = &out["tool_result"];
    assert_eq!(answer["stop_reason"], "end_turn", "{answer}");
    assert!(text(answer, "text").contains("Mock reply to:"), "{answer}");
    assert_anthropic_usage(&answer["usage"]);

    // The provider's 429 is the SDK's RateLimitError, streamed or not.
    for case in ["error", "error_stream"] {
        let err = &out[case];
        assert_eq!(err["class"], "RateLimitError", "{case}: {err}");
        assert_eq!(err["status"], 429, "{case}: {err}");
    }
}

#[tokio::test]
async fn anthropic_sdk_is_served_by_an_openai_model() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let out = run_script(&gw, "anthropic_client.py", &[]).await;
    assert_anthropic_client(&out, "gpt-4o-mini");

    // Every request reached the provider as an OpenAI chat request.
    let seen = received(&gw).await;
    assert_eq!(seen.len(), 8, "{seen:?}");
    for (req, body) in &seen {
        assert_eq!(req["path"], "/v1/chat/completions", "{req}");
        assert!(req["headers"].get("anthropic-version").is_none(), "{req}");
        assert_eq!(body["model"], "gpt-4o-mini", "{body}");
        assert!(body["messages"].is_array() && body.get("system").is_none(), "{body}");
    }
    let (_, first) = &seen[0];
    assert_eq!(first["messages"][0]["role"], "system", "{first}");
    assert_eq!(first["messages"][0]["content"], "Be brief.", "{first}");
    let streamed: Vec<&Value> = seen.iter().map(|(_, b)| b).filter(|b| b["stream"] == true).collect();
    assert_eq!(streamed.len(), 4, "{seen:?}");
    for body in streamed {
        assert_eq!(body["stream_options"]["include_usage"], true, "{body}");
    }
    let tools: Vec<&Value> = seen.iter().map(|(_, b)| b).filter(|b| b.get("tool_choice").is_some()).collect();
    assert_eq!(tools.len(), 2, "{seen:?}");
    for body in tools {
        assert_eq!(body["tool_choice"], "required", "{body}");
        assert_eq!(body["tools"][0]["type"], "function", "{body}");
        assert_eq!(body["tools"][0]["function"]["name"], "lookup", "{body}");
    }
    // The tool round trip as OpenAI messages: the assistant's `tool_calls`,
    // then a `tool` message for the same id.
    let use_id = text(&out["tool_result"], "use_id");
    let (_, round) = seen.iter().find(|(_, b)| b["messages"].as_array().is_some_and(|m| m.len() == 3)).unwrap();
    let messages = round["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant", "{round}");
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(call["id"], use_id, "{round}");
    assert_eq!(call["type"], "function", "{round}");
    assert_eq!(call["function"]["name"], "lookup", "{round}");
    let args: Value = serde_json::from_str(text(&call["function"], "arguments")).unwrap();
    assert_eq!(args["query"], "find Grace", "{round}");
    assert_eq!(messages[2]["role"], "tool", "{round}");
    assert_eq!(messages[2]["tool_call_id"], use_id, "{round}");
    assert!(messages[2]["content"].to_string().contains("Grace Hopper, 1906"), "{round}");
}

#[tokio::test]
async fn openai_sdk_reads_streamed_and_json_answers_from_the_cache() {
    let gw = Gateway::start(Options { policy_extra: "cache: {enabled: true}\n".into(), ..Default::default() })
        .await
        .unwrap();
    let out = run_script(&gw, "openai_cache.py", &[]).await;
    let (first, second, third) = (&out["first"], &out["second"], &out["third"]);
    assert_eq!(text(first, "cache"), "miss");
    assert!(text(first, "text").contains("colour of the sky"), "{first}");
    for hit in [second, third] {
        assert_eq!(text(hit, "cache"), "hit", "{out}");
        assert_eq!(text(hit, "text"), text(first, "text"));
        assert_eq!(text(hit, "finish"), "stop");
        assert!(num(&hit["usage"], "completion") > 0, "{hit}");
    }
    assert!(num(second, "chunks") > 3, "a replay streams in pieces: {second}");
    assert_eq!(gw.mock_requests().await.len(), 1, "only the first call reached the provider");
}

/// A gateway that wants keys (alice, of team research), with `extra`
/// policy; the provider's own key (a Bedrock API key the mock wants) is
/// sent in place of the caller's.
async fn keyed_native_gateway(extra: &str) -> (Gateway, String) {
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "{extra}access: {{require: key, keyStore: '{{dir}}/keys.yaml'}}\nteams:\n  research: {{}}\nconsumers:\n  alice: {{team: research}}\n"
        ),
        provider_extra: "keyEnv: PROVIDER_KEY".into(),
        sidecar_env: vec![("PROVIDER_KEY".into(), "ABSK-provider-key".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let key = gw.create_key("alice").await;
    (gw, key)
}

#[tokio::test]
async fn genai_and_boto3_read_streamed_and_json_answers_from_the_cache() {
    let (gw, key) = keyed_native_gateway("cache: {enabled: true}\n").await;
    let out = run_script(&gw, "native_cache.py", &[&key]).await;
    for (sdk, finish, usage_key) in [("gemini", "STOP", "candidates"), ("bedrock", "end_turn", "outputTokens")] {
        let (first, streamed, again) = (&out[sdk]["first"], &out[sdk]["streamed"], &out[sdk]["again"]);
        assert!(text(first, "text").contains("colour of the sky"), "{sdk}: {first}");
        assert_eq!(first["finish"], finish, "{sdk}: {first}");
        for hit in [streamed, again] {
            assert_eq!(text(hit, "text"), text(first, "text"), "{sdk}: {out}");
            assert_eq!(hit["finish"], finish, "{sdk}: {hit}");
            assert!(num(&hit["usage"], usage_key) > 0, "{sdk}: {hit}");
        }
        assert_eq!(first["cache"], "miss", "{out}");
        assert_eq!((text(streamed, "cache"), text(again, "cache")), ("hit", "hit"), "{out}");
        let pieces = if sdk == "bedrock" { num(streamed, "events") } else { num(streamed, "chunks") };
        assert!(pieces > 4, "a replay streams in pieces (frames, events): {streamed}");
    }
    // Only the first of each SDK's three calls reached the provider; the
    // others are recorded as the cache's answers to the caller.
    let seen = gw.mock_requests().await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let records = gw.audit_records();
    let hits: Vec<&Value> = records.iter().filter(|r| r["provider"] == "cache").collect();
    assert_eq!(hits.len(), 4, "{records:?}");
    assert!(hits.iter().all(|r| r["consumer"] == "alice" && r["status"] == 200), "{hits:?}");
    let apis: Vec<&str> = hits.iter().filter_map(|r| r["api"].as_str()).collect();
    assert_eq!(apis.iter().filter(|a| **a == "gemini-generate-content").count(), 2, "{apis:?}");
    assert_eq!(apis.iter().filter(|a| **a == "bedrock-converse").count(), 2, "{apis:?}");
}

/// The requests the mock received for `model` over the Gemini API: each one
/// `generateContent`, or `streamGenerateContent?alt=sse` when streamed, with
/// a Gemini body (no model, no OpenAI or Anthropic fields).
async fn received_by_gemini(gw: &Gateway, model: &str, expected: usize, streamed: usize) -> Vec<Value> {
    let seen = received(gw).await;
    assert_eq!(seen.len(), expected, "{seen:?}");
    let json_path = format!("/v1beta/models/{model}:generateContent");
    let sse_path = format!("/v1beta/models/{model}:streamGenerateContent?alt=sse");
    let mut bodies = Vec::new();
    let mut sse = 0;
    for (req, body) in seen {
        let path = text(&req, "path");
        assert!(path == json_path || path == sse_path, "{req}");
        sse += usize::from(path == sse_path);
        assert!(req["headers"].get("anthropic-version").is_none(), "{req}");
        assert!(body["contents"].is_array() && body.get("model").is_none() && body.get("messages").is_none(), "{body}");
        bodies.push(body);
    }
    assert_eq!(sse, streamed, "streamed requests");
    bodies
}

/// A tool round trip as Gemini parts: the model's `functionCall`, then the
/// user's `functionResponse` for the same function.
fn assert_gemini_tool_round_trip(bodies: &[Value], query: &str, answer: &str) {
    let round = bodies.iter().find(|b| b["contents"].as_array().is_some_and(|c| c.len() == 3)).unwrap();
    let contents = round["contents"].as_array().unwrap();
    assert_eq!(contents[1]["role"], "model", "{round}");
    let call = &contents[1]["parts"].as_array().unwrap().iter().find(|p| p.get("functionCall").is_some()).unwrap()
        ["functionCall"];
    assert_eq!(call["name"], "lookup", "{round}");
    assert_eq!(call["args"]["query"], query, "{round}");
    assert_eq!(contents[2]["role"], "user", "{round}");
    let response = &contents[2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"], "lookup", "{round}");
    assert!(response["response"].to_string().contains(answer), "{round}");
    let with_tools: Vec<&Value> = bodies.iter().filter(|b| b.get("toolConfig").is_some()).collect();
    assert_eq!(with_tools.len(), 2, "{bodies:?}");
    for body in with_tools {
        assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], "ANY", "{body}");
        let decl = &body["tools"][0]["functionDeclarations"][0];
        assert_eq!(decl["name"], "lookup", "{body}");
        assert!(decl["parametersJsonSchema"]["properties"]["query"].is_object(), "{body}");
    }
}

#[tokio::test]
async fn openai_sdk_is_served_by_a_gemini_model() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let out = run_script(&gw, "openai_client.py", &["gemini-2.5-flash"]).await;
    assert_openai_client(&out, "gemini-2.5-flash");
    let bodies = received_by_gemini(&gw, "gemini-2.5-flash", 9, 5).await;
    assert_eq!(bodies[0]["systemInstruction"]["parts"][0]["text"], "Be brief.", "{}", bodies[0]);
    assert!(bodies.iter().all(|b| b["generationConfig"].get("maxOutputTokens").is_none()), "no cap was asked for");
    assert_gemini_tool_round_trip(&bodies, "find Ada", "Ada Lovelace, 1815");
}

#[tokio::test]
async fn anthropic_sdk_is_served_by_a_gemini_model() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let out = run_script(&gw, "anthropic_client.py", &["gemini-2.5-pro"]).await;
    assert_anthropic_client(&out, "gemini-2.5-pro");
    let bodies = received_by_gemini(&gw, "gemini-2.5-pro", 8, 4).await;
    assert_eq!(bodies[0]["systemInstruction"]["parts"][0]["text"], "Be brief.", "{}", bodies[0]);
    assert!(bodies.iter().all(|b| b["generationConfig"]["maxOutputTokens"].is_u64()), "max_tokens kept: {bodies:?}");
    assert_gemini_tool_round_trip(&bodies, "find Grace", "Grace Hopper, 1906");
}

#[tokio::test]
async fn genai_sdk_is_a_native_gemini_client_with_keys_pii_and_the_firewall() {
    let gw = Gateway::start(Options {
        policy_extra: "access: {require: key, keyStore: '{dir}/keys.yaml'}\nteams:\n  research: {}\nconsumers:\n  alice: {team: research}\n"
            .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = gw.create_key("alice").await;
    let out = run_script(&gw, "genai_client.py", &[&key]).await;

    let plain = &out["plain"];
    assert!(
        text(plain, "text").contains("Mock reply to:") && text(plain, "text").contains("Say hello to Ada"),
        "{plain}"
    );
    assert_eq!(plain["finish"], "STOP", "{plain}");
    assert!(num(&plain["usage"], "prompt") > 0 && num(&plain["usage"], "candidates") > 0, "{plain}");
    let stream = &out["stream"];
    assert!(num(stream, "chunks") > 1 && text(stream, "text").contains("Say hello to Grace"), "{stream}");
    assert_eq!(stream["finish"], "STOP", "{stream}");
    assert!(num(&stream["usage"], "total") > 0, "{stream}");
    let calls = out["tool"]["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{out}");
    assert_eq!(calls[0]["name"], "lookup");
    assert!(
        text(&calls[0]["args"], "query").contains("find Hopper") || text(&calls[0]["args"], "query").contains("Hopper"),
        "{out}"
    );

    // The mock echoes the prompt: the client sees its own address back,
    // JSON and streamed, while the provider saw only placeholders.
    assert!(text(&out["pii"], "text").contains("ada.lovelace@example.com"), "{out}");
    assert!(text(&out["pii_stream"], "text").contains("grace.hopper@example.org"), "{out}");
    let seen = received(&gw).await;
    let bodies: Vec<String> = seen.iter().map(|(_, b)| b.to_string()).collect();
    assert!(bodies.iter().all(|b| !b.contains("@example.")), "an address reached the provider: {bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("EMAIL_ADDRESS")), "{bodies:?}");

    // Refusals in Google's error shape, which the SDK raises as APIError.
    assert_eq!(out["injection"]["code"], 403, "{out}");
    assert_eq!(out["no_key"]["code"], 401, "{out}");
    assert_eq!(out["no_key"]["status"], "UNAUTHENTICATED", "{out}");

    // countTokens and embeddings: answered, the address masked on the way.
    assert!(num(&out["count"], "total") > 0, "{out}");
    assert_eq!(out["embed"]["count"], 2, "{out}");
    assert_eq!(out["embed"]["dims"], serde_json::json!([16, 16]), "{out}");
    assert_eq!(out["embed_injection"]["code"], 403, "the firewall reads what is embedded too: {out}");

    // Every call reached the provider as Gemini: the model in the path, the
    // gateway key replaced, nothing the Gemini API would refuse in the body.
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut verbs = Vec::new();
    for (req, body) in &seen {
        let path = text(req, "path");
        let (model, verb) = path.trim_start_matches("/v1beta/models/").split_once(':').unwrap();
        verbs.push(verb.split('?').next().unwrap().to_owned());
        assert!(req["headers"].get("x-goog-api-key").is_none_or(|k| k != &Value::from(key.as_str())), "{req}");
        if verb == "batchEmbedContents" {
            assert_eq!(model, "text-embedding-004", "{req}");
            assert_eq!(body["requests"].as_array().map(Vec::len), Some(2), "{body}");
            assert!(body["requests"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("EMAIL_ADDRESS"));
        } else {
            assert_eq!(model, "gemini-2.5-flash", "{req}");
            assert!(body.get("model").is_none() && body["contents"].is_array(), "{body}");
        }
    }
    verbs.sort();
    assert_eq!(
        verbs,
        [
            "batchEmbedContents",
            "countTokens",
            "generateContent",
            "generateContent",
            "generateContent",
            "streamGenerateContent",
            "streamGenerateContent"
        ],
        "{seen:?}"
    );
    let usage = gw.usage_rows().await;
    assert!(usage.iter().any(|r| r["consumer"] == "alice"), "spend recorded for the caller: {usage:?}");
    // Counting tokens is free; an embedding spends its input.
    let records = gw.audit_records();
    let by_api = |api: &str| records.iter().find(|r| r["api"] == api).cloned().unwrap_or_default();
    let count = by_api("gemini-count-tokens");
    assert_eq!((count["status"].as_u64(), count["inputTokens"].as_u64()), (Some(200), Some(0)), "{count}");
    let embed = by_api("gemini-batch-embed-contents");
    assert_eq!(embed["status"], 200, "{embed}");
    assert!(embed["inputTokens"].as_u64().unwrap_or(0) > 0 && embed["outputTokens"] == 0, "{embed}");
}

/// A Bedrock provider on the mock: SigV4 from the environment (the AWS
/// test suite's keys), aliases to a model id and to an inference-profile ARN.
async fn bedrock_gateway(api_key: bool) -> Gateway {
    let (auth, env) = if api_key {
        (", keyEnv: BEDROCK_KEY", vec![("BEDROCK_KEY".to_string(), "ABSK-test-bedrock-key".to_string())])
    } else {
        (
            "",
            vec![
                ("AWS_ACCESS_KEY_ID".to_string(), "AKIDEXAMPLE".to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string()),
            ],
        )
    };
    Gateway::start(Options {
        providers_extra: format!("  aws: {{kind: bedrock, baseUrl: 'http://{{mock}}', region: us-east-1{auth}}}"),
        policy_extra: format!(
            "models:\n  bed: {{targets: [{{provider: aws, model: amazon.nova-pro-v1:0}}]}}\n  profile: {{targets: [{{provider: aws, model: '{BEDROCK_ARN}'}}]}}\n"
        ),
        sidecar_env: env,
        ..Default::default()
    })
    .await
    .unwrap()
}

const BEDROCK_ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// The Converse calls the mock received for `model`: every one signed for us-east-1's
/// `bedrock` service (or carrying the API key), the model in the path.
async fn received_by_bedrock(gw: &Gateway, model: &str, expected: usize, streamed: usize, api_key: bool) -> Vec<Value> {
    received_by_bedrock_as(gw, model, ["Converse", "ConverseStream"], expected, streamed, api_key).await
}

/// The calls of operations `ops` (plain, streamed) the mock received for
/// `model`, checked as [`received_by_bedrock`]: `expected` of them.
async fn received_by_bedrock_as(
    gw: &Gateway,
    model: &str,
    ops: [&str; 2],
    expected: usize,
    streamed: usize,
    api_key: bool,
) -> Vec<Value> {
    let seen: Vec<(Value, Value)> = received(gw)
        .await
        .into_iter()
        .filter(|(req, _)| {
            req["bedrock"]["modelId"] == model && ops.iter().any(|op| req["bedrock"]["operation"] == *op)
        })
        .collect();
    assert_eq!(seen.len(), expected, "{seen:?}");
    let mut bodies = Vec::new();
    let mut sse = 0;
    for (req, body) in seen {
        let call = &req["bedrock"];
        sse += usize::from(text(call, "operation") == ops[1]);
        let auth = &call["auth"];
        if api_key {
            assert_eq!(auth["scheme"], "bearer", "{req}");
            assert_eq!(req["headers"]["authorization"], "Bearer ABSK-test-bedrock-key", "{req}");
        } else {
            assert_eq!(auth["scheme"], "sigv4", "{req}");
            assert_eq!(
                (&auth["accessKeyId"], &auth["region"], &auth["service"]),
                (&"AKIDEXAMPLE".into(), &"us-east-1".into(), &"bedrock".into()),
                "{req}"
            );
            let signed: Vec<&str> =
                auth["signedHeaders"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(signed.contains(&"host") && signed.contains(&"x-amz-date"), "{req}");
        }
        assert!(body["messages"].is_array() && body.get("model").is_none(), "{body}");
        bodies.push(body);
    }
    assert_eq!(sse, streamed, "streamed requests");
    bodies
}

#[tokio::test]
async fn openai_and_anthropic_sdks_are_served_by_bedrock_with_sigv4() {
    let gw = bedrock_gateway(false).await;
    let out = run_script(&gw, "openai_client.py", &["bed"]).await;
    assert_openai_client(&out, "bed");
    let bodies = received_by_bedrock(&gw, "amazon.nova-pro-v1:0", 9, 5, false).await;
    assert_eq!(bodies[0]["system"][0]["text"], "Be brief.", "{}", bodies[0]);
    let tools: Vec<&Value> = bodies.iter().filter(|b| b["toolConfig"].get("toolChoice").is_some()).collect();
    assert_eq!(tools.len(), 2, "tool_choice required, JSON and streamed: {bodies:?}");
    assert_eq!(tools[0]["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(tools[0]["toolConfig"]["tools"][0]["toolSpec"]["name"], "lookup");
    // The tool round trip as Converse blocks: the assistant's toolUse, then
    // the user's toolResult for the same id.
    let round = bodies.iter().find(|b| b["messages"].as_array().is_some_and(|m| m.len() == 3)).unwrap();
    let tool_use =
        &round["messages"][1]["content"].as_array().unwrap().iter().find(|b| b.get("toolUse").is_some()).unwrap()
            ["toolUse"];
    let result = &round["messages"][2]["content"][0]["toolResult"];
    assert_eq!(tool_use["toolUseId"], result["toolUseId"], "{round}");
    assert!(result["content"].to_string().contains("Ada Lovelace, 1815"), "{round}");

    // Claude for the Anthropic SDK: InvokeModel, Anthropic's own request in
    // Bedrock's envelope (no translation), its frames unwrapped for the SDK.
    let out = run_script(&gw, "anthropic_client.py", &["profile"]).await;
    assert_anthropic_client(&out, "profile");
    let ops = ["InvokeModel", "InvokeModelWithResponseStream"];
    let bodies = received_by_bedrock_as(&gw, BEDROCK_ARN, ops, 8, 4, false).await;
    for body in &bodies {
        assert_eq!(body["anthropic_version"], "bedrock-2023-05-31", "{body}");
        assert!(body.get("stream").is_none() && body["max_tokens"].is_u64(), "{body}");
    }
    let tools: Vec<&Value> = bodies.iter().filter(|b| b.get("tools").is_some()).collect();
    assert!(!tools.is_empty(), "{bodies:?}");
    assert_eq!(tools[0]["tools"][0]["input_schema"]["required"], json!(["query"]), "Anthropic's tool shape");
    assert_eq!(tools[0]["tool_choice"], json!({"type": "any"}));
    // The OpenAI SDK still reaches Claude through Converse.
    let ask = json!({"model": "profile", "messages": [{"role": "user", "content": "Say hello to Ada"}]});
    let resp = gw.post("/v1/chat/completions", &ask).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
    received_by_bedrock(&gw, BEDROCK_ARN, 1, 0, false).await;
}

#[tokio::test]
async fn bedrock_with_an_api_key_and_a_stream_that_fails_midway() {
    let gw = bedrock_gateway(true).await;
    let ask = json!({"model": "bed", "stream": true, "messages": [{"role": "user", "content": "Say hello to Ada"}]});
    // A client's own AWS signature and Google key headers never reach the
    // provider beside the gateway's credential.
    let client_headers = [
        ("x-amz-security-token", "client-token"),
        ("x-amz-date", "20200101T000000Z"),
        ("x-goog-api-key", "client-key"),
    ];
    let resp = gw.post_with("/v1/chat/completions", &ask, &client_headers).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.contains("Say hello to Ada") && text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The provider's stream ends with an exception frame: one error chunk, then [DONE].
    let resp = gw.post_with("/v1/chat/completions", &ask, &[("x-mock-bedrock-stream-error", "429")]).await;
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert!(events[events.len() - 2].contains("ThrottlingException"), "{text}");
    assert_eq!(events[events.len() - 1].trim(), "data: [DONE]", "{text}");
    // A throttled request is a 429 in the client's shape.
    let ask = json!({"model": "bed", "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/chat/completions", &ask, &[("x-mock-status", "429")]).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ThrottlingException", "{body}");
    received_by_bedrock(&gw, "amazon.nova-pro-v1:0", 3, 2, true).await;
    // Claude through InvokeModel: a stream ended by an exception frame is an
    // Anthropic `error` event after the text that came before it.
    let ask = json!({"model": "profile", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "Say hello to Ada"}]});
    let resp = gw.post_with("/v1/messages", &ask, &[("x-mock-bedrock-stream-error", "429")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert!(events[0].starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: content_block_delta"), "{text}");
    let last = events[events.len() - 1];
    assert!(last.starts_with("event: error") && last.contains("rate_limit_error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    received_by_bedrock_as(&gw, BEDROCK_ARN, ["InvokeModel", "InvokeModelWithResponseStream"], 1, 1, true).await;
    // The usage of a streamed InvokeModel answer is counted like Anthropic's.
    let ask = json!({"model": "profile", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "Say hello to Grace"}]});
    let resp = gw.post("/v1/messages", &ask).await;
    assert!(resp.text().await.unwrap().contains("event: message_stop"));
    let records = gw.audit_records();
    let last = records.iter().rev().find(|r| r["requestedModel"] == "profile").unwrap();
    assert!(last["inputTokens"].as_u64().unwrap() > 0 && last["outputTokens"].as_u64().unwrap() > 0, "{last}");
    for req in gw.mock_requests().await {
        for (name, _) in client_headers {
            assert!(req["headers"].get(name).is_none(), "{name} reached the provider: {req}");
        }
    }
}

#[tokio::test]
async fn boto3_is_a_native_bedrock_client_with_keys_pii_and_the_firewall() {
    let (gw, key) = keyed_native_gateway("").await;
    let out = run_script(&gw, "boto3_client.py", &[&key]).await;

    let plain = &out["plain"];
    assert!(text(plain, "text").contains("Say hello to Ada"), "{plain}");
    assert_eq!(plain["stop"], "end_turn", "{plain}");
    assert!(num(&plain["usage"], "totalTokens") > 0, "{plain}");
    let stream = &out["stream"];
    assert!(text(stream, "text").contains("Say hello to Grace"), "{stream}");
    assert_eq!(stream["stop"], "end_turn", "{stream}");
    assert!(num(&stream["usage"], "totalTokens") > 0, "{stream}");
    assert_eq!(out["tool"]["stop"], "tool_use", "{out}");
    assert_eq!(out["tool"]["uses"][0]["name"], "lookup", "{out}");
    assert!(text(&out["arn"], "text").contains("Lovelace"), "{out}");
    // The mock echoes the prompt: the client sees its own address back,
    // JSON and across stream frames, the provider only placeholders.
    assert!(text(&out["pii"], "text").contains("ada.lovelace@example.com"), "{out}");
    assert!(text(&out["pii_stream"], "text").contains("grace.hopper@example.org"), "{out}");
    let seen = received(&gw).await;
    let bodies: Vec<String> = seen.iter().map(|(_, b)| b.to_string()).collect();
    assert!(bodies.iter().all(|b| !b.contains("@example.")), "an address reached the provider: {bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("EMAIL_ADDRESS")), "{bodies:?}");
    // Refusals in Bedrock's error shape, which botocore raises as ClientError.
    assert_eq!(out["injection"]["status"], 403, "{out}");
    assert_eq!(out["no_key"]["status"], 401, "{out}");
    // Every call reached the provider as Converse, the model id in the path
    // (the ARN decoded), the gateway key never passed on.
    assert_eq!(seen.len(), 6, "{seen:?}");
    for (req, body) in &seen {
        let model = text(&req["bedrock"], "modelId");
        assert!(model == "amazon.nova-pro-v1:0" || model == BEDROCK_ARN, "{req}");
        assert_eq!(req["headers"]["authorization"], "Bearer ABSK-provider-key", "{req}");
        assert!(body.get("model").is_none() && body["messages"].is_array(), "{body}");
    }
    let usage = gw.usage_rows().await;
    assert!(usage.iter().any(|r| r["consumer"] == "alice"), "spend recorded for the caller: {usage:?}");
}

#[tokio::test]
async fn a_gemini_safety_block_reaches_openai_clients_as_a_refusal_and_is_counted() {
    let gw = Gateway::start(Options::default()).await.unwrap();
    let ask = |stream: bool| json!({"model": "gemini-2.5-flash", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/chat/completions", &ask(false), &[("x-mock-gemini-block", "prompt")]).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter", "{body}");
    assert!(text(&body["choices"][0]["message"], "refusal").contains("SAFETY"), "{body}");
    let resp = gw.post_with("/v1/chat/completions", &ask(true), &[("x-mock-gemini-block", "answer")]).await;
    let stream = resp.text().await.unwrap();
    assert!(
        stream.contains("\"finish_reason\":\"content_filter\"") && stream.trim_end().ends_with("data: [DONE]"),
        "{stream}"
    );
    let counted =
        gw.sidecar_metric(r#"tollgate_provider_problems_total{provider="mock",problem="safety_block"}"#).await;
    assert_eq!(counted, Some(2), "one per refused request");
}
