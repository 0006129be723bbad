//! The floor under a small hit (`-- floor`): how fast can any server built like bucketfront
//! answer, with nothing to do per request? Two stand-ins run beside bucketfront and nginx
//! `proxy_cache`, each a child of this harness, each with bucketfront's runtime layout (an
//! accept loop handing connections to one current-thread runtime per core, mimalloc,
//! `TCP_NODELAY`) and each sending the head bucketfront sends for the same object:
//!
//! - *hyper*: hyper-util's auto builder with bucketfront's HTTP/1 settings and a service
//!   that answers from a table of two bodies: what bucketfront's HTTP stack costs alone.
//! - *raw*: `httparse` and one `writev` per response from a head formatted once: what an
//!   HTTP/1 path of its own could reach at best, with nothing else in it.
//!
//! If the hyper floor is behind nginx, a hit cannot be ahead of it while it goes through
//! hyper; the raw floor bounds what replacing that path could give.

use std::fmt::Write as _;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::support::{BUCKET, accepting, free_port};

/// The sizes where bucketfront is behind nginx over h1.
const FLOOR_SIZES: [(&str, usize); 2] = [("4KiB", 4 << 10), ("64KiB", 64 << 10)];

/// Set in a child of this harness: which floor server it runs instead of the bench.
pub(crate) const FLOOR_ENV: &str = "BUCKETFRONT_FLOOR";
const PORT_ENV: &str = "BUCKETFRONT_FLOOR_PORT";
const HEAD_ENV: &str = "BUCKETFRONT_FLOOR_HEAD";

pub(crate) async fn floor(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let files: PathBuf =
        Path::new("/dev/shm").join(format!("bucketfront-bench-floor-{}", std::process::id()));
    std::fs::create_dir_all(files.join(BUCKET)).unwrap();
    for (name, size) in FLOOR_SIZES {
        let body = put_pattern(&store, &format!("{name}.png"), size).await;
        std::fs::write(files.join(BUCKET).join(format!("{name}.png")), &body).unwrap();
    }
    let (bf, bf_port) = start_bucketfront(dir.path(), &store.endpoint, "floor");
    let nginxes: Vec<(Proc, u16, &str)> = NGINX_KNOBS
        .iter()
        .enumerate()
        .map(|(i, knobs)| {
            let (p, port, _) = start_nginx(
                &dir.path().join(format!("nginx-{i}")),
                mirror_port,
                &files,
                knobs,
            );
            (p, port, *knobs)
        })
        .collect();
    accepting(bf_port, "bucketfront").await;
    for (_, port, knobs) in &nginxes {
        accepting(*port, &format!("nginx `{knobs}`")).await;
    }
    // The head bucketfront sends for a hit (the first GET fills the cache), but for the
    // two fields each server writes itself.
    let first = format!(
        "http://127.0.0.1:{bf_port}{}",
        signed_path(&format!("{}.png", FLOOR_SIZES[0].0))
    );
    ttfb(&first).await;
    let head = hit_head(&first).await;
    let floors: Vec<(&str, Proc, u16)> = ["hyper", "raw"]
        .into_iter()
        .map(|kind| {
            let port = free_port();
            let child = Command::new(std::env::current_exe().unwrap())
                .env(FLOOR_ENV, kind)
                .env(PORT_ENV, port.to_string())
                .env(HEAD_ENV, &head)
                .spawn()
                .unwrap();
            (kind, Proc(child), port)
        })
        .collect();
    for (kind, _, port) in &floors {
        accepting(*port, &format!("the {kind} floor")).await;
    }

    let mut report = format!(
        "## The floor under a hit ({CONNECTIONS} connections, wrk -t2, {seconds}s × {rounds} alternating rounds)\n\nbucketfront, nginx `proxy_cache` (the best of {} sets of knobs per size, by a 2 s probe), and two stand-ins with bucketfront's runtime layout and head: *hyper floor* (hyper with bucketfront's settings, a body from a table) and *raw floor* (`httparse`, one `writev`). CPU µs per response: the server's user + system time over its responses (nginx: its workers).\n\n| size | server | req/s | p99 ms | CPU µs per response | / nginx (per round) | / nginx |\n|---|---|---:|---:|---:|---|---:|\n",
        NGINX_KNOBS.len()
    );
    for (name, _) in FLOOR_SIZES {
        let signed = signed_path(&format!("{name}.png"));
        let plain = format!("/{BUCKET}/{name}.png");
        let nginx = best_of(
            nginxes
                .iter()
                .map(|n| (format!("http://127.0.0.1:{}{plain}", n.1), n.2.to_string()))
                .collect(),
        )
        .await;
        let nginx_pid = nginxes
            .iter()
            .find(|n| nginx.0.contains(&format!(":{}/", n.1)))
            .map(|n| n.0.0.id())
            .unwrap();
        // (label, url, pid); the floors get the signed URL too, so that their parsers
        // read as long a request line as bucketfront's.
        let mut targets = vec![
            (
                "bucketfront".to_string(),
                format!("http://127.0.0.1:{bf_port}{signed}"),
                bf.0.id(),
            ),
            (
                format!("nginx proxy_cache (`{}`)", nginx.1),
                nginx.0,
                nginx_pid,
            ),
        ];
        for (kind, p, port) in &floors {
            targets.push((
                format!("{kind} floor"),
                format!("http://127.0.0.1:{port}{signed}"),
                p.0.id(),
            ));
        }
        for (_, url, _) in &targets {
            for _ in 0..2 {
                ttfb(url).await;
            }
        }
        // Per target, per round: (req/s, p99 ms, CPU µs per response).
        let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); targets.len()];
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (url, pid) = (targets[i].1.clone(), targets[i].2);
                let before = tree_cpu_seconds(pid);
                let r = tokio::task::spawn_blocking(move || wrk(&url, seconds))
                    .await
                    .unwrap();
                let cpu = tree_cpu_seconds(pid) - before;
                let responses = r.rps * seconds as f64;
                runs[i].push((r.rps, r.p99_ms, cpu * 1e6 / responses));
            }
        }
        let avg = |i: usize, f: fn(&(f64, f64, f64)) -> f64| {
            runs[i].iter().map(f).sum::<f64>() / rounds as f64
        };
        for (i, (label, _, _)) in targets.iter().enumerate() {
            let per_round: Vec<String> = runs[i]
                .iter()
                .zip(&runs[1])
                .map(|(r, n)| format!("{:.2}", r.0 / n.0))
                .collect();
            let _ = writeln!(
                report,
                "| {name} | {label} | {:.0} | {:.2} | {:.1} | {} | {:.2} |",
                avg(i, |r| r.0),
                avg(i, |r| r.1),
                avg(i, |r| r.2),
                per_round.join(" / "),
                avg(i, |r| r.0) / avg(1, |r| r.0)
            );
        }
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&files);
    report
}

/// The CPU seconds of `pid` and of its children (nginx's workers), from `/proc`.
fn tree_cpu_seconds(pid: u32) -> f64 {
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    cpu_seconds(pid) + children.into_iter().map(cpu_seconds).sum::<f64>()
}

/// The head of `url`'s response as `name: value` lines, without `date` and
/// `content-length` (each floor writes those itself).
async fn hit_head(url: &str) -> String {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut head = String::new();
    for (name, value) in resp.headers() {
        if name != "date" && name != "content-length" {
            let _ = writeln!(head, "{name}: {}", value.to_str().unwrap());
        }
    }
    resp.into_body().collect().await.unwrap();
    head
}

/// Runs the floor server named by [`FLOOR_ENV`] until killed (the harness's `Proc` does).
pub(crate) fn serve_floor(kind: &str) {
    bucketfront::return_freed_pages_soon();
    let port: u16 = std::env::var(PORT_ENV).unwrap().parse().unwrap();
    let head: Vec<(String, String)> = std::env::var(HEAD_ENV)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let bodies: Arc<Vec<(String, Bytes)>> = Arc::new(
        FLOOR_SIZES
            .iter()
            .map(|(name, size)| {
                let body: Vec<u8> = (0..*size).map(|i| (i * 31 % 251) as u8).collect();
                (format!("/{BUCKET}/{name}.png"), Bytes::from(body))
            })
            .collect(),
    );
    let workers: Vec<tokio::runtime::Handle> = (0..std::thread::available_parallelism()
        .map_or(1, |n| n.get()))
        .map(|_| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = rt.handle().clone();
            std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
            handle
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = kind == "raw";
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let hyper_floor = Arc::new(HyperFloor::new(&head, bodies.clone()));
        let raw_floor = Arc::new(RawFloor::new(&head, &bodies));
        for next in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let worker = &workers[next % workers.len()];
            if raw {
                worker.spawn(raw_floor.clone().serve(stream));
            } else {
                worker.spawn(hyper_floor.clone().serve(stream));
            }
        }
    });
}

struct HyperFloor {
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    headers: HeaderMap,
    bodies: Arc<Vec<(String, Bytes)>>,
}

impl HyperFloor {
    fn new(head: &[(String, String)], bodies: Arc<Vec<(String, Bytes)>>) -> HyperFloor {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // bucketfront's HTTP/1 settings (src/server/connection.rs).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(64 * 1024);
        let mut headers = HeaderMap::new();
        for (name, value) in head {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        HyperFloor {
            builder,
            headers,
            bodies,
        }
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let this = self.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            let found = this
                .bodies
                .iter()
                .find(|(path, _)| path == req.uri().path())
                .map(|(_, body)| body.clone());
            let mut resp = hyper::Response::new(Full::new(found.clone().unwrap_or_default()));
            match found {
                Some(_) => *resp.headers_mut() = this.headers.clone(),
                None => *resp.status_mut() = hyper::StatusCode::NOT_FOUND,
            }
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let _ = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }
}

struct RawFloor {
    /// Per path: the whole head, formatted once (hyper formats its `date` once a second),
    /// and the body.
    responses: Vec<(String, Bytes, Bytes)>,
}

impl RawFloor {
    fn new(head: &[(String, String)], bodies: &[(String, Bytes)]) -> RawFloor {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let responses = bodies
            .iter()
            .map(|(path, body)| {
                let mut text = String::from("HTTP/1.1 200 OK\r\n");
                for (name, value) in head {
                    let _ = write!(text, "{name}: {value}\r\n");
                }
                let _ = write!(
                    text,
                    "content-length: {}\r\ndate: {date}\r\n\r\n",
                    body.len()
                );
                (path.clone(), Bytes::from(text), body.clone())
            })
            .collect();
        RawFloor { responses }
    }

    async fn serve(self: Arc<Self>, mut stream: TcpStream) {
        const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut buf = BytesMut::with_capacity(8192);
        loop {
            // Every complete request in the buffer, answered in order (pipelining).
            loop {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut fields);
                let used = match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return,
                };
                let path = req.path.unwrap_or("/");
                let path = path.split_once('?').map_or(path, |(p, _)| p);
                let sent = match self.responses.iter().find(|(p, _, _)| p == path) {
                    Some((_, head, body)) => send(&mut stream, head, body).await,
                    None => send(&mut stream, NOT_FOUND, &[]).await,
                };
                if sent.is_err() {
                    return;
                }
                let _ = buf.split_to(used);
            }
            if buf.len() >= 64 * 1024 {
                return;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// `head` and `body` in one `writev` where the socket takes them.
async fn send(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let (mut h, mut b) = (0, 0);
    while h < head.len() || b < body.len() {
        let slices = [IoSlice::new(&head[h..]), IoSlice::new(&body[b..])];
        let n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len() - h);
        h += from_head;
        b += n - from_head;
    }
    Ok(())
}
