//! The service around the keys: sealing, authorization, auto-rotation, persistence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sigil_keys::keyring::Limits;
use sigil_keys::service::{CreateOptions, Upsert};
use sigil_keys::{KeyService, MemStore, RedbStore, ServiceError, Store};
use test_case::test_case;

use crate::common::*;

#[test]
fn a_sealed_service_refuses_every_key_operation_and_recovers_after_unseal() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let svc = KeyService::new(store, policy());
    let out = svc.init_shamir(5, 3).unwrap();
    assert_eq!(out.shares.len(), 5);
    assert!(svc.seal_status().unwrap().sealed);
    // even the admin token cannot be checked while sealed
    assert!(matches!(
        svc.verify_admin(&out.root_token),
        Err(ServiceError::Sealed)
    ));
    let trainer = workload("trainer");
    let sealed = |r: Result<(), ServiceError>| {
        let e = r.unwrap_err();
        assert!(matches!(e, ServiceError::Sealed), "{e}");
        assert!(e.to_string().contains("sealed"));
    };
    let check_all = |svc: &KeyService| {
        sealed(
            svc.encrypt(&trainer, "weights", &[item(b"x")], Upsert::default())
                .map(drop),
        );
        sealed(
            svc.decrypt(&trainer, "weights", &[ct("vault:v1:AAAA")])
                .map(drop),
        );
        sealed(
            svc.rewrap(&trainer, "weights", &[ct("vault:v1:AAAA")])
                .map(drop),
        );
        sealed(svc.datakey(&trainer, "weights", true, 256, b"").map(drop));
        sealed(svc.datakey(&trainer, "weights", false, 256, b"").map(drop));
        sealed(svc.maintain().map(drop));
    };
    check_all(&svc);
    for s in out.shares.iter().skip(2) {
        svc.submit_share(s).unwrap();
    }
    assert!(!svc.seal_status().unwrap().sealed);
    let admin = svc.verify_admin(&out.root_token).unwrap();
    assert!(matches!(
        svc.verify_admin("s.wrong"),
        Err(ServiceError::BadToken)
    ));
    let c = enc(&svc, &trainer, "weights", b"w");
    svc.seal().unwrap();
    check_all(&svc);
    sealed(svc.read_key(&admin, "weights").map(drop));
    sealed(svc.rotate_key(&admin, "weights").map(drop));
    sealed(svc.list_keys(&admin).map(drop));
    svc.submit_share(&out.shares[0]).unwrap();
    svc.submit_share(&out.shares[3]).unwrap();
    svc.submit_share(&out.shares[1]).unwrap();
    assert_eq!(dec(&svc, &workload("server"), "weights", &c).unwrap(), b"w");
}

#[derive(Clone, Copy)]
enum Op {
    Encrypt,
    Decrypt,
    Rewrap,
    DataKeyPlain,
    DataKeyWrapped,
}

#[test_case("trainer", Op::Encrypt, "weights", None; "writer encrypts")]
#[test_case("trainer", Op::DataKeyWrapped, "weights", None; "writer mints wrapped")]
#[test_case("trainer", Op::DataKeyPlain, "weights", None; "writer mints plaintext")]
#[test_case("trainer", Op::Decrypt, "weights", None; "writer reads")]
#[test_case("trainer", Op::Rewrap, "weights", None; "writer rewraps")]
#[test_case("server", Op::Decrypt, "weights", None; "reader decrypts")]
#[test_case("server", Op::Encrypt, "weights", Some("data[0].writers) lists writers [trainer]; workload \"server\" is not one"); "reader cannot encrypt")]
#[test_case("server", Op::DataKeyWrapped, "weights", Some("only writers may encrypt or mint data keys"); "reader cannot mint")]
#[test_case("server", Op::DataKeyPlain, "weights", Some("only writers"); "reader cannot mint plaintext")]
#[test_case("server", Op::Rewrap, "weights", Some("rewrap decrypts and re-encrypts, so it needs a writer"); "reader cannot rewrap")]
#[test_case("notebook", Op::Decrypt, "weights", Some("lists readers [server] and writers [trainer]; workload \"notebook\" is neither"); "stranger cannot read")]
#[test_case("notebook", Op::Encrypt, "weights", Some("workload \"notebook\" is not one"); "stranger cannot write")]
#[test_case("trainer", Op::Decrypt, "corpus", None; "reader of another asset")]
#[test_case("trainer", Op::Encrypt, "corpus", Some("lists writers [none]"); "asset without writers")]
#[test_case("trainer", Op::Encrypt, "admin-key", Some("no data asset in sigil.yaml is named \"admin-key\""); "admin keys are not for workloads")]
fn workloads_are_authorized_by_the_data_section(
    who: &str,
    op: Op,
    key: &str,
    denied: Option<&str>,
) {
    let (svc, admin) = unsealed();
    // keys exist with a ciphertext under each (made by their writers or the admin)
    let w = enc(&svc, &workload("trainer"), "weights", b"w");
    svc.create_key(&admin, "corpus", CreateOptions::default())
        .unwrap();
    enc(&svc, &admin, "admin-key", b"a");
    let c = if key == "weights" {
        w
    } else {
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string()
    };
    let caller = workload(who);
    let r: Result<(), ServiceError> = match op {
        Op::Encrypt => svc
            .encrypt(&caller, key, &[item(b"x")], Upsert::default())
            .map(drop),
        Op::Decrypt => svc.decrypt(&caller, key, &[ct(&c)]).map(drop),
        Op::Rewrap => svc.rewrap(&caller, key, &[ct(&c)]).map(drop),
        Op::DataKeyPlain => svc.datakey(&caller, key, true, 256, b"").map(drop),
        Op::DataKeyWrapped => svc.datakey(&caller, key, false, 256, b"").map(drop),
    };
    match (denied, r) {
        (None, Ok(())) => {}
        (Some(rule), Err(ServiceError::Denied(d))) => {
            let msg = d.to_string();
            assert!(msg.contains(rule), "{msg}");
            assert!(
                msg.contains(&format!("{caller}")),
                "names the identity: {msg}"
            );
            assert!(msg.contains(&format!("{key:?}")), "names the key: {msg}");
            assert!(msg.starts_with("permission denied"), "{msg}");
        }
        (want, got) => panic!("{who} {key}: wanted denial {want:?}, got {got:?}"),
    }
}

#[test]
fn unknown_identities_and_the_admin_on_asset_keys_are_denied() {
    let (svc, admin) = unsealed();
    let stranger = sigil_keys::Caller::from_kubernetes_login(
        "spiffe://keys.example.org/ns/x/sa/y".parse().unwrap(),
    );
    let e = svc
        .encrypt(&stranger, "weights", &[item(b"x")], Upsert::default())
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "no workload in sigil.yaml has SPIFFE ID spiffe://keys.example.org/ns/x/sa/y"
        ),
        "{e}"
    );
    let c = enc(&svc, &workload("trainer"), "weights", b"w");
    let e = svc.decrypt(&admin, "weights", &[ct(&c)]).unwrap_err();
    assert!(e.to_string().contains("not to the admin token"), "{e}");
    // the admin manages the asset key though
    assert_eq!(svc.rotate_key(&admin, "weights").unwrap().latest_version, 2);
    // and workloads cannot manage
    let e = svc.rotate_key(&workload("trainer"), "weights").unwrap_err();
    assert!(e.to_string().contains("needs the admin token"), "{e}");
    let e = svc.list_keys(&workload("trainer")).unwrap_err();
    assert!(matches!(e, ServiceError::Denied(_)), "{e}");
}

#[test]
fn rotation_by_encryption_count_happens_before_the_limit() {
    let limits = Limits {
        max_encryptions: 5,
        reservation_block: 2,
    };
    let (svc, admin) = unsealed();
    let svc = svc.with_limits(limits);
    let mut versions = Vec::new();
    for i in 0..12u8 {
        let c = enc(&svc, &admin, "k", &[i]);
        versions.push(sigil_keys::keyring::parse_ciphertext(&c).unwrap().0);
    }
    assert_eq!(versions, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]);
    // a batch counts every item
    let items: Vec<_> = (0..4u8).map(|i| item(&[i])).collect();
    let out = svc.encrypt(&admin, "k", &items, Upsert::default()).unwrap();
    assert!(out.iter().all(|o| o.as_ref().unwrap().key_version == 3));
    let _ = admin;
}

#[test]
fn rotation_by_age_on_use_and_in_maintenance() {
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let svc =
        KeyService::new(store, policy()).with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let out = svc.init_key_file(&[1u8; 32]).unwrap();
    let admin = svc.verify_admin(&out.root_token).unwrap();
    svc.create_key(
        &admin,
        "k",
        CreateOptions {
            auto_rotate_period: 3600,
            ..Default::default()
        },
    )
    .unwrap();
    svc.create_key(
        &admin,
        "idle",
        CreateOptions {
            auto_rotate_period: 7200,
            ..Default::default()
        },
    )
    .unwrap();
    svc.create_key(&admin, "manual", CreateOptions::default())
        .unwrap();
    assert!(enc(&svc, &admin, "k", b"x").starts_with("vault:v1:"));
    now.fetch_add(3599, Ordering::SeqCst);
    assert!(enc(&svc, &admin, "k", b"x").starts_with("vault:v1:"));
    now.fetch_add(1, Ordering::SeqCst);
    assert!(
        enc(&svc, &admin, "k", b"x").starts_with("vault:v2:"),
        "rotated on use"
    );
    assert!(svc.maintain().unwrap().is_empty());
    now.fetch_add(7200, Ordering::SeqCst);
    let mut rotated: Vec<_> = svc
        .maintain()
        .unwrap()
        .into_iter()
        .map(|(n, _, v)| (n, v))
        .collect();
    rotated.sort();
    assert_eq!(rotated, [("idle".to_string(), 2), ("k".to_string(), 3)]);
    let e = svc
        .create_key(
            &admin,
            "short",
            CreateOptions {
                auto_rotate_period: 60,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("at least an hour"));
}

#[test]
fn keys_survive_a_restart_on_redb_and_counts_resume_from_the_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let limits = Limits {
        max_encryptions: 10,
        reservation_block: 4,
    };
    let (c1, c2, token);
    {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).unwrap());
        let svc = KeyService::new(store, policy()).with_limits(limits);
        let out = svc.init_key_file(&[3u8; 32]).unwrap();
        token = out.root_token.clone();
        let admin = svc.verify_admin(&token).unwrap();
        c1 = enc(&svc, &admin, "k", b"first");
        svc.rotate_key(&admin, "k").unwrap();
        c2 = enc(&svc, &admin, "k", b"second");
        // 1 encryption done under v2, reservation 1 + 4 = 5
    }
    let raw = std::fs::read(&path).unwrap();
    assert!(
        !raw.windows(6).any(|w| w == b"second" || w == b"first\0"),
        "plaintext on disk"
    );
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).unwrap());
    let svc = KeyService::new(store, policy()).with_limits(limits);
    assert!(svc.seal_status().unwrap().sealed, "starts sealed");
    svc.unseal_key_file(&[3u8; 32]).unwrap();
    let admin = svc.verify_admin(&token).unwrap();
    assert_eq!(dec(&svc, &admin, "k", &c1).unwrap(), b"first");
    assert_eq!(dec(&svc, &admin, "k", &c2).unwrap(), b"second");
    // counting resumes at the reservation (5): 5 more reach the limit of 10, then v3
    let vs: Vec<u32> = (0..6)
        .map(|_| {
            sigil_keys::keyring::parse_ciphertext(&enc(&svc, &admin, "k", b"x"))
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(vs, [2, 2, 2, 2, 2, 3]);
    // a wrong key file does not unseal
    let svc2 = KeyService::new(Arc::new(MemStore::new()), policy());
    svc2.init_key_file(&[4u8; 32]).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let svc3 = KeyService::new(store, policy());
    assert!(svc3.unseal_key_file(&[3u8; 32]).is_err(), "uninitialized");
}
