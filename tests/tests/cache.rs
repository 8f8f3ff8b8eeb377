//! The response cache end to end through Envoy, the filter and the sidecar
//! (and a real Redis for the shared store): exact and paraphrase hits,
//! partitions that keep tenants, models, system prompts and sampling apart,
//! streamed replays, client cache control, PII kept out of the cache,
//! persistence across a sidecar kill, and two replicas sharing one cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_e2e::{sse_events, Gateway, Options, Redis};

const CACHE: &str = "cache: {enabled: true}\n";

struct Answer {
    status: u16,
    cache: String,
    tier: String,
    similarity: f64,
    /// The answer text (JSON or streamed, either API).
    text: String,
    body: Vec<u8>,
    content_type: String,
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

fn messages(content: &str) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 200, "messages": [{"role": "user", "content": content}]})
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

fn path_of(body: &Value) -> &'static str {
    if body["model"].as_str().unwrap().starts_with("claude") {
        "/v1/messages"
    } else {
        "/v1/chat/completions"
    }
}

/// The text of an answer in any of the four shapes.
fn answer_text(body: &[u8], sse: bool) -> String {
    if sse {
        sse_events(body)
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter_map(|v| {
                v["choices"]
                    .get(0)
                    .and_then(|c| c["delta"]["content"].as_str())
                    .or_else(|| v["delta"]["text"].as_str())
                    .map(str::to_string)
            })
            .collect()
    } else {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        v["choices"][0]["message"]["content"]
            .as_str()
            .or_else(|| v["content"][0]["text"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

async fn ask(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let resp = gw.post_with(path_of(body), body, headers).await;
    let status = resp.status().as_u16();
    let h = |name: &str| {
        let values: Vec<&str> = resp.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        assert!(values.len() <= 1, "{name} sent {} times: {values:?}", values.len());
        values.first().copied().unwrap_or("").to_string()
    };
    let (cache, tier, similarity, content_type) =
        (h("x-tollgate-cache"), h("x-tollgate-cache-tier"), h("x-tollgate-cache-similarity"), h("content-type"));
    let body = resp.bytes().await.unwrap().to_vec();
    let sse = content_type.contains("text/event-stream");
    Answer {
        status,
        cache,
        tier,
        similarity: similarity.parse().unwrap_or(0.0),
        text: answer_text(&body, sse),
        body,
        content_type,
    }
}

/// Requests the provider received so far.
async fn provider_calls(gw: &Gateway) -> usize {
    gw.mock_requests().await.len()
}

#[tokio::test]
async fn identical_and_paraphrased_prompts_are_answered_from_the_cache() {
    let gw = Gateway::start(Options { policy_extra: CACHE.into(), ..Default::default() }).await.unwrap();

    let first = ask(&gw, &chat("How do I reset my password?"), &[]).await;
    assert_eq!((first.status, first.cache.as_str()), (200, "miss"), "{}", gw.log_text());
    assert!(first.text.contains("reset my password"), "{}", first.text);
    assert_eq!(provider_calls(&gw).await, 1);

    // The same request, formatted differently: the exact tier.
    let body = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": " How do I reset  my password? "}]}],
        "model": "gpt-4o-mini"});
    let exact = ask(&gw, &body, &[]).await;
    assert_eq!((exact.status, exact.cache.as_str(), exact.tier.as_str()), (200, "hit", "exact"));
    assert_eq!(exact.similarity, 1.0);
    assert_eq!(exact.text, first.text);
    let v: Value = serde_json::from_slice(&exact.body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "usage shows the tokens saved: {v}");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], v["usage"]["prompt_tokens"]);

    // A paraphrase: the semantic tier, at the default threshold.
    let para = ask(&gw, &chat("How can I reset my password?"), &[]).await;
    assert_eq!((para.cache.as_str(), para.tier.as_str()), ("hit", "semantic"), "{}", gw.log_text());
    assert!(para.similarity >= tollgate_core::cache::DEFAULT_THRESHOLD && para.similarity < 1.0, "{}", para.similarity);
    assert_eq!(para.text, first.text);
    // An unrelated question is not a paraphrase.
    let other = ask(&gw, &chat("How do I delete my account?"), &[]).await;
    assert_eq!(other.cache, "miss");
    assert!(other.text.contains("delete my account"));
    assert_eq!(provider_calls(&gw).await, 2, "only the misses reached the provider");

    // Anthropic's Messages API the same way.
    let first = ask(&gw, &messages("Name three primary colours."), &[]).await;
    assert_eq!(first.cache, "miss");
    let again = ask(&gw, &messages("Name three primary colours."), &[]).await;
    assert_eq!((again.cache.as_str(), again.text.as_str()), ("hit", first.text.as_str()));
    let v: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!((v["type"].as_str(), v["role"].as_str()), (Some("message"), Some("assistant")));
    assert!(v["usage"]["cache_read_input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(provider_calls(&gw).await, 3);

    let hits = gw.sidecar_metric(r#"tollgate_cache_requests_total{result="hit",tier="exact"}"#).await;
    assert_eq!(hits, Some(2));
    let semantic = gw.sidecar_metric(r#"tollgate_cache_requests_total{result="hit",tier="semantic"}"#).await;
    assert_eq!(semantic, Some(1));
    assert!(gw.sidecar_metric("tollgate_cache_tokens_saved_total").await.unwrap() > 0);

    // Every request has its audit record, with the cache's decision.
    let records = gw.audit_records();
    let result = |r: &Value| r["decisions"]["cache"]["result"].as_str().unwrap_or("").to_string();
    let results: Vec<String> = records.iter().map(result).collect();
    assert_eq!(results, ["miss", "hit", "hit", "miss", "miss", "hit"], "{records:?}");
    let semantic = &records[2];
    assert_eq!((semantic["provider"].as_str(), semantic["status"].as_u64()), (Some("cache"), Some(200)));
    assert_eq!(semantic["decisions"]["cache"]["tier"], "semantic");
    assert!(semantic["decisions"]["cache"]["tokens_saved"].as_u64().unwrap() > 0, "{semantic}");
}

/// Questions whose meaning a word order, a negation or a name reverses. Their
/// embeddings are as close as a paraphrase's (asserted below), so the
/// threshold alone would serve one the other's answer.
const REVERSED: &[(&str, &str)] = &[
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("Cheapest flights from New York to Florida", "Cheapest flights from Florida to New York"),
    (
        "How do I move money from my savings account to my checking account?",
        "How do I move money from my checking account to my savings account?",
    ),
    ("Why did Brutus betray Caesar?", "Why did Caesar betray Brutus?"),
    ("Is a dolphin bigger than a shark?", "Is a shark bigger than a dolphin?"),
    ("Which painkillers can I take with alcohol?", "Which painkillers can I not take with alcohol?"),
];

#[tokio::test]
async fn a_reversed_question_is_answered_by_the_provider_not_the_cache() {
    use tollgate_ext_proc::embed::{cosine, default_model_dir, Embedder};
    let model = default_model_dir().expect("the embedding model (scripts/install.sh)");
    let embedder = Embedder::load(&model).unwrap();
    let threshold = tollgate_core::cache::DEFAULT_THRESHOLD;
    let gw = Gateway::start(Options { policy_extra: CACHE.into(), ..Default::default() }).await.unwrap();

    for (asked, reversed) in REVERSED {
        let v = embedder.embed(&[asked, reversed]).unwrap();
        let similarity = f64::from(cosine(&v[0], &v[1]));
        assert!(similarity >= threshold, "{asked:?} / {reversed:?}: {similarity} is below the threshold, no test");

        let first = ask(&gw, &chat(asked), &[]).await;
        assert_eq!((first.status, first.cache.as_str()), (200, "miss"), "{}", gw.log_text());
        let calls = provider_calls(&gw).await;
        let other = ask(&gw, &chat(reversed), &[]).await;
        assert_eq!((other.status, other.cache.as_str()), (200, "miss"), "{reversed:?} was served {:?}", other.text);
        assert!(other.text.contains(reversed), "the provider answered the reversed question: {}", other.text);
        assert_eq!(provider_calls(&gw).await, calls + 1);
        // Each is now cached under its own prompt, and a repeat of each gets its own answer.
        let again = ask(&gw, &chat(reversed), &[]).await;
        assert_eq!((again.cache.as_str(), again.text.as_str()), ("hit", other.text.as_str()));
    }

    // A true paraphrase still gets the cached answer: the check refuses what differs, not what is reworded.
    let para = ask(&gw, &chat("How can I convert Celsius to Fahrenheit?"), &[]).await;
    assert_eq!((para.cache.as_str(), para.tier.as_str()), ("hit", "semantic"), "{}", gw.log_text());
    assert!(para.text.contains("How do I convert Celsius to Fahrenheit?"), "{}", para.text);
    let para = ask(&gw, &chat("Cheapest flights to Florida from New York"), &[]).await;
    assert_eq!((para.cache.as_str(), para.tier.as_str()), ("hit", "semantic"), "{}", gw.log_text());
    assert!(para.text.contains("Cheapest flights from New York to Florida"), "{}", para.text);
}

/// Per-alias cache settings: one alias never cached, one with a strict threshold.
const ALIASES: &str = "models:
  fresh: {targets: [{provider: mock, model: gpt-4o-mini}], cache: {enabled: false}}
  strict: {targets: [{provider: mock, model: gpt-4o-mini}], cache: {threshold: 0.999}}
";

#[tokio::test]
async fn another_tenant_model_system_prompt_or_temperature_misses() {
    let policy = format!(
        "{CACHE}access: {{require: key, keyStore: '{{dir}}/keys.yaml'}}\nteams:\n  t: {{}}\nconsumers:\n  alice: {{team: t}}\n  bob: {{team: t}}\n{ALIASES}"
    );
    let gw = Gateway::start(Options { policy_extra: policy, ..Default::default() }).await.unwrap();
    let alice = format!("Bearer {}", gw.create_key("alice").await);
    let bob = format!("Bearer {}", gw.create_key("bob").await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a = [("authorization", alice.as_str())];
    let q = chat("What is the boiling point of water at sea level?");

    assert_eq!(ask(&gw, &q, &a).await.cache, "miss");
    assert_eq!(ask(&gw, &q, &a).await.cache, "hit");
    // Another consumer never sees alice's answers (the default scope).
    let b = ask(&gw, &q, &[("authorization", bob.as_str())]).await;
    assert_eq!((b.status, b.cache.as_str()), (200, "miss"));
    // Another model, another system prompt, another namespace: misses.
    assert_eq!(ask(&gw, &with(q.clone(), "model", json!("gpt-4o")), &a).await.cache, "miss");
    let system = json!([{"role": "system", "content": "Answer in French."}, q["messages"][0]]);
    assert_eq!(ask(&gw, &with(q.clone(), "messages", system), &a).await.cache, "miss");
    let ns = [("authorization", alice.as_str()), ("x-tollgate-cache-namespace", "eval-2")];
    assert_eq!(ask(&gw, &q, &ns).await.cache, "miss");
    assert_eq!(ask(&gw, &with(q.clone(), "max_tokens", json!(5)), &a).await.cache, "miss");
    // A sampled answer is not cacheable at all; nor is a request with tools that act.
    assert_eq!(ask(&gw, &with(q.clone(), "temperature", json!(0.7)), &a).await.cache, "skip");
    let tools = json!([{"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}}]);
    assert_eq!(ask(&gw, &with(q.clone(), "tools", tools), &a).await.cache, "skip");
    assert_eq!(provider_calls(&gw).await, 8);

    // An alias with the cache off; an alias whose threshold only exact repeats pass.
    let fresh = with(q.clone(), "model", json!("fresh"));
    assert_eq!(ask(&gw, &fresh, &a).await.cache, "skip");
    assert_eq!(ask(&gw, &fresh, &a).await.cache, "skip");
    let strict = |content: &str| with(chat(content), "model", json!("strict"));
    assert_eq!(ask(&gw, &strict("How do I reset my password?"), &a).await.cache, "miss");
    assert_eq!(ask(&gw, &strict("How can I reset my password?"), &a).await.cache, "miss", "0.99 < 0.999");
    assert_eq!(ask(&gw, &strict("How do I reset my password?"), &a).await.cache, "hit");
    assert_eq!(provider_calls(&gw).await, 12);
}

#[tokio::test]
async fn streamed_hits_replay_as_well_formed_sse_in_each_api() {
    let gw = Gateway::start(Options { policy_extra: CACHE.into(), ..Default::default() }).await.unwrap();
    for base in
        [chat("Summarise the plot of Hamlet in one line."), messages("Summarise the plot of Hamlet in one line.")]
    {
        let stream = with(base.clone(), "stream", json!(true));
        let first = ask(&gw, &stream, &[]).await;
        assert_eq!((first.status, first.cache.as_str()), (200, "miss"));
        assert!(!first.text.is_empty());
        let hit = ask(&gw, &stream, &[]).await;
        assert_eq!(hit.cache, "hit", "{}", gw.log_text());
        assert!(hit.content_type.starts_with("text/event-stream"), "{}", hit.content_type);
        assert_eq!(hit.text, first.text);
        let events = sse_events(&hit.body);
        if base["model"] == "gpt-4o-mini" {
            assert_eq!(events.last().unwrap().data, "[DONE]");
            let chunks: Vec<Value> =
                events.iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect();
            assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
            assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
            let no_usage = |c: &Value| c.get("usage").is_none_or(Value::is_null);
            assert!(chunks.iter().all(no_usage), "the client did not ask for usage");
            // With include_usage the replay ends with the usage chunk.
            let usage = with(stream.clone(), "stream_options", json!({"include_usage": true}));
            let hit = ask(&gw, &usage, &[]).await;
            assert_eq!(hit.cache, "hit");
            let events = sse_events(&hit.body);
            let last: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
            assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{last}");
        } else {
            let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
            assert_eq!(names.first(), Some(&"message_start"));
            assert_eq!(&names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
        }
        // The same question unstreamed is served from the streamed answer.
        let json_hit = ask(&gw, &base, &[]).await;
        assert_eq!((json_hit.cache.as_str(), json_hit.text.as_str()), ("hit", first.text.as_str()));
    }
    assert_eq!(provider_calls(&gw).await, 2);
}

#[tokio::test]
async fn cache_control_no_cache_and_no_store_are_honoured() {
    let gw = Gateway::start(Options { policy_extra: CACHE.into(), ..Default::default() }).await.unwrap();
    let q = chat("List the planets of the solar system.");
    // no-store: looked up, not kept.
    assert_eq!(ask(&gw, &q, &[("cache-control", "no-store")]).await.cache, "miss");
    assert_eq!(ask(&gw, &q, &[]).await.cache, "miss");
    // no-cache: answered by the provider even though an entry exists (and kept).
    assert_eq!(ask(&gw, &q, &[("cache-control", "no-cache")]).await.cache, "skip");
    assert_eq!(ask(&gw, &q, &[]).await.cache, "hit");
    assert_eq!(provider_calls(&gw).await, 3);
}

#[tokio::test]
async fn the_cache_holds_no_pii_and_each_request_gets_its_own_values_back() {
    let gw = Gateway::start(Options { policy_extra: CACHE.into(), ..Default::default() }).await.unwrap();
    let first = ask(&gw, &chat("Write a short note to jane.doe@example.com about lunch."), &[]).await;
    assert_eq!(first.cache, "miss");
    assert!(first.text.contains("jane.doe@example.com"), "restored: {}", first.text);
    // Masked, the two prompts are the same request: one answer, each client's own address.
    let second = ask(&gw, &chat("Write a short note to raj.patel@example.org about lunch."), &[]).await;
    assert_eq!((second.cache.as_str(), second.tier.as_str()), ("hit", "exact"));
    assert!(second.text.contains("raj.patel@example.org"), "{}", second.text);
    assert!(!second.text.contains("jane.doe"), "another request's value leaked: {}", second.text);
    let stored = read_tree(&gw.dir.join("cache"));
    assert!(!stored.is_empty(), "the embedded store writes under cache/");
    assert!(!stored.contains("jane.doe") && !stored.contains("raj.patel"), "raw PII in the cache files");
    assert!(stored.contains("EMAIL_ADDRESS_1"), "the entry holds the placeholder");
}

/// Every file under `dir`, as lossy text.
fn read_tree(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&read_tree(&path));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()));
        }
    }
    out
}

#[tokio::test]
async fn the_cache_survives_a_sidecar_kill() {
    let mut gw = Gateway::start(Options { policy_extra: CACHE.into(), ..Default::default() }).await.unwrap();
    let exact = chat("Explain what a hash chain is.");
    assert_eq!(ask(&gw, &exact, &[]).await.cache, "miss");
    gw.kill("sidecar").await;
    gw.start_sidecar(&[]).await.unwrap();
    let again = ask(&gw, &exact, &[]).await;
    assert_eq!((again.cache.as_str(), again.tier.as_str()), ("hit", "exact"), "{}", gw.log_text());
    let para = ask(&gw, &chat("Explain what a hash chain is, please."), &[]).await;
    assert_eq!(para.cache, "hit", "the vectors came back too");
    assert_eq!(provider_calls(&gw).await, 1);
}

#[tokio::test]
async fn two_sidecars_share_one_cache_through_redis() {
    let redis = Redis::start().unwrap();
    let policy = format!("cache: {{enabled: true, store: redis, redis: '{}'}}\n", redis.url);
    let a = Gateway::start(Options { policy_extra: policy.clone(), ..Default::default() }).await.unwrap();
    let b = Gateway::start(Options { policy_extra: policy, ..Default::default() }).await.unwrap();
    let q = chat("What does a load balancer do?");
    let first = ask(&a, &q, &[]).await;
    assert_eq!(first.cache, "miss");
    let other = ask(&b, &q, &[]).await;
    assert_eq!((other.cache.as_str(), other.text.as_str()), ("hit", first.text.as_str()));
    let para = ask(&b, &chat("What is the job of a load balancer?"), &[]).await;
    assert_eq!((para.cache.as_str(), para.tier.as_str()), ("hit", "semantic"));
    assert_eq!(provider_calls(&b).await, 0, "replica b never called its provider");

    // Redis gone: requests are answered all the same (a miss, never an error).
    drop(redis);
    let down = ask(&a, &chat("Another question entirely?"), &[]).await;
    assert_eq!(down.status, 200);
}
