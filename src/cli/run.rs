//! `dozor run`: the daemon ([`crate::service::run`]) until SIGTERM or SIGINT. The first signal
//! cancels the service's one stop token; a second one during the stop exits at once.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{Cli, CmdResult, load_config, log_rule_modes, open_store};
use crate::service;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
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
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub(crate) async fn run(cli: &Cli) -> CmdResult {
    let loaded = load_config(cli)?;
    let c = loaded.config;
    log_rule_modes(&c.tenants.iter().collect::<Vec<_>>(), false);
    let store = open_store(cli, &c)
        .await?
        .with_holder(&c.cluster.instance_id());
    let shutdown = CancellationToken::new();
    spawn_stop_on_signal(shutdown.clone());
    service::run(&c, store, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// On the first SIGTERM/SIGINT: cancels `shutdown` (the cycle, the server and the bots stop).
/// On a second one: exits at once, status 1 (the ledger finishes at the next start whatever
/// was cut short).
fn spawn_stop_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            grace_secs = service::STOP_GRACE.as_secs(),
            "stop requested: ending the current cycle; a second signal exits at once"
        );
        shutdown.cancel();
        shutdown_signal().await;
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(1);
    });
}
