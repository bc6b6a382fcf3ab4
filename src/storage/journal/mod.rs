//! The metadata journal: how berth's changes to the layout on local disk are made durable with
//! one sync per request, shared by concurrent requests.
//!
//! With `storage.filesystem.fsync`, changes to distribution's layout (`blobs/`, `repositories/`:
//! link files, manifests, deletes, small blobs; moves are not journaled, see
//! `Storage::rename`) are applied to the files as a plain write-and-rename, without syncing them,
//! and then appended as one entry to
//! this process's journal file (`_berth/journal/<boot id>-<pid>-<id>.log`), which is
//! `fdatasync`ed before the request is acknowledged. Requests arriving while a sync runs are
//! written and synced together by the next one (group commit). A manifest PUT with a tag thus
//! pays one sync, where syncing each file and directory took a dozen; the bytes of a large blob
//! are still synced by their upload before they are moved into place.
//!
//! Every [`CHECKPOINT_EVERY`] (or [`CHECKPOINT_BYTES`]) a checkpoint starts a new journal file,
//! makes everything applied so far durable with one `syncfs`, records that time durably (a replay
//! skips older entries, which may be older than changes whose files that checkpoint removed), and
//! removes the previous file.
//!
//! After a power loss a journal file's boot id differs from the machine's: whoever opens the
//! storage next (`berth serve`, `berth garbage-collect`) replays every such file before anything
//! is read ([`replay`]): the entries of all of them in time order, reduced to the last state of
//! each path, then synced and removed. A journal left by a process that died while the machine
//! kept running needs no replay (its writes are in the page cache): the next checkpoint syncs
//! and removes it. A process holds an open-file-description lock on its own journal file, so
//! files of live processes are never touched.

mod frame;
mod replay;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::filesync::FileSync;
use super::lock::try_lock_file;
pub use frame::Op;
use frame::{encode, Frame};

/// How often the journal is checkpointed while it has entries.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// A journal file this large is checkpointed at once.
pub const CHECKPOINT_BYTES: u64 = 16 << 20;

/// A blob of at most this many bytes is committed with its bytes in the journal entry, instead
/// of syncing its upload file and the file's directories before moving it: a small push then
/// costs one (shared) sync.
pub const INLINE_BLOB_MAX: u64 = 64 << 10;

/// Where journal files live, below the storage root.
pub const JOURNAL_DIR: &str = "docker/registry/v2/_berth/journal";

/// This process's journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The storage root: paths in entries are relative to it.
    root: PathBuf,
    /// The storage root, opened before this process changed anything, for the checkpoints'
    /// `syncfs`: the kernel reports a write-back error (a layout file's pages that never reached
    /// the disk) once to each descriptor opened before it, and to one opened later only if no
    /// `syncfs` saw it yet; a descriptor opened afresh at each checkpoint would miss an error
    /// that another process's sync (another instance, a collection) saw first, and the
    /// checkpoint would remove the only record of changes that were lost.
    root_dir: File,
    dir: PathBuf,
    boot_id: String,
    sync: Arc<dyn FileSync>,
    state: Mutex<State>,
    /// Signalled when a sync ends.
    synced: Condvar,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// Held while an entry's changes are applied and its time taken: two entries changing the
    /// same path replay in the order their changes reached the file.
    applying: Mutex<()>,
    /// The time of the latest entry or checkpoint (ns since the epoch): times are strictly
    /// increasing within the process, even if the clock steps back (see [`Inner::next_time`]).
    last_time: AtomicU64,
}

struct State {
    file: Arc<File>,
    path: PathBuf,
    /// Frames queued, not yet written.
    pending: Vec<u8>,
    /// Entries queued so far, and how many of them are durable.
    queued: u64,
    durable: u64,
    /// A leader is writing and syncing.
    syncing: bool,
    /// A failed write or sync: nothing counted after it can be trusted (a retried fsync may
    /// "succeed" without the data), so every later commit fails, until a checkpoint heals it
    /// where it can (see [`Broken::healable`]).
    broken: Option<Broken>,
    /// Entries a failed write or sync may have lost, with its error: never acknowledged, even
    /// once a later batch is durable (after a heal).
    lost: Vec<(std::ops::RangeInclusive<u64>, String)>,
    /// Entries and bytes in the current file, and when it was started.
    entries: u64,
    bytes: u64,
    started: Instant,
}

/// Why the journal takes no changes.
#[derive(Debug, Clone)]
struct Broken {
    error: String,
    /// A write to the journal failed (a full disk, say): a checkpoint that can start a new file
    /// and then `syncfs` without an error makes every change applied so far durable, and the
    /// journal takes changes again. Not after a failed `fdatasync` or `syncfs`: the kernel
    /// reports a write-back error once (and a failed cache flush maybe never), so a later sync
    /// can "succeed" without the pages that were lost.
    healable: bool,
}

/// The machine's boot id: a journal written under another one outlived a reboot. `None` where
/// it cannot be read (no `/proc`): then no journal is kept, since a journal's files could not
/// tell a power loss from a process's death, and journals found are left to an opener that can
/// tell (replaying a dead process's entries could undo a live one's newer changes).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Syncs a directory, so that the entries created or removed in it survive a power loss.
fn sync_dir(sync: &dyn FileSync, dir: &Path) -> io::Result<()> {
    sync.sync_all(&File::open(dir)?)
}

impl Journal {
    /// Opens the journal of storage rooted at `root`: replays what a power loss left (see
    /// [`replay`]), retires journals of processes that died since, and starts this process's
    /// file. `boot_id` is the machine's ([`boot_id`]; tests pass others to stage a reboot).
    pub fn open(root: &Path, sync: Arc<dyn FileSync>, boot_id: String) -> io::Result<Journal> {
        let root_dir = File::open(root)?;
        let dir = root.join(JOURNAL_DIR);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
            // Once, when the directory is created: the journal's files must be findable.
            let mut d = dir.as_path();
            while let Some(parent) = d.parent() {
                sync_dir(&*sync, parent)?;
                if parent == root {
                    break;
                }
                d = parent;
            }
        }
        replay::recover(root, &dir, &*sync, Some(&boot_id))?;
        let (file, path) = new_file(&dir, &*sync, &boot_id)?;
        let checkpointed = replay::checkpoint_time(&dir);
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            root_dir,
            dir,
            boot_id,
            sync,
            state: Mutex::new(State {
                file: Arc::new(file),
                path,
                pending: Vec::new(),
                queued: 0,
                durable: 0,
                syncing: false,
                broken: None,
                lost: Vec::new(),
                entries: 0,
                bytes: 0,
                started: Instant::now(),
            }),
            synced: Condvar::new(),
            checkpointing: Mutex::new(()),
            applying: Mutex::new(()),
            // After the newest checkpoint, whatever the clock says: a replay skips older entries.
            last_time: AtomicU64::new(checkpointed),
        });
        spawn_checkpointer(Arc::downgrade(&inner));
        Ok(Journal { inner })
    }

    /// What [`Journal::open`] does first, without starting a journal: for storage opened with
    /// fsync off, which may have been written with it on before a power loss. With the boot id
    /// unknown (`None`) nothing is replayed (see [`boot_id`]).
    pub fn recover(root: &Path, sync: &dyn FileSync, boot_id: Option<&str>) -> io::Result<()> {
        let dir = root.join(JOURNAL_DIR);
        if !dir.is_dir() {
            return Ok(());
        }
        replay::recover(root, &dir, sync, boot_id)
    }

    /// Whether changes are journaled: the error of the failed write or sync that stopped it, if
    /// one did (every change is refused until a checkpoint heals it, see [`Broken`], or a
    /// restart).
    pub fn check(&self) -> io::Result<()> {
        match &self.inner.state.lock().expect("journal state").broken {
            Some(b) => Err(b.refusal()),
            None => Ok(()),
        }
    }

    /// Applies `ops` to the files (in order, without syncing them), then journals them: when
    /// this returns `Ok`, they survive a power loss. Blocking: call it on the blocking pool.
    pub fn apply(&self, ops: Vec<Op>) -> io::Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // Once the journal stopped, a change is refused before it is made: a failed request
        // must not leave a tag moved in the page cache. (One whose own commit fails was made
        // already, and may reach the disk with a later sync: a failure that may have happened.)
        if let Some(b) = &self.inner.state.lock().expect("journal state").broken {
            return Err(b.refusal());
        }
        // The time is taken after applying: a replay orders entries of several processes by
        // it, which is then the order their changes reached the files.
        let ts = {
            let _one = self.inner.applying.lock().expect("journal apply");
            for op in &ops {
                op.apply(&self.inner.root)?;
            }
            self.inner.next_time()
        };
        let frame = encode(&Frame::Entry { ts, ops })?;
        self.inner.commit(frame)
    }

    /// Starts a new file, makes everything applied before it durable (`syncfs`), and removes
    /// the old file and those of processes that died since. Normally run every
    /// [`CHECKPOINT_EVERY`] by a thread of the journal's own.
    pub fn checkpoint(&self) -> io::Result<()> {
        self.inner.checkpoint()
    }

    /// Entries this process journaled and synced so far.
    pub fn durable_entries(&self) -> u64 {
        self.inner.state.lock().expect("journal state").durable
    }
}

impl Inner {
    /// Now, or just after the last time this process took, whichever is later: entries of one
    /// process replay in the order they were applied even if the wall clock steps back.
    fn next_time(&self) -> u64 {
        let now = now_ns();
        let previous = self
            .last_time
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .expect("the update always returns Some");
        now.max(previous + 1)
    }

    fn commit(&self, frame: Vec<u8>) -> io::Result<()> {
        let mut st = self.state.lock().expect("journal state");
        if let Some(b) = &st.broken {
            return Err(b.refusal());
        }
        st.bytes += frame.len() as u64;
        st.pending.extend_from_slice(&frame);
        st.queued += 1;
        st.entries += 1;
        let mine = st.queued;
        loop {
            if let Some((_, e)) = st.lost.iter().find(|(seqs, _)| seqs.contains(&mine)) {
                return Err(io::Error::other(format!(
                    "the metadata journal failed ({e}) before this change was on disk"
                )));
            }
            if st.durable >= mine {
                return Ok(());
            }
            if let Some(b) = &st.broken {
                return Err(b.refusal());
            }
            if st.syncing {
                st = self.synced.wait(st).expect("journal state");
                continue;
            }
            // Leader: write and sync everything queued so far, for all who queued it.
            st.syncing = true;
            let batch = std::mem::take(&mut st.pending);
            let upto = st.queued;
            let file = st.file.clone();
            drop(st);
            // Only a failed write can heal: a failed fdatasync may have lost pages written back
            // earlier (a device cache flush that failed), which no later sync would report.
            let result = match self.sync.append(&file, &batch) {
                Err(e) => Err((e, true)),
                Ok(()) => self.sync.sync_data(&file).map_err(|e| (e, false)),
            };
            st = self.state.lock().expect("journal state");
            st.syncing = false;
            match result {
                Ok(()) => st.durable = upto,
                Err((e, healable)) => {
                    let until = if healable {
                        "until a checkpoint can start a new file and sync the filesystem"
                    } else {
                        "until berth restarts"
                    };
                    log::error!(
                        "metadata journal {}: {e}; no change is taken {until}",
                        st.path.display()
                    );
                    // This batch and the frames queued behind it: their callers are told (their
                    // changes, made already, may still reach the disk with a later sync).
                    let lost = (st.durable + 1)..=st.queued;
                    st.lost.push((lost, e.to_string()));
                    st.pending.clear();
                    st.broken = Some(Broken {
                        error: e.to_string(),
                        healable,
                    });
                }
            }
            self.synced.notify_all();
        }
    }

    fn checkpoint(&self) -> io::Result<()> {
        let _one = self.checkpointing.lock().expect("checkpoint");
        if let Some(b) = &self.state.lock().expect("journal state").broken {
            if !b.healable {
                return Err(b.refusal());
            }
        }
        // Found before the sync: a process dead by now applied all its changes before it.
        let dead = replay::dead_files_of_this_boot(&self.dir, &self.boot_id)?;
        let (file, path) = new_file(&self.dir, &*self.sync, &self.boot_id)?;
        let old = {
            let mut st = self.state.lock().expect("journal state");
            // A leader writing to the old file finishes first. Frames still queued go to the new
            // file: their changes were applied before the swap, so the sync below covers them
            // too (waiting for the queue to empty could wait for ever under steady load).
            while st.syncing {
                st = self.synced.wait(st).expect("journal state");
            }
            let healing = match &st.broken {
                Some(b) if b.healable => Some(b.error.clone()),
                Some(b) => return Err(b.refusal()),
                None => None,
            };
            st.entries = 0;
            st.bytes = 0;
            st.started = Instant::now();
            let old = std::mem::replace(&mut st.path, path);
            let old_file = std::mem::replace(&mut st.file, Arc::new(file));
            // The wall clock, as every process's entries carry it: an entry applied after the
            // swap, by any process, is stamped at least this (this process's may run ahead).
            (old, old_file, now_ns(), healing)
        };
        // The old file stays open (locked) until its fate is known: no other process takes it
        // for a dead one's meanwhile.
        let (old, old_file, swapped_at, healing) = old;
        // Every entry in the old file was applied before the swap: this makes it durable. A
        // failed sync may have lost changes whose entries are about to go, and a retried one
        // can "succeed" without them: nothing more is acknowledged.
        if let Err(e) = self.sync.sync_filesystem(&self.root_dir) {
            // Some changes of the old file's entries may never reach the disk although the page
            // cache shows them: it is marked, so the next opener replays it (writes them again)
            // even in this boot, rather than taking it for a dead process's and removing it.
            let marked = encode(&Frame::Unsynced)
                .and_then(|frame| self.sync.append(&old_file, &frame))
                .and_then(|()| self.sync.sync_data(&old_file));
            if let Err(m) = marked {
                log::error!(
                    "metadata journal {}: cannot mark it for replay: {m}",
                    old.display()
                );
            }
            let mut st = self.state.lock().expect("journal state");
            st.broken = Some(Broken {
                error: e.to_string(),
                healable: false,
            });
            return Err(e);
        }
        // Before any file goes: every change of any process applied before the swap is on disk
        // now, so a replay must not apply older entries still in other processes' files over
        // newer ones whose files this removes (see `replay::recover`).
        replay::advance_checkpoint(&self.dir, &*self.sync, swapped_at)?;
        // Later entries sort after every checkpoint recorded so far, this process's or
        // another's, even if the clock has stepped back since it was recorded.
        self.last_time
            .fetch_max(replay::checkpoint_time(&self.dir), Ordering::SeqCst);
        for f in std::iter::once(&old).chain(&dead) {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&*self.sync, &self.dir)?;
        if let Some(error) = healing {
            // Everything applied so far is on disk, and the new file is sound: changes are
            // taken again.
            let mut st = self.state.lock().expect("journal state");
            if st.broken.as_ref().is_some_and(|b| b.healable) {
                st.broken = None;
                log::warn!("metadata journal: takes changes again (after {error})");
            }
        }
        Ok(())
    }

    fn due(&self) -> bool {
        let st = self.state.lock().expect("journal state");
        if let Some(b) = &st.broken {
            return b.healable;
        }
        st.entries > 0 && (st.started.elapsed() >= CHECKPOINT_EVERY || st.bytes >= CHECKPOINT_BYTES)
    }
}

impl Broken {
    /// The error a refused change gets.
    fn refusal(&self) -> io::Error {
        let e = &self.error;
        io::Error::other(if self.healable {
            format!(
                "the metadata journal failed ({e}); no change is taken until the disk takes \
                 writes again"
            )
        } else {
            format!("the metadata journal failed earlier ({e}); restart berth")
        })
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A new journal file, its header synced and its name durable, locked by this process. It is
/// made under a name no recovery looks at ([`replay::NEW_SUFFIX`]) and renamed once locked: a
/// recovery in another process never sees it unlocked, so never takes it for a dead one.
fn new_file(dir: &Path, sync: &dyn FileSync, boot_id: &str) -> io::Result<(File, PathBuf)> {
    let mut attempts = 0;
    let (file, temp, path) = loop {
        let name = format!(
            "{boot_id}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let temp = dir.join(format!("{name}.{}", replay::NEW_SUFFIX));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&temp)?;
        if try_lock_file(&file)? {
            break (file, temp, dir.join(format!("{name}.log")));
        }
        // Another process is looking at it (to see whether it was abandoned): another name.
        let _ = std::fs::remove_file(&temp);
        attempts += 1;
        if attempts == 8 {
            return Err(io::Error::other(format!(
                "{}: new journal files are locked by another process",
                dir.display()
            )));
        }
    };
    let header = encode(&Frame::Header {
        boot: boot_id.to_string(),
        pid: std::process::id(),
    })?;
    let written = sync
        .append(&file, &header)
        .and_then(|()| sync.sync_data(&file))
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(sync, dir)?;
    Ok((file, path))
}

fn spawn_checkpointer(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("berth-journal".into())
        .spawn(move || {
            // A failure that repeats (a full disk) is said once a minute, not at every try.
            let mut said: Option<(String, Instant)> = None;
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if !inner.due() {
                    continue;
                }
                match inner.checkpoint() {
                    Ok(()) => said = None,
                    Err(e) => {
                        let e = e.to_string();
                        let repeated = said.as_ref().is_some_and(|(last, at)| {
                            *last == e && at.elapsed() < Duration::from_secs(60)
                        });
                        if !repeated {
                            log::warn!("metadata journal checkpoint: {e} (retried every 0.5 s)");
                            said = Some((e, Instant::now()));
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no metadata journal checkpoints: {e}");
    }
}

#[cfg(test)]
pub(crate) mod tests;
