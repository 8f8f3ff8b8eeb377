//! The Gemini API, Vertex AI (Gemini and Anthropic models) and the OAuth2
//! token endpoint against the fixtures of `core/tests/fixtures/gemini/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{assert_same_key_order, assert_same_keys, client, gemini_fixture, parse_sse, reply, tokens, Server};
use serde_json::{json, Value};
use tollgate_mock::MockConfig;

const MODEL: &str = "gemini-2.5-flash";

fn gemini_path(verb: &str) -> String {
    format!("/v1beta/models/{MODEL}:{verb}")
}

fn vertex_path(publisher: &str, model: &str, verb: &str) -> String {
    format!("/v1/projects/p/locations/us-central1/publishers/{publisher}/models/{model}:{verb}")
}

async fn post(server: &Server, path: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(server.url(path)).header("x-goog-api-key", "k").json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn hello(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// The `data:` payloads of a Gemini SSE body, checking Google's framing.
fn sse_chunks(body: &str) -> Vec<String> {
    assert!(body.ends_with("\r\n\r\n"), "events end with CRLF CRLF: {body:?}");
    body.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_owned())
        .collect()
}

/// The chunks of a recorded SSE fixture.
fn fixture_chunks(name: &str) -> Vec<String> {
    sse_chunks(&gemini_fixture(name))
}

#[tokio::test]
async fn generate_content_matches_the_recorded_shape() {
    let server = Server::default().await;
    let resp = post(&server, &gemini_path("generateContent"), &hello("Hello there"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("{\n  \""), "pretty-printed like Google's: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let expected = reply("Hello there");
    assert_eq!(body["candidates"][0]["content"], json!({"parts": [{"text": expected}], "role": "model"}));
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["modelVersion"], MODEL);
    assert_eq!(body["responseId"].as_str().unwrap().len(), 23);
    let usage = &body["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], tokens("Hello there"));
    assert_eq!(usage["candidatesTokenCount"], tokens(&expected));
    assert_eq!(usage["totalTokenCount"], tokens("Hello there") + tokens(&expected));
    let fixture = gemini_fixture("generate_content.json");
    assert_same_keys("generateContent", &body, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("generateContent", &text, &fixture);

    // The same on /v1/models/…, with the key as ?key= and snake_case fields.
    let resp = client()
        .post(server.url(&format!("/v1/models/{MODEL}:generateContent?key=k")))
        .json(&json!({"contents": [{"parts": [{"text": "Hi"}]}], "generation_config": {"temperature": 0.5},
                      "system_instruction": {"parts": [{"text": "Be brief."}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], reply("Hi"));
    assert_eq!(body["usageMetadata"]["promptTokenCount"], tokens("Hi") + tokens("Be brief."));
}

#[tokio::test]
async fn thinking_adds_thought_parts_and_thought_tokens() {
    let server = Server::default().await;
    let mut req = hello("Think first");
    req["generationConfig"] = json!({"thinkingConfig": {"thinkingBudget": 128, "includeThoughts": true}});
    let text = post(&server, &gemini_path("generateContent"), &req, &[]).await.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let parts = body["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["thought"], true);
    let usage = &body["usageMetadata"];
    let thoughts = usage["thoughtsTokenCount"].as_u64().unwrap();
    assert!(thoughts > 0);
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap() + usage["candidatesTokenCount"].as_u64().unwrap() + thoughts
    );
    let fixture = gemini_fixture("generate_content_thinking.json");
    assert_same_keys("thinking", &body, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("thinking", &text, &fixture);

    // A budget without includeThoughts: thought tokens, no thought parts.
    req["generationConfig"] = json!({"thinkingConfig": {"thinkingBudget": 128}});
    let body: Value = post(&server, &gemini_path("generateContent"), &req, &[]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"].as_array().unwrap().len(), 1);
    assert_eq!(body["usageMetadata"]["thoughtsTokenCount"], thoughts);
}

#[tokio::test]
async fn stream_with_alt_sse_is_framed_like_google() {
    let server = Server::default().await;
    let prompt = "Stream a few words please";
    let resp = post(&server, &format!("{}?alt=sse", gemini_path("streamGenerateContent")), &hello(prompt), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let chunks = sse_chunks(&resp.text().await.unwrap());
    assert!(chunks.len() >= 3, "{chunks:?}");
    let recorded = fixture_chunks("stream_generate_content.sse");
    let (first, last) = (recorded.first().unwrap(), recorded.last().unwrap());
    let mut text = String::new();
    let mut previous = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let v: Value = serde_json::from_str(chunk).unwrap();
        text.push_str(v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap());
        let out = v["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap();
        assert!(out >= previous, "usage is cumulative");
        previous = out;
        let is_last = i + 1 == chunks.len();
        assert_eq!(v["candidates"][0].get("finishReason").is_some(), is_last);
        let fixture = if is_last { last } else { first };
        assert_same_key_order(&format!("chunk {i}"), chunk, fixture);
    }
    let expected = reply(prompt);
    assert_eq!(text, expected);
    assert_eq!(previous, tokens(&expected), "the last chunk's count is the whole answer's");
}

#[tokio::test]
async fn stream_without_alt_is_one_json_array() {
    let server = Server::default().await;
    let resp = post(&server, &gemini_path("streamGenerateContent"), &hello("Array please"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body = resp.text().await.unwrap();
    assert!(body.starts_with('[') && body.ends_with(']') && body.contains("\n,\r\n"), "{body}");
    let chunks: Vec<Value> = serde_json::from_str(&body).unwrap();
    let text: String =
        chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, reply("Array please"));
    let recorded: Vec<Value> = serde_json::from_str(&gemini_fixture("stream_generate_content.json")).unwrap();
    assert_same_keys("last chunk", chunks.last().unwrap(), recorded.last().unwrap());
}

fn weather_tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather in a city",
         "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {"tz": {"type": "STRING"}}}}
    ]}])
}

#[tokio::test]
async fn function_calls_follow_the_mock_tool_rules() {
    let server = Server::default().await;
    let mut req = hello("Use the tool for Paris");
    req["tools"] = weather_tools();
    let text = post(&server, &gemini_path("generateContent"), &req, &[]).await.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let call = &body["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"query": "Use the tool for Paris"}));
    assert!(call.get("id").is_none());
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    // The arguments are the mock's own; everything around them as recorded.
    let mut fixture: Value = serde_json::from_str(&gemini_fixture("function_call.json")).unwrap();
    fixture["candidates"][0]["content"]["parts"][0]["functionCall"]["args"] = json!({});
    let mut mock = body.clone();
    mock["candidates"][0]["content"]["parts"][0]["functionCall"]["args"] = json!({});
    assert_same_keys("function call", &mock, &fixture);
    let order = |t: &str| {
        let mut o = common::key_orders(t);
        o.remove("candidates[].content.parts[].functionCall.args");
        o
    };
    assert_eq!(order(&text), order(&gemini_fixture("function_call.json")), "function call: key order");

    // Streamed: the call arrives whole, in the last chunk.
    let resp = post(&server, &format!("{}?alt=sse", gemini_path("streamGenerateContent")), &req, &[]).await;
    let chunks = sse_chunks(&resp.text().await.unwrap());
    assert_eq!(chunks.len(), 1);
    let v: Value = serde_json::from_str(&chunks[0]).unwrap();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "get_weather");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    // NONE never calls; ANY always does, the first allowed name first.
    let mut plain = hello("Just chat with me");
    plain["tools"] = weather_tools();
    let body: Value = post(&server, &gemini_path("generateContent"), &plain, &[]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], reply("Just chat with me"));
    plain["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let body: Value = post(&server, &gemini_path("generateContent"), &plain, &[]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "get_time");
    req["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let body: Value = post(&server, &gemini_path("generateContent"), &req, &[]).await.json().await.unwrap();
    assert!(body["candidates"][0]["content"]["parts"][0].get("text").is_some());

    // A function result ends the turn with text, its response counted.
    let turn = json!({"tools": weather_tools(), "contents": [
        {"role": "user", "parts": [{"text": "Use the tool for Paris"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]}
    ]});
    let body: Value = post(&server, &gemini_path("generateContent"), &turn, &[]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], reply("Use the tool for Paris"));
    let prompt = tokens("Use the tool for Paris") + tokens(r#"{"city":"Paris"}"#) + tokens(r#"{"temp_c":21}"#);
    assert_eq!(body["usageMetadata"]["promptTokenCount"], prompt);
}

#[tokio::test]
async fn limits_stops_json_mode_candidates_and_cached_content() {
    let server = Server::default().await;
    let mut req = hello("Please answer at some length");
    req["generationConfig"] = json!({"maxOutputTokens": 2});
    let body: Value = post(&server, &gemini_path("generateContent"), &req, &[]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "Mock rep");
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 2);

    req["generationConfig"] = json!({"stopSequences": ["answer"]});
    let body: Value = post(&server, &gemini_path("generateContent"), &req, &[]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "Mock reply to: Please ");

    req["generationConfig"] = json!({"responseMimeType": "application/json", "candidateCount": 2,
                                     "responseSchema": {"type": "STRING"}});
    let body: Value = post(&server, &gemini_path("generateContent"), &req, &[]).await.json().await.unwrap();
    let candidates = body["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2);
    assert_eq!(candidates[1]["index"], 1);
    let answer = candidates[0]["content"]["parts"][0]["text"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(answer).unwrap(), json!(reply("Please answer at some length")));

    let mut req = hello("With a cache");
    req["cachedContent"] = json!("cachedContents/abc");
    let body: Value = post(&server, &gemini_path("generateContent"), &req, &[]).await.json().await.unwrap();
    let usage = &body["usageMetadata"];
    assert_eq!(usage["cachedContentTokenCount"], 32);
    assert_eq!(usage["promptTokenCount"], tokens("With a cache") + 32);
    assert_eq!(usage["cacheTokensDetails"][0]["tokenCount"], 32);
}

#[tokio::test]
async fn safety_blocks_on_request() {
    let server = Server::default().await;
    let path = gemini_path("generateContent");
    let text = post(&server, &path, &hello("x"), &[("x-mock-gemini-block", "prompt")]).await.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["promptFeedback"]["blockReason"], "SAFETY");
    assert!(body.get("candidates").is_none());
    let fixture = gemini_fixture("prompt_blocked.json");
    assert_same_keys("prompt block", &body, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("prompt block", &text, &fixture);

    let text = post(&server, &path, &hello("x"), &[("x-mock-gemini-block", "answer")]).await.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["candidates"][0]["finishReason"], "SAFETY");
    assert!(body["candidates"][0].get("content").is_none());
    let fixture = gemini_fixture("candidate_safety.json");
    assert_same_keys("answer block", &body, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("answer block", &text, &fixture);

    // Streamed, part of the answer goes out before the SAFETY chunk.
    let stream = format!("{}?alt=sse", gemini_path("streamGenerateContent"));
    let resp = post(&server, &stream, &hello("one two three four"), &[("x-mock-gemini-block", "answer")]).await;
    let chunks: Vec<Value> =
        sse_chunks(&resp.text().await.unwrap()).iter().map(|c| serde_json::from_str(c).unwrap()).collect();
    assert!(chunks.len() >= 2);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "SAFETY");
    assert!(chunks[0]["candidates"][0]["content"]["parts"][0]["text"].is_string());
    let resp = post(&server, &stream, &hello("x"), &[("x-mock-gemini-block", "prompt")]).await;
    let chunks = sse_chunks(&resp.text().await.unwrap());
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].contains("\"blockReason\":\"SAFETY\""));
}

#[tokio::test]
async fn invalid_requests_get_google_errors() {
    let server = Server::default().await;
    let path = gemini_path("generateContent");
    let resp = post(&server, &path, &json!({"contents": []}), &[]).await;
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    let fixture = gemini_fixture("error_invalid_argument.json");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), serde_json::from_str::<Value>(&fixture).unwrap());
    assert_same_key_order("error", &text, &fixture);

    let cases = [
        (json!({}), "contents is not specified"),
        (
            json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
            "Please use a valid role: user, model.",
        ),
        (json!({"contents": [{"role": "user", "parts": []}]}), "contents[0].parts: contents.parts must not be empty"),
        (json!({"contents": [{"parts": [{}]}]}), "required oneof field 'data'"),
        (json!({"contents": [{"parts": [{"text": "x"}]}], "foo": 1}), "Unknown name \"foo\""),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "9bad"}]}]}),
            "Invalid function name",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["a"]}}}),
            "allowed_function_names",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}),
            "tool_config.function_calling_config.mode",
        ),
        (json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": 3}}), "temperature"),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 0}}),
            "max_output_tokens",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/html"}}),
            "allowed mimetypes",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseSchema": {"type": "STRING"}}}),
            "response_mime_type must be set",
        ),
        (
            json!({"contents": [{"parts": [{"text": "x"}]}], "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "SOMETIMES"}]}),
            "threshold",
        ),
    ];
    for (body, needle) in cases {
        let resp = post(&server, &path, &body, &[]).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], 400);
        assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }

    let resp = client().post(server.url(&path)).body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");
    let resp = post(&server, &format!("/v1beta/models/{MODEL}:fly"), &hello("x"), &[]).await;
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn control_headers_speak_google() {
    let server = Server::default().await;
    let path = gemini_path("generateContent");
    let resp = post(&server, &path, &hello("x"), &[("x-mock-status", "429")]).await;
    assert_eq!(resp.status(), 429);
    let text = resp.text().await.unwrap();
    let fixture = gemini_fixture("error_resource_exhausted.json");
    assert_same_keys("429", &serde_json::from_str(&text).unwrap(), &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("429", &text, &fixture);
    for (code, status) in
        [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"), (500, "INTERNAL"), (503, "UNAVAILABLE")]
    {
        let resp = post(&server, &path, &hello("x"), &[("x-mock-status", &code.to_string())]).await;
        assert_eq!(resp.status(), code);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["status"], status);
    }
    // x-mock-fail-model reads the model from the path.
    let fail = [("x-mock-fail-model", "gemini-2.5-flash=503,other=500")];
    assert_eq!(post(&server, &path, &hello("x"), &fail).await.status(), 503);
    let other = "/v1beta/models/gemini-2.5-pro:generateContent";
    assert_eq!(post(&server, other, &hello("x"), &fail).await.status(), 200);
    // x-mock-append and the chunk delay.
    let body: Value = post(&server, &path, &hello("hi"), &[("x-mock-append", "EXTRA")]).await.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], format!("{} EXTRA", reply("hi")));
    let started = std::time::Instant::now();
    let stream = format!("{}?alt=sse", gemini_path("streamGenerateContent"));
    let resp = post(&server, &stream, &hello("a b c"), &[("x-mock-chunk-delay-ms", "60")]).await;
    let chunks = sse_chunks(&resp.text().await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(60 * (chunks.len() as u64 - 1)));
}

#[tokio::test]
async fn count_tokens_and_embeddings() {
    let server = Server::default().await;
    let text =
        post(&server, &gemini_path("countTokens"), &hello("Count these tokens"), &[]).await.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["totalTokens"], tokens("Count these tokens"));
    let fixture = gemini_fixture("count_tokens.json");
    assert_same_key_order("countTokens", &text, &fixture);
    let wrapped = json!({"generateContentRequest": {"model": format!("models/{MODEL}"),
                         "contents": [{"parts": [{"text": "Count these tokens"}]}]}});
    let body: Value = post(&server, &gemini_path("countTokens"), &wrapped, &[]).await.json().await.unwrap();
    assert_eq!(body["totalTokens"], tokens("Count these tokens"));

    let emb = "/v1beta/models/gemini-embedding-001:embedContent";
    let req = json!({"content": {"parts": [{"text": "embed me"}]}, "outputDimensionality": 16});
    let text = post(&server, emb, &req, &[]).await.text().await.unwrap();
    let one: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(one["embedding"]["values"].as_array().unwrap().len(), 16);
    assert_same_key_order("embedContent", &text, &gemini_fixture("embed_content.json"));
    let batch = "/v1beta/models/gemini-embedding-001:batchEmbedContents";
    let req = json!({"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "embed me"}]}, "outputDimensionality": 16},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "and me"}]}}
    ]});
    let text = post(&server, batch, &req, &[]).await.text().await.unwrap();
    let many: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(many["embeddings"][0]["values"], one["embedding"]["values"], "deterministic");
    assert_eq!(many["embeddings"][1]["values"].as_array().unwrap().len(), 8);
    assert_same_key_order("batchEmbedContents", &text, &gemini_fixture("batch_embed_contents.json"));
    let bad = json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "x"}]}}]});
    assert_eq!(post(&server, batch, &bad, &[]).await.status(), 400);

    let list: Value = client().get(server.url("/v1beta/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["models"][0]["name"], "models/mock-chat");
    let model: Value =
        client().get(server.url(&format!("/v1beta/models/{MODEL}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(model["name"], format!("models/{MODEL}"));
}

// ------------------------------------------------------------ Vertex AI

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A service-account JWT of the right form (the mock does not check the
/// signature, so it is a placeholder).
fn jwt(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(b"not-a-real-signature")
    )
}

fn claims() -> Value {
    let t = now();
    json!({"iss": "sa@p.iam.gserviceaccount.com", "aud": "https://oauth2.googleapis.com/token",
           "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": t, "exp": t + 3600})
}

async fn exchange(server: &Server, assertion: &str) -> reqwest::Response {
    client()
        .post(server.url("/token"))
        .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion)])
        .send()
        .await
        .unwrap()
}

async fn token(server: &Server) -> String {
    let resp = exchange(server, &jwt(&json!({"alg": "RS256", "typ": "JWT"}), &claims())).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_same_key_order("token", &text, &gemini_fixture("oauth_token.json"));
    let body: Value = serde_json::from_str(&text).unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn vertex(server: &Server, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = client().post(server.url(path)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn token_endpoint_checks_the_assertion_and_tokens_expire() {
    let server = Server::start(MockConfig { token_ttl_secs: 1, ..MockConfig::default() }).await;
    let good_header = json!({"alg": "RS256", "typ": "JWT"});
    let resp = exchange(&server, &jwt(&good_header, &claims())).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 1);
    assert_eq!(body["token_type"], "Bearer");
    let first = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(first, "mock-token-1");

    let mut stale = claims();
    stale["exp"] = json!(now() - 10);
    stale["iat"] = json!(now() - 100);
    let mut long = claims();
    long["exp"] = json!(now() + 7200);
    let mut no_scope = claims();
    no_scope.as_object_mut().unwrap().remove("scope");
    let mut no_iss = claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    for (assertion, error) in [
        ("only.two".to_owned(), "invalid_grant"),
        ("!!.??.##".to_owned(), "invalid_grant"),
        (jwt(&json!({"alg": "HS256"}), &claims()), "invalid_grant"),
        (jwt(&good_header, &stale), "invalid_grant"),
        (jwt(&good_header, &long), "invalid_grant"),
        (jwt(&good_header, &no_iss), "invalid_grant"),
        (jwt(&good_header, &no_scope), "invalid_scope"),
    ] {
        let resp = exchange(&server, &assertion).await;
        assert_eq!(resp.status(), 400, "{assertion}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], error, "{assertion}: {body}");
    }
    let resp = client().post(server.url("/token")).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    let text = exchange(&server, &jwt(&good_header, &stale)).await.text().await.unwrap();
    assert_same_key_order("invalid_grant", &text, &gemini_fixture("oauth_invalid_grant.json"));

    // Only issued, unexpired tokens pass; Google's 401 otherwise.
    let path = vertex_path("google", MODEL, "generateContent");
    let resp = vertex(&server, &path, None, &hello("x")).await;
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(err["error"]["details"][0]["reason"], "CREDENTIALS_MISSING");
    assert_eq!(vertex(&server, &path, Some("forged"), &hello("x")).await.status(), 401);
    assert_eq!(vertex(&server, &path, Some(&first), &hello("x")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = vertex(&server, &path, Some(&first), &hello("x")).await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["details"][0]["reason"], "ACCESS_TOKEN_EXPIRED");
    let fixture: Value = serde_json::from_str(&gemini_fixture("vertex_unauthenticated.json")).unwrap();
    assert_eq!(err["error"]["code"], fixture["error"]["code"]);
    assert_eq!(err["error"]["status"], fixture["error"]["status"]);
    // A fresh token works again; the exchanges are recorded.
    let second = token(&server).await;
    assert_ne!(second, first);
    assert_eq!(vertex(&server, &path, Some(&second), &hello("x")).await.status(), 200);
    let recorded: Vec<Value> = client().get(server.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    let exchanges = recorded.iter().filter(|r| r["path"] == "/token").count();
    assert_eq!(exchanges, 11);
}

#[tokio::test]
async fn vertex_gemini_matches_vertex_shapes() {
    let server = Server::default().await;
    let token = token(&server).await;
    let path = vertex_path("google", MODEL, "generateContent");
    let resp = vertex(&server, &path, Some(&token), &hello("Hello Vertex")).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], reply("Hello Vertex"));
    assert_eq!(body["usageMetadata"]["trafficType"], "ON_DEMAND");
    let fixture = gemini_fixture("vertex_generate_content.json");
    assert_same_keys("vertex", &body, &serde_json::from_str(&fixture).unwrap());
    assert_same_key_order("vertex", &text, &fixture);

    // v1beta1 (the SDK's default) and streaming with usage on the last chunk.
    let stream = format!(
        "/v1beta1/projects/p/locations/us-central1/publishers/google/models/{MODEL}:streamGenerateContent?alt=sse"
    );
    let resp = vertex(&server, &stream, Some(&token), &hello("Stream from Vertex")).await;
    let chunks = sse_chunks(&resp.text().await.unwrap());
    let recorded = fixture_chunks("vertex_stream_generate_content.sse");
    for (i, chunk) in chunks.iter().enumerate() {
        let fixture = if i + 1 == chunks.len() { recorded.last().unwrap() } else { recorded.first().unwrap() };
        assert_same_key_order(&format!("vertex chunk {i}"), chunk, fixture);
    }
    let last: Value = serde_json::from_str(chunks.last().unwrap()).unwrap();
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], tokens(&reply("Stream from Vertex")));

    let text = vertex(&server, &vertex_path("google", MODEL, "countTokens"), Some(&token), &hello("Count on Vertex"))
        .await
        .text()
        .await
        .unwrap();
    assert_same_key_order("vertex countTokens", &text, &gemini_fixture("vertex_count_tokens.json"));
    let resp = vertex(&server, &path, Some(&token), &hello("x")).await;
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(server.url(&path))
        .bearer_auth(&token)
        .header("x-mock-status", "500")
        .json(&hello("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["status"], "INTERNAL");
}

#[tokio::test]
async fn anthropic_on_vertex_uses_the_messages_api() {
    let server = Server::default().await;
    let token = token(&server).await;
    let model = "claude-sonnet-4-5@20250929";
    let body = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "Hello Claude"}]});
    let resp = vertex(&server, &vertex_path("anthropic", model, "rawPredict"), Some(&token), &body).await;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["model"], model);
    assert_eq!(msg["content"][0]["text"], reply("Hello Claude"));

    let resp = vertex(&server, &vertex_path("anthropic", model, "streamRawPredict"), Some(&token), &body).await;
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(events.first().unwrap().event.as_deref(), Some("message_start"));
    assert_eq!(events.last().unwrap().event.as_deref(), Some("message_stop"));

    let mut no_version = body.clone();
    no_version.as_object_mut().unwrap().remove("anthropic_version");
    let mut with_model = body.clone();
    with_model["model"] = json!(model);
    for bad in [no_version, with_model] {
        let resp = vertex(&server, &vertex_path("anthropic", model, "rawPredict"), Some(&token), &bad).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.json::<Value>().await.unwrap()["type"], "error");
    }
    // No token: the platform's 401, in Google's shape; quota in Google's, overload in Anthropic's.
    let resp = vertex(&server, &vertex_path("anthropic", model, "rawPredict"), None, &body).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["status"], "UNAUTHENTICATED");
    for (code, google) in [(429, true), (529, false)] {
        let resp = client()
            .post(server.url(&vertex_path("anthropic", model, "rawPredict")))
            .bearer_auth(&token)
            .header("x-mock-status", code.to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), code);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"].get("status").is_some(), google, "{err}");
    }
}
