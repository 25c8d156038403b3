//! STATIC cluster endpoint grammar (spec §2.6, upstream `internal/util/endpoint.go`):
//!
//! ```text
//! endpoint = prefix [ ":<" lo "-" hi ">" ]
//! prefix   = IPv4 | IPv6 | IPv4 "/" len | IPv6 "/" len     ; plain IP = /32 or /128
//! ```

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;

/// A parsed STATIC endpoint: the peers in `net` on a port in `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Masked: `1.2.3.4/16` is stored as `1.2.0.0/16`.
    pub net: IpNet,
    /// `1..=65535` without a suffix. Empty (`lo > hi`) when the suffix can never match.
    pub ports: RangeInclusive<u16>,
}

impl Endpoint {
    /// Whether a peer at `ip:port` is admitted by this endpoint.
    pub fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(&ip) && self.ports.contains(&port)
    }
}

impl fmt::Display for Endpoint {
    /// The normalised form upstream reports: masked prefix, host routes as the bare IP, the
    /// port suffix only when it restricts anything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.net.prefix_len() == self.net.max_prefix_len() {
            write!(f, "{}", self.net.addr())?;
        } else {
            write!(f, "{}", self.net)?;
        }
        if self.ports != (1..=u16::MAX) {
            write!(f, ":<{}-{}>", self.ports.start(), self.ports.end())?;
        }
        Ok(())
    }
}

/// Parse one STATIC endpoint. The error is the full upstream-style message,
/// `invalid endpoint "<e>": <reason>`.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    parse_inner(s).map_err(|reason| format!("invalid endpoint {s:?}: {reason}"))
}

fn parse_inner(s: &str) -> Result<Endpoint, String> {
    let (prefix, ports) = match split_port_suffix(s) {
        Some((prefix, lo, hi)) => (prefix, port_range(lo, hi)?),
        None => (s, 1..=u16::MAX),
    };
    let net = if prefix.contains('/') {
        prefix
            .parse::<IpNet>()
            .map_err(|_| format!("invalid CIDR prefix {prefix:?}"))?
            .trunc()
    } else {
        let ip: IpAddr = prefix
            .parse()
            .map_err(|_| format!("invalid IP address {prefix:?}"))?;
        IpNet::from(ip)
    };
    Ok(Endpoint { net, ports })
}

/// Upstream's regex `^(.*):<([0-9]+)-([0-9]+)>$`: the suffix is recognised only in exactly
/// this form at the very end, which is what keeps IPv6 prefixes unambiguous.
fn split_port_suffix(s: &str) -> Option<(&str, &str, &str)> {
    let inner = s.strip_suffix('>')?;
    let open = inner.rfind(":<")?;
    let (lo, hi) = inner[open + 2..].split_once('-')?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    (digits(lo) && digits(hi)).then_some((&inner[..open], lo, hi))
}

/// Upstream does no range check on the bounds: a bound beyond 65535 simply never matches
/// (`lo`) or does not restrict (`hi`), and `lo > hi` matches nothing. Mirror that with a
/// clamped, possibly empty, range instead of rejecting the config.
fn port_range(lo: &str, hi: &str) -> Result<RangeInclusive<u16>, String> {
    // Digits only, so the only parse failure is overflow (Go's Atoi fails there too).
    let parse = |d: &str| d.parse::<u64>().map_err(|_| format!("invalid port {d:?}"));
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    let hi = u16::try_from(hi).unwrap_or(u16::MAX);
    match u16::try_from(lo) {
        Ok(lo) => Ok(lo..=hi),
        // No port is >= lo: an empty range, spelled out because that is the intent.
        Err(_) => Ok(RangeInclusive::new(1, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        match parse_endpoint(s) {
            Ok(e) => e,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn plain_ips_are_host_routes() {
        let e = ep("10.0.0.1");
        assert_eq!(e.net.to_string(), "10.0.0.1/32");
        assert_eq!(e.ports, 1..=65535);
        assert!(e.matches("10.0.0.1".parse().unwrap(), 5000));
        assert!(!e.matches("10.0.0.2".parse().unwrap(), 5000));
        assert_eq!(ep("2001:db8::1").net.to_string(), "2001:db8::1/128");
        assert_eq!(e.to_string(), "10.0.0.1");
    }

    #[test]
    fn prefixes_are_masked() {
        assert_eq!(ep("1.2.3.4/16").net.to_string(), "1.2.0.0/16");
        assert_eq!(ep("1.2.3.4/16").to_string(), "1.2.0.0/16");
        assert_eq!(ep("0.0.0.0/0").net.to_string(), "0.0.0.0/0");
        assert_eq!(ep("::/0").net.to_string(), "::/0");
        // 0.0.0.0/0 does not contain IPv6 addresses (spec §2.6).
        assert!(!ep("0.0.0.0/0").matches("::1".parse().unwrap(), 1));
    }

    #[test]
    fn port_ranges() {
        let e = ep("10.0.0.1:<8000-9000>");
        assert_eq!(e.ports, 8000..=9000);
        assert!(e.matches("10.0.0.1".parse().unwrap(), 8000));
        assert!(!e.matches("10.0.0.1".parse().unwrap(), 9001));
        assert_eq!(e.to_string(), "10.0.0.1:<8000-9000>");
        assert_eq!(ep("192.168.0.0/16:<10000-20000>").ports, 10000..=20000);
        let v6 = ep("2001:db8::/32:<1000-2000>");
        assert_eq!(v6.net.to_string(), "2001:db8::/32");
        assert_eq!(v6.ports, 1000..=2000);
        // lo > hi never matches; out-of-range bounds are clamped, not rejected.
        assert!(ep("10.0.0.1:<9000-8000>").ports.is_empty());
        assert_eq!(ep("10.0.0.1:<1-70000>").ports, 1..=65535);
        assert!(ep("10.0.0.1:<70000-80000>").ports.is_empty());
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "foo",
            "10.0.0",
            "10.0.0.1/33",
            "10.0.0.1:8000",
            "10.0.0.1:<8000>",
            "10.0.0.1:<a-b>",
            "10.0.0.1:<-5>",
            "10.0.0.1:<1-99999999999999999999999>",
            "[::1]",
            "::1/129",
            "10.0.0.1 ",
            "fe80::1%eth0",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} should be rejected");
        }
        let err = parse_endpoint("foo").unwrap_err();
        assert!(err.starts_with("invalid endpoint \"foo\": "), "{err}");
    }
}
