//! The official `google-genai` Python SDK parses the mock provider's Gemini
//! API and Vertex AI answers (no gateway in between): plain, streamed,
//! thinking, function calls (declared, streamed, answered), safety blocks,
//! errors, token counting, embeddings, and Vertex AI through a service
//! account whose token endpoint is the mock's (with a token refreshed after
//! it expired).
//!
//! The script runs with the Tollgate venv's Python (`$TOLLGATE_HOME/venv`),
//! where `scripts/install.sh` installs the SDK from
//! `scripts/requirements-sdk.txt`. A missing venv or SDK fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;
use tollgate_ext_proc::cli::launch::{self, wait_ready, Proc};

/// `tollgate mock` on a free loopback port, its tokens living `ttl` seconds.
async fn start_mock(ttl: u64, log: &Path) -> (Proc, String) {
    let paths = tollgate_e2e::paths().unwrap();
    let addr = format!("127.0.0.1:{}", tollgate_e2e::test_port().unwrap());
    let mut mock = Proc::spawn(
        "mock",
        Command::new(&paths.tollgate).args(["mock", "--listen", &addr, "--token-ttl-secs", &ttl.to_string()]),
        log,
    )
    .unwrap();
    wait_ready(&mut mock, &addr, "/healthz", Duration::from_secs(20)).await.unwrap();
    (mock, addr)
}

#[tokio::test]
async fn google_genai_sdk_parses_the_mock() {
    let dir = std::env::temp_dir().join(format!("tollgate-gemini-mock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("mock.log");
    let (mut mock, addr) = start_mock(2, &log).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gemini").join("genai_client.py");
    let out = tollgate_e2e::python::run(&script, &[format!("http://{addr}")]).await;
    let (_, recorded) = launch::http_get(&addr, "/mock/requests").await.unwrap();
    mock.stop(Duration::from_secs(5)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "genai_client.py failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- mock log\n{}",
        out.status,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no JSON ({e}):\n{stdout}\n{stderr}"));
    let reply = |t: &str| format!("Mock reply to: {t}");
    let tokens = |t: &str| (t.chars().count() as u64).div_ceil(4);

    let plain = &v["plain"];
    assert_eq!(plain["text"], reply("Hello from the SDK"));
    assert_eq!(plain["finish"], "STOP");
    assert_eq!(plain["role"], "model");
    assert_eq!(plain["model_version"], "gemini-2.5-flash");
    assert_eq!(plain["usage"]["prompt"], tokens("Hello from the SDK") + tokens("Be brief."));
    assert_eq!(plain["usage"]["candidates"], tokens(&reply("Hello from the SDK")));

    let stream = &v["stream"];
    assert_eq!(stream["text"], reply("Stream me a reply"));
    assert!(stream["chunks"].as_u64().unwrap() >= 3, "{stream}");
    assert_eq!(stream["finishes_before_last"], stream["chunks"].as_u64().unwrap() - 1);
    assert_eq!(stream["finish"], "STOP");
    assert_eq!(stream["usage"]["candidates"], tokens(&reply("Stream me a reply")));

    assert_eq!(v["capped"]["finish"], "MAX_TOKENS");
    assert_eq!(v["capped"]["usage"]["candidates"], 2);
    assert_eq!(v["thinking"]["thought_parts"], 1);
    assert_eq!(v["thinking"]["text"], reply("Think first"), "the SDK's text leaves thoughts out");
    assert!(v["thinking"]["usage"]["thoughts"].as_u64().unwrap() > 0);

    for key in ["function_call", "function_call_stream"] {
        let call = &v[key];
        assert_eq!(call["count"], 1, "{key}");
        assert_eq!(call["name"], "get_weather", "{key}");
        assert_eq!(call["args"], json!({"query": "Use the weather tool for Paris"}), "{key}");
    }
    assert_eq!(v["function_result"]["calls"], 0);
    assert_eq!(v["function_result"]["text"], reply("Use the weather tool for Paris"));

    let blocked = &v["blocked"];
    assert_eq!(blocked["prompt_block"], "SAFETY");
    assert_eq!(blocked["prompt_candidates"], 0);
    assert!(blocked["prompt_text"].is_null());
    assert_eq!(blocked["answer_finish"], "SAFETY");
    assert!(blocked["answer_text"].is_null());
    assert_eq!(blocked["answer_blocked"], json!(["HARM_CATEGORY_DANGEROUS_CONTENT"]));

    assert_eq!(v["error"]["code"], 429);
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(v["count"]["total"], tokens("Count these tokens please"));
    assert_eq!(v["embed"], json!({"count": 2, "dims": 16, "deterministic": true, "distinct": true}));

    let vertex = &v["vertex"];
    assert_eq!(vertex["text"], reply("Hello Vertex"));
    assert_eq!(vertex["create_time"], true);
    assert_eq!(vertex["stream_text"], reply("Stream from Vertex"));
    assert_eq!(vertex["stream_finish"], "STOP");
    assert_eq!(vertex["stream_usage"]["candidates"], tokens(&reply("Stream from Vertex")));
    assert_eq!(vertex["count"], tokens("Count on Vertex"));
    assert_eq!(vertex["after_expiry"], reply("After expiry"));
    assert_ne!(vertex["first_token"], vertex["refreshed_token"], "a new token after the first expired");

    // What reached the mock: the key as x-goog-api-key on the Gemini API,
    // access tokens from the mock's own /token on Vertex AI.
    let recorded: Vec<Value> = serde_json::from_str(&recorded).unwrap();
    let path_of = |r: &Value| r["path"].as_str().unwrap_or("").to_owned();
    let gemini: Vec<&Value> = recorded.iter().filter(|r| path_of(r).contains("/models/gemini")).collect();
    let (vertex_calls, api_calls): (Vec<&Value>, Vec<&Value>) =
        gemini.iter().partition(|r| path_of(r).contains("/projects/mock-project/"));
    assert!(!api_calls.is_empty());
    assert!(api_calls.iter().all(|r| r["headers"]["x-goog-api-key"] == "test-gemini-key"), "{api_calls:?}");
    assert_eq!(vertex_calls.len(), 4, "{vertex_calls:?}");
    assert!(vertex_calls
        .iter()
        .all(|r| r["headers"]["authorization"].as_str().unwrap_or("").starts_with("Bearer mock-token-")));
    let exchanges = recorded.iter().filter(|r| r["path"] == "/token").count();
    assert!(exchanges >= 2, "at least one refresh: {exchanges} token exchanges");
    let _ = std::fs::remove_dir_all(&dir);
}
