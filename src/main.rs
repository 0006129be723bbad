//! The `bucketfront` binary: parses the command line, loads the config, and owns the
//! process (sockets, signals, exit codes). Everything else is in the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use bucketfront::Demo;
use bucketfront::Store;
use bucketfront::Tenants;
use bucketfront::cli::{self, Cli, Command};
use bucketfront::config::Config;
use bucketfront::systemd;
use bucketfront::{App, Listeners, WiringError};
use bucketfront::{Limits, Listener};

/// mimalloc gives freed pages back to the system (src/allocator.rs), so RSS comes back
/// down after a burst (glibc malloc keeps its high-water mark in its arenas).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bucketfront::return_freed_pages_soon();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::CheckConfig(c) => c
            .load()
            .map(|config| print!("{}", cli::check_config(&config))),
        Command::Sign(args) => args
            .config
            .load()
            .and_then(|config| cli::sign(&config, args, SystemTime::now()))
            .map(|url| println!("{url}")),
        Command::Policy(args) => {
            print!("{}", bucketfront::onboard::policy(args));
            Ok(())
        }
        Command::Check(args) => runtime().and_then(|rt| {
            let config = args.config.load()?;
            let report = rt.block_on(bucketfront::onboard::check(&config, &args.url));
            print!("{report}");
            if report.served() {
                Ok(())
            } else {
                Err(WiringError::Refused(
                    "the image would not be served (see above)".into(),
                ))
            }
        }),
        Command::Purge(args) => runtime().and_then(|rt| {
            let config = args.config.load()?;
            rt.block_on(cli::purge(&config, args))
                .map(|report| print!("{report}"))
        }),
        Command::Serve(c) => {
            let path = Config::default_path(c.config.clone());
            c.load()
                .and_then(|config| runtime()?.block_on(serve(config, path)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bucketfront: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, WiringError> {
    tokio::runtime::Builder::new_multi_thread()
        // Blocking work (the embedded store's file I/O, DNS lookups) waits for one of
        // these threads rather than growing the pool to tokio's default of 512.
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .map_err(WiringError::starting("the runtime"))
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> Result<TcpListener, WiringError> {
    TcpListener::bind(addr)
        .await
        .map_err(WiringError::starting(format!(
            "listening on {addr} ({what})"
        )))
}

/// Listeners passed by systemd socket activation (`LISTEN_FDS`), by name: `public` and
/// `admin` (`FileDescriptorName=`), or unnamed in that order. Empty without activation.
fn activated_listeners() -> Result<std::collections::HashMap<String, TcpListener>, WiringError> {
    use std::os::fd::FromRawFd;
    let Ok(fds) = sd_notify::listen_fds_with_names() else {
        return Ok(Default::default());
    };
    let mut out = std::collections::HashMap::new();
    for (i, (fd, name)) in fds.enumerate() {
        let name = match name.as_str() {
            "public" | "admin" => name,
            _ if i == 0 => "public".to_string(),
            _ if i == 1 => "admin".to_string(),
            _ => {
                return Err(WiringError::Refused(format!(
                    "socket activation passed an unexpected socket {name:?}"
                )));
            }
        };
        // SAFETY: systemd hands this process the descriptors from SD_LISTEN_FDS_START on;
        // each is a listening socket owned by nobody else, taken over exactly once here.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener
            .set_nonblocking(true)
            .map_err(WiringError::starting(format!(
                "socket-activated {name} listener"
            )))?;
        let listener = TcpListener::from_std(std_listener).map_err(WiringError::starting(
            format!("socket-activated {name} listener"),
        ))?;
        tracing::info!(%name, addr = ?listener.local_addr().ok(), "using socket-activated listener");
        out.insert(name, listener);
    }
    Ok(out)
}

/// Raises the soft file-descriptor limit to the hard one, and refuses to start when
/// `max_connections` (plus the overflow pool, the admin listener and origin connections)
/// cannot fit: at the limit, `accept` fails and every client waits.
fn raise_nofile(config: &Config) -> Result<(), WiringError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(WiringError::Start {
                what: "the open-file limit".into(),
                why: "getrlimit failed".into(),
            });
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let needed = bucketfront::fds_needed(config.server.max_connections);
    if lim.rlim_cur < needed {
        return Err(WiringError::Refused(format!(
            "server.max_connections = {} needs about {needed} open files, but the limit is {}: \
             raise LimitNOFILE= in the unit (or `ulimit -n`), or lower server.max_connections",
            config.server.max_connections, lim.rlim_cur
        )));
    }
    Ok(())
}

async fn serve(config: Config, config_path: std::path::PathBuf) -> Result<(), WiringError> {
    let _log = bucketfront::init_logging();
    raise_nofile(&config)?;
    let shutdown = CancellationToken::new();
    let mut embedded = None;
    let mut demo = None;
    let mut _store = None;
    if config.embedded_store.enabled {
        let es = &config.embedded_store;
        let listener = bind("embedded_store.listen", es.listen).await?;
        let (access, secret) = match (&es.access_key, &es.secret_key) {
            (Some(a), Some(s)) => (a.expose().to_string(), s.expose().to_string()),
            _ => bucketfront::generate_keys(),
        };
        let s = Store::start(listener, &access, &secret, shutdown.child_token())
            .map_err(WiringError::starting("the embedded store"))?;
        let objects = s
            .seed(&es.root)
            .await
            .map_err(WiringError::starting("the embedded store's seed objects"))?;
        tracing::info!(endpoint = %s.endpoint, objects = objects.len(), "embedded store ready");
        embedded = Some(s.access());
        demo = Some((
            bind("embedded_store.demo_listen", es.demo_listen).await?,
            objects,
        ));
        _store = Some(s);
    }
    let mut activated = activated_listeners()?;
    let listeners = Listeners {
        public: match activated.remove("public") {
            Some(l) => l,
            None => bind("server.listen", config.server.listen).await?,
        },
        admin: match activated.remove("admin") {
            Some(l) => l,
            None => bind("server.admin_listen", config.server.admin_listen).await?,
        },
    };
    let public_addr = listeners
        .public
        .local_addr()
        .map_err(WiringError::starting("the public listener"))?;
    let limits = Limits::from_config(&config.server);
    let tenants = Arc::new(Tenants::from_config(&config));
    let thumbnail = bucketfront::thumbnail_query(&config.variants.widths);
    let app = App::build(config, embedded).await?;
    if let Some((listener, objects)) = demo {
        let page = Arc::new(Demo {
            proxy_base: format!("http://{public_addr}"),
            objects,
            tenants,
            thumbnail,
        });
        let demo_addr = listener
            .local_addr()
            .map_err(WiringError::starting("the demo listener"))?;
        tracing::info!(url = %format!("http://{demo_addr}"), "demo page");
        tokio::spawn(Listener::new(limits.with_max_connections(64)).serve(
            listener,
            shutdown.child_token(),
            move |req| {
                let page = page.clone();
                async move { page.handle(req.uri().path()) }
            },
        ));
    }
    tokio::spawn(systemd::handle_signals(
        app.clone(),
        config_path,
        shutdown.clone(),
    ));
    systemd::spawn_watchdog(shutdown.clone());
    tracing::info!(listen = %public_addr, "bucketfront serving");
    systemd::ready(&format!("serving on {public_addr}"));
    app.run(listeners, shutdown).await;
    Ok(())
}
