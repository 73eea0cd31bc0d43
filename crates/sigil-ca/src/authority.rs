//! The certificate authority: generations of (root, intermediate, JWT key), issuance of
//! X.509-SVIDs and JWT-SVIDs, and rotation with no window where valid SVIDs fail to verify.
//!
//! Pure: callers pass `now`; persistence is `store`'s job. Private keys live in `Zeroizing`
//! buffers and in aws-lc key objects (which clear key material when freed); they are never
//! printed (`Debug` is redacted).
//!
//! Rotation: a generation is `Prepared` (in the bundle, signs nothing), then `Active` (signs),
//! then `Retiring` (still in the bundle until the last SVID it signed expires), then dropped.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sigil_identity::jwt::b64url;
use sigil_identity::{Jwk, JwkSet, JwtBundle, SpiffeBundle, SpiffeId, TrustDomain, X509Bundle};
use zeroize::Zeroizing;

use crate::csr::ValidCsr;

/// Root CA lifetime.
pub const ROOT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Intermediate (signing) CA lifetime.
pub const INTERMEDIATE_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Backdating of `notBefore` to tolerate clock skew between nodes.
pub const BACKDATE: Duration = Duration::from_secs(30);

/// Why the CA could not do something.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("key generation failed: {0}")]
    KeyGen(String),
    #[error("certificate signing failed: {0}")]
    Sign(String),
    #[error("no active CA generation; hint: run `sigil ca init`")]
    NoActive,
    #[error("no prepared CA generation to activate; hint: run `sigil ca rotate prepare` first")]
    NothingPrepared,
    #[error(
        "a prepared CA generation ({0}) already exists; activate it with `sigil ca rotate activate`"
    )]
    AlreadyPrepared(u64),
    #[error(
        "prepared generation {generation} was published {age:?} ago, less than the propagation delay {min:?}; hint: wait, or pass --force"
    )]
    TooSoon {
        generation: u64,
        age: Duration,
        min: Duration,
    },
    #[error("stored CA generation {generation} is corrupt: {reason}")]
    Corrupt { generation: u64, reason: String },
    #[error("the SPIFFE ID {id} is outside trust domain {td}")]
    ForeignId { id: String, td: String },
}

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenState {
    Prepared,
    Active,
    Retiring,
}

/// One CA generation's key material and certificates.
pub struct Generation {
    pub id: u64,
    pub state: GenState,
    pub created: SystemTime,
    root_cert: CertificateDer<'static>,
    root_key: Zeroizing<Vec<u8>>,
    int_cert: CertificateDer<'static>,
    int_key: Zeroizing<Vec<u8>>,
    issuer: Arc<Issuer<'static, KeyPair>>,
    jwt_kid: String,
    jwt_key: Zeroizing<Vec<u8>>,
    jwt_signer: EcdsaKeyPair,
    /// Latest `notAfter` of anything this generation signed.
    pub last_signed_expiry: SystemTime,
    pub int_not_after: SystemTime,
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("jwt_kid", &self.jwt_kid)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Serialized form of a generation (private keys included: only written to the 0600 store).
#[derive(Serialize, Deserialize)]
pub struct StoredGeneration {
    pub id: u64,
    pub state: GenState,
    pub created: u64,
    pub root_cert: String,
    pub root_key: Zeroizing<String>,
    pub int_cert: String,
    pub int_key: Zeroizing<String>,
    pub jwt_kid: String,
    pub jwt_key: Zeroizing<String>,
    pub last_signed_expiry: u64,
    pub int_not_after: u64,
}

impl fmt::Debug for StoredGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StoredGeneration({}, {:?}, <keys redacted>)",
            self.id, self.state
        )
    }
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn odt(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix(t)).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CaError::KeyGen("random serial".to_owned()))?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte to strip
    Ok(SerialNumber::from_slice(&b))
}

fn b64(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn unb64(generation: u64, s: &str) -> Result<Vec<u8>, CaError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| CaError::Corrupt {
            generation,
            reason: e.to_string(),
        })
}

fn ca_params(
    td: &TrustDomain,
    cn: String,
    not_before: SystemTime,
    not_after: SystemTime,
    path_len: u8,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sigil");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // The trust domain as a URI SAN on the CA (allowed by the X509-SVID standard). Never URI name
    // constraints: rustls-webpki rejects certificates under a CA that has them.
    p.subject_alt_names = vec![SanType::URI(
        td.id_string()
            .try_into()
            .map_err(|e| CaError::Sign(format!("{e}")))?,
    )];
    p.not_before = odt(not_before);
    p.not_after = odt(not_after);
    p.serial_number = Some(random_serial()?);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn new_p256() -> Result<(KeyPair, Zeroizing<Vec<u8>>), CaError> {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::KeyGen(e.to_string()))?;
    let der = Zeroizing::new(kp.serialize_der());
    Ok((kp, der))
}

fn load_p256(generation: u64, pkcs8: &[u8]) -> Result<KeyPair, CaError> {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Corrupt {
            generation,
            reason: e.to_string(),
        })
}

impl Generation {
    /// Makes a new root, intermediate and JWT key for `td`.
    pub fn generate(
        td: &TrustDomain,
        id: u64,
        state: GenState,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let (root_kp, root_key) = new_p256()?;
        let root_params = ca_params(
            td,
            format!("Sigil root CA {td} #{id}"),
            now - BACKDATE,
            now + ROOT_TTL,
            1,
        )?;
        let root_cert = root_params
            .self_signed(&root_kp)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let root_issuer = Issuer::new(root_params, &root_kp);
        let (int_kp, int_key) = new_p256()?;
        let int_not_after = now + INTERMEDIATE_TTL;
        let int_params = ca_params(
            td,
            format!("Sigil signing CA {td} #{id}"),
            now - BACKDATE,
            int_not_after,
            0,
        )?;
        let int_cert = int_params
            .signed_by(&int_kp, &root_issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let rng = SystemRandom::new();
        let jwt_doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| CaError::KeyGen("jwt key".to_owned()))?;
        let jwt_key = Zeroizing::new(jwt_doc.as_ref().to_vec());
        let jwt_signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &jwt_key)
            .map_err(|_| CaError::KeyGen("jwt key".to_owned()))?;
        let jwt_kid = kid_for(jwt_signer.public_key().as_ref());
        Ok(Self {
            id,
            state,
            created: now,
            root_cert: root_cert.der().clone(),
            root_key,
            int_cert: int_cert.der().clone(),
            int_key,
            issuer: Arc::new(
                Issuer::from_ca_cert_der(int_cert.der(), int_kp)
                    .map_err(|e| CaError::Sign(e.to_string()))?,
            ),
            jwt_kid,
            jwt_key,
            jwt_signer,
            last_signed_expiry: now,
            int_not_after,
        })
    }

    pub fn to_stored(&self) -> StoredGeneration {
        StoredGeneration {
            id: self.id,
            state: self.state,
            created: unix(self.created),
            root_cert: b64(&self.root_cert),
            root_key: Zeroizing::new(b64(&self.root_key)),
            int_cert: b64(&self.int_cert),
            int_key: Zeroizing::new(b64(&self.int_key)),
            jwt_kid: self.jwt_kid.clone(),
            jwt_key: Zeroizing::new(b64(&self.jwt_key)),
            last_signed_expiry: unix(self.last_signed_expiry),
            int_not_after: unix(self.int_not_after),
        }
    }

    pub fn from_stored(s: &StoredGeneration) -> Result<Self, CaError> {
        let g = s.id;
        let int_key = Zeroizing::new(unb64(g, &s.int_key)?);
        let jwt_key = Zeroizing::new(unb64(g, &s.jwt_key)?);
        let jwt_signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &jwt_key)
            .map_err(|_| CaError::Corrupt {
                generation: g,
                reason: "jwt key".to_owned(),
            })?;
        let root_key = Zeroizing::new(unb64(g, &s.root_key)?);
        load_p256(g, &root_key)?;
        Ok(Self {
            id: g,
            state: s.state,
            created: from_unix(s.created),
            root_cert: CertificateDer::from(unb64(g, &s.root_cert)?),
            root_key,
            int_cert: CertificateDer::from(unb64(g, &s.int_cert)?),
            issuer: {
                let cert = CertificateDer::from(unb64(g, &s.int_cert)?);
                Arc::new(
                    Issuer::from_ca_cert_der(&cert, load_p256(g, &int_key)?).map_err(|e| {
                        CaError::Corrupt {
                            generation: g,
                            reason: e.to_string(),
                        }
                    })?,
                )
            },
            int_key,
            jwt_kid: s.jwt_kid.clone(),
            jwt_key,
            jwt_signer,
            last_signed_expiry: from_unix(s.last_signed_expiry),
            int_not_after: from_unix(s.int_not_after),
        })
    }

    pub fn root_cert(&self) -> &CertificateDer<'static> {
        &self.root_cert
    }

    pub fn intermediate_cert(&self) -> &CertificateDer<'static> {
        &self.int_cert
    }

    pub fn jwt_kid(&self) -> &str {
        &self.jwt_kid
    }

    fn jwk(&self) -> Option<Jwk> {
        let mut j = Jwk::ec_from_point(
            &self.jwt_kid,
            "P-256",
            self.jwt_signer.public_key().as_ref(),
        )?;
        j.alg = Some("ES256".to_owned());
        Some(j)
    }
}

fn kid_for(public: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, public);
    b64url(d.as_ref().get(..16).unwrap_or_default())
}

/// An issued X.509-SVID.
#[derive(Debug, Clone)]
pub struct IssuedX509 {
    pub spiffe_id: SpiffeId,
    /// Leaf first, then the intermediate.
    pub chain: Vec<CertificateDer<'static>>,
    pub serial: String,
    pub not_after: SystemTime,
    pub generation: u64,
}

/// An issued JWT-SVID.
#[derive(Clone)]
pub struct IssuedJwt {
    pub spiffe_id: SpiffeId,
    pub token: String,
    pub expires_at: SystemTime,
    pub kid: String,
}

impl fmt::Debug for IssuedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IssuedJwt({}, kid={}, token=<redacted>)",
            self.spiffe_id, self.kid
        )
    }
}

/// The CA of one trust domain: all live generations, one of them active.
#[derive(Debug)]
pub struct CertificateAuthority {
    td: TrustDomain,
    generations: Vec<Generation>,
    /// Bumped on every bundle change (`spiffe_sequence`).
    pub sequence: u64,
}

impl CertificateAuthority {
    /// A fresh CA with one active generation.
    pub fn generate(td: &TrustDomain, now: SystemTime) -> Result<Self, CaError> {
        Ok(Self {
            td: td.clone(),
            generations: vec![Generation::generate(td, 1, GenState::Active, now)?],
            sequence: 1,
        })
    }

    pub fn from_generations(
        td: TrustDomain,
        generations: Vec<Generation>,
        sequence: u64,
    ) -> Result<Self, CaError> {
        let ca = Self {
            td,
            generations,
            sequence,
        };
        ca.active()?;
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    fn active(&self) -> Result<&Generation, CaError> {
        self.generations
            .iter()
            .find(|g| g.state == GenState::Active)
            .ok_or(CaError::NoActive)
    }

    fn active_mut(&mut self) -> Result<&mut Generation, CaError> {
        self.generations
            .iter_mut()
            .find(|g| g.state == GenState::Active)
            .ok_or(CaError::NoActive)
    }

    /// The active generation's number.
    pub fn active_generation(&self) -> Result<u64, CaError> {
        Ok(self.active()?.id)
    }

    /// Trust anchors: the roots of every live generation (prepared, active, retiring).
    pub fn bundle(&self) -> Result<X509Bundle, CaError> {
        let roots = self
            .generations
            .iter()
            .map(|g| g.root_cert.clone())
            .collect();
        X509Bundle::new(self.td.clone(), roots).map_err(|e| CaError::Corrupt {
            generation: 0,
            reason: e.to_string(),
        })
    }

    /// JWT authorities of every live generation.
    pub fn jwt_bundle(&self) -> JwtBundle {
        JwtBundle {
            trust_domain: self.td.clone(),
            keys: JwkSet {
                keys: self
                    .generations
                    .iter()
                    .filter_map(Generation::jwk)
                    .collect(),
            },
        }
    }

    pub fn spiffe_bundle(&self, refresh_hint: Duration) -> Result<SpiffeBundle, CaError> {
        Ok(SpiffeBundle {
            x509: self.bundle()?,
            jwt: self.jwt_bundle(),
            sequence: self.sequence,
            refresh_hint,
        })
    }

    fn check_id(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.is_member_of(&self.td) {
            Ok(())
        } else {
            Err(CaError::ForeignId {
                id: id.to_string(),
                td: self.td.to_string(),
            })
        }
    }

    /// Signs an X.509-SVID for `id` over the public key of a validated CSR.
    pub fn issue_x509_svid(
        &mut self,
        id: &SpiffeId,
        csr: &ValidCsr,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedX509, CaError> {
        let spki = SubjectPublicKeyInfo::from_der(csr.spki_der())
            .map_err(|e| CaError::Sign(e.to_string()))?;
        self.issue_for_key(id, &spki, ttl, now)
    }

    fn issue_for_key(
        &mut self,
        id: &SpiffeId,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedX509, CaError> {
        let issued = self.signer()?.sign_svid(id, public_key, ttl, now)?;
        self.note_signed(issued.generation, issued.not_after);
        Ok(issued)
    }

    /// What signing needs, detached from the CA so signatures can be made without holding a
    /// lock on it. Call [`Self::note_signed`] afterwards.
    pub fn signer(&self) -> Result<Signer, CaError> {
        let g = self.active()?;
        Ok(Signer {
            td: self.td.clone(),
            issuer: Arc::clone(&g.issuer),
            int_cert: g.int_cert.clone(),
            generation: g.id,
            int_not_after: g.int_not_after,
        })
    }

    /// Records that `generation` signed something valid until `not_after` (for retirement).
    pub fn note_signed(&mut self, generation: u64, not_after: SystemTime) {
        if let Some(g) = self.generations.iter_mut().find(|g| g.id == generation) {
            g.last_signed_expiry = g.last_signed_expiry.max(not_after);
        }
    }

    /// Makes a fresh P-256 key and an SVID for it (tests, the demo, the server's own cert).
    pub fn issue_x509_svid_with_new_key(
        &mut self,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(IssuedX509, PrivateKeyDer<'static>), CaError> {
        let (kp, der) = new_p256()?;
        let issued = self.issue_for_key(id, &kp, ttl, now)?;
        Ok((
            issued,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
        ))
    }

    /// A TLS serving certificate for the server itself: DNS/IP SANs, server auth only.
    pub fn issue_server_cert(
        &mut self,
        dns_names: &[String],
        ip_addrs: &[std::net::IpAddr],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let (kp, der) = new_p256()?;
        let g = self.active_mut()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sigil-server");
        p.distinguished_name = dn;
        for d in dns_names {
            p.subject_alt_names.push(SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|e| CaError::Sign(format!("{e}")))?,
            ));
        }
        for ip in ip_addrs {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = odt(now - BACKDATE);
        p.not_after = odt((now + ttl).min(g.int_not_after));
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&kp, g.issuer.as_ref())
            .map_err(|e| CaError::Sign(e.to_string()))?;
        g.last_signed_expiry = g.last_signed_expiry.max(now + ttl);
        Ok((
            vec![cert.der().clone(), g.int_cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
        ))
    }

    /// Signs a JWT-SVID (ES256) for `id` and `audience`, with no `iss` claim (the in-memory CA
    /// of `sigil agent --insecure-local-ca` has no OIDC discovery to match).
    pub fn issue_jwt_svid(
        &mut self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedJwt, CaError> {
        self.issue_jwt_svid_with_issuer(id, audience, None, ttl, now)
    }

    /// Signs a JWT-SVID (ES256) for `id` and `audience`; `issuer` becomes the `iss` claim, which
    /// relying parties compare with the `issuer` of the server's OIDC discovery document.
    pub fn issue_jwt_svid_with_issuer(
        &mut self,
        id: &SpiffeId,
        audience: &[String],
        issuer: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedJwt, CaError> {
        self.check_id(id)?;
        if issuer.is_some_and(str::is_empty) {
            return Err(CaError::Sign(
                "a JWT-SVID issuer must not be empty".to_owned(),
            ));
        }
        if audience.is_empty() {
            return Err(CaError::Sign(
                "a JWT-SVID needs at least one audience".to_owned(),
            ));
        }
        let g = self.active_mut()?;
        let exp = now + ttl;
        let header = serde_json::json!({"alg": "ES256", "kid": g.jwt_kid, "typ": "JWT"});
        let mut jti = [0u8; 12];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| CaError::Sign("rng".to_owned()))?;
        let aud = if audience.len() == 1 {
            serde_json::json!(audience.first())
        } else {
            serde_json::json!(audience)
        };
        let mut claims = serde_json::json!({
            "sub": id.as_str(),
            "aud": aud,
            "exp": unix(exp),
            "iat": unix(now),
            "jti": b64url(&jti),
        });
        if let (Some(iss), Some(c)) = (issuer, claims.as_object_mut()) {
            c.insert("iss".to_owned(), serde_json::json!(iss));
        }
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = g
            .jwt_signer
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| CaError::Sign("jwt signature".to_owned()))?;
        g.last_signed_expiry = g.last_signed_expiry.max(exp);
        Ok(IssuedJwt {
            spiffe_id: id.clone(),
            token: format!("{input}.{}", b64url(sig.as_ref())),
            expires_at: exp,
            kid: g.jwt_kid.clone(),
        })
    }

    /// Rotation step 1: make the next generation and publish it in the bundle. It signs nothing yet.
    pub fn prepare_rotation(&mut self, now: SystemTime) -> Result<u64, CaError> {
        if let Some(p) = self
            .generations
            .iter()
            .find(|g| g.state == GenState::Prepared)
        {
            return Err(CaError::AlreadyPrepared(p.id));
        }
        let id = self.generations.iter().map(|g| g.id).max().unwrap_or(0) + 1;
        self.generations
            .push(Generation::generate(&self.td, id, GenState::Prepared, now)?);
        self.sequence += 1;
        Ok(id)
    }

    /// Rotation step 2: switch signing to the prepared generation once it has been in the bundle
    /// for `min_published` (so every relying party has fetched it). The old one retires.
    pub fn activate_rotation(
        &mut self,
        now: SystemTime,
        min_published: Duration,
    ) -> Result<u64, CaError> {
        let next = self
            .generations
            .iter()
            .find(|g| g.state == GenState::Prepared)
            .ok_or(CaError::NothingPrepared)?;
        let age = now.duration_since(next.created).unwrap_or_default();
        if age < min_published {
            return Err(CaError::TooSoon {
                generation: next.id,
                age,
                min: min_published,
            });
        }
        let next_id = next.id;
        for g in &mut self.generations {
            match g.state {
                GenState::Active => g.state = GenState::Retiring,
                GenState::Prepared => g.state = GenState::Active,
                GenState::Retiring => {}
            }
        }
        self.sequence += 1;
        Ok(next_id)
    }

    /// Rotation step 3: drop retiring generations whose last signed SVID has expired.
    /// Returns the generations removed.
    pub fn prune(&mut self, now: SystemTime) -> Vec<u64> {
        let mut gone = Vec::new();
        self.generations.retain(|g| {
            let keep = g.state != GenState::Retiring || g.last_signed_expiry > now;
            if !keep {
                gone.push(g.id);
            }
            keep
        });
        if !gone.is_empty() {
            self.sequence += 1;
        }
        gone
    }
}

/// The active signing CA, detached from [`CertificateAuthority`] (see [`CertificateAuthority::signer`]).
pub struct Signer {
    td: TrustDomain,
    issuer: Arc<Issuer<'static, KeyPair>>,
    int_cert: CertificateDer<'static>,
    generation: u64,
    int_not_after: SystemTime,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signer({}, generation {}, <key redacted>)",
            self.td, self.generation
        )
    }
}

impl Signer {
    /// Signs an X.509-SVID for `id` over the public key of a validated CSR.
    pub fn sign_csr(
        &self,
        id: &SpiffeId,
        csr: &ValidCsr,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedX509, CaError> {
        let spki = SubjectPublicKeyInfo::from_der(csr.spki_der())
            .map_err(|e| CaError::Sign(e.to_string()))?;
        self.sign_svid(id, &spki, ttl, now)
    }

    /// Signs an X.509-SVID exactly per the SPIFFE X509-SVID standard: one URI SAN, cA=false,
    /// critical keyUsage digitalSignature, EKU serverAuth+clientAuth, notAfter capped by the CA's.
    pub fn sign_svid(
        &self,
        id: &SpiffeId,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedX509, CaError> {
        if !id.is_member_of(&self.td) {
            return Err(CaError::ForeignId {
                id: id.to_string(),
                td: self.td.to_string(),
            });
        }
        let not_after = (now + ttl).min(self.int_not_after);
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(
            id.as_str()
                .try_into()
                .map_err(|e| CaError::Sign(format!("{e}")))?,
        )];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = odt(now - BACKDATE);
        p.not_after = odt(not_after);
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.as_ref());
        p.serial_number = Some(serial);
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(public_key, self.issuer.as_ref())
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(IssuedX509 {
            spiffe_id: id.clone(),
            chain: vec![cert.der().clone(), self.int_cert.clone()],
            serial: serial_hex,
            not_after,
            generation: self.generation,
        })
    }
}
