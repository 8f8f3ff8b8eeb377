//! Request parsing: OpenAI and Anthropic bodies into one normalized view.
//! (Being implemented; see the module's tests.)

use crate::api::ApiKind;
use crate::error::Error;

/// One piece of text a request carries (message content, system prompt,
/// tool-call arguments, tool results, prompt or embedding input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPart {
    /// `system`, `user`, `assistant`, `tool`, `developer`, `input` ...
    pub role: String,
    pub text: String,
}

/// A tool the request offers the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDef {
    pub name: String,
}

/// The normalized view of an LLM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub api: ApiKind,
    pub model: String,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    pub max_tokens: Option<u64>,
    pub texts: Vec<TextPart>,
    pub tools: Vec<ToolDef>,
}

/// Parse a request body of API `api`.
pub fn parse_request(api: ApiKind, body: &[u8]) -> Result<LlmRequest, Error> {
    let _ = (api, body);
    Err(Error::InvalidRequest("not implemented".into()))
}
