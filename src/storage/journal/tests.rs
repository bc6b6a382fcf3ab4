use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::frame::{decode_all, encode, Frame, Op};
use super::replay::{reduce, Final};
use super::*;
use crate::storage::filesync::SystemSync;

/// The kernel's syncs, counted; each data sync also records how long the file was then.
#[derive(Debug, Default)]
pub(crate) struct CountingSync {
    pub data: AtomicUsize,
    pub all: AtomicUsize,
    pub filesystem: AtomicUsize,
    pub synced_lengths: Mutex<Vec<u64>>,
    /// How long each data sync takes on top of the disk's own time (a slow or busy disk).
    pub delay: std::time::Duration,
}

impl FileSync for CountingSync {
    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.all.fetch_add(1, Ordering::SeqCst);
        file.sync_all()
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.data.fetch_add(1, Ordering::SeqCst);
        self.synced_lengths
            .lock()
            .unwrap()
            .push(file.metadata()?.len());
        std::thread::sleep(self.delay);
        file.sync_data()
    }
    fn sync_filesystem(&self, file: &File) -> io::Result<()> {
        self.filesystem.fetch_add(1, Ordering::SeqCst);
        SystemSync::default().sync_filesystem(file)
    }
}

fn write(path: &str, bytes: &str) -> Op {
    Op::Write {
        path: path.into(),
        bytes: bytes.as_bytes().to_vec(),
    }
}

fn delete(path: &str) -> Op {
    Op::Delete { path: path.into() }
}

fn rename(from: &str, to: &str) -> Op {
    Op::Rename {
        from: from.into(),
        to: to.into(),
    }
}

fn journal_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(JOURNAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path)).ok()
}

#[test]
fn frames_read_back_up_to_a_torn_one() {
    let mut bytes = Vec::new();
    for i in 0..3 {
        bytes.extend(
            encode(&Frame::Entry {
                ts: i,
                ops: vec![write("a", "x")],
            })
            .unwrap(),
        );
    }
    assert_eq!(decode_all(&bytes).len(), 3);
    // A power loss mid-frame: the torn frame and nothing after it.
    assert_eq!(decode_all(&bytes[..bytes.len() - 3]).len(), 2);
    // A flipped byte fails the checksum.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 1;
    assert_eq!(decode_all(&flipped).len(), 2);
}

#[test]
fn the_last_state_of_each_path_wins() {
    let ops = [
        write("t", "one"),
        write("t", "two"),
        write("gone", "x"),
        delete("gone"),
        rename("upload", "blob"),
        rename("blob", "aside"),
        rename("aside", "blob"),
        rename("written", "moved"),
    ];
    let mut ops = ops.to_vec();
    ops.insert(7, write("written", "w"));
    let finals = reduce(ops.iter());
    assert_eq!(finals["t"], Final::Bytes(b"two".to_vec()));
    assert_eq!(finals["gone"], Final::Absent);
    assert_eq!(finals["upload"], Final::Absent);
    assert_eq!(finals["aside"], Final::Absent);
    assert_eq!(finals["blob"], Final::MovedFrom("upload".into()));
    assert_eq!(finals["moved"], Final::Bytes(b"w".to_vec()));
    assert_eq!(finals["written"], Final::Absent);
    // Moved away and back: what it held before.
    let back = reduce([rename("b", "q"), rename("q", "b")].iter());
    assert_eq!(back["b"], Final::Unchanged);
}

#[test]
fn an_apply_returns_once_its_entry_is_synced_and_concurrent_ones_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(CountingSync::default());
    let journal = Journal::open(dir.path(), sync.clone(), "boot-a".into()).unwrap();
    let (at_open, dirs_at_open) = (
        sync.data.load(Ordering::SeqCst),
        sync.all.load(Ordering::SeqCst),
    );
    journal
        .apply(vec![write("a/one", "1"), write("a/b/two", "2")])
        .unwrap();
    assert_eq!(read(dir.path(), "a/one").as_deref(), Some("1"));
    assert_eq!(read(dir.path(), "a/b/two").as_deref(), Some("2"));
    assert_eq!(
        sync.data.load(Ordering::SeqCst),
        at_open + 1,
        "one sync per entry"
    );
    assert_eq!(
        sync.all.load(Ordering::SeqCst),
        dirs_at_open,
        "no file or directory synced"
    );

    drop(journal);

    // On a disk where a sync takes 20 ms, 32 requests at once share a few syncs.
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(CountingSync {
        delay: std::time::Duration::from_millis(20),
        ..Default::default()
    });
    let journal = Journal::open(dir.path(), sync.clone(), "boot-a".into()).unwrap();
    let at_open = sync.data.load(Ordering::SeqCst);
    let start = Arc::new(std::sync::Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (journal, start) = (journal.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                journal
                    .apply(vec![write(&format!("b/{i}"), &format!("{i}"))])
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = sync.data.load(Ordering::SeqCst) - at_open;
    assert!(syncs < 16, "{syncs} syncs for 32 entries: no group commit");
    assert_eq!(journal.durable_entries(), 32);
    let frames = decode_all(&std::fs::read(&journal_files(dir.path())[0]).unwrap());
    assert_eq!(frames.len(), 33, "a header and every entry");
    for i in 0..32 {
        assert_eq!(read(dir.path(), &format!("b/{i}")), Some(i.to_string()));
    }
}

#[test]
fn every_entry_is_on_disk_before_its_sync_ends() {
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(CountingSync::default());
    let journal = Journal::open(dir.path(), sync.clone(), "boot-a".into()).unwrap();
    let file = journal_files(dir.path())[0].clone();
    for i in 0..5 {
        journal.apply(vec![write(&format!("x/{i}"), "v")]).unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(
            *sync.synced_lengths.lock().unwrap().last().unwrap(),
            len,
            "the entry was written after the last sync"
        );
    }
}

/// What a power loss may leave: the files changed since the last checkpoint back as they were
/// (here: exactly as they were, the worst case), the journal as synced.
fn lose_unsynced_changes(root: &Path, before: &[(&str, Option<&str>)]) {
    for (path, content) in before {
        let p = root.join(path);
        match content {
            Some(c) => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, c).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

#[test]
fn after_a_power_loss_the_next_opener_replays_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("up")).unwrap();
    std::fs::write(root.join("up/data"), "blob bytes").unwrap();
    std::fs::create_dir_all(root.join("old")).unwrap();
    std::fs::write(root.join("old/tag"), "stale").unwrap();
    let sync = Arc::new(CountingSync::default());
    {
        let a = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        let b = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        a.apply(vec![
            write("repo/tag", "sha256:one"),
            write("repo/rev", "r"),
        ])
        .unwrap();
        b.apply(vec![write("repo/tag", "sha256:two")]).unwrap();
        a.apply(vec![rename("up/data", "blobs/x/data"), delete("old/tag")])
            .unwrap();
        // The power goes: no checkpoint ran, both writers are gone.
    }
    lose_unsynced_changes(
        root,
        &[
            ("repo/tag", None),
            ("repo/rev", None),
            ("blobs/x/data", None),
            ("up/data", Some("blob bytes")),
            ("old/tag", Some("stale")),
        ],
    );
    let c = Journal::open(root, sync.clone(), "boot-b".into()).unwrap();
    assert_eq!(
        read(root, "repo/tag").as_deref(),
        Some("sha256:two"),
        "later wins"
    );
    assert_eq!(read(root, "repo/rev").as_deref(), Some("r"));
    assert_eq!(read(root, "blobs/x/data").as_deref(), Some("blob bytes"));
    assert_eq!(read(root, "up/data"), None);
    assert_eq!(read(root, "old/tag"), None);
    assert!(!root.join("old").exists(), "emptied directories go");
    assert_eq!(
        journal_files(root).len(),
        1,
        "only the new opener's file is left"
    );
    drop(c);
}

/// A journal of a process of boot "boot-a" that wrote `t` and died, and `t` changed since to
/// "newer" by someone else.
fn leave_a_dead_journal_then_change_its_file(root: &Path, sync: &Arc<CountingSync>) {
    {
        let dead = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        dead.apply(vec![write("t", "old")]).unwrap();
    }
    std::fs::write(root.join("t"), "newer").unwrap();
}

#[test]
fn a_journal_of_a_process_that_died_without_a_reboot_is_synced_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    // Someone changed the file since (another instance, unjournaled here): no replay may undo it.
    leave_a_dead_journal_then_change_its_file(root, &sync);
    let before = sync.filesystem.load(Ordering::SeqCst);
    let live = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
    assert_eq!(read(root, "t").as_deref(), Some("newer"));
    assert_eq!(sync.filesystem.load(Ordering::SeqCst), before + 1);
    assert_eq!(journal_files(root).len(), 1);
    drop(live);
}

#[test]
fn a_live_journal_is_left_alone_and_a_checkpoint_retires_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    let a = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
    a.apply(vec![write("t", "one")]).unwrap();
    let a_file = journal_files(root)[0].clone();
    // A second process opening meanwhile, even after a "reboot": the live file is not replayed.
    let b = Journal::open(root, sync.clone(), "boot-b".into()).unwrap();
    assert!(a_file.exists());
    assert_eq!(journal_files(root).len(), 2);
    let before = sync.filesystem.load(Ordering::SeqCst);
    a.checkpoint().unwrap();
    assert_eq!(sync.filesystem.load(Ordering::SeqCst), before + 1);
    assert!(!a_file.exists(), "the checkpointed file is removed");
    assert_eq!(journal_files(root).len(), 2, "a's new file and b's");
    a.apply(vec![write("t", "two")]).unwrap();
    assert_eq!(read(root, "t").as_deref(), Some("two"));
    drop(b);
}

#[test]
fn storage_opened_without_a_journal_still_replays_one_a_power_loss_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    {
        let before = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        before.apply(vec![write("repo/tag", "sha256:one")]).unwrap();
    }
    lose_unsynced_changes(root, &[("repo/tag", None)]);
    Journal::recover(root, &*sync, Some("boot-b")).unwrap();
    assert_eq!(read(root, "repo/tag").as_deref(), Some("sha256:one"));
    assert!(journal_files(root).is_empty());
}

#[test]
fn a_checkpoint_of_one_process_keeps_a_replay_from_undoing_its_changes_with_older_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    {
        let a = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        let b = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        b.apply(vec![write("t", "Y")]).unwrap();
        a.apply(vec![write("t", "X")]).unwrap();
        // a's checkpoint removes its file holding X; b (alive) keeps its older Y.
        a.checkpoint().unwrap();
    }
    Journal::open(root, sync, "boot-b".into()).unwrap();
    assert_eq!(read(root, "t").as_deref(), Some("X"));
}

/// Syncs whose filesystem sync fails once (a write-back error), as a faulty disk's would.
#[derive(Debug, Default)]
struct FailingFilesystemSync {
    failed: std::sync::atomic::AtomicBool,
}

impl FileSync for FailingFilesystemSync {
    fn sync_filesystem(&self, file: &File) -> io::Result<()> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        SystemSync::default().sync_filesystem(file)
    }
}

#[test]
fn a_failed_checkpoint_sync_ends_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(FailingFilesystemSync::default());
    let j = Journal::open(dir.path(), sync, "boot-a".into()).unwrap();
    j.apply(vec![write("t", "1")]).unwrap();
    j.check().unwrap();
    assert!(j.checkpoint().is_err());
    assert!(
        j.apply(vec![write("t", "2")]).is_err(),
        "acknowledged after a lost sync"
    );
    // What the health check reports (`Storage::check`), with the cause.
    let reported = j.check().unwrap_err().to_string();
    assert!(reported.contains("restart berth"), "{reported}");
    assert!(
        reported.contains(&io::Error::from_raw_os_error(libc::EIO).to_string()),
        "{reported}"
    );
    assert_eq!(
        read(dir.path(), "t").as_deref(),
        Some("1"),
        "a change refused is not made either"
    );
    // The failed sync may have lost the page of "t" although the page cache shows it: after
    // the restart it asks for (same boot), the file is replayed, not retired as a dead one's.
    drop(j);
    lose_unsynced_changes(dir.path(), &[("t", None)]);
    let sync = Arc::new(CountingSync::default());
    let _restarted = Journal::open(dir.path(), sync, "boot-a".into()).unwrap();
    assert_eq!(read(dir.path(), "t").as_deref(), Some("1"));
    assert_eq!(
        journal_files(dir.path()).len(),
        1,
        "only the new process's own file"
    );
}

#[test]
fn entries_of_one_process_replay_in_the_order_applied_even_if_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    {
        let a = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        a.apply(vec![write("t", "one")]).unwrap();
        // As if the wall clock had been set back an hour after the first entry.
        a.inner
            .last_time
            .fetch_add(3_600_000_000_000, Ordering::SeqCst);
        a.apply(vec![write("t", "two")]).unwrap();
        a.apply(vec![write("t", "three")]).unwrap();
        let times: Vec<u64> = decode_all(&std::fs::read(&journal_files(root)[0]).unwrap())
            .iter()
            .filter_map(|f| match f {
                Frame::Entry { ts, .. } => Some(*ts),
                Frame::Header { .. } | Frame::Unsynced => None,
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }
    lose_unsynced_changes(root, &[("t", None)]);
    Journal::open(root, sync, "boot-b".into()).unwrap();
    assert_eq!(read(root, "t").as_deref(), Some("three"));
}

#[test]
fn a_journal_file_is_never_seen_unlocked_and_an_unfinished_one_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    let a = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
    let journals = root.join(JOURNAL_DIR);
    // What a process killed while creating its file leaves: a `.new` file nobody holds, long
    // untouched; and one just made, whose creator is about to lock it.
    let abandoned = journals.join("boot-a-1-abc.new");
    std::fs::write(&abandoned, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&abandoned)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(600))
        .unwrap();
    let young = journals.join("boot-a-2-def.new");
    std::fs::write(&young, b"").unwrap();
    // Creations and checkpoints racing with another process's recoveries: none takes a live
    // file for a dead one (which would remove it and lose what is journaled in it), and none
    // fails on a file a checkpoint removes under it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recoverer = {
        let (root, sync, stop) = (root.to_path_buf(), sync.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                Journal::recover(&root, &*sync, Some("boot-a")).unwrap();
            }
        })
    };
    for i in 0..50 {
        a.checkpoint().unwrap();
        a.apply(vec![write("t", &i.to_string())]).unwrap();
        assert_eq!(
            journal_files(root).len(),
            1,
            "a's file is there, and only it"
        );
    }
    stop.store(true, Ordering::SeqCst);
    recoverer.join().unwrap();
    assert!(!abandoned.exists());
    assert!(young.exists(), "a file just made is its creator's to lock");
}

#[test]
fn a_checkpoint_is_not_held_off_by_steady_commits() {
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(CountingSync {
        delay: std::time::Duration::from_millis(20),
        ..Default::default()
    });
    let j = Journal::open(dir.path(), sync, "boot-a".into()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (j, stop) = (j.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    j.apply(vec![write(&format!("w{w}/{i}"), "v")]).unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (done, finished) = std::sync::mpsc::channel();
    let cj = j.clone();
    std::thread::spawn(move || done.send(cj.checkpoint().is_ok()).unwrap());
    let ok = finished.recv_timeout(std::time::Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(ok, Ok(true), "the checkpoint never got its turn");
}

#[test]
fn entries_written_after_a_checkpoint_replay_even_if_the_clock_is_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    // Another process checkpointed at a time this machine's clock has not reached (it was
    // set back since, or ran ahead there).
    Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
    let ahead = now_ns() + 3_600_000_000_000;
    super::replay::advance_checkpoint(&root.join(JOURNAL_DIR), &*sync, ahead).unwrap();
    {
        let j = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
        j.apply(vec![write("repo/tag", "sha256:acknowledged")])
            .unwrap();
    }
    lose_unsynced_changes(root, &[("repo/tag", None)]);
    Journal::open(root, sync, "boot-b".into()).unwrap();
    assert_eq!(
        read(root, "repo/tag").as_deref(),
        Some("sha256:acknowledged"),
        "an acknowledged entry was taken for one older than the checkpoint"
    );
}

#[test]
fn with_the_boot_unknown_journals_are_left_for_an_opener_that_knows_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(CountingSync::default());
    // A live process of the same boot changed it since (its entry not yet checkpointed): a
    // replay of the dead one's file would undo that.
    leave_a_dead_journal_then_change_its_file(root, &sync);
    Journal::recover(root, &*sync, None).unwrap();
    assert_eq!(read(root, "t").as_deref(), Some("newer"));
    assert_eq!(journal_files(root).len(), 1, "the file is left");
    Journal::recover(root, &*sync, Some("boot-a")).unwrap();
    assert_eq!(
        read(root, "t").as_deref(),
        Some("newer"),
        "same boot: synced, not replayed"
    );
    assert!(journal_files(root).is_empty());
}

#[test]
fn a_directory_named_like_a_journal_does_not_stop_the_storage_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(JOURNAL_DIR).join("boot-a-1-x.log")).unwrap();
    std::fs::create_dir_all(root.join(JOURNAL_DIR).join("boot-a-2-y.new")).unwrap();
    let sync = Arc::new(CountingSync::default());
    let j = Journal::open(root, sync.clone(), "boot-b".into()).unwrap();
    j.apply(vec![write("t", "1")]).unwrap();
    j.checkpoint().unwrap();
    Journal::recover(root, &*sync, Some("boot-b")).unwrap();
}

/// Tells, by a flag set on the open file description (`O_NONBLOCK`: shared by every descriptor
/// of one `open`, absent from a new one), whether each filesystem sync is handed the descriptor
/// of an earlier one.
#[derive(Debug, Default)]
struct DescriptorSync {
    fresh: AtomicUsize,
    reused: AtomicUsize,
}

impl FileSync for DescriptorSync {
    fn sync_filesystem(&self, file: &File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor owned by `file`.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert!(flags >= 0, "{}", io::Error::last_os_error());
        if flags & libc::O_NONBLOCK != 0 {
            self.reused.fetch_add(1, Ordering::SeqCst);
        } else {
            self.fresh.fetch_add(1, Ordering::SeqCst);
            // SAFETY: as above.
            assert_eq!(
                unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) },
                0
            );
        }
        SystemSync::default().sync_filesystem(file)
    }
}

#[test]
fn every_checkpoint_syncs_through_the_root_opened_with_the_journal() {
    // `syncfs` reports a write-back error once to each descriptor opened before it, to a newer
    // one only if no other sync saw it: a root opened afresh at each checkpoint could miss one
    // that another process's sync saw first, and the checkpoint would then remove the entries of
    // changes that never reached the disk.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sync = Arc::new(DescriptorSync::default());
    let j = Journal::open(root, sync.clone(), "boot-a".into()).unwrap();
    for round in 0..3 {
        j.apply(vec![write("t", &round.to_string())]).unwrap();
        j.checkpoint().unwrap();
    }
    assert_eq!(sync.fresh.load(Ordering::SeqCst), 1);
    assert!(sync.reused.load(Ordering::SeqCst) >= 2);
}

/// A disk that fills up: appends to journal files fail with `ENOSPC` while `full` is set; with
/// `failing`, data syncs fail with `EIO`.
#[derive(Debug, Default)]
struct FillingDisk {
    full: std::sync::atomic::AtomicBool,
    failing: std::sync::atomic::AtomicBool,
}

impl FileSync for FillingDisk {
    fn append(&self, file: &File, bytes: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        SystemSync::default().append(file, bytes)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        file.sync_data()
    }
}

#[test]
fn a_full_disk_refuses_changes_until_a_checkpoint_finds_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let disk = Arc::new(FillingDisk::default());
    let full = io::Error::from_raw_os_error(libc::ENOSPC).to_string();
    let j = Journal::open(root, disk.clone(), "boot-a".into()).unwrap();
    j.apply(vec![write("t", "1")]).unwrap();

    disk.full.store(true, Ordering::SeqCst);
    let failed = j.apply(vec![write("t", "2")]).unwrap_err().to_string();
    assert!(failed.contains(&full), "{failed}");
    let reported = j.check().unwrap_err().to_string();
    assert!(reported.contains(&full), "{reported}");
    assert!(j.apply(vec![write("u", "x")]).is_err());
    assert_eq!(read(root, "u"), None, "a change refused is not made");
    assert!(j.checkpoint().is_err(), "no room for a new file yet");
    assert!(j.check().is_err());

    disk.full.store(false, Ordering::SeqCst);
    j.checkpoint().unwrap();
    j.check().unwrap();
    j.apply(vec![write("t", "3")]).unwrap();
    drop(j);
    // A power loss now: the change acknowledged after the heal is replayed.
    lose_unsynced_changes(root, &[("t", Some("2"))]);
    let sync = Arc::new(CountingSync::default());
    let _reopened = Journal::open(root, sync, "boot-b".into()).unwrap();
    assert_eq!(read(root, "t").as_deref(), Some("3"));
}

#[test]
fn a_failed_journal_sync_is_not_healed() {
    // A failed fdatasync may have lost pages written back before it (a failed cache flush),
    // which no later sync reports: only a restart takes changes again.
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FillingDisk::default());
    let j = Journal::open(dir.path(), disk.clone(), "boot-a".into()).unwrap();
    j.apply(vec![write("t", "1")]).unwrap();
    disk.failing.store(true, Ordering::SeqCst);
    assert!(j.apply(vec![write("t", "2")]).is_err());
    disk.failing.store(false, Ordering::SeqCst);
    let refused = j.checkpoint().unwrap_err().to_string();
    assert!(refused.contains("restart berth"), "{refused}");
    assert!(j.check().is_err());
    assert!(j.apply(vec![write("t", "3")]).is_err());
}
