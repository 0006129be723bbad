//! The tests' HTTP client: requests and their answers, raw keep-alive connections from
//! chosen loopback addresses, and the proxy's metrics.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A response with its whole body (or the error that broke the body).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn bytes(&self) -> &Bytes {
        self.body.as_ref().expect("body arrived whole")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.bytes()).expect("JSON body")
    }
}

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{e:?}"));
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs `body` (JSON) to `url`; the status and the JSON answer.
pub async fn post_json(url: &str, body: &str) -> (u16, serde_json::Value) {
    let req = Request::post(url)
        .body(http_body_util::Full::new(Bytes::copy_from_slice(
            body.as_bytes(),
        )))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let r = client.request(req).await.unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

pub async fn get(url: &str) -> Resp {
    request(Method::GET, url, &[]).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Resp {
    request(Method::GET, url, headers).await
}

/// The value of one series (`name{labels}`) on the proxy's `/metrics`.
pub async fn metric(proxy: &Proxy, series: &str) -> f64 {
    metric_at(proxy.admin, series).await
}

/// [`metric`] of the proxy whose admin listener is `admin` (one in a child process).
pub async fn metric_at(admin: SocketAddr, series: &str) -> f64 {
    let text = get(&format!("http://{admin}/metrics")).await;
    let text = String::from_utf8_lossy(text.bytes()).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in metrics"))
}

/// An HTTP/1 keep-alive connection that has had one `GET path` answered 200 (idle since).
pub async fn answered_keep_alive(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    answered_keep_alive_from(addr, path, [127, 0, 0, 1]).await
}

/// A connection with a response in progress that it does not read (a `GET path` of an
/// object larger than the socket buffers; only the status line read): busy in the
/// server's eyes, never closed to make room.
pub async fn busy_connection(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s
}

/// A TCP connection to `addr` from loopback address `from` (another client than the
/// tests' usual 127.0.0.1, as the server tells clients apart).
pub async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("a loopback source address");
    socket.connect(addr).await.unwrap()
}

/// As [`answered_keep_alive`], from loopback address `from`.
pub async fn answered_keep_alive_from(
    addr: SocketAddr,
    path: &str,
    from: [u8; 4],
) -> tokio::net::TcpStream {
    let mut s = connect_from(addr, from).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s
}

/// Waits until connecting to `addr` is refused (its listener closed); panics after
/// `within`.
pub async fn refused_within(addr: SocketAddr, within: Duration) {
    eventually(
        within,
        &format!("{addr} refuses connections"),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
}
