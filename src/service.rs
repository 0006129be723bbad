//! Running under systemd (`Type=notify`, PRODUCT.md section 7): readiness, watchdog,
//! reload on SIGHUP and drain on SIGTERM/SIGINT. Every notification is a no-op when
//! `$NOTIFY_SOCKET` is not set, so the same binary runs anywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// `READY=1`: every listener is bound.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sends `WATCHDOG=1` every half of `$WATCHDOG_USEC` until `stop`.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => notify(&[NotifyState::Watchdog]),
                () = stop.cancelled() => return,
            }
        }
    });
}

/// Handles signals until SIGTERM or SIGINT, which cancels `shutdown` after `STOPPING=1`.
/// SIGHUP re-reads `config_path` and swaps it in; an invalid file keeps the running
/// config and says why, in the log and in `STATUS=`.
pub async fn handle_signals(app: Arc<App>, config_path: PathBuf, shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&app, &config_path).await,
        }
    }
    tracing::info!("shutdown signal received; draining");
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    shutdown.cancel();
}

async fn reload(app: &App, path: &Path) {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253+ (notify-reload) wants the time of the reload request.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
    let result = match Config::load(path) {
        Ok(config) => app.reload(config).await,
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => {
            tracing::info!(config = %path.display(), "configuration reloaded");
            ready("serving (configuration reloaded)");
        }
        Err(reason) => {
            tracing::error!(config = %path.display(), %reason, "reload refused; keeping the running configuration");
            ready(&format!(
                "reload failed, running the previous configuration: {reason}"
            ));
        }
    }
}
