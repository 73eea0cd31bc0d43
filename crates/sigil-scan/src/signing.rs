//! OpenSSF model-signing (v1.0 predicate) with keys: a Sigstore bundle (v0.3 JSON) holding a
//! DSSE envelope over an in-toto statement whose predicate lists every file's SHA-256 and whose
//! subject digest is SHA-256 over those digests in name order. ECDSA P-256 (SHA-256) and P-384
//! (SHA-384) through aws-lc-rs; the bundle's key hint is SHA-256 of the public key's PEM text,
//! as the `model-signing` package writes it.
//!
//! Verification yields a [`VerifiedManifest`], constructible only here, which is then compared
//! with the files on disk.

use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::digest::sha256_bytes;

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// Paths `model-signing` ignores by default.
pub const DEFAULT_IGNORE: &[&str] = &[".gitattributes", ".gitignore", ".github", ".git"];
/// Largest signature file read.
pub const MAX_BUNDLE: usize = 64 * 1024 * 1024;

/// Signing and verification errors.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "key: {0}; hint: use a PEM ECDSA P-256 or P-384 key (PKCS#8 or SEC1 private key, SubjectPublicKeyInfo public key)"
    )]
    Key(String),
    #[error("signature bundle: {0}")]
    Bundle(String),
    #[error("signature does not verify with this public key")]
    BadSignature,
    #[error("the bundle's key hint {found} does not match the public key ({expected})")]
    KeyMismatch { expected: String, found: String },
    #[error("statement: {0}")]
    Statement(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }
    fn verifying(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        }
    }
}

/// Decodes the first PEM block with one of `labels`.
pub fn pem_decode(text: &str, labels: &[&str]) -> Result<(String, Zeroizing<Vec<u8>>), SignError> {
    for label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let Some(i) = text.find(&begin) {
            let rest = text.get(i + begin.len()..).unwrap_or_default();
            let j = rest
                .find(&end)
                .ok_or_else(|| SignError::Key(format!("PEM block {label} has no END line")))?;
            let body: String = rest
                .get(..j)
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let der = B64
                .decode(body)
                .map_err(|e| SignError::Key(format!("PEM base64: {e}")))?;
            return Ok(((*label).to_owned(), Zeroizing::new(der)));
        }
    }
    Err(SignError::Key(format!(
        "no PEM block of type {}",
        labels.join(" or ")
    )))
}

/// PEM text of a SubjectPublicKeyInfo, exactly as Python's `cryptography` writes it.
pub fn spki_pem(der: &[u8]) -> String {
    let b = B64.encode(der);
    let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END PUBLIC KEY-----\n");
    s
}

/// DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// A signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Reads a PEM private key (PKCS#8 or SEC1), P-256 or P-384.
    pub fn from_pem(text: &str) -> Result<Self, SignError> {
        let (_, der) = pem_decode(text, &["PRIVATE KEY", "EC PRIVATE KEY"])?;
        for curve in [Curve::P256, Curve::P384] {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(curve.signing(), &der) {
                let spki_der = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| SignError::Key("cannot encode the public key".into()))?
                    .as_ref()
                    .to_vec();
                return Ok(Self { pair, spki_der });
            }
        }
        Err(SignError::Key(
            "not an ECDSA P-256 or P-384 private key".into(),
        ))
    }

    pub fn public_pem(&self) -> String {
        spki_pem(&self.spki_der)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        self.pair
            .sign(&rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError::Key("signing failed".into()))
    }
}

/// A public key for verification.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    spki_der: Vec<u8>,
    curve: Curve,
}

impl VerifyingKey {
    pub fn from_pem(text: &str) -> Result<Self, SignError> {
        let (_, der) = pem_decode(text, &["PUBLIC KEY"])?;
        let curve = curve_of_spki(&der)
            .ok_or_else(|| SignError::Key("not an ECDSA P-256 or P-384 public key".into()))?;
        Ok(Self {
            spki_der: der.to_vec(),
            curve,
        })
    }

    /// The key hint `model-signing` records: SHA-256 of the PEM text.
    pub fn hint(&self) -> String {
        sha256_bytes(spki_pem(&self.spki_der).as_bytes())
    }
}

/// OIDs of the named curves inside a SubjectPublicKeyInfo.
fn curve_of_spki(der: &[u8]) -> Option<Curve> {
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let has = |n: &[u8]| der.windows(n.len()).any(|w| w == n);
    if has(P256) {
        Some(Curve::P256)
    } else if has(P384) {
        Some(Curve::P384)
    } else {
        None
    }
}

/// A file name and its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub algorithm: String,
    pub digest: String,
}

/// The statement for `model_name` over `files` (name → sha256 hex).
pub fn statement(model_name: &str, files: &BTreeMap<String, String>, ignore: &[String]) -> Value {
    let mut root = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut resources = Vec::new();
    for (name, d) in files {
        root.update(&hex::decode(d).unwrap_or_default());
        resources.push(json!({"algorithm": "sha256", "digest": d, "name": name}));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": hex::encode(root.finish().as_ref())}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": resources,
            "serialization": {
                "method": "files",
                "ignore_paths": ignore,
                "hash_type": "sha256",
                "allow_symlinks": false
            }
        }
    })
}

/// Signs a statement and returns the bundle JSON.
pub fn sign(key: &SigningKey, statement: &Value) -> Result<String, SignError> {
    let payload =
        serde_json::to_vec_pretty(statement).map_err(|e| SignError::Statement(e.to_string()))?;
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload))?;
    let hint = sha256_bytes(key.public_pem().as_bytes());
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": B64.encode(&payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": B64.encode(sig), "keyid": ""}]
        }
    });
    serde_json::to_string_pretty(&bundle).map_err(|e| SignError::Statement(e.to_string()))
}

/// What a verified signature vouches for. Only [`verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub model_name: String,
    /// name → sha256 hex.
    pub files: BTreeMap<String, String>,
    pub ignore_paths: Vec<String>,
}

fn s<'a>(v: &'a Value, ptr: &str) -> Result<&'a str, SignError> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .ok_or_else(|| SignError::Bundle(format!("missing string at {ptr}")))
}

/// Verifies a bundle with `key` and returns the manifest it signs.
pub fn verify(bundle_json: &str, key: &VerifyingKey) -> Result<VerifiedManifest, SignError> {
    if bundle_json.len() > MAX_BUNDLE {
        return Err(SignError::Bundle(format!("larger than {MAX_BUNDLE} bytes")));
    }
    let b: Value = serde_json::from_str(bundle_json)
        .map_err(|e| SignError::Bundle(format!("not JSON: {e}")))?;
    let mt = s(&b, "/mediaType")?;
    if mt != BUNDLE_MEDIA_TYPE {
        return Err(SignError::Bundle(format!(
            "media type {mt:?}, expected {BUNDLE_MEDIA_TYPE}"
        )));
    }
    if let Some(hint) = b
        .pointer("/verificationMaterial/publicKey/hint")
        .and_then(Value::as_str)
    {
        let expected = key.hint();
        if hint != expected {
            return Err(SignError::KeyMismatch {
                expected,
                found: hint.to_owned(),
            });
        }
    }
    let pt = s(&b, "/dsseEnvelope/payloadType")?;
    if pt != PAYLOAD_TYPE {
        return Err(SignError::Bundle(format!(
            "payload type {pt:?}, expected {PAYLOAD_TYPE}"
        )));
    }
    let payload = B64
        .decode(s(&b, "/dsseEnvelope/payload")?)
        .map_err(|e| SignError::Bundle(format!("payload base64: {e}")))?;
    let sigs = b
        .pointer("/dsseEnvelope/signatures")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 1)
        .ok_or_else(|| SignError::Bundle("expected exactly one DSSE signature".into()))?;
    let sig = B64
        .decode(
            sigs.first()
                .and_then(|x| x.get("sig"))
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )
        .map_err(|e| SignError::Bundle(format!("signature base64: {e}")))?;
    UnparsedPublicKey::new(key.curve.verifying(), &key.spki_der)
        .verify(&pae(PAYLOAD_TYPE, &payload), &sig)
        .map_err(|_| SignError::BadSignature)?;
    // Only now is the payload trusted.
    let st: Value = serde_json::from_slice(&payload)
        .map_err(|e| SignError::Statement(format!("not JSON: {e}")))?;
    if s(&st, "/_type")? != STATEMENT_TYPE || s(&st, "/predicateType")? != PREDICATE_TYPE {
        return Err(SignError::Statement(format!(
            "expected {STATEMENT_TYPE} with predicate {PREDICATE_TYPE}"
        )));
    }
    let subjects = st
        .get("subject")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 1)
        .ok_or_else(|| SignError::Statement("expected exactly one subject".into()))?;
    let subject = subjects
        .first()
        .ok_or_else(|| SignError::Statement("no subject".into()))?;
    let model_name = s(subject, "/name")?.to_owned();
    let root = s(subject, "/digest/sha256")?.to_owned();
    let method = s(&st, "/predicate/serialization/method")?;
    if method != "files" {
        return Err(SignError::Statement(format!(
            "serialization method {method:?} is not supported (only \"files\")"
        )));
    }
    let mut files = BTreeMap::new();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for r in st
        .pointer("/predicate/resources")
        .and_then(Value::as_array)
        .ok_or_else(|| SignError::Statement("no resources".into()))?
    {
        let r: Resource = serde_json::from_value(r.clone())
            .map_err(|e| SignError::Statement(format!("resource: {e}")))?;
        if r.algorithm != "sha256" {
            return Err(SignError::Statement(format!(
                "resource {} uses {}, only sha256 is supported",
                r.name, r.algorithm
            )));
        }
        let d = hex::decode(&r.digest)
            .map_err(|_| SignError::Statement(format!("resource {} digest is not hex", r.name)))?;
        ctx.update(&d);
        if files
            .insert(r.name.clone(), r.digest.to_ascii_lowercase())
            .is_some()
        {
            return Err(SignError::Statement(format!(
                "resource {} listed twice",
                r.name
            )));
        }
    }
    let got = hex::encode(ctx.finish().as_ref());
    if got != root {
        return Err(SignError::Statement(format!(
            "subject digest {root} does not match the resources ({got})"
        )));
    }
    let ignore_paths = st
        .pointer("/predicate/serialization/ignore_paths")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(VerifiedManifest {
        model_name,
        files,
        ignore_paths,
    })
}

/// Whether `rel` is covered by an ignore entry (the entry itself or anything under it).
pub fn ignored(rel: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|i| {
        let i = i.trim_end_matches('/');
        rel == i || rel.strip_prefix(i).is_some_and(|r| r.starts_with('/'))
    })
}

/// SHA-256 of every file under `dir` not covered by `ignore`, in parallel.
pub fn hash_dir(
    dir: &Path,
    ignore: &[String],
    threads: usize,
) -> Result<BTreeMap<String, String>, crate::lockfile::LockError> {
    let targets: Vec<_> = crate::lockfile::collect_plain(dir)?
        .into_iter()
        .filter(|t| !ignored(&t.rel, ignore))
        .collect();
    let hashed = crate::digest::par_map(
        &targets,
        threads,
        |t| crate::digest::sha256_file(&t.abs),
        || {},
    );
    let mut out = BTreeMap::new();
    for (t, h) in targets.iter().zip(hashed) {
        out.insert(t.rel.clone(), h?.0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_pem() -> String {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let b = B64.encode(doc.as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{b}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn sign_then_verify_and_tamper() {
        let k = SigningKey::from_pem(&p256_pem()).unwrap();
        let pubk = VerifyingKey::from_pem(&k.public_pem()).unwrap();
        let mut files = BTreeMap::new();
        files.insert("a.bin".to_owned(), sha256_bytes(b"a"));
        files.insert("b/c.json".to_owned(), sha256_bytes(b"c"));
        let b = sign(&k, &statement("m", &files, &[])).unwrap();
        let m = verify(&b, &pubk).unwrap();
        assert_eq!(m.files, files);
        assert_eq!(m.model_name, "m");
        // a different key fails
        let other = SigningKey::from_pem(&p256_pem()).unwrap();
        let otherk = VerifyingKey::from_pem(&other.public_pem()).unwrap();
        assert!(matches!(
            verify(&b, &otherk),
            Err(SignError::KeyMismatch { .. })
        ));
        // a tampered payload fails
        let mut v: Value = serde_json::from_str(&b).unwrap();
        let p = v["dsseEnvelope"]["payload"].as_str().unwrap().to_owned();
        let mut raw = B64.decode(p).unwrap();
        let i = raw.iter().position(|&c| c == b'a').unwrap();
        raw[i] = b'z';
        v["dsseEnvelope"]["payload"] = Value::String(B64.encode(raw));
        assert!(matches!(
            verify(&v.to_string(), &pubk),
            Err(SignError::BadSignature)
        ));
    }
}
