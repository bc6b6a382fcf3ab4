//! Recovery: what opening the storage does with journal files other processes left.
//!
//! A file whose writer is alive is locked and left alone. A file written under this boot by a
//! process that died needs no replay: its changes are in the page cache, and one `syncfs` makes
//! them durable before the file is removed. A file written under another boot outlived a power
//! loss or a crash of the machine: its entries may not all have reached the disk, so they are
//! applied again, those of every such file merged in time order and reduced to the last state
//! of each path ([`Final`]), which makes replaying idempotent: a change that did reach the disk is
//! written again with the same result.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::frame::{decode_all, delete_file, move_file, write_file, Frame, Op};
use super::{sync_dir, try_lock_file, FileSync};

/// The last state of a path once the entries replayed so far are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Final {
    Bytes(Vec<u8>),
    Absent,
    /// Holds what this other path held before the replayed entries (a verified upload, or a
    /// blob that was there before them).
    MovedFrom(String),
    /// Holds what it held before the replayed entries (moved away and back).
    Unchanged,
}

/// Reduces entries, in the order they were applied, to the last state of every path they touch.
pub(super) fn reduce<'a>(ops: impl IntoIterator<Item = &'a Op>) -> BTreeMap<String, Final> {
    let mut state = BTreeMap::new();
    for op in ops {
        match op {
            Op::Write { path, bytes } => {
                state.insert(path.clone(), Final::Bytes(bytes.clone()));
            }
            Op::Delete { path } => {
                state.insert(path.clone(), Final::Absent);
            }
            Op::Rename { from, to } => {
                let moved = match state.get(from) {
                    Some(Final::Bytes(b)) => Final::Bytes(b.clone()),
                    Some(Final::MovedFrom(src)) if src == to => Final::Unchanged,
                    Some(Final::MovedFrom(src)) => Final::MovedFrom(src.clone()),
                    _ => Final::MovedFrom(from.clone()),
                };
                state.insert(to.clone(), moved);
                state.insert(from.clone(), Final::Absent);
            }
        }
    }
    state
}

/// Brings the files below `root` to `finals`: moves first (their sources may be removed
/// next), then removals, then writes.
pub(super) fn apply_finals(root: &Path, finals: &BTreeMap<String, Final>) -> io::Result<()> {
    for (path, last) in finals {
        if let Final::MovedFrom(src) = last {
            let (to, from) = (root.join(path), root.join(src));
            if to.exists() {
                continue;
            }
            if from.exists() {
                move_file(&from, &to)?;
            } else if !path.contains("/_berth/") {
                log::warn!("journal replay: {path} should hold what {src} held, and both are gone");
            }
        }
    }
    for (path, last) in finals {
        if *last == Final::Absent {
            delete_file(root, &root.join(path))?;
        }
    }
    for (path, last) in finals {
        if let Final::Bytes(bytes) = last {
            write_file(&root.join(path), bytes)?;
        }
    }
    Ok(())
}

/// Where the time of the newest checkpoint is kept (ns since the epoch, decimal).
const CHECKPOINT_FILE: &str = "checkpoint";

/// The time of the newest checkpoint: entries older than it were on disk when it synced.
pub(super) fn checkpoint_time(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Records, durably, that everything applied before `at` is on disk (never moving it back).
pub(super) fn advance_checkpoint(dir: &Path, sync: &dyn FileSync, at: u64) -> io::Result<()> {
    if checkpoint_time(dir) >= at {
        return Ok(());
    }
    let temp = dir.join(format!(
        "{CHECKPOINT_FILE}#{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&temp, at.to_string())?;
    sync.sync_data(&File::open(&temp)?)?;
    std::fs::rename(&temp, dir.join(CHECKPOINT_FILE))?;
    sync_dir(sync, dir)
}

/// The extension of a journal file being created: it is renamed to `.log` once its writer
/// holds its lock. One left unlocked for long belonged to a process that died before renaming
/// it: it holds no entry.
pub(super) const NEW_SUFFIX: &str = "new";

/// How old an unlocked `.new` file must be to be taken for abandoned: its creator locks it
/// microseconds after creating it, and retries under another name if it finds it locked (by
/// this check, for a moment).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes a `.new` journal file that nobody holds and nobody has touched for a while. One this
/// process may not open (another user's) is left, with a warning: it holds no entry.
fn remove_if_abandoned(path: &Path) -> io::Result<()> {
    // Writable: a write lock needs it.
    let file = match File::options().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            log::warn!("metadata journal: leaving {}: {e}", path.display());
            return Ok(());
        }
    };
    let old = file
        .metadata()?
        .modified()?
        .elapsed()
        .is_ok_and(|age| age >= ABANDONED_AFTER);
    if old && try_lock_file(&file)? {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// A journal file nobody holds, locked by the caller while it is open.
struct Orphan {
    path: PathBuf,
    _lock: File,
    frames: Vec<Frame>,
}

/// Journal files in `dir` whose writers are gone, each locked (so no second opener takes them).
/// Files whose creation a dead process left unfinished are removed.
fn orphans(dir: &Path) -> io::Result<Vec<Orphan>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Only files are journals: a directory named like one is no reason to refuse to start.
        if !entry.file_type()?.is_file() {
            continue;
        }
        let path = entry.path();
        let Some(extension) = path.extension() else {
            continue;
        };
        if extension == NEW_SUFFIX {
            remove_if_abandoned(&path)?;
            continue;
        }
        if extension != "log" {
            continue;
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !try_lock_file(&file)? {
            continue;
        }
        // Its writer may have let go of it just before removing it (a checkpoint): then it is
        // gone, or another file by now, and nobody's orphan.
        let same = match std::fs::metadata(&path) {
            Ok(named) => {
                let held = file.metadata()?;
                (named.dev(), named.ino()) == (held.dev(), held.ino())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !same {
            continue;
        }
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes)?;
        let frames = decode_all(&bytes);
        found.push(Orphan {
            path,
            _lock: file,
            frames,
        });
    }
    Ok(found)
}

/// Whether a journal's header names `boot_id` (never for an unknown boot: `None`) and no failed
/// checkpoint sync marked it for replay ([`Frame::Unsynced`]).
fn written_under(frames: &[Frame], boot_id: Option<&str>) -> bool {
    matches!(frames.first(), Some(Frame::Header { boot, .. }) if Some(boot.as_str()) == boot_id)
        && !frames.iter().any(|f| matches!(f, Frame::Unsynced))
}

/// The journal files in `dir` of processes of this boot that died: their changes are in the
/// page cache, so a `syncfs` started after this call makes them durable.
pub(super) fn dead_files_of_this_boot(dir: &Path, boot_id: &str) -> io::Result<Vec<PathBuf>> {
    Ok(orphans(dir)?
        .into_iter()
        .filter(|o| written_under(&o.frames, Some(boot_id)))
        .map(|o| o.path)
        .collect())
}

/// Waits for an exclusive `flock` on `file` (released when it is closed).
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: a plain syscall on a descriptor owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Replays what a power loss left in `dir` and retires the files of dead processes (see the
/// module's comment). One opener at a time. With the boot unknown (`None`) nothing is touched:
/// a file could be a dead process's of this boot, whose replay would undo newer changes of live
/// ones; the next opener that knows the boot recovers it.
pub(super) fn recover(
    root: &Path,
    dir: &Path,
    sync: &dyn FileSync,
    boot_id: Option<&str>,
) -> io::Result<()> {
    let Some(boot_id) = boot_id else {
        let journals = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "log"));
        if journals {
            log::warn!(
                "metadata journals in {} are left for an opener that can read the machine's boot id",
                dir.display()
            );
        }
        return Ok(());
    };
    let boot_id = Some(boot_id);
    let guard = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("replay.lock"))?;
    lock_exclusive(&guard)?;
    let orphans = orphans(dir)?;
    if orphans.is_empty() {
        return Ok(());
    }
    // Entries older than the newest checkpoint were on disk when it synced; replaying them
    // could undo newer changes whose entries that checkpoint removed.
    let synced_before = checkpoint_time(dir);
    let mut entries = Vec::new();
    for (file, orphan) in orphans.iter().enumerate() {
        if written_under(&orphan.frames, boot_id) {
            continue;
        }
        for (seq, frame) in orphan.frames.iter().enumerate() {
            match frame {
                Frame::Entry { ts, ops } if *ts >= synced_before => {
                    entries.push(((*ts, file, seq), ops))
                }
                _ => {}
            }
        }
    }
    // Opened before the changes are made: `syncfs` reports a write-back error once to each
    // descriptor opened before it (to a later one only if no other sync saw it yet).
    let root_dir = File::open(root)?;
    if !entries.is_empty() {
        entries.sort_by_key(|(key, _)| *key);
        let finals = reduce(entries.iter().flat_map(|(_, ops)| ops.iter()));
        apply_finals(root, &finals)?;
        log::warn!(
            "metadata journal: replayed {} entries ({} paths) left by a power loss or crash of the machine",
            entries.len(),
            finals.len()
        );
    }
    sync.sync_filesystem(&root_dir)?;
    for orphan in &orphans {
        match std::fs::remove_file(&orphan.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(sync, dir)
}
