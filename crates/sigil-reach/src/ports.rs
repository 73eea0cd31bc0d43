//! Port sets: per protocol, sorted disjoint inclusive ranges of port numbers. Owns: the set
//! arithmetic behind "which ports does this rule allow" and its display.

use serde::Serialize;

/// Transport protocols a NetworkPolicy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Proto {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// Parses a Kubernetes protocol name (default TCP when absent).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            None | Some("TCP") => Some(Self::Tcp),
            Some("UDP") => Some(Self::Udp),
            Some("SCTP") => Some(Self::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }

    fn idx(self) -> usize {
        match self {
            Self::Tcp => 0,
            Self::Udp => 1,
            Self::Sctp => 2,
        }
    }
}

impl From<sigil_policy::Protocol> for Proto {
    fn from(p: sigil_policy::Protocol) -> Self {
        match p {
            sigil_policy::Protocol::Tcp => Self::Tcp,
            sigil_policy::Protocol::Udp => Self::Udp,
            sigil_policy::Protocol::Sctp => Self::Sctp,
        }
    }
}

/// A set of (protocol, port) pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct PortSet {
    by_proto: [Vec<(u16, u16)>; 3],
}

impl PortSet {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every port of every protocol.
    pub fn all() -> Self {
        Self {
            by_proto: [vec![(1, 65535)], vec![(1, 65535)], vec![(1, 65535)]],
        }
    }

    /// Every port of one protocol.
    pub fn all_of(p: Proto) -> Self {
        Self::range(p, 1, 65535)
    }

    pub fn single(p: Proto, port: u16) -> Self {
        Self::range(p, port, port)
    }

    pub fn range(p: Proto, lo: u16, hi: u16) -> Self {
        let mut s = Self::default();
        if lo <= hi
            && let Some(v) = s.by_proto.get_mut(p.idx())
        {
            v.push((lo, hi));
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.by_proto.iter().all(Vec::is_empty)
    }

    pub fn is_all(&self) -> bool {
        *self == Self::all()
    }

    pub fn contains(&self, p: Proto, port: u16) -> bool {
        self.by_proto
            .get(p.idx())
            .is_some_and(|v| v.iter().any(|(a, b)| *a <= port && port <= *b))
    }

    pub fn ranges(&self, p: Proto) -> &[(u16, u16)] {
        self.by_proto.get(p.idx()).map_or(&[], Vec::as_slice)
    }

    pub fn union_with(&mut self, other: &PortSet) {
        for (mine, theirs) in self.by_proto.iter_mut().zip(&other.by_proto) {
            if theirs.is_empty() {
                continue;
            }
            let mut all: Vec<(u16, u16)> = mine.iter().chain(theirs).copied().collect();
            all.sort_unstable();
            let mut out: Vec<(u16, u16)> = Vec::with_capacity(all.len());
            for (a, b) in all {
                match out.last_mut() {
                    Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                    _ => out.push((a, b)),
                }
            }
            *mine = out;
        }
    }

    pub fn intersection(&self, other: &PortSet) -> PortSet {
        let mut out = PortSet::default();
        for ((o, a), b) in out
            .by_proto
            .iter_mut()
            .zip(&self.by_proto)
            .zip(&other.by_proto)
        {
            for &(x1, y1) in a {
                for &(x2, y2) in b {
                    let lo = x1.max(x2);
                    let hi = y1.min(y2);
                    if lo <= hi {
                        o.push((lo, hi));
                    }
                }
            }
            o.sort_unstable();
        }
        out
    }
}

impl std::fmt::Display for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            return f.write_str("any");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut parts = Vec::new();
        for p in Proto::ALL {
            let r = self.ranges(p);
            if r == [(1, 65535)] {
                parts.push(format!("{}/any", p.as_str()));
                continue;
            }
            for (a, b) in r {
                if a == b {
                    parts.push(format!("{}/{a}", p.as_str()));
                } else {
                    parts.push(format!("{}/{a}-{b}", p.as_str()));
                }
            }
        }
        f.write_str(&parts.join(","))
    }
}

impl Serialize for PortSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
