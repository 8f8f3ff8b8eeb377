//! proxy-wasm glue: root context (configuration, metrics) and HTTP contexts.
//! Host-call failures are logged and mapped, never unwrapped.

use std::collections::HashMap;
use std::sync::Arc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use tollgate_core::filter_config::FilterConfig;

use crate::filter::{Filter, Inspector, Verdict};
use crate::host::{Host, Metric, TaggedMetric};

thread_local! {
    /// Metric ids of the tagged counters defined so far (a wasm VM is single-threaded).
    static TAGGED: std::cell::RefCell<HashMap<String, u32>> = std::cell::RefCell::new(HashMap::new());
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    inspector: Option<Arc<Inspector>>,
    metrics: Arc<HashMap<Metric, u32>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!("cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let inspector = match FilterConfig::from_json(&raw).and_then(Inspector::new) {
            Ok(inspector) => inspector,
            Err(err) => {
                log::error!("invalid plugin configuration: {err}");
                return false;
            }
        };
        let mut metrics = HashMap::new();
        for metric in Metric::ALL {
            match hostcalls::define_metric(MetricType::Counter, metric.name()) {
                Ok(id) => {
                    metrics.insert(metric, id);
                }
                Err(status) => log::warn!("cannot define metric {}: {status:?}", metric.name()),
            }
        }
        log::info!(
            "configured (maxBodyBytes={}, failMode={:?})",
            inspector.config.inspection.max_body_bytes,
            inspector.config.fail_mode
        );
        self.metrics = Arc::new(metrics);
        self.inspector = Some(Arc::new(inspector));
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a good configuration Envoy never gets here (on_configure
        // returned false); should it all the same, the filter stays out.
        Some(Box::new(Http {
            filter: self.inspector.clone().map(Filter::new),
            host: ProxyHost { context_id, metrics: Arc::clone(&self.metrics), ids: 0 },
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    /// `None` only without a configuration: then every callback continues.
    filter: Option<Filter>,
    host: ProxyHost,
}

fn action(v: Verdict) -> Action {
    match v {
        Verdict::Continue => Action::Continue,
        Verdict::Pause => Action::Pause,
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.filter.as_mut().map_or(Action::Continue, |f| action(f.on_request_headers(&mut self.host, end_of_stream)))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.filter
            .as_mut()
            .map_or(Action::Continue, |f| action(f.on_request_body(&mut self.host, body_size, end_of_stream)))
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.filter.as_mut().map_or(Action::Continue, |f| action(f.on_response_headers(&mut self.host, end_of_stream)))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.filter
            .as_mut()
            .map_or(Action::Continue, |f| action(f.on_response_body(&mut self.host, body_size, end_of_stream)))
    }
}

struct ProxyHost {
    context_id: u32,
    metrics: Arc<HashMap<Metric, u32>>,
    ids: u32,
}

/// A header value as text. HTTP allows bytes that are not UTF-8 (obs-text);
/// they are replaced, never a reason to fail.
fn header_text(value: Vec<u8>) -> String {
    String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn logged<T>(what: &str, r: Result<T, proxy_wasm::types::Status>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(status) => {
            log::warn!("host call {what} failed: {status:?}");
            None
        }
    }
}

impl Host for ProxyHost {
    fn request_header(&self, name: &str) -> Option<String> {
        // Read as bytes, one header at a time: the SDK's string getters (and
        // its whole-map getter, for names) unwrap UTF-8 and would panic the VM.
        logged("get request header", hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name))
            .flatten()
            .map(header_text)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        logged("set request header", hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value));
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        logged("set response header", hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)));
    }

    fn response_header(&self, name: &str) -> Option<String> {
        logged("get response header", hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name))
            .flatten()
            .map(header_text)
    }

    fn remove_response_header(&mut self, name: &str) {
        logged("remove response header", hostcalls::set_map_value(MapType::HttpResponseHeaders, name, None));
    }

    fn set_request_body(&mut self, body: &[u8]) {
        logged("set request body", hostcalls::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body));
    }

    fn set_response_body(&mut self, body: &[u8]) {
        logged("set response body", hostcalls::set_buffer(BufferType::HttpResponseBody, 0, usize::MAX, body));
    }

    fn request_body(&self, len: usize) -> Option<Vec<u8>> {
        logged("get request body", hostcalls::get_buffer(BufferType::HttpRequestBody, 0, len))
            .map(Option::unwrap_or_default)
    }

    fn response_body(&self, len: usize) -> Option<Vec<u8>> {
        logged("get response body", hostcalls::get_buffer(BufferType::HttpResponseBody, 0, len))
            .map(Option::unwrap_or_default)
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        logged("send response", hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body)));
    }

    fn reset_stream(&mut self) {
        logged("reset stream", hostcalls::reset_http_response());
    }

    fn set_property(&mut self, name: &str, value: &[u8]) {
        logged("set property", hostcalls::set_property(vec![name], Some(value)));
    }

    fn increment(&mut self, metric: Metric, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.metrics.get(&metric) {
            let by = i64::try_from(by).unwrap_or(i64::MAX);
            logged("increment metric", hostcalls::increment_metric(*id, by));
        }
    }

    fn increment_tagged(&mut self, family: TaggedMetric, tag: &str, by: u64) {
        let name = family.counter(tag);
        // Defining a metric hands out a new id each time: define each name once per VM.
        let id = TAGGED.with(|ids| {
            let mut ids = ids.borrow_mut();
            if let Some(id) = ids.get(&name) {
                return Some(*id);
            }
            match hostcalls::define_metric(MetricType::Counter, &name) {
                Ok(id) => {
                    ids.insert(name.clone(), id);
                    Some(id)
                }
                Err(status) => {
                    log::warn!("cannot define metric {name}: {status:?}");
                    None
                }
            }
        });
        if let Some(id) = id {
            logged("increment metric", hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)));
        }
    }

    fn new_request_id(&mut self) -> String {
        self.ids = self.ids.wrapping_add(1);
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("tg-{nanos:x}-{:x}-{:x}-{:x}", vm_nonce(), self.context_id, self.ids)
    }
}

/// A random value drawn once per VM (WASI's `random_get`, through std's
/// hash keys) and put in every request id: Envoy runs a VM per worker, whose
/// context ids and counters start alike, and the host's clock is read per
/// event loop, so time, context and counter alone repeat across workers.
fn vm_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static NONCE: u64 = std::collections::hash_map::RandomState::new().build_hasher().finish();
    }
    NONCE.with(|n| *n)
}
