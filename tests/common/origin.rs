//! Origins that misbehave on purpose: a real TCP peer speaking just enough HTTP to
//! answer as a script says (cut bodies, stalls, raw heads, S3's and Azure's refusals).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Deterministic, non-repeating-looking bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761 + seed as u64) >> 7) as u8)
        .collect()
}

/// How a [`FakeOrigin`] answers one request.
#[derive(Clone)]
pub enum Behaviour {
    /// `200` with the whole body.
    Full(Bytes),
    /// `200` announcing `len` bytes, sending `cut` of them, then closing.
    Cut { body: Bytes, cut: usize },
    /// A status with an S3 XML error body.
    Status(u16),
    /// Accepts and never answers.
    Stall,
    /// Exactly this response head (status line and headers, without the blank line),
    /// then `body`: for answers no S3 gives.
    Raw { head: String, body: Bytes },
    /// As `Raw`, then the connection is closed (a body delimited by the close, or one
    /// cut short).
    Closing { head: String, body: Bytes },
    /// `200` with `body` once `gate` is notified (an origin as slow as the test wants).
    Gated {
        gate: Arc<tokio::sync::Notify>,
        body: Bytes,
    },
    /// Like S3 for a Requester Pays bucket: `body` for a request that says
    /// `x-amz-request-payer: requester`, 403 AccessDenied for one that does not.
    RequesterPays(Bytes),
    /// Like S3 for a bucket in `region`: requests signed for another region get 301
    /// PermanentRedirect (with `x-amz-bucket-region` when `hint`, else 400
    /// AuthorizationHeaderMalformed without it); HeadBucket always names the region.
    Region {
        region: &'static str,
        body: Bytes,
        hint: bool,
    },
}

/// A deliberately misbehaving S3 origin: a real TCP peer that speaks just enough HTTP.
/// Each request takes the next behaviour from the script (the last one repeats).
pub struct FakeOrigin {
    pub endpoint: String,
    pub requests: Arc<AtomicU64>,
    /// Every request head received, in order.
    pub heads: Arc<std::sync::Mutex<Vec<String>>>,
    /// Connections open right now (the proxy's pool keeps some after their requests).
    open: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl FakeOrigin {
    /// The listening address (of `endpoint`).
    pub fn addr(&self) -> SocketAddr {
        self.endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("endpoint is http://ip:port")
    }

    pub async fn start(script: Vec<Behaviour>) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let open = Arc::new(AtomicU64::new(0));
        let (count, token, seen, open_now) =
            (requests.clone(), stop.clone(), heads.clone(), open.clone());
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let mut sock = tokio::select! {
                    r = listener.accept() => r.unwrap().0,
                    () = token.cancelled() => return,
                };
                let (count, script, token, seen) =
                    (count.clone(), script.clone(), token.clone(), seen.clone());
                open_now.fetch_add(1, Ordering::SeqCst);
                let open_now = open_now.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve_fake(&mut sock, &count, &script, &seen) => {}
                        () = token.cancelled() => {}
                    }
                    // `serve_fake` returns when the peer closed (or the script closed).
                    open_now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FakeOrigin {
            endpoint,
            requests,
            heads,
            open,
            stop,
        }
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections open to this origin right now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_fake(
    sock: &mut tokio::net::TcpStream,
    count: &AtomicU64,
    script: &[Behaviour],
    seen: &std::sync::Mutex<Vec<String>>,
) {
    loop {
        // Read one request head (GET has no body).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match sock.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let n = count.fetch_add(1, Ordering::SeqCst) as usize;
        let behaviour = script[n.min(script.len() - 1)].clone();
        let head = String::from_utf8_lossy(&head).to_string();
        seen.lock().unwrap().push(head.clone());
        let ok = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len}\r\nETag: \"fake-etag\"\r\nLast-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\nx-amz-request-id: LEAKME\r\n\r\n"
            )
        };
        match behaviour {
            Behaviour::Full(body) => {
                let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
            Behaviour::Cut { body, cut } => {
                let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                let _ = sock.write_all(&body[..cut]).await;
                let _ = sock.flush().await;
                return;
            }
            Behaviour::Status(status) => {
                let xml = "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>secret upstream text</Message></Error>";
                let head = format!(
                    "HTTP/1.1 {status} Oops\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: LEAKME\r\n\r\n",
                    xml.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(xml.as_bytes()).await;
            }
            Behaviour::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Behaviour::Gated { gate, body } => {
                gate.notified().await;
                let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
            Behaviour::Raw { head, body } => {
                let _ = sock.write_all(format!("{head}\r\n\r\n").as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
            Behaviour::Closing { head, body } => {
                let _ = sock.write_all(format!("{head}\r\n\r\n").as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
                return;
            }
            Behaviour::RequesterPays(body) => {
                if head
                    .to_ascii_lowercase()
                    .contains("x-amz-request-payer: requester")
                {
                    let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                } else {
                    let xml =
                        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                    let head = format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                }
            }
            Behaviour::Region { region, body, hint } => {
                let signed_right = head.contains(&format!("/{region}/s3/aws4_request"));
                let response = if head.starts_with("HEAD ") {
                    format!(
                        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {region}\r\nContent-Length: 0\r\n\r\n"
                    )
                } else if signed_right {
                    let _ = sock.write_all(ok(body.len()).as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    continue;
                } else if hint {
                    let xml = "<Error><Code>PermanentRedirect</Code><Message>wrong endpoint</Message></Error>";
                    format!(
                        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {region}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    )
                } else {
                    let xml = "<Error><Code>AuthorizationHeaderMalformed</Code><Message>wrong region</Message></Error>";
                    format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    )
                };
                let _ = sock.write_all(response.as_bytes()).await;
            }
        }
    }
}
