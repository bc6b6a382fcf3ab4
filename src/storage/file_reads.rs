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

/// Reads `want` bytes at `pos` of `file` (up to `end`, the end of the range being served).
fn read_piece(file: &std::fs::File, pos: u64, want: usize, end: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    // Keep the disk busy ahead of the reader when the blob is not in the page cache (an old
    // blob, or `storage.filesystem.dropcache`).
    let ahead = pos + want as u64;
    if ahead < end {
        read_ahead(file, ahead, (end - ahead).min(READ_AHEAD));
    }
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob shorter than its recorded size",
            ));
        }
        filled += n;
    }
    Ok(buf)
}

/// A stream over `range` of a local file, read in large pieces on the blocking pool,
/// [`PIECES_IN_FLIGHT`] at a time, in order.
pub(super) fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    let file = Arc::new(file);
    let end = range.end;
    let starts = (range.start..range.end).step_by(FILE_READ_CHUNK);
    futures_util::stream::iter(starts)
        .map(move |pos| {
            let file = file.clone();
            let want = (end - pos).min(FILE_READ_CHUNK as u64) as usize;
            async move {
                let buf = tokio::task::spawn_blocking(move || read_piece(&file, pos, want, end))
                    .await
                    .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
                Ok(Bytes::from(buf))
            }
        })
        .buffered(PIECES_IN_FLIGHT)
        .boxed()
}
