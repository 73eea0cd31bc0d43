//! Repairs the HTTP/2 `:authority` that some gRPC clients send over Unix sockets.
//!
//! gRPC C-core (grpcio for Python, so py-spiffe) and grpc-java send the socket path as the
//! authority, e.g. `tmp%2Fagent.sock`. The `http` crate (under hyper/h2, under tonic) rejects
//! `%` in an authority, so h2 resets every such stream with PROTOCOL_ERROR and those clients
//! could never talk to the agent. Go clients (SPIRE's world) send `localhost`.
//!
//! This module sits between the socket and tonic, on the client-to-server direction only: it
//! decodes each HEADERS block with HPACK (keeping the client's dynamic table), replaces an
//! authority that is not a valid URI authority with `localhost`, and re-encodes the block with
//! its own encoder (whose table the server's decoder mirrors). All other frames pass through
//! untouched. The authority is not used for anything by the agent.
//!
//! Owns: that byte-level rewrite, bounded (frame and header-block sizes). Must not: change
//! anything else in the stream, or be the only defence against malformed HTTP/2 (h2 still
//! checks everything it receives).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have; re-encoded blocks are split to it.
const MAX_OUT_FRAME: usize = 16_384;
/// Largest header block accepted from a client (HEADERS plus CONTINUATIONs).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Largest frame forwarded (h2's default SETTINGS_MAX_FRAME_SIZE is 16 KiB; allow up to 1 MiB).
pub const MAX_FRAME: usize = 1024 * 1024;

/// Why the client stream was cut.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client did not start with the HTTP/2 preface")]
    Preface,
    #[error("HTTP/2 frame of {0} bytes is larger than {MAX_FRAME}")]
    FrameTooLarge(usize),
    #[error("header block is larger than {MAX_HEADER_BLOCK} bytes")]
    BlockTooLarge,
    #[error("malformed HEADERS frame: {0}")]
    Malformed(&'static str),
    #[error("HPACK: {0}")]
    Hpack(String),
}

/// Whether `v` is accepted by the `http` crate as a URI authority.
fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty() && http_authority_ok(v)
}

fn http_authority_ok(v: &[u8]) -> bool {
    // Conservative: reg-name/IPv4/host:port characters only (no `%`, `/`, `@`, spaces).
    v.iter().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b':' | b'[' | b']')
    })
}

/// Strips padding and priority from a HEADERS payload, leaving the header block fragment.
fn headers_fragment(flags: u8, payload: &[u8]) -> Result<&[u8], FixError> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or(FixError::Malformed("missing pad length"))?;
        pad = usize::from(n);
        p = rest;
    }
    if flags & PRIORITY != 0 {
        p = p
            .get(5..)
            .ok_or(FixError::Malformed("short priority block"))?;
    }
    let end = p
        .len()
        .checked_sub(pad)
        .ok_or(FixError::Malformed("padding longer than frame"))?;
    p.get(..end)
        .ok_or(FixError::Malformed("padding longer than frame"))
}

fn frame_header(len: usize, ty: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = u32::try_from(len).unwrap_or(0).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], ty, flags, s[0], s[1], s[2], s[3]]
}

/// Rewrites one decoded header list and encodes it.
pub fn rewrite_block(
    decoder: &mut loona_hpack::Decoder<'_>,
    encoder: &mut loona_hpack::Encoder<'_>,
    block: &[u8],
) -> Result<Vec<u8>, FixError> {
    let mut headers = decoder
        .decode(block)
        .map_err(|e| FixError::Hpack(e.to_string()))?;
    for (name, value) in &mut headers {
        if name.as_slice() == b":authority" && !valid_authority(value) {
            *value = b"localhost".to_vec();
        }
    }
    let mut out = Vec::with_capacity(block.len() + 16);
    encoder
        .encode_into(
            headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
            &mut out,
        )
        .map_err(FixError::Io)?;
    Ok(out)
}

/// Copies the client's bytes to the server, repairing `:authority` in every header block.
pub async fn client_to_server<R, W>(mut r: R, mut w: W) -> Result<(), FixError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    r.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(FixError::Preface);
    }
    w.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    let mut hdr = [0u8; 9];
    loop {
        match r.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let [l0, l1, l2, ty, flags, s0, s1, s2, s3] = hdr;
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        if len > MAX_FRAME {
            return Err(FixError::FrameTooLarge(len));
        }
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        if ty != HEADERS {
            w.write_all(&hdr).await?;
            w.write_all(&payload).await?;
            w.flush().await?;
            continue;
        }
        let mut block = headers_fragment(flags, &payload)?.to_vec();
        let mut end_headers = flags & END_HEADERS != 0;
        while !end_headers {
            let mut ch = [0u8; 9];
            r.read_exact(&mut ch).await?;
            let [c0, c1, c2, cty, cflags, ..] = ch;
            let clen = usize::from(c0) << 16 | usize::from(c1) << 8 | usize::from(c2);
            if cty != CONTINUATION {
                return Err(FixError::Malformed("HEADERS not followed by CONTINUATION"));
            }
            if block.len() + clen > MAX_HEADER_BLOCK {
                return Err(FixError::BlockTooLarge);
            }
            let mut frag = vec![0u8; clen];
            r.read_exact(&mut frag).await?;
            block.extend_from_slice(&frag);
            end_headers = cflags & END_HEADERS != 0;
        }
        if block.len() > MAX_HEADER_BLOCK {
            return Err(FixError::BlockTooLarge);
        }
        let out = rewrite_block(&mut decoder, &mut encoder, &block)?;
        let mut chunks = out.chunks(MAX_OUT_FRAME).peekable();
        let mut first = true;
        if out.is_empty() {
            w.write_all(&frame_header(
                0,
                HEADERS,
                (flags & END_STREAM) | END_HEADERS,
                stream,
            ))
            .await?;
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (ty, mut f) = if first {
                (HEADERS, flags & END_STREAM)
            } else {
                (CONTINUATION, 0)
            };
            if last {
                f |= END_HEADERS;
            }
            w.write_all(&frame_header(chunk.len(), ty, f, stream))
                .await?;
            w.write_all(chunk).await?;
            first = false;
        }
        w.flush().await?;
    }
    w.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_core_authority_is_replaced_and_the_rest_kept() {
        // The HEADERS block grpcio 1.85 sends over a Unix socket (authority `tmp%2Fcap.sock`).
        let mut client_enc = loona_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
            (b":authority", b"tmp%2Fcap.sock"),
            (b":method", b"POST"),
            (b"workload.spiffe.io", b"true"),
        ];
        let mut dec = loona_hpack::Decoder::new();
        let mut enc = loona_hpack::Encoder::new();
        let mut server_dec = loona_hpack::Decoder::new();
        for _ in 0..3 {
            // Repeated blocks exercise the dynamic tables on both sides.
            let block = client_enc.encode(headers.clone());
            let out = rewrite_block(&mut dec, &mut enc, &block).unwrap();
            let got = server_dec.decode(&out).unwrap();
            assert_eq!(got[1], (b":authority".to_vec(), b"localhost".to_vec()));
            assert_eq!(got[0].1, b"/SpiffeWorkloadAPI/FetchJWTSVID".to_vec());
            assert_eq!(got[3], (b"workload.spiffe.io".to_vec(), b"true".to_vec()));
        }
    }

    #[test]
    fn valid_authority_is_kept() {
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:8080"));
        assert!(!valid_authority(b"tmp%2Fagent.sock"));
        assert!(!valid_authority(b"/run/agent.sock"));
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let payload = [2u8, 0, 0, 0, 1, 16, 0xaa, 0xbb, 0, 0];
        assert_eq!(
            headers_fragment(PADDED | PRIORITY, &payload).unwrap(),
            &[0xaa, 0xbb]
        );
        assert!(headers_fragment(PADDED, &[9u8, 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_blocks_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut dec = loona_hpack::Decoder::new();
            let mut enc = loona_hpack::Encoder::new();
            let _ = rewrite_block(&mut dec, &mut enc, &b);
        }
        #[test]
        fn arbitrary_headers_frames_never_panic(flags in proptest::num::u8::ANY, b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = headers_fragment(flags, &b);
        }
    }
}
