//! Budgets under concurrency (issue 22, part 4): 50 requests at once, streamed
//! and not, OpenAI chat and Anthropic messages, split over two gateways (each
//! its own Envoy and sidecar) that share one Redis, against a cost budget and
//! a token budget. The spend is checked against the usage the provider
//! reported in the answers the clients received, not only against the
//! gateway's own records:
//! - what was spent passes the limit by at most one reservation per admitted
//!   request (the README's bound);
//! - the gateway recorded what the provider reported, audit record by audit
//!   record, and for a stream the budget cut (whose usage never came) what
//!   was streamed; the spend report and the shared counter hold the same sum:
//!   nothing counted twice, nothing lost;
//! - every request refused got a 429 in its API's error shape, and every
//!   stream cut by the budget ended with one error event in its API's shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tollgate_core::ApiKind;
use tollgate_e2e::{Gateway, Options, Redis};
use tollgate_ext_proc::limits::{redis::RedisStore, Store, Window};
use tollgate_ext_proc::tokens;

/// `reserveOutputTokens`: the output reserved for (and the cap put on) a
/// request that sets no `max_tokens`, and the step a stream grows by.
const RESERVE_OUTPUT: u64 = 50;
/// Both models cost 1000 micro-dollars a token (USD 1000 per 1M), in and out,
/// so the cost budget and the token budget have the same size in tokens.
const PRICE_PER_TOKEN_MICROS: u64 = 1000;
/// The limit, in tokens: far less than the 50 requests would use (~5,000).
const LIMIT_TOKENS: u64 = 2000;
const GPT: &str = "gpt-4o-mini";
const CLAUDE: &str = "claude-haiku-4-5";
const PROMPT: &str = "Tell me about the sea";
const REQUESTS: usize = 50;

/// Which budget a run is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `costPerDay`.
    Cost,
    /// `tokensPerMinute`.
    Tokens,
}

impl Limit {
    fn consumer(self, attempt: usize) -> String {
        match self {
            Limit::Cost => format!("cost{attempt}"),
            Limit::Tokens => format!("tok{attempt}"),
        }
    }

    fn window(self) -> Window {
        match self {
            Limit::Cost => Window::Day,
            Limit::Tokens => Window::Minute,
        }
    }
}

/// Runs of each budget a test may need (a run whose window changed while it
/// ran is done again with a fresh consumer).
const ATTEMPTS: usize = 3;

fn policy(redis: &str, keys: &std::path::Path) -> String {
    let mut consumers = String::new();
    for attempt in 0..ATTEMPTS {
        consumers.push_str(&format!(
            "  {}: {{team: t, limits: {{costPerDay: {}}}}}\n  {}: {{team: t, limits: {{tokensPerMinute: {LIMIT_TOKENS}}}}}\n",
            Limit::Cost.consumer(attempt),
            LIMIT_TOKENS * PRICE_PER_TOKEN_MICROS / 1_000_000,
            Limit::Tokens.consumer(attempt),
        ));
    }
    format!(
        "
access: {{require: key, keyStore: '{}'}}
limits: {{store: redis, redis: '{redis}', reserveOutputTokens: {RESERVE_OUTPUT}}}
pricing:
  {GPT}: {{input: 1000, output: 1000}}
  {CLAUDE}: {{input: 1000, output: 1000}}
teams:
  t: {{}}
consumers:
{consumers}",
        keys.display()
    )
}

/// The five kinds of request, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// OpenAI chat, whole answer, no `max_tokens` (the gateway caps it).
    OpenAiJson,
    /// OpenAI chat streamed with `include_usage`, no `max_tokens`: it grows
    /// its reservation as it goes and is cut at the first refused step.
    OpenAiStream,
    /// Anthropic messages, whole answer.
    AnthropicJson,
    /// Anthropic messages streamed, a text the gateway's tokenizer counts
    /// at more than `max_tokens` (the provider counts otherwise): it grows
    /// past its reservation and can be cut.
    AnthropicStreamGrowing,
    /// Anthropic messages streamed within its `max_tokens`.
    AnthropicStream,
}

const KINDS: [Kind; 5] =
    [Kind::OpenAiJson, Kind::OpenAiStream, Kind::AnthropicJson, Kind::AnthropicStreamGrowing, Kind::AnthropicStream];

impl Kind {
    fn api(self) -> ApiKind {
        match self {
            Kind::OpenAiJson | Kind::OpenAiStream => ApiKind::OpenAiChat,
            _ => ApiKind::AnthropicMessages,
        }
    }

    fn stream(self) -> bool {
        !matches!(self, Kind::OpenAiJson | Kind::AnthropicJson)
    }

    fn model(self) -> &'static str {
        if self.api() == ApiKind::OpenAiChat {
            GPT
        } else {
            CLAUDE
        }
    }

    fn body(self) -> Value {
        let messages = json!([{"role": "user", "content": PROMPT}]);
        match self {
            Kind::OpenAiJson => json!({"model": GPT, "messages": messages}),
            Kind::OpenAiStream => json!({"model": GPT, "messages": messages, "stream": true,
                "stream_options": {"include_usage": true}}),
            Kind::AnthropicJson => json!({"model": CLAUDE, "max_tokens": 50, "messages": messages}),
            Kind::AnthropicStreamGrowing => {
                json!({"model": CLAUDE, "max_tokens": 60, "messages": messages, "stream": true})
            }
            Kind::AnthropicStream => json!({"model": CLAUDE, "max_tokens": 200, "messages": messages, "stream": true}),
        }
    }

    /// What the mock adds to its answer: words of four characters (one
    /// token for the provider and for the gateway's tokenizer alike), or of
    /// three (one token for the gateway's tokenizer, 3/4 for the provider).
    fn append(self) -> String {
        let word = if self == Kind::AnthropicStreamGrowing { "is" } else { "sea" };
        vec![word; 150].join(" ")
    }

    /// The gateway's count of the whole answer the mock would stream (its
    /// reply, cut at `max_tokens` of its own count: four characters a token).
    fn whole_answer_tokens(self) -> u64 {
        let reply = format!("Mock reply to: {PROMPT} {}", self.append());
        let reply: String = match self.body()["max_tokens"].as_u64() {
            Some(max) => reply.chars().take(max as usize * 4).collect(),
            None => reply,
        };
        tokens::count(self.model(), &reply)
    }

    /// The tokens the gateway reserves for the request before it goes: the
    /// prompt as it counts it, plus `max_tokens` or `reserveOutputTokens`.
    fn reservation(self) -> u64 {
        let body = self.body();
        let request = tollgate_core::request::request_from_json(self.api(), &body).unwrap();
        let output = body["max_tokens"].as_u64().unwrap_or(RESERVE_OUTPUT);
        tokens::prompt_tokens(self.model(), &request) + output
    }
}

/// What one client saw.
#[derive(Debug)]
struct Seen {
    id: String,
    kind: Kind,
    gateway: usize,
    status: u16,
    /// The provider's usage as the answer reported it (input, output):
    /// the JSON `usage`, the stream's usage chunk, Anthropic's
    /// `message_start` and `message_delta`.
    reported: Option<(u64, u64)>,
    /// Anthropic's `message_start` input count (a cut stream has no other).
    start_input: Option<u64>,
    /// The stream ended with the budget's error event.
    cut: bool,
    /// The answer's text as the client got it.
    text: String,
    body: Vec<u8>,
}

/// One SSE event: (event name, data).
fn events(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut name, mut data) = (None, Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if name.is_some() || !data.is_empty() {
            out.push((name, data.join("\n")));
        }
    }
    out
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Read what the client got: the provider's usage, the text, whether the
/// budget cut it. Panics on an answer in the wrong shape.
fn read_answer(kind: Kind, status: u16, body: &[u8], who: &str) -> (Option<(u64, u64)>, Option<u64>, bool, String) {
    let shown = String::from_utf8_lossy(body);
    if status == 429 {
        let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{who}: 429 not JSON ({e}): {shown}"));
        if kind.api() == ApiKind::OpenAiChat {
            assert_eq!(v["error"]["type"], "rate_limit_error", "{who}: OpenAI's shape: {v}");
            assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{who}: {v}");
        } else {
            assert_eq!(v["type"], "error", "{who}: Anthropic's shape: {v}");
            assert_eq!(v["error"]["type"], "rate_limit_error", "{who}: Anthropic's shape: {v}");
        }
        assert!(v.to_string().contains("consumer `"), "{who}: the refusal names the scope: {v}");
        return (None, None, false, String::new());
    }
    assert_eq!(status, 200, "{who}: {shown}");
    let mut text = String::new();
    if !kind.stream() {
        let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{who}: not JSON ({e}): {shown}"));
        let u = &v["usage"];
        return if kind.api() == ApiKind::OpenAiChat {
            text.push_str(v["choices"][0]["message"]["content"].as_str().unwrap_or_default());
            (Some((num(&u["prompt_tokens"]), num(&u["completion_tokens"]))), None, false, text)
        } else {
            text.push_str(v["content"][0]["text"].as_str().unwrap_or_default());
            (Some((num(&u["input_tokens"]), num(&u["output_tokens"]))), None, false, text)
        };
    }
    let events = events(body);
    let mut reported = None;
    let mut start_input = None;
    let mut cut = false;
    for (i, (name, data)) in events.iter().enumerate() {
        if data == "[DONE]" {
            assert_eq!(i + 1, events.len(), "{who}: nothing after [DONE]: {shown}");
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{who}: event not JSON ({e}): {data}"));
        assert!(!cut, "{who}: an event after the budget's error event: {shown}");
        if kind.api() == ApiKind::OpenAiChat {
            if v.get("error").is_some() {
                assert_eq!(v["error"]["type"], "rate_limit_error", "{who}: {v}");
                cut = true;
            } else if v["usage"].is_object() {
                reported = Some((num(&v["usage"]["prompt_tokens"]), num(&v["usage"]["completion_tokens"])));
            } else if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        } else {
            match v["type"].as_str().unwrap_or_default() {
                "error" => {
                    assert_eq!(name.as_deref(), Some("error"), "{who}: {shown}");
                    assert_eq!(v["error"]["type"], "rate_limit_error", "{who}: {v}");
                    cut = true;
                }
                "message_start" => start_input = Some(num(&v["message"]["usage"]["input_tokens"])),
                "message_delta" => {
                    let input = v["usage"]["input_tokens"].as_u64().or(start_input).unwrap();
                    reported = Some((input, num(&v["usage"]["output_tokens"])));
                }
                "content_block_delta" => text.push_str(v["delta"]["text"].as_str().unwrap_or_default()),
                _ => {}
            }
        }
    }
    if kind.api() == ApiKind::OpenAiChat && cut {
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"), "{who}: a cut ends with [DONE]: {shown}");
    }
    assert!(cut != reported.is_some(), "{who}: a stream either ends with its usage or is cut by the budget: {shown}");
    (reported, start_input, cut, text)
}

/// Send every request at once (started 20 ms apart, so that the first
/// answers are streaming while the last are admitted), and read what each
/// client got.
async fn run(gateways: [&Gateway; 2], key: &str, tag: &str) -> Vec<Seen> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let kind = KINDS[i % KINDS.len()];
        let gateway = (i / KINDS.len()) % 2;
        let id = format!("{tag}-{i}");
        let path = if kind.api() == ApiKind::OpenAiChat { "/v1/chat/completions" } else { "/v1/messages" };
        let mut req = client
            .post(format!("{}{path}", gateways[gateway].url))
            .header("x-request-id", &id)
            .header("x-mock-latency-ms", "300")
            .header("x-mock-chunk-delay-ms", "4")
            .header("x-mock-append", kind.append())
            .json(&kind.body());
        req = if kind.api() == ApiKind::OpenAiChat {
            req.header("authorization", format!("Bearer {key}"))
        } else {
            req.header("x-api-key", key).header("anthropic-version", "2023-06-01")
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let mut resp = req.send().await.unwrap_or_else(|e| panic!("{id}: {e}"));
            let status = resp.status().as_u16();
            if status == 429 {
                assert!(resp.headers().contains_key("retry-after"), "{id}: {:?}", resp.headers());
            }
            // A stream cut by the budget is reset after its error event:
            // keep what came before.
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                body.extend_from_slice(&chunk);
            }
            let (reported, start_input, cut, text) = read_answer(kind, status, &body, &id);
            Seen { id, kind, gateway, status, reported, start_input, cut, text, body }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen
}

/// The audit records of both gateways, once every admitted request has one.
async fn audit_records(gateways: [&Gateway; 2], ids: &[&str]) -> Vec<Value> {
    let mut records = Vec::new();
    for _ in 0..100 {
        records = gateways.iter().flat_map(|g| g.audit_records()).collect();
        let has = |id: &&str| records.iter().any(|r| r["clientRequestId"] == *id);
        if ids.iter().all(has) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    records
}

/// Sleep into the next minute when fewer than `need` are left of this one.
async fn fresh_minute(need: Duration) {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(60) - Duration::from_millis((now.as_millis() % 60_000) as u64);
    if left < need {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

/// One run of 50 requests against one budget. `None` when the budget's
/// window changed while the run was going (its counter started again).
async fn check_budget(gateways: [&Gateway; 2], store: &Store, limit: Limit, attempt: usize) -> Option<String> {
    let consumer = limit.consumer(attempt);
    let key = gateways[0].create_key(&consumer).await;
    // The sidecars read the key store again within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if limit == Limit::Tokens {
        fresh_minute(Duration::from_secs(30)).await;
    }
    let start = SystemTime::now();
    let seen = run(gateways, &key, &format!("{consumer}-{}", std::process::id())).await;
    let admitted: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    let ids: Vec<&str> = admitted.iter().map(|s| s.id.as_str()).collect();
    let records = audit_records(gateways, &ids).await;
    let end = SystemTime::now();
    let window = limit.window();
    if window.id(start) != window.id(end) {
        eprintln!("{consumer}: the {window} changed during the run; again with a fresh consumer");
        return None;
    }

    let refused = seen.iter().filter(|s| s.status == 429).count();
    let cut: Vec<&&Seen> = admitted.iter().filter(|s| s.cut).collect();
    let summary: Vec<String> = seen
        .iter()
        .map(|s| {
            format!(
                "{} {:?}@{} {}{} {:?}",
                s.id,
                s.kind,
                s.gateway,
                s.status,
                if s.cut { " cut" } else { "" },
                s.reported
            )
        })
        .collect();
    let summary = summary.join("\n");
    assert!(refused >= 1, "{consumer}: the budget was never reached:\n{summary}");
    assert!(admitted.len() >= 5, "{consumer}: too few admitted to test anything:\n{summary}");

    // Per request: the gateway recorded what the provider reported, or for a
    // stream the budget cut (its usage never came), what it streamed.
    let mut provider_tokens = 0; // what the provider reported, summed
    let mut cut_tokens = 0; // what the cut streams streamed to their clients
    let mut recorded_tokens = 0;
    let mut reservations = 0;
    for s in &admitted {
        let record = records
            .iter()
            .find(|r| r["clientRequestId"] == s.id.as_str())
            .unwrap_or_else(|| panic!("{}: no audit record (admitted):\n{summary}", s.id));
        let (input, output) = (num(&record["inputTokens"]), num(&record["outputTokens"]));
        assert_eq!(record["status"], 200, "{}: {record}", s.id);
        assert_eq!(record["consumer"], consumer.as_str(), "{record}");
        recorded_tokens += input + output;
        reservations += s.kind.reservation();
        match s.reported {
            Some((p_in, p_out)) => {
                assert_eq!(
                    (input, output),
                    (p_in, p_out),
                    "{}: the gateway recorded other usage than the provider reported: {record}",
                    s.id
                );
                provider_tokens += p_in + p_out;
            }
            None => {
                // The provider's usage never came (the stream was cut before
                // it): its count of the prompt where it sent one (Anthropic's
                // `message_start`), else the gateway's estimate; the output
                // is what was streamed, counted by the gateway's tokenizer.
                assert_eq!(record["decisions"]["stream_cut"], "budget", "{}: {record}", s.id);
                let expected_input = s.start_input.unwrap_or_else(|| s.kind.reservation() - RESERVE_OUTPUT);
                assert_eq!(input, expected_input, "{}: {record}", s.id);
                let streamed = tokens::count(s.kind.model(), &s.text);
                // Recorded: what the client got, and what came in the chunk
                // after the cut (it closes the provider's request); never
                // more than the whole answer.
                let whole = s.kind.whole_answer_tokens();
                assert!(
                    streamed <= output && output <= whole,
                    "{}: a cut stream is recorded as what was streamed ({streamed} tokens reached the client, \
                     the whole answer has {whole}), not {output}: {record}\n{}",
                    s.id,
                    String::from_utf8_lossy(&s.body)
                );
                cut_tokens += expected_input + streamed;
            }
        }
    }
    assert!(
        recorded_tokens >= provider_tokens + cut_tokens,
        "recorded {recorded_tokens} < provider-reported {provider_tokens} + cut streams {cut_tokens}"
    );

    // The spend report and the shared counter hold the same: each admitted
    // request counted once (refusals not at all), on both replicas together.
    let rows: Vec<Value> =
        gateways[0].usage_rows().await.into_iter().filter(|r| r["consumer"] == consumer.as_str()).collect();
    let sum = |field: &str| rows.iter().map(|r| num(&r[field])).sum::<u64>();
    assert_eq!(sum("requests"), admitted.len() as u64, "{rows:?}");
    assert_eq!(sum("input_tokens") + sum("output_tokens"), recorded_tokens, "{rows:?}");
    let spent_micros = sum("cost_micros");
    assert_eq!(spent_micros, recorded_tokens * PRICE_PER_TOKEN_MICROS, "{rows:?}");
    let audit_micros: f64 = records
        .iter()
        .filter(|r| r["consumer"] == consumer.as_str())
        .map(|r| r["costUsd"].as_f64().unwrap_or_default() * 1e6)
        .sum();
    assert!((audit_micros - spent_micros as f64).abs() < 1.0, "audit {audit_micros} vs report {spent_micros}");
    let counter_key = store.key_at(
        &format!("consumer:{consumer}:{}", if limit == Limit::Cost { "cost" } else { "tokens" }),
        window,
        start,
    );
    let counter = store.get(&counter_key).await.unwrap();
    let expected_counter = match limit {
        Limit::Cost => spent_micros,
        Limit::Tokens => recorded_tokens,
    };
    assert_eq!(counter, expected_counter, "{counter_key}: the shared counter holds what was spent, once");

    // The bound: past the limit by at most one reservation per admitted
    // request, checked on the provider's count (and what the cut streams
    // streamed).
    let spent = provider_tokens + cut_tokens;
    let bound = LIMIT_TOKENS + reservations;
    assert!(recorded_tokens <= bound, "recorded {recorded_tokens} tokens, over {LIMIT_TOKENS} + {reservations}");
    let line = format!(
        "{limit:?} budget, consumer {consumer}: limit {LIMIT_TOKENS} tokens (${:.3}); {} admitted ({} cut by the \
         budget), {refused} refused; provider-reported {provider_tokens} tokens + streamed by the cut streams {cut_tokens} = \
         {spent} tokens; recorded {recorded_tokens} tokens, {spent_micros} micro-dollars; counter {counter}; \
         over the limit by {} (recorded: {}; bound: {reservations}, one reservation per admitted request)",
        (LIMIT_TOKENS * PRICE_PER_TOKEN_MICROS) as f64 / 1e6,
        admitted.len(),
        cut.len(),
        spent.saturating_sub(LIMIT_TOKENS),
        recorded_tokens.saturating_sub(LIMIT_TOKENS),
    );
    eprintln!("{line}");
    assert!(spent <= bound, "{line}\n{summary}");
    Some(line)
}

#[tokio::test]
async fn fifty_concurrent_requests_on_two_replicas_pass_a_budget_by_at_most_the_documented_bound() {
    let redis = Redis::start().unwrap();
    let keys = std::env::temp_dir().join(format!("tollgate-e2e-budget-concurrency-keys-{}", std::process::id()));
    let _ = std::fs::remove_file(&keys);
    let policy = policy(&redis.url, &keys);
    let a = Gateway::start(Options { policy_extra: policy.clone(), ..Default::default() }).await.unwrap();
    let b = Gateway::start(Options { policy_extra: policy, ..Default::default() }).await.unwrap();
    let store: Store = RedisStore::connect(&redis.url, "tollgate:").await.unwrap().into();
    let mut lines = Vec::new();
    for limit in [Limit::Tokens, Limit::Cost] {
        let line = {
            let mut line = None;
            for attempt in 0..ATTEMPTS {
                line = check_budget([&a, &b], &store, limit, attempt).await;
                if line.is_some() {
                    break;
                }
            }
            line.unwrap_or_else(|| panic!("{limit:?}: the window changed during every run"))
        };
        lines.push(line);
    }
    let _ = std::fs::remove_file(&keys);
    eprintln!("{}", lines.join("\n"));
}
