//! The sidecar's phase handlers, driven directly and through an in-process
//! tonic server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, HttpBody, HttpHeaders, ProcessingRequest,
    ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use tollgate_ext_proc::config::parse_policy;
use tollgate_ext_proc::credentials::Credential;
use tollgate_ext_proc::extproc::request_headers;
use tollgate_ext_proc::processor::{handle, StreamState};
use tollgate_ext_proc::shared::Shared;

fn shared() -> Shared {
    let policy = parse_policy(
        "providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}\n  claude: {kind: anthropic, baseUrl: 'https://api.anthropic.com'}\nmodels:\n  fast: {targets: [{provider: mock, model: mock-small}]}\n",
    )
    .unwrap();
    let mut creds = HashMap::new();
    creds.insert("claude".to_string(), Credential::new("x-api-key", "sk-ant".into()));
    Shared::new(policy, creds)
}

/// [`shared`] with a budget kept in an embedded store under `dir`.
fn shared_with_budget(dir: &std::path::Path) -> Shared {
    let mut s = shared();
    let store = tollgate_ext_proc::limits::embedded::EmbeddedStore::open(dir).unwrap();
    s.budget = Some(tollgate_ext_proc::budget::Budget::new(store.into(), &s.policy));
    s
}

fn headers_msg(h: HttpHeaders) -> ProcessingRequest {
    ProcessingRequest { request: Some(processing_request::Request::RequestHeaders(h)), ..Default::default() }
}

/// A whole body in one message.
fn whole_body(body: &str) -> HttpBody {
    HttpBody { body: body.as_bytes().to_vec(), end_of_stream: true, ..Default::default() }
}

fn body_msg(body: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestBody(whole_body(body))),
        ..Default::default()
    }
}

fn response_body_msg(body: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseBody(whole_body(body))),
        ..Default::default()
    }
}

/// Response headers (a body follows).
fn response_headers_with(pairs: &[(&str, &str)]) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::ResponseHeaders(request_headers(pairs, false))),
        ..Default::default()
    }
}

fn response_headers_msg() -> ProcessingRequest {
    response_headers_with(&[(":status", "200")])
}

/// Attributes as Envoy's ext_proc filter sends the filter state `name`.
fn filter_state(name: &str, value: &str) -> HashMap<String, Struct> {
    let fields =
        [(format!("filter_state['wasm.{name}']"), Value { kind: Some(value::Kind::StringValue(value.into())) })];
    HashMap::from([("envoy.filters.http.ext_proc".to_string(), Struct { fields: fields.into_iter().collect() })])
}

fn set_headers(resp: &ProcessingResponse) -> HashMap<String, String> {
    let common = match resp.response.as_ref().unwrap() {
        processing_response::Response::RequestHeaders(h) | processing_response::Response::ResponseHeaders(h) => {
            h.response.clone()
        }
        processing_response::Response::RequestBody(b) => b.response.clone(),
        other => panic!("unexpected {other:?}"),
    };
    common
        .and_then(|c| c.header_mutation)
        .map(|m| {
            m.set_headers
                .into_iter()
                .filter_map(|o| o.header)
                .map(|h| (h.key, String::from_utf8_lossy(&h.raw_value).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn post(path: &str) -> HttpHeaders {
    request_headers(&[(":method", "POST"), (":path", path), ("x-request-id", "rid-7")], false)
}

#[tokio::test]
async fn non_ai_requests_skip_every_later_phase() {
    let s = shared();
    let mut state = StreamState::default();
    let resp =
        handle(&s, &mut state, headers_msg(request_headers(&[(":method", "GET"), (":path", "/v1/models")], true)))
            .await;
    let mode = resp.mode_override.expect("mode override");
    assert_eq!(mode.request_body_mode, 0, "NONE");
    assert_eq!(mode.response_header_mode, 2, "SKIP");
    assert!(matches!(state, StreamState::Passthrough));
}

#[tokio::test]
async fn routes_alias_rewrites_model_and_sets_backend() {
    let s = shared();
    let mut state = StreamState::default();
    let resp = handle(&s, &mut state, headers_msg(post("/v1/chat/completions"))).await;
    assert!(resp.mode_override.is_none());
    let body = r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#;
    let resp = handle(&s, &mut state, body_msg(body)).await;
    let headers = set_headers(&resp);
    assert_eq!(headers["x-tollgate-provider"], "mock");
    let Some(processing_response::Response::RequestBody(b)) = &resp.response else { panic!() };
    let common = b.response.as_ref().unwrap();
    assert!(common.clear_route_cache);
    let Some(body_mutation::Mutation::Body(new_body)) = common.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    else {
        panic!("no body mutation")
    };
    let v: serde_json::Value = serde_json::from_slice(&new_body).unwrap();
    assert_eq!(v["model"], "mock-small");
    assert_eq!(v["messages"][0]["content"], "hi");
    assert_eq!(headers["content-length"], new_body.len().to_string());
    let md = resp.dynamic_metadata.unwrap();
    assert!(md.fields.contains_key("io.tollgate"));

    let resp = handle(&s, &mut state, response_headers_msg()).await;
    assert_eq!(set_headers(&resp)["x-tollgate-backend"], "mock");
}

#[tokio::test]
async fn provider_key_replaces_the_client_key() {
    let s = shared();
    let mut state = StreamState::default();
    handle(&s, &mut state, headers_msg(post("/v1/messages"))).await;
    let resp = handle(
        &s,
        &mut state,
        body_msg(r#"{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await;
    let Some(processing_response::Response::RequestBody(b)) = &resp.response else { panic!() };
    let m = b.response.as_ref().unwrap().header_mutation.as_ref().unwrap();
    assert!(m.remove_headers.contains(&"x-api-key".to_string()));
    assert!(m.remove_headers.contains(&"authorization".to_string()));
    let headers = set_headers(&resp);
    // Anthropic traffic goes to the first provider (by name) that speaks it natively.
    assert_eq!(headers["x-tollgate-provider"], "claude");
    assert_eq!(headers["x-api-key"], "sk-ant");
    assert!(b.response.as_ref().unwrap().body_mutation.is_none(), "model unchanged, body untouched");
}

#[tokio::test]
async fn bad_body_is_answered_in_the_client_shape() {
    let s = shared();
    for (path, body, status, shape) in [
        ("/v1/chat/completions", "{oops", 400, "openai"),
        ("/v1/messages", r#"{"max_tokens":5,"messages":[]}"#, 400, "anthropic"),
    ] {
        let mut state = StreamState::default();
        handle(&s, &mut state, headers_msg(post(path))).await;
        let resp = handle(&s, &mut state, body_msg(body)).await;
        let Some(processing_response::Response::ImmediateResponse(ir)) = resp.response else { panic!("{path}") };
        assert_eq!(ir.status.unwrap().code, status);
        let v: serde_json::Value = serde_json::from_slice(&ir.body).unwrap();
        match shape {
            "openai" => assert!(v["error"]["message"].is_string()),
            _ => assert_eq!(v["type"], "error"),
        }
        assert!(matches!(state, StreamState::Answered));
    }
}

#[tokio::test]
async fn ai_path_without_body_is_400() {
    let s = shared();
    let mut state = StreamState::default();
    let resp =
        handle(&s, &mut state, headers_msg(request_headers(&[(":method", "POST"), (":path", "/v1/embeddings")], true)))
            .await;
    assert!(matches!(resp.response, Some(processing_response::Response::ImmediateResponse(_))));
}

#[tokio::test]
async fn through_an_in_process_tonic_server() {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_ext_proc::server::run(
        tollgate_ext_proc::config::LiveShared::new(shared()),
        grpc,
        admin,
        None,
        async {
            let _ = stop_rx.await;
        },
    ));

    let (status, body) = tollgate_ext_proc::cli::launch::http_get(&admin_addr.to_string(), "/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));

    let mut client = ExternalProcessorClient::connect(format!("http://{grpc_addr}")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client.process(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(headers_msg(post("/v1/chat/completions"))).await.unwrap();
    let r1 = responses.message().await.unwrap().unwrap();
    assert!(matches!(r1.response, Some(processing_response::Response::RequestHeaders(_))));
    tx.send(body_msg(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#)).await.unwrap();
    let r2 = responses.message().await.unwrap().unwrap();
    assert_eq!(set_headers(&r2)["x-tollgate-provider"], "mock");
    tx.send(response_headers_msg()).await.unwrap();
    let r3 = responses.message().await.unwrap().unwrap();
    assert_eq!(set_headers(&r3)["x-tollgate-backend"], "mock");
    drop(tx);
    assert!(responses.message().await.unwrap().is_none(), "stream closes after the client's half closes");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}

/// The usage the sidecar reports in its dynamic metadata at the answer's end.
fn metadata_tokens(resp: &ProcessingResponse, key: &str) -> f64 {
    let md = resp.dynamic_metadata.as_ref().expect("usage metadata");
    let Some(value::Kind::StructValue(ns)) = &md.fields["io.tollgate"].kind else { panic!("{md:?}") };
    let Some(value::Kind::NumberValue(n)) = ns.fields[key].kind else { panic!("{ns:?}") };
    n
}

#[tokio::test]
async fn the_prompt_is_counted_only_when_the_provider_reports_no_usage() {
    let dir = tempfile::tempdir().unwrap();
    let s = shared_with_budget(dir.path());
    let prompt = "The harbour town wakes slowly, with fishing boats returning before the bakeries open.";
    let body = format!(r#"{{"model":"fast","messages":[{{"role":"user","content":"{prompt}"}}]}}"#);
    let json_headers = || response_headers_with(&[(":status", "200"), ("content-type", "application/json")]);
    let answer = |usage: &str| {
        format!(
            r#"{{"id":"x","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}}}}]{usage}}}"#
        )
    };

    // No limit applies: nothing is counted before the request goes.
    let mut state = StreamState::default();
    handle(&s, &mut state, headers_msg(post("/v1/chat/completions"))).await;
    handle(&s, &mut state, body_msg(&body)).await;
    let StreamState::Routed(r) = &state else { panic!("{state:?}") };
    assert!(r.uncounted.is_some());
    assert_eq!(r.held.as_ref().unwrap().input_tokens, 0);
    handle(&s, &mut state, json_headers()).await;
    // The provider reports usage: its numbers, no count.
    let resp = handle(
        &s,
        &mut state,
        response_body_msg(&answer(r#","usage":{"prompt_tokens":21,"completion_tokens":1,"total_tokens":22}"#)),
    )
    .await;
    assert_eq!(metadata_tokens(&resp, "input_tokens"), 21.0);
    let StreamState::Routed(r) = &state else { panic!("{state:?}") };
    assert!(r.uncounted.is_some(), "not counted");

    // It reports none: the prompt is counted at the end, as it would have been before.
    let mut state = StreamState::default();
    handle(&s, &mut state, headers_msg(post("/v1/chat/completions"))).await;
    handle(&s, &mut state, body_msg(&body)).await;
    handle(&s, &mut state, json_headers()).await;
    let resp = handle(&s, &mut state, response_body_msg(&answer(""))).await;
    let expected = tollgate_ext_proc::tokens::count("mock-small", prompt) + 4 + 3;
    assert_eq!(metadata_tokens(&resp, "input_tokens"), expected as f64);
}

/// Without thresholds per caller, an audited request the filter inspected
/// is not scanned again: its record carries the report the filter left in
/// filter state (sent with the response); one the filter did not inspect is
/// scanned here.
#[tokio::test]
async fn the_audit_takes_the_filters_report_when_the_filter_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let policy = parse_policy(
        "providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}\ninspection:\n  firewall:\n    rules:\n      - {id: test-mild, phrases: ['magic words'], weight: 0.4}\n",
    )
    .unwrap();
    let mut s = Shared::new(policy, HashMap::new());
    let writer = tollgate_ext_proc::audit::AuditWriter::open(dir.path(), Default::default()).unwrap();
    s.audit = Some(std::sync::Arc::new(tollgate_ext_proc::auditing::AuditSink {
        writer,
        text: Default::default(),
        fail_mode: tollgate_core::policy::FailMode::Closed,
        errors: Default::default(),
        inflight: None,
    }));
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say the magic words."}]}"#;
    let filters_report = r#"{"firewall":{"score":0.5,"action":"flag","rules":["from-the-filter"]}}"#;
    for (id, inspected) in [("inspected", true), ("not-inspected", false)] {
        let mut state = StreamState::default();
        let mut headers = headers_msg(request_headers(
            &[(":method", "POST"), (":path", "/v1/chat/completions"), ("x-request-id", id)],
            false,
        ));
        if inspected {
            headers.attributes = filter_state("io.tollgate.inspecting", "1");
        }
        handle(&s, &mut state, headers).await;
        handle(&s, &mut state, body_msg(body)).await;
        let mut response = response_headers_msg();
        response.attributes = filter_state("io.tollgate.inspection", filters_report);
        // The answer has no body: the request is settled (and recorded) now.
        if let Some(processing_request::Request::ResponseHeaders(h)) = response.request.as_mut() {
            h.end_of_stream = true;
        }
        handle(&s, &mut state, response).await;
    }
    drop(s);
    let records: Vec<_> = tollgate_ext_proc::audit::records(dir.path()).unwrap().map(|r| r.unwrap()).collect();
    // The client's `x-request-id` is kept apart from the gateway's id.
    let find =
        |id: &str| records.iter().find(|r| r.client_request_id.as_deref() == Some(id)).unwrap().decisions.clone();
    assert_eq!(find("inspected")["firewall"]["rules"], serde_json::json!(["from-the-filter"]));
    assert_eq!(find("not-inspected")["firewall"]["rules"], serde_json::json!(["test-mild"]));
}

/// Without the filter in front, the sidecar asks an OpenAI stream for its
/// usage (the provider's count, not an estimate) and drops the extra chunk
/// for the client; behind the filter, which does that itself, it does not.
#[tokio::test]
async fn without_the_filter_a_stream_is_asked_for_its_usage() {
    let dir = tempfile::tempdir().unwrap();
    let s = shared_with_budget(dir.path());
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
        "data: [DONE]\n\n",
    );
    let sse_headers = || response_headers_with(&[(":status", "200"), ("content-type", "text/event-stream")]);
    let body_of = |resp: &ProcessingResponse| -> Option<Vec<u8>> {
        let common = match resp.response.as_ref()? {
            processing_response::Response::RequestBody(b) | processing_response::Response::ResponseBody(b) => {
                b.response.clone()?
            }
            _ => return None,
        };
        match common.body_mutation?.mutation? {
            body_mutation::Mutation::Body(b) => Some(b),
            body_mutation::Mutation::ClearBody(_) => Some(Vec::new()),
            _ => None,
        }
    };

    let mut state = StreamState::default();
    handle(&s, &mut state, headers_msg(post("/v1/chat/completions"))).await;
    let resp = handle(&s, &mut state, body_msg(body)).await;
    let sent: serde_json::Value = serde_json::from_slice(&body_of(&resp).expect("the body is rewritten")).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    assert_eq!(set_headers(&resp)["content-length"], serde_json::to_vec(&sent).unwrap().len().to_string());
    let resp = handle(&s, &mut state, sse_headers()).await;
    assert_eq!(resp.mode_override.unwrap().response_body_mode, 1, "STREAMED");
    let resp = handle(&s, &mut state, response_body_msg(stream)).await;
    let out = String::from_utf8(body_of(&resp).unwrap()).unwrap();
    assert!(out.contains("Hello") && out.ends_with("data: [DONE]\n\n"), "{out}");
    assert!(!out.contains("usage"), "{out}");
    assert_eq!(metadata_tokens(&resp, "input_tokens"), 9.0, "the provider's count");

    // Behind the filter: the body goes as the filter left it.
    let mut state = StreamState::default();
    let mut headers = headers_msg(post("/v1/chat/completions"));
    headers.attributes = filter_state("io.tollgate.inspecting", "1");
    handle(&s, &mut state, headers).await;
    let resp = handle(&s, &mut state, body_msg(body)).await;
    assert!(body_of(&resp).is_none(), "{resp:?}");
}
