//! A load generator that takes bodies off the socket without copying them
//! (`BENCH_CLIENT=sink`), for the sizes where `wrk` is the bottleneck.
//!
//! `wrk` reads every body into its memory, 8 KiB per `read`: over loopback that copy (and
//! 128 reads per MiB) costs the load generator's core more than a server spends sending,
//! so at 1 MiB and 16 MiB its core is full while the servers' is not (BENCHMARKS.md,
//! "Every target on the AMD machine"), and the table measures `wrk`. This one speaks
//! HTTP/1.1 as `wrk` does (keep-alive, one request in flight per connection, the time
//! from writing the request to the body's last byte), reads each response's head into a
//! small buffer, and drops the rest of the body with `recv(MSG_TRUNC)`, which TCP
//! discards in the kernel without copying it out. What is left on its core is the
//! kernel's receive path, which every server's bytes pay alike.
//!
//! It runs in a child of the bench binary (so that `taskset` can place it like `wrk`),
//! started with [`SINK_ENV`] set, and prints one line that [`sink`] reads back.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::harness::{CONNECTIONS, Run, load_command, measured, threads_per_role};

/// Set in a child of the bench binary: it then runs [`drive`] with this value.
pub(crate) const SINK_ENV: &str = "BUCKETFRONT_SINK";

/// Whether `BENCH_CLIENT=sink` chose this load generator over `wrk`.
pub(crate) fn chosen() -> bool {
    std::env::var_os("BENCH_CLIENT").is_some_and(|v| v == "sink")
}

/// A run of `seconds` against `url` from the sink client, on the load generator's CPU.
pub(crate) fn sink(url: &str, seconds: u64) -> Run {
    let mut cmd = load_command(std::env::current_exe().expect("the bench binary"));
    cmd.env(
        SINK_ENV,
        format!("{seconds} {CONNECTIONS} {} {url}", threads_per_role()),
    );
    let (out, mut run) = measured(|| cmd.output().expect("the sink client"));
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    match f[..] {
        [rps, mb_s, p50, p99, max, errors] => {
            (run.rps, run.mb_s, run.p50_ms, run.p99_ms, run.max_ms) = (rps, mb_s, p50, p99, max);
            if errors > 0.0 {
                eprintln!("the sink client saw {errors} errors for {url}");
            }
        }
        _ => eprintln!(
            "the sink client failed for {url}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    run
}

/// What one thread of the client counted.
#[derive(Default)]
struct Tally {
    /// Microseconds from each request's first byte written to its body's last byte read.
    latencies_us: Vec<u32>,
    bytes: u64,
    errors: u64,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}

/// The child's work: `spec` is "seconds connections threads url" (plain `http://`, a
/// literal address). Prints "req/s MB/s p50_ms p99_ms max_ms errors".
pub(crate) fn drive(spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [seconds, connections, threads, url] = parts[..] else {
        panic!("{SINK_ENV}: want \"seconds connections threads url\", got {spec:?}");
    };
    let (seconds, connections, threads): (u64, usize, usize) = (
        seconds.parse().expect("seconds"),
        connections.parse().expect("connections"),
        threads.parse::<usize>().expect("threads").max(1),
    );
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request: Arc<[u8]> = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n")
        .into_bytes()
        .into();
    let addr: Arc<str> = addr.into();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let share = connections / threads + usize::from(t < connections % threads);
            let (addr, request) = (addr.clone(), request.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(thread_share(addr, request, share, deadline))
            })
        })
        .collect();
    let mut all = Tally::default();
    for w in workers {
        all.absorb(w.join().expect("a sink thread"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let v = &all.latencies_us;
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len().max(1)) - 1;
        v.get(i).map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    };
    println!(
        "{:.1} {:.2} {:.3} {:.3} {:.3} {}",
        all.latencies_us.len() as f64 / elapsed,
        all.bytes as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        all.errors
    );
}

/// `connections` connections on this thread until `deadline`; a connection that fails is
/// counted and opened again.
async fn thread_share(
    addr: Arc<str>,
    request: Arc<[u8]>,
    connections: usize,
    deadline: Instant,
) -> Tally {
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, request) = (addr.clone(), request.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    if connection(&addr, &request, deadline, &mut tally)
                        .await
                        .is_err()
                    {
                        tally.errors += 1;
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        all.absorb(t.await.expect("a connection task"));
    }
    all
}

/// One keep-alive connection: requests one after another until `deadline`, or until the
/// server says it closes the connection.
async fn connection(
    addr: &str,
    request: &[u8],
    deadline: Instant,
    tally: &mut Tally,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // The head's buffer; the body's bytes past it are never copied, so the discard
    // buffer is only ever an address range the kernel is told it may write (it does not).
    let mut head = vec![0u8; 8192];
    let mut discard = vec![0u8; 1 << 20];
    let broken = |what: &str| std::io::Error::other(what.to_string());
    while Instant::now() < deadline {
        let start = Instant::now();
        stream.write_all(request).await?;
        let mut filled = 0;
        let (head_len, body_len, ok, last) = loop {
            if filled == head.len() {
                return Err(broken("a response head over 8 KiB"));
            }
            let n = stream.read(&mut head[filled..]).await?;
            if n == 0 {
                return Err(broken("closed before a response head"));
            }
            filled += n;
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = response
                .parse(&head[..filled])
                .map_err(|e| broken(&e.to_string()))?
            {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<u64>().ok())
                    .ok_or_else(|| broken("a response without Content-Length"))?;
                // A server that ends keep-alive says so (nginx after
                // `keepalive_requests`): the next request goes on a new connection.
                let last = response.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
                break (len, length, response.code == Some(200), last);
            }
        };
        let mut left = body_len.saturating_sub((filled - head_len) as u64);
        while left > 0 {
            stream.readable().await?;
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(discard.len());
            let got = stream.try_io(Interest::READABLE, || {
                // SAFETY: `discard` is valid for `want` bytes; with MSG_TRUNC, TCP drops
                // them without writing there.
                let n = unsafe {
                    libc::recv(
                        stream.as_raw_fd(),
                        discard.as_mut_ptr().cast(),
                        want,
                        libc::MSG_TRUNC,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match got {
                Ok(0) => return Err(broken("closed in a body")),
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        tally.bytes += (head_len as u64) + body_len;
        if ok {
            let us = start.elapsed().as_micros();
            tally
                .latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        } else {
            tally.errors += 1;
        }
        if last {
            break;
        }
    }
    Ok(())
}
