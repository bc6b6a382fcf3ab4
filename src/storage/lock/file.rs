//! Open-file-description locks (`F_OFD_SETLK`): the upload lock on local disk, also guarding
//! the notification spool files. The kernel drops such a lock when its holder closes the file or
//! dies, so a `kill -9` never leaves anything locked; it works across processes on one host
//! (and over NFSv4 byte-range locks).

/// Tries to take an exclusive open-file-description lock on the whole file: `false` when another
/// open file description holds it. (Also guards the notification spool files.)
pub fn try_lock_file(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is a plain C struct, zeroed then filled; the descriptor belongs to `file`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Drops the open-file-description lock (closing the last descriptor would too, but the writer
/// may keep the file open a little longer).
pub(super) fn unlock_file(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: as in `try_lock_file`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_UNLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
}
