//! Profiles of the server: `perf record` switched on and off around the timed part of a scenario
//! (`--perf-ctl`, perf's control FIFOs), and the top functions by self time of a flamegraph's
//! folded stacks (`--profile` in report mode).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// perf's control FIFOs (`perf record -D -1 --control fifo:CTL,ACK`): `enable` and `disable`
/// are written to CTL, and perf answers `ack` on ACK once done.
pub struct PerfCtl {
    ctl: File,
    ack: File,
}

impl PerfCtl {
    /// Opens both FIFOs without blocking: whoever starts perf keeps them open (`exec 8<>CTL`).
    pub fn open(ctl: &Path, ack: &Path) -> Result<PerfCtl, String> {
        let open = |path: &Path, write: bool| {
            OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| format!("--perf-ctl {}: {e}", path.display()))
        };
        Ok(PerfCtl {
            ctl: open(ctl, true)?,
            ack: open(ack, false)?,
        })
    }

    /// Sends `enable` or `disable` and waits (at most 5 s) for perf's `ack`.
    pub fn send(&mut self, command: &str) -> Result<(), String> {
        // Stale acknowledgements from an earlier command are dropped first.
        let mut junk = [0u8; 64];
        while matches!(self.ack.read(&mut junk), Ok(n) if n > 0) {}
        self.ctl
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("perf control: {command}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("ack") {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("perf control: no ack for {command}"));
            }
            let mut pfd = libc::pollfd {
                fd: self.ack.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(5000) as i32) };
            let mut buf = [0u8; 64];
            if let Ok(n) = self.ack.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        Ok(())
    }
}

/// One function's share of the samples in which it was the leaf (self time).
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTime {
    pub symbol: String,
    pub samples: u64,
    pub share: f64,
}

/// The `n` leaf functions with the most samples in folded stacks (`a;b;c 42` per line, as
/// `inferno-collapse-perf` writes them), and the total number of samples.
pub fn top_self(folded: &str, n: usize) -> (Vec<SelfTime>, u64) {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    for line in folded.lines() {
        let Some((stack, count)) = line.trim_end().rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        *counts.entry(leaf).or_default() += count;
        total += count;
    }
    let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top = v
        .into_iter()
        .take(n)
        .map(|(symbol, samples)| SelfTime {
            symbol: symbol.to_string(),
            samples,
            share: if total > 0 {
                samples as f64 / total as f64
            } else {
                0.0
            },
        })
        .collect();
    (top, total)
}

/// A symbol as a markdown table cell: shortened, in a code span, `|` escaped.
pub fn symbol_cell(symbol: &str, max: usize) -> String {
    let mut s: String = symbol.chars().take(max).collect();
    if symbol.chars().count() > max {
        s.push('…');
    }
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_time_is_counted_at_the_leaf() {
        let folded = "main;a;memcpy 30\nmain;b;memcpy 10\nmain;a 40\nmain;sha256_block 20\nbad line\nx;y notanumber\n";
        let (top, total) = top_self(folded, 2);
        assert_eq!(total, 100);
        let names: Vec<(&str, u64)> = top.iter().map(|t| (t.symbol.as_str(), t.samples)).collect();
        assert_eq!(names, vec![("a", 40), ("memcpy", 40)]);
        assert_eq!(top[0].share, 0.4);
        assert_eq!(top_self("", 10), (vec![], 0));
    }

    #[test]
    fn cells_are_short_and_escaped() {
        assert_eq!(symbol_cell("a|b", 10), "`a\\|b`");
        assert_eq!(symbol_cell("abcdef", 3), "`abc…`");
    }

    #[test]
    fn missing_fifos_are_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("ctl");
        assert!(PerfCtl::open(&ctl, &dir.path().join("ack")).is_err());
    }
}
