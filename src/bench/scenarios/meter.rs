//! The meter of a scenario's timed part: wall time, the server's CPU and peak RSS (`/proc`), the
//! client's CPU, perf switched on and off around it (`--perf-ctl`), and the memory warm-up before
//! the clock starts (`--warm-memory`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bench::procstat::{self, Spent, Watch};
use crate::bench::profile::PerfCtl;
use crate::bench::stats::MB;

/// The timed part of a scenario: wall time, server and client cost.
#[derive(Default, Clone, Copy)]
pub(super) struct Measured {
    pub(super) seconds: f64,
    pub(super) server: Spent,
    pub(super) client_cpu: Option<f64>,
}

pub(super) struct Meter {
    start: Instant,
    watch: Option<Watch>,
    client_cpu: Option<f64>,
    perf: Option<SharedPerf>,
}

/// perf's control FIFOs, shared by the scenarios of a run.
pub type SharedPerf = Arc<Mutex<PerfCtl>>;

impl Meter {
    /// Starts the clock; first, with `warm` > 0, that many bytes of fresh memory are touched and
    /// freed (see [`warm_memory`]), and with `perf`, perf is switched on.
    pub(super) fn start(server_pid: Option<u32>, warm: u64, perf: Option<SharedPerf>) -> Meter {
        if warm > 0 {
            warm_memory(warm);
        }
        if let Some(p) = &perf {
            if let Err(e) = p.lock().expect("perf").send("enable") {
                eprintln!("berth bench: {e}");
            }
        }
        let watch = server_pid.map(|p| Watch::start(&p.to_string()));
        Meter {
            client_cpu: procstat::cpu_seconds("self"),
            watch,
            perf,
            start: Instant::now(),
        }
    }

    pub(super) fn finish(self) -> Measured {
        let seconds = self.start.elapsed().as_secs_f64();
        let measured = Measured {
            seconds,
            server: self.watch.map(|w| w.finish()).unwrap_or_default(),
            client_cpu: match (self.client_cpu, procstat::cpu_seconds("self")) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
        };
        if let Some(p) = &self.perf {
            if let Err(e) = p.lock().expect("perf").send("disable") {
                eprintln!("berth bench: {e}");
            }
        }
        measured
    }
}

/// Touches `bytes` of fresh anonymous memory page by page, then frees it; returns the rate of
/// the first touch in MB/s.
///
/// On a virtual machine whose balloon reports free pages to the hypervisor (virtio-balloon free
/// page reporting, as here), memory freed a few seconds ago is given back to the host, and the
/// next first touch of each page costs a host fault: writing a file into the page cache then runs
/// at a fraction of its speed, and how much depends on what the machine freed and when. Touching
/// and freeing memory right before the clock starts hands the next allocations pages the host
/// still backs, which makes page-cache writes repeatable.
pub fn warm_memory(bytes: u64) -> f64 {
    let len = bytes as usize;
    // SAFETY: a private anonymous mapping of `len` bytes, written within its bounds and unmapped
    // before returning; nothing else refers to it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 0.0;
        }
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        let base = p as *mut u8;
        let t = Instant::now();
        for off in (0..len).step_by(4096) {
            std::ptr::write_volatile(base.add(off), 1);
        }
        let secs = t.elapsed().as_secs_f64();
        libc::munmap(p, len);
        if secs > 0.0 {
            bytes as f64 / secs / MB
        } else {
            0.0
        }
    }
}
