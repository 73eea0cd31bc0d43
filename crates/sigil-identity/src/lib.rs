//! SPIFFE identities: IDs, trust domains, SVIDs, bundles and their verification.
//!
//! Owns: the types every other Sigil crate uses to talk about identity, and the only
//! constructors of verified identities ([`VerifiedX509Svid`], [`VerifiedJwtSvid`]). Must not: do
//! I/O, hold private keys, or issue anything (that is `sigil-ca`).

mod bundle;
mod id;
pub mod jwt;
pub mod tls;
mod x509;

pub use bundle::{MAX_BUNDLE_BYTES, SpiffeBundle};
pub use id::{IdError, MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, TrustDomain};
pub use jwt::{Jwk, JwkSet, JwtBundle, JwtError, VerifiedJwtSvid, verify_jwt_svid};
pub use x509::{
    BundleError, LeafInfo, MAX_CERT_BYTES, MAX_CHAIN_LEN, SvidError, SvidUsage, VerifiedX509Svid,
    X509Bundle, certs_from_pem, certs_to_pem, inspect_leaf, verify_x509_svid,
};
