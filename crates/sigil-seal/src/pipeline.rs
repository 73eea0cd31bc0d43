//! Parallel segment processing with bounded memory. The calling thread reads segments into
//! buffers taken from a fixed pool (the window), worker threads seal or open them, and a writer
//! thread puts them back in order and returns each buffer to the pool. At most `window` segments
//! are in flight, so memory is `window × segment` whatever the input's size, and a pipe works the
//! same as a file. Whether a segment is the last is known by reading one segment ahead.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::error::SegmentError;

/// What can go wrong while streaming: reading, writing or a segment.
#[derive(Debug)]
pub enum StreamError {
    Read(std::io::Error),
    Write(std::io::Error),
    Segment(SegmentError),
}

/// Most memory the window may take for segment buffers.
const WINDOW_BYTES: usize = 256 << 20;

/// Worker threads: `jobs`, or one per core.
pub fn jobs(jobs: Option<usize>) -> usize {
    jobs.filter(|&j| j > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// Segments in flight for `jobs` workers and chunks of `chunk` bytes.
fn window(jobs: usize, chunk: usize) -> usize {
    let want = 2 * jobs + 2;
    let fits = WINDOW_BYTES / chunk.max(1);
    want.min(fits).max(jobs + 1)
}

/// The shape of a run: chunk sizes, threads, and whether an empty input is allowed.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Input bytes per segment.
    pub chunk: usize,
    /// Capacity each buffer needs (the larger of input and output segment).
    pub out_cap: usize,
    pub jobs: usize,
    /// Whether an empty input is one empty last segment (sealing) or an error (opening: a body
    /// has at least one segment).
    pub empty_ok: bool,
}

/// One segment travelling through the pipeline.
struct Job {
    index: u64,
    last: bool,
    /// Always `out_cap` long (never re-zeroed); the data is `buf[..len]`.
    buf: Vec<u8>,
    len: usize,
}

/// A processed segment on its way to the writer: (index, input bytes, buffer, output length).
type Done = (u64, u64, Result<(Vec<u8>, usize), SegmentError>);

/// Read `input` in chunks of `shape.chunk` bytes, apply `transform(index, last, buf, len)`
/// (which returns the new length of the data in `buf`) to each on `shape.jobs` threads, write the
/// results to `output` in order. `progress` is called with the input bytes of each segment
/// written. Returns (segments, input bytes).
pub fn run<R, W, T, P>(
    mut input: R,
    mut output: W,
    shape: Shape,
    transform: &T,
    progress: &P,
) -> Result<(u64, u64), StreamError>
where
    R: Read,
    W: Write + Send,
    T: Fn(u64, bool, &mut [u8], usize) -> Result<usize, SegmentError> + Sync,
    P: Fn(u64) + Sync + ?Sized,
{
    let Shape {
        chunk,
        out_cap,
        jobs,
        empty_ok,
    } = shape;
    let jobs = jobs.max(1);
    let window = window(jobs, out_cap);
    std::thread::scope(|s| {
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(window);
        for _ in 0..window {
            // The channel holds `window` items, so these sends never block or fail.
            let _ = free_tx.send(vec![0u8; out_cap]);
        }
        let (done_tx, done_rx) = sync_channel::<Done>(window);
        let mut work: Vec<SyncSender<Job>> = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let (tx, rx) = sync_channel::<Job>(window);
            work.push(tx);
            let done = done_tx.clone();
            s.spawn(move || worker(rx, done, transform));
        }
        drop(done_tx);
        let writer = s.spawn(move || -> Result<u64, StreamError> {
            let mut next = 0u64;
            let mut pending = BTreeMap::new();
            for (index, in_len, r) in done_rx {
                pending.insert(index, (in_len, r.map_err(StreamError::Segment)?));
                while let Some((in_len, (buf, len))) = pending.remove(&next) {
                    let data = buf.get(..len).unwrap_or_default();
                    output.write_all(data).map_err(StreamError::Write)?;
                    progress(in_len);
                    // The reader may have stopped; a closed pool is not an error here.
                    let _ = free_tx.send(buf);
                    next += 1;
                }
            }
            output.flush().map_err(StreamError::Write)?;
            Ok(next)
        });
        let read = read_loop(&mut input, chunk, empty_ok, &free_rx, &work);
        drop(work);
        drop(free_rx);
        let written = writer.join().unwrap_or_else(|_| {
            Err(StreamError::Write(std::io::Error::other(
                "writer thread panicked",
            )))
        });
        // A reading error explains a short write; a writing or segment error stops the reader.
        let (segments, bytes) = match (read, written) {
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(r), Ok(w)) => {
                if r.0 != w {
                    return Err(StreamError::Write(std::io::Error::other(format!(
                        "{w} of {} segments written",
                        r.0
                    ))));
                }
                r
            }
        };
        Ok((segments, bytes))
    })
}

fn worker<T>(rx: Receiver<Job>, done: SyncSender<Done>, t: &T)
where
    T: Fn(u64, bool, &mut [u8], usize) -> Result<usize, SegmentError> + Sync,
{
    for mut job in rx {
        let in_len = job.len as u64;
        let r = t(job.index, job.last, &mut job.buf, job.len).map(|n| (job.buf, n));
        let failed = r.is_err();
        if done.send((job.index, in_len, r)).is_err() || failed {
            return;
        }
    }
}

/// Read up to `chunk` bytes into `buf` (which is at least that long); fewer only at end of input.
fn fill<R: Read>(r: &mut R, buf: &mut [u8], chunk: usize) -> std::io::Result<usize> {
    let Some(dst) = buf.get_mut(..chunk) else {
        return Err(std::io::Error::other(
            "segment buffer shorter than a segment",
        ));
    };
    let mut n = 0;
    while n < dst.len() {
        let Some(rest) = dst.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Returns (segments dispatched, input bytes), or stops early when the pipeline closed (the
/// writer's error is then the one reported).
fn read_loop<R: Read>(
    input: &mut R,
    chunk: usize,
    empty_ok: bool,
    free: &Receiver<Vec<u8>>,
    work: &[SyncSender<Job>],
) -> Result<(u64, u64), StreamError> {
    let Ok(mut pending) = free.recv() else {
        return Ok((0, 0));
    };
    let mut pending_len = fill(input, &mut pending, chunk).map_err(StreamError::Read)?;
    if pending_len == 0 && !empty_ok {
        return Err(StreamError::Segment(SegmentError::Truncated {
            segment: 0,
            detail: "no segments after the header".into(),
        }));
    }
    let mut index = 0u64;
    let mut bytes = 0u64;
    loop {
        let Ok(mut next) = free.recv() else {
            return Ok((index, bytes));
        };
        // A short chunk is the end; otherwise one more read tells whether this one was last.
        let (last, next_len) = if pending_len < chunk {
            (true, 0)
        } else {
            let n = fill(input, &mut next, chunk).map_err(StreamError::Read)?;
            (n == 0, n)
        };
        bytes += pending_len as u64;
        let n = work.len().max(1) as u64;
        let Some(tx) = work.get(usize::try_from(index % n).unwrap_or(0)) else {
            return Ok((index, bytes));
        };
        let job = Job {
            index,
            last,
            buf: std::mem::replace(&mut pending, next),
            len: pending_len,
        };
        pending_len = next_len;
        if tx.send(job).is_err() {
            return Ok((index, bytes));
        }
        index += 1;
        if last {
            return Ok((index, bytes));
        }
    }
}
