//! The demo page, served on `[embedded_store] demo_listen`: a grid of thumbnails of the
//! sample images (variants, `fmt=auto`) loaded through the proxy from another origin, so
//! CORS works exactly as in production; a click opens the original. URLs are signed here
//! when the bucket's tenant requires it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{CACHE_CONTROL, HeaderValue};
use http::{Response, StatusCode};

use crate::auth::Tenants;
use crate::body::ProxyBody;
use crate::store::Seeded;

pub struct Demo {
    /// `http://127.0.0.1:8080`: where the browser reaches the proxy.
    pub proxy_base: String,
    /// `(bucket, key, size)` of each sample object.
    pub objects: Vec<Seeded>,
    pub tenants: Arc<Tenants>,
    /// The thumbnails' variant query ([`thumbnail_query`]); `None`: originals in the grid.
    pub thumbnail: Option<String>,
}

/// A square `fmt=auto` thumbnail at 256 px, or at the allowed size nearest to it.
pub fn thumbnail_query(widths: &[u32]) -> Option<String> {
    let side = widths.iter().min_by_key(|w| w.abs_diff(256))?;
    Some(format!("w={side}&h={side}&fit=cover&fmt=auto"))
}

impl Demo {
    pub fn handle(&self, path: &str) -> Response<ProxyBody> {
        let (status, ct, body) = match path {
            "/" | "/index.html" => (StatusCode::OK, "text/html; charset=utf-8", self.page()),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        let mut r = crate::body::small_response(status, ct, body);
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// The proxy URL of one object (or of its `variant`), signed for an hour when its
    /// tenant requires it.
    pub fn url_for(&self, bucket: &str, key: &str, variant: Option<&str>) -> String {
        let path = format!(
            "{}/{}/{}",
            self.proxy_base,
            bucket,
            crate::source::encode_path(key)
        );
        let signing = self
            .tenants
            .for_bucket(bucket)
            .filter(|t| t.require_signature)
            .and_then(|t| t.signing_key(None));
        match (signing, variant) {
            (Some((kid, secret)), _) => {
                let exp = crate::auth::unix_secs(SystemTime::now() + Duration::from_secs(3600));
                let query =
                    crate::auth::signed_variant_query(secret, bucket, key, exp, Some(kid), variant);
                format!("{path}?{query}")
            }
            (None, Some(variant)) => format!("{path}?{variant}"),
            (None, None) => path,
        }
    }

    fn page(&self) -> String {
        let mut cards = String::new();
        for Seeded { bucket, key, size } in &self.objects {
            let original = self.url_for(bucket, key, None);
            let thumb = self.url_for(bucket, key, self.thumbnail.as_deref());
            cards.push_str(&format!(
                r#"<figure class="card"><a class="frame" href="{original}" target="_blank" rel="noopener"><img crossorigin="anonymous" alt="{key}" data-src="{thumb}"></a>
<figcaption><code>{bucket}/{key}</code><span class="meta">original {size} B · thumbnail <span class="size">…</span> <span class="type"></span> · <span class="xcache">…</span> · <span class="time">…</span></span></figcaption></figure>
"#,
                key = html_escape(key),
                bucket = html_escape(bucket),
                original = html_escape(&original),
                thumb = html_escape(&thumb),
            ));
        }
        PAGE.replace("{{CARDS}}", &cards)
            .replace("{{PROXY}}", &html_escape(&self.proxy_base))
            .replace("{{COUNT}}", &self.objects.len().to_string())
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bucketfront demo</title>
<style>
:root { --bg:#0f172a; --card:#1e293b; --fg:#e2e8f0; --muted:#94a3b8; --accent:#38bdf8; --ok:#4ade80; --warn:#fbbf24; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
header { padding:28px 32px 8px; }
h1 { margin:0; font-size:26px; letter-spacing:-0.02em; }
h1 span { color:var(--accent); }
p.lead { color:var(--muted); margin:6px 0 0; max-width:70ch; }
main { display:grid; grid-template-columns:repeat(auto-fill, minmax(200px, 1fr)); gap:20px; padding:24px 32px; }
.card { margin:0; background:var(--card); border-radius:12px; overflow:hidden; box-shadow:0 4px 20px rgba(0,0,0,.35); }
.frame { aspect-ratio:1/1; display:flex; align-items:center; justify-content:center; background:#0b1222; }
.frame img { width:100%; height:100%; object-fit:cover; display:block; }
figcaption { padding:10px 14px 12px; display:flex; flex-direction:column; gap:2px; }
figcaption code { font-size:13px; word-break:break-all; }
.meta { color:var(--muted); font-size:13px; }
.xcache.HIT { color:var(--ok); } .xcache.MISS { color:var(--warn); } .xcache.error { color:#f87171; }
footer { padding:0 32px 32px; color:var(--muted); font-size:14px; }
footer code { background:#1e293b; padding:2px 6px; border-radius:4px; color:var(--fg); }
</style></head>
<body>
<header><h1><span>bucketfront</span> demo</h1>
<p class="lead">{{COUNT}} images from a private bucket, loaded by this page (another origin) through the proxy at
<code>{{PROXY}}</code>. The proxy signs the upstream requests, caches hot bytes and writes the CORS headers itself.
The grid shows thumbnails it renders once and caches (<code>w</code>, <code>h</code>, <code>fit=cover</code>,
<code>fmt=auto</code>: WebP for this browser); click one for the original.</p></header>
<main id="gallery">
{{CARDS}}</main>
<footer>To serve your own bucket: add a <code>[[tenants]]</code> entry naming it in <code>config.toml</code>, give the proxy's
AWS identity <code>s3:GetObject</code> on it (<code>bucketfront policy --provider s3 --bucket NAME</code> prints the policy),
and point your <code>&lt;img src&gt;</code> at <code>{{PROXY}}/NAME/KEY</code>.</footer>
<script>
for (const card of document.querySelectorAll('.card')) {
  const img = card.querySelector('img');
  const url = img.dataset.src;
  const t0 = performance.now();
  // The Accept an <img> sends, so that fmt=auto picks the same format for both loads.
  fetch(url, {headers: {Accept: 'image/avif,image/webp,image/apng,image/*,*/*;q=0.8'}}).then(async (r) => {
    const xc = card.querySelector('.xcache');
    xc.textContent = r.ok ? (r.headers.get('X-Cache') || '?') : ('HTTP ' + r.status);
    xc.className = 'xcache ' + (r.ok ? r.headers.get('X-Cache') : 'error');
    const blob = await r.blob();
    card.querySelector('.size').textContent = (blob.size / 1024).toFixed(1) + ' KiB';
    card.querySelector('.type').textContent = blob.type.replace('image/', '');
    card.querySelector('.time').textContent = (performance.now() - t0).toFixed(1) + ' ms';
    img.src = url;
  }).catch((e) => { card.querySelector('.xcache').textContent = 'failed: ' + e; });
}
</script>
</body></html>
"#;
