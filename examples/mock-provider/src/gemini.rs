//! The Gemini API (`/v1beta/models/{model}:{verb}`, `/v1/models/…`), the
//! same models on Vertex AI (`/{v1,v1beta1}/projects/{p}/locations/{l}/
//! publishers/google/models/{model}:{verb}`), Anthropic models on Vertex AI
//! (`…/publishers/anthropic/models/{model}:rawPredict|streamRawPredict`) and
//! a Google OAuth2 token endpoint for the service-account flow (`/token`).
//!
//! The wire shapes follow `core/tests/fixtures/gemini/` (Google's API
//! reference and recorded traffic): camelCase JSON, pretty-printed unary
//! answers and errors, `data: {…}\r\n\r\n` SSE events with `alt=sse` and a
//! JSON array of chunks without it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::errors::{self, google_error, google_invalid, json_pretty_response, parse_object, Api};
use crate::util::{self, Finish};
use crate::{headers as mock_headers, Shared};

/// Tokens the mock cached-content stands for: a request naming
/// `cachedContent` counts this many extra prompt tokens, all of them cached.
pub const CACHED_CONTENT_TOKENS: u64 = 32;

/// The `avgLogprobs` Vertex AI reports on unary answers (the mock has no
/// real probabilities).
const AVG_LOGPROBS: f64 = -0.25;

/// The JWT-bearer grant type of the service-account flow.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Which of Google's two surfaces a request came in on (they differ in small
/// ways: key order, `createTime`, `trafficType`, stream usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surface {
    Gemini,
    Vertex,
}

// ------------------------------------------------------------------ tokens

/// Access tokens issued by `POST /token`, with their expiry.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    issued: Mutex<HashMap<String, Instant>>,
    count: AtomicU64,
}

impl Tokens {
    fn issue(&self, ttl: Duration) -> String {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("mock-token-{n}");
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, expiry| *expiry > now);
        issued.insert(token.clone(), now + ttl);
        token
    }

    /// `Ok` for a token this endpoint issued that has not expired; otherwise
    /// the reason Google gives (`CREDENTIALS_MISSING`, `ACCESS_TOKEN_EXPIRED`,
    /// `ACCESS_TOKEN_TYPE_UNSUPPORTED`).
    fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err("CREDENTIALS_MISSING");
        };
        let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).map(str::trim) else {
            return Err("ACCESS_TOKEN_TYPE_UNSUPPORTED");
        };
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        match issued.get(token) {
            Some(expiry) if *expiry > Instant::now() => Ok(()),
            Some(_) => Err("ACCESS_TOKEN_EXPIRED"),
            None => Err("ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        }
    }
}

/// Google's 401 for a Vertex AI call without a valid access token.
fn unauthenticated(reason: &str) -> Response {
    let message = if reason == "CREDENTIALS_MISSING" {
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
    } else {
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
    };
    let mut resp = google_error(
        StatusCode::UNAUTHORIZED,
        message,
        "UNAUTHENTICATED",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "aiplatform.googleapis.com"}
        }])),
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""));
    resp
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    token_type: &'static str,
}

#[derive(Serialize)]
struct OAuthError<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn oauth_error(error: &str, description: &str) -> Response {
    errors::json_response(StatusCode::BAD_REQUEST, &OAuthError { error, error_description: description })
}

/// Checks a service-account JWT assertion's form and claims (the RS256
/// signature is not verified).
fn check_assertion(assertion: &str) -> Result<(), Invalid> {
    let invalid = |what: &str| Box::new(oauth_error("invalid_grant", what));
    let pieces: Vec<&str> = assertion.split('.').collect();
    let [head, claims, signature] = pieces.as_slice() else {
        return Err(invalid("Invalid JWT: the assertion must have three base64url parts."));
    };
    let decode = |part: &str| util::base64url_decode(part).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(head), Some(claims)) = (decode(head), decode(claims)) else {
        return Err(invalid("Invalid JWT: the header and claims must be base64url-encoded JSON objects."));
    };
    if signature.is_empty() || util::base64url_decode(signature).is_none() {
        return Err(invalid("Invalid JWT Signature."));
    }
    if head.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid("Invalid JWT: the header's alg must be RS256."));
    }
    for claim in ["iss", "aud"] {
        if claims.get(claim).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid(&format!("Invalid JWT: the {claim} claim is missing.")));
        }
    }
    if claims.get("scope").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(Box::new(oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")));
    }
    let (Some(iat), Some(exp)) = (claims.get("iat").and_then(Value::as_f64), claims.get("exp").and_then(Value::as_f64))
    else {
        return Err(invalid("Invalid JWT: the iat and exp claims are required."));
    };
    let now = util::unix_now() as f64;
    if iat > now + 300.0 || exp <= now || exp - iat > 3600.0 || exp <= iat {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    Ok(())
}

/// `POST /token`: Google's OAuth2 token endpoint for the service-account
/// (JWT bearer) flow. Tokens live `--token-ttl-secs`.
pub(crate) async fn token(State(state): State<Shared>, body: Bytes) -> Response {
    let form = util::form_fields(&String::from_utf8_lossy(&body));
    match form.get("grant_type").map(String::as_str) {
        Some(JWT_BEARER) => {}
        Some(other) => return oauth_error("unsupported_grant_type", &format!("Invalid grant_type: {other}")),
        None => return oauth_error("unsupported_grant_type", "Invalid grant_type: "),
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    if let Err(resp) = check_assertion(assertion) {
        return *resp;
    }
    let ttl = state.config.token_ttl_secs;
    let access_token = state.tokens.issue(Duration::from_secs(ttl));
    let mut resp =
        errors::json_response(StatusCode::OK, &TokenResponse { access_token, expires_in: ttl, token_type: "Bearer" });
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"));
    resp
}

// ------------------------------------------------------------------ paths

/// `(model, verb)` of a `{model}:{verb}` path segment (split at the last `:`).
pub(crate) fn split_verb(segment: &str) -> Option<(&str, &str)> {
    segment.rsplit_once(':').filter(|(model, verb)| !model.is_empty() && !verb.is_empty())
}

/// The model a Gemini or Vertex AI path names, if it is one.
pub(crate) fn model_from_path(path: &str) -> Option<String> {
    let segment = path.rsplit('/').next()?;
    let (model, _) = split_verb(segment)?;
    path.contains("/models/").then(|| model.to_owned())
}

fn wants_sse(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"))
}

/// `POST /v1beta/models/{model}:{verb}` and `/v1/models/{model}:{verb}`.
pub(crate) async fn models_post(
    State(state): State<Shared>,
    Path(segment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(&state, Surface::Gemini, &segment, &uri, &headers, &body).await
}

/// `POST /{v1,v1beta1}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{verb}`:
/// needs an access token from `/token`.
pub(crate) async fn vertex_post(
    State(state): State<Shared>,
    Path((_project, _location, publisher, segment)): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(reason) = state.tokens.check(&headers) {
        return unauthenticated(reason);
    }
    match publisher.as_str() {
        "google" => dispatch(&state, Surface::Vertex, &segment, &uri, &headers, &body).await,
        "anthropic" => anthropic_on_vertex(state, &segment, headers, &body).await,
        other => google_error(
            StatusCode::NOT_FOUND,
            &format!("Publisher Model `publishers/{other}/models/{segment}` was not found or your project does not have access to it."),
            "NOT_FOUND",
            None,
        ),
    }
}

async fn dispatch(
    state: &Shared,
    surface: Surface,
    segment: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some((model, verb)) = split_verb(segment) else {
        return errors::not_found(Api::Gemini, "POST", uri.path());
    };
    let model = model.strip_prefix("models/").unwrap_or(model);
    match verb {
        "generateContent" => generate(state, surface, model, headers, body, None),
        "streamGenerateContent" => {
            let framing = if wants_sse(uri) { Framing::Sse } else { Framing::JsonArray };
            generate(state, surface, model, headers, body, Some(framing))
        }
        "countTokens" => count_tokens(surface, body),
        // Vertex AI serves it too (`PredictionService.EmbedContent`, for
        // the Gemini embedding models).
        "embedContent" => embed_content(body),
        "batchEmbedContents" if surface == Surface::Gemini => batch_embed_contents(model, body),
        _ => errors::not_found(Api::Gemini, "POST", uri.path()),
    }
}

// ---------------------------------------------------------- request reading

/// A field by its JSON (camelCase) name or its proto (snake_case) name:
/// Google accepts both.
fn field<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel).or_else(|| obj.get(snake))
}

type Invalid = Box<Response>;

fn invalid(message: &str) -> Invalid {
    Box::new(google_invalid(message))
}

fn type_error(path: &str, what: &str, value: &Value) -> Invalid {
    invalid(&format!("Invalid value at '{path}' ({what}), {}", serde_json::to_string(value).unwrap_or_default()))
}

/// Fields of `GenerateContentRequest` (JSON and proto names).
const REQUEST_FIELDS: &[&str] = &[
    "model",
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "safetySettings",
    "safety_settings",
    "generationConfig",
    "generation_config",
    "cachedContent",
    "cached_content",
    "labels",
    "serviceTier",
    "service_tier",
    "store",
];

/// What a `contents` list says, reduced to what the mock needs.
#[derive(Default)]
struct Conversation {
    segments: Vec<String>,
    last_user_text: String,
    /// The last turn is a user turn without a `functionResponse`.
    ends_with_user_text: bool,
}

/// Text of a `Content`'s parts, validated. `where_` is the proto path
/// (`contents[0]`) used in Google's messages.
fn read_parts(
    content: &Map<String, Value>,
    where_: &str,
    conv: &mut Conversation,
) -> Result<(Vec<String>, bool), Invalid> {
    let parts = match content.get("parts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => {
            return Err(type_error(
                &format!("{where_}.parts"),
                "type.googleapis.com/google.ai.generativelanguage.v1beta.Part",
                other,
            ))
        }
    };
    if parts.is_empty() {
        return Err(invalid(&format!("* GenerateContentRequest.{where_}.parts: contents.parts must not be empty.\n")));
    }
    let mut texts = Vec::new();
    let mut function_response = false;
    for (j, part) in parts.iter().enumerate() {
        let Some(part) = part.as_object() else {
            return Err(type_error(
                &format!("{where_}.parts[{j}]"),
                "type.googleapis.com/google.ai.generativelanguage.v1beta.Part",
                part,
            ));
        };
        let mut data = 0;
        if let Some(text) = part.get("text") {
            data += 1;
            match text.as_str() {
                Some(t) => texts.push(t.to_owned()),
                None => return Err(type_error(&format!("{where_}.parts[{j}].text"), "TYPE_STRING", text)),
            }
        }
        if let Some(blob) = field(part, "inlineData", "inline_data") {
            data += 1;
            if blob.get("data").and_then(Value::as_str).is_none() {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.{where_}.parts[{j}].inline_data.data: required field is not set\n"
                )));
            }
            if field(blob.as_object().unwrap_or(&Map::new()), "mimeType", "mime_type").and_then(Value::as_str).is_none()
            {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.{where_}.parts[{j}].inline_data.mime_type: required field is not set\n"
                )));
            }
        }
        if let Some(file) = field(part, "fileData", "file_data") {
            data += 1;
            if field(file.as_object().unwrap_or(&Map::new()), "fileUri", "file_uri").and_then(Value::as_str).is_none() {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.{where_}.parts[{j}].file_data.file_uri: required field is not set\n"
                )));
            }
        }
        if let Some(call) = field(part, "functionCall", "function_call") {
            data += 1;
            if call.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.{where_}.parts[{j}].function_call.name: Name cannot be empty.\n"
                )));
            }
            if let Some(args) = call.get("args") {
                conv.segments.push(errors::to_json(args));
            }
        }
        if let Some(resp) = field(part, "functionResponse", "function_response") {
            data += 1;
            function_response = true;
            if resp.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.{where_}.parts[{j}].function_response.name: Name cannot be empty.\n"
                )));
            }
            if let Some(r) = resp.get("response") {
                conv.segments.push(errors::to_json(r));
            }
        }
        for other in ["executableCode", "executable_code", "codeExecutionResult", "code_execution_result"] {
            if part.contains_key(other) {
                data += 1;
            }
        }
        if data == 0 {
            return Err(invalid(&format!(
                "* GenerateContentRequest.{where_}.parts[{j}].data: required oneof field 'data' must have one initialized field\n"
            )));
        }
    }
    Ok((texts, function_response))
}

fn read_contents(req: &Map<String, Value>) -> Result<Conversation, Invalid> {
    let mut conv = Conversation::default();
    if let Some(system) = field(req, "systemInstruction", "system_instruction") {
        let Some(system) = system.as_object() else {
            return Err(type_error(
                "system_instruction",
                "type.googleapis.com/google.ai.generativelanguage.v1beta.Content",
                system,
            ));
        };
        let (texts, _) = read_parts(system, "system_instruction", &mut conv)?;
        conv.segments.extend(texts);
    }
    let contents = match req.get("contents") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => {
            return Err(type_error(
                "contents",
                "type.googleapis.com/google.ai.generativelanguage.v1beta.Content",
                other,
            ))
        }
    };
    if contents.is_empty() {
        return Err(invalid("* GenerateContentRequest.contents: contents is not specified\n"));
    }
    for (i, content) in contents.iter().enumerate() {
        let Some(content) = content.as_object() else {
            return Err(type_error(
                &format!("contents[{i}]"),
                "type.googleapis.com/google.ai.generativelanguage.v1beta.Content",
                content,
            ));
        };
        let role = match content.get("role") {
            None | Some(Value::Null) => "user",
            Some(Value::String(r)) if r.is_empty() => "user",
            Some(Value::String(r)) if matches!(r.as_str(), "user" | "model" | "function") => r.as_str(),
            Some(_) => return Err(invalid("Please use a valid role: user, model.")),
        };
        let (texts, function_response) = read_parts(content, &format!("contents[{i}]"), &mut conv)?;
        if role == "user" && !texts.is_empty() {
            conv.last_user_text = texts.join("\n");
        }
        conv.ends_with_user_text = role == "user" && !function_response;
        conv.segments.extend(texts);
    }
    Ok(conv)
}

/// Valid Gemini function names: a letter or `_`, then letters, digits,
/// `_ . : -`, 64 at most.
fn valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.chars().count() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn read_tools(req: &Map<String, Value>) -> Result<Vec<String>, Invalid> {
    let mut names = Vec::new();
    let tools = match req.get("tools") {
        None | Some(Value::Null) => return Ok(names),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(type_error("tools", "type.googleapis.com/google.ai.generativelanguage.v1beta.Tool", other))
        }
    };
    for (i, tool) in tools.iter().enumerate() {
        let Some(tool) = tool.as_object() else {
            return Err(type_error(
                &format!("tools[{i}]"),
                "type.googleapis.com/google.ai.generativelanguage.v1beta.Tool",
                tool,
            ));
        };
        let Some(decls) = field(tool, "functionDeclarations", "function_declarations").and_then(Value::as_array) else {
            continue;
        };
        for (j, decl) in decls.iter().enumerate() {
            let name = decl.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Name cannot be empty.\n"
                )));
            }
            if !valid_function_name(name) {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n"
                )));
            }
            let obj = decl.as_object().cloned().unwrap_or_default();
            if field(&obj, "parameters", "parameters").is_some()
                && field(&obj, "parametersJsonSchema", "parameters_json_schema").is_some()
            {
                return Err(invalid(&format!(
                    "* GenerateContentRequest.tools[{i}].function_declarations[{j}].parameters_json_schema: parameters_json_schema and parameters cannot both be set.\n"
                )));
            }
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The function-calling mode and allowed names of `toolConfig`.
fn read_tool_config(req: &Map<String, Value>) -> Result<(String, Vec<String>), Invalid> {
    let config = field(req, "toolConfig", "tool_config")
        .and_then(Value::as_object)
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"))
        .and_then(Value::as_object);
    let Some(config) = config else {
        return Ok(("AUTO".to_owned(), Vec::new()));
    };
    let mode = match config.get("mode") {
        None | Some(Value::Null) => "AUTO",
        Some(Value::String(m)) if matches!(m.as_str(), "MODE_UNSPECIFIED" | "AUTO" | "ANY" | "NONE" | "VALIDATED") => {
            m.as_str()
        }
        Some(other) => {
            return Err(type_error(
                "tool_config.function_calling_config.mode",
                "type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode",
                other,
            ))
        }
    };
    let allowed: Vec<String> = field(config, "allowedFunctionNames", "allowed_function_names")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if !allowed.is_empty() && !matches!(mode, "ANY" | "VALIDATED") {
        return Err(invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: allowed_function_names can only be set when mode is ANY or VALIDATED.\n",
        ));
    }
    Ok((mode.to_owned(), allowed))
}

/// What `generationConfig` asks of the answer.
#[derive(Default)]
struct Generation {
    stop: Vec<String>,
    max_tokens: Option<u64>,
    candidates: u64,
    json: bool,
    /// Whether the model thinks (a non-zero budget or a level), and whether
    /// the thoughts come back as parts.
    thinking: bool,
    include_thoughts: bool,
}

fn number_in(cfg: &Map<String, Value>, camel: &str, snake: &str, lo: f64, hi: f64) -> Result<(), Invalid> {
    match field(cfg, camel, snake) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            Some(_) => Err(invalid(&format!(
                "* GenerateContentRequest.generation_config.{snake}: {snake} must be in the range [{lo}, {hi}].\n"
            ))),
            None => Err(type_error(&format!("generation_config.{snake}"), "TYPE_FLOAT", v)),
        },
    }
}

fn positive_int(cfg: &Map<String, Value>, camel: &str, snake: &str) -> Result<Option<u64>, Invalid> {
    match field(cfg, camel, snake) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Ok(Some(n.unsigned_abs())),
            Some(_) => Err(invalid(&format!(
                "* GenerateContentRequest.generation_config.{snake}: {snake} must be positive.\n"
            ))),
            None => Err(type_error(&format!("generation_config.{snake}"), "TYPE_INT32", v)),
        },
    }
}

fn read_generation(req: &Map<String, Value>) -> Result<Generation, Invalid> {
    let mut gen = Generation { candidates: 1, ..Generation::default() };
    let Some(cfg) = field(req, "generationConfig", "generation_config") else {
        return Ok(gen);
    };
    let Some(cfg) = cfg.as_object() else {
        return Err(type_error(
            "generation_config",
            "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig",
            cfg,
        ));
    };
    number_in(cfg, "temperature", "temperature", 0.0, 2.0)?;
    number_in(cfg, "topP", "top_p", 0.0, 1.0)?;
    positive_int(cfg, "topK", "top_k")?;
    gen.max_tokens = positive_int(cfg, "maxOutputTokens", "max_output_tokens")?;
    gen.candidates = positive_int(cfg, "candidateCount", "candidate_count")?.unwrap_or(1);
    if gen.candidates > 8 {
        return Err(invalid("* GenerateContentRequest.generation_config.candidate_count: candidate_count must be in the range [1, 8].\n"));
    }
    match field(cfg, "stopSequences", "stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            if items.len() > 5 {
                return Err(invalid("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed.\n"));
            }
            gen.stop = items.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        }
        Some(other) => return Err(type_error("generation_config.stop_sequences", "TYPE_STRING", other)),
    }
    let mime = field(cfg, "responseMimeType", "response_mime_type").and_then(Value::as_str).unwrap_or("text/plain");
    if !matches!(mime, "text/plain" | "application/json" | "text/x.enum") {
        return Err(invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n",
        ));
    }
    let schema = field(cfg, "responseSchema", "response_schema").is_some();
    let json_schema = field(cfg, "responseJsonSchema", "response_json_schema").is_some();
    if schema && json_schema {
        return Err(invalid(
            "* GenerateContentRequest.generation_config.response_json_schema: response_json_schema and response_schema cannot both be set.\n",
        ));
    }
    if (schema || json_schema) && mime == "text/plain" {
        return Err(invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be set to `application/json` or `text/x.enum` when a response schema is set.\n",
        ));
    }
    gen.json = mime == "application/json";
    if let Some(thinking) = field(cfg, "thinkingConfig", "thinking_config").and_then(Value::as_object) {
        let budget = field(thinking, "thinkingBudget", "thinking_budget").and_then(Value::as_i64);
        let level = field(thinking, "thinkingLevel", "thinking_level").and_then(Value::as_str);
        gen.include_thoughts =
            field(thinking, "includeThoughts", "include_thoughts").and_then(Value::as_bool).unwrap_or(false);
        gen.thinking = budget.is_some_and(|b| b != 0) || level.is_some() || gen.include_thoughts;
    }
    Ok(gen)
}

fn read_safety(req: &Map<String, Value>) -> Result<(), Invalid> {
    let Some(settings) = field(req, "safetySettings", "safety_settings") else {
        return Ok(());
    };
    let Some(settings) = settings.as_array() else {
        return Err(type_error(
            "safety_settings",
            "type.googleapis.com/google.ai.generativelanguage.v1beta.SafetySetting",
            settings,
        ));
    };
    for (i, s) in settings.iter().enumerate() {
        let category = s.get("category").and_then(Value::as_str).unwrap_or_default();
        if !category.starts_with("HARM_CATEGORY_") {
            return Err(type_error(
                &format!("safety_settings[{i}].category"),
                "type.googleapis.com/google.ai.generativelanguage.v1beta.HarmCategory",
                s.get("category").unwrap_or(&Value::Null),
            ));
        }
        let threshold = s.get("threshold").and_then(Value::as_str).unwrap_or_default();
        if !matches!(
            threshold,
            "HARM_BLOCK_THRESHOLD_UNSPECIFIED"
                | "BLOCK_LOW_AND_ABOVE"
                | "BLOCK_MEDIUM_AND_ABOVE"
                | "BLOCK_ONLY_HIGH"
                | "BLOCK_NONE"
                | "OFF"
        ) {
            return Err(type_error(
                &format!("safety_settings[{i}].threshold"),
                "type.googleapis.com/google.ai.generativelanguage.v1beta.SafetySetting.HarmBlockThreshold",
                s.get("threshold").unwrap_or(&Value::Null),
            ));
        }
    }
    Ok(())
}

/// A validated `GenerateContentRequest`.
struct Parsed {
    conv: Conversation,
    tools: Vec<String>,
    mode: String,
    allowed: Vec<String>,
    gen: Generation,
    cached: bool,
}

fn read_request(req: &Map<String, Value>) -> Result<Parsed, Invalid> {
    if let Some(unknown) = req.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(invalid(&format!("Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field.")));
    }
    let conv = read_contents(req)?;
    let tools = read_tools(req)?;
    let (mode, allowed) = read_tool_config(req)?;
    let gen = read_generation(req)?;
    read_safety(req)?;
    let cached = field(req, "cachedContent", "cached_content").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
    Ok(Parsed { conv, tools, mode, allowed, gen, cached })
}

/// The function to call, if any: the same rules as the other APIs (see the
/// README): `ANY` always calls (the first allowed name, else the first
/// declared), `NONE` never, otherwise when the last user turn says "tool".
fn function_to_call(p: &Parsed) -> Option<String> {
    let first = p.tools.first()?;
    match p.mode.as_str() {
        "NONE" => None,
        "ANY" => Some(p.allowed.first().unwrap_or(first).clone()),
        _ => (p.conv.ends_with_user_text && util::mentions_tool(&p.conv.last_user_text)).then(|| first.clone()),
    }
}

// ---------------------------------------------------------------- responses

#[derive(Serialize)]
#[serde(untagged)]
enum Content {
    /// Gemini API order: `parts`, then `role`.
    Gemini { parts: Vec<Part>, role: &'static str },
    /// Vertex AI order: `role`, then `parts`.
    Vertex { role: &'static str, parts: Vec<Part> },
}

fn index_of(surface: Surface, i: u64) -> Option<u64> {
    (surface == Surface::Gemini || i > 0).then_some(i)
}

fn content(surface: Surface, parts: Vec<Part>) -> Content {
    match surface {
        Surface::Gemini => Content::Gemini { parts, role: "model" },
        Surface::Vertex => Content::Vertex { role: "model", parts },
    }
}

#[derive(Serialize, Clone)]
#[serde(untagged)]
enum Part {
    Thought {
        text: String,
        thought: bool,
    },
    Text {
        text: String,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall,
    },
}

#[derive(Serialize, Clone)]
struct FunctionCall {
    name: String,
    args: Value,
}

#[derive(Serialize, Clone)]
struct SafetyRating {
    category: &'static str,
    probability: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocked: Option<bool>,
}

fn safety_ratings(blocked: bool) -> Vec<SafetyRating> {
    let rating = |category, hit: bool| SafetyRating {
        category,
        probability: if hit { "HIGH" } else { "NEGLIGIBLE" },
        blocked: hit.then_some(true),
    };
    vec![
        rating("HARM_CATEGORY_SEXUALLY_EXPLICIT", false),
        rating("HARM_CATEGORY_HATE_SPEECH", false),
        rating("HARM_CATEGORY_HARASSMENT", false),
        rating("HARM_CATEGORY_DANGEROUS_CONTENT", blocked),
    ]
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    /// Vertex AI, unary answers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    avg_logprobs: Option<f64>,
    /// The Gemini API always sends it; Vertex AI omits 0 (proto3 JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_ratings: Option<Vec<SafetyRating>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_message: Option<&'static str>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: &'static str,
    token_count: u64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<u64>,
    total_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic_type: Option<&'static str>,
    prompt_tokens_details: Vec<ModalityCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_tokens_details: Option<Vec<ModalityCount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_tokens_details: Option<Vec<ModalityCount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: &'static str,
    safety_ratings: Vec<SafetyRating>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates: Option<Vec<Candidate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<UsageMetadata>,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_time: Option<&'a str>,
    response_id: &'a str,
}

/// Token counts of one answer.
#[derive(Clone, Copy)]
struct Counts {
    prompt: u64,
    cached: Option<u64>,
    candidates: Option<u64>,
    thoughts: Option<u64>,
}

fn usage(surface: Surface, c: Counts) -> UsageMetadata {
    let text = |n| vec![ModalityCount { modality: "TEXT", token_count: n }];
    let vertex = surface == Surface::Vertex;
    UsageMetadata {
        prompt_token_count: c.prompt,
        candidates_token_count: c.candidates,
        total_token_count: c.prompt + c.candidates.unwrap_or(0) + c.thoughts.unwrap_or(0),
        cached_content_token_count: c.cached,
        traffic_type: vertex.then_some("ON_DEMAND"),
        prompt_tokens_details: text(c.prompt),
        cache_tokens_details: c.cached.map(text),
        candidates_tokens_details: c.candidates.filter(|_| vertex).map(text),
        thoughts_token_count: c.thoughts,
    }
}

/// The mock's answer to one request.
enum Answer {
    Text { text: String, finish: Finish },
    Call { name: String, args: Value },
}

/// Which `x-mock-gemini-block` was asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Prompt,
    Answer,
}

fn block_header(headers: &HeaderMap) -> Block {
    match headers.get(mock_headers::GEMINI_BLOCK).and_then(|v| v.to_str().ok()).map(str::trim) {
        Some("prompt") => Block::Prompt,
        Some("answer") => Block::Answer,
        _ => Block::None,
    }
}

/// How a `streamGenerateContent` answer is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `alt=sse`: `data: {chunk}\r\n\r\n` events.
    Sse,
    /// Without `alt=sse`: one JSON array of chunks, written as it goes.
    JsonArray,
}

/// Everything needed to write the response chunks.
struct Writer<'a> {
    surface: Surface,
    model: &'a str,
    id: String,
    create_time: Option<String>,
}

impl Writer<'_> {
    fn response(
        &self,
        candidates: Option<Vec<Candidate>>,
        feedback: Option<PromptFeedback>,
        usage: Option<UsageMetadata>,
    ) -> GenerateContentResponse<'_> {
        GenerateContentResponse {
            candidates,
            prompt_feedback: feedback,
            usage_metadata: usage,
            model_version: self.model,
            create_time: self.create_time.as_deref(),
            response_id: &self.id,
        }
    }
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Length => "MAX_TOKENS",
        Finish::Stop | Finish::StopSequence(_) => "STOP",
    }
}

fn generate(
    state: &Shared,
    surface: Surface,
    model: &str,
    headers: &HeaderMap,
    body: &[u8],
    stream: Option<Framing>,
) -> Response {
    let req = match parse_object(Api::Gemini, body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let parsed = match read_request(&req) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let cached = parsed.cached.then_some(CACHED_CONTENT_TOKENS);
    let prompt = util::sum_tokens(parsed.conv.segments.iter().map(String::as_str)) + cached.unwrap_or(0);
    let writer = Writer {
        surface,
        model,
        id: state.ids.base62("", 23),
        create_time: (surface == Surface::Vertex).then(util::rfc3339_now),
    };
    let delay = state.chunk_delay(headers);

    let block = block_header(headers);
    if block == Block::Prompt {
        let counts = Counts { prompt, cached, candidates: None, thoughts: None };
        let resp = writer.response(
            None,
            Some(PromptFeedback { block_reason: "SAFETY", safety_ratings: safety_ratings(true) }),
            Some(usage(surface, counts)),
        );
        return match stream {
            None => json_pretty_response(StatusCode::OK, &resp),
            Some(framing) => stream_chunks(vec![errors::to_json(&resp)], framing, delay),
        };
    }

    let answer = match function_to_call(&parsed) {
        Some(name) => Answer::Call { name, args: json!({"query": parsed.conv.last_user_text}) },
        None => {
            let mut reply = util::reply_with_append(&parsed.conv.last_user_text, headers);
            if parsed.gen.json {
                reply = errors::to_json(&reply);
            }
            let (text, finish) = util::shape_reply(reply, &parsed.gen.stop, parsed.gen.max_tokens);
            Answer::Text { text, finish }
        }
    };
    let thought_text = parsed.gen.thinking.then(|| {
        format!("Thinking about: {}", util::truncate_chars(&parsed.conv.last_user_text, util::ECHO_LIMIT_CHARS))
    });
    let thoughts = thought_text.as_deref().map(|t| util::approx_tokens(t).max(1));
    let thought_part =
        thought_text.filter(|_| parsed.gen.include_thoughts).map(|text| Part::Thought { text, thought: true });
    let n = parsed.gen.candidates;

    match stream {
        None => {
            let (parts, finish, output, finish_message) = match &answer {
                Answer::Text { text, finish } => {
                    let output = util::approx_tokens(text).max(1);
                    (vec![Part::Text { text: text.clone() }], finish_reason(finish), output, None)
                }
                Answer::Call { name, args } => (
                    vec![Part::Call { function_call: FunctionCall { name: name.clone(), args: args.clone() } }],
                    "STOP",
                    util::approx_tokens(&errors::to_json(args)).max(1),
                    (surface == Surface::Gemini).then_some("Model generated function call(s)."),
                ),
            };
            let candidates = (0..n)
                .map(|i| {
                    if block == Block::Answer {
                        return Candidate {
                            content: None,
                            finish_reason: Some("SAFETY"),
                            avg_logprobs: None,
                            index: index_of(surface, i),
                            safety_ratings: Some(safety_ratings(true)),
                            finish_message: None,
                        };
                    }
                    let mut all = Vec::new();
                    all.extend(thought_part.clone());
                    all.extend(parts.clone());
                    Candidate {
                        content: Some(content(surface, all)),
                        finish_reason: Some(finish),
                        avg_logprobs: (surface == Surface::Vertex).then_some(AVG_LOGPROBS),
                        index: index_of(surface, i),
                        safety_ratings: None,
                        finish_message,
                    }
                })
                .collect();
            let output = if block == Block::Answer { None } else { Some(output * n) };
            let counts = Counts { prompt, cached, candidates: output, thoughts };
            json_pretty_response(StatusCode::OK, &writer.response(Some(candidates), None, Some(usage(surface, counts))))
        }
        Some(framing) => {
            let chunks = stream_answer(
                &writer,
                &answer,
                thought_part,
                block,
                Counts { prompt, cached, candidates: None, thoughts },
            );
            stream_chunks(chunks, framing, delay)
        }
    }
}

/// The JSON chunks of a streamed answer: an optional thought chunk, one chunk
/// per word (or one function-call chunk), the last carrying `finishReason`.
/// Gemini API chunks each carry the usage so far (cumulative, so the last is
/// the total); Vertex AI sends usage on the last chunk only.
fn stream_answer(
    writer: &Writer<'_>,
    answer: &Answer,
    thought: Option<Part>,
    block: Block,
    counts: Counts,
) -> Vec<String> {
    let surface = writer.surface;
    let mut pieces: Vec<Part> = Vec::new();
    pieces.extend(thought);
    let mut finish = "STOP";
    let mut finish_message = None;
    match answer {
        Answer::Text { text, finish: f } => {
            finish = finish_reason(f);
            pieces.extend(util::split_words(text).into_iter().map(|text| Part::Text { text }));
        }
        Answer::Call { name, args } => {
            finish_message = (surface == Surface::Gemini).then_some("Model generated function call(s).");
            pieces.push(Part::Call { function_call: FunctionCall { name: name.clone(), args: args.clone() } });
        }
    }
    if block == Block::Answer {
        // Some of the answer goes out before the filter stops it.
        let keep = pieces.len().div_ceil(2);
        pieces.truncate(keep);
    }
    // Output so far, counted as the whole text so far (so the last chunk's
    // count is the unary answer's).
    let mut text_so_far = String::new();
    let mut so_far = 0u64;
    let last = pieces.len().saturating_sub(1);
    let mut chunks = Vec::with_capacity(pieces.len() + 1);
    for (i, part) in pieces.into_iter().enumerate() {
        match &part {
            Part::Text { text } => {
                text_so_far.push_str(text);
                so_far = util::approx_tokens(&text_so_far);
            }
            Part::Call { function_call } => so_far = util::approx_tokens(&errors::to_json(&function_call.args)).max(1),
            Part::Thought { .. } => {}
        }
        let is_last = i == last && block != Block::Answer;
        let usage_now = match surface {
            Surface::Gemini => Some(usage(surface, Counts { candidates: (so_far > 0).then_some(so_far), ..counts })),
            Surface::Vertex if is_last => Some(usage(surface, Counts { candidates: Some(so_far.max(1)), ..counts })),
            Surface::Vertex => None,
        };
        let candidate = Candidate {
            content: Some(content(surface, vec![part])),
            finish_reason: is_last.then_some(finish),
            avg_logprobs: None,
            index: index_of(surface, 0),
            safety_ratings: None,
            finish_message: finish_message.filter(|_| is_last),
        };
        chunks.push(errors::to_json(&writer.response(Some(vec![candidate]), None, usage_now)));
    }
    if block == Block::Answer {
        let candidate = Candidate {
            content: None,
            finish_reason: Some("SAFETY"),
            avg_logprobs: None,
            index: index_of(surface, 0),
            safety_ratings: Some(safety_ratings(true)),
            finish_message: None,
        };
        let counts = Counts { candidates: Some(so_far.max(1)), ..counts };
        chunks.push(errors::to_json(&writer.response(Some(vec![candidate]), None, Some(usage(surface, counts)))));
    }
    chunks
}

fn stream_chunks(chunks: Vec<String>, framing: Framing, delay: Duration) -> Response {
    match framing {
        Framing::Sse => {
            let frames = chunks.into_iter().map(|c| Bytes::from(format!("data: {c}\r\n\r\n"))).collect();
            errors::stream_response(frames, delay, "text/event-stream")
        }
        Framing::JsonArray => {
            let count = chunks.len();
            let frames = chunks
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let open = if i == 0 { "[" } else { "" };
                    let close = if i + 1 == count { "]" } else { "\n,\r\n" };
                    Bytes::from(format!("{open}{c}{close}"))
                })
                .collect();
            errors::stream_response(frames, delay, "application/json; charset=UTF-8")
        }
    }
}

// ------------------------------------------------------------- other verbs

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenCount {
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_billable_characters: Option<u64>,
    prompt_tokens_details: Vec<ModalityCount>,
}

/// `:countTokens`: `{contents}` or `{generateContentRequest}`.
fn count_tokens(surface: Surface, body: &[u8]) -> Response {
    let req = match parse_object(Api::Gemini, body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let inner = field(&req, "generateContentRequest", "generate_content_request").and_then(Value::as_object);
    let (conv, cached) = match inner {
        Some(inner) => match read_request(inner) {
            Ok(p) => (p.conv, p.cached),
            Err(resp) => return *resp,
        },
        None => match read_contents(&req) {
            Ok(conv) => (conv, false),
            Err(resp) => {
                // The countTokens request's own name in the message.
                return *resp;
            }
        },
    };
    let total =
        util::sum_tokens(conv.segments.iter().map(String::as_str)) + if cached { CACHED_CONTENT_TOKENS } else { 0 };
    let chars: u64 = conv.segments.iter().map(|s| s.chars().filter(|c| !c.is_whitespace()).count() as u64).sum();
    json_pretty_response(
        StatusCode::OK,
        &TokenCount {
            total_tokens: total,
            total_billable_characters: (surface == Surface::Vertex).then_some(chars),
            prompt_tokens_details: vec![ModalityCount { modality: "TEXT", token_count: total }],
        },
    )
}

#[derive(Serialize)]
struct Embedding {
    values: Vec<f32>,
}

#[derive(Serialize)]
struct EmbedResponse {
    embedding: Embedding,
}

#[derive(Serialize)]
struct BatchEmbedResponse {
    embeddings: Vec<Embedding>,
}

/// One `EmbedContentRequest`'s vector. `where_` names it in errors.
fn embed_one(req: &Map<String, Value>, where_: &str) -> Result<Embedding, Invalid> {
    let Some(content) = req.get("content").and_then(Value::as_object) else {
        return Err(invalid(&format!("* {where_}.content: content is not specified\n")));
    };
    let mut conv = Conversation::default();
    let (texts, _) = read_parts(content, &format!("{where_}.content"), &mut conv)?;
    let dims = match field(req, "outputDimensionality", "output_dimensionality") {
        None | Some(Value::Null) => 8,
        Some(v) => match v.as_u64() {
            Some(d @ 1..=4096) => usize::try_from(d).unwrap_or(8),
            _ => return Err(invalid(&format!("* {where_}.output_dimensionality: must be in the range [1, 4096].\n"))),
        },
    };
    Ok(Embedding { values: util::embedding_for(texts.join("\n").as_bytes(), dims) })
}

/// `:embedContent`: `{content, taskType?, title?, outputDimensionality?}`.
fn embed_content(body: &[u8]) -> Response {
    let req = match parse_object(Api::Gemini, body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match embed_one(&req, "EmbedContentRequest") {
        Ok(embedding) => json_pretty_response(StatusCode::OK, &EmbedResponse { embedding }),
        Err(resp) => *resp,
    }
}

/// `:batchEmbedContents`: `{requests: [EmbedContentRequest]}`, each for the
/// path's model.
fn batch_embed_contents(model: &str, body: &[u8]) -> Response {
    let req = match parse_object(Api::Gemini, body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let requests = match req.get("requests") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return google_invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n"),
    };
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let Some(r) = r.as_object() else {
            return google_invalid(&format!("* BatchEmbedContentsRequest.requests[{i}]: must be an object\n"));
        };
        if let Some(m) = r.get("model").and_then(Value::as_str) {
            if m.strip_prefix("models/").unwrap_or(m) != model {
                return google_invalid(&format!(
                    "* BatchEmbedContentsRequest.requests[{i}].model: the model of every request must be the batch's model (models/{model}).\n"
                ));
            }
        }
        match embed_one(r, &format!("BatchEmbedContentsRequest.requests[{i}]")) {
            Ok(e) => embeddings.push(e),
            Err(resp) => return *resp,
        }
    }
    json_pretty_response(StatusCode::OK, &BatchEmbedResponse { embeddings })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelInfo {
    name: String,
    version: &'static str,
    display_name: String,
    description: &'static str,
    input_token_limit: u64,
    output_token_limit: u64,
    supported_generation_methods: Vec<&'static str>,
}

fn model_info(id: &str) -> ModelInfo {
    let id = id.strip_prefix("models/").unwrap_or(id);
    let methods = if id.contains("embedding") {
        vec!["embedContent", "batchEmbedContents", "countTokens"]
    } else {
        vec!["generateContent", "countTokens", "streamGenerateContent"]
    };
    ModelInfo {
        name: format!("models/{id}"),
        version: "001",
        display_name: id.to_owned(),
        description: "A model of the offline mock provider.",
        input_token_limit: 1_048_576,
        output_token_limit: 65_536,
        supported_generation_methods: methods,
    }
}

#[derive(Serialize)]
struct ModelList {
    models: Vec<ModelInfo>,
}

/// `GET /v1beta/models`.
pub(crate) async fn list_models(State(state): State<Shared>) -> Response {
    let models = crate::served_models(&state.config.name).iter().map(|id| model_info(id)).collect();
    json_pretty_response(StatusCode::OK, &ModelList { models })
}

/// `GET /v1beta/models/{model}`: any model exists.
pub(crate) async fn get_model(Path(id): Path<String>) -> Response {
    json_pretty_response(StatusCode::OK, &model_info(&id))
}

// --------------------------------------------------- Anthropic on Vertex AI

/// The `anthropic_version` Vertex AI requires in the body.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// `…/publishers/anthropic/models/{model}:rawPredict|streamRawPredict`: an
/// Anthropic Messages body without `model` and with `anthropic_version`,
/// answered by the Messages handler for the path's model.
async fn anthropic_on_vertex(state: Shared, segment: &str, headers: HeaderMap, body: &[u8]) -> Response {
    let Some((model, verb)) = split_verb(segment) else {
        return errors::not_found(Api::VertexAnthropic, "POST", segment);
    };
    let stream = match verb {
        "rawPredict" => None,
        "streamRawPredict" => Some(true),
        _ => return errors::not_found(Api::VertexAnthropic, "POST", segment),
    };
    let mut req = match parse_object(Api::VertexAnthropic, body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match req.remove("anthropic_version") {
        Some(Value::String(v)) if v == VERTEX_ANTHROPIC_VERSION => {}
        Some(_) => {
            return errors::anthropic_invalid(&format!(
                "anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}'"
            ))
        }
        None => return errors::anthropic_invalid("anthropic_version: Field required"),
    }
    if req.contains_key("model") {
        return errors::anthropic_invalid("model: Extra inputs are not permitted");
    }
    req.insert("model".to_owned(), Value::String(model.to_owned()));
    if let Some(stream) = stream {
        req.insert("stream".to_owned(), Value::Bool(stream));
    }
    let body = Bytes::from(errors::to_json(&Value::Object(req)));
    crate::anthropic::messages(State(state), headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_split_at_the_last_colon() {
        assert_eq!(split_verb("gemini-2.5-flash:generateContent"), Some(("gemini-2.5-flash", "generateContent")));
        assert_eq!(split_verb("a:b:countTokens"), Some(("a:b", "countTokens")));
        assert_eq!(split_verb("gemini"), None);
        assert_eq!(split_verb(":x"), None);
        assert_eq!(model_from_path("/v1beta/models/g-1:generateContent").as_deref(), Some("g-1"));
        assert_eq!(
            model_from_path("/v1/projects/p/locations/l/publishers/google/models/g-2:streamGenerateContent").as_deref(),
            Some("g-2")
        );
        assert_eq!(model_from_path("/v1/chat/completions"), None);
    }

    #[test]
    fn function_names_follow_gemini_rules() {
        assert!(valid_function_name("get_weather"));
        assert!(valid_function_name("_a.b:c-d9"));
        assert!(!valid_function_name("9lives"));
        assert!(!valid_function_name("has space"));
        assert!(!valid_function_name(&"a".repeat(65)));
    }
}
