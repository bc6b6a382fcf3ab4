//! The brute-force guard: a client address that failed to log in too often within a minute is
//! answered `429 TOOMANYREQUESTS` until the minute is over, before any password is checked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, expired entries are dropped.
const TIDY_AT: usize = 10_000;

pub struct Throttle {
    limit: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// `limit` failures per address per minute; 0 turns the guard off.
    pub fn new(limit: u32) -> Throttle {
        Throttle {
            limit,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while `addr` is locked out.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        self.check_at(addr, Instant::now())
    }

    fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        match self.failures.lock().expect("not poisoned").get(&addr) {
            Some((since, count)) if *count >= self.limit && now < *since + WINDOW => {
                Err(*since + WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        self.failed_at(addr, Instant::now());
    }

    fn failed_at(&self, addr: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() >= TIDY_AT {
            failures.retain(|_, (since, _)| now < *since + WINDOW);
        }
        let entry = failures.entry(addr).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_limit_until_the_window_ends() {
        let throttle = Throttle::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(throttle.check_at(a, t0).is_ok());
            throttle.failed_at(a, t0);
        }
        let wait = throttle
            .check_at(a, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            throttle.check_at(b, t0).is_ok(),
            "other addresses are not affected"
        );
        assert!(throttle.check_at(a, t0 + WINDOW).is_ok());
        throttle.failed_at(a, t0 + WINDOW);
        assert!(
            throttle.check_at(a, t0 + WINDOW).is_ok(),
            "a new window starts at 1"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let throttle = Throttle::new(0);
        let a: IpAddr = "::1".parse().unwrap();
        for _ in 0..100 {
            throttle.failed(a);
        }
        assert!(throttle.check(a).is_ok());
    }
}
