//! One client connection, from accept to close: TLS, HTTP/1.1 or h2 (sniffed, or by
//! ALPN), and the deadlines of [`crate::activity`] checked on a tick. Dropping the
//! connection future is how a connection is aborted: hyper's buffers, the response
//! bodies and the fill readers they hold are freed with it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::admission::{Admitted, Open};
use crate::activity::{Activity, ConnInfo, Deadlines, EndReason, Verdict, verdict};
use crate::body::FRAME;
use crate::metrics::ConnMetrics;
use crate::sendfile::{self, Spans};

/// hyper's HTTP/1 read buffer, and so the largest request head (a larger one gets 431).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Streams one h2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 64;
/// Header block an h2 client may send for one request.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// What every connection of one listener shares.
pub(super) struct Shared {
    pub deadlines: Deadlines,
    tls: Option<TlsAcceptor>,
    pub metrics: ConnMetrics,
    shutdown: CancellationToken,
    /// Cancelled when the drain time is over: every connection still open is dropped.
    pub hard_stop: CancellationToken,
    builder: auto::Builder<TokioExecutor>,
}

impl Shared {
    pub(super) fn new(
        deadlines: Deadlines,
        tls: Option<TlsAcceptor>,
        metrics: ConnMetrics,
        shutdown: CancellationToken,
    ) -> Shared {
        Shared {
            deadlines,
            tls,
            metrics,
            shutdown,
            hard_stop: CancellationToken::new(),
            builder: http_builder(),
        }
    }
}

/// hyper's server connection builder with the public listener's HTTP/1 and HTTP/2
/// settings (also what the load bench's hyper floor serves with).
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer is off: it would also run while a keep-alive connection is
    // idle. activity.rs times the first head and later heads itself.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(64)
        .max_send_buf_size(FRAME)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

pub(super) struct Connection {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub overflow: bool,
    pub activity: Arc<Activity>,
    /// Its registration with the listener's admission (none for an overflow one).
    pub admitted: Option<Admitted>,
}

impl Connection {
    pub(super) async fn run<F, Fut, B>(self, stream: TcpStream, handler: F)
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = self.shared.clone();
        let peer = self.peer;
        // Counted open until this function returns, however it returns.
        let _open = Open::inc(&shared.metrics.connections);
        let _ = stream.set_nodelay(true);
        // The socket stays open as long as this function runs: the tick reads its
        // acknowledged bytes through this.
        let fd = stream.as_raw_fd();
        let activity = self.activity.clone();
        if self.overflow {
            activity.mark_overflow();
        }
        let evicted = self
            .admitted
            .as_ref()
            .map(|a| a.evicted.clone())
            .unwrap_or_default();
        let outcome = match shared.tls.clone() {
            None => {
                let mut io = Watched::new(stream, activity.clone());
                // Plain HTTP/1 sends disk hits from their files.
                io.spans = Some(Spans::default());
                self.drive(io, fd, activity, &evicted, handler).await
            }
            Some(acceptor) => {
                let deadline = shared.deadlines.header_read_timeout;
                let handshake = tokio::select! {
                    r = tokio::time::timeout(deadline, acceptor.accept(stream)) => r,
                    () = evicted.cancelled() => return shared.metrics.ended(EndReason::Evicted),
                    () = shared.hard_stop.cancelled() => return,
                };
                match handshake {
                    Ok(Ok(tls)) => {
                        let io = Watched::new(tls, activity.clone());
                        self.drive(io, fd, activity, &evicted, handler).await
                    }
                    Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                    Err(_) => {
                        shared.metrics.ended(EndReason::FirstRequestTimeout);
                        Err("TLS handshake timed out".into())
                    }
                }
            }
        };
        if let Err(e) = outcome {
            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
        }
    }

    /// Serves HTTP on `io` until the client closes, a deadline ends the connection, or
    /// the listener stops. HTTP/1 requests carry `io`'s spans, when it has them, for
    /// bodies sent from files.
    async fn drive<I, F, Fut, B>(
        self,
        io: Watched<I>,
        fd: RawFd,
        activity: Arc<Activity>,
        evicted: &CancellationToken,
        handler: F,
    ) -> Result<(), String>
    where
        I: AsyncRead + AsyncWrite + SendsFiles + Unpin + Send + 'static,
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = self.shared.clone();
        let info = ConnInfo {
            peer: self.peer,
            overflow: self.overflow,
            activity: activity.clone(),
        };
        let admitted = Arc::new(self.admitted);
        let spans = io.spans.clone();
        let service_activity = activity.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            if service_activity.request_started()
                && let Some(admitted) = admitted.as_ref()
            {
                admitted.started();
            }
            let guard = RequestGuard(service_activity.clone());
            let overflow = info.overflow;
            req.extensions_mut().insert(info.clone());
            if let Some(spans) = &spans
                && req.version() <= http::Version::HTTP_11
            {
                req.extensions_mut().insert(spans.clone());
            }
            // Boxed: hyper spawns each h2 stream's future as a task and moves it several
            // times on the way (about ten copies of 6.6 KiB per request before this, 5%
            // of a 4 KiB hit's samples over TLS + h2); a box moves as a pointer.
            let response = Box::pin(handler(req));
            async move {
                let mut response = response.await;
                if overflow {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response.map(|body| Tracked { body, guard }))
            }
        });
        let conn = shared
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let mut conn = std::pin::pin!(conn);
        let d = shared.deadlines;
        let mut tick = tokio::time::interval(d.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        let mut acked = 0;
        loop {
            let reason = tokio::select! {
                r = conn.as_mut() => {
                    return r.map_err(|e| {
                        if is_protocol_error(&*e) {
                            shared.metrics.ended(EndReason::ProtocolError);
                        }
                        e.to_string()
                    });
                }
                _ = tick.tick() => {
                    if let Some(now_acked) = bytes_acked(fd)
                        && now_acked > acked
                    {
                        acked = now_acked;
                        activity.client_took_bytes();
                    }
                    let now = Instant::now();
                    match verdict(&activity.snapshot(now), &d) {
                        Verdict::Keep => continue,
                        Verdict::Close(reason) => {
                            if !closing {
                                closing = true;
                                activity.closing(now);
                                // Overflow connections are counted when admitted.
                                if reason != EndReason::Overflow {
                                    shared.metrics.ended(reason);
                                }
                                conn.as_mut().graceful_shutdown();
                            }
                            continue;
                        }
                        Verdict::Abort(reason) => reason,
                    }
                }
                () = shared.shutdown.cancelled(), if !closing => {
                    closing = true;
                    activity.closing(Instant::now());
                    conn.as_mut().graceful_shutdown();
                    continue;
                }
                () = evicted.cancelled() => EndReason::Evicted,
                () = shared.hard_stop.cancelled() => {
                    activity.cut(EndReason::DrainTimeout);
                    return Err("drain timeout".into());
                }
            };
            // Cut now: the responses learn why, an h2 client gets GOAWAY if the socket
            // takes it within a moment, then everything is dropped.
            activity.cut(reason);
            shared.metrics.ended(reason);
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(ABORT_GRACE, conn.as_mut()).await;
            return Err(format!("closed: {}", reason.as_str()));
        }
    }
}

/// How long a connection being cut may take to send its GOAWAY (h2) before it is dropped.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Whether a connection ended because the client broke the h2 protocol (the h2 library
/// answered a flood with GOAWAY): counted, not logged line by line, since an attacker
/// chooses how many there are.
fn is_protocol_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_go_away() || h2.is_reset();
        }
        cause = err.source();
    }
    false
}

/// How many bytes of this connection the client has acknowledged (`TCP_INFO`'s
/// `tcpi_bytes_acked`, Linux 4.2+); `None` where the kernel does not say.
fn bytes_acked(fd: RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is this connection's open TCP socket (the caller holds the stream),
    // and `info`/`len` are a tcp_info and its size, as getsockopt(2) asks.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (r == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
}

/// Ends its request in the connection's [`Activity`] when the response is done with
/// (sent whole, failed, or dropped because the client went away).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that reports each frame as progress of its connection.
struct Tracked<B> {
    body: B,
    guard: RequestGuard,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.guard.0.body_progress();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What one connection may read in one turn on its worker before it yields: a client
/// that keeps the socket full (an h2 rapid-reset flood) would otherwise have every frame
/// it sent processed before the other connections of the worker get a turn.
const READ_TURN: usize = 32 << 10;

/// The connection's byte stream, reporting reads (request heads) and writes that wait
/// on the client (send_timeout) to its [`Activity`], and reading at most [`READ_TURN`]
/// per turn.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
    first_read: bool,
    /// Bytes read since the connection last gave its turn up.
    this_turn: usize,
    /// The file parts that bodies' stand-ins are sent as (plain TCP only).
    spans: Option<Spans>,
}

impl<I> Watched<I> {
    fn new(inner: I, activity: Arc<Activity>) -> Watched<I> {
        Watched {
            inner,
            activity,
            first_read: true,
            this_turn: 0,
            spans: None,
        }
    }

    fn wrote<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.activity.write_blocked(polled.is_pending());
        polled
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.this_turn >= READ_TURN {
            // Give the worker to the others; come back at once.
            this.this_turn = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if matches!(polled, Poll::Ready(Ok(()))) && !new.is_empty() {
            this.this_turn += new.len();
            let first = std::mem::take(&mut this.first_read).then_some(new);
            this.activity.bytes_read(first);
        }
        if polled.is_pending() {
            // The socket is drained: the turn ends here anyway.
            this.this_turn = 0;
        }
        polled
    }
}

impl<I: AsyncWrite + SendsFiles + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.spans.is_some() {
            return self.poll_write_vectored(cx, &[io::IoSlice::new(buf)]);
        }
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let stand_in = match &this.spans {
            Some(spans) => bufs
                .iter()
                .position(|b| sendfile::is_stand_in(b))
                .map(|i| (spans, i)),
            None => None,
        };
        let polled = match stand_in {
            Some((spans, 0)) => match spans.resolve(&bufs[0]) {
                Ok((file, at)) => {
                    let polled = this.inner.poll_send_file(cx, &file, at, bufs[0].len());
                    if let Poll::Ready(Ok(n)) = polled {
                        spans.sent(&bufs[0], n);
                    }
                    polled
                }
                Err(e) => Poll::Ready(Err(e)),
            },
            // What comes before a file part (the head) leaves with its first segment.
            Some((_, i)) => this.inner.poll_write_more(cx, &bufs[..i]),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        };
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection's byte stream that can also send part of a file without copying it:
/// a plain TCP socket. (A TLS stream cannot, and keeps the defaults: its connections
/// have no [`Spans`], so nothing asks it to.)
trait SendsFiles {
    /// Sends up to `len` bytes of `file` from `at`; how many went.
    fn poll_send_file(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &std::fs::File,
        _at: u64,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Writes `bufs` telling the kernel more follows at once (`MSG_MORE`), so that a
    /// response's head and the start of its file part leave in one segment.
    fn poll_write_more(
        &mut self,
        _cx: &mut Context<'_>,
        _bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl SendsFiles for TcpStream {
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        at: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        poll_socket(self, cx, |sock| {
            let mut offset = at;
            // A file cut short since its check sends 0 bytes: hyper then fails the
            // response (a write of zero), as it does for any body that stops short.
            rustix::fs::sendfile(sock, file, Some(&mut offset), len).map_err(io::Error::from)
        })
    }

    fn poll_write_more(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_socket(self, cx, |sock| {
            use std::os::fd::AsRawFd;
            // SAFETY: a msghdr of zeroes is valid (no name, no control data); its iovec
            // array is `bufs`, which `IoSlice` lays out as `iovec`s, alive for the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = bufs.as_ptr().cast_mut().cast();
            msg.msg_iovlen = bufs.len();
            // SAFETY: `sock` is this stream's open socket and `msg` is valid (above).
            let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_MORE) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        })
    }
}

/// A write on `stream`'s non-blocking socket, tried again whenever tokio says it may
/// take more.
fn poll_socket(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(std::os::fd::BorrowedFd<'_>) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    use std::os::fd::AsFd;
    loop {
        std::task::ready!(stream.poll_write_ready(cx))?;
        match stream.try_io(Interest::WRITABLE, || write(stream.as_fd())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

impl<T> SendsFiles for tokio_rustls::server::TlsStream<T> {}
