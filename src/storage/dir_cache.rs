//! Sorted listings of large directories on local disk, kept while the directory is unchanged.
//!
//! `getdents` returns a directory's entries in hash order, so a page of a catalog over 100,000
//! repositories, or of 100,000 tags, would read and sort the whole directory for every page
//! (about 100 ms here). A directory of at least [`MIN_ENTRIES`] subdirectories is therefore
//! kept sorted in memory, compactly ([`SortedNames`]), and reused for as long as a `stat` of
//! the directory shows the same inode and modification time: creating or removing an entry
//! changes the directory's mtime, whoever does it (another instance on the same disk too).
//!
//! A listing is kept only if the directory's mtime was at least [`SETTLED`] old when the listing
//! started: a change made later gets a later timestamp however coarse the file system's clock,
//! so an unchanged mtime proves nothing changed (git's "racy" rule). A directory changed within
//! the last two seconds is read afresh. What this does not see: a symbolic link below the
//! directory pointed elsewhere (the layout has none), a clock stepped back by more than
//! [`SETTLED`], or, on a network file system, a server whose clock runs more than [`SETTLED`]
//! behind this machine's (its timestamps then look settled at once).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::listing::{read_subdirs, slash_order};
use super::{Result, StorageError};

/// Directories with fewer subdirectories are read afresh each time (a few hundred entries cost
/// well under a millisecond).
pub(crate) const MIN_ENTRIES: usize = 1024;

/// How many names all kept listings may hold together (about 25 bytes each: a few MiB).
pub(crate) const MAX_NAMES: usize = 1 << 18;

/// How old a directory's mtime must be for its listing to be kept.
pub(crate) const SETTLED: Duration = Duration::from_secs(2);

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// By the bytes of the names (tags).
    Bytes,
    /// By the bytes of `name/` (the catalog's walk, see [`slash_order`]).
    Slash,
}

/// Names in one buffer, sorted: a listing of 100,000 costs two allocations, not 100,000.
#[derive(Debug, Default)]
pub(crate) struct SortedNames {
    text: String,
    ends: Vec<u32>,
}

impl SortedNames {
    fn new(mut names: Vec<String>, order: Order) -> SortedNames {
        match order {
            Order::Bytes => names.sort_unstable(),
            Order::Slash => names.sort_unstable_by(|a, b| slash_order(a, b)),
        }
        let mut sorted = SortedNames {
            text: String::with_capacity(names.iter().map(String::len).sum()),
            ends: Vec::with_capacity(names.len()),
        };
        for name in &names {
            sorted.text.push_str(name);
            sorted.ends.push(sorted.text.len() as u32);
        }
        sorted
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The index of the first name for which `before` is false (`before` must be true of a
    /// prefix of the listing only).
    pub fn partition_point(&self, mut before: impl FnMut(&str) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if before(self.get(mid)) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// Names `from..to`, owned.
    pub fn slice(&self, from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| self.get(i).to_string()).collect()
    }
}

/// What identifies one state of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    /// Whether the directory was last changed at least [`SETTLED`] before `now`.
    fn settled_at(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        self.mtime_ns + SETTLED.as_nanos() as i128 <= now_ns
    }
}

struct Kept {
    stamp: Stamp,
    order: Order,
    names: Arc<SortedNames>,
    /// When it was last used (a counter), for eviction.
    used: u64,
}

#[derive(Default)]
struct Kepts {
    by_dir: HashMap<PathBuf, Kept>,
    names: usize,
    clock: u64,
}

/// A directory's subdirectories, sorted, and whether the listing came from memory.
pub(crate) struct Listing {
    pub names: Arc<SortedNames>,
    pub kept: bool,
}

/// Sorted listings of large directories (see the module's comment).
pub(crate) struct DirCache {
    kept: Mutex<Kepts>,
    /// How many names the kept listings may hold together.
    max_names: usize,
}

impl Default for DirCache {
    fn default() -> DirCache {
        DirCache::with_budget(MAX_NAMES)
    }
}

/// The process's cache: directories are named by their path, checked by their inode and mtime,
/// so every storage opened in the process can share it.
pub(crate) fn shared() -> &'static DirCache {
    static SHARED: LazyLock<DirCache> = LazyLock::new(DirCache::default);
    &SHARED
}

impl DirCache {
    pub fn with_budget(max_names: usize) -> DirCache {
        DirCache {
            kept: Mutex::default(),
            max_names,
        }
    }

    /// The subdirectories of `dir` in `order`; none if `dir` is missing. Blocking.
    pub fn subdirs(&self, dir: &Path, order: Order) -> Result<Listing> {
        let now = SystemTime::now();
        let meta = match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => return Ok(empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
            Err(e) => return Err(StorageError::Io(e)),
        };
        let stamp = Stamp::of(&meta);
        {
            let mut kept = self.kept.lock().expect("directory cache");
            kept.clock += 1;
            let clock = kept.clock;
            if let Some(hit) = kept.by_dir.get_mut(dir) {
                if hit.stamp == stamp && hit.order == order {
                    hit.used = clock;
                    return Ok(Listing {
                        names: hit.names.clone(),
                        kept: true,
                    });
                }
            }
        }
        let names = Arc::new(SortedNames::new(read_subdirs(dir)?, order));
        let keep =
            names.len() >= MIN_ENTRIES && names.len() <= self.max_names && stamp.settled_at(now);
        let mut kept = self.kept.lock().expect("directory cache");
        if let Some(old) = kept.by_dir.remove(dir) {
            kept.names -= old.names.len();
        }
        if keep {
            while kept.names + names.len() > self.max_names {
                let Some(oldest) = kept
                    .by_dir
                    .iter()
                    .min_by_key(|(_, k)| k.used)
                    .map(|(d, _)| d.clone())
                else {
                    break;
                };
                let gone = kept.by_dir.remove(&oldest).expect("listed just now");
                kept.names -= gone.names.len();
            }
            kept.names += names.len();
            let used = kept.clock;
            kept.by_dir.insert(
                dir.to_path_buf(),
                Kept {
                    stamp,
                    order,
                    names: names.clone(),
                    used,
                },
            );
        }
        Ok(Listing { names, kept: false })
    }

    #[cfg(test)]
    fn kept_names(&self) -> usize {
        self.kept.lock().expect("directory cache").names
    }
}

fn empty() -> Listing {
    Listing {
        names: Arc::new(SortedNames::default()),
        kept: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_dirs(root: &Path, n: usize) {
        for i in 0..n {
            std::fs::create_dir(root.join(format!("r{i:05}"))).unwrap();
        }
    }

    /// Ages a directory's mtime past [`SETTLED`], as if it was written a while ago.
    fn age(dir: &Path) {
        let past = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    #[test]
    fn a_settled_large_directory_is_kept_until_it_changes() {
        let tmp = tempfile::tempdir().unwrap();
        make_dirs(tmp.path(), MIN_ENTRIES + 10);
        age(tmp.path());
        let cache = DirCache::default();
        let first = cache.subdirs(tmp.path(), Order::Bytes).unwrap();
        assert!(!first.kept);
        assert_eq!(first.names.len(), MIN_ENTRIES + 10);
        assert_eq!(first.names.get(0), "r00000");
        let again = cache.subdirs(tmp.path(), Order::Bytes).unwrap();
        assert!(
            again.kept,
            "an unchanged, settled directory comes from memory"
        );

        // A new entry changes the directory's mtime: the next listing sees it.
        std::fs::create_dir(tmp.path().join("a-new-one")).unwrap();
        let changed = cache.subdirs(tmp.path(), Order::Bytes).unwrap();
        assert!(!changed.kept);
        assert_eq!(changed.names.get(0), "a-new-one");
        // Changed just now: not kept until it settles.
        assert!(!cache.subdirs(tmp.path(), Order::Bytes).unwrap().kept);
        std::fs::remove_dir(tmp.path().join("r00000")).unwrap();
        age(tmp.path());
        let removed = cache.subdirs(tmp.path(), Order::Bytes).unwrap();
        assert_eq!(removed.names.len(), MIN_ENTRIES + 10);
        assert_eq!(removed.names.get(1), "r00001");
        assert!(cache.subdirs(tmp.path(), Order::Bytes).unwrap().kept);
    }

    #[test]
    fn a_recently_changed_or_small_or_too_large_directory_is_read_each_time() {
        let tmp = tempfile::tempdir().unwrap();
        make_dirs(tmp.path(), MIN_ENTRIES);
        let cache = DirCache::default();
        cache.subdirs(tmp.path(), Order::Bytes).unwrap();
        assert!(!cache.subdirs(tmp.path(), Order::Bytes).unwrap().kept);

        let small = tempfile::tempdir().unwrap();
        make_dirs(small.path(), 10);
        age(small.path());
        cache.subdirs(small.path(), Order::Bytes).unwrap();
        assert!(!cache.subdirs(small.path(), Order::Bytes).unwrap().kept);
        assert_eq!(cache.kept_names(), 0);
        age(tmp.path());
        let tight = DirCache::with_budget(MIN_ENTRIES - 1);
        tight.subdirs(tmp.path(), Order::Bytes).unwrap();
        assert!(!tight.subdirs(tmp.path(), Order::Bytes).unwrap().kept);
        assert!(
            cache
                .subdirs(&tmp.path().join("missing"), Order::Bytes)
                .unwrap()
                .names
                .len()
                == 0
        );
    }

    #[test]
    fn listings_sort_by_the_order_asked_and_files_are_no_entries() {
        let tmp = tempfile::tempdir().unwrap();
        make_dirs(tmp.path(), MIN_ENTRIES);
        for d in ["a", "a-b", "a.b"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("0-a-file"), b"x").unwrap();
        age(tmp.path());
        let cache = DirCache::default();
        let bytes = cache.subdirs(tmp.path(), Order::Bytes).unwrap().names;
        assert_eq!(
            [bytes.get(0), bytes.get(1), bytes.get(2)],
            ["a", "a-b", "a.b"]
        );
        let slash = cache.subdirs(tmp.path(), Order::Slash).unwrap();
        assert!(!slash.kept, "a listing kept in another order is no hit");
        let slash = slash.names;
        assert_eq!(
            [slash.get(0), slash.get(1), slash.get(2)],
            ["a-b", "a.b", "a"]
        );
        assert_eq!(slash.len(), MIN_ENTRIES + 3);
        assert_eq!(slash.partition_point(|n| n < "r"), 3);
    }

    #[test]
    fn kept_listings_stay_within_their_budget() {
        let cache = DirCache::with_budget(2 * MIN_ENTRIES + 5);
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("d{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
            make_dirs(d, MIN_ENTRIES);
            age(d);
            cache.subdirs(d, Order::Bytes).unwrap();
        }
        // The least recently used went to make room for the third.
        assert_eq!(cache.kept_names(), 2 * MIN_ENTRIES);
        assert!(!cache.subdirs(&dirs[0], Order::Bytes).unwrap().kept);
        assert!(cache.subdirs(&dirs[2], Order::Bytes).unwrap().kept);
        // Reading d0 again kept it in place of d1, the least recently used then.
        assert!(cache.subdirs(&dirs[0], Order::Bytes).unwrap().kept);
        assert!(!cache.subdirs(&dirs[1], Order::Bytes).unwrap().kept);
    }
}
