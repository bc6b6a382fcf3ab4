//! What a process on this machine costs, from `/proc` (Linux): CPU seconds (user + system, every
//! thread) and peak resident memory (`VmHWM`), which can be reset between scenarios through
//! `/proc/PID/clear_refs`.

use std::fs;

/// Clock ticks per second of `/proc/PID/stat`'s times: fixed at 100 by the kernel ABI (USER_HZ)
/// on the architectures berth runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` of process `pid` (`"self"` for this one), in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields are counted after
    // its closing parenthesis, which starts at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?; // field 14
    let stime: f64 = fields.get(12)?.parse().ok()?; // field 15
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// `VmHWM` (peak resident set) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets `VmHWM` to the current resident set (`echo 5 > /proc/PID/clear_refs`); false when the
/// kernel or the permissions do not allow it.
pub fn reset_peak_rss(pid: &str) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A server process being watched during one scenario.
pub struct Watch {
    pid: String,
    cpu_start: Option<f64>,
    reset: bool,
}

/// What the server spent during a scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    pub cpu_seconds: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    /// Whether the peak covers this scenario only (`VmHWM` was reset at its start).
    pub peak_is_per_scenario: bool,
}

impl Watch {
    pub fn start(pid: &str) -> Watch {
        let reset = reset_peak_rss(pid);
        Watch {
            pid: pid.to_string(),
            cpu_start: cpu_seconds(pid),
            reset,
        }
    }

    pub fn finish(&self) -> Spent {
        Spent {
            cpu_seconds: match (self.cpu_start, cpu_seconds(&self.pid)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            peak_rss_kib: peak_rss_kib(&self.pid),
            peak_is_per_scenario: self.reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(peak_rss_kib("self").unwrap() > 0);
        assert_eq!(cpu_seconds("999999999"), None);
    }
}
