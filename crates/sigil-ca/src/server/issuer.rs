//! The OIDC issuer of JWT-SVIDs: one URL that is both the `iss` claim of every token and the
//! `issuer` of `/.well-known/openid-configuration`. Relying parties (cloud IAM, object stores)
//! fetch `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`, and accept a token only
//! if its `iss` equals the discovery `issuer` exactly; so the URL must be one they can reach.
//!
//! Owns: validating an explicit issuer URL and deriving the default from the listen address.
//! Must not: guess a public name. A server listening on an unspecified address (`0.0.0.0`, `::`)
//! has no URL to derive, and starting with `https://0.0.0.0:8443` as issuer would publish
//! tokens no relying party can validate, so it refuses to start instead.

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;

/// Why the issuer URL is unusable.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(
        "no issuer URL: the server listens on {listen}, an unspecified address, so `https://{listen}` is not a URL relying parties can fetch; hint: pass --issuer-url https://<public host name>:{port} (env SIGIL_ISSUER_URL), the URL where relying parties reach this server's /.well-known/openid-configuration"
    )]
    Unspecified { listen: SocketAddr, port: u16 },
    #[error("issuer URL {url:?} {reason}; hint: {hint}")]
    Invalid {
        url: String,
        reason: String,
        hint: &'static str,
    },
}

/// The issuer URL (no trailing `/`) and the host relying parties connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub url: String,
    pub host: IssuerHost,
}

/// Host of the issuer URL, to be added to the server certificate's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerHost {
    Dns(String),
    Ip(IpAddr),
}

/// The issuer: `explicit` validated, or `https://<listen>` when `listen` is a specific address.
pub fn resolve(explicit: Option<&str>, listen: SocketAddr) -> Result<Issuer, IssuerError> {
    match explicit {
        Some(raw) => parse(raw),
        None if listen.ip().is_unspecified() => Err(IssuerError::Unspecified {
            listen,
            port: listen.port(),
        }),
        None => parse(&format!("https://{listen}")),
    }
}

fn parse(raw: &str) -> Result<Issuer, IssuerError> {
    let bad = |reason: &str, hint: &'static str| IssuerError::Invalid {
        url: raw.to_owned(),
        reason: reason.to_owned(),
        hint,
    };
    const FORM: &str =
        "give it as https://<host>[:port][/path], e.g. https://sigil.example.org:8443";
    let url = Url::parse(raw.trim()).map_err(|e| bad(&format!("is not a URL ({e})"), FORM))?;
    if url.scheme() != "https" {
        return Err(bad(
            "is not https",
            "relying parties fetch OIDC discovery over https only; give https://<host>[:port]",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("has user information", FORM));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "has a query or fragment, which an OIDC issuer must not have",
            FORM,
        ));
    }
    let host = match url.host_str().filter(|h| !h.is_empty()) {
        None => return Err(bad("has no host", FORM)),
        Some(h) => {
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(ip) => IssuerHost::Ip(ip),
                Err(_) => IssuerHost::Dns(h.to_owned()),
            }
        }
    };
    if matches!(host, IssuerHost::Ip(ip) if ip.is_unspecified()) {
        return Err(bad(
            "names an unspecified address, which no relying party can connect to",
            "use the public host name or address of this server, e.g. https://sigil.example.org:8443",
        ));
    }
    let url = url.as_str().trim_end_matches('/').to_owned();
    Ok(Issuer { url, host })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use test_case::test_case;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test_case("0.0.0.0:8443"; "ipv4 any")]
    #[test_case("[::]:8443"; "ipv6 any")]
    fn unspecified_listen_needs_an_explicit_issuer(listen: &str) {
        let e = resolve(None, addr(listen)).unwrap_err().to_string();
        assert!(
            e.contains("--issuer-url") && e.contains("unspecified") && e.contains(":8443"),
            "{e}"
        );
    }

    #[test]
    fn specific_listen_address_is_the_default() {
        let i = resolve(None, addr("127.0.0.1:8443")).unwrap();
        assert_eq!(i.url, "https://127.0.0.1:8443");
        assert_eq!(i.host, IssuerHost::Ip(IpAddr::from([127, 0, 0, 1])));
        let i = resolve(None, addr("[::1]:9000")).unwrap();
        assert_eq!(i.url, "https://[::1]:9000");
    }

    #[test_case("https://sigil.example.org/", "https://sigil.example.org"; "trailing slash")]
    #[test_case("https://sigil.example.org:8443", "https://sigil.example.org:8443"; "with port")]
    #[test_case("https://example.org/sigil/", "https://example.org/sigil"; "with path")]
    #[test_case("https://SIGIL.example.org", "https://sigil.example.org"; "host lowercased")]
    fn explicit_issuer_is_normalized(raw: &str, want: &str) {
        let i = resolve(Some(raw), addr("0.0.0.0:8443")).unwrap();
        assert_eq!(i.url, want);
    }

    #[test_case("http://sigil.example.org", "not https"; "plaintext")]
    #[test_case("https://0.0.0.0:8443", "unspecified"; "any address")]
    #[test_case("https://[::]:8443", "unspecified"; "ipv6 any address")]
    #[test_case("https://sigil.example.org/?a=b", "query"; "query")]
    #[test_case("https://sigil.example.org/#x", "fragment"; "fragment")]
    #[test_case("https://user@sigil.example.org", "user"; "userinfo")]
    #[test_case("sigil.example.org", "not a URL"; "no scheme")]
    fn bad_explicit_issuer(raw: &str, want: &str) {
        let e = resolve(Some(raw), addr("127.0.0.1:8443"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains("hint:"), "{e}");
    }
}
