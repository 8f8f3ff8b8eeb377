//! A provider that misbehaves on purpose, for the fault tests: a raw
//! HTTP/1.1 server that reads one request per connection and answers it by
//! the script its `x-fault` header names (reset mid-stream, stall before or
//! after the headers, invalid JSON, truncated SSE, wrong content type, ...),
//! recording what it received and whether the gateway went away first.
//!
//! Answers speak OpenAI's chat API, or Anthropic's Messages API for
//! `/v1/messages`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One request as the faulty provider saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// The `x-fault` script it was answered with.
    pub fault: String,
    pub body: String,
    /// Stream events written before the script ended or the gateway left.
    pub events_sent: usize,
    /// The gateway closed the connection before the script's answer was
    /// complete (the client's request was cancelled upstream).
    pub cancelled: bool,
    /// When the request arrived and when its connection ended.
    pub arrived: Instant,
    pub ended: Option<Instant>,
}

/// A running faulty provider; stops when dropped.
pub struct FaultyProvider {
    pub addr: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Words of every answer, one per stream event.
pub const WORDS: [&str; 8] = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "dog."];

impl FaultyProvider {
    pub async fn start() -> anyhow::Result<FaultyProvider> {
        let port = crate::test_port()?;
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, log).await;
                });
            }
        });
        Ok(FaultyProvider { addr: format!("127.0.0.1:{port}"), received, task })
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Wait until the request answered with `fault` has ended (its script
    /// done or the gateway gone), up to `within`.
    pub async fn ended(&self, fault: &str, within: Duration) -> Option<Received> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(r) = self.received().into_iter().find(|r| r.fault == fault && r.ended.is_some()) {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

struct Request {
    path: String,
    fault: String,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> anyhow::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_string();
    let mut fault = String::new();
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "x-fault" => fault = value.trim().to_string(),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request { path, fault, body }))
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<Received>>>) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let Some(req) = read_request(&mut stream).await? else { return Ok(()) };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Received {
            path: req.path.clone(),
            fault: req.fault.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            events_sent: 0,
            cancelled: false,
            arrived: Instant::now(),
            ended: None,
        });
        log.len() - 1
    };
    let anthropic = req.path.starts_with("/v1/messages");
    let mut script = Script { stream: &mut stream, anthropic, events: 0 };
    let result = script.run(&req.fault).await;
    let events = script.events;
    let cancelled = match result {
        Ok(()) => false,
        Err(_) => true,
    };
    let mut log = log.lock().unwrap();
    log[index].events_sent = events;
    log[index].cancelled = cancelled;
    log[index].ended = Some(Instant::now());
    Ok(())
}

struct Script<'a> {
    stream: &'a mut TcpStream,
    anthropic: bool,
    events: usize,
}

const LONG: Duration = Duration::from_secs(60);

impl Script<'_> {
    /// Runs the fault; `Err` when the gateway closed the connection first.
    async fn run(&mut self, fault: &str) -> std::io::Result<()> {
        match fault {
            "stall-before-headers" => self.stall(LONG).await,
            // A clean close, no answer.
            "close-before-headers" => Ok(()),
            "stall-after-headers" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(2).await?;
                self.stall(LONG).await
            }
            "reset-mid-stream" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(3).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                // SO_LINGER 0: closing sends a RST, not a FIN.
                self.stream.set_zero_linger()?;
                Ok(())
            }
            "truncated-sse" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(3).await?;
                // Half an event, then a clean end of the body.
                self.chunk(b"data: {\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"jum").await?;
                self.stream.write_all(b"0\r\n\r\n").await
            }
            // Whole events, then the end of the body without the end marker.
            "cut-at-event" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(3).await?;
                self.stream.write_all(b"0\r\n\r\n").await
            }
            "invalid-json-event" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(2).await?;
                self.chunk(b"data: {\"choices\": [{\"delta\": {\"content\": \"leak\"\n\n").await?;
                self.rest_of_stream(2).await
            }
            "provider-error-event" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(2).await?;
                let error = if self.anthropic {
                    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
                } else {
                    "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n"
                };
                self.chunk(error.as_bytes()).await?;
                self.stream.write_all(b"0\r\n\r\n").await
            }
            "fail-500" => {
                let body = b"{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}";
                let head = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                self.stream.write_all(head.as_bytes()).await?;
                self.stream.write_all(body).await
            }
            "leak-json" | "leak-as-html" => {
                let body = answer_with(self.anthropic, LEAK);
                let ct = if fault == "leak-json" { "application/json" } else { "text/html" };
                self.whole(ct, body.as_bytes()).await
            }
            "leak-stream-as-text" => {
                self.stream_head("text/plain").await?;
                self.start_events(2).await?;
                self.text(LEAK).await?;
                self.rest_of_stream(2).await
            }
            "invalid-json" => {
                let body = b"{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"The quick";
                self.whole("application/json", body).await
            }
            "wrong-content-type" => {
                let body = answer_json(self.anthropic);
                self.whole("text/html; charset=utf-8", body.as_bytes()).await
            }
            "stream-as-text" => {
                self.stream_head("text/plain").await?;
                self.start_events(WORDS.len()).await?;
                self.end_of_stream().await
            }
            "long-stream" => {
                self.stream_head("text/event-stream").await?;
                self.start_events(0).await?;
                for _ in 0..300 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.word(self.events % WORDS.len()).await?;
                }
                self.end_of_stream().await
            }
            // A well-behaved answer.
            _ => {
                self.stream_head("text/event-stream").await?;
                self.start_events(WORDS.len()).await?;
                self.end_of_stream().await
            }
        }
    }

    /// Hold the connection open, watching for the gateway to close it.
    async fn stall(&mut self, how_long: Duration) -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(how_long, self.stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(std::io::ErrorKind::ConnectionAborted.into()),
            _ => Ok(()),
        }
    }

    async fn whole(&mut self, content_type: &str, body: &[u8]) -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await
    }

    async fn stream_head(&mut self, content_type: &str) -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        self.stream.write_all(head.as_bytes()).await
    }

    async fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(format!("{:x}\r\n", data.len()).as_bytes()).await?;
        self.stream.write_all(data).await?;
        self.stream.write_all(b"\r\n").await?;
        self.stream.flush().await
    }

    /// The stream's opening event (Anthropic) and `words` words.
    async fn start_events(&mut self, words: usize) -> std::io::Result<()> {
        if self.anthropic {
            let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_f\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
            self.chunk(start.as_bytes()).await?;
        }
        for i in 0..words {
            self.word(i).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn word(&mut self, i: usize) -> std::io::Result<()> {
        self.text(WORDS[i % WORDS.len()]).await
    }

    /// One text event with `text` (no escaping needed).
    async fn text(&mut self, text: &str) -> std::io::Result<()> {
        let event = if self.anthropic {
            format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n")
        } else {
            format!("data: {{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n")
        };
        self.chunk(event.as_bytes()).await?;
        self.events += 1;
        Ok(())
    }

    async fn rest_of_stream(&mut self, from: usize) -> std::io::Result<()> {
        for i in from..WORDS.len() {
            self.word(i).await?;
        }
        self.end_of_stream().await
    }

    async fn end_of_stream(&mut self) -> std::io::Result<()> {
        let end = if self.anthropic {
            format!("event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n", self.events)
        } else {
            format!("data: {{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", self.events, self.events + 12)
        };
        self.chunk(end.as_bytes()).await?;
        self.stream.write_all(b"0\r\n\r\n").await
    }
}

/// A secret the output guard blocks (shaped like an OpenAI project key).
pub const LEAK: &str = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678";

/// A complete, valid non-streamed answer.
fn answer_json(anthropic: bool) -> String {
    answer_with(anthropic, &WORDS.concat())
}

/// A complete non-streamed answer with `text` (no escaping needed).
fn answer_with(anthropic: bool, text: &str) -> String {
    if anthropic {
        format!("{{\"id\":\"msg_f\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"stop_reason\":\"end_turn\",\"usage\":{{\"input_tokens\":12,\"output_tokens\":8}}}}")
    } else {
        format!("{{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{text}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20}}}}")
    }
}
