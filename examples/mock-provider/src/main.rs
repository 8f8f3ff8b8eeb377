//! `tollgate-mock`: run the mock provider on its own.
//!
//! Prints `listening on ADDR` once bound; exits cleanly on SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tollgate_mock::MockConfig;

/// Offline OpenAI- and Anthropic-compatible mock provider.
#[derive(Debug, Parser)]
#[command(name = "tollgate-mock", version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: String,
    #[command(flatten)]
    mock: MockConfig,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let listener = match tokio::net::TcpListener::bind(&cli.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("tollgate-mock: cannot listen on {}: {err}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(_) => println!("listening on {}", cli.listen),
    }
    let _ = std::io::stdout().flush();
    match tollgate_mock::serve(listener, cli.mock, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tollgate-mock: {err}");
            ExitCode::FAILURE
        }
    }
}
