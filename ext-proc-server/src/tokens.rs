//! Token counts for reservations, before the provider reports real usage.
//!
//! OpenAI models are counted with their own encoding (tiktoken's o200k or
//! cl100k). Anthropic's tokenizer is not public; Claude prompts are counted
//! with cl100k, which is close, and the reservation is reconciled with the
//! provider's real usage when the answer ends.

use tiktoken_rs::CoreBPE;
use tollgate_core::LlmRequest;

/// Tokens a chat message costs beyond its text (role and separators).
const PER_MESSAGE: u64 = 4;

fn encoding(model: &str) -> &'static CoreBPE {
    let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o"];
    if o200k.iter().any(|p| model.starts_with(p)) {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

/// Load the encodings now, so the first request does not pay for it.
pub fn warm_up() {
    let _ = encoding("gpt-4o").encode_ordinary("warm up");
    let _ = encoding("gpt-4").encode_ordinary("warm up");
}

/// Tokens in one text for `model`.
pub fn count(model: &str, text: &str) -> u64 {
    encoding(model).encode_ordinary(text).len() as u64
}

/// Prompt tokens of a request: its texts plus a small overhead per part.
pub fn prompt_tokens(model: &str, request: &LlmRequest) -> u64 {
    // Saturating: the parts come from the client (bounded by the body cap,
    // but a count never wraps whatever the cap).
    let part = |text: &str| count(model, text).saturating_add(PER_MESSAGE);
    let tools = request.tools.iter().fold(0u64, |n, t| n.saturating_add(part(&t.name)));
    let texts = request.texts.iter().fold(0u64, |n, t| n.saturating_add(part(&t.text)));
    texts.saturating_add(tools).saturating_add(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_the_provider_encoding() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(count("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count("gpt-4", "hello world"), 2);
        // A longer text grows roughly with its words, not its bytes.
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let n = count("gpt-4o", &text);
        assert!((180..=220).contains(&n), "{n}");
        assert!(count("claude-sonnet-4-5", &text) > 100);
    }
}
