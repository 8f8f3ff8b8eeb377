//! Shared helpers: an in-process server on 127.0.0.1:0, fixture loading, an
//! SSE splitter and JSON shape comparison (key sets and wire key order).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::oneshot;
use tollgate_mock::MockConfig;

/// A mock provider served by `tollgate_mock::serve` on a loopback port.
pub struct Server {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: MockConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(tollgate_mock::serve(listener, config, async {
            let _ = rx.await;
        }));
        Self { base: format!("http://{addr}"), shutdown: Some(tx), handle: Some(handle) }
    }

    pub async fn default() -> Self {
        Self::start(MockConfig::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task did not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// The mock's token estimate, computed independently: ceil(chars / 4).
pub fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

pub fn reply(user_text: &str) -> String {
    format!("Mock reply to: {user_text}")
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// `(request body, response body)` of the first interaction of an OpenAI cassette.
pub fn openai_fixture(name: &str) -> (String, String) {
    let path = fixtures_dir().join("openai").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let interaction = &doc["interactions"][0];
    let req = interaction["request"]["body"].as_str().unwrap_or_default().to_owned();
    let resp = interaction["response"]["body"].as_str().unwrap().to_owned();
    (req, resp)
}

pub fn anthropic_fixture(name: &str) -> String {
    let path = fixtures_dir().join("anthropic").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One SSE event: its `event:` name (if any) and its joined `data:` lines.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad JSON in SSE data {:?}: {e}", self.data))
    }
}

/// Splits an SSE body into events (comments and blank blocks skipped).
pub fn parse_sse(text: &str) -> Vec<Sse> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') || line.is_empty() {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if event.is_some() || !data.is_empty() {
            out.push(Sse { event, data: data.join("\n") });
        }
    }
    out
}

/// Every key path of a JSON value (`choices[].delta.content`); arrays are
/// merged over their elements.
pub fn key_paths(value: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(value, "", &mut out);
    out
}

/// Asserts two JSON values have the same key paths.
#[track_caller]
pub fn assert_same_keys(what: &str, mock: &Value, fixture: &Value) {
    let (m, f) = (key_paths(mock), key_paths(fixture));
    assert_eq!(
        m,
        f,
        "{what}: key paths differ\n only in mock: {:?}\n only in fixture: {:?}",
        m.difference(&f).collect::<Vec<_>>(),
        f.difference(&m).collect::<Vec<_>>()
    );
}

/// JSON that remembers key order (serde_json's `Value` sorts keys here).
#[derive(Debug)]
pub enum Ordered {
    Object(Vec<(String, Ordered)>),
    Array(Vec<Ordered>),
    Leaf,
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Ordered>()? {
                    entries.push((k, v));
                }
                Ok(Ordered::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element::<Ordered>()? {
                    items.push(v);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_string<E>(self, _: String) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

/// For every object in a JSON text: its path and its keys in wire order.
pub fn key_orders(json: &str) -> BTreeMap<String, Vec<String>> {
    fn walk(v: &Ordered, prefix: &str, out: &mut BTreeMap<String, Vec<String>>) {
        match v {
            Ordered::Object(entries) => {
                out.entry(prefix.to_owned()).or_insert_with(|| entries.iter().map(|(k, _)| k.clone()).collect());
                for (k, child) in entries {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(child, &path, out);
                }
            }
            Ordered::Array(items) => {
                for item in items {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            Ordered::Leaf => {}
        }
    }
    let parsed: Ordered = serde_json::from_str(json).unwrap_or_else(|e| panic!("bad JSON {json:?}: {e}"));
    let mut out = BTreeMap::new();
    walk(&parsed, "", &mut out);
    out
}

/// Asserts two JSON texts have the same keys in the same order at every path.
#[track_caller]
pub fn assert_same_key_order(what: &str, mock: &str, fixture: &str) {
    assert_eq!(key_orders(mock), key_orders(fixture), "{what}: key order differs\nmock: {mock}\nfixture: {fixture}");
}

/// A fixture of `core/tests/fixtures/gemini/` (Google's shapes, shared with
/// the gateway's tests).
pub fn gemini_fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../core/tests/fixtures/gemini").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture of `core/tests/fixtures/bedrock-mock/` (Bedrock Runtime's shapes).
pub fn bedrock_fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../core/tests/fixtures/bedrock-mock").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
