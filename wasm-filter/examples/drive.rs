//! Drives the filter natively through whole exchanges, the way Envoy calls it,
//! to profile where its per-request work goes (e.g. under callgrind):
//!
//!   cargo build --release -p tollgate-filter --example drive
//!   valgrind --tool=callgrind target/release/examples/drive CONFIG.json REQUEST.json RESPONSE N
//!
//! CONFIG.json is the plugin configuration (`tollgate render filter-config`),
//! REQUEST.json a request body, RESPONSE a recorded answer (JSON, or SSE when
//! it starts with `data:`/`event:`; fed one event per chunk, as a provider
//! flushes them). Prints the time per exchange and per phase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::filter_config::FilterConfig;
use tollgate_filter::filter::{Filter, Inspector};
use tollgate_filter::host::{Host, Metric, TaggedMetric};

#[derive(Default)]
struct Driver {
    request_body: Vec<u8>,
    response_body: Vec<u8>,
    sse: bool,
}

impl Host for Driver {
    fn request_header(&self, name: &str) -> Option<String> {
        match name {
            ":method" => Some("POST".into()),
            ":path" => Some("/v1/chat/completions".into()),
            "content-type" => Some("application/json".into()),
            _ => None,
        }
    }
    fn set_request_header(&mut self, _: &str, _: Option<&str>) {}
    fn set_response_header(&mut self, _: &str, _: &str) {}
    fn response_header(&self, name: &str) -> Option<String> {
        (name == "content-type").then(|| if self.sse { "text/event-stream" } else { "application/json" }.into())
    }
    fn remove_response_header(&mut self, _: &str) {}
    fn set_request_body(&mut self, body: &[u8]) {
        self.request_body = body.to_vec();
    }
    fn set_response_body(&mut self, body: &[u8]) {
        self.response_body = body.to_vec();
    }
    fn request_body(&self, len: usize) -> Option<Vec<u8>> {
        Some(self.request_body[..len.min(self.request_body.len())].to_vec())
    }
    fn response_body(&self, len: usize) -> Option<Vec<u8>> {
        Some(self.response_body[..len.min(self.response_body.len())].to_vec())
    }
    fn send_response(&mut self, status: u16, _: &[(&str, &str)], body: &[u8]) {
        panic!("the filter answered {status}: {}", String::from_utf8_lossy(body));
    }
    fn reset_stream(&mut self) {
        panic!("the filter reset the stream");
    }
    fn set_property(&mut self, _: &str, _: &[u8]) {}
    fn increment(&mut self, _: Metric, _: u64) {}
    fn increment_tagged(&mut self, _: TaggedMetric, _: &str, _: u64) {}
    fn new_request_id(&mut self) -> String {
        "drive".into()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, request, response, n] = &args[..] else {
        eprintln!("usage: drive CONFIG.json REQUEST.json RESPONSE N");
        std::process::exit(2);
    };
    let config = FilterConfig::from_json(&std::fs::read(config).unwrap()).unwrap();
    let inspector = Arc::new(Inspector::new(config).unwrap());
    let request = std::fs::read(request).unwrap();
    let response = std::fs::read(response).unwrap();
    let sse = response.starts_with(b"data:") || response.starts_with(b"event:");
    let chunks: Vec<&[u8]> = if sse {
        let mut out = Vec::new();
        let mut rest = &response[..];
        while let Some(at) = rest.windows(2).position(|w| w == b"\n\n") {
            out.push(&rest[..at + 2]);
            rest = &rest[at + 2..];
        }
        if !rest.is_empty() {
            out.push(rest);
        }
        out
    } else {
        vec![&response[..]]
    };
    let n: u32 = n.parse().unwrap();
    let (mut t_req, mut t_resp) = (Duration::ZERO, Duration::ZERO);
    let mut host = Driver { sse, ..Driver::default() };
    for _ in 0..n {
        let start = Instant::now();
        let mut filter = Filter::new(Arc::clone(&inspector));
        host.request_body = request.clone();
        filter.on_request_headers(&mut host, false);
        filter.on_request_body(&mut host, request.len(), true);
        let mid = Instant::now();
        filter.on_response_headers(&mut host, false);
        for (i, chunk) in chunks.iter().enumerate() {
            host.response_body = chunk.to_vec();
            filter.on_response_body(&mut host, chunk.len(), i + 1 == chunks.len());
        }
        let end = Instant::now();
        t_req += mid - start;
        t_resp += end - mid;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "{n} exchanges ({} chunks each): request {:.1} µs, response {:.1} µs, total {:.1} µs per exchange",
        chunks.len(),
        per(t_req),
        per(t_resp),
        per(t_req + t_resp)
    );
}
