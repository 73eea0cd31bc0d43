//! IP address sets as sorted, disjoint inclusive ranges over one 128-bit space (IPv4 is mapped to
//! `::ffff:a.b.c.d`). Owns: CIDR parsing and `ipBlock` (`cidr` minus `except`) arithmetic.

use std::net::{IpAddr, Ipv6Addr};

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    /// The inclusive range of the block in the mapped 128-bit space.
    pub fn range(&self) -> (u128, u128) {
        let (base, bits) = match self.addr {
            IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32 - u32::from(self.prefix)),
            IpAddr::V6(v6) => (u128::from(v6), 128 - u32::from(self.prefix)),
        };
        let host: u128 = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        (base & !host, (base & !host) | host)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Maps an address into the 128-bit space.
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A set of addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpSet {
    ranges: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn all() -> Self {
        Self {
            ranges: vec![(0, u128::MAX)],
        }
    }

    pub fn from_cidr(c: &Cidr) -> Self {
        Self {
            ranges: vec![c.range()],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let k = ip_key(ip);
        self.ranges.iter().any(|(a, b)| *a <= k && k <= *b)
    }

    /// Whether every address of `other` is in this set.
    pub fn covers(&self, other: &IpSet) -> bool {
        other.difference(self).is_empty()
    }

    pub fn union(&self, other: &IpSet) -> IpSet {
        let mut all: Vec<(u128, u128)> = self.ranges.iter().chain(&other.ranges).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        IpSet { ranges: out }
    }

    pub fn difference(&self, other: &IpSet) -> IpSet {
        let mut out = Vec::new();
        for &(mut a, b) in &self.ranges {
            let mut alive = true;
            for &(x, y) in &other.ranges {
                if y < a || x > b {
                    continue;
                }
                if x > a {
                    out.push((a, x - 1));
                }
                if y >= b {
                    alive = false;
                    break;
                }
                a = y + 1;
            }
            if alive {
                out.push((a, b));
            }
        }
        IpSet { ranges: out }
    }

    pub fn intersection(&self, other: &IpSet) -> IpSet {
        self.difference(&self.difference(other))
    }

    /// A few readable ranges (for messages).
    pub fn describe(&self) -> String {
        if self.ranges == [(0, u128::MAX)] {
            return "any address".into();
        }
        let fmt = |k: u128| {
            let v6 = Ipv6Addr::from(k);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            }
        };
        let parts: Vec<String> = self
            .ranges
            .iter()
            .take(4)
            .map(|(a, b)| format!("{}-{}", fmt(*a), fmt(*b)))
            .collect();
        let more = self.ranges.len().saturating_sub(4);
        if more > 0 {
            format!("{} (+{more} more)", parts.join(", "))
        } else {
            parts.join(", ")
        }
    }
}

/// Private, loopback, link-local and carrier-grade NAT space: what "the internet" is not.
pub fn non_public() -> IpSet {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ]
    .iter()
    .filter_map(|c| Cidr::parse(c))
    .fold(IpSet::empty(), |s, c| s.union(&IpSet::from_cidr(&c)))
}
