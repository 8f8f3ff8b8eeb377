//! Where a request goes: what each provider kind serves, the request path a
//! provider takes, the order of an alias's targets, and [`Policy::route`].

use super::schema::{ModelRoute, Policy, Provider, ProviderKind, Strategy, Target};
use crate::api::{ApiFamily, ApiKind};
use crate::error::Error;
use crate::translate::Direction;

impl ProviderKind {
    /// Whether a provider of this kind serves requests of `family` natively.
    pub fn serves(self, family: ApiFamily) -> bool {
        match self {
            ProviderKind::Mock => true,
            ProviderKind::Anthropic => family == ApiFamily::Anthropic,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => {
                family == ApiFamily::OpenAi
            }
            ProviderKind::Gemini => family == ApiFamily::Gemini,
            // Gemini models, and Anthropic's through `rawPredict`.
            ProviderKind::VertexAi => matches!(family, ApiFamily::Gemini | ApiFamily::Anthropic),
            ProviderKind::Bedrock => family == ApiFamily::Bedrock,
        }
    }

    /// The family whose chat API a translated request is sent as, for a
    /// request of `model` (the mock answers each model in its own family).
    pub fn chat_family(self, model: &str) -> ApiFamily {
        match self {
            ProviderKind::Mock => model_family(model),
            ProviderKind::Anthropic => ApiFamily::Anthropic,
            ProviderKind::Gemini => ApiFamily::Gemini,
            ProviderKind::VertexAi if model_family(model) == ApiFamily::Anthropic => ApiFamily::Anthropic,
            ProviderKind::VertexAi => ApiFamily::Gemini,
            ProviderKind::Bedrock => ApiFamily::Bedrock,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => ApiFamily::OpenAi,
        }
    }
}

impl Provider {
    /// Whether a request of `api` needs [`Provider::adjust_body`].
    pub fn adjusts_body(&self, api: ApiKind) -> bool {
        self.kind == ProviderKind::VertexAi && api == ApiKind::AnthropicMessages
    }

    /// The provider's own changes to a request body: Anthropic on Vertex AI
    /// takes the model in the path, not the body, and an
    /// `anthropic_version` of its own.
    pub fn adjust_body(&self, api: ApiKind, body: &mut serde_json::Value) {
        if !self.adjusts_body(api) {
            return;
        }
        if let Some(obj) = body.as_object_mut() {
            obj.remove("model");
            obj.entry("anthropic_version").or_insert_with(|| serde_json::Value::from(VERTEX_ANTHROPIC_VERSION));
        }
    }
}

/// The `anthropic_version` Anthropic's models on Vertex AI take.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Percent-encode everything but RFC 3986's unreserved characters (as AWS
/// SDKs do for a model id in a path: `arn:aws:bedrock:…/x` → `arn%3Aaws…%2Fx`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name put in a request path: only the characters model, project and
/// region names use (nothing that could end the segment or start a query).
pub(super) fn path_segment(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')).collect()
}

/// Azure OpenAI's default `api-version`.
pub const AZURE_API_VERSION: &str = "2024-10-21";

impl Provider {
    /// The request path (before the base URL's own prefix) for a request of
    /// API `api` for `model`: the API's own path, for Azure OpenAI the
    /// deployment's path with `api-version`, for Gemini the model's
    /// `generateContent` (`streamGenerateContent?alt=sse` when `stream`).
    pub fn request_path(&self, api: ApiKind, model: &str, stream: bool) -> String {
        if self.kind == ProviderKind::Bedrock && api == ApiKind::AnthropicMessages {
            let id = percent_encode(model);
            return format!("/model/{id}/{}", if stream { "invoke-with-response-stream" } else { "invoke" });
        }
        if api == ApiKind::BedrockConverse {
            // A model id may be an ARN: every reserved character is escaped.
            let id = percent_encode(model);
            return format!("/model/{id}/{}", if stream { "converse-stream" } else { "converse" });
        }
        if self.kind == ProviderKind::VertexAi && api == ApiKind::AnthropicMessages {
            let project = path_segment(self.project.as_deref().unwrap_or_default());
            let location = path_segment(self.location.as_deref().unwrap_or_default());
            let verb = if stream { "streamRawPredict" } else { "rawPredict" };
            let model = path_segment(model);
            return format!("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:{verb}");
        }
        if let Some(verb) = api.gemini_verb(stream) {
            let model = model.strip_prefix("models/").unwrap_or(model);
            let model = path_segment(model);
            let sse = if api == ApiKind::GeminiGenerate && stream { "?alt=sse" } else { "" };
            let verb = format!("{verb}{sse}");
            if self.kind == ProviderKind::VertexAi {
                let project = path_segment(self.project.as_deref().unwrap_or_default());
                let location = path_segment(self.location.as_deref().unwrap_or_default());
                return format!("/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{verb}");
            }
            return format!("/v1beta/models/{model}:{verb}");
        }
        if self.kind != ProviderKind::AzureOpenai {
            return api.path().to_string();
        }
        let version = self.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
        let deployment = self.deployments.get(model).map_or(model, String::as_str);
        let deployment: String =
            deployment.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
        match api {
            ApiKind::OpenAiResponses => format!("/openai/responses?api-version={version}"),
            _ => {
                let suffix = api.path().trim_start_matches("/v1/");
                format!("/openai/deployments/{deployment}/{suffix}?api-version={version}")
            }
        }
    }
}

impl ModelRoute {
    /// Target indices from cheapest to dearest (per million input plus
    /// output tokens; unpriced targets last), ties in listed order.
    pub fn cost_order(&self, prices: &crate::pricing::PriceTable) -> Vec<usize> {
        let cost = |t: &Target| prices.price(&t.model).map_or(f64::INFINITY, |p| p.input + p.output);
        let mut order: Vec<usize> = (0..self.targets.len()).collect();
        order.sort_by(|&a, &b| cost(&self.targets[a]).total_cmp(&cost(&self.targets[b])));
        order
    }

    /// The order a request's attempts walk when `first` goes first: the
    /// strategy's base order with `first` moved to the front.
    pub fn attempt_order(&self, first: usize, prices: &crate::pricing::PriceTable) -> Vec<usize> {
        let base = match self.strategy {
            Strategy::Cost => self.cost_order(prices),
            Strategy::Weighted => {
                // Priority levels in order; listed order within a level.
                let mut order: Vec<usize> = (0..self.targets.len()).collect();
                order.sort_by_key(|&i| self.targets[i].priority);
                order
            }
            _ => (0..self.targets.len()).collect(),
        };
        std::iter::once(first).chain(base.into_iter().filter(|&i| i != first)).collect()
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    /// The API the provider is called with: the client's, or the other
    /// family's chat API when the request is translated.
    pub api: ApiKind,
}

impl Route<'_> {
    /// Keep the client's own API when it is of the same family as the route's.
    fn or_native(mut self, client: ApiKind) -> Self {
        if client.family() == self.api.family() {
            self.api = client;
        }
        self
    }
}

/// The family a model natively belongs to, by its name.
pub fn model_family(model: &str) -> ApiFamily {
    if model.starts_with("claude") {
        ApiFamily::Anthropic
    } else if model.starts_with("gemini") || model.starts_with("models/gemini") {
        ApiFamily::Gemini
    } else if is_bedrock_model(model) {
        ApiFamily::Bedrock
    } else {
        ApiFamily::OpenAi
    }
}

/// A Bedrock model id (`anthropic.claude-…-v1:0`, `amazon.nova-pro-v1:0`,
/// a cross-region profile `us.meta.llama…`) or ARN.
fn is_bedrock_model(model: &str) -> bool {
    const VENDORS: [&str; 10] =
        ["amazon.", "anthropic.", "meta.", "mistral.", "cohere.", "ai21.", "deepseek.", "qwen.", "openai.", "writer."];
    let model = without_region(model);
    model.starts_with("arn:aws:bedrock:") || VENDORS.iter().any(|v| model.starts_with(v))
}

/// A Bedrock model id without its cross-region profile's prefix (`us.`, ...).
fn without_region(model: &str) -> &str {
    ["us.", "eu.", "apac.", "jp.", "au.", "global.", "us-gov."]
        .iter()
        .find_map(|region| model.strip_prefix(region))
        .unwrap_or(model)
}

/// A Bedrock id of one of Anthropic's models (`anthropic.claude-…`, a
/// cross-region profile `us.anthropic.claude-…`, or an ARN naming one):
/// InvokeModel takes Anthropic's own Messages request for these.
pub fn is_bedrock_claude(model: &str) -> bool {
    let model = without_region(model);
    model.starts_with("anthropic.claude")
        || (model.starts_with("arn:aws:bedrock:") && model.rsplit('/').next().is_some_and(is_bedrock_claude))
}

/// Whether `provider` serves a request of `api` for `model` as Claude on
/// Bedrock through InvokeModel: an Anthropic Messages client, a Bedrock
/// provider, one of Anthropic's models. Nothing is lost in translation
/// (prompt caching, thinking, Anthropic's betas pass as sent).
fn invokes_claude(kind: ProviderKind, api: ApiKind, model: &str) -> bool {
    kind == ProviderKind::Bedrock && api == ApiKind::AnthropicMessages && is_bedrock_claude(model)
}

/// The chat API of a family.
fn chat_api(family: ApiFamily) -> ApiKind {
    ApiKind::chat(family)
}

impl Policy {
    /// Pick the provider, upstream model and upstream API for a request.
    ///
    /// A model alias routes to its first target the client can reach: a
    /// provider speaking the client's API, or, for chat requests, a provider
    /// of the other family through translation. Any other model goes to the
    /// first provider (by name) of the model's own family (`claude-*`:
    /// Anthropic; `gemini-*`: Gemini; anything else: OpenAI), translated if the client speaks the
    /// other family; failing that, to the first provider speaking the
    /// client's API, unchanged.
    pub fn route<'a>(&'a self, api: ApiKind, model: &'a str) -> Result<Route<'a>, Error> {
        let family = api.family();
        let translatable = matches!(api, ApiKind::OpenAiChat | ApiKind::AnthropicMessages);
        if let Some(route) = self.models.get(model) {
            return route
                .targets
                .iter()
                .find_map(|t| {
                    let api = self.reach(api, &t.provider, &t.model)?;
                    Some(Route { provider: &t.provider, model: &t.model, api })
                })
                .ok_or_else(|| Error::UnknownModel(model.to_string()));
        }
        let native = model_family(model);
        if translatable {
            // A model by its own name goes to its maker's API first (Claude
            // on Vertex AI is reached through an alias).
            let own = |p: &Provider| {
                p.kind.serves(native) && !(p.kind == ProviderKind::VertexAi && native == ApiFamily::Anthropic)
            };
            if let Some((name, p)) = self.providers.iter().find(|(_, p)| own(p)) {
                if invokes_claude(p.kind, api, model) {
                    return Ok(Route { provider: name, model, api });
                }
                return Ok(Route { provider: name, model, api: chat_api(native) }.or_native(api));
            }
        }
        self.providers
            .iter()
            .find(|(_, p)| p.kind.serves(family))
            .map(|(name, _)| Route { provider: name, model, api })
            .ok_or_else(|| Error::UnknownModel(model.to_string()))
    }

    /// The API `provider` is called with for a request of API `api` for
    /// `model`, if it can serve it at all: its own API, or another family's
    /// chat API through translation. The mock speaks every family and
    /// answers in the model's own (a Claude model over the Messages API, a
    /// Gemini model over `generateContent`, as a real provider would).
    pub fn reach(&self, api: ApiKind, provider: &str, model: &str) -> Option<ApiKind> {
        let family = api.family();
        let translatable = matches!(api, ApiKind::OpenAiChat | ApiKind::AnthropicMessages);
        let kind = self.providers.get(provider)?.kind;
        if invokes_claude(kind, api, model) {
            return Some(api);
        }
        let prefer_other = kind == ProviderKind::Mock && model_family(model) != family;
        let target = kind.chat_family(model);
        if kind.serves(family) && !(prefer_other && translatable) {
            Some(api)
        } else if translatable && crate::translate::Direction::for_pair(family, target).is_some() {
            Some(chat_api(target))
        } else {
            None
        }
    }

    /// The translation a request of the client's API needs to reach
    /// `provider` over `upstream` (what [`Policy::reach`] or
    /// [`Policy::route`] chose): none within a family; Claude on Bedrock
    /// keeps Anthropic's request in Bedrock's envelope.
    pub fn translation(&self, client: ApiKind, provider: &str, upstream: ApiKind) -> Option<Direction> {
        let kind = self.providers.get(provider).map(|p| p.kind);
        if kind == Some(ProviderKind::Bedrock) && upstream == ApiKind::AnthropicMessages {
            return Some(Direction::AnthropicOnBedrock);
        }
        Direction::for_pair(client.family(), upstream.family())
    }

    /// The alias's targets when it has several (or one with its own
    /// `attemptTimeoutMs`): Envoy tries them in order, moving on after a
    /// 429, a 5xx, a reset, a refused connection or the attempt timeout.
    pub fn fallback(&self, model: &str) -> Option<&ModelRoute> {
        // One target with its own attempt timeout takes the same route: the
        // providers' shared routes only know `timeouts.attemptMs`.
        self.models.get(model).filter(|r| r.targets.len() > 1 || r.attempt_timeout_ms.is_some())
    }

    /// The provider that receives traffic nothing else claims (non-AI paths,
    /// and everything when the sidecar is bypassed): the first by name.
    pub fn default_provider(&self) -> Option<&str> {
        self.providers.keys().next().map(String::as_str)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::policy::schema::tests::{yaml, BASE};

    #[test]
    fn routing() {
        let route = |p: &Policy, api, model| {
            let r = p.route(api, model).unwrap();
            (r.provider.to_string(), r.model.to_string(), r.api)
        };
        let p = yaml(BASE).unwrap();
        assert_eq!(
            route(&p, ApiKind::AnthropicMessages, "smart"),
            ("claude".into(), "claude-sonnet-4-5".into(), ApiKind::AnthropicMessages)
        );
        // Targets keep their order: an OpenAI chat client reaches the Claude target through translation ...
        let r = p.route(ApiKind::OpenAiChat, "smart").unwrap();
        assert_eq!((r.provider, r.api), ("claude", ApiKind::AnthropicMessages));
        assert_eq!(p.translation(ApiKind::OpenAiChat, r.provider, r.api), Some(Direction::OpenAiToAnthropic));
        // ... but an API that cannot be translated takes the first target speaking it.
        assert_eq!(
            route(&p, ApiKind::OpenAiEmbeddings, "smart"),
            ("openai".into(), "gpt-4o".into(), ApiKind::OpenAiEmbeddings)
        );
        // Models outside aliases go to a provider of their own family.
        assert_eq!(
            route(&p, ApiKind::OpenAiChat, "gpt-4o-mini"),
            ("openai".into(), "gpt-4o-mini".into(), ApiKind::OpenAiChat)
        );
        assert_eq!(
            route(&p, ApiKind::OpenAiChat, "claude-haiku-4-5"),
            ("claude".into(), "claude-haiku-4-5".into(), ApiKind::AnthropicMessages)
        );
        assert_eq!(
            route(&p, ApiKind::AnthropicMessages, "gpt-4o"),
            ("openai".into(), "gpt-4o".into(), ApiKind::OpenAiChat)
        );
        assert_eq!(
            route(&p, ApiKind::OpenAiResponses, "gpt-4o"),
            ("openai".into(), "gpt-4o".into(), ApiKind::OpenAiResponses)
        );
        let only_openai = yaml("providers:\n  o: {kind: openai, baseUrl: 'http://x'}\n").unwrap();
        assert_eq!(
            only_openai.route(ApiKind::AnthropicMessages, "claude-x"),
            Err(Error::UnknownModel("claude-x".into()))
        );
        // The mock speaks both families and serves each model in its own.
        let mock = yaml("providers:\n  m: {kind: mock, baseUrl: 'http://x'}\n").unwrap();
        assert_eq!(route(&mock, ApiKind::OpenAiChat, "claude-haiku-4-5").2, ApiKind::AnthropicMessages);
        assert_eq!(route(&mock, ApiKind::AnthropicMessages, "gpt-4o-mini").2, ApiKind::OpenAiChat);
        assert_eq!(route(&mock, ApiKind::AnthropicMessages, "claude-haiku-4-5").2, ApiKind::AnthropicMessages);
        assert_eq!(route(&mock, ApiKind::OpenAiEmbeddings, "text-embedding-3-small").2, ApiKind::OpenAiEmbeddings);
        assert_eq!(p.default_provider(), Some("claude"));
    }

    #[test]
    fn claude_on_bedrock_takes_invoke_model_for_anthropic_clients() {
        let p = yaml(
            "providers:\n  aws: {kind: bedrock, baseUrl: 'https://bedrock-runtime.us-east-1.amazonaws.com', region: us-east-1}\nmodels:\n  sonnet: {targets: [{provider: aws, model: us.anthropic.claude-sonnet-4-5-v1:0}]}\n  nova: {targets: [{provider: aws, model: amazon.nova-pro-v1:0}]}\n",
        )
        .unwrap();
        let claude = "anthropic.claude-3-5-haiku-20241022-v1:0";
        for model in [claude, "sonnet"] {
            let r = p.route(ApiKind::AnthropicMessages, model).unwrap();
            assert_eq!(r.api, ApiKind::AnthropicMessages, "{model}");
            assert_eq!(
                p.translation(ApiKind::AnthropicMessages, r.provider, r.api),
                Some(Direction::AnthropicOnBedrock)
            );
        }
        // OpenAI clients keep Converse; other models too.
        let r = p.route(ApiKind::OpenAiChat, claude).unwrap();
        assert_eq!(
            (r.api, p.translation(ApiKind::OpenAiChat, r.provider, r.api)),
            (ApiKind::BedrockConverse, Some(Direction::OpenAiToBedrock))
        );
        let r = p.route(ApiKind::AnthropicMessages, "nova").unwrap();
        assert_eq!(
            (r.api, p.translation(ApiKind::AnthropicMessages, r.provider, r.api)),
            (ApiKind::BedrockConverse, Some(Direction::AnthropicToBedrock))
        );
        assert_eq!(p.reach(ApiKind::AnthropicMessages, "aws", claude), Some(ApiKind::AnthropicMessages));
        let aws = &p.providers["aws"];
        assert_eq!(
            aws.request_path(ApiKind::AnthropicMessages, "us.anthropic.claude-sonnet-4-5-v1:0", true),
            "/model/us.anthropic.claude-sonnet-4-5-v1%3A0/invoke-with-response-stream"
        );
        assert_eq!(
            aws.request_path(ApiKind::AnthropicMessages, claude, false),
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"
        );
        for (model, yes) in [
            (claude, true),
            ("eu.anthropic.claude-sonnet-4-5-v1:0", true),
            ("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0", true),
            ("amazon.nova-pro-v1:0", false),
            ("claude-sonnet-4-5", false),
            ("arn:aws:bedrock:us-east-1:1:inference-profile/us.meta.llama3-v1:0", false),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
        ] {
            assert_eq!(is_bedrock_claude(model), yes, "{model}");
        }
        // Every cross-region profile routes to Bedrock by its own name.
        for profile in ["us.", "eu.", "apac.", "jp.", "au.", "global.", "us-gov."] {
            let model = format!("{profile}amazon.nova-lite-v1:0");
            assert_eq!(model_family(&model), ApiFamily::Bedrock, "{model}");
        }
    }

    #[test]
    fn gemini_token_counts_and_embeddings_keep_their_verbs() {
        let p = yaml(
            "providers:\n  g: {kind: gemini, baseUrl: 'https://generativelanguage.googleapis.com'}\n  v: {kind: vertex-ai, baseUrl: 'https://x', project: p1, location: us-central1, keyEnv: VTOKEN}\n  o: {kind: openai, baseUrl: 'https://api.openai.com'}\nmodels:\n  emb: {targets: [{provider: o, model: text-embedding-3-small}, {provider: v, model: gemini-embedding-001}]}\n",
        )
        .unwrap();
        let (g, v) = (&p.providers["g"], &p.providers["v"]);
        for (api, verb) in [
            (ApiKind::GeminiCountTokens, "countTokens"),
            (ApiKind::GeminiEmbed, "embedContent"),
            (ApiKind::GeminiBatchEmbed, "batchEmbedContents"),
        ] {
            assert_eq!(
                g.request_path(api, "models/gemini-embedding-001", false),
                format!("/v1beta/models/gemini-embedding-001:{verb}")
            );
            assert_eq!(
                v.request_path(api, "gemini-embedding-001", false),
                format!("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-embedding-001:{verb}")
            );
            // By name: the first Gemini provider; through an alias: the
            // first target that speaks Gemini (an OpenAI one cannot).
            let r = p.route(api, "gemini-embedding-001").unwrap();
            assert_eq!((r.provider, r.api), ("g", api));
            let r = p.route(api, "emb").unwrap();
            assert_eq!((r.provider, r.model, r.api), ("v", "gemini-embedding-001", api));
            assert_eq!(p.translation(api, r.provider, r.api), None);
        }
        assert_eq!(
            g.request_path(ApiKind::GeminiGenerate, "gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }
}
