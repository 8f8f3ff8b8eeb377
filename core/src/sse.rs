//! Incremental server-sent-events parser. (Being implemented.)

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser { max_event_bytes }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), Error> {
        let _ = (chunk, out, self.max_event_bytes);
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), Error> {
        let _ = out;
        Ok(())
    }
}
