//! The gRPC ExternalProcessor service, the health/admin HTTP endpoint, and
//! graceful shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::config::LiveShared;
use crate::processor::{finish, handle, StreamState};

/// The tonic service: one task per HTTP stream, state kept in the task.
/// Each stream keeps the configuration it started with, so a policy reload
/// never changes a request half way.
#[derive(Clone)]
pub struct Service {
    live: LiveShared,
}

impl Service {
    pub fn new(live: LiveShared) -> Service {
        Service { live }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Service {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        // Upstream ext_proc streams (one per attempt at an alias target) name their target.
        let target = request
            .metadata()
            .get(crate::upstream::TARGET_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::upstream::parse_variant);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let shared = self.live.current();
        if let Some(target) = target {
            tokio::spawn(async move {
                let mut state = crate::upstream::AttemptState::default();
                while let Some(Ok(req)) = inbound.next().await {
                    let out = crate::upstream::handle(&shared, &target, &mut state, req);
                    if tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                }
                crate::upstream::finish(&shared, &target, &state);
            });
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        tokio::spawn(async move {
            let mut state = StreamState::default();
            while let Some(message) = inbound.next().await {
                let out = match message {
                    Ok(req) => Ok(handle(&shared, &mut state, req).await),
                    Err(status) => {
                        tracing::debug!(%status, "ext_proc stream ended by Envoy");
                        break;
                    }
                };
                if tx.send(out).await.is_err() {
                    break;
                }
            }
            finish(&shared, &mut state).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// HTTP/2 flow-control windows of ext_proc streams and connections.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// Run the gRPC server and the admin HTTP server until `shutdown` resolves,
/// then drain in-flight streams. With `tls`, ext_proc is served only to
/// clients holding a certificate of the gateway's authority (Envoy).
pub async fn run(
    live: LiveShared,
    grpc: TcpListener,
    admin: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ExternalProcessorServer<Service>>().await;

    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let mut grpc_stop = stop_rx.clone();
    let token = std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let access = AdminAccess { exposed: !admin_addr.ip().is_loopback(), token: token.map(Arc::from) };
    if access.exposed && access.token.is_none() {
        tracing::warn!(%admin_addr, "admin endpoints exposed without {ADMIN_TOKEN_ENV}: only /healthz and /readyz answer");
    }
    let mcp_gateway = crate::mcp::Gateway::new(live.clone())?;
    let admin_routes = admin_router(live.clone(), access, crate::mcp::admin::router(mcp_gateway.clone()));
    let telemetry = live.current().telemetry;
    // HTTP/2's default 64 KiB windows make Envoy and the sidecar trade a
    // WINDOW_UPDATE every few request bodies (more with large prompts);
    // larger ones cut Envoy's CPU per 32 KB request by ~10% (docs/benchmarks.md).
    // Envoy sends no more than a request's body per message either way.
    let secured = tls.is_some();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| anyhow::anyhow!("sidecar TLS: {e}"))?;
    }
    // One port, one authenticated channel: ext_proc (gRPC) and the MCP
    // gateway (`/mcp/<virtualServer>`, which Envoy routes here as an upstream).
    let mcp = crate::mcp::router(mcp_gateway);
    let routes = tonic::service::Routes::from(mcp)
        .add_service(health_service)
        .add_service(ExternalProcessorServer::new(Service::new(live)));
    let grpc_server = builder
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc).map(no_delay), async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        });

    let mut admin_stop = stop_rx.clone();
    let admin_server = axum::serve(admin, admin_routes).with_graceful_shutdown(async move {
        let _ = admin_stop.wait_for(|stop| *stop).await;
    });

    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let channel = if secured { "mutual TLS" } else { "plaintext, mesh-authenticated" };
    tracing::info!(%grpc_addr, %admin_addr, workers, channel, "tollgate sidecar serving");
    println!(
        "tollgate sidecar: ext_proc on {grpc_addr} ({channel}, {workers} workers), health on http://{admin_addr}/healthz"
    );
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight streams");
        let _ = stop_tx.send(true);
    });
    let (g, a) = tokio::join!(grpc_server, admin_server);
    if let Some(t) = telemetry {
        // The spans of the drained streams leave before the process does.
        t.shutdown().await;
    }
    g?;
    a?;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
struct UsageQuery {
    /// First day (`YYYY-MM-DD`); default: the first of this month.
    since: Option<String>,
    team: Option<String>,
}

/// One counter in OpenMetrics text (the family is named without `_total`).
fn counter_text(sample: &str, help: &str, value: u64) -> String {
    let family = sample.strip_suffix("_total").unwrap_or(sample);
    format!("# HELP {family} {help}\n# TYPE {family} counter\n{sample} {value}\n")
}

/// The environment variable holding the token the admin endpoints require
/// when they listen on an address other than loopback.
pub const ADMIN_TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";

/// Who may read the admin endpoints (spend, metrics, recent refusals, the
/// page): anyone who can reach a loopback listener, as for Envoy's own
/// admin; on any other address only a request with `Authorization: Bearer
/// <token>`, and nobody when no token is set. Health stays open for probes.
#[derive(Clone)]
struct AdminAccess {
    exposed: bool,
    token: Option<Arc<str>>,
}

impl AdminAccess {
    fn allows(&self, headers: &axum::http::HeaderMap) -> bool {
        if !self.exposed {
            return true;
        }
        let Some(token) = &self.token else { return false };
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        use subtle::ConstantTimeEq as _;
        bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// The admin HTTP endpoints: health, spend report, metrics.
fn admin_router(live: LiveShared, access: AdminAccess, mcp: axum::Router) -> axum::Router {
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    async fn usage(State(live): State<LiveShared>, Query(q): Query<UsageQuery>) -> axum::response::Response {
        let shared = live.current();
        let Some(budget) = &shared.budget else {
            return (StatusCode::NOT_FOUND, "no limiter configured\n").into_response();
        };
        let since = q.since.unwrap_or_else(|| {
            let today = crate::limits::utc_day(std::time::SystemTime::now());
            format!("{}-01", &today[..7])
        });
        match budget.store.usage_report(&since, q.team.as_deref()).await {
            Ok(rows) => axum::Json(rows).into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        }
    }

    async fn metrics(State(live): State<LiveShared>) -> impl IntoResponse {
        let shared = live.current();
        use std::sync::atomic::Ordering::Relaxed;
        // Daily budget left per team with a daily budget.
        if let Some(b) = &shared.budget {
            let now = std::time::SystemTime::now();
            for (team, t) in &shared.policy.teams {
                if let Some(limit) = t.limits.cost_per_day {
                    let key = b.store.key_at(&format!("team:{team}:cost"), crate::limits::Window::Day, now);
                    if let Ok(used) = b.store.get(&key).await {
                        let left = (limit - tollgate_core::pricing::usd(used)).max(0.0);
                        shared
                            .metrics
                            .budget_remaining
                            .get_or_create(&crate::metrics::TeamLabels { team: team.clone() })
                            .set(left);
                    }
                }
            }
        }
        let mut out = String::new();
        if let Some(a) = &shared.audit {
            let name = "tollgate_audit_errors_total";
            let v = a.errors.load(Relaxed);
            out.push_str(&format!(
                "# HELP {name} Audit records that could not be written.\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        if let Some(t) = &shared.telemetry {
            let s = t.stats();
            for (name, help, v) in [
                ("tollgate_otlp_spans_recorded_total", "Spans queued for OTLP export.", s.recorded.load(Relaxed)),
                ("tollgate_otlp_spans_exported_total", "Spans the collector accepted.", s.exported.load(Relaxed)),
                (
                    "tollgate_otlp_spans_failed_total",
                    "Spans in batches that could not be exported.",
                    s.failed.load(Relaxed),
                ),
            ] {
                out.push_str(&counter_text(name, help, v));
            }
        }
        if let Some(b) = &shared.budget {
            let s = &b.stats;
            for (name, help, v) in [
                (
                    "tollgate_limiter_fail_open_total",
                    "Requests let through unlimited because the limit store was unreachable.",
                    s.fail_open.load(Relaxed),
                ),
                (
                    "tollgate_limiter_fail_closed_total",
                    "Requests refused because the limit store was unreachable.",
                    s.fail_closed.load(Relaxed),
                ),
                ("tollgate_limited_total", "Requests refused by a rate limit or budget.", s.limited.load(Relaxed)),
                (
                    "tollgate_streams_cut_total",
                    "Streams ended because they crossed a limit.",
                    s.streams_cut.load(Relaxed),
                ),
                (
                    "tollgate_limiter_store_errors_total",
                    "Limit store errors while reconciling or recording usage.",
                    s.store_errors.load(Relaxed),
                ),
            ] {
                out.push_str(&counter_text(name, help, v));
            }
        }
        (
            [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            shared.metrics.encode(&out),
        )
    }

    /// Whether the admin page lists a record: a refusal (MCP tool calls
    /// included), a cut stream, a tool result blocked, a tool definition withheld.
    fn notable(r: &crate::audit::AuditRecord) -> bool {
        let d = &r.decisions;
        d.get("refused").is_some()
            || d.get("stream_cut").is_some()
            || d.pointer("/mcp/result").and_then(serde_json::Value::as_str) == Some("blocked")
            || d.pointer("/mcp/withheld").is_some()
    }

    /// Recent refusals, cut streams and withheld tools from the audit log,
    /// newest first, without text (nor tool arguments and definitions).
    async fn recent(State(live): State<LiveShared>) -> axum::response::Response {
        let shared = live.current();
        let Some(audit) = &shared.audit else { return axum::Json(Vec::<()>::new()).into_response() };
        let dir = audit.writer.dir().to_path_buf();
        let found = tokio::task::spawn_blocking(move || crate::audit::tail(&dir, 500)).await;
        match found {
            Ok(Ok(records)) => {
                let mut picked: Vec<_> = records
                    .into_iter()
                    .filter(notable)
                    .map(|mut r| {
                        r.prompt = None;
                        r.response = None;
                        if let Some(m) = r.decisions.get_mut("mcp").and_then(serde_json::Value::as_object_mut) {
                            m.remove("arguments");
                            m.remove("definition");
                        }
                        r
                    })
                    .collect();
                picked.reverse();
                picked.truncate(50);
                axum::Json(picked).into_response()
            }
            Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        }
    }

    async fn guard(
        axum::extract::State(access): axum::extract::State<AdminAccess>,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        if access.allows(req.headers()) {
            return next.run(req).await;
        }
        let message = if access.token.is_some() {
            format!("send `Authorization: Bearer <{ADMIN_TOKEN_ENV}>`\n")
        } else {
            format!("the admin endpoints listen beyond loopback: set {ADMIN_TOKEN_ENV} to read them\n")
        };
        (StatusCode::UNAUTHORIZED, [(axum::http::header::WWW_AUTHENTICATE, "Bearer")], message).into_response()
    }

    let health = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ok\n" }));
    axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async {
                ([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("dashboard.html"))
            }),
        )
        .route("/api/recent", axum::routing::get(recent))
        .route("/usage", axum::routing::get(usage))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(live)
        .merge(mcp)
        .layer(axum::middleware::from_fn_with_state(access, guard))
        .merge(health)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives in
/// between is not lost (nor does it kill the process).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Envoy's messages to the sidecar are small and each waits for an answer:
/// with Nagle's algorithm on, a reply can sit behind the peer's delayed ACK
/// (40 ms on Linux) on every phase of every request.
fn no_delay(conn: std::io::Result<tokio::net::TcpStream>) -> std::io::Result<tokio::net::TcpStream> {
    let conn = conn?;
    if let Err(err) = conn.set_nodelay(true) {
        tracing::warn!(error = %err, "cannot set TCP_NODELAY on an ext_proc connection");
    }
    Ok(conn)
}

/// Bind a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_admin_needs_the_token_and_without_one_answers_nobody() {
        let mut bearer = axum::http::HeaderMap::new();
        bearer.insert(axum::http::header::AUTHORIZATION, axum::http::HeaderValue::from_static("Bearer s3cret"));
        let mut wrong = axum::http::HeaderMap::new();
        wrong.insert(axum::http::header::AUTHORIZATION, axum::http::HeaderValue::from_static("Bearer s3cre"));
        let none = axum::http::HeaderMap::new();
        let loopback = AdminAccess { exposed: false, token: None };
        assert!(loopback.allows(&none));
        let exposed = AdminAccess { exposed: true, token: Some(Arc::from("s3cret")) };
        assert!(exposed.allows(&bearer));
        assert!(!exposed.allows(&wrong));
        assert!(!exposed.allows(&none));
        let unset = AdminAccess { exposed: true, token: None };
        assert!(!unset.allows(&bearer) && !unset.allows(&none));
    }
}
