//! Transit operations on one key: round trips, tamper, versions, rewrap, data keys, config.

use sigil_keys::keyring::{self, ConfigUpdate, TransitError};
use sigil_keys::service::{CiphertextItem, CreateOptions, EncryptItem, Upsert};
use sigil_keys::{KeyType, ServiceError};
use test_case::test_case;
use zeroize::Zeroizing;

use crate::common::*;

#[test_case(KeyType::Aes256Gcm96, false; "aes non-derived")]
#[test_case(KeyType::Aes256Gcm96, true; "aes derived")]
#[test_case(KeyType::ChaCha20Poly1305, false; "chacha non-derived")]
#[test_case(KeyType::ChaCha20Poly1305, true; "chacha derived")]
fn round_trip_with_context_and_associated_data(kt: KeyType, derived: bool) {
    let (svc, admin) = unsealed();
    svc.create_key(
        &admin,
        "k",
        CreateOptions {
            key_type: kt,
            derived,
            auto_rotate_period: 0,
        },
    )
    .unwrap();
    let ctx = if derived {
        b"tenant-7".to_vec()
    } else {
        Vec::new()
    };
    let items: Vec<EncryptItem> = [&b""[..], b"a", &[0u8; 4096]]
        .iter()
        .map(|p| EncryptItem {
            plaintext: Zeroizing::new(p.to_vec()),
            context: ctx.clone(),
            associated_data: b"row-42".to_vec(),
            key_version: 0,
        })
        .collect();
    let out = svc.encrypt(&admin, "k", &items, Upsert::default()).unwrap();
    for (i, o) in items.iter().zip(&out) {
        let o = o.as_ref().unwrap();
        assert!(o.ciphertext.starts_with("vault:v1:"), "{}", o.ciphertext);
        let (v, blob) = keyring::parse_ciphertext(&o.ciphertext).unwrap();
        assert_eq!(v, 1);
        assert_eq!(
            blob.len(),
            12 + i.plaintext.len() + 16,
            "nonce || ciphertext || tag"
        );
        let d = svc
            .decrypt(
                &admin,
                "k",
                &[CiphertextItem {
                    ciphertext: o.ciphertext.clone(),
                    context: ctx.clone(),
                    associated_data: b"row-42".to_vec(),
                    key_version: 0,
                }],
            )
            .unwrap();
        assert_eq!(&d[0].as_ref().unwrap()[..], &i.plaintext[..]);
        // wrong associated data
        let d = svc
            .decrypt(
                &admin,
                "k",
                &[CiphertextItem {
                    ciphertext: o.ciphertext.clone(),
                    context: ctx.clone(),
                    associated_data: b"row-43".to_vec(),
                    key_version: 0,
                }],
            )
            .unwrap();
        assert!(matches!(d[0], Err(TransitError::Authentication { .. })));
        if derived {
            let d = svc
                .decrypt(
                    &admin,
                    "k",
                    &[CiphertextItem {
                        ciphertext: o.ciphertext.clone(),
                        context: b"tenant-8".to_vec(),
                        associated_data: b"row-42".to_vec(),
                        key_version: 0,
                    }],
                )
                .unwrap();
            assert!(
                matches!(d[0], Err(TransitError::Authentication { .. })),
                "other context"
            );
        }
    }
}

#[test]
fn derived_keys_need_context_and_plain_keys_refuse_it() {
    let (svc, admin) = unsealed();
    svc.create_key(
        &admin,
        "d",
        CreateOptions {
            derived: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = svc
        .encrypt(&admin, "d", &[item(b"x")], Upsert::default())
        .unwrap();
    assert_eq!(r[0], Err(TransitError::MissingContext));
    svc.create_key(&admin, "p", CreateOptions::default())
        .unwrap();
    let mut i = item(b"x");
    i.context = b"c".to_vec();
    let r = svc.encrypt(&admin, "p", &[i], Upsert::default()).unwrap();
    assert!(matches!(
        r[0],
        Err(TransitError::ContextOnNonDerived { .. })
    ));
    // upsert with context creates a derived key, as Vault does
    let mut i = item(b"x");
    i.context = b"c".to_vec();
    svc.encrypt(&admin, "fresh", &[i], Upsert::default())
        .unwrap()[0]
        .as_ref()
        .unwrap();
    assert!(svc.read_key(&admin, "fresh").unwrap().derived);
    // context in some batch items only
    let mut a = item(b"1");
    a.context = b"c".to_vec();
    let e = svc
        .encrypt(&admin, "fresh", &[a, item(b"2")], Upsert::default())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("either in all the request blocks or in none"),
        "{e}"
    );
}

#[test_case("", "no prefix"; "empty")]
#[test_case("v1:abc", "no prefix"; "no vault prefix")]
#[test_case("vault:v1", "wrong number of fields"; "no blob")]
#[test_case("vault:vx:AAAA", "version number could not be decoded"; "bad version")]
#[test_case("vault:v-1:AAAA", "version number could not be decoded"; "negative version")]
#[test_case("vault:v1:!!!", "could not decode base64"; "bad base64")]
#[test_case("vault:v9:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "version is too new"; "too new")]
#[test_case("vault:v1:AAAA", "does not authenticate"; "too short")]
fn malformed_ciphertexts_are_refused(c: &str, msg: &str) {
    let (svc, admin) = unsealed();
    enc(&svc, &admin, "k", b"x");
    let e = dec(&svc, &admin, "k", c).unwrap_err().to_string();
    assert!(e.contains(msg), "{c}: {e}");
}

#[test]
fn every_flipped_byte_is_detected() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (svc, admin) = unsealed();
    let c = enc(&svc, &admin, "k", b"the weights");
    let (_, blob) = keyring::parse_ciphertext(&c).unwrap();
    for i in 0..blob.len() {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        let tampered = keyring::format_ciphertext(1, &t);
        assert!(
            matches!(
                dec(&svc, &admin, "k", &tampered),
                Err(TransitError::Authentication { .. })
            ),
            "byte {i}"
        );
    }
    // truncated
    let short = format!("vault:v1:{}", b64.encode(&blob[..blob.len() - 1]));
    assert!(dec(&svc, &admin, "k", &short).is_err());
    // another key's ciphertext
    let other = enc(&svc, &admin, "other", b"the weights");
    assert!(matches!(
        dec(&svc, &admin, "k", &other),
        Err(TransitError::Authentication { .. })
    ));
}

#[test]
fn versions_rotation_min_versions_and_trim() {
    let (svc, admin) = unsealed();
    let c1 = enc(&svc, &admin, "k", b"one");
    svc.rotate_key(&admin, "k").unwrap();
    let c2 = enc(&svc, &admin, "k", b"two");
    assert!(c2.starts_with("vault:v2:"));
    assert_eq!(dec(&svc, &admin, "k", &c1).unwrap(), b"one");
    // pick an older version explicitly
    let mut i = item(b"old");
    i.key_version = 1;
    let r = svc.encrypt(&admin, "k", &[i], Upsert::default()).unwrap();
    assert!(r[0].as_ref().unwrap().ciphertext.starts_with("vault:v1:"));
    let mut i = item(b"x");
    i.key_version = 3;
    let r = svc.encrypt(&admin, "k", &[i], Upsert::default()).unwrap();
    assert!(matches!(
        r[0],
        Err(TransitError::EncryptVersionTooNew {
            requested: 3,
            latest: 2
        })
    ));

    svc.rotate_key(&admin, "k").unwrap();
    let cfg = |u: ConfigUpdate| svc.configure_key(&admin, "k", &u);
    // min encryption below min decryption is refused
    let e = cfg(ConfigUpdate {
        min_decryption_version: Some(2),
        min_encryption_version: Some(1),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("must be greater than or equal to min decryption version"),
        "{e}"
    );
    let e = cfg(ConfigUpdate {
        min_decryption_version: Some(4),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("latest key version is 3"), "{e}");
    cfg(ConfigUpdate {
        min_decryption_version: Some(2),
        min_encryption_version: Some(3),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        dec(&svc, &admin, "k", &c1),
        Err(TransitError::TooOld {
            version: 1,
            min: 2,
            ..
        })
    ));
    assert_eq!(dec(&svc, &admin, "k", &c2).unwrap(), b"two");
    let mut i = item(b"x");
    i.key_version = 2;
    let r = svc.encrypt(&admin, "k", &[i], Upsert::default()).unwrap();
    assert!(matches!(
        r[0],
        Err(TransitError::EncryptVersionTooOld {
            requested: 2,
            min: 3
        })
    ));

    // trim rules
    let e = svc.trim_key(&admin, "k", 3).unwrap_err();
    assert!(
        e.to_string()
            .contains("greater than minimum decryption version"),
        "{e}"
    );
    let cfg_after = svc.trim_key(&admin, "k", 2).unwrap();
    assert_eq!(cfg_after.min_available_version, 2);
    assert_eq!(
        cfg_after.versions.keys().copied().collect::<Vec<_>>(),
        vec![2, 3]
    );
    let e = svc.trim_key(&admin, "k", 1).unwrap_err();
    assert!(e.to_string().contains("cannot be decremented"), "{e}");
    // lowering min_decryption_version below the trimmed versions is refused
    let e = cfg(ConfigUpdate {
        min_decryption_version: Some(1),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("min_available_version"), "{e}");
    assert_eq!(dec(&svc, &admin, "k", &c2).unwrap(), b"two");
}

#[test]
fn rewrap_moves_ciphertexts_to_the_latest_version() {
    let (svc, admin) = unsealed();
    let c1 = enc(&svc, &admin, "k", b"payload");
    svc.rotate_key(&admin, "k").unwrap();
    svc.rotate_key(&admin, "k").unwrap();
    let r = svc
        .rewrap(&admin, "k", &[ct(&c1), ct("vault:v1:bad")])
        .unwrap();
    let w = r[0].as_ref().unwrap();
    assert_eq!(w.key_version, 3);
    assert!(w.ciphertext.starts_with("vault:v3:"));
    assert_ne!(w.ciphertext, c1);
    assert_eq!(dec(&svc, &admin, "k", &w.ciphertext).unwrap(), b"payload");
    assert!(r[1].is_err(), "a bad batch item fails alone");
}

#[test]
fn data_keys_plaintext_and_wrapped() {
    let (svc, admin) = unsealed();
    let dk = svc.datakey(&admin, "k", true, 256, b"").unwrap();
    let pt = dk.plaintext.as_ref().unwrap();
    assert_eq!(pt.len(), 32);
    assert_eq!(dec(&svc, &admin, "k", &dk.ciphertext).unwrap(), &pt[..]);
    let w = svc.datakey(&admin, "k", false, 512, b"").unwrap();
    assert!(w.plaintext.is_none());
    assert_eq!(dec(&svc, &admin, "k", &w.ciphertext).unwrap().len(), 64);
    assert!(matches!(
        svc.datakey(&admin, "k", true, 100, b""),
        Err(ServiceError::Transit(TransitError::BadBits(100)))
    ));
    assert!(format!("{dk:?}").contains("redacted"));
    assert!(!format!("{dk:?}").contains(&format!("{:?}", &pt[..4])));
}

#[test]
fn deletion_is_protected_by_default() {
    let (svc, admin) = unsealed();
    enc(&svc, &admin, "k", b"x");
    assert!(matches!(
        svc.delete_key(&admin, "k"),
        Err(ServiceError::DeletionNotAllowed(_))
    ));
    svc.configure_key(
        &admin,
        "k",
        &ConfigUpdate {
            deletion_allowed: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    svc.delete_key(&admin, "k").unwrap();
    assert!(matches!(
        svc.read_key(&admin, "k"),
        Err(ServiceError::NotFound(_))
    ));
    assert!(svc.list_keys(&admin).unwrap().is_empty());
}

#[test]
fn key_names_are_checked() {
    let (svc, admin) = unsealed();
    for bad in ["", "a/b", "-x", "x-", "a b", &"x".repeat(129)] {
        let e = svc
            .encrypt(&admin, bad, &[item(b"x")], Upsert::default())
            .unwrap_err();
        assert!(e.to_string().contains("is not valid"), "{bad:?}: {e}");
    }
    enc(&svc, &admin, "ok_name-1.v2@x", b"x");
}

#[test]
fn auto_rotate_period_is_validated_and_parsed() {
    let (svc, admin) = unsealed();
    enc(&svc, &admin, "k", b"x");
    let u = |v: serde_json::Value| ConfigUpdate {
        auto_rotate_period: Some(v),
        ..Default::default()
    };
    let e = svc
        .configure_key(&admin, "k", &u(serde_json::json!("30m")))
        .unwrap_err();
    assert!(e.to_string().contains("at least an hour"), "{e}");
    let (c, _) = svc
        .configure_key(&admin, "k", &u(serde_json::json!("24h")))
        .unwrap();
    assert_eq!(c.auto_rotate_period, 86400);
    let (c, _) = svc
        .configure_key(&admin, "k", &u(serde_json::json!(0)))
        .unwrap();
    assert_eq!(c.auto_rotate_period, 0);
}
