//! Azure for the tests: one Azurite (the Blob emulator) per test binary, over HTTPS in its
//! OAuth mode, with the Entra ID token stand-in (tests/support/azure_env.py), and configs
//! reading its containers. It stops when the test process ends (the helper waits on a
//! stdin that closes then).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use bucketfront::config::{self, Bucket, Config, Dur, ProviderKind, Secret};

use super::{ALLOWED_ORIGIN, fake_config, get, origin_pattern, pattern, tenant};

pub struct Azurite {
    pub endpoint: String,
    pub account: String,
    pub authority: String,
    pub control: String,
    pub sas_read: String,
    pub sas_list_only: String,
    pub sas_expired: String,
    pub cert: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _child: Mutex<Child>,
}

/// The blobs the helper uploads, as a customer would (with the account key).
pub fn blobs() -> Vec<(&'static str, String, Vec<u8>, serde_json::Value)> {
    use serde_json::json;
    let mut blobs: Vec<(&'static str, &'static str, Vec<u8>, serde_json::Value)> = vec![
        (
            "images",
            "cats/1.jpg",
            pattern(300_000, 1),
            json!({"content_type": "image/jpeg", "cache_control": "public, max-age=600", "content_encoding": "identity"}),
        ),
        (
            "images",
            "cats/2.jpg",
            pattern(70_000, 2),
            json!({"content_type": "image/jpeg"}),
        ),
        (
            "images",
            "cats/3.jpg",
            pattern(70_000, 3),
            json!({"content_type": "image/jpeg"}),
        ),
        (
            "images",
            "gz/icon.svg",
            pattern(2_000, 4),
            json!({"content_type": "image/svg+xml", "content_encoding": "gzip"}),
        ),
        (
            "images",
            "cold/old.jpg",
            pattern(1_000, 5),
            json!({"content_type": "image/jpeg", "tier": "Archive"}),
        ),
        (
            "shared",
            "dogs/1.jpg",
            pattern(50_000, 6),
            json!({"content_type": "image/jpeg"}),
        ),
    ];
    let mut all: Vec<_> = blobs
        .drain(..)
        .map(|(c, n, b, v)| (c, n.to_string(), b, v))
        .collect();
    // The demo's images (real JPEG, PNG and WebP files) under `demo/`, for the browser.
    for name in demo_images() {
        let path = format!(
            "{}/demo/bucket/demo-images/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let kind = match name.rsplit('.').next() {
            Some("png") => "image/png",
            Some("webp") => "image/webp",
            _ => "image/jpeg",
        };
        all.push((
            "images",
            format!("demo/{name}"),
            std::fs::read(path).unwrap(),
            serde_json::json!({ "content_type": kind }),
        ));
    }
    all
}

/// The demo's image files, relative to demo/bucket/demo-images.
pub fn demo_images() -> Vec<String> {
    let root = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/demo/bucket/demo-images"
    ));
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(
                    path.strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

pub fn body_of(container: &str, name: &str) -> Vec<u8> {
    blobs()
        .into_iter()
        .find(|(c, n, ..)| *c == container && n == name)
        .map(|(_, _, b, _)| b)
        .expect("a blob of blobs()")
}

pub fn azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Azurite> = OnceLock::new();
    AZURITE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // A CA and a certificate for 127.0.0.1 signed by it: Azurite's OAuth mode and
        // the token endpoint are HTTPS only.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "bucketfront test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("cert.pem"),
            format!("{}{}", leaf.pem(), ca_cert.pem()),
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let mut manifest = Vec::new();
        for (i, (container, name, body, settings)) in blobs().into_iter().enumerate() {
            let file = format!("blob{i}");
            std::fs::write(dir.path().join(&file), body).unwrap();
            let mut entry = settings;
            entry["container"] = container.into();
            entry["name"] = name.into();
            entry["file"] = file.into();
            manifest.push(entry);
        }
        std::fs::write(
            dir.path().join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/azure_env.py");
        let mut child = Command::new("python3")
            .args([script, dir.path().to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "Azurite did not start: `npm i -g azurite` and `pip install azure-storage-blob` (scripts/test does)"
            )
        });
        // The proxy trusts the test CA as it would a private endpoint's: through the
        // standard variable its TLS roots honour.
        // SAFETY: set once, before any test of this binary builds an HTTPS client.
        unsafe { std::env::set_var("SSL_CERT_FILE", &ca_path) };
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        Azurite {
            endpoint: s("endpoint"),
            account: s("account"),
            authority: s("authority"),
            control: s("control"),
            sas_read: s("sas_read"),
            sas_list_only: s("sas_list_only"),
            sas_expired: s("sas_expired"),
            cert: ca_path,
            _dir: dir,
            _child: Mutex::new(child),
        }
    })
}

/// A container of tenant `az` read through the platform's app in `directory`.
pub fn with_app(c: &mut Config, container: &str, directory: &str, endpoint: &str, account: &str) {
    let a = azurite();
    c.azure = Some(config::Azure {
        client_id: "bucketfront-app".into(),
        client_secret: Some(Secret::new("app-secret")),
        federated_token_file: None,
        authority: a.authority.clone(),
    });
    c.buckets.push(Bucket {
        name: container.into(),
        provider: ProviderKind::Azure,
        account: Some(account.into()),
        directory: Some(directory.into()),
        endpoint: Some(endpoint.into()),
        ..Default::default()
    });
}

pub fn with_sas(c: &mut Config, container: &str, sas: &str, endpoint: &str) {
    c.buckets.push(Bucket {
        name: container.into(),
        provider: ProviderKind::Azure,
        account: Some(azurite().account.clone()),
        sas: Some(Secret::new(sas)),
        endpoint: Some(endpoint.into()),
        ..Default::default()
    });
}

/// Tenant `az` owning `containers`, Azurite's deadlines (it runs on a busy machine).
pub fn azure_config(containers: &[&str]) -> Config {
    let mut c = fake_config("http://127.0.0.1:9");
    c.origin.first_byte_timeout = Dur::secs(20);
    c.origin.connect_timeout = Dur::secs(5);
    c.tenants = vec![tenant("az", containers, &[])];
    c.buckets.clear();
    c.cors.allowed_origins = vec![origin_pattern(ALLOWED_ORIGIN)];
    c
}

pub async fn token_requests(directory: &str) -> u64 {
    let r = get(&format!("{}/count/{directory}", azurite().control)).await;
    String::from_utf8_lossy(r.bytes()).trim().parse().unwrap()
}
