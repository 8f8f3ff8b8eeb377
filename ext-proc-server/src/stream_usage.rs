//! Asking an OpenAI stream for its usage where no filter in front does.
//!
//! An OpenAI stream reports its usage only when the request sets
//! `stream_options.include_usage`. The filter sets it and drops the extra
//! chunk on the way back; without the filter (an ext_proc-only gateway),
//! the sidecar does the same, so budgets and spend use the provider's
//! count rather than the sidecar's tokenizer estimate.

use tollgate_core::policy::DEFAULT_MAX_SSE_EVENT_BYTES;
use tollgate_core::usage::is_usage_only_chunk;
use tollgate_core::{SseEvent, SseParser};

/// The answer's events as the client asked for them: all but the chunk
/// that only carries usage.
#[derive(Debug)]
pub struct UsageChunkDrop {
    parser: SseParser,
    events: Vec<SseEvent>,
    /// An event outgrew the parser: the rest passes as it comes.
    unreadable: bool,
}

impl Default for UsageChunkDrop {
    fn default() -> Self {
        UsageChunkDrop { parser: SseParser::new(DEFAULT_MAX_SSE_EVENT_BYTES), events: Vec::new(), unreadable: false }
    }
}

impl UsageChunkDrop {
    /// What the client gets for `chunk` (an incomplete last event waits for
    /// the next chunk).
    pub fn chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.unreadable {
            return chunk.to_vec();
        }
        self.events.clear();
        let fed = self.parser.feed(chunk, &mut self.events).and_then(|()| {
            if end_of_stream {
                self.parser.finish(&mut self.events)
            } else {
                Ok(())
            }
        });
        if let Err(err) = fed {
            tracing::warn!(error = %err, "stream no longer readable: passed on as it comes");
            self.unreadable = true;
            return chunk.to_vec();
        }
        let mut out = Vec::with_capacity(chunk.len());
        for event in self.events.iter().filter(|e| !is_usage_only_chunk(e)) {
            event.write_to(&mut out);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_the_usage_chunk_across_chunk_boundaries() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
            "data: [DONE]\n\n",
        );
        for split in [1, 17, 60, stream.len() - 3] {
            let mut drop = UsageChunkDrop::default();
            let mut out = drop.chunk(&stream.as_bytes()[..split], false);
            out.extend(drop.chunk(&stream.as_bytes()[split..], true));
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("\"usage\""), "{out}");
            assert!(out.contains("\"content\":\"Hi\"") && out.contains("finish_reason"), "{out}");
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        }
    }
}
