//! Running under systemd (`Type=notify`, README.md, "Running as a service"): readiness, watchdog,
//! reload on SIGHUP and drain on SIGTERM/SIGINT. Every notification is a no-op when
//! `$NOTIFY_SOCKET` is not set, so the same binary runs anywhere.
//!
//! Notifications are sent on a non-blocking socket: when the service manager's queue is
//! full (`net.unix.max_dgram_qlen`, 10 by default) the message is dropped with a log
//! line. A blocking send would stall a runtime worker, and with it every request and
//! the SIGTERM handler.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;

fn notify(states: &[NotifyState]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    match send_nonblocking(&path, message.as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            tracing::warn!("the service manager's notify queue is full; dropped {message:?}");
        }
        Err(e) => tracing::warn!(error = %e, "cannot notify the service manager"),
    }
}

/// One datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace),
/// never waiting for queue space.
fn send_nonblocking(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(Path::new(path))?,
    };
    sock.send_to_addr(message, &addr).map(|_| ())
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
        Ok(config) => app.reload(config).await.map_err(|e| e.to_string()),
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
