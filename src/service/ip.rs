//! The key a client address is throttled under.

use std::net::{IpAddr, Ipv6Addr};

/// The per-IP throttling key of `ip`: an IPv4 address as it is (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), an IPv6 address as
/// its /64 network, `2001:db8:1:2::/64`. One IPv6 subscriber usually holds a
/// whole /64 (RFC 6177 even suggests a /56 or /48), so keying by /128 would
/// give a single client 2^64 fresh budgets.
pub(super) fn throttle_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        throttle_key(s.parse().unwrap())
    }

    #[test]
    fn ipv4_is_kept_whole() {
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_ipv4() {
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn ipv6_is_bucketed_by_64() {
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1"), "::/64");
    }
}
