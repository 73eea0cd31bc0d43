//! A minimal protobuf wire-format reader over a [`Slice`]: fields are read on demand and large
//! length-delimited fields are windows, never copies, so multi-GB ONNX initializers cost nothing.

use crate::source::Slice;

/// A field value.
#[derive(Debug, Clone)]
pub enum Val {
    Varint(u64),
    Len(Slice),
    Fixed,
}

/// Iterates the fields of one message.
#[derive(Debug)]
pub struct Fields {
    s: Slice,
    pos: u64,
    buf: Vec<u8>,
    buf_at: u64,
    /// Set when the message is not valid wire format.
    pub error: Option<String>,
}

impl Fields {
    pub fn new(s: Slice) -> Self {
        Self {
            s,
            pos: 0,
            buf: Vec::new(),
            buf_at: 0,
            error: None,
        }
    }

    fn byte(&mut self, at: u64) -> Option<u8> {
        if at < self.buf_at || at >= self.buf_at + self.buf.len() as u64 {
            let mut b = crate::source::buffer_for(self.s.len().saturating_sub(at), 64 * 1024);
            let n = self.s.read_at(at, &mut b).ok()?;
            b.truncate(n);
            self.buf = b;
            self.buf_at = at;
        }
        self.buf
            .get(usize::try_from(at - self.buf_at).ok()?)
            .copied()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Offset of the next field in the message.
    pub fn pos(&self) -> u64 {
        self.pos
    }
}

impl Iterator for Fields {
    type Item = (u32, Val);
    fn next(&mut self) -> Option<(u32, Val)> {
        if self.error.is_some() || self.pos >= self.s.len() {
            return None;
        }
        let at = self.pos;
        let fail = |me: &mut Self, why: &str| {
            me.error = Some(format!("{why} at offset {at}"));
            None
        };
        let Some(tag) = self.varint() else {
            return fail(self, "bad field tag");
        };
        let field = u32::try_from(tag >> 3).unwrap_or(0);
        if field == 0 {
            return fail(self, "field number 0");
        }
        let v = match tag & 7 {
            0 => match self.varint() {
                Some(v) => Val::Varint(v),
                None => return fail(self, "bad varint"),
            },
            1 => {
                self.pos += 8;
                Val::Fixed
            }
            5 => {
                self.pos += 4;
                Val::Fixed
            }
            2 => {
                let Some(n) = self.varint() else {
                    return fail(self, "bad length");
                };
                if n > self.s.len() - self.pos.min(self.s.len()) {
                    return fail(self, "length runs past the end of the message");
                }
                let w = self.s.sub(self.pos, n);
                self.pos += n;
                Val::Len(w)
            }
            _ => return fail(self, "unsupported wire type"),
        };
        if self.pos > self.s.len() {
            return fail(self, "field runs past the end of the message");
        }
        Some((field, v))
    }
}

/// A length-delimited field as UTF-8 text (bounded).
pub fn text(s: &Slice) -> Option<String> {
    if s.len() > 64 * 1024 {
        return None;
    }
    String::from_utf8(s.head(usize::try_from(s.len()).ok()?).ok()?).ok()
}

fn top_fields(head: &[u8]) -> Vec<(u32, Val)> {
    let mut f = Fields::new(Slice::mem(head.to_vec()));
    let mut out = Vec::new();
    for x in f.by_ref().take(16) {
        out.push(x);
    }
    out
}

/// ONNX `ModelProto` starts with `ir_version` (field 1, varint) and uses only its known fields.
pub fn looks_like_onnx(head: &[u8]) -> bool {
    let f = top_fields(head);
    matches!(f.first(), Some((1, Val::Varint(v))) if (3..=20).contains(v))
        && (f.len() >= 2
            || matches!(
                head.get(2),
                Some(0x12 | 0x1a | 0x22 | 0x28 | 0x32 | 0x3a | 0x42 | 0x72)
            ))
        && f.iter().all(|(n, v)| match n {
            1 | 5 => matches!(v, Val::Varint(_)),
            2..=4 | 6..=8 | 14 | 20 | 25 | 26 => matches!(v, Val::Len(_)),
            _ => false,
        })
}

/// TensorFlow `SavedModel` starts with `saved_model_schema_version` = 1 and then `meta_graphs`.
pub fn looks_like_saved_model(head: &[u8]) -> bool {
    let mut f = Fields::new(Slice::mem(head.to_vec()));
    matches!(f.next(), Some((1, Val::Varint(1))))
        && head.get(2) == Some(&0x12)
        && f.error.is_none()
        && {
            // The meta graph starts with a message tag, not text.
            let mut g = Fields::new(Slice::mem(head.get(2..).unwrap_or_default().to_vec()));
            g.varint().is_some()
                && g.varint().is_some()
                && matches!(g.byte(g.pos), Some(0x0a | 0x12))
        }
}
