//! The real binary as systemd runs it: `READY=1`, `WATCHDOG=1`, reload on SIGHUP
//! (`RELOADING=1` + `MONOTONIC_USEC`, then `READY=1`), refused reloads, `STOPPING=1` and a
//! clean exit on SIGTERM; JSON log lines with the request id and no secrets. The notify
//! socket is a Unix datagram socket bound by the test.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "very-secret-signing-key-0123456789";

fn config(port: u16, admin: u16, origins: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
drain_timeout = "2s"
[cors]
allowed_origins = [{origins}]
[[tenants]]
name = "t"
buckets = ["svc-images"]
signing_keys = [{{ id = "k1", secret = "{SECRET}" }}]
[[buckets]]
name = "svc-images"
endpoint = "http://127.0.0.1:9"
path_style = true
access_key = "AKIDSVC"
secret_key = "svc-secret-access-key"
{extra}
"#
    )
}

/// The default test config for a proxy on two free ports, written into `dir`: the
/// public port, the admin port and the file.
fn write_config(dir: &std::path::Path) -> (u16, u16, std::path::PathBuf) {
    let (port, admin) = (free_port(), free_port());
    let path = dir.join("config.toml");
    std::fs::write(&path, config(port, admin, "", "")).unwrap();
    (port, admin, path)
}

/// A notify socket read continuously by a thread of its own (a socket left unread
/// fills its queue, which is a different test), its messages queued for [`expect`].
struct Notifications {
    rx: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Notifications {
    fn bind() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    // The test is over once nobody listens (checked on each timeout).
                    Err(_) if tx.send(String::new()).is_err() => return,
                    Err(_) => {}
                }
            }
        });
        Notifications {
            rx,
            _dir: dir,
            path,
        }
    }
}

/// Takes notify messages until one contains `want`, or panics after `within`.
fn expect(n: &Notifications, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match n.rx.recv_timeout(left) {
            Ok(msg) if msg.contains(want) => return msg,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no {want:?} within {within:?}");
}

#[tokio::test]
async fn notify_reload_logs_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let sock = Notifications::bind();
    let (port, admin, config_path) = write_config(dir.path());
    let child = serve(&config_path)
        .env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::piped())
        .spawn()
        .map(Reaped::new)
        .unwrap();
    let pid = child.id();
    let ready = expect(&sock, "READY=1", Duration::from_secs(20));
    assert!(ready.contains("STATUS=serving"), "{ready}");
    // READY=1 means bound: the listener answers at once.
    let base = format!("http://127.0.0.1:{port}");
    let origin = "https://reloaded.example.org";
    let r = get_with(&format!("{base}/svc-images/a.png"), &[("origin", origin)]).await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    // The watchdog pings every half of WATCHDOG_USEC (200 ms here), again and again.
    expect(&sock, "WATCHDOG=1", Duration::from_secs(10));
    expect(&sock, "WATCHDOG=1", Duration::from_secs(10));

    // A valid reload: the new CORS origin applies to the next request.
    std::fs::write(
        &config_path,
        config(port, admin, &format!("\"{origin}\""), ""),
    )
    .unwrap();
    signal(pid, "-HUP");
    let reloading = expect(&sock, "RELOADING=1", Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let after = expect(&sock, "READY=1", Duration::from_secs(5));
    assert!(after.contains("reloaded"), "{after}");
    let r = get_with(&format!("{base}/svc-images/a.png"), &[("origin", origin)]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));

    // An invalid file, and a change that needs a restart, keep the running config.
    std::fs::write(&config_path, "[server]\nbogus = 1\n").unwrap();
    signal(pid, "-HUP");
    expect(&sock, "RELOADING=1", Duration::from_secs(5));
    let failed = expect(&sock, "READY=1", Duration::from_secs(5));
    assert!(
        failed.contains("reload failed") && failed.contains("bogus"),
        "{failed}"
    );
    std::fs::write(
        &config_path,
        config(free_port(), admin, &format!("\"{origin}\""), ""),
    )
    .unwrap();
    signal(pid, "-HUP");
    let refused = expect(&sock, "READY=1", Duration::from_secs(5));
    assert!(
        refused.contains("server.listen"),
        "refused by name: {refused}"
    );
    let r = get_with(&format!("{base}/svc-images/a.png"), &[("origin", origin)]).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "still the reloaded config"
    );

    // A signed request, to look for secrets in the log afterwards.
    let exp = in_an_hour();
    let sig = bucketfront::sign(SECRET.as_bytes(), "svc-images", "a.png", exp);
    let signed = get(&format!("{base}/svc-images/a.png?exp={exp}&sig={sig}")).await;
    let request_id = signed.header("x-request-id").unwrap().to_string();
    let metrics = get(&format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        String::from_utf8_lossy(metrics.bytes()).contains("bucketfront_config_reloads_total 1")
    );

    signal(pid, "-TERM");
    expect(&sock, "STOPPING=1", Duration::from_secs(5));
    let out = tokio::task::spawn_blocking(move || child.take().wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "exit 0 after drain: {:?}", out.status);

    let log = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str())
        .expect("the request's log line carries its X-Request-Id");
    assert_eq!(line["route"], "object");
    for secret in [SECRET, sig.as_str(), "svc-secret-access-key"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

/// A notify socket that nobody reads fills up after 10 datagrams. The watchdog pings
/// every 10 ms here, so it is full at once; the proxy must keep answering and still stop
/// on SIGTERM (a blocking send stalled the runtime and ignored SIGTERM).
#[tokio::test]
async fn a_notify_socket_nobody_reads_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("unread.sock");
    let _unread = UnixDatagram::bind(&sock_path).unwrap();
    let (port, admin, config_path) = write_config(dir.path());
    let mut child = serve(&config_path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "20000")
        .spawn()
        .map(Reaped::new)
        .unwrap();
    let health = format!("http://127.0.0.1:{admin}/healthz");
    accepting(admin, "the proxy").await;
    // Many watchdog periods with the queue full: every request is still answered.
    for _ in 0..20 {
        let r = get(&health).await;
        assert_eq!(r.status, 200);
        let r = get(&format!("http://127.0.0.1:{port}/svc-images/a.png")).await;
        assert_eq!(r.status, 403);
    }
    signal(child.id(), "-TERM");
    let status = eventually_some(
        Duration::from_secs(30),
        "SIGTERM ends the proxy although its notify socket is full",
        || {
            let exited = child.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(status.success(), "{status:?}");
}

/// A log pipe nobody reads (journald stalled, a full `| tee`) fills after 64 KiB, about
/// 200 access-log lines. Log lines go through a bounded queue and a writer thread of
/// their own, so requests are still answered; a blocking write on a runtime worker used
/// to stall every request once the pipe was full.
#[tokio::test]
async fn a_log_pipe_nobody_reads_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _admin, config_path) = write_config(dir.path());
    let mut child = serve(&config_path)
        .stdout(Stdio::piped())
        .spawn()
        .map(Reaped::new)
        .unwrap();
    // Read only after the requests (so the pipe is full meanwhile), on a thread of its own.
    let stdout = child.stdout.take().unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let _ = wait.recv();
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut log);
        log
    });
    accepting(port, "the proxy").await;
    // 1,000 access-log lines: well past what the pipe holds.
    let url = format!("http://127.0.0.1:{port}/svc-images/a.png");
    for i in 0..1000 {
        let answered = tokio::time::timeout(Duration::from_secs(20), get(&url)).await;
        let r =
            answered.unwrap_or_else(|_| panic!("request {i} answered while the log pipe is full"));
        assert_eq!(r.status, 403);
    }
    signal(child.id(), "-TERM");
    let _ = go.send(());
    let status = tokio::task::spawn_blocking(move || child.take().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = reader.join().unwrap();
    // The queue held what the pipe could not: the lines arrive once the pipe is read.
    assert!(
        log.lines().filter(|l| l.contains("\"status\":403")).count() >= 1000,
        "{}",
        log.len()
    );
}

/// With fewer open files than max_connections needs, the proxy refuses to start and
/// says what to raise (instead of failing `accept` under load).
#[tokio::test]
async fn too_few_open_files_for_max_connections_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_port, _admin, config_path) = write_config(dir.path());
    let out = Command::new("sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\" serve -c \"$1\""])
        .arg(env!("CARGO_BIN_EXE_bucketfront"))
        .arg(&config_path)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LimitNOFILE") && err.contains("max_connections"),
        "{err}"
    );
}

#[tokio::test]
async fn the_standard_aws_environment_reaches_an_s3_compatible_store() {
    // No [[buckets]] entry: endpoint, keys and region come only from AWS_* variables, as
    // an operator pointing the proxy at MinIO or another S3-compatible store would do.
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = bucketfront::Store::start(listener, "ENVACCESSKEY", "env-secret-key", stop.clone())
        .unwrap();
    store
        .client()
        .create_bucket()
        .bucket("env-images")
        .send()
        .await
        .unwrap();
    let body = aws_sdk_s3::primitives::ByteStream::from_static(b"via the environment");
    store
        .put("env-images", "e.png", body, "image/png")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[[tenants]]\nname = \"e\"\nbuckets = [\"env-images\"]\nrequire_signature = false\n"
        ),
    )
    .unwrap();
    let mut child = serve(&config_path)
        .env("AWS_ENDPOINT_URL_S3", &store.endpoint)
        .env("AWS_ACCESS_KEY_ID", "ENVACCESSKEY")
        .env("AWS_SECRET_ACCESS_KEY", "env-secret-key")
        .env("AWS_REGION", "us-east-1")
        .spawn()
        .map(Reaped::new)
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/env-images/e.png");
    accepting(port, "the proxy").await;
    let r = get(&url).await;
    let _ = child.kill();
    let _ = child.wait();
    stop.cancel();
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes().as_ref(), b"via the environment");
}

#[tokio::test]
async fn socket_activation_uses_the_passed_listeners() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "\n!!!!! SKIPPED: systemd-socket-activate is missing (Debian package systemd) !!!!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    // The config names other ports: serving on `public`/`admin` proves the passed sockets are used.
    let (unused, unused_admin) = (free_port(), free_port());
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(unused, unused_admin, "", "")).unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &format!("127.0.0.1:{public}"),
            "-l",
            &format!("127.0.0.1:{admin}"),
        ])
        .args([
            "--fdname=public:admin",
            "-E",
            "AWS_EC2_METADATA_DISABLED=true",
        ])
        .args([
            env!("CARGO_BIN_EXE_bucketfront"),
            "serve",
            "-c",
            config_path.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped::new)
        .unwrap();
    // systemd-socket-activate starts the service on the first connection.
    let status = eventually_some(
        Duration::from_secs(30),
        "the socket-activated service answers",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", public))
                .await
                .ok()?;
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                get(&format!("http://127.0.0.1:{public}/svc-images/a.png")),
            )
            .await
            .ok()?;
            Some(r.status.as_u16())
        },
    )
    .await;
    let health = get(&format!("http://127.0.0.1:{admin}/healthz")).await;
    let unused_is_closed = std::net::TcpStream::connect(("127.0.0.1", unused)).is_err();
    let _ = child.kill();
    let _ = child.wait();
    // The child of systemd-socket-activate (bucketfront) is the same process after exec.
    assert_eq!(status, 403, "the public socket answers (unsigned request)");
    assert_eq!(health.status, 200, "the admin socket answers");
    assert!(unused_is_closed, "the configured address was not bound");
}

/// The shipped `config.toml` (ports moved, head deadline 1 s) starts the embedded store,
/// the proxy and the demo page; the demo listener (64 connections) keeps serving its page
/// under 100 silent sockets and closes every one of them at the head deadline.
#[tokio::test]
async fn the_shipped_config_serves_the_demo_page_under_silent_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let (public, admin, store, demo) = (free_port(), free_port(), free_port(), free_port());
    let text = shipped
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{store}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{demo}"))
        .replace(
            "header_read_timeout = \"10s\"",
            "header_read_timeout = \"1s\"",
        )
        .replace(
            "root = \"demo/bucket\"",
            &format!("root = \"{}/demo/bucket\"", env!("CARGO_MANIFEST_DIR")),
        );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let _child = serve(&path).spawn().map(Reaped::new).unwrap();
    accepting(demo, "the demo page").await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", demo))
                .await
                .unwrap(),
        );
    }
    let page = get(&format!("http://127.0.0.1:{demo}/")).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(page.bytes()).contains(&format!("127.0.0.1:{public}")));
    for mut s in silent {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a silent socket on the demo listener was closed by the deadline"
        );
    }
}

/// The access log line is written when the response has ended, with the bytes actually
/// handed to the connection and how it ended: whole, cut by `send_timeout` (a client
/// that reads nothing), or abandoned by the client after the head.
#[tokio::test]
async fn access_log_lines_say_how_each_response_ended() {
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store =
        bucketfront::Store::start(listener, "LOGACCESS", "log-secret", stop.clone()).unwrap();
    store
        .client()
        .create_bucket()
        .bucket("log-images")
        .send()
        .await
        .unwrap();
    let big = pattern(16 << 20, 7);
    let body = aws_sdk_s3::primitives::ByteStream::from(big.clone());
    store
        .put("log-images", "big.png", body, "image/png")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config_path = dir.path().join("config.toml");
    let endpoint = &store.endpoint;
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nsend_timeout = \"1s\"\ndrain_timeout = \"2s\"\n[[tenants]]\nname = \"l\"\nbuckets = [\"log-images\"]\nrequire_signature = false\n[[buckets]]\nname = \"log-images\"\nendpoint = \"{endpoint}\"\npath_style = true\naccess_key = \"LOGACCESS\"\nsecret_key = \"log-secret\"\n"
        ),
    )
    .unwrap();
    let child = serve(&config_path)
        .stdout(Stdio::piped())
        .spawn()
        .map(Reaped::new)
        .unwrap();
    let pid = child.id();
    accepting(port, "the proxy").await;
    let url = format!("http://127.0.0.1:{port}/log-images/big.png");
    // Whole.
    let whole = get(&url).await;
    assert_eq!(whole.bytes().len(), big.len());
    let whole_id = whole.header("x-request-id").unwrap().to_string();
    // Cut: a small window, never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stalled
        .write_all(b"GET /log-images/big.png HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    let series = "bucketfront_connections_ended_total{reason=\"send_timeout\"} 1";
    eventually(
        Duration::from_secs(30),
        "the stalled reader is cut",
        || async { String::from_utf8_lossy(get(&metrics).await.bytes()).contains(series) },
    )
    .await;
    // Abandoned after the head.
    let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
    gone.write_all(b"GET /log-images/big.png HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    use tokio::io::AsyncReadExt;
    gone.read_exact(&mut head).await.unwrap();
    drop(gone);
    drop(stalled);
    signal(pid, "-TERM");
    let out = tokio::task::spawn_blocking(move || child.take().wait_with_output().unwrap())
        .await
        .unwrap();
    stop.cancel();
    let log = String::from_utf8_lossy(&out.stdout);
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["route"] == "object")
        .collect();
    let whole_line = access
        .iter()
        .find(|l| l["request_id"] == whole_id.as_str())
        .expect("the whole response's line");
    assert_eq!(whole_line["outcome"], "complete");
    assert_eq!(whole_line["bytes"], big.len() as u64);
    let cut = access
        .iter()
        .find(|l| l["outcome"] == "send_timeout")
        .unwrap_or_else(|| panic!("a send_timeout line in {access:#?}"));
    assert!(cut["bytes"].as_u64().unwrap() < big.len() as u64, "{cut}");
    assert!(
        access.iter().any(|l| l["outcome"] == "client_gone"),
        "{access:#?}"
    );
}
