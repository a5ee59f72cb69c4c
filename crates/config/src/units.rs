//! Value syntaxes of the config file: durations ("250ms"), sizes ("64KiB"), CIDRs ("10.0.0.0/8"),
//! status ranges ("200-399") and server addresses ("host:port", "[::1]:80").

use std::net::IpAddr;
use std::time::Duration;

/// Parses "250ms", "2s", "1m", "1h", "1d" (an integer or decimal number and a unit; "0" alone is zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("`{s}` has no unit: expected a duration like \"250ms\", \"2s\", \"1m\"")
        })?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"250ms\", \"2s\", \"1m\""))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "`{s}` has unknown unit `{unit}`: expected ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || secs > 1e10 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses "64KiB", "10MiB", "1GiB", "512" (bytes), "1KB" / "1MB" / "1GB" (decimal).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like \"64KiB\" or \"10MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "`{s}` has unknown unit `{u}`: expected B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is out of range"))
}

/// An IP network: an address and a prefix length. A bare address is a /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses "10.0.0.0/8", "2001:db8::/32" or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR like \"10.0.0.0/8\""))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses become IPv4: a dual-stack socket reports IPv4 clients that way.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Parses "200-399" or "200" into an inclusive range of status codes.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let err = || format!("`{s}` is not a status range like \"200-399\" or \"200\"");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| err())?;
    let hi: u16 = hi.parse().map_err(|_| err())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(err());
    }
    Ok((lo, hi))
}

/// Splits "host:port", "[v6]:port" or "v4:port" into host and port. The host keeps no brackets.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let err =
        || format!("`{s}` is not an address like \"127.0.0.1:9001\", \"[::1]:80\" or \"name:80\"");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(err)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| err())?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(err)?;
        if h.contains(':') || h.is_empty() {
            return Err(err());
        }
        (h, p)
    };
    let port: u16 = port.parse().map_err(|_| err())?;
    if port == 0 {
        return Err(format!("`{s}` has port 0"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10 furlongs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("127.0.0.1:80"),
            Ok(("127.0.0.1".into(), 80))
        );
        assert_eq!(parse_host_port("[::1]:9002"), Ok(("::1".into(), 9002)));
        assert_eq!(
            parse_host_port("app3.internal:80"),
            Ok(("app3.internal".into(), 80))
        );
        assert!(parse_host_port("::1:80").is_err());
        assert!(parse_host_port("host").is_err());
        assert!(parse_host_port("host:0").is_err());
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("204"), Ok((204, 204)));
        assert!(parse_status_range("399-200").is_err());
    }
}
