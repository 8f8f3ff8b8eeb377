//! The LLM APIs Tollgate recognises, identified by request path.

use serde::{Deserialize, Serialize};

/// One LLM API surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiKind {
    /// OpenAI `POST /v1/chat/completions`.
    OpenAiChat,
    /// OpenAI legacy `POST /v1/completions`.
    OpenAiCompletions,
    /// OpenAI `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// OpenAI `POST /v1/responses`.
    OpenAiResponses,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// Gemini `POST /v1beta/models/{model}:generateContent` (or
    /// `:streamGenerateContent?alt=sse`; `/v1/models/...` too; Vertex AI's
    /// publisher model paths take the same body). The model and whether the
    /// answer streams are in the path ([`ApiKind::gemini_path`]).
    GeminiGenerate,
    /// Gemini `POST /v1beta/models/{model}:countTokens`: the prompt's token
    /// count, free of charge (`contents`, or a whole `generateContentRequest`).
    GeminiCountTokens,
    /// Gemini `POST /v1beta/models/{model}:embedContent` (`content`).
    GeminiEmbed,
    /// Gemini `POST /v1beta/models/{model}:batchEmbedContents`
    /// (`requests[].content`): what the google-genai SDK sends.
    GeminiBatchEmbed,
    /// Amazon Bedrock's Converse API, `POST /model/{modelId}/converse` (or
    /// `/converse-stream`, an AWS event stream). The model (percent-encoded)
    /// and whether the answer streams are in the path ([`ApiKind::bedrock_path`]).
    BedrockConverse,
}

/// Which provider's wire conventions (error shape, auth header) apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiFamily {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl ApiKind {
    /// The APIs clients call, for iteration in tests, docs and routes.
    pub const ALL: [ApiKind; 10] = [
        ApiKind::OpenAiChat,
        ApiKind::OpenAiCompletions,
        ApiKind::OpenAiEmbeddings,
        ApiKind::OpenAiResponses,
        ApiKind::AnthropicMessages,
        ApiKind::GeminiGenerate,
        ApiKind::BedrockConverse,
        // Last, so that fuzz inputs picking an API by index keep their meaning.
        ApiKind::GeminiCountTokens,
        ApiKind::GeminiEmbed,
        ApiKind::GeminiBatchEmbed,
    ];

    /// Recognise an API from a request path (`:path`), ignoring the query
    /// string and a trailing slash. Only the `/v1/...` paths are recognised;
    /// anything else is not AI traffic.
    ///
    /// [`ApiKind::ALL`] with [`ApiKind::path`] is the gateway's one table of
    /// API paths: the filter, the sidecar and the rendered Envoy routes all
    /// read it, and a path outside it (or outside the policy's
    /// `access.passthrough`) is refused.
    pub fn from_path(path: &str) -> Option<ApiKind> {
        if let Some((kind, _, _)) = ApiKind::gemini_call(path) {
            return Some(kind);
        }
        if ApiKind::bedrock_path(path).is_some() {
            return Some(ApiKind::BedrockConverse);
        }
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        ApiKind::ALL.into_iter().filter(|k| !k.model_in_path()).find(|k| k.path() == path)
    }

    /// Whether the API names the model in the path, not the body.
    pub fn model_in_path(self) -> bool {
        self.family() == ApiFamily::Gemini || self == ApiKind::BedrockConverse
    }

    /// Whether the answer is no text (embeddings, token counts): nothing
    /// in it to restore, guard or cache.
    pub fn answers_text(self) -> bool {
        !matches!(
            self,
            ApiKind::OpenAiEmbeddings | ApiKind::GeminiCountTokens | ApiKind::GeminiEmbed | ApiKind::GeminiBatchEmbed
        )
    }

    /// The model and streaming flag a path names, for the APIs that name
    /// them there (Gemini, Bedrock).
    pub fn path_model(path: &str) -> Option<(String, bool)> {
        if let Some((_, model, stream)) = ApiKind::gemini_call(path) {
            return Some((model.to_owned(), stream));
        }
        ApiKind::bedrock_path(path)
    }

    /// A Bedrock Converse path's model id (percent-decoded: an ARN's `:`
    /// and `/` arrive escaped) and whether it streams:
    /// `/model/{modelId}/converse` or `/model/{modelId}/converse-stream`.
    pub fn bedrock_path(path: &str) -> Option<(String, bool)> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let rest = path.strip_prefix("/model/")?;
        let (id, verb) = rest.split_once('/')?;
        let stream = match verb {
            "converse" => false,
            "converse-stream" => true,
            _ => return None,
        };
        let id = percent_decode(id)?;
        let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        id_ok.then_some((id, stream))
    }

    /// A Gemini `generateContent` path's model and whether it asks for a
    /// stream: `/v1beta/models/{model}:generateContent` (or `/v1/models/...`,
    /// or `:streamGenerateContent`), the query ignored.
    pub fn gemini_path(path: &str) -> Option<(&str, bool)> {
        ApiKind::gemini_call(path).filter(|(kind, _, _)| *kind == ApiKind::GeminiGenerate).map(|(_, m, s)| (m, s))
    }

    /// A Gemini path's API, model and whether it asks for a stream:
    /// `/v1beta/models/{model}:{verb}` (or `/v1/models/...`), the verb one
    /// of [`ApiKind::gemini_verb`]'s, the query ignored. The model is a name
    /// of letters, digits, `-`, `_`, `.` and `@`.
    pub fn gemini_call(path: &str) -> Option<(ApiKind, &str, bool)> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let rest = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/"))?;
        let (model, verb) = rest.rsplit_once(':')?;
        let (kind, stream) = match verb {
            "generateContent" => (ApiKind::GeminiGenerate, false),
            "streamGenerateContent" => (ApiKind::GeminiGenerate, true),
            "countTokens" => (ApiKind::GeminiCountTokens, false),
            "embedContent" => (ApiKind::GeminiEmbed, false),
            "batchEmbedContents" => (ApiKind::GeminiBatchEmbed, false),
            _ => return None,
        };
        let name_ok = !model.is_empty()
            && model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        name_ok.then_some((kind, model, stream))
    }

    /// The verb a Gemini API's path ends with (`None` outside Gemini).
    pub fn gemini_verb(self, stream: bool) -> Option<&'static str> {
        Some(match self {
            ApiKind::GeminiGenerate if stream => "streamGenerateContent",
            ApiKind::GeminiGenerate => "generateContent",
            ApiKind::GeminiCountTokens => "countTokens",
            ApiKind::GeminiEmbed => "embedContent",
            ApiKind::GeminiBatchEmbed => "batchEmbedContents",
            _ => return None,
        })
    }

    /// An RE2 pattern (Envoy's `safe_regex`, matched against the path
    /// without its query) for this API's path, as [`ApiKind::from_path`]
    /// accepts it.
    pub fn path_regex(self) -> String {
        if self == ApiKind::GeminiGenerate {
            return "^/v1(beta)?/models/[-_.@a-zA-Z0-9]+:(generateContent|streamGenerateContent)$".to_string();
        }
        if let Some(verb) = self.gemini_verb(false) {
            return format!("^/v1(beta)?/models/[-_.@a-zA-Z0-9]+:{verb}$");
        }
        if self == ApiKind::BedrockConverse {
            return "^/model/[^/]+/(converse|converse-stream)$".to_string();
        }
        format!("^{}/?$", self.path().replace('.', "\\."))
    }

    /// Stable name used in metadata, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::OpenAiChat => "openai-chat",
            ApiKind::OpenAiCompletions => "openai-completions",
            ApiKind::OpenAiEmbeddings => "openai-embeddings",
            ApiKind::OpenAiResponses => "openai-responses",
            ApiKind::AnthropicMessages => "anthropic-messages",
            ApiKind::GeminiGenerate => "gemini-generate-content",
            ApiKind::GeminiCountTokens => "gemini-count-tokens",
            ApiKind::GeminiEmbed => "gemini-embed-content",
            ApiKind::GeminiBatchEmbed => "gemini-batch-embed-contents",
            ApiKind::BedrockConverse => "bedrock-converse",
        }
    }

    /// Parse the name produced by [`ApiKind::as_str`].
    pub fn from_name(name: &str) -> Option<ApiKind> {
        ApiKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn family(self) -> ApiFamily {
        match self {
            ApiKind::AnthropicMessages => ApiFamily::Anthropic,
            ApiKind::GeminiGenerate | ApiKind::GeminiCountTokens | ApiKind::GeminiEmbed | ApiKind::GeminiBatchEmbed => {
                ApiFamily::Gemini
            }
            ApiKind::BedrockConverse => ApiFamily::Bedrock,
            _ => ApiFamily::OpenAi,
        }
    }

    /// The chat API of a family: what a translated request is sent as.
    pub fn chat(family: ApiFamily) -> ApiKind {
        match family {
            ApiFamily::OpenAi => ApiKind::OpenAiChat,
            ApiFamily::Anthropic => ApiKind::AnthropicMessages,
            ApiFamily::Gemini => ApiKind::GeminiGenerate,
            ApiFamily::Bedrock => ApiKind::BedrockConverse,
        }
    }

    /// The canonical request path of this API (for Gemini, whose path names
    /// the model, the path's form: `Provider::request_path` makes the real one).
    pub fn path(self) -> &'static str {
        match self {
            ApiKind::OpenAiChat => "/v1/chat/completions",
            ApiKind::OpenAiCompletions => "/v1/completions",
            ApiKind::OpenAiEmbeddings => "/v1/embeddings",
            ApiKind::OpenAiResponses => "/v1/responses",
            ApiKind::AnthropicMessages => "/v1/messages",
            ApiKind::GeminiGenerate => "/v1beta/models/gemini:generateContent",
            ApiKind::GeminiCountTokens => "/v1beta/models/gemini:countTokens",
            ApiKind::GeminiEmbed => "/v1beta/models/gemini:embedContent",
            ApiKind::GeminiBatchEmbed => "/v1beta/models/gemini:batchEmbedContents",
            ApiKind::BedrockConverse => "/model/bedrock/converse",
        }
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_paths_and_round_trips_names() {
        for kind in ApiKind::ALL {
            assert_eq!(ApiKind::from_path(kind.path()), Some(kind));
            assert_eq!(ApiKind::from_path(&format!("{}?x=1", kind.path())), Some(kind));
            if !kind.model_in_path() {
                assert_eq!(ApiKind::from_path(&format!("{}/", kind.path())), Some(kind));
            }
            assert_eq!(ApiKind::from_name(kind.as_str()), Some(kind));
        }
        let gemini = ApiKind::gemini_path;
        assert_eq!(gemini("/v1beta/models/gemini-2.5-flash:generateContent"), Some(("gemini-2.5-flash", false)));
        assert_eq!(gemini("/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse"), Some(("gemini-2.5-pro", true)));
        assert_eq!(gemini("/v1beta/models/gemini-2.5-flash:countTokens"), None);
        assert_eq!(
            ApiKind::gemini_call("/v1beta/models/gemini-2.5-flash:countTokens"),
            Some((ApiKind::GeminiCountTokens, "gemini-2.5-flash", false))
        );
        assert_eq!(
            ApiKind::from_path("/v1beta/models/text-embedding-004:batchEmbedContents"),
            Some(ApiKind::GeminiBatchEmbed)
        );
        assert_eq!(ApiKind::from_path("/v1/models/gemini-embedding-001:embedContent"), Some(ApiKind::GeminiEmbed));
        assert_eq!(ApiKind::from_path("/v1beta/models/gemini-2.5-flash:computeTokens"), None);
        assert!(!ApiKind::GeminiBatchEmbed.answers_text() && ApiKind::GeminiGenerate.answers_text());
        assert_eq!(gemini("/v1beta/models/a/b:generateContent"), None);
        assert_eq!(gemini("/v1beta/models/:generateContent"), None);
        assert_eq!(gemini("/v1beta/tunedModels/x:generateContent"), None);
        let bedrock = ApiKind::bedrock_path;
        assert_eq!(bedrock("/model/amazon.nova-pro-v1:0/converse"), Some(("amazon.nova-pro-v1:0".into(), false)));
        assert_eq!(
            bedrock("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0/converse-stream"),
            Some(("arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0".into(), true))
        );
        assert_eq!(bedrock("/model/x/invoke"), None);
        assert_eq!(bedrock("/model/%zz/converse"), None);
        assert_eq!(bedrock("/model//converse"), None);
        assert_eq!(ApiKind::from_path("/model/a/converse"), Some(ApiKind::BedrockConverse));
        assert_eq!(ApiKind::from_path("/v1/models"), None);
        assert_eq!(ApiKind::from_path("/healthz"), None);
        assert_eq!(ApiKind::from_path("/v1/chat/completions/x"), None);
        assert_eq!(ApiKind::AnthropicMessages.family(), ApiFamily::Anthropic);
        assert_eq!(ApiKind::OpenAiEmbeddings.family(), ApiFamily::OpenAi);
    }
}
