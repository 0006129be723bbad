//! The embedded S3-compatible store (s3s + s3s-fs, SigV4 verified) for the demo, the
//! tests and the benchmarks. It runs in-process on loopback, keeps its data in a
//! temporary directory, and is seeded from a folder of sample images through the S3 API
//! itself, so every object carries a real content type and ETag.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{Limits, Listener};

/// An object [`Store::seed`] uploaded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seeded {
    pub bucket: String,
    pub key: String,
    pub size: u64,
}

/// Requests the store has answered, by method: tests count upstream GETs with it.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub gets: AtomicU64,
    pub heads: AtomicU64,
    pub other: AtomicU64,
    /// Connections open right now (tests check that the proxy closes what it abandons).
    pub open: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot prepare the store's data directory: {0}")]
    Dir(#[from] std::io::Error),
    #[error("cannot start the embedded store: {0}")]
    Start(String),
    #[error("cannot seed {path}: {reason}")]
    Seed { path: String, reason: String },
}

pub struct Store {
    pub endpoint: String,
    pub credentials: Credentials,
    pub stats: Arc<StoreStats>,
    /// Removed when the store is dropped.
    _data: tempfile::TempDir,
}

impl Store {
    /// Serves an empty store on `listener` until `shutdown`.
    pub fn start(
        listener: TcpListener,
        access_key: &str,
        secret_key: &str,
        shutdown: CancellationToken,
    ) -> Result<Store, StoreError> {
        let data = tempfile::Builder::new()
            .prefix("bucketfront-store-")
            .tempdir()?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(StoreStats::default());
        let service = service(data.path(), Some((access_key, secret_key)))?;
        tokio::spawn(accept_loop(listener, service, stats.clone(), shutdown));
        Ok(Store {
            endpoint: format!("http://{addr}"),
            credentials: Credentials::new(access_key, secret_key, None, None, "embedded-store"),
            stats,
            _data: data,
        })
    }

    /// Serves the same objects on `listener` without authentication, for benchmark peers
    /// (nginx, Varnish) that cannot sign requests. The proxy never uses it. Its requests
    /// are counted in the same [`StoreStats`].
    pub fn start_anonymous_mirror(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<String, StoreError> {
        let addr = listener.local_addr()?;
        let service = service(self._data.path(), None)?;
        tokio::spawn(accept_loop(listener, service, self.stats.clone(), shutdown));
        Ok(format!("http://{addr}"))
    }

    /// Where this store listens and the keys it accepts, for the origin clients.
    pub fn access(&self) -> crate::origin::StoreAccess {
        crate::origin::StoreAccess {
            endpoint: self.endpoint.clone(),
            credentials: self.credentials.clone(),
        }
    }

    /// An S3 client for this store (path style, its own keys).
    pub fn client(&self) -> Client {
        let conf = crate::s3::compatible(aws_sdk_s3::config::Builder::new())
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(self.credentials.clone())
            .build();
        Client::from_conf(conf)
    }

    /// Creates one bucket per sub-folder of `root` and uploads every file below it.
    /// Returns the objects, sorted by bucket and key.
    pub async fn seed(&self, root: &Path) -> Result<Vec<Seeded>, StoreError> {
        let seed_err = |path: &Path, reason: String| StoreError::Seed {
            path: path.display().to_string(),
            reason,
        };
        let client = self.client();
        let mut objects = Vec::new();
        let mut buckets = std::fs::read_dir(root).map_err(|e| seed_err(root, e.to_string()))?;
        while let Some(Ok(entry)) = buckets.next() {
            let bucket_dir = entry.path();
            if !bucket_dir.is_dir() {
                continue;
            }
            let bucket = entry.file_name().to_string_lossy().into_owned();
            client
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .map_err(|e| seed_err(&bucket_dir, crate::origin::credentials::error_chain(&e)))?;
            for (path, key) in
                files_below(&bucket_dir).map_err(|e| seed_err(&bucket_dir, e.to_string()))?
            {
                let body = ByteStream::from_path(&path)
                    .await
                    .map_err(|e| seed_err(&path, e.to_string()))?;
                let size = std::fs::metadata(&path)?.len();
                self.put(&bucket, &key, body, content_type_for(&key))
                    .await
                    .map_err(|e| seed_err(&path, e))?;
                objects.push(Seeded {
                    bucket: bucket.clone(),
                    key,
                    size,
                });
            }
        }
        objects.sort();
        Ok(objects)
    }

    /// Uploads one object.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        content_type: &str,
    ) -> Result<(), String> {
        self.client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| crate::origin::credentials::error_chain(&e))
    }
}

fn service(root: &Path, keys: Option<(&str, &str)>) -> Result<s3s::service::S3Service, StoreError> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| StoreError::Start(format!("{e:?}")))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    if let Some((access, secret)) = keys {
        builder.set_auth(s3s::auth::SimpleAuth::from_single(access, secret));
    }
    Ok(builder.build())
}

/// Serves the store through the same [`Listener`] as the proxy (permits, deadlines,
/// drain), counting requests by method for the tests.
async fn accept_loop(
    listener: TcpListener,
    service: s3s::service::S3Service,
    stats: Arc<StoreStats>,
    shutdown: CancellationToken,
) {
    let server = crate::config::Server {
        drain_timeout: crate::config::Dur::secs(1),
        ..Default::default()
    };
    let limits = Limits::from_config(&server).with_max_connections(4096);
    let metrics = crate::metrics::ConnMetrics::counting(stats.open.clone());
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let counter = match *req.method() {
            hyper::Method::GET => &stats.gets,
            hyper::Method::HEAD => &stats.heads,
            _ => &stats.other,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let service = service.clone();
        async move {
            let resp = hyper::service::Service::call(&service, req).await;
            resp.unwrap_or_else(|e| {
                tracing::debug!(error = ?e, "embedded store error");
                let mut r = hyper::Response::new(s3s::Body::empty());
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            })
            .map(Batched::new)
        }
    };
    Listener::new(limits)
        .metrics(metrics)
        .serve(listener, shutdown, handler)
        .await;
}

/// The most bytes [`Batched`] joins into one frame.
const BATCH: usize = 64 * 1024;

/// A response body whose data frames are joined up to [`BATCH`] bytes before hyper sees
/// them. s3s-fs reads an object's file 4 KiB at a time and hands over each read as a frame
/// of its own, so without this every 4 KiB became its own `writev`, and woke the reader
/// (the proxy, a benchmark client) once: a streamed GiB was 160,000 wake-ups, read calls
/// and writes in the proxy (BENCHMARKS.md, "where the 1 GiB stream loses"). Real S3 sends
/// 16 KiB TLS records in bursts; this brings the embedded origin closer to that.
///
/// Waiting for more while holding less than a batch is safe here because every body the
/// store makes is finite and produced as fast as the disk allows (files, XML documents).
/// Trailers, and an error, are passed on after the bytes before them. At most one batch
/// is held per response.
struct Batched<B> {
    inner: B,
    buf: bytes::BytesMut,
    /// A non-data frame (trailers) met while bytes were held: sent after them.
    held: Option<http_body::Frame<bytes::Bytes>>,
    /// The inner body has ended.
    done: bool,
}

impl<B> Batched<B> {
    fn new(inner: B) -> Batched<B> {
        Batched {
            inner,
            buf: bytes::BytesMut::new(),
            held: None,
            done: false,
        }
    }

    fn flush(&mut self) -> http_body::Frame<bytes::Bytes> {
        http_body::Frame::data(self.buf.split().freeze())
    }
}

impl<B> http_body::Body for Batched<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if !this.buf.is_empty() && (this.done || this.held.is_some()) {
                return Poll::Ready(Some(Ok(this.flush())));
            }
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => {
                    // The bytes before the error are dropped with the response, which
                    // hyper aborts: a client never sees a cut body as complete.
                    this.done = true;
                    this.buf.clear();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // A batch already, or the whole rest of the body (an XML answer): no copy.
                    Ok(data)
                        if this.buf.is_empty()
                            && (data.len() >= BATCH || this.inner.is_end_stream()) =>
                    {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                    }
                    Ok(data) => {
                        if this.buf.is_empty() {
                            // No more room than the rest of the body can fill.
                            let rest = this.inner.size_hint().upper().unwrap_or(BATCH as u64);
                            let room = (data.len() as u64).saturating_add(rest);
                            this.buf.reserve(room.min(BATCH as u64) as usize);
                        }
                        this.buf.extend_from_slice(&data);
                        if this.buf.len() >= BATCH {
                            return Poll::Ready(Some(Ok(this.flush())));
                        }
                    }
                    Err(frame) => this.held = Some(frame),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buf.is_empty() && self.held.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.done {
            return http_body::SizeHint::with_exact(self.buf.len() as u64);
        }
        let inner = self.inner.size_hint();
        let held = self.buf.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

/// Files under `dir`, recursively, with their keys (paths relative to `dir`, `/`-joined).
fn files_below(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path, key));
            }
        }
    }
    Ok(out)
}

/// The content type for a file name, by extension (enough for sample images).
pub fn content_type_for(key: &str) -> &'static str {
    let ext = key
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "html" => "text/html",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Random keys for a store whose config names none.
pub fn generate_keys() -> (String, String) {
    let alnum = |n: usize| (0..n).map(|_| fastrand::alphanumeric()).collect::<String>();
    (format!("BF{}", alnum(18).to_ascii_uppercase()), alnum(40))
}

#[cfg(test)]
mod tests {
    use super::{BATCH, Batched};
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};

    type Item = Result<Frame<Bytes>, std::io::Error>;

    /// Each frame of `body`: its data length, or `None` for trailers.
    async fn frames(
        mut body: impl http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin,
    ) -> (Vec<Option<usize>>, Option<std::io::Error>) {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => out.push(f.into_data().ok().map(|d| d.len())),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    fn chunks(n: usize, len: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; len]))))
            .collect()
    }

    #[tokio::test]
    async fn small_frames_are_joined_in_order_and_trailers_follow_them() {
        let mut items = chunks(40, 4096);
        items.push(Ok(Frame::trailers(http::HeaderMap::new())));
        // Each frame comes after a pending poll, as a file read through the blocking pool does.
        let inner = futures_util::stream::iter(items).then(|item| async {
            tokio::task::yield_now().await;
            item
        });
        let mut body = Batched::new(StreamBody::new(Box::pin(inner)));
        let mut bytes = Vec::new();
        let mut shape = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(d) => {
                    shape.push(Some(d.len()));
                    bytes.extend_from_slice(&d);
                }
                Err(_) => shape.push(None),
            }
        }
        assert_eq!(
            shape,
            [Some(BATCH), Some(BATCH), Some(40 * 4096 - 2 * BATCH), None]
        );
        let expected: Vec<u8> = (0..40u8).flat_map(|i| vec![i; 4096]).collect();
        assert_eq!(bytes, expected);
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn trailers_after_a_full_batch_are_kept() {
        let mut items = chunks(16, 4096);
        items.push(Ok(Frame::trailers(http::HeaderMap::new())));
        let body = Batched::new(StreamBody::new(futures_util::stream::iter(items)));
        let (shape, error) = frames(body).await;
        assert_eq!(shape, [Some(BATCH), None]);
        assert!(error.is_none());
    }

    #[tokio::test]
    async fn large_frames_pass_whole_and_an_error_is_not_hidden() {
        let mut items = chunks(1, 3 * BATCH);
        items.extend(chunks(2, 100));
        items.push(Err(std::io::Error::other("disk")));
        let body = Batched::new(StreamBody::new(futures_util::stream::iter(items)));
        let (shape, error) = frames(body).await;
        assert_eq!(shape, [Some(3 * BATCH)]);
        assert_eq!(error.map(|e| e.to_string()).as_deref(), Some("disk"));
    }

    #[tokio::test]
    async fn the_size_hint_counts_held_bytes() {
        use futures_util::FutureExt;
        let inner = futures_util::stream::iter(chunks(1, 3)).chain(futures_util::stream::pending());
        let mut body = Batched::new(StreamBody::new(inner));
        // It holds the 3 bytes, waiting for more (a batch or the end).
        assert!(body.frame().now_or_never().is_none());
        assert_eq!(http_body::Body::size_hint(&body).lower(), 3);
        assert!(!http_body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn the_size_hint_of_an_exact_body_stays_exact() {
        let body = Batched::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
    }

    #[tokio::test]
    async fn a_body_in_one_frame_is_handed_on_as_it_is() {
        let whole = Bytes::from(vec![7u8; 1000]);
        let mut body = Batched::new(http_body_util::Full::new(whole.clone()));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        // The same memory, not a copy.
        assert_eq!(frame.as_ptr(), whole.as_ptr());
        assert_eq!(frame.len(), 1000);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_short_body_ends_with_its_bytes() {
        let body = Batched::new(StreamBody::new(futures_util::stream::iter(chunks(2, 3))));
        let (shape, error) = frames(body).await;
        assert_eq!(shape, [Some(6)]);
        assert!(error.is_none());
    }
}
