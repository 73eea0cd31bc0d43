//! Shared fixtures: the test policy, callers, and unsealed services.

use std::path::Path;
use std::sync::Arc;

use sigil_keys::service::{CiphertextItem, EncryptItem, Upsert};
use sigil_keys::{Caller, KeyService, MemStore, Store};
use sigil_policy::Policy;
use zeroize::Zeroizing;

pub fn policy() -> Arc<Policy> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigil.yaml");
    Arc::new(Policy::load(&path).unwrap())
}

pub fn workload(name: &str) -> Caller {
    let p = policy();
    Caller::from_kubernetes_login(p.workload(name).unwrap().spiffe_id.clone())
}

/// An unsealed service over `store` (key-file seal) and its admin caller.
pub fn unsealed_on(store: Arc<dyn Store>) -> (KeyService, Caller) {
    let svc = KeyService::new(store, policy());
    let out = svc.init_key_file(&[9u8; 32]).unwrap();
    let admin = svc.verify_admin(&out.root_token).unwrap();
    (svc, admin)
}

pub fn unsealed() -> (KeyService, Caller) {
    unsealed_on(Arc::new(MemStore::new()))
}

pub fn item(plain: &[u8]) -> EncryptItem {
    EncryptItem {
        plaintext: Zeroizing::new(plain.to_vec()),
        ..EncryptItem::default()
    }
}

pub fn ct(ciphertext: &str) -> CiphertextItem {
    CiphertextItem {
        ciphertext: ciphertext.to_string(),
        ..CiphertextItem::default()
    }
}

/// Encrypt one plaintext; panics on any error.
pub fn enc(svc: &KeyService, who: &Caller, key: &str, plain: &[u8]) -> String {
    let mut r = svc
        .encrypt(who, key, &[item(plain)], Upsert::default())
        .unwrap();
    r.remove(0).unwrap().ciphertext
}

/// Decrypt one ciphertext; panics on a request error, returns the item's result.
pub fn dec(
    svc: &KeyService,
    who: &Caller,
    key: &str,
    c: &str,
) -> Result<Vec<u8>, sigil_keys::TransitError> {
    let mut r = svc.decrypt(who, key, &[ct(c)]).unwrap();
    r.remove(0).map(|p| p.to_vec())
}
