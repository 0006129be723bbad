//! Criterion micro-benchmarks of the hot paths, each next to a baseline measured in the
//! same run (this machine is shared and noisy: read ratios, not absolute times).
//!
//! `cargo bench --bench micro` (add `-- --quick` for a short run).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bucketfront as proxy;
use bucketfront::App;
use bucketfront::Store;
use bucketfront::config::Config;
use bucketfront::{self as auth, SignatureParams, Tenants};
use bucketfront::{ObjectRef, parse_source_url};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-signing-secret-0123456789";
const BUCKET: &str = "bench-images";

fn config(endpoint: &str) -> Config {
    let text = format!(
        r#"
[[tenants]]
name = "bench"
buckets = ["bench-images"]
signing_keys = [{{ id = "k1", secret = "{SECRET}" }}]
[[buckets]]
name = "bench-images"
endpoint = "{endpoint}"
path_style = true
"#
    );
    Config::parse(&text, Path::new("bench.toml")).expect("bench config")
}

fn source_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("source_parse");
    let urls = [
        "https://acme-images.s3.eu-west-1.amazonaws.com/cats/1.jpg",
        "https://s3.amazonaws.com/acme-images/caf%C3%A9/%E7%8C%AB.png",
        "gs://acme-gcs/cats/1.jpg",
    ];
    for url in urls {
        g.bench_with_input(BenchmarkId::new("parse_source_url", url), url, |b, u| {
            b.iter(|| parse_source_url(black_box(u)).unwrap())
        });
    }
    // Baseline: copying the URL into a String (the allocation any parser pays).
    g.bench_function("baseline_to_string", |b| {
        b.iter(|| black_box(urls[0]).to_string())
    });
    g.finish();
}

fn signature_verify(c: &mut Criterion) {
    let mut config = config("http://127.0.0.1:1");
    config.tenants[0].require_signature = true;
    let tenants = Tenants::from_config(&config);
    let tenant = tenants.for_bucket("bench-images").unwrap().clone();
    // Within max_signature_ttl of the `now` passed below (an exp further ahead is refused).
    let exp = 1_000 + 3600;
    let params = SignatureParams {
        exp: Some(exp.to_string()),
        sig: Some(auth::sign(
            SECRET.as_bytes(),
            "bench-images",
            "cats/1.jpg",
            exp,
        )),
        kid: Some("k1".into()),
        variant: None,
    };
    let mut g = c.benchmark_group("signature");
    g.bench_function("verify", |b| {
        b.iter(|| {
            auth::verify(
                &tenant,
                "bench-images",
                black_box("cats/1.jpg"),
                &params,
                1_000,
            )
            .unwrap()
        })
    });
    // Baseline: computing the HMAC alone (what verify must do at least once).
    g.bench_function("baseline_sign", |b| {
        b.iter(|| {
            auth::sign(
                SECRET.as_bytes(),
                "bench-images",
                black_box("cats/1.jpg"),
                exp,
            )
        })
    });
    g.finish();
}

/// A store and a proxy state with one cached 64 KiB object.
struct Hot {
    rt: tokio::runtime::Runtime,
    state: Arc<proxy::State>,
    obj: ObjectRef,
    uri: String,
    _store: Store,
}

fn hot() -> Hot {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (store, state) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store = Store::start(
            listener,
            "BENCHKEY",
            "bench-secret",
            CancellationToken::new(),
        )
        .unwrap();
        store
            .client()
            .create_bucket()
            .bucket("bench-images")
            .send()
            .await
            .unwrap();
        let body = aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 64 << 10]);
        store
            .put("bench-images", "hot.png", body, "image/png")
            .await
            .unwrap();
        let app = App::build(config(&store.endpoint), Some(store.access()))
            .await
            .expect("app builds");
        (store, app.state())
    });
    // An hour ahead: within max_signature_ttl (7 days), which refuses anything later.
    let exp = auth::unix_secs(std::time::SystemTime::now()) + 3600;
    let sig = auth::sign(SECRET.as_bytes(), "bench-images", "hot.png", exp);
    let uri = format!("/bench-images/hot.png?exp={exp}&sig={sig}");
    let hot = Hot {
        rt,
        state,
        obj: ObjectRef::new(Default::default(), "bench-images", "hot.png").unwrap(),
        uri,
        _store: store,
    };
    let first = hot.rt.block_on(request(&hot));
    assert_eq!(first, 64 << 10);
    hot
}

impl Hot {
    fn tenant(&self) -> Arc<bucketfront::Tenant> {
        self.state.tenants.for_bucket(BUCKET).unwrap().clone()
    }
}

async fn request(hot: &Hot) -> usize {
    let (parts, ()) = http::Request::get(&hot.uri).body(()).unwrap().into_parts();
    let resp = proxy::handle(hot.state.clone(), parts).await;
    resp.into_body().collect().await.unwrap().to_bytes().len()
}

/// The request for `obj` of `tenant`, as the proxy builds it after authorizing.
fn object_request(
    hot: &Hot,
    tenant: &std::sync::Arc<bucketfront::Tenant>,
    obj: &ObjectRef,
) -> bucketfront::ObjectRequest {
    bucketfront::ObjectRequest {
        origins: hot.state.origins.clone(),
        tenant: tenant.clone(),
        client: bucketfront::ClientKey::of(std::net::Ipv4Addr::LOCALHOST.into()),
        obj: obj.clone(),
        allowed: [bucketfront::MediaRange::parse("image/*").unwrap()].into(),
        head: false,
        passthrough: Default::default(),
        spans: None,
    }
}

fn hit_path(c: &mut Criterion) {
    let hot = hot();
    let tenant = hot.tenant();
    let req = object_request(&hot, &tenant, &hot.obj);
    let mut g = c.benchmark_group("hit_path_64KiB");
    g.throughput(Throughput::Bytes(64 << 10));
    g.bench_function("handle_request_to_body", |b| {
        b.to_async(&hot.rt).iter(|| request(&hot))
    });
    g.bench_function("cache_lookup", |b| {
        b.to_async(&hot.rt).iter(|| async {
            match hot.state.cache.serve(&req).await {
                Ok(bucketfront::Served::Complete { cached, .. }) => cached.body.len(),
                _ => panic!("expected a hit"),
            }
        })
    });
    // Baseline: a HashMap lookup of the same key and a clone of the same Bytes.
    let mut map = HashMap::new();
    map.insert(
        ("bench-images".to_string(), "hot.png".to_string()),
        bytes::Bytes::from(vec![7u8; 64 << 10]),
    );
    g.bench_function("baseline_hashmap_get", |b| {
        b.iter(|| {
            let k = ("bench-images".to_string(), black_box("hot.png").to_string());
            map.get(&k).unwrap().clone().len()
        })
    });
    g.finish();
}

fn presign(c: &mut Criterion) {
    let hot = hot();
    let tenant = hot.tenant();
    let presigner = &hot.state.presigner;
    let origins = &hot.state.origins;
    let req = object_request(&hot, &tenant, &hot.obj);
    hot.rt
        .block_on(presigner.get(&req, SystemTime::now(), None))
        .unwrap();
    let mut g = c.benchmark_group("presign");
    g.bench_function("cached_lookup", |b| {
        b.to_async(&hot.rt)
            .iter(|| async { presigner.get(&req, SystemTime::now(), None).await.unwrap() })
    });
    // A URL signed again: each call comes a day after the last, when the cached URL has
    // expired, so every call signs (the content type is kept from the first call, so no
    // HEAD goes to the store; a first presign of an object adds that round trip).
    let t0 = SystemTime::now();
    let mut day = 0u32;
    g.bench_function("fresh_presign", |b| {
        b.to_async(&hot.rt).iter(|| {
            day += 1;
            let now = t0 + std::time::Duration::from_secs(86_400) * day;
            let req = &req;
            async move { presigner.get(req, now, None).await.unwrap() }
        })
    });
    // Baseline: building the SDK's GetObject input (what a signed SDK call per miss starts with).
    let client = origins.client(&tenant, &hot.obj);
    g.bench_function("baseline_sdk_request_build", |b| {
        b.iter(|| {
            client
                .get_object()
                .bucket("bench-images")
                .key(black_box("hot.png"))
                .as_input()
                .clone()
                .build()
                .unwrap()
        })
    });
    g.finish();
}

/// What a metrics update costs on the hit path: a labelled lookup in a family against a
/// handle resolved once (what the cache-status counters use).
fn metrics(c: &mut Criterion) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let m = bucketfront::Metrics::new();
    let family = Family::<Vec<(String, String)>, Counter>::default();
    let labels = vec![
        ("route".to_string(), "object".to_string()),
        ("status".to_string(), "200".to_string()),
    ];
    let handle = family.get_or_create(&labels).clone();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("request_counter_by_route_and_status", |b| {
        b.iter(|| m.request(black_box("object"), 200))
    });
    g.bench_function("cache_status_handle", |b| {
        b.iter(|| m.cache(black_box(bucketfront::CacheStatus::Hit)))
    });
    g.bench_function("baseline_counter_inc", |b| {
        b.iter(|| black_box(&handle).inc())
    });
    g.finish();
}

/// The disk tier's check on every read: CRC32C of one 256 KiB block (crc-fast, as
/// `cache/disk/file.rs` uses it), against the crc32c crate it used before.
fn checksum(c: &mut Criterion) {
    let block: Vec<u8> = (0..256 << 10).map(|i: u32| (i * 31 + 7) as u8).collect();
    let mut g = c.benchmark_group("checksum");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("crc_fast_256k", |b| {
        b.iter(|| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, black_box(&block)))
    });
    g.bench_function("baseline_crc32c_crate_256k", |b| {
        b.iter(|| crc32c::crc32c(black_box(&block)))
    });
    g.finish();
}

/// A bucket's settings looked up among 1,000 `[[buckets]]` entries (a platform with one
/// entry per customer bucket), the one asked for last in the file: `Config::bucket`'s
/// index, against a search in order over the same entries (what it did before).
fn bucket_lookup(c: &mut Criterion) {
    let mut text: String = (0..1000)
        .map(|i| {
            format!("[[buckets]]\nname = \"customer-{i:04}-images\"\nregion = \"eu-west-1\"\n")
        })
        .collect();
    text.push_str("[[buckets]]\nname = \"bench\"\nregion = \"eu-west-1\"\n");
    let config: Config = toml::from_str(&text).expect("1,001 buckets");
    let mut g = c.benchmark_group("bucket_lookup_1001");
    g.bench_function("config_bucket", |b| {
        b.iter(|| config.bucket(black_box("bench")).is_some())
    });
    g.bench_function("baseline_search_in_order", |b| {
        b.iter(|| config.buckets.iter().any(|x| x.name == black_box("bench")))
    });
    g.finish();
}

criterion_group!(
    benches,
    bucket_lookup,
    source_parse,
    signature_verify,
    checksum,
    hit_path,
    presign,
    metrics
);
criterion_main!(benches);
