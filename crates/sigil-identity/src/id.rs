//! SPIFFE IDs and trust domains, parsed strictly per the SPIFFE-ID standard.
//!
//! Owns: syntax of `spiffe://<trust-domain>/<path>`. Must not: do I/O or look anything up.

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID we accept (the standard says URIs should stay within 2048 bytes).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name (a DNS name).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("empty SPIFFE ID")]
    Empty,
    #[error("SPIFFE ID is {0} bytes, longer than {MAX_SPIFFE_ID_LEN}")]
    TooLong(usize),
    #[error("scheme must be `spiffe://` (got {0:?}); hint: write spiffe://<trust-domain>/<path>")]
    WrongScheme(String),
    #[error("trust domain is empty; hint: write spiffe://example.org/...")]
    EmptyTrustDomain,
    #[error("trust domain {0:?} is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong(String),
    #[error(
        "trust domain {0:?} has character {1:?}; hint: use lowercase letters, digits, `.`, `-` and `_` only (no port, user or uppercase)"
    )]
    BadTrustDomainChar(String, char),
    #[error("path segment of {0:?} is empty; hint: no `//` and no trailing `/`")]
    EmptySegment(String),
    #[error("path of {0:?} has a `.` or `..` segment")]
    DotSegment(String),
    #[error(
        "path of {0:?} has character {1:?}; hint: use letters, digits, `.`, `-` and `_` only (no query, fragment or percent-encoding)"
    )]
    BadPathChar(String, char),
}

/// A SPIFFE trust domain such as `ai.example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name, or the trust domain of a `spiffe://td` URI.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let name = s.strip_prefix("spiffe://").unwrap_or(s);
        if name.is_empty() {
            return Err(IdError::EmptyTrustDomain);
        }
        if name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(IdError::TrustDomainTooLong(name.to_owned()));
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(IdError::BadTrustDomainChar(name.to_owned(), c));
        }
        Ok(Self(name.to_owned()))
    }

    /// The bare name, without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<td>`, the form used in bundles and name constraints.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }

    /// Builds the SPIFFE ID `spiffe://<td><path>`; `path` must start with `/`.
    pub fn id(&self, path: &str) -> Result<SpiffeId, IdError> {
        SpiffeId::from_str(&format!("spiffe://{}{}", self.0, path))
    }

    /// The Kubernetes-style ID `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    pub fn k8s_id(&self, namespace: &str, service_account: &str) -> Result<SpiffeId, IdError> {
        self.id(&format!("/ns/{namespace}/sa/{service_account}"))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A SPIFFE ID: `spiffe://<trust-domain>[/<segment>...]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    full: String,
    td_len: usize,
}

impl SpiffeId {
    /// The trust domain part.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    /// The trust domain name, borrowed.
    pub fn trust_domain_str(&self) -> &str {
        self.full.get(9..9 + self.td_len).unwrap_or_default()
    }

    /// The path, beginning with `/`, or empty for a trust-domain-only ID.
    pub fn path(&self) -> &str {
        self.full.get(9 + self.td_len..).unwrap_or_default()
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong(s.len()));
        }
        let Some(rest) = s.strip_prefix("spiffe://") else {
            let scheme = s.split_once(':').map_or(s, |(scheme, _)| scheme);
            return Err(IdError::WrongScheme(scheme.to_owned()));
        };
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let td = TrustDomain::new(td)?;
        if !path.is_empty() {
            for segment in path.split('/').skip(1) {
                if segment.is_empty() {
                    return Err(IdError::EmptySegment(s.to_owned()));
                }
                if segment == "." || segment == ".." {
                    return Err(IdError::DotSegment(s.to_owned()));
                }
                if let Some(c) = segment
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(IdError::BadPathChar(s.to_owned(), c));
                }
            }
        }
        Ok(Self {
            full: s.to_owned(),
            td_len: td.0.len(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("spiffe://example.org", "example.org", ""; "trust domain only")]
    #[test_case("spiffe://example.org/ns/rag/sa/api", "example.org", "/ns/rag/sa/api"; "k8s style")]
    #[test_case("spiffe://a-b_c.d/x.y/Z-9_", "a-b_c.d", "/x.y/Z-9_"; "allowed chars")]
    fn parses(s: &str, td: &str, path: &str) {
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(id.trust_domain_str(), td);
        assert_eq!(id.path(), path);
        assert_eq!(id.to_string(), s);
        assert_eq!(id.to_string().parse::<SpiffeId>().unwrap(), id);
    }

    #[test_case("", IdError::Empty; "empty")]
    #[test_case("https://example.org/a", IdError::WrongScheme("https".into()); "wrong scheme")]
    #[test_case("SPIFFE://example.org/a", IdError::WrongScheme("SPIFFE".into()); "uppercase scheme")]
    #[test_case("spiffe:///a", IdError::EmptyTrustDomain; "empty td")]
    #[test_case("spiffe://Example.org/a", IdError::BadTrustDomainChar("Example.org".into(), 'E'); "uppercase td")]
    #[test_case("spiffe://example.org:8080/a", IdError::BadTrustDomainChar("example.org:8080".into(), ':'); "port")]
    #[test_case("spiffe://u@example.org/a", IdError::BadTrustDomainChar("u@example.org".into(), '@'); "userinfo")]
    #[test_case("spiffe://example.org/", IdError::EmptySegment("spiffe://example.org/".into()); "trailing slash")]
    #[test_case("spiffe://example.org/a//b", IdError::EmptySegment("spiffe://example.org/a//b".into()); "double slash")]
    #[test_case("spiffe://example.org/a/../b", IdError::DotSegment("spiffe://example.org/a/../b".into()); "dot dot")]
    #[test_case("spiffe://example.org/a?x=1", IdError::BadPathChar("spiffe://example.org/a?x=1".into(), '?'); "query")]
    #[test_case("spiffe://example.org/a#f", IdError::BadPathChar("spiffe://example.org/a#f".into(), '#'); "fragment")]
    #[test_case("spiffe://example.org/a%20b", IdError::BadPathChar("spiffe://example.org/a%20b".into(), '%'); "percent")]
    fn rejects(s: &str, want: IdError) {
        assert_eq!(s.parse::<SpiffeId>().unwrap_err(), want);
    }

    #[test]
    fn too_long() {
        let s = format!("spiffe://example.org/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert!(matches!(s.parse::<SpiffeId>(), Err(IdError::TooLong(_))));
    }

    #[test]
    fn k8s_ids() {
        let td = TrustDomain::new("ai.example.org").unwrap();
        let id = td.k8s_id("rag", "rag-api").unwrap();
        assert_eq!(id.as_str(), "spiffe://ai.example.org/ns/rag/sa/rag-api");
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&TrustDomain::new("other.org").unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<SpiffeId>();
        }

        #[test]
        fn valid_ids_round_trip(td in "[a-z0-9._-]{1,30}", segs in proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,10}", 0..5)) {
            let path: String = segs.iter().filter(|s| *s != "." && *s != "..").map(|s| format!("/{s}")).collect();
            let s = format!("spiffe://{td}{path}");
            let id: SpiffeId = s.parse().unwrap();
            proptest::prop_assert_eq!(id.to_string(), s);
            proptest::prop_assert_eq!(id.path(), path.as_str());
        }
    }
}
