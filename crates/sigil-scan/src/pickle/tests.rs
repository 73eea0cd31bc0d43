use super::*;

fn run(bytes: &[u8]) -> WalkResult {
    let policy = GlobalPolicy::default();
    walk(
        bytes,
        &WalkOptions {
            policy: &policy,
            inner: "",
            max_pickles: None,
            joblib: false,
        },
    )
}

fn worst(r: &WalkResult) -> Verdict {
    r.findings
        .iter()
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Safe)
}

fn has(r: &WalkResult, v: Verdict, subject: &str) -> bool {
    r.findings
        .iter()
        .any(|f| f.verdict == v && f.subject.contains(subject))
}

#[test]
fn protocol0_global_reduce() {
    let r = run(b"cos\nsystem\n(S'echo hi'\ntR.");
    assert!(has(&r, Verdict::Dangerous, "os.system"), "{r:?}");
    assert_eq!(r.pickles, 1);
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn safe_dict() {
    let r = run(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.");
    assert_eq!(worst(&r), Verdict::Safe, "{r:?}");
    assert_eq!(r.protocol, 2);
}

#[test]
fn stack_global_through_memo() {
    // 'posix' and 'system' memoized, popped, then fetched back for STACK_GLOBAL.
    let mut p = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94".to_vec();
    p.extend_from_slice(b"00"); // POP both
    p.extend_from_slice(b"h\x00h\x01\x93)R.");
    let r = run(&p);
    assert!(has(&r, Verdict::Dangerous, "posix.system"), "{r:?}");
}

#[test]
fn stack_global_protocol0_string_escape() {
    // Module and name from escaped protocol-0 strings.
    let r = run(b"\x80\x04S'o\\x73'\nS'sy\\163tem'\n\x93.");
    assert!(has(&r, Verdict::Dangerous, "os.system"), "{r:?}");
}

#[test]
fn stack_global_non_string_is_malformed() {
    let r = run(b"\x80\x04K\x01K\x02\x93.");
    assert_eq!(worst(&r), Verdict::Malformed);
}

#[test]
fn truncated_tail_still_judged() {
    let r = run(b"cbuiltins\nexec\n(S'x'\n");
    assert!(has(&r, Verdict::Dangerous, "builtins.exec"));
    assert!(r.findings.iter().any(|f| f.verdict == Verdict::Malformed));
}

#[test]
fn second_pickle_in_stream() {
    let r = run(b"\x80\x02N.cposix\nsystem\n)R.");
    assert_eq!(r.pickles, 2);
    assert!(has(&r, Verdict::Dangerous, "posix.system"));
}

#[test]
fn trailing_garbage() {
    let r = run(b"\x80\x02N.\xff\xff");
    assert!(has(&r, Verdict::Malformed, "trailing"), "{r:?}");
}

#[test]
fn inst_and_obj() {
    let r = run(b"(S'ls'\nisubprocess\ncall\n.");
    assert!(has(&r, Verdict::Dangerous, "subprocess.call"));
    let r = run(b"(cnt\nsystem\nS'ls'\no.");
    assert!(has(&r, Verdict::Dangerous, "nt.system"));
}

#[test]
fn frame_lies() {
    // FRAME claims 100 bytes, the pickle ends after 3.
    let mut p = b"\x80\x04\x95".to_vec();
    p.extend_from_slice(&100u64.to_le_bytes());
    p.extend_from_slice(b"N.");
    let r = run(&p);
    assert!(has(&r, Verdict::Malformed, "FRAME"), "{r:?}");
    // FRAME claims 1 byte, an opcode crosses it.
    let mut p = b"\x80\x04\x95".to_vec();
    p.extend_from_slice(&1u64.to_le_bytes());
    p.extend_from_slice(b"K\x01.");
    let r = run(&p);
    assert!(has(&r, Verdict::Malformed, "FRAME"), "{r:?}");
}

#[test]
fn invalid_opcode_and_underflow() {
    assert_eq!(worst(&run(b"\x80\x02\xff")), Verdict::Malformed);
    assert_eq!(worst(&run(b"\x80\x02R.")), Verdict::Malformed);
    assert_eq!(worst(&run(b"\x80\x09N.")), Verdict::Malformed);
    assert_eq!(worst(&run(b"")), Verdict::Malformed);
}

#[test]
fn mark_fence_is_respected() {
    // REDUCE may not pop below the MARK (the C unpickler's fence).
    assert_eq!(
        worst(&run(b"\x80\x02cos\nsystem\n)(R.")),
        Verdict::Dangerous
    );
    let r = run(b"\x80\x02N(R.");
    assert!(
        r.findings.iter().any(|f| f.reason.contains("underflow")),
        "{r:?}"
    );
}

#[test]
fn huge_declared_bytes_are_skipped_not_allocated() {
    let mut p = b"\x80\x04\x8e".to_vec();
    p.extend_from_slice(&u64::MAX.to_le_bytes());
    let r = run(&p);
    assert_eq!(worst(&r), Verdict::Malformed);
}

#[test]
fn ext_codes_are_suspicious() {
    let r = run(b"\x80\x02\x82\x01.");
    assert_eq!(worst(&r), Verdict::Suspicious);
}

#[test]
fn dunder_name_walk() {
    let r = run(b"\x80\x04\x8c\x08builtins\x8c\x15object.__subclasses__\x93.");
    assert_eq!(worst(&r), Verdict::Dangerous);
}

#[test]
fn joblib_raw_array_is_skipped() {
    // A minimal joblib-like stream: wrapper, BUILD with a state dict, 8 raw bytes, then STOP.
    let mut p = b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(".to_vec();
    p.extend_from_slice(b"U\x05shape(K\x02tU\x05dtypecnumpy\ndtype\nU\x02u4\x85R");
    p.extend_from_slice(b"U\x05order");
    p.extend_from_slice(b"U\x01Cub");
    p.extend_from_slice(&[0xff; 8]);
    p.extend_from_slice(b".");
    let policy = GlobalPolicy::default();
    let r = walk(
        &p[..],
        &WalkOptions {
            policy: &policy,
            inner: "",
            max_pickles: None,
            joblib: true,
        },
    );
    assert_eq!(worst(&r), Verdict::Safe, "{r:?}");
    assert_eq!(r.pickles, 1);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = run(&data);
    }

    #[test]
    fn arbitrary_opcode_soup_never_panics(data in proptest::collection::vec(
        proptest::sample::select(b"().012FIJKLMNPQRSTUVXabcdeghijlopqrstu}]G\x80\x81\x85\x86\x87\x88\x89\x8a\x8c\x93\x94\x95\n'".to_vec()), 0..256)) {
        let _ = run(&data);
    }
}
