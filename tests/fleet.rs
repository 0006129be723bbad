//! Three instances behind the real balancers people run (Debian's nginx and HAProxy),
//! configured by the files shipped in `packaging/`: every object is fetched from the
//! origin once and cached on one instance; the `url=` form of an object goes to one
//! instance too; stopping an instance moves only its objects, and no client sees a 5xx
//! meanwhile. The balancers listen on ports the OS picked; the test rewrites only the
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
            let d = dir.display();
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n{}\n}}\n",
                render(&shipped, listen, proxies)
            );
            let path = dir.join("nginx.conf");
            std::fs::write(&path, conf).unwrap();
            let child = Command::new("nginx")
                .args(["-p", &d.to_string(), "-c", path.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|_| panic!("{}", missing("nginx")));
            Reaped::new(child)
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
    let env = Env::start().await;
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
    let _balancer = start(balancer, dir.path(), listen, &[&env.proxy, &second, &third]);
    let lb = format!("http://127.0.0.1:{listen}");
    // Up when every instance answers through it (HAProxy's checks need a moment).
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "{balancer:?} started");
    let fetch = |path: String| {
        let url = format!("{lb}{path}");
        async move {
            for _ in 0..100 {
                let r = get(&url).await;
                // Before HAProxy's first health check passes it has no server: 503.
                if r.status != 503 || r.headers.contains_key("x-request-id") {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            get(&url).await
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
        cached(&env.proxy).await,
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

    second.stop().await;
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
