//! Three instances behind the real balancers people run (Debian's nginx and HAProxy),
//! configured by the files shipped in `packaging/`: every object is fetched from the
//! origin once and cached on one instance; the `url=` form of an object goes to one
//! instance too; stopping an instance moves only its objects, and no client sees a 5xx
//! meanwhile nor during a rolling restart of all three; a CDN (nginx `proxy_cache`) in
//! front caches only what it may and keeps CORS answers of different origins apart. The balancers listen on ports the OS picked; the test rewrites only the
//! addresses in the shipped files.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const KEYS: usize = 300;

#[derive(Clone, Copy, Debug)]
enum Balancer {
    Nginx,
    Haproxy,
}

/// The shipped file with its example addresses replaced by the test's.
fn render(shipped: &str, listen: u16, proxies: &[&Proxy]) -> String {
    let mut text = shipped.replace("127.0.0.1:8000", &format!("127.0.0.1:{listen}"));
    for (i, p) in proxies.iter().enumerate() {
        let (public, admin) = (8080 + 100 * i, 9090 + 100 * i);
        text = text
            .replace(&format!("127.0.0.1:{public}"), &p.addr.to_string())
            .replace(
                &format!("port {admin}"),
                &format!("port {}", p.admin.port()),
            );
    }
    text
}

/// nginx in the foreground, all its files in `dir`, with `http` as its http context.
fn nginx(dir: &std::path::Path, http: &str) -> Reaped {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n{http}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed: `apt-get install nginx haproxy` (scripts/test does)");
    Reaped::new(child)
}

/// Starts the balancer in the foreground (killed when the guard drops).
fn start(balancer: Balancer, dir: &std::path::Path, listen: u16, proxies: &[&Proxy]) -> Reaped {
    let packaging = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging");
    let missing = |name: &str| {
        format!("{name} is not installed: `apt-get install nginx haproxy` (scripts/test does)")
    };
    match balancer {
        Balancer::Nginx => {
            let shipped = std::fs::read_to_string(format!("{packaging}/nginx-fleet.conf")).unwrap();
            nginx(dir, &render(&shipped, listen, proxies))
        }
        Balancer::Haproxy => {
            let shipped =
                std::fs::read_to_string(format!("{packaging}/haproxy-fleet.cfg")).unwrap();
            let path = dir.join("haproxy.cfg");
            std::fs::write(&path, render(&shipped, listen, proxies)).unwrap();
            let child = Command::new("haproxy")
                .args(["-db", "-f", path.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|_| panic!("{}", missing("haproxy")));
            Reaped::new(child)
        }
    }
}

async fn cached(p: &Proxy) -> u64 {
    p.state.cache.maintain().await;
    p.state.cache.entry_count()
}

async fn fleet_behind(balancer: Balancer) {
    // The store (Env's own proxy is not behind the balancer), and three instances.
    let env = Env::start().await;
    let first = Proxy::start(config(&env.store.endpoint), Some(&env.store)).await;
    let second = Proxy::start(config(&env.store.endpoint), Some(&env.store)).await;
    let third = Proxy::start(config(&env.store.endpoint), Some(&env.store)).await;
    for i in 0..KEYS {
        env.put(
            "test-images",
            &format!("k/{i}.png"),
            format!("object {i}"),
            "image/png",
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let _balancer = start(balancer, dir.path(), listen, &[&first, &second, &third]);
    let lb = format!("http://127.0.0.1:{listen}");
    accepting(listen, &format!("{balancer:?}")).await;
    let fetch = |path: String| {
        let url = format!("{lb}{path}");
        async move {
            // Before HAProxy's first health check passes it has no server: 503.
            eventually_some(
                Duration::from_secs(10),
                "the balancer has a server",
                || async {
                    let r = get(&url).await;
                    (r.status != 503 || r.headers.contains_key("x-request-id")).then_some(r)
                },
            )
            .await
        }
    };
    let warm = fetch("/test-images/k/0.png".into()).await;
    assert_eq!(warm.status, 200, "{balancer:?}");

    // 300 keys, three times each: 300 origin GETs, each object on one instance.
    let gets0 = env.gets();
    for round in 0..3 {
        for i in 0..KEYS {
            let r = fetch(format!("/test-images/k/{i}.png")).await;
            assert_eq!(r.status, 200, "{balancer:?} round {round} key {i}");
            assert_eq!(r.bytes().as_ref(), format!("object {i}").as_bytes());
        }
    }
    let fetched = env.gets() - gets0 + 1; // + the warm-up's
    assert_eq!(
        fetched, KEYS as u64,
        "{balancer:?}: one origin GET per object"
    );
    let shares = [
        cached(&first).await,
        cached(&second).await,
        cached(&third).await,
    ];
    assert_eq!(
        shares.iter().sum::<u64>(),
        KEYS as u64,
        "{balancer:?} {shares:?}"
    );
    assert!(
        shares.iter().all(|&n| n > 0),
        "{balancer:?}: every instance has a share {shares:?}"
    );

    // One instance stops (drains): only its objects are fetched again, and no client
    // sees a 5xx.
    let moved = cached(&third).await;
    let third_at = (third.addr, third.admin);
    third.stop().await;
    let before = env.gets();
    for i in 0..KEYS {
        let r = fetch(format!("/test-images/k/{i}.png")).await;
        assert_eq!(
            r.status, 200,
            "{balancer:?}: key {i} after one instance stopped"
        );
    }
    let refetched = env.gets() - before;
    match balancer {
        // nginx's ketama ring: exactly the stopped instance's objects move.
        Balancer::Nginx => assert_eq!(refetched, moved, "{balancer:?}"),
        // HAProxy redispatches until its health check marks the instance down, so a
        // moved object may be fetched by two instances in that second.
        Balancer::Haproxy => assert!(
            refetched >= moved && refetched <= 2 * moved,
            "{balancer:?}: {refetched} refetched, {moved} moved"
        ),
    }
    // The url= form of one object always goes to the same instance (the cache key is
    // the same as the path form's, the balancer's hash key is not, so it may be a
    // second copy on another instance; then it is a HIT there, every time).
    let source = "s3%3A%2F%2Ftest-images%2Fk%2F7.png";
    fetch(format!("/_/fetch?url={source}")).await;
    let before = env.gets();
    for _ in 0..5 {
        let r = fetch(format!("/_/fetch?url={source}")).await;
        assert_eq!(r.header("x-cache"), Some("HIT"), "{balancer:?}");
    }
    assert_eq!(env.gets(), before);

    // A rolling restart of all three (the third comes back first) under a steady
    // client: every answer a 200.
    let mut instances = vec![
        first,
        second,
        Proxy::start_at(
            config(&env.store.endpoint),
            Some(&env.store),
            third_at.0,
            third_at.1,
        )
        .await,
    ];
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (stop, lb) = (stop.clone(), lb.clone());
        tokio::spawn(async move {
            let (mut answered, mut bad) = (0u64, Vec::new());
            while !stop.is_cancelled() {
                let key = answered as usize % KEYS;
                let r = get(&format!("{lb}/test-images/k/{key}.png")).await;
                if r.status != 200 || r.body.is_err() {
                    bad.push((key, r.status.as_u16()));
                }
                answered += 1;
            }
            (answered, bad)
        })
    };
    for i in 0..instances.len() {
        let old = instances.remove(i);
        let at = (old.addr, old.admin);
        old.stop().await;
        let back = Proxy::start_at(config(&env.store.endpoint), Some(&env.store), at.0, at.1).await;
        instances.insert(i, back);
        // Back in the balancer's rotation: it caches its share again.
        eventually(
            Duration::from_secs(20),
            &format!("{balancer:?}: instance {i} serves again after its restart"),
            || async { cached(&instances[i]).await > 0 },
        )
        .await;
    }
    stop.cancel();
    let (answered, bad) = load.await.unwrap();
    assert!(answered > 0);
    assert!(
        bad.is_empty(),
        "{balancer:?}: {} of {answered} failed: {bad:?}",
        bad.len()
    );
    for p in instances {
        p.stop().await;
    }
    env.stop().await;
}

#[tokio::test]
async fn a_fleet_behind_nginx_fetches_each_object_once() {
    fleet_behind(Balancer::Nginx).await;
}

#[tokio::test]
async fn a_fleet_behind_haproxy_fetches_each_object_once() {
    fleet_behind(Balancer::Haproxy).await;
}

/// nginx with `proxy_cache` in front, as a CDN: it caches what the proxy lets it (a
/// tenant with `cache_control = "public, …"`), never what is `private` (signed URLs by
/// default), and never hands one `Origin`'s CORS answer to another (`Vary: Origin`).
#[tokio::test]
async fn a_cdn_in_front_caches_what_it_may_and_keeps_origins_apart() {
    let env = Env::with(|c, _| {
        c.tenants[0].cache_control = Some("public, max-age=60".into());
    })
    .await;
    env.put("test-images", "pub.png", "public bytes", "image/png")
        .await;
    env.put("sig-images", "priv.png", "private bytes", "image/png")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let _cdn = nginx(
        dir.path(),
        &format!(
            "proxy_cache_path {d}/cdn levels=1:2 keys_zone=cdn:1m max_size=64m inactive=10m use_temp_path=off;\n\
             server {{\nlisten 127.0.0.1:{listen};\nlocation / {{\nproxy_pass http://{};\n\
             proxy_http_version 1.1;\nproxy_set_header Connection \"\";\nproxy_cache cdn;\n\
             add_header X-CDN $upstream_cache_status always;\n}}\n}}\n",
            env.proxy.addr,
            d = dir.path().display()
        ),
    );
    accepting(listen, "nginx (the CDN)").await;
    let cdn = |path: &str, origin: &str| {
        let url = format!("http://127.0.0.1:{listen}{path}");
        let origin = origin.to_string();
        async move { get_with(&url, &[("origin", origin.as_str())]).await }
    };
    let app = ALLOWED_ORIGIN;
    let first = cdn("/test-images/pub.png", app).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
    let again = cdn("/test-images/pub.png", app).await;
    assert_eq!(
        again.header("x-cdn"),
        Some("HIT"),
        "a public answer is cached"
    );
    assert_eq!(again.header("access-control-allow-origin"), Some(app));
    assert_eq!(again.bytes().as_ref(), b"public bytes");
    // Another origin: never the first one's CORS answer.
    let evil = cdn("/test-images/pub.png", "https://evil.example.org").await;
    assert_eq!(evil.status, 200);
    assert_eq!(
        evil.header("access-control-allow-origin"),
        None,
        "{:?}",
        evil.headers
    );
    let other = cdn("/test-images/pub.png", "https://x.example.com").await;
    assert_eq!(
        other.header("access-control-allow-origin"),
        Some("https://x.example.com")
    );
    // A signed URL of a tenant with the default `private`: the CDN never stores it.
    let signed = format!(
        "/sig-images/priv.png?{}",
        signed_query("sig-images", "priv.png", in_an_hour())
    );
    for _ in 0..3 {
        let r = cdn(&signed, app).await;
        assert_eq!(r.status, 200);
        assert_ne!(
            r.header("x-cdn"),
            Some("HIT"),
            "a private answer is not cached"
        );
        assert!(r.header("cache-control").unwrap().starts_with("private"));
    }
    env.stop().await;
}
