//! Blob reads from local files: large pieces on the blocking pool, with the kernel asked to read
//! ahead. Apart from the storage operations because it is berth's own replacement for
//! object_store's file stream (which reads 8 KiB at a time), down to the syscalls.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};

use super::{Result, StorageError};

/// Reads of blob content from local files use buffers this large: few syscalls, and large
/// writes to the socket (object_store's own file stream reads 8 KiB at a time).
const FILE_READ_CHUNK: usize = 1024 * 1024;

/// How far ahead of a blob reader the kernel is asked to read.
const READ_AHEAD: u64 = 8 * 1024 * 1024;

/// Asks the kernel to start reading `len` bytes from `from` into the page cache.
fn read_ahead(file: &std::fs::File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor owned by `file`; failure only loses the hint.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// Pieces read ahead of the one being sent: the next is read (a copy out of the page cache, or
/// a wait for the disk) while the current one goes to the socket. Memory per request stays at
/// this many pieces.
const PIECES_IN_FLIGHT: usize = 2;

/// The buffers of one blob stream, handed back when the socket is done with a piece and reused
/// for the next: a pull then touches a few megabytes of memory, not a fresh megabyte per piece
/// (fresh memory costs a page fault per page and zeroing; on this VM as much as the copy).
/// Freed with the stream.
#[derive(Default)]
struct Buffers {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Buffers a stream keeps for reuse: those in flight, and the one the socket is sending.
const BUFFERS_KEPT: usize = PIECES_IN_FLIGHT + 2;

impl Buffers {
    /// A buffer for a piece of `want` bytes: a reused full-size one, or for a shorter piece (a
    /// small range, a blob's tail) one of its own size, which is not kept (a 4 KiB range read
    /// must not hold a megabyte).
    fn take(&self, want: usize) -> Vec<u8> {
        if want < FILE_READ_CHUNK {
            return vec![0u8; want];
        }
        let reused = self.free.lock().expect("buffers").pop();
        reused.unwrap_or_else(|| vec![0u8; FILE_READ_CHUNK])
    }
}

/// A piece read into a stream's buffer, given back to it when dropped.
struct Piece {
    buf: Vec<u8>,
    len: usize,
    home: std::sync::Weak<Buffers>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if self.buf.len() < FILE_READ_CHUNK {
            return;
        }
        if let Some(home) = self.home.upgrade() {
            let mut free = home.free.lock().expect("buffers");
            if free.len() < BUFFERS_KEPT {
                free.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

/// Reads `want` bytes at `pos` of `file` (up to `end`, the end of the range being served) into
/// `buf` (at least `want` long).
fn read_piece(
    file: &std::fs::File,
    buf: &mut [u8],
    pos: u64,
    want: usize,
    end: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    // Keep the disk busy ahead of the reader when the blob is not in the page cache (an old
    // blob, or `storage.filesystem.dropcache`).
    let ahead = pos + want as u64;
    if ahead < end {
        read_ahead(file, ahead, (end - ahead).min(READ_AHEAD));
    }
    let mut filled = 0;
    while filled < want {
        let n = file.read_at(&mut buf[filled..want], pos + filled as u64)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob shorter than its recorded size",
            ));
        }
        filled += n;
    }
    Ok(())
}

/// A stream over `range` of a local file, read in large pieces on the blocking pool,
/// [`PIECES_IN_FLIGHT`] at a time, in order.
pub(super) fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    let file = Arc::new(file);
    let buffers = Arc::new(Buffers::default());
    let end = range.end;
    let starts = (range.start..range.end).step_by(FILE_READ_CHUNK);
    futures_util::stream::iter(starts)
        .map(move |pos| {
            let (file, buffers) = (file.clone(), buffers.clone());
            let want = (end - pos).min(FILE_READ_CHUNK as u64) as usize;
            async move {
                let piece = tokio::task::spawn_blocking(move || {
                    let mut buf = buffers.take(want);
                    read_piece(&file, &mut buf, pos, want, end)?;
                    Ok::<_, std::io::Error>(Piece {
                        buf,
                        len: want,
                        home: Arc::downgrade(&buffers),
                    })
                })
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
                Ok(Bytes::from_owner(piece))
            }
        })
        .buffered(PIECES_IN_FLIGHT)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    async fn read(path: &std::path::Path, range: std::ops::Range<u64>, hold: bool) -> Vec<u8> {
        let mut stream = file_stream(std::fs::File::open(path).unwrap(), range);
        let (mut held, mut out) = (Vec::new(), Vec::new());
        while let Some(piece) = stream.next().await {
            let piece = piece.unwrap();
            out.extend_from_slice(&piece);
            if hold {
                held.push(piece);
            }
        }
        // Pieces still held were never overwritten by the reuse of their buffers.
        let again: Vec<u8> = held.iter().flat_map(|p| p.iter().copied()).collect();
        if hold {
            assert_eq!(again, out);
        }
        out
    }

    #[tokio::test]
    async fn ranges_read_back_exactly_whether_pieces_are_held_or_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blob");
        let len = 3 * FILE_READ_CHUNK + 12_345;
        let bytes = pattern(len);
        std::fs::write(&path, &bytes).unwrap();
        let len = len as u64;
        let chunk = FILE_READ_CHUNK as u64;
        for range in [
            0..len,
            1..len - 1,
            chunk - 1..chunk + 1,
            5..6,
            len..len,
            0..chunk,
        ] {
            for hold in [false, true] {
                let got = read(&path, range.clone(), hold).await;
                let want = &bytes[range.start as usize..range.end as usize];
                assert!(got == want, "range {range:?}, pieces held: {hold}");
            }
        }
    }
}
