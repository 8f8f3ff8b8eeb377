//! Token usage from responses, JSON and streamed. (Being implemented.)

use crate::api::ApiKind;
use crate::error::Error;
use crate::sse::SseEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

pub fn usage_from_json(api: ApiKind, body: &[u8]) -> Result<Option<Usage>, Error> {
    let _ = (api, body);
    Ok(None)
}

#[derive(Debug)]
pub struct StreamUsage {
    api: ApiKind,
    usage: Option<Usage>,
}

impl StreamUsage {
    pub fn new(api: ApiKind) -> Self {
        StreamUsage { api, usage: None }
    }
    pub fn observe(&mut self, event: &SseEvent) {
        let _ = (event, self.api);
    }
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}
