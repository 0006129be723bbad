//! Who the client is: the address a log line names (the connection's peer, or, when that
//! peer is one of `[server] trusted_proxies`, the address it reports in
//! `X-Forwarded-For`), and the key per-client limits and shares count it under.

use std::net::IpAddr;

use ipnet::IpNet;

/// Who a connection or an origin slot counts against (per-client limits and shares):
/// an IPv4 address, or an IPv6 /64 (what one host holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        // IPv4: the address with bit 32 set; IPv6: the /64 with bit 0 set. The low 64
        // bits tell the two apart, so they never meet.
        let v4 = |a: std::net::Ipv4Addr| ClientKey((1 << 32) | u128::from(u32::from(a)));
        match ip {
            IpAddr::V4(a) => v4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(mapped) => v4(mapped),
                None => ClientKey((u128::from(a) & !((1u128 << 64) - 1)) | 1),
            },
        }
    }
}

/// The rightmost `X-Forwarded-For` address not in `trusted`, walking back from `peer`:
/// each trusted hop vouches only for the address it appended (RFC 7239 section 5.2
/// reasoning), so anything a client wrote at the left is never believed. The header is
/// only read (`forwarded_for`) for a trusted peer.
pub(crate) fn client_addr<'a>(
    peer: IpAddr,
    forwarded_for: impl FnOnce() -> Option<&'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for().unwrap_or("").rsplit(',') {
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
    fn clients_are_addresses_and_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let k = |s| ClientKey::of(ip(s));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_ne!(k("0.0.0.1"), k("::"), "IPv4 and IPv6 keys never meet");
    }

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
                client_addr(ip(peer), || xff, &trusted),
                ip(want),
                "{peer} {xff:?}"
            );
        }
    }
}
