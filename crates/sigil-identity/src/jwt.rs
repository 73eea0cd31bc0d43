//! JSON Web Signatures, JWKs and JWT-SVIDs.
//!
//! Owns: compact-JWS parsing with size limits, signature verification against a JWK set (ES256,
//! ES384, RS256/384/512, PS256/384/512 via aws-lc-rs), the time claims, and the SPIFFE JWT-SVID
//! rules. `alg: none` and HMAC algorithms are never accepted. A [`VerifiedJwtSvid`] can only be
//! made by [`verify_jwt_svid`]; [`VerifiedJws`] only by [`verify_jws`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{SpiffeId, TrustDomain};

/// Largest token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`/`nbf`/`iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is {0} bytes, more than {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted; hint: use ES256, ES384, RS256 or PS256")]
    BadAlgorithm(String),
    #[error("token header has no `kid`")]
    MissingKid,
    #[error("no key with kid {0:?} in the trust bundle")]
    UnknownKid(String),
    #[error("key {kid:?} cannot verify {alg} signatures")]
    KeyAlgMismatch { kid: String, alg: String },
    #[error("bad signature")]
    BadSignature,
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("claim `{0}` is malformed")]
    BadClaim(&'static str),
    #[error("token expired at unix time {0}")]
    Expired(u64),
    #[error("token is not valid before unix time {0}")]
    NotYetValid(u64),
    #[error("token audience {found:?} does not include {expected:?}")]
    WrongAudience {
        found: Vec<String>,
        expected: String,
    },
    #[error("`sub` {sub:?} is not a SPIFFE ID: {reason}")]
    BadSubject { sub: String, reason: String },
    #[error("SPIFFE ID {id} is in trust domain {found}, not {expected}")]
    ForeignTrustDomain {
        id: String,
        found: String,
        expected: String,
    },
}

/// A JSON Web Key (public only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jwk({} {:?} {:?})", self.kty, self.crv, self.kid)
    }
}

impl Jwk {
    /// An EC public key from an uncompressed SEC1 point (0x04 || x || y).
    pub fn ec_from_point(kid: &str, crv: &str, point: &[u8]) -> Option<Self> {
        let n = match crv {
            "P-256" => 32,
            "P-384" => 48,
            _ => return None,
        };
        if point.len() != 1 + 2 * n || point.first() != Some(&4) {
            return None;
        }
        Some(Self {
            kty: "EC".to_owned(),
            kid: Some(kid.to_owned()),
            use_: None,
            alg: None,
            crv: Some(crv.to_owned()),
            x: Some(URL_SAFE_NO_PAD.encode(point.get(1..=n)?)),
            y: Some(URL_SAFE_NO_PAD.encode(point.get(1 + n..)?)),
            n: None,
            e: None,
            x5c: None,
        })
    }

    fn b64(field: &Option<String>, name: &'static str) -> Result<Vec<u8>, JwtError> {
        let s = field.as_deref().ok_or(JwtError::BadClaim(name))?;
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JwtError::BadClaim(name))
    }

    /// Verifies `sig` over `msg` with this key under `alg`.
    fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let mismatch = || JwtError::KeyAlgMismatch {
            kid: self.kid.clone().unwrap_or_default(),
            alg: alg.to_owned(),
        };
        match (self.kty.as_str(), alg) {
            ("EC", "ES256" | "ES384") => {
                let (want_crv, algo): (&str, &'static signature::EcdsaVerificationAlgorithm) =
                    if alg == "ES256" {
                        ("P-256", &signature::ECDSA_P256_SHA256_FIXED)
                    } else {
                        ("P-384", &signature::ECDSA_P384_SHA384_FIXED)
                    };
                if self.crv.as_deref() != Some(want_crv) {
                    return Err(mismatch());
                }
                let mut point = vec![4u8];
                point.extend(Self::b64(&self.x, "x")?);
                point.extend(Self::b64(&self.y, "y")?);
                UnparsedPublicKey::new(algo, point)
                    .verify(msg, sig)
                    .map_err(|_| JwtError::BadSignature)
            }
            ("RSA", "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512") => {
                let params: &'static signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                let key = RsaPublicKeyComponents {
                    n: Self::b64(&self.n, "n")?,
                    e: Self::b64(&self.e, "e")?,
                };
                key.verify(params, msg, sig)
                    .map_err(|_| JwtError::BadSignature)
            }
            _ => Err(mismatch()),
        }
    }
}

/// A JWK set: `{"keys": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::x509::BundleError> {
        serde_json::from_slice(bytes).map_err(|e| crate::x509::BundleError::Json(e.to_string()))
    }

    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The JWT signing keys of one trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtBundle {
    pub trust_domain: TrustDomain,
    pub keys: JwkSet,
}

/// A JWS header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// A token whose signature verified against a JWK set. Time claims are not checked yet.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJws {
    pub header: JwsHeader,
    pub claims: Map<String, Value>,
}

const ACCEPTED_ALGS: [&str; 8] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
];

/// Splits a compact JWS and decodes its header and claims, without verifying anything.
pub fn decode_unverified(token: &str) -> Result<(JwsHeader, Map<String, Value>), JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "expected three dot-separated parts".to_owned(),
        ));
    };
    let header: JwsHeader = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| JwtError::Malformed("header is not base64url".to_owned()))?,
    )
    .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let claims: Map<String, Value> = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| JwtError::Malformed("claims are not base64url".to_owned()))?,
    )
    .map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
    Ok((header, claims))
}

/// Verifies the signature of a compact JWS with the key its `kid` names.
pub fn verify_jws(token: &str, keys: &JwkSet) -> Result<VerifiedJws, JwtError> {
    let (header, claims) = decode_unverified(token)?;
    if !ACCEPTED_ALGS.contains(&header.alg.as_str()) {
        return Err(JwtError::BadAlgorithm(header.alg));
    }
    if let Some(typ) = &header.typ
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(JwtError::Malformed(format!(
            "typ {typ:?} is not JWT or JOSE"
        )));
    }
    let kid = header.kid.as_deref().ok_or(JwtError::MissingKid)?;
    let key = keys
        .find(kid)
        .ok_or_else(|| JwtError::UnknownKid(kid.to_owned()))?;
    let dot = token
        .rfind('.')
        .ok_or_else(|| JwtError::Malformed("no signature".to_owned()))?;
    let (signing_input, sig_b64) = token.split_at(dot);
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64.trim_start_matches('.'))
        .map_err(|_| JwtError::Malformed("signature is not base64url".to_owned()))?;
    key.verify(&header.alg, signing_input.as_bytes(), &sig)?;
    Ok(VerifiedJws { header, claims })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn num_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(JwtError::BadClaim(name)),
    }
}

/// Checks `exp` (required), `nbf` and `iat` (optional) against `now` with [`LEEWAY`].
pub fn check_times(claims: &Map<String, Value>, now: SystemTime) -> Result<(), JwtError> {
    let now = unix(now);
    let leeway = LEEWAY.as_secs();
    let exp = num_claim(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired(exp));
    }
    for name in ["nbf", "iat"] {
        let name: &'static str = name;
        if let Some(t) = num_claim(claims, name)?
            && t > now.saturating_add(leeway)
        {
            return Err(JwtError::NotYetValid(t));
        }
    }
    Ok(())
}

/// The `aud` claim as a list (a string or an array of strings).
pub fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    match claims.get("aud") {
        None => Err(JwtError::MissingClaim("aud")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(JwtError::BadClaim("aud"))
            })
            .collect(),
        Some(_) => Err(JwtError::BadClaim("aud")),
    }
}

/// A JWT-SVID that passed every check.
#[derive(Clone, PartialEq)]
pub struct VerifiedJwtSvid {
    spiffe_id: SpiffeId,
    audience: Vec<String>,
    expiry: u64,
    claims: Map<String, Value>,
}

impl VerifiedJwtSvid {
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }
    pub fn audience(&self) -> &[String] {
        &self.audience
    }
    /// `exp`, unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

impl fmt::Debug for VerifiedJwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VerifiedJwtSvid({}, aud={:?})",
            self.spiffe_id, self.audience
        )
    }
}

/// Verifies a JWT-SVID: signature by a key of the subject's trust domain, `sub` a SPIFFE ID,
/// `aud` containing `audience`, `exp` in the future.
pub fn verify_jwt_svid(
    token: &str,
    bundles: &BTreeMap<TrustDomain, JwtBundle>,
    audience: &str,
    now: SystemTime,
) -> Result<VerifiedJwtSvid, JwtError> {
    let (_, unverified) = decode_unverified(token)?;
    let sub = unverified
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingClaim("sub"))?;
    let id: SpiffeId = sub
        .parse()
        .map_err(|e: crate::id::IdError| JwtError::BadSubject {
            sub: sub.to_owned(),
            reason: e.to_string(),
        })?;
    let td = id.trust_domain();
    let bundle = bundles
        .get(&td)
        .ok_or_else(|| JwtError::ForeignTrustDomain {
            id: id.to_string(),
            found: td.to_string(),
            expected: bundles
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let jws = verify_jws(token, &bundle.keys)?;
    check_times(&jws.claims, now)?;
    let aud = audiences(&jws.claims)?;
    if !aud.iter().any(|a| a == audience) {
        return Err(JwtError::WrongAudience {
            found: aud,
            expected: audience.to_owned(),
        });
    }
    let expiry = num_claim(&jws.claims, "exp")?.unwrap_or(0);
    Ok(VerifiedJwtSvid {
        spiffe_id: id,
        audience: aud,
        expiry,
        claims: jws.claims,
    })
}

/// Base64url without padding (for callers that build tokens).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
