//! Format detection from content and name together: JSON text is not safetensors, a file named
//! `.safetensors` that is not one is malformed (not `unknown`), and a safetensors file whose
//! length bytes start like another format is still read as safetensors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use sigil_scan::{FileReport, Format, ScanConfig, Verdict, scan_bytes};

fn scan(name: &str, bytes: &[u8]) -> FileReport {
    scan_bytes(Path::new(name), bytes.to_vec(), &ScanConfig::default())
}

/// A valid safetensors file with one U8 tensor of `n` bytes, its header padded with spaces to
/// `header_len` bytes (the reference implementation accepts trailing whitespace).
fn safetensors(header_len: usize, n: usize) -> Vec<u8> {
    let mut h = format!(r#"{{"t":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    assert!(h.len() <= header_len);
    h.push_str(&" ".repeat(header_len - h.len()));
    let mut v = (header_len as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h.as_bytes());
    v.extend(std::iter::repeat_n(7u8, n));
    v
}

#[test]
fn plain_json_is_not_malformed_safetensors() {
    // `{"data":{` puts `{` at byte 8, as a safetensors header does.
    for (name, text) in [
        ("data.json", &b"{\"data\":{\"rows\":[1,2,3]}}\n"[..]),
        ("config.json", b"{\"spec\":{\"a\":1},\"x\":[1,2]}"),
        (
            "audit.jsonl",
            b"{\"seq\":1,\"at\":{\"s\":1}}\n{\"seq\":2,\"at\":{\"s\":2}}\n",
        ),
        (
            "audit.jsonl",
            b"{\"time\":{\"t\":1},\"event\":\"attest\"}\n{\"time\":{\"t\":2}}\n",
        ),
    ] {
        let r = scan(name, text);
        assert_eq!(
            (r.verdict, r.format),
            (Verdict::Safe, Format::Unknown),
            "{name}: {:#?}",
            r.findings
        );
    }
}

#[test]
fn a_file_named_safetensors_that_is_not_one_is_malformed() {
    let cases: [(&str, &[u8]); 4] = [
        ("json.safetensors", b"{\"data\":{\"rows\":[1,2,3]}}\n"),
        // a plausible header length, then a JSON array instead of an object
        (
            "array.safetensors",
            b"\x05\x00\x00\x00\x00\x00\x00\x00[1,2]",
        ),
        ("text.safetensors", b"hello, not a model at all"),
        ("empty.safetensors", b""),
    ];
    for (name, bytes) in cases {
        let r = scan(name, bytes);
        assert_eq!(r.verdict, Verdict::Malformed, "{name}: {:#?}", r.findings);
        assert_eq!(r.format, Format::Safetensors, "{name}");
    }
    // The same bytes under another name: nothing claims a format, nothing to judge.
    let r = scan("notes.txt", b"hello, not a model at all");
    assert_eq!((r.verdict, r.format), (Verdict::Safe, Format::Unknown));
}

#[test]
fn a_pickle_named_safetensors_is_scanned_as_the_pickle_and_flagged() {
    let r = scan("model.safetensors", b"cos\nsystem\n(S'echo sigil'\ntR.");
    assert_eq!(r.verdict, Verdict::Dangerous, "{:#?}", r.findings);
    assert!(r.findings.iter().any(|f| f.subject == "os.system"));
    assert!(
        r.findings
            .iter()
            .any(|f| f.subject == "file name" && f.verdict == Verdict::Malformed),
        "{:#?}",
        r.findings
    );
    let r = scan("model.gguf", b"not gguf at all, just text");
    assert_eq!(r.verdict, Verdict::Malformed, "{:#?}", r.findings);
    assert_eq!(r.format, Format::Gguf);
}

#[test]
fn safetensors_whose_length_bytes_look_like_a_pickle_is_safetensors() {
    // 128 = 0x80 then 0x00: a pickle PROTO opcode by its first two bytes; 640 = 0x80 0x02.
    for header_len in [128, 640, 1152] {
        for name in ["model.safetensors", "weights.bin"] {
            let r = scan(name, &safetensors(header_len, 16));
            assert_eq!(
                (r.verdict, r.format),
                (Verdict::Safe, Format::Safetensors),
                "{name} with a {header_len}-byte header: {:#?}",
                r.findings
            );
        }
    }
    // Broken after the header: still judged as safetensors (its name says so), and malformed.
    let mut v = safetensors(640, 16);
    v.push(0);
    let r = scan("model.safetensors", &v);
    assert_eq!(
        (r.verdict, r.format),
        (Verdict::Malformed, Format::Safetensors),
        "{:#?}",
        r.findings
    );
}
