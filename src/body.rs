//! The response body type: a whole buffer (the hit path, no allocation per request) or a
//! stream (a fill in progress, or an origin body passed through). A stream that fails
//! makes hyper abort the response, so a broken transfer never looks complete.
//!
//! A whole buffer is handed out in frames of at most [`WHOLE_FRAME`] bytes, views of
//! memory the cache holds anyway: hyper's HTTP/1 connection writes what it has queued
//! before it asks for the next frame, so a large frame is a large `writev` (and a
//! 64 KiB one would be one `writev` per 64 KiB: hyper's queue is bounded by the same
//! 64 KiB that bounds request heads). hyper asks for the next frame only when the
//! client has taken the previous one (h1 socket space, h2 flow-control window); the
//! listener's `send_timeout` counts the bytes the client takes, not frames.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;

/// The size of the pieces a fill publishes to its readers, and of h2's send buffer.
pub(crate) const FRAME: usize = 64 * 1024;

/// The largest frame handed to hyper at once from a whole buffer: the largest block the
/// cache stores (`cache::pieces`).
pub(crate) const WHOLE_FRAME: usize = 1 << 20;

pub(crate) type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

pub struct ProxyBody {
    inner: Inner,
    /// Held until the body is finished or dropped, so that "in flight" covers streaming.
    in_flight: Option<InFlight>,
    /// Bytes handed to the connection so far.
    sent: u64,
    /// Told once how the body ended (the access log line).
    on_end: Option<OnEnd>,
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was handed to the connection.
    Complete,
    /// Its source failed (an origin body broke off): the transfer was cut.
    Failed,
    /// Dropped before its end: the client went away, or the server cut the connection.
    Dropped,
}

/// What is told how a body ended, with the bytes it handed to the connection.
pub(crate) type OnEnd = Box<dyn FnOnce(u64, BodyEnd) + Send>;

enum Inner {
    Full(Option<Bytes>),
    /// Several buffers, sent in order (an object held as pieces).
    Pieces(std::collections::VecDeque<Bytes>),
    Stream {
        stream: BoxStream,
        /// `None`: a body of unknown length (sent chunked), whole when the stream ends.
        remaining: Option<u64>,
    },
}

/// Decrements the in-flight gauge when the response body is done with.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn start(gauge: &Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A small, whole answer of the admin listener or the demo page: `status`, its content
/// type and body.
pub(crate) fn small_response(
    status: http::StatusCode,
    content_type: &'static str,
    body: String,
) -> http::Response<ProxyBody> {
    let mut r = http::Response::new(ProxyBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

impl ProxyBody {
    fn new(inner: Inner) -> ProxyBody {
        ProxyBody {
            inner,
            in_flight: None,
            sent: 0,
            on_end: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::new(Inner::Full(None))
    }

    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::new(Inner::Full((!b.is_empty()).then_some(b)))
    }

    /// The buffers in order, as one body.
    pub fn pieces(pieces: Vec<Bytes>) -> ProxyBody {
        match <[Bytes; 1]>::try_from(pieces) {
            Ok([one]) => ProxyBody::full(one),
            Err(many) => ProxyBody::new(Inner::Pieces(
                many.into_iter().filter(|b| !b.is_empty()).collect(),
            )),
        }
    }

    /// A body of `len` bytes (`None`: unknown until the stream ends), as `stream` yields
    /// them; a stream that ends short of `len` is an error.
    pub fn stream(
        stream: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
        len: Option<u64>,
    ) -> ProxyBody {
        ProxyBody::new(Inner::Stream {
            stream: Box::pin(stream),
            remaining: len,
        })
    }

    /// Counts this response as in flight until its body is sent or dropped.
    pub fn track(&mut self, guard: InFlight) {
        self.in_flight = Some(guard);
    }

    /// Tells `f` how the body ended, once, with the bytes it handed over.
    pub fn on_end(&mut self, f: OnEnd) {
        self.on_end = Some(f);
    }

    fn end(&mut self, how: BodyEnd) {
        self.in_flight = None;
        if let Some(f) = self.on_end.take() {
            f(self.sent, how);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body whose last frame went out may be dropped without being asked for its
        // end: that is complete too.
        let how = if http_body::Body::is_end_stream(self) {
            BodyEnd::Complete
        } else {
            BodyEnd::Dropped
        };
        self.end(how);
    }
}

/// Takes at most [`WHOLE_FRAME`] bytes off the front of `b`; the rest stays in `b`.
fn cut_frame(b: &mut Bytes) -> Bytes {
    if b.len() > WHOLE_FRAME {
        b.split_to(WHOLE_FRAME)
    } else {
        std::mem::take(b)
    }
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(slot) => Poll::Ready(slot.take().map(|mut b| {
                let frame = cut_frame(&mut b);
                *slot = (!b.is_empty()).then_some(b);
                Ok(Frame::data(frame))
            })),
            Inner::Pieces(rest) => Poll::Ready(rest.pop_front().map(|mut b| {
                let frame = cut_frame(&mut b);
                if !b.is_empty() {
                    rest.push_front(b);
                }
                Ok(Frame::data(frame))
            })),
            Inner::Stream { stream, remaining } => match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(r) = remaining {
                        *r = r.saturating_sub(chunk.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if remaining.is_some_and(|r| r > 0) => {
                    Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "body ended before Content-Length",
                    ))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(None) => this.end(BodyEnd::Complete),
            Poll::Ready(Some(Err(_))) => this.end(BodyEnd::Failed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Pieces(rest) => rest.is_empty(),
            Inner::Stream { remaining, .. } => *remaining == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Pieces(rest) => SizeHint::with_exact(rest.iter().map(|b| b.len() as u64).sum()),
            Inner::Stream { remaining, .. } => {
                remaining.map_or_else(SizeHint::new, SizeHint::with_exact)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Waker;

    use super::*;

    /// The sizes of the frames a body hands to hyper, in order.
    fn frames(body: ProxyBody) -> Vec<usize> {
        let mut body = pin!(body);
        let mut cx = Context::from_waker(Waker::noop());
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(frame)) = http_body::Body::poll_frame(body.as_mut(), &mut cx) {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        sizes
    }

    #[test]
    fn whole_buffers_go_out_in_frames_of_up_to_a_mebibyte() {
        let big = Bytes::from(vec![1u8; 2 * WHOLE_FRAME + 1]);
        assert_eq!(
            frames(ProxyBody::full(big.clone())),
            [WHOLE_FRAME, WHOLE_FRAME, 1]
        );
        // A cache entry's blocks: each block one frame, however large, up to the cap.
        let pieces = vec![big.slice(..WHOLE_FRAME), big.slice(WHOLE_FRAME..)];
        assert_eq!(
            frames(ProxyBody::pieces(pieces)),
            [WHOLE_FRAME, WHOLE_FRAME, 1]
        );
        assert_eq!(frames(ProxyBody::full(Bytes::from_static(b"abc"))), [3]);
    }
}
