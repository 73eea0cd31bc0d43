//! Our own pickle opcode walker, written against the pickle spec (protocols 0-5,
//! `Lib/pickletools.py` and the C unpickler `Modules/_pickle.c`).
//!
//! Owns: walking every opcode of a stream without executing anything, a symbolic stack and memo
//! good enough to resolve `STACK_GLOBAL` operands through memo tricks, the imports a loader would
//! perform, and structural problems (lying `FRAME` lengths, truncation, underflow). Streams are
//! read once through a bounded buffer; large byte payloads are skipped, never held.
//! Must not: run, import or allocate in proportion to declared lengths.
//!
//! Everything before a break still runs in the real loader, so findings made before a
//! truncation or a bad opcode are kept and the break itself is reported as malformed.

pub mod globals;
mod strings;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

pub use globals::{GlobalPolicy, GlobalVerdict, Profile};

use crate::report::{Category, Finding, Verdict};

/// Largest symbolic stack and memo we keep before calling the pickle abusive.
pub const MAX_STACK: usize = 1 << 20;
pub const MAX_MEMO: usize = 1 << 20;
/// Longest text line (protocol 0 operands, `GLOBAL` names) we accept.
pub const MAX_LINE: usize = 64 * 1024;
/// Longest string we keep as a value (longer ones are skipped, not kept).
const MAX_KEPT_STR: u64 = 64 * 1024;
/// Elements of a tuple/dict we keep symbolically.
const MAX_KEPT_ITEMS: usize = 64;
/// Nested pickles (joblib object arrays) deeper than this are malformed.
const MAX_NESTING: u32 = 8;

/// What to walk and how.
#[derive(Debug, Clone)]
pub struct WalkOptions<'a> {
    pub policy: &'a GlobalPolicy,
    /// The inner path reported in findings.
    pub inner: &'a str,
    /// Stop after this many pickles (legacy PyTorch files carry raw storage after five).
    pub max_pickles: Option<usize>,
    /// Understand joblib's raw array payloads after `NumpyArrayWrapper` BUILDs.
    pub joblib: bool,
}

/// What the walk found.
#[derive(Debug, Default, Clone)]
pub struct WalkResult {
    pub findings: Vec<Finding>,
    /// Complete pickles (ending in STOP).
    pub pickles: usize,
    /// Every distinct global imported, `module.name`.
    pub globals: Vec<String>,
    /// Bytes consumed.
    pub consumed: u64,
    /// Highest protocol seen.
    pub protocol: u8,
}

#[derive(Debug)]
struct Glob {
    module: Rc<str>,
    name: Rc<str>,
}

#[derive(Debug)]
struct Obj {
    class: Option<Rc<Glob>>,
    args: Option<Rc<Vec<V>>>,
}

#[derive(Debug, Clone)]
enum V {
    Str(Rc<str>),
    Int(i64),
    Tuple(Rc<Vec<V>>),
    Dict(Rc<Vec<(V, V)>>),
    Global(Rc<Glob>),
    Obj(Rc<Obj>),
    Other,
}

/// Why a walk stopped early.
#[derive(Debug)]
enum Stop {
    /// Clean end of input at a pickle boundary.
    End,
    Truncated(&'static str),
    Bad(String),
    Io(std::io::Error),
}

struct In<R> {
    r: BufReader<R>,
    pos: u64,
}

impl<R: Read> In<R> {
    fn u8(&mut self, what: &'static str) -> Result<u8, Stop> {
        let mut b = [0u8; 1];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), Stop> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Stop::Truncated(what)),
            Err(e) => Err(Stop::Io(e)),
        }
    }

    fn le(&mut self, n: usize, what: &'static str) -> Result<u64, Stop> {
        let mut b = [0u8; 8];
        let slot = b.get_mut(..n).ok_or(Stop::Bad("bad width".into()))?;
        self.exact(slot, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `n` bytes if small enough to keep, else skips them.
    fn take(&mut self, n: u64, what: &'static str) -> Result<Option<Vec<u8>>, Stop> {
        if n <= MAX_KEPT_STR {
            let mut v = vec![0u8; usize::try_from(n).map_err(|_| Stop::Bad("length".into()))?];
            self.exact(&mut v, what)?;
            Ok(Some(v))
        } else {
            self.skip(n, what)?;
            Ok(None)
        }
    }

    fn skip(&mut self, mut n: u64, what: &'static str) -> Result<(), Stop> {
        while n > 0 {
            let avail = match self.r.fill_buf() {
                Ok(b) => b.len(),
                Err(e) => return Err(Stop::Io(e)),
            };
            if avail == 0 {
                return Err(Stop::Truncated(what));
            }
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
            self.r.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    fn line(&mut self, what: &'static str) -> Result<Vec<u8>, Stop> {
        let mut out = Vec::new();
        loop {
            let buf = self.r.fill_buf().map_err(Stop::Io)?;
            if buf.is_empty() {
                return Err(Stop::Truncated(what));
            }
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                out.extend_from_slice(buf.get(..i).unwrap_or_default());
                self.r.consume(i + 1);
                self.pos += i as u64 + 1;
                break;
            }
            let n = buf.len();
            out.extend_from_slice(buf);
            self.r.consume(n);
            self.pos += n as u64;
            if out.len() > MAX_LINE {
                return Err(Stop::Bad(format!(
                    "{what} line longer than {MAX_LINE} bytes"
                )));
            }
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        Ok(out)
    }

    fn at_eof(&mut self) -> Result<bool, Stop> {
        Ok(self.r.fill_buf().map_err(Stop::Io)?.is_empty())
    }
}

struct Walker<'a, R> {
    inp: In<R>,
    opts: &'a WalkOptions<'a>,
    res: WalkResult,
    seen: HashSet<String>,
    reported: HashSet<(String, u8)>,
}

/// One pickle's interpreter state.
#[derive(Default)]
struct Machine {
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u64, V>,
}

impl Machine {
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: V) -> Result<(), Stop> {
        if self.stack.len() >= MAX_STACK {
            return Err(Stop::Bad(format!("stack deeper than {MAX_STACK} entries")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, op: &str) -> Result<V, Stop> {
        if self.stack.len() <= self.fence() {
            return Err(Stop::Bad(format!("stack underflow at {op}")));
        }
        self.stack
            .pop()
            .ok_or_else(|| Stop::Bad(format!("stack underflow at {op}")))
    }

    fn top(&mut self, op: &str) -> Result<&mut V, Stop> {
        if self.stack.len() <= self.fence() {
            return Err(Stop::Bad(format!("stack underflow at {op}")));
        }
        self.stack
            .last_mut()
            .ok_or_else(|| Stop::Bad(format!("stack underflow at {op}")))
    }

    fn pop_mark(&mut self, op: &str) -> Result<Vec<V>, Stop> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| Stop::Bad(format!("{op} without a MARK")))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn memo_put(&mut self, idx: u64, v: V) -> Result<(), Stop> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
            return Err(Stop::Bad(format!("memo larger than {MAX_MEMO} entries")));
        }
        self.memo.insert(idx, v);
        Ok(())
    }
}

fn tuple(items: Vec<V>) -> V {
    if items.len() > MAX_KEPT_ITEMS {
        V::Other
    } else {
        V::Tuple(Rc::new(items))
    }
}

fn parse_int_line(line: &[u8], op: &str) -> Result<V, Stop> {
    let s = std::str::from_utf8(line).map_err(|_| Stop::Bad(format!("{op} operand not ASCII")))?;
    let s = s.trim().trim_end_matches('L');
    match s {
        "00" => return Ok(V::Other),
        "01" => return Ok(V::Other),
        _ => {}
    }
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if body.is_empty() || !body.chars().all(|c| c.is_ascii_digit()) {
        return Err(Stop::Bad(format!("{op} operand {s:?} is not an integer")));
    }
    Ok(s.parse::<i64>().map(V::Int).unwrap_or(V::Other))
}

fn parse_index_line(line: &[u8], op: &str) -> Result<u64, Stop> {
    let s = std::str::from_utf8(line).map_err(|_| Stop::Bad(format!("{op} index not ASCII")))?;
    s.trim()
        .parse::<u64>()
        .map_err(|_| Stop::Bad(format!("{op} index {s:?} is not a non-negative integer")))
}

fn utf8_line(line: Vec<u8>, op: &str) -> Result<String, Stop> {
    String::from_utf8(line).map_err(|_| Stop::Bad(format!("{op} name is not UTF-8")))
}

/// Walks every pickle in `r`.
pub fn walk<R: Read>(r: R, opts: &WalkOptions<'_>) -> WalkResult {
    let mut w = Walker {
        inp: In {
            r: BufReader::with_capacity(256 * 1024, r),
            pos: 0,
        },
        opts,
        res: WalkResult::default(),
        seen: HashSet::new(),
        reported: HashSet::new(),
    };
    w.run();
    w.res.consumed = w.inp.pos;
    w.res
}

impl<R: Read> Walker<'_, R> {
    fn finding(
        &mut self,
        verdict: Verdict,
        category: Category,
        offset: u64,
        subject: String,
        reason: String,
    ) {
        self.res.findings.push(Finding {
            verdict,
            category,
            inner: self.opts.inner.to_owned(),
            offset,
            subject,
            reason,
        });
    }

    fn run(&mut self) {
        loop {
            let start = self.inp.pos;
            match self.inp.at_eof() {
                Ok(true) => {
                    if self.res.pickles == 0 {
                        self.finding(
                            Verdict::Malformed,
                            Category::Structure,
                            start,
                            "EOF".into(),
                            "empty pickle stream".into(),
                        );
                    }
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    self.stop(e, start);
                    return;
                }
            }
            let mut m = Machine::default();
            match self.one(&mut m, 0) {
                Ok(()) => {
                    self.res.pickles += 1;
                    if self.opts.max_pickles.is_some_and(|n| self.res.pickles >= n) {
                        return;
                    }
                }
                Err(e) => {
                    if self.res.pickles > 0 && self.inp.pos <= start + 1 {
                        // The bytes after the last STOP are not a pickle at all.
                        self.finding(
                            Verdict::Malformed,
                            Category::Structure,
                            start,
                            "trailing data".into(),
                            "bytes after the last STOP are not a pickle (pickle.load ignores them; a second load() call fails)".into(),
                        );
                        return;
                    }
                    self.stop(e, start);
                    return;
                }
            }
        }
    }

    fn stop(&mut self, e: Stop, start: u64) {
        let at = self.inp.pos;
        match e {
            Stop::End => {}
            Stop::Truncated(what) => self.finding(
                Verdict::Malformed,
                Category::Structure,
                at,
                what.into(),
                format!(
                    "pickle truncated while reading {what} (stream started at {start}); every opcode before this point still runs in the loader"
                ),
            ),
            Stop::Bad(msg) => self.finding(
                Verdict::Malformed,
                Category::Structure,
                at,
                "opcode".into(),
                format!("{msg}; the loader stops here, everything before still runs"),
            ),
            Stop::Io(e) => self.finding(
                Verdict::Malformed,
                Category::Structure,
                at,
                "read".into(),
                format!("read error: {e}"),
            ),
        }
    }

    fn global(&mut self, module: &str, name: &str, offset: u64, via: &str) -> V {
        let full = format!("{module}.{name}");
        if self.seen.insert(full.clone()) {
            self.res.globals.push(full.clone());
        }
        let v = self.opts.policy.classify(module, name);
        if v.verdict != Verdict::Safe && self.reported.insert((full.clone(), 0)) {
            self.finding(
                v.verdict,
                v.category,
                offset,
                full,
                format!("{} (via {via})", v.reason),
            );
        }
        V::Global(Rc::new(Glob {
            module: module.into(),
            name: name.into(),
        }))
    }

    /// Walks one pickle up to and including STOP.
    fn one(&mut self, m: &mut Machine, depth: u32) -> Result<(), Stop> {
        let mut frame_end: Option<u64> = None;
        let mut first = true;
        loop {
            let at = self.inp.pos;
            if let Some(end) = frame_end {
                if at > end {
                    frame_end = None;
                    self.finding(
                        Verdict::Malformed,
                        Category::Structure,
                        at,
                        "FRAME".into(),
                        format!("an opcode crosses the frame boundary at offset {end}; the C and Python unpicklers disagree on such streams"),
                    );
                } else if at == end {
                    frame_end = None;
                }
            }
            let op = match self.inp.u8("opcode") {
                Ok(b) => b,
                Err(Stop::Truncated(_)) if first => return Err(Stop::End),
                Err(e) => return Err(e),
            };
            first = false;
            match op {
                b'(' => {
                    m.marks.push(m.stack.len());
                }
                b'.' => {
                    if let Some(end) = frame_end.filter(|&e| e > self.inp.pos) {
                        self.finding(
                            Verdict::Malformed,
                            Category::Structure,
                            at,
                            "FRAME".into(),
                            format!("the last FRAME claims {} more bytes after STOP; the C unpickler refuses to start that frame", end - self.inp.pos),
                        );
                    }
                    return Ok(());
                }
                b'0' => {
                    if m.marks.last() == Some(&m.stack.len()) {
                        m.marks.pop();
                    } else {
                        m.pop("POP")?;
                    }
                }
                b'1' => {
                    m.pop_mark("POP_MARK")?;
                }
                b'2' => {
                    let v = m.top("DUP")?.clone();
                    m.push(v)?;
                }
                b'F' => {
                    self.inp.line("FLOAT")?;
                    m.push(V::Other)?;
                }
                b'I' => {
                    let l = self.inp.line("INT")?;
                    m.push(parse_int_line(&l, "INT")?)?;
                }
                b'J' => {
                    let v = self.inp.le(4, "BININT")? as u32 as i32;
                    m.push(V::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.inp.u8("BININT1")?;
                    m.push(V::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = self.inp.le(2, "BININT2")?;
                    m.push(V::Int(v as i64))?;
                }
                b'L' => {
                    let l = self.inp.line("LONG")?;
                    m.push(parse_int_line(&l, "LONG")?)?;
                }
                b'N' | 0x88 | 0x89 => m.push(V::Other)?,
                b'P' => {
                    self.inp.line("PERSID")?;
                    m.push(V::Other)?;
                }
                b'Q' => {
                    m.pop("BINPERSID")?;
                    m.push(V::Other)?;
                }
                b'R' => {
                    let args = m.pop("REDUCE")?;
                    let f = m.pop("REDUCE")?;
                    m.push(self.call(f, args))?;
                }
                b'S' => {
                    let l = self.inp.line("STRING")?;
                    let s = strings::decode_string_repr(&l)
                        .ok_or_else(|| Stop::Bad("STRING operand is not a quoted string".into()))?;
                    m.push(V::Str(s.into()))?;
                }
                b'T' | b'U' | b'X' | 0x8c | 0x8d => {
                    let (n, what) = match op {
                        b'T' => (
                            self.inp.le(4, "BINSTRING")? as u32 as i32 as i64,
                            "BINSTRING",
                        ),
                        b'U' => (
                            i64::from(self.inp.u8("SHORT_BINSTRING")?),
                            "SHORT_BINSTRING",
                        ),
                        b'X' => (self.inp.le(4, "BINUNICODE")? as i64, "BINUNICODE"),
                        0x8c => (
                            i64::from(self.inp.u8("SHORT_BINUNICODE")?),
                            "SHORT_BINUNICODE",
                        ),
                        _ => (
                            i64::try_from(self.inp.le(8, "BINUNICODE8")?).unwrap_or(i64::MAX),
                            "BINUNICODE8",
                        ),
                    };
                    if n < 0 {
                        return Err(Stop::Bad(format!("{what} has a negative length")));
                    }
                    let v = match self.inp.take(n as u64, what)? {
                        Some(b) => match (op, String::from_utf8(b)) {
                            (_, Ok(s)) => V::Str(s.into()),
                            (b'X' | 0x8c | 0x8d, Err(_)) => {
                                return Err(Stop::Bad(format!("{what} is not UTF-8")));
                            }
                            (_, Err(e)) => V::Str(
                                e.into_bytes()
                                    .iter()
                                    .map(|&c| char::from(c))
                                    .collect::<String>()
                                    .into(),
                            ),
                        },
                        None => V::Other,
                    };
                    m.push(v)?;
                }
                b'V' => {
                    let l = self.inp.line("UNICODE")?;
                    let s = strings::decode_raw_unicode_escape(&l)
                        .ok_or_else(|| Stop::Bad("UNICODE operand has a bad escape".into()))?;
                    m.push(V::Str(s.into()))?;
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let (n, what) = match op {
                        b'B' => (self.inp.le(4, "BINBYTES")?, "BINBYTES"),
                        b'C' => (u64::from(self.inp.u8("SHORT_BINBYTES")?), "SHORT_BINBYTES"),
                        0x8e => (self.inp.le(8, "BINBYTES8")?, "BINBYTES8"),
                        _ => (self.inp.le(8, "BYTEARRAY8")?, "BYTEARRAY8"),
                    };
                    self.inp.skip(n, what)?;
                    m.push(V::Other)?;
                }
                b'a' => {
                    m.pop("APPEND")?;
                    m.top("APPEND")?;
                }
                b'b' => {
                    let state = m.pop("BUILD")?;
                    let obj = m.top("BUILD")?.clone();
                    if self.opts.joblib {
                        let before = self.inp.pos;
                        self.joblib_build(&obj, &state, at, depth)?;
                        // joblib commits the frame before writing raw array bytes.
                        if self.inp.pos != before && frame_end == Some(before) {
                            frame_end = None;
                        }
                    }
                }
                b'c' => {
                    let module = utf8_line(self.inp.line("GLOBAL module")?, "GLOBAL")?;
                    let name = utf8_line(self.inp.line("GLOBAL name")?, "GLOBAL")?;
                    let v = self.global(&module, &name, at, "GLOBAL");
                    m.push(v)?;
                }
                b'd' => {
                    let items = m.pop_mark("DICT")?;
                    m.push(dict_from(items))?;
                }
                b'}' => m.push(V::Dict(Rc::new(Vec::new())))?,
                b'e' => {
                    m.pop_mark("APPENDS")?;
                    m.top("APPENDS")?;
                }
                b'g' => {
                    let i = parse_index_line(&self.inp.line("GET")?, "GET")?;
                    self.get(m, i)?;
                }
                b'h' => {
                    let i = u64::from(self.inp.u8("BINGET")?);
                    self.get(m, i)?;
                }
                b'j' => {
                    let i = self.inp.le(4, "LONG_BINGET")?;
                    self.get(m, i)?;
                }
                b'i' => {
                    let module = utf8_line(self.inp.line("INST module")?, "INST")?;
                    let name = utf8_line(self.inp.line("INST name")?, "INST")?;
                    let args = m.pop_mark("INST")?;
                    let g = self.global(&module, &name, at, "INST");
                    m.push(self.call(g, tuple(args)))?;
                }
                b'l' => {
                    m.pop_mark("LIST")?;
                    m.push(V::Other)?;
                }
                b']' => m.push(V::Other)?,
                b'o' => {
                    let mut items = m.pop_mark("OBJ")?;
                    if items.is_empty() {
                        return Err(Stop::Bad("OBJ without a class".into()));
                    }
                    let cls = items.remove(0);
                    m.push(self.call(cls, tuple(items)))?;
                }
                b'p' => {
                    let i = parse_index_line(&self.inp.line("PUT")?, "PUT")?;
                    let v = m.top("PUT")?.clone();
                    m.memo_put(i, v)?;
                }
                b'q' => {
                    let i = u64::from(self.inp.u8("BINPUT")?);
                    let v = m.top("BINPUT")?.clone();
                    m.memo_put(i, v)?;
                }
                b'r' => {
                    let i = self.inp.le(4, "LONG_BINPUT")?;
                    let v = m.top("LONG_BINPUT")?.clone();
                    m.memo_put(i, v)?;
                }
                0x94 => {
                    let i = m.memo.len() as u64;
                    let v = m.top("MEMOIZE")?.clone();
                    m.memo_put(i, v)?;
                }
                b's' => {
                    let v = m.pop("SETITEM")?;
                    let k = m.pop("SETITEM")?;
                    dict_add(m.top("SETITEM")?, vec![(k, v)]);
                }
                b'u' => {
                    let items = m.pop_mark("SETITEMS")?;
                    let pairs = pairs(items);
                    dict_add(m.top("SETITEMS")?, pairs);
                }
                b't' => {
                    let items = m.pop_mark("TUPLE")?;
                    m.push(tuple(items))?;
                }
                b')' => m.push(V::Tuple(Rc::new(Vec::new())))?,
                0x85 => {
                    let a = m.pop("TUPLE1")?;
                    m.push(tuple(vec![a]))?;
                }
                0x86 => {
                    let b = m.pop("TUPLE2")?;
                    let a = m.pop("TUPLE2")?;
                    m.push(tuple(vec![a, b]))?;
                }
                0x87 => {
                    let c = m.pop("TUPLE3")?;
                    let b = m.pop("TUPLE3")?;
                    let a = m.pop("TUPLE3")?;
                    m.push(tuple(vec![a, b, c]))?;
                }
                b'G' => {
                    self.inp.skip(8, "BINFLOAT")?;
                    m.push(V::Other)?;
                }
                0x80 => {
                    let p = self.inp.u8("PROTO")?;
                    if p > 5 {
                        return Err(Stop::Bad(format!("unsupported pickle protocol {p}")));
                    }
                    self.res.protocol = self.res.protocol.max(p);
                }
                0x81 => {
                    let args = m.pop("NEWOBJ")?;
                    let cls = m.pop("NEWOBJ")?;
                    m.push(self.call(cls, args))?;
                }
                0x92 => {
                    m.pop("NEWOBJ_EX")?;
                    let args = m.pop("NEWOBJ_EX")?;
                    let cls = m.pop("NEWOBJ_EX")?;
                    m.push(self.call(cls, args))?;
                }
                0x82..=0x84 => {
                    let n = match op {
                        0x82 => 1,
                        0x83 => 2,
                        _ => 4,
                    };
                    let code = self.inp.le(n, "EXT")?;
                    self.finding(
                        Verdict::Suspicious,
                        Category::UnknownGlobal,
                        at,
                        format!("EXT{n} {code}"),
                        "copyreg extension code resolves to a global the scanner cannot see".into(),
                    );
                    m.push(V::Other)?;
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.inp.u8("LONG1")?)
                    } else {
                        let n = self.inp.le(4, "LONG4")? as u32 as i32;
                        u64::try_from(n)
                            .map_err(|_| Stop::Bad("LONG4 has a negative length".into()))?
                    };
                    let v = match self.inp.take(n, "LONG")? {
                        Some(b) if b.len() <= 8 => {
                            let mut buf = [0u8; 8];
                            let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                                0xff
                            } else {
                                0
                            };
                            buf.fill(fill);
                            for (d, s) in buf.iter_mut().zip(b.iter()) {
                                *d = *s;
                            }
                            V::Int(i64::from_le_bytes(buf))
                        }
                        _ => V::Other,
                    };
                    m.push(v)?;
                }
                0x8f => m.push(V::Other)?,
                0x90 => {
                    m.pop_mark("ADDITEMS")?;
                    m.top("ADDITEMS")?;
                }
                0x91 => {
                    m.pop_mark("FROZENSET")?;
                    m.push(V::Other)?;
                }
                0x93 => {
                    let name = m.pop("STACK_GLOBAL")?;
                    let module = m.pop("STACK_GLOBAL")?;
                    match (module, name) {
                        (V::Str(mo), V::Str(na)) => {
                            let v = self.global(&mo, &na, at, "STACK_GLOBAL");
                            m.push(v)?;
                        }
                        _ => {
                            return Err(Stop::Bad(
                                "STACK_GLOBAL operands are not both strings (the loader refuses this)"
                                    .into(),
                            ));
                        }
                    }
                }
                0x95 => {
                    let n = self.inp.le(8, "FRAME")?;
                    if frame_end.is_some() {
                        self.finding(
                            Verdict::Malformed,
                            Category::Structure,
                            at,
                            "FRAME".into(),
                            "a FRAME starts inside the previous frame".into(),
                        );
                    }
                    frame_end = Some(self.inp.pos.saturating_add(n));
                }
                0x97 | 0x98 => {
                    if op == 0x97 {
                        m.push(V::Other)?;
                    } else {
                        m.top("READONLY_BUFFER")?;
                    }
                }
                other => {
                    return Err(Stop::Bad(format!("invalid opcode 0x{other:02x}")));
                }
            }
        }
    }

    fn get(&mut self, m: &mut Machine, i: u64) -> Result<(), Stop> {
        let v = m
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| Stop::Bad(format!("memo key {i} not found")))?;
        m.push(v)
    }

    fn call(&mut self, f: V, args: V) -> V {
        let class = match f {
            V::Global(g) => Some(g),
            _ => None,
        };
        let args = match args {
            V::Tuple(t) => Some(t),
            _ => None,
        };
        V::Obj(Rc::new(Obj { class, args }))
    }

    /// joblib writes each non-object array's raw bytes right after the wrapper's BUILD, and an
    /// object array as a whole nested pickle.
    fn joblib_build(&mut self, obj: &V, state: &V, at: u64, depth: u32) -> Result<(), Stop> {
        let V::Obj(o) = obj else { return Ok(()) };
        let Some(cls) = &o.class else { return Ok(()) };
        if &*cls.module != "joblib.numpy_pickle" || &*cls.name != "NumpyArrayWrapper" {
            return Ok(());
        }
        let V::Dict(d) = state else {
            return Err(Stop::Bad(
                "joblib NumpyArrayWrapper state is not a dict".into(),
            ));
        };
        let get = |k: &str| {
            d.iter()
                .find(|(key, _)| matches!(key, V::Str(s) if &**s == k))
                .map(|(_, v)| v)
        };
        let dtype = match get("dtype") {
            Some(V::Obj(o)) => {
                o.args
                    .as_ref()
                    .and_then(|a| a.first().cloned())
                    .and_then(|v| match v {
                        V::Str(s) => Some(s),
                        _ => None,
                    })
            }
            _ => None,
        }
        .ok_or_else(|| Stop::Bad("joblib array dtype cannot be resolved".into()))?;
        if dtype.starts_with('O') {
            if depth >= MAX_NESTING {
                return Err(Stop::Bad("joblib object arrays nested too deep".into()));
            }
            let mut inner = Machine::default();
            return match self.one(&mut inner, depth + 1) {
                Ok(()) => Ok(()),
                Err(Stop::End) => Err(Stop::Truncated("joblib object array pickle")),
                Err(e) => Err(e),
            };
        }
        let item = dtype_itemsize(&dtype)
            .ok_or_else(|| Stop::Bad(format!("joblib array dtype {dtype:?} not understood")))?;
        let mut count: u64 = 1;
        match get("shape") {
            Some(V::Tuple(t)) => {
                for v in t.iter() {
                    match v {
                        V::Int(n) if *n >= 0 => {
                            count = count
                                .checked_mul(*n as u64)
                                .ok_or_else(|| Stop::Bad("joblib array shape overflows".into()))?;
                        }
                        _ => return Err(Stop::Bad("joblib array shape is not integers".into())),
                    }
                }
            }
            _ => return Err(Stop::Bad("joblib array shape cannot be resolved".into())),
        }
        let size = count
            .checked_mul(item)
            .ok_or_else(|| Stop::Bad("joblib array size overflows".into()))?;
        if let Some(V::Int(_)) = get("numpy_array_alignment_bytes") {
            let pad = self.inp.u8("joblib padding length")?;
            self.inp.skip(u64::from(pad), "joblib padding")?;
        }
        let _ = at;
        self.inp.skip(size, "joblib array data")
    }
}

fn dtype_itemsize(s: &str) -> Option<u64> {
    let s = s.trim_start_matches(['<', '>', '|', '=']);
    let mut chars = s.chars();
    let kind = chars.next()?;
    let n: u64 = chars.as_str().parse().ok()?;
    Some(match kind {
        'U' => n.checked_mul(4)?,
        'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'V' | 'M' | 'm' | 'a' => n,
        _ => return None,
    })
}

fn pairs(items: Vec<V>) -> Vec<(V, V)> {
    let mut out = Vec::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn dict_from(items: Vec<V>) -> V {
    let p = pairs(items);
    if p.len() > MAX_KEPT_ITEMS {
        V::Other
    } else {
        V::Dict(Rc::new(p))
    }
}

fn dict_add(target: &mut V, new: Vec<(V, V)>) {
    if let V::Dict(d) = target {
        let d = Rc::make_mut(d);
        if d.len() + new.len() > MAX_KEPT_ITEMS {
            *target = V::Other;
        } else {
            d.extend(new);
        }
    }
}

#[cfg(test)]
mod tests;
