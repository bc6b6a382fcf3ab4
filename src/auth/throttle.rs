//! The brute-force guard on password checks. Per client address (an IPv6 address by its /64,
//! which one host usually owns whole): after `limit` wrong passwords within a minute the
//! address gets `429 TOOMANYREQUESTS` until the minute is over, and at most `limit` password
//! checks may run for it at once (so a burst of parallel guesses cannot all pass the count
//! before the first failure lands). Only bcrypt work is guarded: remembered passwords and
//! tokens, which cost nothing to check, are never refused, so a locked-out address (a proxy
//! shared by many users) does not lock out users already logged in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, expired entries are dropped (at most once a second).
const TIDY_AT: usize = 10_000;
/// Never more: new addresses are then not tracked (the guard fails open rather than growing).
const MAX_TRACKED: usize = 100_000;

pub struct Throttle {
    limit: u32,
    state: Mutex<State>,
}

struct State {
    by_addr: HashMap<IpAddr, Entry>,
    tidied_at: Instant,
}

#[derive(Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    in_flight: u32,
}

/// A password check under way; counts as a failure if [`Attempt::failed`] is called.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    key: Option<IpAddr>,
}

impl Attempt<'_> {
    /// The password was wrong.
    pub fn failed(self) {
        if let Some(key) = self.key {
            let mut state = self.throttle.state.lock().expect("not poisoned");
            if let Some(entry) = state.by_addr.get_mut(&key) {
                entry.failures += 1;
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut state = self.throttle.state.lock().expect("not poisoned");
            if let Some(entry) = state.by_addr.get_mut(&key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
    }
}

/// The unit an address is counted by.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Throttle {
    /// `limit` failures per address per minute; 0 turns the guard off.
    pub fn new(limit: u32) -> Throttle {
        Throttle {
            limit,
            state: Mutex::new(State {
                by_addr: HashMap::new(),
                tidied_at: Instant::now(),
            }),
        }
    }

    /// Starts a password check from `addr` (`None`: an unknown address, not guarded), or
    /// `Err(wait)` while the address is locked out or has too many checks running.
    pub fn begin(&self, addr: Option<IpAddr>) -> Result<Attempt<'_>, Duration> {
        self.begin_at(addr, Instant::now())
    }

    fn begin_at(&self, addr: Option<IpAddr>, now: Instant) -> Result<Attempt<'_>, Duration> {
        let unguarded = Attempt {
            throttle: self,
            key: None,
        };
        let Some(addr) = addr.filter(|_| self.limit > 0) else {
            return Ok(unguarded);
        };
        let key = key(addr);
        let mut state = self.state.lock().expect("not poisoned");
        if state.by_addr.len() >= TIDY_AT && now >= state.tidied_at + Duration::from_secs(1) {
            state
                .by_addr
                .retain(|_, e| e.in_flight > 0 || now < e.window_start + WINDOW);
            state.tidied_at = now;
        }
        if !state.by_addr.contains_key(&key) && state.by_addr.len() >= MAX_TRACKED {
            return Ok(unguarded);
        }
        let entry = state.by_addr.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            in_flight: 0,
        });
        if now >= entry.window_start + WINDOW {
            entry.window_start = now;
            entry.failures = 0;
        }
        if entry.failures >= self.limit {
            return Err(entry.window_start + WINDOW - now);
        }
        if entry.in_flight >= self.limit {
            return Err(Duration::from_secs(1));
        }
        entry.in_flight += 1;
        Ok(Attempt {
            throttle: self,
            key: Some(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn locks_out_after_the_limit_until_the_window_ends() {
        let throttle = Throttle::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            throttle.begin_at(ip("10.0.0.1"), t0).unwrap().failed();
        }
        let wait = throttle
            .begin_at(ip("10.0.0.1"), t0 + Duration::from_secs(10))
            .err()
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            throttle.begin_at(ip("10.0.0.2"), t0).is_ok(),
            "others go on"
        );
        assert!(throttle.begin_at(ip("10.0.0.1"), t0 + WINDOW).is_ok());
    }

    #[test]
    fn successes_do_not_count_and_parallel_checks_are_bounded() {
        let throttle = Throttle::new(2);
        let t0 = Instant::now();
        for _ in 0..10 {
            drop(throttle.begin_at(ip("10.0.0.1"), t0).unwrap());
        }
        let a = throttle.begin_at(ip("10.0.0.1"), t0).unwrap();
        let b = throttle.begin_at(ip("10.0.0.1"), t0).unwrap();
        assert_eq!(
            throttle.begin_at(ip("10.0.0.1"), t0).err(),
            Some(Duration::from_secs(1)),
            "a third parallel check waits"
        );
        a.failed();
        drop(b);
        assert!(throttle.begin_at(ip("10.0.0.1"), t0).is_ok());
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let throttle = Throttle::new(1);
        let t0 = Instant::now();
        throttle.begin_at(ip("2001:db8::1"), t0).unwrap().failed();
        assert!(throttle.begin_at(ip("2001:db8::ffff:1"), t0).is_err());
        assert!(throttle.begin_at(ip("2001:db8:0:1::1"), t0).is_ok());
    }

    #[test]
    fn zero_or_no_address_turns_it_off() {
        let throttle = Throttle::new(0);
        for _ in 0..100 {
            throttle.begin(ip("::1")).unwrap().failed();
        }
        assert!(throttle.begin(ip("::1")).is_ok());
        let throttle = Throttle::new(1);
        throttle.begin(None).unwrap().failed();
        throttle.begin(None).unwrap().failed();
        assert!(throttle.begin(None).is_ok());
    }
}
