//! The gRPC ExternalProcessor service, the health/admin HTTP endpoint, and
//! graceful shutdown.

use std::net::SocketAddr;
use std::pin::Pin;

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

use crate::processor::{handle, Shared, StreamState};

/// The tonic service: one task per HTTP stream, state kept in the task.
#[derive(Debug, Clone)]
pub struct Service {
    shared: Shared,
}

impl Service {
    pub fn new(shared: Shared) -> Service {
        Service { shared }
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
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut state = StreamState::default();
            while let Some(message) = inbound.next().await {
                let out = match message {
                    Ok(req) => Ok(handle(&shared, &mut state, req)),
                    Err(status) => {
                        tracing::debug!(%status, "ext_proc stream ended by Envoy");
                        break;
                    }
                };
                if tx.send(out).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Run the gRPC server and the admin HTTP server until `shutdown` resolves,
/// then drain in-flight streams.
pub async fn run(
    shared: Shared,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ExternalProcessorServer<Service>>().await;

    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let mut grpc_stop = stop_rx.clone();
    let grpc_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ExternalProcessorServer::new(Service::new(shared)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        });

    let mut admin_stop = stop_rx.clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ok\n" }));
    let admin_server = axum::serve(admin, app).with_graceful_shutdown(async move {
        let _ = admin_stop.wait_for(|stop| *stop).await;
    });

    tracing::info!(%grpc_addr, %admin_addr, "tollgate sidecar serving");
    println!("tollgate sidecar: ext_proc on {grpc_addr}, health on http://{admin_addr}/healthz");
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight streams");
        let _ = stop_tx.send(true);
    });
    let (g, a) = tokio::join!(grpc_server, admin_server);
    g?;
    a?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Bind a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
