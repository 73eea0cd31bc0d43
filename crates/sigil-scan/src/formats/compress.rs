//! Compressed streams (gzip, zlib incl. joblib's `ZF` container, bzip2, xz, lzma): decompressed
//! with a size limit into a spill buffer, then scanned like any other bytes.

use std::io::Read;

use crate::report::Format;
use crate::scan::{Ctx, scan_slice, spill_or_report};
use crate::source::{Slice, SpillWriter};

/// joblib's legacy zlib container: `ZF` then the hex length padded to 19 bytes.
const JOBLIB_ZF_HEADER: u64 = 2 + 19;

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, format: Format) -> Format {
    let limit = ctx.cfg.max_decompressed;
    let what = format!("{format} stream");
    let out = match format {
        Format::Gzip => spill_or_report(
            ctx,
            inner,
            flate2::read::MultiGzDecoder::new(s.clone()),
            &what,
        ),
        Format::Zlib => {
            let head = s.head(4).unwrap_or_default();
            let body = if head.starts_with(b"ZF0x") {
                s.sub(JOBLIB_ZF_HEADER, s.len())
            } else {
                s.clone()
            };
            spill_or_report(ctx, inner, flate2::read::ZlibDecoder::new(body), &what)
        }
        Format::Bzip2 => spill_or_report(
            ctx,
            inner,
            bzip2::read::MultiBzDecoder::new(s.clone()),
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
                Ok(s) => Some(s),
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
