//! Table tests for X.509-SVID and JWT-SVID verification: every rejection has a case.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::jwt::{JwtError, b64url};
use sigil_identity::{
    Jwk, JwkSet, JwtBundle, SpiffeBundle, SvidError, SvidUsage, TrustDomain, X509Bundle,
    verify_jwt_svid, verify_x509_svid,
};
use test_case::test_case;

fn odt(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64).unwrap()
}

struct Pki {
    root: CertificateDer<'static>,
    root_params: CertificateParams,
    root_key: KeyPair,
}

impl Pki {
    fn new(td: &str) -> Self {
        let root_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
        let mut dn = DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            format!("test CA {}", hex_prefix(root_key.public_key_raw())),
        );
        p.distinguished_name = dn;
        let root = p.self_signed(&root_key).unwrap().der().clone();
        Self {
            root,
            root_params: p,
            root_key,
        }
    }

    fn bundle(&self, td: &str) -> X509Bundle {
        X509Bundle::new(TrustDomain::new(td).unwrap(), vec![self.root.clone()]).unwrap()
    }

    fn leaf(&self, f: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let now = SystemTime::now();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(
            "spiffe://example.org/ns/a/sa/b".try_into().unwrap(),
        )];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = odt(now - Duration::from_secs(60));
        p.not_after = odt(now + Duration::from_secs(3600));
        f(&mut p);
        let issuer = Issuer::from_params(&self.root_params, &self.root_key);
        p.signed_by(&key, &issuer).unwrap().der().clone()
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter()
        .skip(1)
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Valid,
    TwoUris,
    NoUri,
    CaLeaf,
    KeyCertSign,
    NoKeyUsage,
    ForeignTd,
    Expired,
    NotYetValid,
    UntrustedCa,
    Tampered,
}

#[test_case(Case::Valid, None; "valid")]
#[test_case(Case::TwoUris, Some("exactly one"); "two URI SANs")]
#[test_case(Case::NoUri, Some("no URI SAN"); "no URI SAN")]
#[test_case(Case::CaLeaf, Some("cA=true"); "CA leaf")]
#[test_case(Case::KeyCertSign, Some("keyCertSign"); "keyCertSign on leaf")]
#[test_case(Case::NoKeyUsage, Some("no key usage"); "missing key usage")]
#[test_case(Case::ForeignTd, Some("not example.org"); "foreign trust domain")]
#[test_case(Case::Expired, Some("expired"); "expired")]
#[test_case(Case::NotYetValid, Some("not valid before"); "not yet valid")]
#[test_case(Case::UntrustedCa, Some("unknown issuer"); "untrusted CA")]
#[test_case(Case::Tampered, Some(""); "bad signature")]
fn x509_svid(case: Case, want_err: Option<&str>) {
    let pki = Pki::new("example.org");
    let now = SystemTime::now();
    let mut leaf = pki.leaf(|p| match case {
        Case::TwoUris => p.subject_alt_names.push(uri("spiffe://example.org/other")),
        Case::NoUri => {
            p.subject_alt_names = vec![SanType::DnsName("a.example.org".try_into().unwrap())]
        }
        Case::CaLeaf => p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
        Case::KeyCertSign => p.key_usages.push(KeyUsagePurpose::KeyCertSign),
        Case::NoKeyUsage => p.key_usages.clear(),
        Case::ForeignTd => p.subject_alt_names = vec![uri("spiffe://evil.org/ns/a/sa/b")],
        Case::Expired => {
            p.not_before = odt(now - Duration::from_secs(7200));
            p.not_after = odt(now - Duration::from_secs(3600));
        }
        Case::NotYetValid => {
            p.not_before = odt(now + Duration::from_secs(3600));
            p.not_after = odt(now + Duration::from_secs(7200));
        }
        _ => {}
    });
    let bundle = if matches!(case, Case::UntrustedCa) {
        Pki::new("example.org").bundle("example.org")
    } else {
        pki.bundle("example.org")
    };
    if matches!(case, Case::Tampered) {
        let mut b = leaf.as_ref().to_vec();
        let n = b.len();
        b[n - 3] ^= 0x01;
        leaf = CertificateDer::from(b);
    }
    let got = verify_x509_svid(&[leaf], &bundle, SvidUsage::Client, UnixTime::now());
    match (want_err, got) {
        (None, Ok(v)) => assert_eq!(v.spiffe_id().as_str(), "spiffe://example.org/ns/a/sa/b"),
        (Some(frag), Err(e)) => assert!(e.to_string().contains(frag), "{case:?}: {e}"),
        (want, got) => panic!("{case:?}: wanted {want:?}, got {got:?}"),
    }
}

#[test]
fn empty_and_huge_chains() {
    let pki = Pki::new("example.org");
    let b = pki.bundle("example.org");
    assert_eq!(
        verify_x509_svid(&[], &b, SvidUsage::Client, UnixTime::now()).unwrap_err(),
        SvidError::EmptyChain
    );
    let junk = CertificateDer::from(vec![0u8; 10]);
    assert!(matches!(
        verify_x509_svid(&[junk], &b, SvidUsage::Client, UnixTime::now()),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn spiffe_bundle_json_round_trip() {
    let pki = Pki::new("example.org");
    let signer = jwt_key();
    let td = TrustDomain::new("example.org").unwrap();
    let b = SpiffeBundle {
        x509: pki.bundle("example.org"),
        jwt: JwtBundle {
            trust_domain: td.clone(),
            keys: JwkSet {
                keys: vec![Jwk {
                    use_: Some("jwt-svid".to_owned()),
                    ..jwk(&signer, "k1")
                }],
            },
        },
        sequence: 7,
        refresh_hint: Duration::from_secs(300),
    };
    let json = b.to_json().unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["spiffe_sequence"], 7);
    assert_eq!(v["keys"][0]["use"], "x509-svid");
    assert_eq!(v["keys"][1]["use"], "jwt-svid");
    assert_eq!(SpiffeBundle::from_json(td, json.as_bytes()).unwrap(), b);
}

fn jwt_key() -> EcdsaKeyPair {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap()
}

fn jwk(k: &EcdsaKeyPair, kid: &str) -> Jwk {
    Jwk::ec_from_point(kid, "P-256", k.public_key().as_ref()).unwrap()
}

fn sign(k: &EcdsaKeyPair, header: serde_json::Value, claims: serde_json::Value) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = k.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(sig.as_ref()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Debug, Clone, Copy)]
enum J {
    Valid,
    WrongAudience,
    BadSignature,
    UnknownKid,
    Expired,
    NotYetValid,
    ForeignTd,
    AlgNone,
    Hs256,
    NoSub,
    NoExp,
    Garbage,
}

#[test_case(J::Valid, None; "valid")]
#[test_case(J::WrongAudience, Some("audience"); "wrong audience")]
#[test_case(J::BadSignature, Some("bad signature"); "bad signature")]
#[test_case(J::UnknownKid, Some("no key with kid"); "unknown kid")]
#[test_case(J::Expired, Some("expired"); "expired")]
#[test_case(J::NotYetValid, Some("not valid before"); "not yet valid")]
#[test_case(J::ForeignTd, Some("trust domain"); "foreign trust domain")]
#[test_case(J::AlgNone, Some("not accepted"); "alg none")]
#[test_case(J::Hs256, Some("not accepted"); "hmac")]
#[test_case(J::NoSub, Some("`sub`"); "no sub")]
#[test_case(J::NoExp, Some("`exp`"); "no exp")]
#[test_case(J::Garbage, Some("malformed"); "garbage")]
fn jwt_svid(case: J, want_err: Option<&str>) {
    let k = jwt_key();
    let other = jwt_key();
    let td = TrustDomain::new("example.org").unwrap();
    let mut bundles = BTreeMap::new();
    bundles.insert(
        td.clone(),
        JwtBundle {
            trust_domain: td,
            keys: JwkSet {
                keys: vec![jwk(&k, "k1")],
            },
        },
    );
    let now = unix_now();
    let mut header = serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    let mut claims = serde_json::json!({"sub": "spiffe://example.org/ns/a/sa/b", "aud": ["db"], "exp": now + 300, "iat": now});
    let mut signer = &k;
    match case {
        J::WrongAudience => claims["aud"] = serde_json::json!("other"),
        J::BadSignature => signer = &other,
        J::UnknownKid => header["kid"] = serde_json::json!("k2"),
        J::Expired => claims["exp"] = serde_json::json!(now - 3600),
        J::NotYetValid => claims["nbf"] = serde_json::json!(now + 3600),
        J::ForeignTd => claims["sub"] = serde_json::json!("spiffe://evil.org/x"),
        J::AlgNone => header["alg"] = serde_json::json!("none"),
        J::Hs256 => header["alg"] = serde_json::json!("HS256"),
        J::NoSub => claims
            .as_object_mut()
            .unwrap()
            .remove("sub")
            .map(drop)
            .unwrap_or(()),
        J::NoExp => claims
            .as_object_mut()
            .unwrap()
            .remove("exp")
            .map(drop)
            .unwrap_or(()),
        _ => {}
    }
    let token = if matches!(case, J::Garbage) {
        "a.b".to_owned()
    } else {
        sign(signer, header, claims)
    };
    match (
        want_err,
        verify_jwt_svid(&token, &bundles, "db", SystemTime::now()),
    ) {
        (None, Ok(v)) => assert_eq!(v.spiffe_id().as_str(), "spiffe://example.org/ns/a/sa/b"),
        (Some(frag), Err(e)) => assert!(e.to_string().contains(frag), "{case:?}: {e}"),
        (want, got) => panic!("{case:?}: wanted {want:?}, got {got:?}"),
    }
}

#[test]
fn oversized_token() {
    let big = "a".repeat(sigil_identity::jwt::MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        verify_jwt_svid(&big, &BTreeMap::new(), "x", SystemTime::now()),
        Err(JwtError::TooLarge(_))
    ));
}

proptest::proptest! {
    #[test]
    fn jwt_parser_never_panics(s in "\\PC{0,300}") {
        let _ = sigil_identity::jwt::decode_unverified(&s);
    }

    #[test]
    fn cert_parser_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..1024)) {
        let _ = sigil_identity::inspect_leaf(&b);
    }
}
