//! The floor under a hit (`-- floor`): how fast can any server built like bucketfront
//! answer, with nothing to do per request? Stand-ins run beside bucketfront and nginx
//! `proxy_cache`, each a child of this harness, each with bucketfront's runtime layout (an
//! accept loop handing connections to one current-thread runtime per core, mimalloc,
//! `TCP_NODELAY`) and each sending the head bucketfront sends for the same object:
//!
//! - *hyper*: hyper-util's auto builder with bucketfront's HTTP/1 and HTTP/2 settings and
//!   a service that answers from a table of bodies: what bucketfront's HTTP stack costs
//!   alone.
//! - *raw*: `httparse` and one `writev` per response from a head formatted once: what an
//!   HTTP/1 path of its own could reach at best, with nothing else in it.
//! - *sendfile*: the raw floor, but each body is in a `memfd` and goes out by `sendfile`
//!   after the head (`send` with `MSG_MORE`): what a memory tier kept in page-cache pages
//!   would give, with no copy from user memory (nginx's way from its tmpfs cache).
//! - *disk floors* (run by `-- disk`): the raw floor answering from files on disk, each
//!   request an open, a header read and the body's CRC32C checked, then a `writev` from a
//!   new buffer (bucketfront's memory path), a `sendfile` (nginx's send, and bucketfront's
//!   for objects it sends from their file), or a `writev` from a mapping of the file: what
//!   a disk-tier hit costs with nothing else around it.
//!
//! If the hyper floor is behind nginx, a hit cannot be ahead of it while it goes through
//! hyper; the raw floor bounds what replacing that path could give. At 1 MiB and 16 MiB,
//! where the send is nearly all the work, the raw floor is the cost of the copy into the
//! socket alone and the sendfile floor what sending without it gives on this kernel. The
//! TLS + h2 table (`-- h2`) runs the hyper floor too, with rustls set up as bucketfront's.

use std::fmt::Write as _;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::support::{BUCKET, accepting, free_port};

/// Every body a floor can send, found by the request path's last segment (`4KiB.png`):
/// the h1 table's sizes and those of the TLS + h2 table (`-- h2`).
const FLOOR_BODIES: [(&str, usize); 5] = [
    ("4KiB", 4 << 10),
    ("64KiB", 64 << 10),
    ("200KiB", 200 << 10),
    ("1MiB", 1 << 20),
    ("16MiB", 16 << 20),
];

/// The sizes of this mode's table: the h1 table's four, or those `BENCH_FLOOR_SIZES`
/// names (comma-separated, from [`FLOOR_BODIES`]: `1MiB,16MiB`).
fn floor_sizes() -> Vec<(&'static str, usize)> {
    let names = std::env::var("BENCH_FLOOR_SIZES").unwrap_or("4KiB,64KiB,1MiB,16MiB".into());
    // Never empty: `split` yields at least one name, and an unknown one stops the bench.
    names
        .split(',')
        .map(|name| {
            *FLOOR_BODIES
                .iter()
                .find(|(known, _)| *known == name.trim())
                .unwrap_or_else(|| panic!("BENCH_FLOOR_SIZES: no body named {name:?}"))
        })
        .collect()
}

/// Where nginx is in each size's targets: every ratio is to it.
const NGINX: usize = 1;

/// Set in a child of this harness: which floor server it runs instead of the bench.
pub(crate) const FLOOR_ENV: &str = "BUCKETFRONT_FLOOR";
const PORT_ENV: &str = "BUCKETFRONT_FLOOR_PORT";
const HEAD_ENV: &str = "BUCKETFRONT_FLOOR_HEAD";
/// The certificate and key (PEM paths, one per line): the hyper floor then speaks TLS with
/// ALPN `h2` and `http/1.1`, as bucketfront's public listener does.
const TLS_ENV: &str = "BUCKETFRONT_FLOOR_TLS";
/// The disk floors' root: `{root}/{dir}/{file}` answers `…/{dir}/{file}`.
const DISK_ENV: &str = "BUCKETFRONT_FLOOR_DISK";

/// Starts the `kind` floor ("hyper" or "raw") in a child of this harness, answering with
/// `head` (`name: value` lines); over TLS with `tls` (certificate, key).
pub(crate) fn start_floor(kind: &str, head: &str, tls: Option<(&Path, &Path)>) -> (Proc, u16) {
    let (mut cmd, port) = floor_command(kind, head);
    if let Some((cert, key)) = tls {
        cmd.env(TLS_ENV, format!("{}\n{}", cert.display(), key.display()));
    }
    (Proc(cmd.spawn().unwrap()), port)
}

/// Starts the disk floor that answers `how`, from files under `root` in the layout of
/// [`write_disk_floor_files`].
pub(crate) fn start_disk_floor(how: DiskSend, head: &str, root: &Path) -> (Proc, u16) {
    let (mut cmd, port) = floor_command(how.kind(), head);
    cmd.env(DISK_ENV, root);
    (Proc(cmd.spawn().unwrap()), port)
}

fn floor_command(kind: &str, head: &str) -> (Command, u16) {
    let port = free_port();
    let mut cmd = server_command(std::env::current_exe().unwrap());
    cmd.env(FLOOR_ENV, kind)
        .env(PORT_ENV, port.to_string())
        .env(HEAD_ENV, head);
    (cmd, port)
}

pub(crate) async fn floor(seconds: u64, rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (store, mirror_port) = start_store_and_mirror(&stop).await;
    let sizes = floor_sizes();
    let files = seed_with_files(&store, &sizes, "floor").await;
    let (bf, bf_port) = start_bucketfront(dir.path(), &store.endpoint, "floor");
    let nginxes = start_nginxes(dir.path(), mirror_port, &files);
    accepting(bf_port, "bucketfront").await;
    for (_, port, _, knobs) in &nginxes {
        accepting(*port, &format!("nginx `{knobs}`")).await;
    }
    let head = hit_head(&format!(
        "http://127.0.0.1:{bf_port}{}",
        signed_path(&format!("{}.png", sizes[0].0))
    ));
    let floors: Vec<(&str, Proc, u16)> = ["hyper", "raw", "sendfile"]
        .into_iter()
        .map(|kind| {
            let (p, port) = start_floor(kind, &head, None);
            (kind, p, port)
        })
        .collect();
    for (kind, _, port) in &floors {
        accepting(*port, &format!("the {kind} floor")).await;
    }

    let mut report = format!(
        "## The floor under a hit ({CONNECTIONS} connections, {}, {seconds}s × {rounds} alternating rounds)\n\n{}\n\nbucketfront, nginx `proxy_cache` and nginx serving the files from tmpfs with `sendfile` (the ceiling; each the best of {} sets of knobs per size, by a 2 s probe), and three stand-ins with bucketfront's runtime layout and head: *hyper floor* (hyper with bucketfront's settings, a body from a table), *raw floor* (`httparse`, one `writev`) and *sendfile floor* (the raw floor with the body in a `memfd`, sent by `sendfile`). CPU µs per response: the server's user + system time over its responses (nginx: its workers).\n\n| size | server | req/s | p99 ms | CPU µs per response | / nginx (per round) | / nginx |\n|---|---|---:|---:|---:|---|---:|\n",
        client_label(),
        placement(),
        NGINX_KNOBS.len()
    );
    for (name, _) in sizes {
        let signed = signed_path(&format!("{name}.png"));
        let plain = format!("/{BUCKET}/{name}.png");
        // Each nginx's (URL, knobs): its proxy_cache port, or its sendfile one.
        let candidates = |sendfile: bool| -> Vec<(String, String)> {
            nginxes
                .iter()
                .map(|n| {
                    let port = if sendfile { n.2 } else { n.1 };
                    (format!("http://127.0.0.1:{port}{plain}"), n.3.to_string())
                })
                .collect()
        };
        let nginx = best_of(candidates(false)).await;
        let ceiling = best_of(candidates(true)).await;
        // The nginx that serves a URL: its proxy_cache port or its sendfile one.
        let pid_of = |url: &str| {
            nginxes
                .iter()
                .find(|n| [n.1, n.2].iter().any(|p| url.contains(&format!(":{p}/"))))
                .map(|n| n.0.0.id())
                .unwrap()
        };
        let (nginx_pid, ceiling_pid) = (pid_of(&nginx.0), pid_of(&ceiling.0));
        // (label, url, pid), nginx at [`NGINX`]; the floors get the signed URL too, so
        // that their parsers read as long a request line as bucketfront's.
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
            (
                format!("nginx sendfile, ceiling (`{}`)", ceiling.1),
                ceiling.0,
                ceiling_pid,
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
                let r = tokio::task::spawn_blocking(move || load(&url, seconds))
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
                .zip(&runs[NGINX])
                .map(|(r, n)| format!("{:.2}", r.0 / n.0))
                .collect();
            let _ = writeln!(
                report,
                "| {name} | {label} | {:.0} | {:.2} | {:.1} | {} | {:.2} |",
                avg(i, |r| r.0),
                avg(i, |r| r.1),
                avg(i, |r| r.2),
                per_round.join(" / "),
                avg(i, |r| r.0) / avg(NGINX, |r| r.0)
            );
        }
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&files);
    remove_nginx_caches(dir.path());
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

/// The head of a hit on `url` (`curl`, the second GET: the first may fill the cache) as
/// `name: value` lines, without `date` and `content-length` (each floor writes those
/// itself). `curl -k`: the TLS table's certificate is self-signed.
pub(crate) fn hit_head(url: &str) -> String {
    let get = || {
        let out = Command::new("curl")
            .args(["-sk", "-D", "-", "-o", "/dev/null", url])
            .output()
            .expect("curl (apt-get install curl)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    get();
    let response = get();
    let mut lines = response.lines().map(str::trim_end);
    let status = lines.next().unwrap_or("");
    assert!(status.contains(" 200"), "{url}: {status}");
    let mut head = String::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        if name != "date" && name != "content-length" {
            let _ = writeln!(head, "{name}: {value}");
        }
    }
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
        FLOOR_BODIES
            .iter()
            .map(|(name, size)| {
                let body: Vec<u8> = (0..*size).map(|i| (i * 31 % 251) as u8).collect();
                (format!("{name}.png"), Bytes::from(body))
            })
            .collect(),
    );
    let tls = std::env::var(TLS_ENV).ok().map(|paths| {
        let (cert, key) = paths.split_once('\n').unwrap();
        bucketfront::tls_acceptor_for_files(Path::new(cert), Path::new(key)).unwrap()
    });
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
    let disk_root = || PathBuf::from(std::env::var(DISK_ENV).unwrap());
    let raw = match kind {
        "raw" => Some(Arc::new(RawFloor::new(&head, &bodies, false))),
        "sendfile" => Some(Arc::new(RawFloor::new(&head, &bodies, true))),
        _ => DiskSend::ALL
            .into_iter()
            .find(|how| how.kind() == kind)
            .map(|how| Arc::new(RawFloor::on_disk(&head, disk_root(), how))),
    };
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let hyper_floor = Arc::new(HyperFloor::new(&head, bodies.clone()));
        for next in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let worker = &workers[next % workers.len()];
            match (&tls, &raw) {
                (_, Some(raw)) => drop(worker.spawn(raw.clone().serve(stream))),
                (None, None) => drop(worker.spawn(hyper_floor.clone().serve(stream))),
                (Some(tls), None) => {
                    let (tls, floor) = (tls.clone(), hyper_floor.clone());
                    worker.spawn(async move {
                        if let Ok(stream) = tls.accept(stream).await {
                            floor.serve(stream).await;
                        }
                    });
                }
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
        let mut headers = HeaderMap::new();
        for (name, value) in head {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        HyperFloor {
            builder: bucketfront::http_builder(),
            headers,
            bodies,
        }
    }

    async fn serve<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            let file = req.uri().path().rsplit('/').next().unwrap_or("");
            let found = this
                .bodies
                .iter()
                .find(|(name, _)| name == file)
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
    answers: Answers,
}

/// What a bare-parser floor answers from.
enum Answers {
    /// Per file name: the whole head, formatted once (hyper formats its `date` once a
    /// second), and the body; for the sendfile floor, each body (in the same order) in a
    /// `memfd` of its own too.
    Table {
        responses: Vec<(String, Bytes, Bytes)>,
        files: Option<Vec<std::fs::File>>,
    },
    /// The disk floors: where the objects' files are, and the head up to its
    /// `content-length` (known once the file is open).
    Disk {
        root: PathBuf,
        head: String,
        how: DiskSend,
    },
}

/// How a disk floor answers, each after checking the body's CRC32C as the disk tier must.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum DiskSend {
    /// `pread` into a new buffer, check it, one `writev` (bucketfront's way).
    Read,
    /// Check it through a small buffer reused per connection, then `sendfile` the body
    /// from the file (nginx's send, with the check).
    Sendfile,
    /// Map the file (populated), check the body where it is mapped, one `writev` from
    /// the mapping: one copy, and no buffer of the server's own.
    Map,
    /// As `Read`, a disk tier block (`DISK_BLOCK`) at a time: `pread` it into a new
    /// buffer, checksum it, `writev` it; the way bucketfront streams an object of several
    /// blocks. (The floor's file has one checksum for the body, so the comparison comes
    /// after the last block; the work per byte is the same.)
    Blocks,
}

impl DiskSend {
    const ALL: [DiskSend; 4] = [
        DiskSend::Read,
        DiskSend::Sendfile,
        DiskSend::Map,
        DiskSend::Blocks,
    ];

    /// Its floor kind, as the floor's child process is told it.
    fn kind(self) -> &'static str {
        match self {
            DiskSend::Read => "disk-read",
            DiskSend::Sendfile => "disk-sendfile",
            DiskSend::Map => "disk-map",
            DiskSend::Blocks => "disk-blocks",
        }
    }
}

/// What a disk floor's file holds before the body: the body's CRC32C (little-endian),
/// then zeros to 4 KiB (bucketfront's header is one 4 KiB read too).
pub(crate) const DISK_HEADER: usize = 4096;

/// Writes `count` files of `size` bytes at `dir/{i}.png` in the disk floors' layout.
pub(crate) fn write_disk_floor_files(dir: &Path, count: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let mut header = vec![0u8; DISK_HEADER];
    header[..4].copy_from_slice(&crc32c(&body).to_le_bytes());
    for i in 0..count {
        std::fs::write(dir.join(format!("{i}.png")), [&header[..], &body].concat()).unwrap();
    }
}

/// The disk tier's checksum, from the crate it uses.
fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// A 200 head with `head`'s fields and today's `date`, up to where `content-length` goes.
fn head_text(head: &[(String, String)]) -> String {
    let mut text = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in head {
        let _ = write!(text, "{name}: {value}\r\n");
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let _ = write!(text, "date: {date}\r\n");
    text
}

/// `text` finished with `content-length: len` and the blank line.
fn with_length(text: &str, len: usize) -> String {
    format!("{text}content-length: {len}\r\n\r\n")
}

impl RawFloor {
    fn new(head: &[(String, String)], bodies: &[(String, Bytes)], sendfile: bool) -> RawFloor {
        let text = head_text(head);
        let responses = bodies
            .iter()
            .map(|(path, body)| {
                let head = Bytes::from(with_length(&text, body.len()));
                (path.clone(), head, body.clone())
            })
            .collect();
        let files = sendfile.then(|| {
            bodies
                .iter()
                .map(|(path, body)| {
                    let fd =
                        rustix::fs::memfd_create(path.as_str(), rustix::fs::MemfdFlags::CLOEXEC)
                            .unwrap();
                    let mut file = std::fs::File::from(fd);
                    std::io::Write::write_all(&mut file, body).unwrap();
                    file
                })
                .collect()
        });
        RawFloor {
            answers: Answers::Table { responses, files },
        }
    }

    /// A disk floor answering `<anything>/{dir}/{file}` from `root/{dir}/{file}`.
    fn on_disk(head: &[(String, String)], root: PathBuf, how: DiskSend) -> RawFloor {
        RawFloor {
            answers: Answers::Disk {
                root,
                head: head_text(head),
                how,
            },
        }
    }

    async fn serve(self: Arc<Self>, mut stream: TcpStream) {
        let mut buf = BytesMut::with_capacity(8192);
        let mut scratch = Vec::new();
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
                let sent = match &self.answers {
                    Answers::Table { responses, files } => {
                        let file = path.rsplit('/').next().unwrap_or("");
                        let found = responses.iter().position(|(name, _, _)| name == file);
                        match (found, files) {
                            (Some(i), Some(files)) => {
                                let (_, head, body) = &responses[i];
                                send_file(&stream, head, &files[i], 0, body.len()).await
                            }
                            (Some(i), None) => {
                                let (_, head, body) = &responses[i];
                                send(&mut stream, head, body).await
                            }
                            (None, _) => send(&mut stream, NOT_FOUND, &[]).await,
                        }
                    }
                    Answers::Disk { root, head, how } => {
                        let file = DiskFile {
                            root,
                            head,
                            how: *how,
                        };
                        file.answer(&mut stream, path, &mut scratch).await
                    }
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

/// A disk floor's settings, borrowed for one request.
struct DiskFile<'a> {
    root: &'a Path,
    head: &'a str,
    how: DiskSend,
}

impl DiskFile<'_> {
    /// Per request: open, `statx`, the 4 KiB header, the body checked, the response sent,
    /// close; blocking reads on the worker, as nginx's (without `aio threads`) are.
    async fn answer(
        &self,
        stream: &mut TcpStream,
        path: &str,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut segments = path.rsplit('/');
        let (file, dir) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
        let Ok(f) = std::fs::File::open(self.root.join(dir).join(file)) else {
            return send(stream, NOT_FOUND, &[]).await;
        };
        let len = (f.metadata()?.len() as usize).saturating_sub(DISK_HEADER);
        let mut header = [0u8; DISK_HEADER];
        f.read_exact_at(&mut header, 0)?;
        let want = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let head = with_length(self.head, len);
        match self.how {
            DiskSend::Read => {
                let body = read_new(&f, DISK_HEADER, len)?;
                if crc32c(&body) != want {
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                send(stream, head.as_bytes(), &body).await
            }
            DiskSend::Sendfile => {
                scratch.resize(64 << 10, 0);
                let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(scratch.len());
                    f.read_exact_at(&mut scratch[..n], (DISK_HEADER + at) as u64)?;
                    digest.update(&scratch[..n]);
                    at += n;
                }
                if digest.finalize() as u32 != want {
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                send_file(stream, head.as_bytes(), &f, DISK_HEADER, len).await
            }
            DiskSend::Blocks => {
                let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
                let (mut at, mut head) = (0, head.as_bytes());
                while at < len {
                    let n = (len - at).min(bucketfront::DISK_BLOCK as usize);
                    let block = read_new(&f, DISK_HEADER + at, n)?;
                    digest.update(&block);
                    send(stream, head, &block).await?;
                    (at, head) = (at + n, &[]);
                }
                if digest.finalize() as u32 != want {
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                Ok(())
            }
            DiskSend::Map => {
                let mapped = Mapping::of(&f, DISK_HEADER + len)?;
                let body = &mapped.bytes()[DISK_HEADER..];
                if crc32c(body) != want {
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                send(stream, head.as_bytes(), body).await
            }
        }
    }
}

/// `len` bytes of `file` from `at`, read into a new buffer that is not zeroed first (as
/// the disk tier reads).
fn read_new(file: &std::fs::File, at: usize, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::with_capacity(len);
    // SAFETY: `read_exact_at` writes every byte of the spare capacity before `set_len`
    // makes it readable; it is only written to until then.
    let spare = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr(), len) };
    file.read_exact_at(spare, at as u64)?;
    // SAFETY: the read above filled all `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// A read-only, populated mapping of a file's first bytes, unmapped when dropped.
struct Mapping {
    at: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone.
unsafe impl Send for Mapping {}

impl Mapping {
    fn of(file: &std::fs::File, len: usize) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private read-only mapping of an open file; nothing truncates
        // the floor's files while it runs.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        match std::ptr::NonNull::new(at.cast::<u8>()) {
            Some(at) if at.as_ptr().cast() != libc::MAP_FAILED => Ok(Mapping { at, len }),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes from `at` until `drop`.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `of` with this length, and no borrow outlives `self`.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";

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

/// `head` by `send` with `MSG_MORE` (so that it leaves with the body's first segment), then
/// `len` bytes of `file` from `from` by `sendfile`: the kernel attaches the file's pages to
/// the socket.
async fn send_file(
    stream: &TcpStream,
    head: &[u8],
    file: &std::fs::File,
    from: usize,
    len: usize,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (sock, fd) = (stream.as_raw_fd(), file.as_raw_fd());
    let mut h = 0;
    while h < head.len() {
        stream.writable().await?;
        let rest = &head[h..];
        match stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: `rest` is a live slice; `sock` is the stream's open socket.
            let n = unsafe { libc::send(sock, rest.as_ptr().cast(), rest.len(), libc::MSG_MORE) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(n) => h += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let mut offset = from as libc::off_t;
    let end = from + len;
    while (offset as usize) < end {
        stream.writable().await?;
        let want = end - offset as usize;
        match stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open; the kernel advances `offset`.
            let n = unsafe { libc::sendfile(sock, fd, &mut offset, want) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
