//! Which requests are cacheable, and their keys.
//!
//! The **partition** holds everything that changes an answer except the
//! last message: the tenant scope (consumer, team or shared, plus the
//! client's namespace), the API, the resolved provider and model, the
//! system prompt, the earlier turns, tool definitions and every sampling
//! parameter, and the numbers of the last message (embeddings hardly see a
//! changed date or amount). Only requests of one partition are ever compared. The
//! **exact** key adds the normalized last message; the **semantic** tier
//! embeds the last user message and compares it within the partition.
//!
//! Parameters are taken by exclusion: every top-level field except the
//! conversation itself and a short list that cannot change the answer
//! (streaming, user ids, metadata) is part of the partition, so a field the
//! gateway does not know yet splits the cache rather than leaking answers.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_core::cache::{CachePolicy, CacheScope};
use tollgate_core::{ApiKind, LlmRequest};

use super::store::Key;

/// Top-level fields that never change the answer.
const NOT_PARAMETERS: &[&str] = &[
    "model",
    "messages",
    "system",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

/// A cacheable request's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKeys {
    pub partition: Key,
    pub exact: Key,
    /// The last user message, when the semantic tier may compare it.
    pub semantic_text: Option<String>,
}

/// Why a request is not looked up (the `x-tollgate-cache: skip` reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Only chat completions, messages, Gemini's `generateContent` and
    /// Bedrock's Converse are cached.
    Api,
    /// `temperature` above `cache.maxTemperature`.
    Temperature,
    /// More than one choice asked for.
    Choices,
    /// A tool with side effects is offered.
    Tools,
    /// The alias turns the cache off.
    Route,
    /// `Cache-Control: no-cache` and `no-store` both.
    Client,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Api => "api",
            Skip::Temperature => "temperature",
            Skip::Choices => "choices",
            Skip::Tools => "tools",
            Skip::Route => "route",
            Skip::Client => "client",
        }
    }
}

/// Who is asking, for the tenant part of the partition.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tenant<'a> {
    pub consumer: Option<&'a str>,
    pub team: Option<&'a str>,
    /// `x-tollgate-cache-namespace`.
    pub namespace: Option<&'a str>,
}

/// The tenant scope string: answers are only ever shared within it.
///
/// - `consumer`: the caller's own partition (`consumer:<name>`);
/// - `team`: the team's (`team:<name>`); a caller with no team (an empty
///   team, e.g. a token without a team claim) never shares: it falls back
///   to its consumer's partition;
/// - `shared`: one partition for everyone.
///
/// A caller without an identity (anonymous calls under `access.require:
/// none`) has the `anonymous` partition under `consumer` and `team`: every
/// anonymous caller is one tenant, apart from every identified one.
///
/// `x-tollgate-cache-namespace` only narrows: it is appended to the scope
/// the policy gives the caller, so it picks a sub-partition of the caller's
/// own and never reaches another tenant's. The parts are length-prefixed,
/// so no choice of names (a team claim, a namespace) can spell another
/// tenant's scope.
pub fn scope(policy: &CachePolicy, tenant: &Tenant<'_>) -> String {
    let consumer = || match named(tenant.consumer) {
        Some(c) => part("consumer", c),
        None => "anonymous".to_string(),
    };
    let base = match policy.scope {
        CacheScope::Consumer => consumer(),
        CacheScope::Team => match named(tenant.team) {
            Some(team) => part("team", team),
            // Without a team there is nobody to share with.
            None => consumer(),
        },
        CacheScope::Shared => "shared".into(),
    };
    match tenant.namespace {
        Some(ns) => format!("{base}\u{0}{}", part("ns", ns)),
        None => base,
    }
}

/// A name that is there and not empty.
fn named(name: Option<&str>) -> Option<&str> {
    name.filter(|s| !s.is_empty())
}

/// `kind:<name>`, with the name's length when it could be mistaken for
/// more parts (anything but the letters, digits, `-` and `_` of policy names).
fn part(kind: &str, name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        format!("{kind}:{name}")
    } else {
        format!("{kind}#{}:{name}", name.len())
    }
}

/// Whether `request` may be cached, and its keys. `route` is the resolved
/// `provider/model`; `max_turns` bounds the semantic tier.
pub fn keys(
    policy: &CachePolicy,
    api: ApiKind,
    json: &Value,
    request: &LlmRequest,
    route: &str,
    scope: &str,
) -> Result<CacheKeys, Skip> {
    let shape = Shape::of(api).ok_or(Skip::Api)?;
    let obj = json.as_object().ok_or(Skip::Api)?;
    let config = shape.config.and_then(|c| obj.get(c)).unwrap_or(json);
    let temperature = config.get("temperature").and_then(Value::as_f64).unwrap_or(0.0);
    if temperature > policy.max_temperature {
        return Err(Skip::Temperature);
    }
    if config.get(shape.choices).and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Skip::Choices);
    }
    if request.tools.iter().any(|t| !policy.read_only_tools.contains(&t.name)) {
        return Err(Skip::Tools);
    }
    let messages: &[Value] = obj.get(shape.turns).and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let mut system = Vec::new();
    let mut turns = Vec::new();
    if let Some(s) = obj.get(shape.system) {
        system.push(normalize_system(s));
    }
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if matches!(role, "system" | "developer") {
            system.push(normalize_message(m));
        } else {
            turns.push(m);
        }
    }
    let params: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !NOT_PARAMETERS.contains(&k.as_str()) && *k != shape.turns && *k != shape.system)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (last, earlier) = match turns.split_last() {
        Some((last, earlier)) => (Some(*last), earlier),
        None => (None, &[][..]),
    };
    let last_norm = canonical(&last.map(normalize_message).unwrap_or(Value::Null));
    let mut h = Sha256::new();
    for part in [
        "tollgate-cache-v1",
        scope,
        api.as_str(),
        route,
        &canonical(&Value::Array(system)),
        &canonical(&Value::Array(earlier.iter().map(|m| normalize_message(m)).collect())),
        &canonical(&Value::Object(params)),
        &numbers(&last_norm),
    ] {
        field(&mut h, part);
    }
    let partition: Key = h.finalize().into();
    let mut h = Sha256::new();
    h.update(partition);
    field(&mut h, &last_norm);
    let exact: Key = h.finalize().into();

    let semantic_text = (policy.semantic.enabled
        && turns.len() <= policy.semantic.max_turns
        && !turns.iter().any(|m| has_tool_state(m)))
    .then(|| last.filter(|m| m.get("role").and_then(Value::as_str).unwrap_or(shape.default_role) == "user"))
    .flatten()
    .and_then(|m| match normalize_content(m.get(shape.content).unwrap_or(&Value::Null)) {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    });
    Ok(CacheKeys { partition, exact, semantic_text })
}

/// Where an API's request keeps the conversation and the knobs the cache
/// looks at.
struct Shape {
    /// The turns (`messages`, Gemini's `contents`).
    turns: &'static str,
    /// A turn's content (Gemini's `parts`).
    content: &'static str,
    /// The role of a turn that names none.
    default_role: &'static str,
    /// The system prompt beside the turns.
    system: &'static str,
    /// The object holding `temperature` and the choice count (the body itself when `None`).
    config: Option<&'static str>,
    choices: &'static str,
}

impl Shape {
    fn of(api: ApiKind) -> Option<Shape> {
        let chat = |default_role| Shape {
            turns: "messages",
            content: "content",
            default_role,
            system: "system",
            config: None,
            choices: "n",
        };
        match api {
            ApiKind::OpenAiChat | ApiKind::AnthropicMessages => Some(chat("")),
            ApiKind::GeminiGenerate => Some(Shape {
                turns: "contents",
                content: "parts",
                default_role: "user",
                system: "systemInstruction",
                config: Some("generationConfig"),
                choices: "candidateCount",
            }),
            ApiKind::BedrockConverse => Some(Shape { config: Some("inferenceConfig"), ..chat("") }),
            _ => None,
        }
    }
}

/// The digit runs of a text, in order (`"12 May, 3.5%"` → `12|3|5`). Embeddings barely move when a number, date or amount
/// changes, so prompts that differ in them are kept apart: "the weather on
/// 12 May" is never answered with the answer for 13 May.
pub fn numbers(text: &str) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_run && !out.is_empty() {
                out.push('|');
            }
            out.push(c);
            in_run = true;
        } else {
            in_run = false;
        }
    }
    out
}

/// A length-prefixed field, so no two field lists hash alike.
fn field(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// Tool calls and tool results carry an agent's state: such conversations
/// are only ever matched exactly. (Blocks: Anthropic's `tool_use` and
/// `tool_result`, Gemini's `functionCall` and `functionResponse` parts,
/// Bedrock's `toolUse` and `toolResult`.)
fn has_tool_state(m: &Value) -> bool {
    const TOOL_PARTS: [&str; 4] = ["functionCall", "functionResponse", "toolUse", "toolResult"];
    if matches!(m.get("role").and_then(Value::as_str), Some("tool" | "function")) || m.get("tool_calls").is_some() {
        return true;
    }
    ["content", "parts"].iter().filter_map(|k| m.get(*k).and_then(Value::as_array)).flatten().any(|p| {
        matches!(p.get("type").and_then(Value::as_str), Some("tool_use" | "tool_result"))
            || TOOL_PARTS.iter().any(|k| p.get(*k).is_some())
    })
}

fn normalize_message(m: &Value) -> Value {
    match m.as_object() {
        Some(obj) => Value::Object(
            obj.iter()
                .map(|(k, v)| {
                    let text = k == "content" || k == "parts";
                    (k.clone(), if text { normalize_content(v) } else { v.clone() })
                })
                .collect(),
        ),
        None => m.clone(),
    }
}

/// A system prompt: a string or blocks (OpenAI, Anthropic, Bedrock), or a
/// Gemini `Content` (its `parts`).
fn normalize_system(v: &Value) -> Value {
    match v.get("parts") {
        Some(parts) => normalize_content(parts),
        None => normalize_content(v),
    }
}

/// Content as one whitespace-normalized string when it is only text (a
/// string, or text parts/blocks); other content as it is.
///
/// A user turn reads the same in every API (`Hello` as a string, as
/// `[{"type": "text", ...}]`, as Gemini's `parts` or Bedrock's blocks):
/// the partition keeps the APIs apart, since each replays its own shape.
fn normalize_content(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(squeeze(s)),
        Value::Array(parts) => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) if p.as_object().is_some_and(|o| o.len() == 2) => Some(t),
                    // Gemini's text parts and Bedrock's text blocks name no type.
                    (None, Some(t)) if p.as_object().is_some_and(|o| o.len() == 1) => Some(t),
                    _ => None,
                })
                .collect();
            match texts {
                Some(texts) => Value::String(squeeze(&texts.join("\n"))),
                None => v.clone(),
            }
        }
        other => other.clone(),
    }
}

/// Runs of whitespace as one space, none at the ends.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON with object keys sorted, whatever the map's own order.
fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(obj) => {
            let mut keys: Vec<&String> = obj.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&obj[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_core::request::request_from_json;

    fn policy() -> CachePolicy {
        CachePolicy { enabled: true, read_only_tools: vec!["lookup".into()], ..Default::default() }
    }

    fn keys_of(api: ApiKind, body: Value, scope: &str) -> Result<CacheKeys, Skip> {
        let request = request_from_json(api, &body).unwrap();
        keys(&policy(), api, &body, &request, "mock/gpt-4o-mini", scope)
    }

    fn chat(extra: Value) -> Value {
        let mut body = json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"}
        ]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    #[test]
    fn formatting_and_streaming_do_not_change_the_keys() {
        let a = keys_of(ApiKind::OpenAiChat, chat(json!({})), "consumer:alice").unwrap();
        let b = keys_of(
            ApiKind::OpenAiChat,
            json!({"stream": true, "stream_options": {"include_usage": true}, "user": "u1", "messages": [
                {"content": "You are terse.", "role": "system"},
                {"role": "user", "content": [{"type": "text", "text": "  What is the capital\n of France? "}]}
            ], "model": "gpt-4o-mini"}),
            "consumer:alice",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.semantic_text.as_deref(), Some("What is the capital of France?"));
    }

    #[test]
    fn everything_that_changes_an_answer_changes_the_partition() {
        let base = keys_of(ApiKind::OpenAiChat, chat(json!({})), "consumer:alice").unwrap();
        let variants = [
            keys_of(ApiKind::OpenAiChat, chat(json!({})), "consumer:bob").unwrap(),
            keys_of(ApiKind::OpenAiChat, chat(json!({"max_tokens": 5})), "consumer:alice").unwrap(),
            keys_of(ApiKind::OpenAiChat, chat(json!({"seed": 7})), "consumer:alice").unwrap(),
            keys_of(ApiKind::OpenAiChat, chat(json!({"response_format": {"type": "json_object"}})), "consumer:alice")
                .unwrap(),
            keys_of(ApiKind::OpenAiChat, chat(json!({"some_future_knob": 1})), "consumer:alice").unwrap(),
            keys_of(
                ApiKind::OpenAiChat,
                chat(json!({"messages": [{"role": "system", "content": "You are verbose."},
                    {"role": "user", "content": "What is the capital of France?"}]})),
                "consumer:alice",
            )
            .unwrap(),
            keys_of(
                ApiKind::OpenAiChat,
                chat(json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "What is the capital of France?"}]})),
                "consumer:alice",
            )
            .unwrap(),
        ];
        for v in &variants {
            assert_ne!(v.partition, base.partition);
            assert_ne!(v.exact, base.exact);
        }
        let other_model = {
            let body = chat(json!({}));
            let request = request_from_json(ApiKind::OpenAiChat, &body).unwrap();
            keys(&policy(), ApiKind::OpenAiChat, &body, &request, "mock/gpt-4o", "consumer:alice").unwrap()
        };
        assert_ne!(other_model.partition, base.partition);
        // A different last message: same partition, another exact key.
        let para = keys_of(
            ApiKind::OpenAiChat,
            chat(json!({"messages": [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Which city is the capital of France?"}]})),
            "consumer:alice",
        )
        .unwrap();
        assert_eq!(para.partition, base.partition);
        assert_ne!(para.exact, base.exact);
    }

    #[test]
    fn prompts_that_differ_in_numbers_are_never_compared() {
        let ask =
            |q: &str| keys_of(ApiKind::OpenAiChat, chat(json!({"messages": [{"role": "user", "content": q}]})), "s");
        let may12 = ask("What was the weather in Paris on 12 May 2024?").unwrap();
        let may13 = ask("What was the weather in Paris on 13 May 2024?").unwrap();
        let reworded = ask("How was the weather in Paris on 12 May 2024?").unwrap();
        assert_ne!(may12.partition, may13.partition);
        assert_eq!(may12.partition, reworded.partition, "a paraphrase with the same numbers is compared");
        assert_eq!(numbers("from 10 to 20, 3.5%"), "10|20|3|5");
        assert_ne!(numbers("from 10 to 20"), numbers("from 20 to 10"));
    }

    #[test]
    fn uncacheable_requests_say_why() {
        assert_eq!(keys_of(ApiKind::OpenAiChat, chat(json!({"temperature": 0.7})), "s"), Err(Skip::Temperature));
        assert!(keys_of(ApiKind::OpenAiChat, chat(json!({"temperature": 0})), "s").is_ok());
        assert_eq!(keys_of(ApiKind::OpenAiChat, chat(json!({"n": 2})), "s"), Err(Skip::Choices));
        let tool = |name: &str| json!({"tools": [{"type": "function", "function": {"name": name, "parameters": {}}}]});
        assert_eq!(keys_of(ApiKind::OpenAiChat, chat(tool("send_email")), "s"), Err(Skip::Tools));
        assert!(keys_of(ApiKind::OpenAiChat, chat(tool("lookup")), "s").is_ok());
        let emb = json!({"model": "text-embedding-3-small", "input": "hi"});
        assert_eq!(keys_of(ApiKind::OpenAiEmbeddings, emb, "s"), Err(Skip::Api));
    }

    #[test]
    fn agent_turns_and_long_conversations_are_only_matched_exactly() {
        let with_tool_result = json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": "and tomorrow?"}
        ]});
        assert_eq!(keys_of(ApiKind::OpenAiChat, with_tool_result, "s").unwrap().semantic_text, None);
        let long: Vec<Value> = (0..6)
            .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("turn {i}")}))
            .collect();
        let k = keys_of(ApiKind::OpenAiChat, json!({"model": "m", "messages": long}), "s").unwrap();
        assert_eq!(k.semantic_text, None, "6 turns > maxTurns 4");
        let prefill = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}]});
        assert_eq!(keys_of(ApiKind::AnthropicMessages, prefill, "s").unwrap().semantic_text, None);
    }

    #[test]
    fn anthropic_system_blocks_and_strings_are_one_partition() {
        let a = json!({"model": "claude-haiku-4-5", "max_tokens": 50, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Name a prime."}]});
        let b = json!({"model": "claude-haiku-4-5", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a prime."}]}]});
        assert_eq!(
            keys_of(ApiKind::AnthropicMessages, a, "s").unwrap(),
            keys_of(ApiKind::AnthropicMessages, b, "s").unwrap()
        );
    }

    #[test]
    fn callers_without_a_team_never_share_a_team_partition() {
        let p = CachePolicy { scope: CacheScope::Team, ..policy() };
        let no_team = |consumer| Tenant { consumer: Some(consumer), team: Some(""), namespace: None };
        assert_ne!(scope(&p, &no_team("alice")), scope(&p, &no_team("mallory")));
        assert_eq!(
            scope(&p, &no_team("alice")),
            scope(&CachePolicy { scope: CacheScope::Consumer, ..policy() }, &no_team("alice"))
        );
        let team_none = Tenant { consumer: Some("alice"), team: None, namespace: None };
        assert_eq!(scope(&p, &team_none), scope(&p, &no_team("alice")));
        // Anonymous callers are their own tenant, apart from every named one.
        let anonymous = scope(&p, &Tenant::default());
        assert_eq!(anonymous, "anonymous");
        assert_eq!(scope(&p, &Tenant { consumer: Some(""), team: Some(""), namespace: None }), anonymous);
        assert_ne!(scope(&p, &Tenant { consumer: Some("anonymous"), ..Tenant::default() }), anonymous);
    }

    #[test]
    fn a_namespace_only_narrows_the_callers_own_partition() {
        let p = CachePolicy { scope: CacheScope::Team, ..policy() };
        let research = Tenant { consumer: Some("alice"), team: Some("research"), namespace: None };
        let ops = Tenant { consumer: Some("bob"), team: Some("ops"), namespace: None };
        // Whatever namespace alice picks, she never lands in ops' partition
        // (with or without a namespace of its own).
        for ns in ["", "v2", "ops", "team:ops", "\u{0}ns:x", "x\u{0}team:ops"] {
            let mine = scope(&p, &Tenant { namespace: Some(ns), ..research });
            assert!(mine.starts_with(&scope(&p, &research)), "{mine:?}");
            for theirs in [None, Some(ns), Some("v2")] {
                assert_ne!(mine, scope(&p, &Tenant { namespace: theirs, ..ops }), "{ns:?}");
            }
        }
        // A team name (from a token's claim) cannot spell another's scope with a namespace.
        let crafted = Tenant { consumer: Some("eve"), team: Some("ops\u{0}ns:v2"), namespace: None };
        assert_ne!(scope(&p, &crafted), scope(&p, &Tenant { namespace: Some("v2"), ..ops }));
    }

    #[test]
    fn scope_follows_policy_and_namespace() {
        let mut p = policy();
        let t = Tenant { consumer: Some("alice"), team: Some("research"), namespace: None };
        assert_eq!(scope(&p, &t), "consumer:alice");
        p.scope = CacheScope::Team;
        assert_eq!(scope(&p, &t), "team:research");
        assert_ne!(scope(&p, &Tenant { namespace: Some("v2"), ..t }), scope(&p, &t));
        p.scope = CacheScope::Shared;
        assert_eq!(scope(&p, &Tenant::default()), "shared");
    }

    #[test]
    fn native_gemini_and_bedrock_requests_are_keyed_like_chats() {
        let gemini = |text: &str, config: Value| {
            json!({"systemInstruction": {"parts": [{"text": "Be  terse."}]},
                "contents": [{"role": "user", "parts": [{"text": text}]}], "generationConfig": config})
        };
        let bedrock = |text: &str, config: Value| {
            json!({"system": [{"text": "Be terse."}], "messages": [{"role": "user", "content": [{"text": text}]}],
                "inferenceConfig": config})
        };
        for (api, make) in
            [(ApiKind::GeminiGenerate, &gemini as &dyn Fn(&str, Value) -> Value), (ApiKind::BedrockConverse, &bedrock)]
        {
            let base = keys_of(api, make("What is the capital of  France?", json!({})), "s").unwrap();
            // Whitespace is not a difference; the question and the knobs are.
            assert_eq!(keys_of(api, make("What is the capital of France?", json!({})), "s").unwrap(), base, "{api:?}");
            assert_eq!(base.semantic_text.as_deref(), Some("What is the capital of France?"), "{api:?}");
            let other = keys_of(api, make("What is the capital of Spain?", json!({})), "s").unwrap();
            assert_eq!(other.partition, base.partition, "{api:?}");
            assert_ne!(other.exact, base.exact, "{api:?}");
            let capped = keys_of(api, make("What is the capital of France?", json!({"maxTokens": 5})), "s").unwrap();
            assert_ne!(capped.partition, base.partition, "{api:?}");
            let hot = make("What is the capital of France?", json!({"temperature": 0.9}));
            assert_eq!(keys_of(api, hot, "s"), Err(Skip::Temperature), "{api:?}");
            // Another API never shares the entry: each replays its own shape.
            let chat = chat(json!({}));
            assert_ne!(keys_of(ApiKind::OpenAiChat, chat, "s").unwrap().partition, base.partition);
        }
        let two = gemini("Hi", json!({"candidateCount": 2}));
        assert_eq!(keys_of(ApiKind::GeminiGenerate, two, "s"), Err(Skip::Choices));
        // A system prompt of its own is another partition.
        let mut other_system = gemini("What is the capital of France?", json!({}));
        other_system["systemInstruction"]["parts"][0]["text"] = json!("Be verbose.");
        assert_ne!(
            keys_of(ApiKind::GeminiGenerate, other_system, "s").unwrap().partition,
            keys_of(ApiKind::GeminiGenerate, gemini("What is the capital of France?", json!({})), "s")
                .unwrap()
                .partition
        );
        // Function and tool state: matched exactly only.
        let answered = json!({"contents": [
            {"role": "user", "parts": [{"text": "Look it up"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"r": 1}}}]},
            {"role": "user", "parts": [{"text": "Thanks"}]}],
            "tools": [{"functionDeclarations": [{"name": "lookup"}]}]});
        assert_eq!(keys_of(ApiKind::GeminiGenerate, answered, "s").unwrap().semantic_text, None);
        let tool_result = json!({"messages": [
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "r"}]}}]},
            {"role": "user", "content": [{"text": "Thanks"}]}]});
        assert_eq!(keys_of(ApiKind::BedrockConverse, tool_result, "s").unwrap().semantic_text, None);
        // A tool with side effects offered: not cached at all.
        let acting = json!({"messages": [{"role": "user", "content": [{"text": "Mail Bob"}]}],
            "toolConfig": {"tools": [{"toolSpec": {"name": "send_email", "inputSchema": {"json": {}}}}]}});
        assert_eq!(keys_of(ApiKind::BedrockConverse, acting, "s"), Err(Skip::Tools));
        let counted = json!({"contents": [{"parts": [{"text": "Hi"}]}]});
        assert_eq!(keys_of(ApiKind::GeminiCountTokens, counted, "s"), Err(Skip::Api));
    }
}
