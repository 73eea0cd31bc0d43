//! Decoding of protocol-0 text operands: `STRING` (a Python repr, `codecs.escape_decode`) and
//! `UNICODE` (`raw-unicode-escape`). Bounded by the caller's line limit.

/// Decodes the operand of `STRING`: a quoted repr with backslash escapes. The unpickler decodes
/// the bytes with its `encoding` (ASCII by default); we map bytes to chars one to one.
pub fn decode_string_repr(line: &[u8]) -> Option<String> {
    let (&q, rest) = line.split_first()?;
    if q != b'\'' && q != b'"' {
        return None;
    }
    let (&last, body) = rest.split_last()?;
    if last != q {
        return None;
    }
    let mut out = String::new();
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(char::from(c));
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'a' => out.push('\x07'),
            b'b' => out.push('\x08'),
            b'f' => out.push('\x0c'),
            b'v' => out.push('\x0b'),
            b'\\' | b'\'' | b'"' => out.push(char::from(e)),
            b'\n' => {}
            b'x' => {
                let h = body.get(i..i + 2)?;
                i += 2;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(char::from(v));
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(char::from((v & 0xff) as u8));
            }
            other => {
                out.push('\\');
                out.push(char::from(other));
            }
        }
    }
    Some(out)
}

/// Decodes the operand of `UNICODE` (`raw-unicode-escape`): only `\uXXXX` and `\UXXXXXXXX`
/// are escapes; other bytes are Latin-1.
pub fn decode_raw_unicode_escape(line: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&c) = line.get(i) {
        if c == b'\\' {
            let n = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if n > 0 {
                let h = line.get(i + 2..i + 2 + n)?;
                let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(char::from_u32(v)?);
                i += 2 + n;
                continue;
            }
        }
        out.push(char::from(c));
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_repr() {
        assert_eq!(decode_string_repr(b"'os'").as_deref(), Some("os"));
        assert_eq!(decode_string_repr(b"'o\\x73'").as_deref(), Some("os"));
        assert_eq!(
            decode_string_repr(b"\"sy\\163tem\"").as_deref(),
            Some("system")
        );
        assert_eq!(decode_string_repr(b"'unterminated"), None);
    }

    #[test]
    fn raw_unicode() {
        assert_eq!(
            decode_raw_unicode_escape(b"\\u006fs").as_deref(),
            Some("os")
        );
        assert_eq!(decode_raw_unicode_escape(b"\\u00"), None);
    }
}
