//! A real browser loads images through the proxy from another origin (headless Chromium
//! driven through chromedriver's WebDriver API): canvas reads, ranged fetches, exposed
//! headers, a refused origin, signed and expired URLs, and a screenshot of the demo page.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them). Without
//! them the test says so loudly and returns; scripts/test then fails the run.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bucketfront::Demo;
use bucketfront::ProxyBody;
use bucketfront::Tenants;
use bucketfront::config::Config;
use bucketfront::{Limits, Listener};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Limits of the small page servers (the app origins and the demo page).
fn page_limits() -> Limits {
    let config = bucketfront::config::Server {
        header_read_timeout: bucketfront::config::Dur::secs(5),
        drain_timeout: bucketfront::config::Dur::secs(1),
        ..Default::default()
    };
    Limits::from_config(&config).with_max_connections(16)
}

/// A chromedriver process with one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver starts Chromium and its helpers in chromedriver's own process
        // group (see `start`): end the whole group, or the browser outlives the test.
        let group = self.driver.id() as i32;
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn webdriver(method: http::Method, url: &str, body: Option<Value>) -> Value {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.expect("chromedriver answers");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice::<Value>(&bytes).expect("JSON from chromedriver")["value"].clone()
}

impl Browser {
    async fn start() -> Option<Browser> {
        if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists()
        {
            eprintln!(
                "\n!!!!! SKIPPED: {CHROMIUM} or {CHROMEDRIVER} is missing; scripts/test installs them !!!!!\n"
            );
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        accepting(port, "chromedriver").await;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let v = webdriver(
            http::Method::POST,
            &format!("{}/session", browser.base),
            Some(caps),
        )
        .await;
        browser.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        Some(browser)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{}", self.base, self.session, path)
    }

    async fn goto(&self, url: &str) {
        webdriver(
            http::Method::POST,
            &self.url("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// Runs `script` (which must call `done(result)`) with `arg`, in the current page.
    async fn run(&self, script: &str, arg: Value) -> Value {
        let body = json!({
            "script": format!("const done = arguments[arguments.length - 1]; const arg = arguments[0]; {script}"),
            "args": [arg],
        });
        webdriver(http::Method::POST, &self.url("/execute/async"), Some(body)).await
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let v = webdriver(http::Method::GET, &self.url("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        // `target/` may not exist (CARGO_TARGET_DIR elsewhere, a fresh clone).
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// Serves a blank page (the "app" origin) on a port the OS picks.
async fn page_server(stop: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Listener::new(page_limits()).serve(listener, stop.clone(), |_req| async {
            let mut r = http::Response::new(ProxyBody::full(
                "<!doctype html><title>app</title><body>app</body>",
            ));
            r.headers_mut()
                .insert("content-type", "text/html".parse().unwrap());
            r
        }),
    );
    addr
}

const CANVAS: &str = r#"
Promise.all(arg.map(u => new Promise(res => {
  const img = new Image();
  img.crossOrigin = 'anonymous';
  img.onload = () => {
    try {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, 1, 1).data;
      res({ok: true, width: img.naturalWidth, alpha: px[3]});
    } catch (e) { res({ok: false, error: String(e)}); }
  };
  img.onerror = () => res({ok: false, error: 'load failed'});
  img.src = u;
}))).then(done);
"#;

const RANGED_FETCH: &str = r#"
fetch(arg, {headers: {Range: 'bytes=0-9'}, cache: 'no-store'})
  .then(async r => done({status: r.status, length: (await r.arrayBuffer()).byteLength,
        etag: r.headers.get('ETag'), xcache: r.headers.get('X-Cache'), range: r.headers.get('Content-Range')}))
  .catch(e => done({error: String(e)}));
"#;

/// Tenant `demo` owning the seeded `demo-images` bucket, unsigned.
/// `data` as a gzip file of one stored (uncompressed) deflate block: valid gzip that any
/// decoder reads, without a compression library in the tests.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 65_536);
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.push(1); // the final block, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// `config()` plus tenant `demo` (unsigned) owning `demo-images`, with `origin` as the
/// only CORS origin allowed.
fn demo_config(endpoint: &str, origin: &str) -> Config {
    let mut c = config(endpoint);
    c.tenants.push(tenant("demo", &["demo-images"], &[]));
    c.buckets.push(bucket("demo-images", endpoint, None));
    c.cors.allowed_origins = vec![origin_pattern(origin)];
    c
}

/// A browser, and two page servers until `stop`: the app's (its origin, the one the proxy
/// allows) and another origin's (its address). `None` without Chromium.
async fn browser_and_pages() -> Option<(Browser, CancellationToken, SocketAddr, String)> {
    let browser = Browser::start().await?;
    let stop = CancellationToken::new();
    let app = page_server(&stop).await;
    let other = page_server(&stop).await;
    Some((browser, stop, other, format!("http://{app}")))
}

#[tokio::test]
async fn a_browser_loads_images_through_the_proxy() {
    let Some((browser, stop, other, app_origin)) = browser_and_pages().await else {
        return;
    };
    let env = Env::start_with(|endpoint| demo_config(endpoint, &app_origin)).await;
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/bucket");
    let objects = env.store.seed(std::path::Path::new(samples)).await.unwrap();
    let proxy_base = format!("http://{}", env.proxy.addr);
    let urls: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{proxy_base}/{}/{}",
                o.bucket,
                bucketfront::encode_path(&o.key)
            )
        })
        .collect();

    // 1. Every image loads with crossorigin=anonymous and its pixels can be read.
    browser.goto(&format!("{app_origin}/")).await;
    let results = browser.run(CANVAS, json!(urls)).await;
    for (url, r) in urls.iter().zip(results.as_array().unwrap()) {
        assert_eq!(r["ok"], true, "{url}: {r}");
        assert_eq!(r["width"], 640, "{url}");
    }
    // 1b. An SVG stored gzip-encoded (`Content-Encoding: gzip`, as an .svgz upload) is
    //     decoded by the browser, from the origin (MISS) and from memory (HIT).
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="12" height="7"><rect width="12" height="7" fill="red"/></svg>"#;
    env.store
        .client()
        .put_object()
        .bucket("test-images")
        .key("icons/red.svg")
        .body(gzip_stored(svg).into())
        .content_type("image/svg+xml")
        .content_encoding("gzip")
        .send()
        .await
        .unwrap();
    let svg_url = format!("{proxy_base}/test-images/icons/red.svg");
    for _ in 0..2 {
        let results = browser.run(CANVAS, json!([svg_url])).await;
        assert_eq!(results[0]["ok"], true, "{results}");
        assert_eq!(results[0]["width"], 12, "{results}");
        assert_eq!(results[0]["alpha"], 255, "{results}");
    }

    // 2. A ranged fetch passes the preflight, gets 206 and can read the exposed headers.
    let r = browser.run(RANGED_FETCH, json!(urls[0])).await;
    assert_eq!(r["status"], 206, "{r}");
    assert_eq!(r["length"], 10);
    assert!(
        r["etag"].as_str().is_some_and(|e| e.starts_with('"')),
        "{r}"
    );
    assert_eq!(r["xcache"], "HIT");
    assert!(r["range"].as_str().unwrap().starts_with("bytes 0-9/"));

    // 3. The same page from an origin that is not allowed reads nothing.
    browser.goto(&format!("http://{other}/")).await;
    let results = browser.run(CANVAS, json!(urls[..1])).await;
    assert_eq!(results[0]["ok"], false, "{results}");
    let r = browser.run(RANGED_FETCH, json!(urls[0])).await;
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("TypeError")),
        "{r}"
    );

    // 4. A URL made by `bucketfront sign` loads; an expired one does not.
    env.put(
        "sig-images",
        "signed.png",
        std::fs::read(format!("{samples}/demo-images/shapes/circles.png")).unwrap(),
        "image/png",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    // What `bucketfront sign` reads: the tenant and its keys.
    let file = format!(
        "[[tenants]]\nname = \"signed\"\nbuckets = [\"sig-*\"]\nexpected_owner = \"111122223333\"\nsigning_keys = [{{ id = \"k1\", secret = \"{SIGNING_SECRET}\" }}]\n"
    );
    std::fs::write(&config_path, file).unwrap();
    let sign = |ttl: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_bucketfront"))
            .args([
                "sign",
                "-c",
                config_path.to_str().unwrap(),
                "--tenant",
                "signed",
                "--bucket",
                "sig-images",
            ])
            .args(["--key", "signed.png", "--ttl", ttl, "--base", &proxy_base])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let fresh = sign("1h");
    let a_minute_ago = in_an_hour() - 3660;
    let expired = format!(
        "{proxy_base}/sig-images/signed.png?{}",
        signed_query("sig-images", "signed.png", a_minute_ago)
    );
    browser.goto(&format!("{app_origin}/")).await;
    let results = browser.run(CANVAS, json!([fresh, expired])).await;
    assert_eq!(results[0]["ok"], true, "signed URL loads: {results}");
    assert_eq!(results[1]["ok"], false, "expired URL fails: {results}");

    // 5. The demo page (its own origin, allowed by its proxy), screenshotted for people.
    let demo_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_origin = format!("http://{}", demo_listener.local_addr().unwrap());
    let demo_config = demo_config(&env.store.endpoint, &demo_origin);
    let proxy2 = Proxy::start(demo_config.clone(), Some(&env.store)).await;
    let thumbnail = bucketfront::thumbnail_query(&demo_config.variants.widths);
    let demo = Arc::new(Demo {
        proxy_base: format!("http://{}", proxy2.addr),
        objects: objects.clone(),
        tenants: Arc::new(Tenants::from_config(&demo_config)),
        thumbnail: thumbnail.clone(),
    });
    tokio::spawn(
        Listener::new(page_limits()).serve(demo_listener, stop.clone(), move |req| {
            let demo = demo.clone();
            async move { demo.handle(req.uri().path()) }
        }),
    );
    browser.goto(&demo_origin).await;
    let loaded = browser
        .run(
            "const t0 = Date.now(); (function wait() { const imgs = [...document.images]; \
             if (imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0) || Date.now() - t0 > 10000) \
             done(imgs.filter(i => i.naturalWidth > 0).length); else setTimeout(wait, 100); })();",
            json!(null),
        )
        .await;
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-screenshot.png");
    browser.screenshot(&shot).await;
    assert!(
        loaded.as_u64().unwrap_or(0) >= 6,
        "demo images loaded: {loaded}"
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // 6. A `fmt=auto` variant (a size the demo page does not use) loaded by an <img>
    // (Chromium's own Accept): its pixels can be read through CORS, and what Chromium
    // got was WebP: the proxy now has the WebP variant (a HIT for a client that takes
    // WebP), and not the JPEG one.
    let photo = objects
        .iter()
        .find(|o| o.key.ends_with("sunset.jpg"))
        .expect("a JPEG sample");
    let auto = format!(
        "http://{}/{}/{}?w=128&fmt=auto",
        proxy2.addr,
        photo.bucket,
        bucketfront::encode_path(&photo.key),
    );
    let results = browser.run(CANVAS, json!([auto])).await;
    assert_eq!(results[0]["ok"], true, "{results}");
    assert_eq!(results[0]["width"], 128, "{results}");
    let webp = get_with(&auto, &[("accept", "image/webp")]).await;
    assert_eq!(
        (webp.header("x-cache"), webp.header("content-type")),
        (Some("HIT"), Some("image/webp")),
        "Chromium's <img> got the WebP variant"
    );
    let legacy = get_with(&auto, &[("accept", "image/*")]).await;
    assert_eq!(
        (legacy.header("x-cache"), legacy.header("content-type")),
        (Some("MISS"), Some("image/jpeg"))
    );

    // Ending the browser ends every process it started (Chromium and its helpers carry
    // the profile directory on their command line).
    let profile = browser._profile.path().display().to_string();
    drop(browser);
    let left = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&profile))
            .collect()
    };
    // SIGKILL is delivered at once but a process is gone only once it has been reaped;
    // wait for that (bounded), rather than look at the very instant of the kill.
    eventually(
        Duration::from_secs(20),
        "every browser process ended",
        || async { left().is_empty() },
    )
    .await;
    proxy2.stop().await;
    stop.cancel();
    env.stop().await;
}

/// The same CORS guarantees through an Azure Blob container (Azurite, read with the
/// platform's Entra ID token): every demo image's pixels can be read from the allowed
/// origin, a ranged fetch reads the exposed headers, and another origin reads nothing.
#[tokio::test]
async fn a_browser_loads_azure_blobs_through_the_proxy() {
    use common::azure::*;
    let Some((browser, stop, other, app_origin)) = browser_and_pages().await else {
        return;
    };
    let a = azurite();
    let mut c = azure_config(&["images"]);
    with_app(&mut c, "images", "dir-browser", &a.endpoint, &a.account);
    c.cors.allowed_origins = vec![origin_pattern(&app_origin)];
    let proxy = Proxy::start(c, None).await;
    let urls: Vec<String> = demo_images()
        .iter()
        .map(|name| {
            proxy.url(&format!(
                "/images/{}",
                bucketfront::encode_path(&format!("demo/{name}"))
            ))
        })
        .collect();
    assert!(urls.len() >= 6);
    browser.goto(&format!("{app_origin}/")).await;
    let results = browser.run(CANVAS, json!(urls)).await;
    for (url, r) in urls.iter().zip(results.as_array().unwrap()) {
        assert_eq!(r["ok"], true, "{url}: {r}");
        assert_eq!(r["width"], 640, "{url}");
    }
    let r = browser.run(RANGED_FETCH, json!(urls[0])).await;
    assert_eq!(r["status"], 206, "{r}");
    assert_eq!(r["length"], 10);
    assert_eq!(r["xcache"], "HIT");
    browser.goto(&format!("http://{other}/")).await;
    let results = browser.run(CANVAS, json!(urls[..1])).await;
    assert_eq!(results[0]["ok"], false, "{results}");
    drop(browser);
    proxy.stop().await;
    stop.cancel();
}
