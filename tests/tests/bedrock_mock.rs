//! The official AWS SDK for Python (boto3's `bedrock-runtime` client) parses
//! the mock provider's Amazon Bedrock Runtime answers (no gateway in
//! between): Converse, ConverseStream (the event stream iterated), a tool
//! call (whole, streamed and answered), InvokeModel and
//! InvokeModelWithResponseStream for a Claude model, a model given as an
//! inference-profile ARN (percent-encoded by botocore), a throttling error,
//! a validation error, an access-denied error and an exception frame in the
//! middle of a stream; signed with SigV4 from static test credentials, then
//! with a Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`).
//!
//! The script runs with the Tollgate venv's Python (`$TOLLGATE_HOME/venv`),
//! where `scripts/install.sh` installs boto3 from
//! `scripts/requirements-sdk.txt`. A missing venv or SDK fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;
use tollgate_ext_proc::cli::launch::{self, wait_ready, Proc};

const ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

#[tokio::test]
async fn boto3_parses_the_mock() {
    let dir = std::env::temp_dir().join(format!("tollgate-bedrock-mock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("mock.log");
    let paths = tollgate_e2e::paths().unwrap();
    let addr = format!("127.0.0.1:{}", tollgate_e2e::test_port().unwrap());
    let mut mock = Proc::spawn("mock", Command::new(&paths.tollgate).args(["mock", "--listen", &addr]), &log).unwrap();
    wait_ready(&mut mock, &addr, "/healthz", Duration::from_secs(20)).await.unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bedrock").join("boto3_client.py");
    let out = tollgate_e2e::python::run(&script, &[format!("http://{addr}")]).await;
    let (_, recorded) = launch::http_get(&addr, "/mock/requests").await.unwrap();
    mock.stop(Duration::from_secs(5)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "boto3_client.py failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- mock log\n{}",
        out.status,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no JSON ({e}):\n{stdout}\n{stderr}"));
    let reply = |t: &str| format!("Mock reply to: {t}");
    let tokens = |t: &str| (t.chars().count() as u64).div_ceil(4);

    for key in ["converse", "arn"] {
        let c = &v[key];
        assert_eq!(c["text"], reply("Hello from boto3"), "{key}");
        assert_eq!(c["role"], "assistant");
        assert_eq!(c["stop"], "end_turn");
        let input = tokens("Hello from boto3") + tokens("Be brief.");
        let output = tokens(&reply("Hello from boto3"));
        assert_eq!(c["usage"], json!({"input": input, "output": output, "total": input + output}), "{key}");
        assert_eq!(c["request_id"].as_str().unwrap().len(), 36, "x-amzn-requestid reaches the SDK");
    }

    let stream = &v["stream"];
    assert_eq!(stream["text"], reply("Stream me a reply"));
    assert_eq!(stream["stop"], "end_turn");
    let kinds: Vec<&str> = stream["events"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(kinds[kinds.len() - 3..], ["contentBlockStop", "messageStop", "metadata"]);
    assert!(kinds.iter().filter(|k| **k == "contentBlockDelta").count() >= 3);
    assert_eq!(stream["usage"]["output"], tokens(&reply("Stream me a reply")));

    let tool = &v["tool"];
    assert_eq!(tool["stop"], "tool_use");
    assert_eq!(tool["name"], "top_song");
    assert_eq!(tool["input"], json!({"query": "Use the tool for WZPZ"}));
    assert!(tool["id"].as_str().unwrap().starts_with("tooluse_"));
    assert_eq!(tool["stream_name"], "top_song");
    assert!(tool["stream_pieces"].as_u64().unwrap() >= 2);
    assert_eq!(tool["stream_input"], json!({"query": "Use the tool for WZPZ"}));
    assert_eq!(tool["stream_stop"], "tool_use");
    assert_eq!(tool["answered_stop"], "end_turn");
    assert_eq!(tool["answered_text"], reply("Use the tool for WZPZ"));

    for (key, model) in [("invoke", "claude-3-5-sonnet-20240620"), ("invoke_arn", "claude-sonnet-4-5-20250929")] {
        let i = &v[key];
        assert_eq!(i["content_type"], "application/json", "{key}");
        assert_eq!(i["text"], reply("Hello Claude on Bedrock"), "{key}");
        assert_eq!(i["model"], model, "{key}");
        assert_eq!(i["stop"], "end_turn");
        assert_eq!(i["input_tokens"], tokens("Hello Claude on Bedrock"));
        assert_eq!(i["header_input_tokens"], i["input_tokens"]);
        assert_eq!(i["stream_content_type"], "application/json");
        assert_eq!(i["stream_text"], reply("Hello Claude on Bedrock"));
        let types = i["stream_types"].as_array().unwrap();
        assert_eq!(types.first(), Some(&json!("message_start")));
        assert_eq!(types.last(), Some(&json!("message_stop")));
        assert!(!types.contains(&json!("ping")));
        assert_eq!(i["metrics"]["inputTokenCount"], i["input_tokens"]);
        assert_eq!(i["metrics"]["outputTokenCount"], tokens(&reply("Hello Claude on Bedrock")));
    }

    let errors = &v["errors"];
    assert_eq!(errors["throttling"]["code"], "ThrottlingException");
    assert_eq!(errors["throttling"]["status"], 429);
    assert_eq!(errors["validation"]["code"], "ValidationException");
    assert!(errors["validation"]["message"].as_str().unwrap().contains("must start with a user message"));
    assert_eq!(errors["access_denied"]["code"], "AccessDeniedException");
    assert!(errors["access_denied"]["message"].as_str().unwrap().contains("don't have access"));
    assert_eq!(errors["stream_error"]["code"], "throttlingException");
    assert!(reply("A long enough answer to cut").starts_with(errors["stream_error"]["text_before"].as_str().unwrap()));
    assert!(!errors["stream_error"]["text_before"].as_str().unwrap().is_empty());

    assert_eq!(v["bearer"]["text"], reply("Hello with a key"));
    assert_eq!(v["bearer"]["stream_text"], reply("Stream with a key"));

    // What reached the mock: SigV4 scoped to us-east-1/bedrock, the ARN
    // percent-encoded in the path and decoded in the record, the API key as
    // a bearer token.
    let recorded: Vec<Value> = serde_json::from_str(&recorded).unwrap();
    let calls: Vec<&Value> = recorded.iter().filter(|r| r["bedrock"].is_object()).collect();
    let (bearer, signed): (Vec<&Value>, Vec<&Value>) =
        calls.iter().partition(|r| r["bedrock"]["auth"]["scheme"] == "bearer");
    assert_eq!(bearer.len(), 2, "{bearer:?}");
    assert!(bearer.iter().all(|r| r["headers"]["authorization"] == "Bearer ABSKtest-bedrock-api-key"));
    assert!(!signed.is_empty());
    for r in &signed {
        let auth = &r["bedrock"]["auth"];
        assert_eq!(auth["scheme"], "sigv4", "{r}");
        assert_eq!(auth["accessKeyId"], "AKIDEXAMPLE");
        assert_eq!(auth["region"], "us-east-1");
        assert_eq!(auth["service"], "bedrock");
        assert!(auth["signedHeaders"].as_array().unwrap().contains(&json!("x-amz-date")), "{r}");
    }
    let arn_calls: Vec<&&Value> = calls.iter().filter(|r| r["bedrock"]["modelId"] == ARN).collect();
    assert_eq!(arn_calls.len(), 3, "one Converse and two InvokeModel calls name the ARN");
    assert!(arn_calls.iter().all(|r| r["path"].as_str().unwrap().contains("%3Ainference-profile%2Fus.anthropic.")));
    let ops: Vec<&str> = arn_calls.iter().map(|r| r["bedrock"]["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["Converse", "InvokeModel", "InvokeModelWithResponseStream"]);
    assert!(calls.iter().all(|r| r["bedrock"]["modelId"] == ARN || r["bedrock"]["modelId"] == MODEL));
    let _ = std::fs::remove_dir_all(&dir);
}
