//! Compressed streams (gzip, zlib incl. joblib's `ZF` container, bzip2, xz, lzma): decompressed
//! with a size limit into a spill buffer, then scanned like any other bytes.

use std::io::Read;

use crate::report::Format;
use crate::scan::{BOMB_PREFIX, Ctx, bomb_prefix, scan_slice, spill_or_report};
use crate::source::{Slice, SpillWriter};

/// joblib's legacy zlib container: `ZF` then the hex length padded to 19 bytes.
const JOBLIB_ZF_HEADER: u64 = 2 + 19;

/// The size a stream's own header or trailer declares, where it is a lower bound of what it
/// inflates to: gzip's ISIZE (the last member's size modulo 2^32: a bomb by it is a bomb at
/// least that large), and the `.lzma` header's size (`u64::MAX`: unknown). zlib, bzip2 and xz
/// streams declare none up front (xz's index is at the end and optional to trust); for them the
/// file's budget alone bounds inflation.
fn declared_size(s: &Slice, format: Format) -> Option<u64> {
    match format {
        Format::Gzip if s.len() >= 18 => s
            .array_at::<4>(s.len() - 4)
            .map(|b| u64::from(u32::from_le_bytes(b))),
        Format::Lzma => s
            .array_at::<8>(5)
            .map(u64::from_le_bytes)
            .filter(|n| *n != u64::MAX),
        _ => None,
    }
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, format: Format) -> Format {
    let what = format!("{format} stream");
    let refused = declared_size(s, format).is_some_and(|d| !ctx.admit(inner, 0, s.len(), d));
    let limit = ctx.inflate_room();
    let out = match format {
        Format::Gzip if refused => bomb_prefix(ctx, flate2::read::MultiGzDecoder::new(s.clone())),
        Format::Lzma if refused => {
            let mut w = SpillWriter::new(BOMB_PREFIX);
            let mut input = std::io::BufReader::new(s.clone());
            // Stops with an error at the cut, which is the point.
            let _ = lzma_rs::lzma_decompress(&mut input, &mut w);
            w.finish().ok()
        }
        Format::Gzip => spill_or_report(
            ctx,
            inner,
            flate2::read::MultiGzDecoder::new(s.clone()),
            None,
            &what,
        ),
        Format::Zlib => {
            let head = s.head(4).unwrap_or_default();
            let body = if head.starts_with(b"ZF0x") {
                s.sub(JOBLIB_ZF_HEADER, s.len())
            } else {
                s.clone()
            };
            spill_or_report(
                ctx,
                inner,
                flate2::read::ZlibDecoder::new(body),
                None,
                &what,
            )
        }
        Format::Bzip2 => spill_or_report(
            ctx,
            inner,
            bzip2::read::MultiBzDecoder::new(s.clone()),
            None,
            &what,
        ),
        Format::Xz | Format::Lzma => {
            let mut w = SpillWriter::new(limit);
            let mut input = std::io::BufReader::new(s.clone());
            let r = if format == Format::Xz {
                lzma_rs::xz_decompress(&mut input, &mut w)
            } else {
                lzma_rs::lzma_decompress(&mut input, &mut w)
            };
            if let Err(e) = r {
                ctx.malformed(
                    inner,
                    0,
                    format.as_str(),
                    format!("{what}: {e}; the part before the break is still scanned"),
                );
            }
            match w.finish() {
                Ok(s) => {
                    ctx.inflated(s.len());
                    Some(s)
                }
                Err(e) => {
                    ctx.malformed(inner, 0, format.as_str(), format!("spill failed: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    let Some(out) = out else { return format };
    let mut probe = [0u8; 1];
    if out.clone().read(&mut probe).unwrap_or(0) == 0 {
        ctx.malformed(
            inner,
            0,
            format.as_str(),
            format!("{what} decompresses to nothing"),
        );
        return format;
    }
    let inner_name = crate::scan::join(inner, &format!("<{format}>"));
    match scan_slice(ctx, &inner_name, &out) {
        Format::Pickle | Format::Joblib => Format::Joblib,
        _ => format,
    }
}
