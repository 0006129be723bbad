//! The client address a log line names: the connection's peer, or, when that peer is
//! one of `[server] trusted_proxies`, the address it reports in `X-Forwarded-For`.

use std::net::IpAddr;

use ipnet::IpNet;

/// The rightmost `X-Forwarded-For` address not in `trusted`, walking back from `peer`:
/// each trusted hop vouches only for the address it appended (RFC 7239 section 5.2
/// reasoning), so anything a client wrote at the left is never believed.
pub fn client_addr(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or("").rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("203.0.113.9", Some("198.51.100.1"), "203.0.113.9"),
            ("10.0.0.5", None, "10.0.0.5"),
            ("10.0.0.5", Some("198.51.100.1"), "198.51.100.1"),
            ("10.0.0.5", Some("1.2.3.4, 198.51.100.1"), "198.51.100.1"),
            (
                "10.0.0.5",
                Some("1.2.3.4, 198.51.100.1, 10.0.0.7"),
                "198.51.100.1",
            ),
            ("10.0.0.5", Some("garbage, 10.0.0.7"), "10.0.0.7"),
            ("::1", Some("2001:db8::1"), "2001:db8::1"),
        ];
        for (peer, xff, want) in cases {
            assert_eq!(
                client_addr(ip(peer), xff, &trusted),
                ip(want),
                "{peer} {xff:?}"
            );
        }
    }
}
