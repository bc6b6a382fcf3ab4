//! One endpoint's queue of events not yet delivered, and its back-off. Plain types, no actors.
//!
//! The durable part is a [`Spool`]: an append-only file of events, one JSON line each, beside a
//! file holding the byte offset up to which they were delivered. Every event is appended before
//! `emit` returns (a `write(2)` into the page cache, not synced), so it survives a restart and
//! even a killed process; delivery reads the file in order. When everything written has been
//! delivered the file is truncated. Without a spool (in-memory storage, or after the spool failed
//! to write) events wait in a bounded memory queue instead; beyond its bound they are dropped and
//! counted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Events held in memory ahead of delivery (read from the spool, or waiting without one).
pub const WINDOW: usize = 256;
/// Events kept in memory when there is no spool.
pub const MEMORY_CAPACITY: usize = 10_000;
/// Events the spool holds at most (a dead endpoint must not fill the disk).
pub const SPOOL_CAPACITY: u64 = 1_000_000;
/// How many spools of one endpoint may exist (one per process sharing the directory).
const SLOTS: usize = 16;

/// An append-only log of events with an acknowledged offset, locked by this process.
#[derive(Debug)]
pub struct Spool {
    log: File,
    ack: File,
    path: PathBuf,
    /// Bytes of the log.
    len: u64,
    /// Bytes of the log delivered.
    acked: u64,
    /// Events after `acked`.
    pending: u64,
}

impl Spool {
    /// Opens (or creates) the first spool of `endpoint` under `dir` that no other process holds.
    pub fn open(dir: &Path, endpoint: &str) -> io::Result<Spool> {
        let dir = dir.join(sanitize(endpoint));
        std::fs::create_dir_all(&dir)?;
        for slot in 0..SLOTS {
            let path = dir.join(format!("{slot}.log"));
            let log = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            if !crate::storage::try_lock_file(&log)? {
                continue;
            }
            let ack = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(format!("{slot}.acked")))?;
            return Spool::load(log, ack, path);
        }
        Err(io::Error::other(format!(
            "all {SLOTS} spools under {} are held by other processes",
            dir.display()
        )))
    }

    fn load(log: File, ack: File, path: PathBuf) -> io::Result<Spool> {
        let mut len = log.metadata()?.len();
        let mut text = String::new();
        let mut buf = vec![0u8; 32];
        let n = ack.read_at(&mut buf, 0)?;
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        let mut acked = text.trim().parse::<u64>().unwrap_or(0);
        // A line cut short by a crash is not an event; offsets must fall on line starts. Read in
        // pieces: a spool behind a long-dead endpoint may be large.
        let mut whole = 0u64;
        let mut chunk = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        let mut acked_on_line_start = acked == 0;
        let mut pending = 0u64;
        while offset < len {
            let want = chunk.len().min((len - offset) as usize);
            log.read_exact_at(&mut chunk[..want], offset)?;
            for (i, &b) in chunk[..want].iter().enumerate() {
                if b == b'\n' {
                    let end = offset + i as u64 + 1;
                    whole = end;
                    if end == acked {
                        acked_on_line_start = true;
                    }
                    if end > acked {
                        pending += 1;
                    }
                }
            }
            offset += want as u64;
        }
        if whole < len {
            log.set_len(whole)?;
            len = whole;
        }
        if acked > len || !acked_on_line_start {
            // Unreadable or impossible: everything is sent again (a duplicate, not a loss).
            acked = 0;
            pending = 0;
            let mut offset = 0u64;
            while offset < len {
                let want = chunk.len().min((len - offset) as usize);
                log.read_exact_at(&mut chunk[..want], offset)?;
                pending += chunk[..want].iter().filter(|&&b| b == b'\n').count() as u64;
                offset += want as u64;
            }
        }
        Ok(Spool {
            log,
            ack,
            path,
            len,
            acked,
            pending,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Appends one event (a line without its newline) with a single write.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let mut record = Vec::with_capacity(line.len() + 1);
        record.extend_from_slice(line);
        record.push(b'\n');
        if let Err(e) = self.log.write_all(&record) {
            // Whatever part was written is cut off again, so the next line starts cleanly.
            let _ = self.log.set_len(self.len);
            return Err(e);
        }
        self.len += record.len() as u64;
        self.pending += 1;
        Ok(())
    }

    /// Reads up to `max` events from byte `from` on: `(end offset, line)` each.
    pub fn read(&self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut events = Vec::new();
        let mut offset = from;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut partial: Vec<u8> = Vec::new();
        while offset < self.len && events.len() < max {
            let want = chunk.len().min((self.len - offset) as usize);
            self.log.read_exact_at(&mut chunk[..want], offset)?;
            offset += want as u64;
            partial.extend_from_slice(&chunk[..want]);
            let mut start = 0;
            let consumed_before = offset - partial.len() as u64;
            while let Some(i) = partial[start..].iter().position(|&b| b == b'\n') {
                let end = start + i;
                events.push((
                    consumed_before + end as u64 + 1,
                    partial[start..end].to_vec(),
                ));
                start = end + 1;
                if events.len() == max {
                    break;
                }
            }
            partial.drain(..start);
        }
        Ok(events)
    }

    /// Records delivery of everything before byte `end`. Returns true when the log was emptied
    /// (all delivered), which restarts offsets at 0.
    pub fn ack(&mut self, end: u64) -> io::Result<bool> {
        self.acked = end;
        self.pending = self.pending.saturating_sub(1);
        if self.acked >= self.len {
            // Truncate first: a crash before the offset is rewritten leaves an offset beyond the
            // end, which loading clamps.
            self.log.set_len(0)?;
            self.len = 0;
            self.acked = 0;
            self.pending = 0;
            self.write_ack()?;
            return Ok(true);
        }
        self.write_ack()?;
        Ok(false)
    }

    fn write_ack(&self) -> io::Result<()> {
        // Fixed width, written in place.
        self.ack
            .write_all_at(format!("{:020}\n", self.acked).as_bytes(), 0)
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }
}

/// A file name for an endpoint's name.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Where an event handed out by [`Queue::oldest`] came from, to acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// From the spool, ending at this offset.
    Spool(u64),
    Memory,
}

/// What happened to an event given to [`Queue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Spooled,
    InMemory,
    Dropped,
}

/// One endpoint's undelivered events, in order, and its counters.
#[derive(Debug)]
pub struct Queue {
    spool: Option<Spool>,
    /// The spool failed to write: new events go to memory (after everything spooled, so the
    /// order holds).
    spool_broken: bool,
    /// Events read from the spool and not yet delivered.
    window: VecDeque<(Origin, Vec<u8>)>,
    /// Where reading the spool goes on.
    read_pos: u64,
    /// Events with no spool.
    memory: VecDeque<Vec<u8>>,
    pub sent: u64,
    pub failures: u64,
    pub dropped: u64,
}

impl Queue {
    pub fn new(spool: Option<Spool>) -> Queue {
        let read_pos = spool.as_ref().map_or(0, Spool::acked);
        Queue {
            spool,
            spool_broken: false,
            window: VecDeque::new(),
            read_pos,
            memory: VecDeque::new(),
            sent: 0,
            failures: 0,
            dropped: 0,
        }
    }

    pub fn pending(&self) -> u64 {
        let in_flight_from_memory = self
            .window
            .iter()
            .filter(|(origin, _)| *origin == Origin::Memory)
            .count();
        self.spool.as_ref().map_or(0, Spool::pending)
            + (self.memory.len() + in_flight_from_memory) as u64
    }

    /// Adds an event at the end; never waits for delivery.
    pub fn push(&mut self, line: &[u8]) -> Pushed {
        if let Some(spool) = self.spool.as_mut().filter(|_| !self.spool_broken) {
            if spool.pending() >= SPOOL_CAPACITY {
                self.dropped += 1;
                return Pushed::Dropped;
            }
            match spool.append(line) {
                Ok(()) => return Pushed::Spooled,
                Err(e) => {
                    log::error!(
                        "notifications: cannot write the spool {}: {e}; events are kept in memory \
                         only from now on",
                        spool.path().display()
                    );
                    self.spool_broken = true;
                }
            }
        }
        if self.memory.len() >= MEMORY_CAPACITY {
            self.dropped += 1;
            return Pushed::Dropped;
        }
        self.memory.push_back(line.to_vec());
        Pushed::InMemory
    }

    /// The oldest undelivered event, if any; the same one until it is acknowledged.
    pub fn oldest(&mut self) -> io::Result<Option<&[u8]>> {
        if self.window.is_empty() {
            if let Some(spool) = &self.spool {
                for (end, line) in spool.read(self.read_pos, WINDOW)? {
                    self.read_pos = end;
                    self.window.push_back((Origin::Spool(end), line));
                }
            }
        }
        if self.window.is_empty() {
            if let Some(line) = self.memory.pop_front() {
                self.window.push_back((Origin::Memory, line));
            }
        }
        Ok(self.window.front().map(|(_, line)| line.as_slice()))
    }

    /// The event [`Queue::oldest`] gave was delivered.
    pub fn delivered(&mut self) -> io::Result<()> {
        let Some((origin, _)) = self.window.pop_front() else {
            return Ok(());
        };
        self.sent += 1;
        if let (Origin::Spool(end), Some(spool)) = (origin, self.spool.as_mut()) {
            if spool.ack(end)? {
                // Emptied: everything read was delivered, so the window is empty too.
                debug_assert!(self.window.is_empty());
                self.read_pos = 0;
            }
        }
        Ok(())
    }
}

/// How long to wait before the next attempt: at once until `threshold` consecutive failures,
/// then `backoff`, doubling with each further failure up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    threshold: u32,
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(threshold: u32, base: Duration) -> Backoff {
        let cap = base.max((base * 64).min(Duration::from_secs(300)));
        Backoff {
            threshold: threshold.max(1),
            base,
            cap,
            failures: 0,
        }
    }

    /// Records a failure; the delay before trying again.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures < self.threshold {
            return Duration::ZERO;
        }
        let doublings = (self.failures - self.threshold).min(16);
        (self.base * 2u32.pow(doublings)).min(self.cap)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut Queue) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = q.oldest().unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
            q.delivered().unwrap();
        }
        out
    }

    #[test]
    fn spool_keeps_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = Queue::new(Some(Spool::open(dir.path(), "hook one").unwrap()));
            for i in 0..5 {
                assert_eq!(q.push(format!("e{i}").as_bytes()), Pushed::Spooled);
            }
            assert_eq!(q.pending(), 5);
            // Two delivered, a third handed out but not acknowledged (in flight at shutdown).
            for _ in 0..2 {
                q.oldest().unwrap().unwrap();
                q.delivered().unwrap();
            }
            assert_eq!(q.oldest().unwrap().unwrap(), b"e2");
            assert_eq!((q.pending(), q.sent), (3, 2));
        }
        let mut q = Queue::new(Some(Spool::open(dir.path(), "hook one").unwrap()));
        assert_eq!(q.pending(), 3);
        q.push(b"e5");
        assert_eq!(drain(&mut q), ["e2", "e3", "e4", "e5"]);
        assert_eq!(q.pending(), 0);
        // Emptied: the log was truncated and offsets start again.
        let log = dir.path().join("hook_one/0.log");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        q.push(b"e6");
        drop(q);
        let mut q = Queue::new(Some(Spool::open(dir.path(), "hook one").unwrap()));
        assert_eq!(drain(&mut q), ["e6"]);
    }

    #[test]
    fn a_torn_last_line_and_a_bad_offset_lose_nothing_whole() {
        let dir = tempfile::tempdir().unwrap();
        drop(Spool::open(dir.path(), "h").unwrap());
        std::fs::write(dir.path().join("h/0.log"), b"a\nb\nc-cut").unwrap();
        std::fs::write(dir.path().join("h/0.acked"), b"garbage").unwrap();
        let mut q = Queue::new(Some(Spool::open(dir.path(), "h").unwrap()));
        assert_eq!(q.pending(), 2);
        q.push(b"d");
        assert_eq!(drain(&mut q), ["a", "b", "d"]);
        drop(q);
        // An offset inside a line (or past the end) counts from the start.
        std::fs::write(dir.path().join("h/0.log"), b"a\nb\n").unwrap();
        std::fs::write(dir.path().join("h/0.acked"), b"3").unwrap();
        let mut q = Queue::new(Some(Spool::open(dir.path(), "h").unwrap()));
        assert_eq!(drain(&mut q), ["a", "b"]);
    }

    #[test]
    fn a_second_process_gets_its_own_spool() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spool::open(dir.path(), "h").unwrap();
        let second = Spool::open(dir.path(), "h").unwrap();
        assert_ne!(first.path(), second.path());
    }

    #[test]
    fn reads_cross_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::new(Some(Spool::open(dir.path(), "h").unwrap()));
        let lines: Vec<String> = (0..WINDOW * 3).map(|i| format!("{i:0>500}")).collect();
        for l in &lines {
            q.push(l.as_bytes());
        }
        assert_eq!(drain(&mut q), lines);
    }

    #[test]
    fn without_a_spool_memory_is_bounded() {
        let mut q = Queue::new(None);
        for i in 0..MEMORY_CAPACITY + 3 {
            let pushed = q.push(format!("{i}").as_bytes());
            let expected = if i < MEMORY_CAPACITY {
                Pushed::InMemory
            } else {
                Pushed::Dropped
            };
            assert_eq!(pushed, expected);
        }
        assert_eq!(q.dropped, 3);
        assert_eq!(q.pending(), MEMORY_CAPACITY as u64);
        assert_eq!(q.oldest().unwrap().unwrap(), b"0");
        // Not acknowledged: handed out again, and still pending.
        assert_eq!(q.oldest().unwrap().unwrap(), b"0");
        assert_eq!(q.pending(), MEMORY_CAPACITY as u64);
        q.delivered().unwrap();
        assert_eq!(q.pending(), MEMORY_CAPACITY as u64 - 1);
        assert_eq!(q.oldest().unwrap().unwrap(), b"1");
    }

    #[test]
    fn backoff_waits_after_threshold_growing_to_a_cap() {
        let mut b = Backoff::new(3, Duration::from_millis(100));
        assert_eq!(b.failed(), Duration::ZERO);
        assert_eq!(b.failed(), Duration::ZERO);
        assert_eq!(b.failed(), Duration::from_millis(100));
        assert_eq!(b.failed(), Duration::from_millis(200));
        assert_eq!(b.failed(), Duration::from_millis(400));
        for _ in 0..40 {
            b.failed();
        }
        assert_eq!(b.failed(), Duration::from_millis(6400));
        b.succeeded();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(), Duration::ZERO);
        // A long base is never capped below itself.
        let mut b = Backoff::new(1, Duration::from_secs(600));
        assert_eq!(b.failed(), Duration::from_secs(600));
        assert_eq!(b.failed(), Duration::from_secs(600));
    }
}
