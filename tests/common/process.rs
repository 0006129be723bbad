//! The real binary as a child process: started, signalled, measured, and always reaped.

/// Resident set size of this process.
pub fn rss() -> u64 {
    bucketfront::resident_bytes().unwrap_or(0)
}

/// A size field of `/proc/PROCESS/status` (`VmRSS`, `VmHWM`), in bytes; `process` is a
/// pid or `self`.
pub fn proc_status_bytes(process: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .unwrap_or_else(|| panic!("{field} in /proc/{process}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// `bucketfront serve -c PATH`, without a notify socket or IMDS lookups and with its
/// output discarded; callers add their environment and pipes.
pub fn serve(path: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bucketfront"));
    command
        .args(["serve", "-c", path.to_str().unwrap()])
        .env_remove("NOTIFY_SOCKET")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// `bucketfront serve` as a child on free ports, its config written in `dir`: tenant `t`
/// reads the unsigned bucket `test-images` of the embedded store at `store`; `server` is
/// added to `[server]`, and `sections` (TOML) after it. The child, its public port and its
/// admin port.
pub fn serve_child(
    dir: &std::path::Path,
    store: &str,
    server: &str,
    sections: &str,
) -> (Reaped, u16, u16) {
    let (port, admin) = (super::free_port(), super::free_port());
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
{server}
{sections}
[[tenants]]
name = "t"
buckets = ["test-images"]
require_signature = false
[[buckets]]
name = "test-images"
endpoint = "{store}"
path_style = true
access_key = "TESTACCESSKEY"
secret_key = "test-secret-key"
"#
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let child = serve(&path).spawn().map(Reaped::new).unwrap();
    (child, port, admin)
}

/// Sends `sig` (`-TERM`, `-HUP`…) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// A child process that is killed and reaped when dropped, so that a failing assertion
/// leaves nothing running behind the test.
pub struct Reaped(Option<std::process::Child>);

impl Reaped {
    pub fn new(child: std::process::Child) -> Reaped {
        Reaped(Some(child))
    }

    /// Hands the child over (to wait for its output); the caller owns it from here.
    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("a child not yet taken")
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("a child not yet taken")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a child not yet taken")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
