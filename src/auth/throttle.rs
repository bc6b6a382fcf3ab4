//! The guard on costly work done for a client: password checks (bcrypt, by design tens to
//! hundreds of milliseconds of a core) and token signing.
//!
//! Per client address, after `limit` counted events within a minute (wrong passwords; for the
//! token server, every request) the address is refused with `429 TOOMANYREQUESTS` until the
//! minute is over, and at most `limit` checks may run for it at once (so a burst of parallel
//! guesses cannot all pass the count before the first failure lands). An IPv6 host is counted
//! by its /64, which one host usually owns whole, and also by its /56, what providers commonly
//! delegate to one customer, at [`PREFIX_56_FACTOR`] times the limit: a customer cannot multiply
//! its guesses by 256 by moving between its /64s.
//!
//! Overall, at most `max_in_flight` checks run at once (≈ the cores: bcrypt is pure CPU); one
//! more is refused at once, unhashed, so a flood from many addresses cannot starve the requests
//! of users already logged in. Only costly work is guarded: remembered passwords and tokens,
//! which cost nothing to check, are never refused, so a locked-out address (a proxy shared by
//! many users) does not lock out users already logged in.
//!
//! The table of addresses is bounded: when it is full of addresses still within their minute,
//! new addresses are refused (the guard fails closed rather than growing or letting them
//! through unguarded).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, expired entries are dropped (at most once a second).
const TIDY_AT: usize = 10_000;
/// Never more tracked addresses: new ones are refused until entries expire.
const MAX_TRACKED: usize = 100_000;
/// An IPv6 /56 may have this many times the limit, across its /64s.
pub const PREFIX_56_FACTOR: u32 = 4;
/// How long a client refused for lack of capacity is asked to wait.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Why a check may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address used up its minute: wait this long.
    Exhausted(Duration),
    /// No capacity now (too many checks at once, from the address or overall, or too many
    /// addresses tracked): wait this long and retry.
    Busy(Duration, &'static str),
}

pub struct Throttle {
    limit: u32,
    max_in_flight: usize,
    max_tracked: usize,
    state: Mutex<State>,
}

/// What is counted: an address (IPv4, or IPv6 cut to a prefix) and the prefix length.
type Key = (IpAddr, u8);

struct State {
    by_addr: HashMap<Key, Entry>,
    in_flight: usize,
    tidied_at: Instant,
}

#[derive(Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    in_flight: u32,
}

/// A check under way; counts against its address if [`Attempt::failed`] is called.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    keys: [Option<Key>; 2],
}

impl Attempt<'_> {
    /// The password was wrong (or, for a rate, the event happened).
    pub fn failed(self) {
        let mut state = self.throttle.state.lock().expect("not poisoned");
        for key in self.keys.iter().flatten() {
            if let Some(entry) = state.by_addr.get_mut(key) {
                entry.failures += 1;
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut state = self.throttle.state.lock().expect("not poisoned");
        state.in_flight = state.in_flight.saturating_sub(1);
        for key in self.keys.iter().flatten() {
            if let Some(entry) = state.by_addr.get_mut(key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
    }
}

/// The units `addr` is counted by, each with its limit factor.
fn keys(addr: IpAddr) -> [Option<(Key, u32)>; 2] {
    let v6 = match addr {
        IpAddr::V4(v4) => return [Some(((IpAddr::V4(v4), 32), 1)), None],
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return [Some(((IpAddr::V4(v4), 32), 1)), None],
            None => u128::from(v6),
        },
    };
    let prefix = |bits: u32| IpAddr::V6(Ipv6Addr::from(v6 & (u128::MAX << (128 - bits))));
    [
        Some(((prefix(64), 64), 1)),
        Some(((prefix(56), 56), PREFIX_56_FACTOR)),
    ]
}

impl Throttle {
    /// `limit` events per address per minute (0 turns the per-address guard off), and at most
    /// `max_in_flight` checks at once overall.
    pub fn new(limit: u32, max_in_flight: usize) -> Throttle {
        Throttle {
            limit,
            max_in_flight,
            max_tracked: MAX_TRACKED,
            state: Mutex::new(State {
                by_addr: HashMap::new(),
                in_flight: 0,
                tidied_at: Instant::now(),
            }),
        }
    }

    /// Starts a check for `addr` (`None`: an unknown address, guarded by the overall cap only).
    pub fn begin(&self, addr: Option<IpAddr>) -> Result<Attempt<'_>, Refusal> {
        self.begin_at(addr, Instant::now())
    }

    /// Counts one event for `addr` right away: a rate limit of `limit` per minute.
    pub fn count(&self, addr: Option<IpAddr>) -> Result<(), Refusal> {
        self.begin(addr).map(Attempt::failed)
    }

    fn begin_at(&self, addr: Option<IpAddr>, now: Instant) -> Result<Attempt<'_>, Refusal> {
        let mut state = self.state.lock().expect("not poisoned");
        if state.in_flight >= self.max_in_flight {
            return Err(Refusal::Busy(
                BUSY_WAIT,
                "too many password checks are under way",
            ));
        }
        // Plain keys until the end: an Attempt dropped on an early return would lock again.
        let mut charged: [Option<Key>; 2] = [None, None];
        if let Some(addr) = addr.filter(|_| self.limit > 0) {
            let keys = keys(addr);
            let tidy_at = TIDY_AT.min(self.max_tracked);
            if state.by_addr.len() >= tidy_at && now >= state.tidied_at + BUSY_WAIT {
                state
                    .by_addr
                    .retain(|_, e| e.in_flight > 0 || now < e.window_start + WINDOW);
                state.tidied_at = now;
            }
            let untracked = keys
                .iter()
                .flatten()
                .filter(|(key, _)| !state.by_addr.contains_key(key))
                .count();
            if state.by_addr.len() + untracked > self.max_tracked {
                return Err(Refusal::Busy(
                    BUSY_WAIT,
                    "too many client addresses are being counted",
                ));
            }
            // Every unit must allow it before any is charged.
            for (key, factor) in keys.iter().flatten() {
                let limit = self.limit.saturating_mul(*factor);
                let entry = state.by_addr.entry(*key).or_insert(Entry {
                    window_start: now,
                    failures: 0,
                    in_flight: 0,
                });
                if now >= entry.window_start + WINDOW {
                    entry.window_start = now;
                    entry.failures = 0;
                }
                if entry.failures >= limit {
                    return Err(Refusal::Exhausted(entry.window_start + WINDOW - now));
                }
                if entry.in_flight >= limit {
                    return Err(Refusal::Busy(
                        BUSY_WAIT,
                        "too many checks from this address at once",
                    ));
                }
            }
            for (i, (key, _)) in keys.iter().flatten().enumerate() {
                if let Some(entry) = state.by_addr.get_mut(key) {
                    entry.in_flight += 1;
                }
                charged[i] = Some(*key);
            }
        }
        state.in_flight += 1;
        Ok(Attempt {
            throttle: self,
            keys: charged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn guard(limit: u32) -> Throttle {
        Throttle::new(limit, usize::MAX)
    }

    #[test]
    fn locks_out_after_the_limit_until_the_window_ends() {
        let throttle = guard(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            throttle.begin_at(ip("10.0.0.1"), t0).unwrap().failed();
        }
        let wait = throttle
            .begin_at(ip("10.0.0.1"), t0 + Duration::from_secs(10))
            .err()
            .unwrap();
        assert_eq!(wait, Refusal::Exhausted(Duration::from_secs(50)));
        assert!(
            throttle.begin_at(ip("10.0.0.2"), t0).is_ok(),
            "others go on"
        );
        assert!(throttle.begin_at(ip("10.0.0.1"), t0 + WINDOW).is_ok());
    }

    #[test]
    fn successes_do_not_count_and_parallel_checks_are_bounded() {
        let throttle = guard(2);
        let t0 = Instant::now();
        for _ in 0..10 {
            drop(throttle.begin_at(ip("10.0.0.1"), t0).unwrap());
        }
        let a = throttle.begin_at(ip("10.0.0.1"), t0).unwrap();
        let b = throttle.begin_at(ip("10.0.0.1"), t0).unwrap();
        assert!(
            matches!(
                throttle.begin_at(ip("10.0.0.1"), t0).err(),
                Some(Refusal::Busy(BUSY_WAIT, _))
            ),
            "a third parallel check waits"
        );
        a.failed();
        drop(b);
        assert!(throttle.begin_at(ip("10.0.0.1"), t0).is_ok());
    }

    #[test]
    fn checks_are_capped_overall_whatever_the_address() {
        let throttle = Throttle::new(10, 2);
        let t0 = Instant::now();
        let a = throttle.begin_at(ip("10.0.0.1"), t0).unwrap();
        let b = throttle.begin_at(None, t0).unwrap();
        for addr in [ip("10.0.0.2"), ip("2001:db8::1"), None] {
            assert!(matches!(
                throttle.begin_at(addr, t0).err(),
                Some(Refusal::Busy(BUSY_WAIT, _))
            ));
        }
        drop(a);
        let c = throttle.begin_at(ip("10.0.0.3"), t0).unwrap();
        c.failed();
        drop(b);
        // Refusals for capacity are not failures: 10.0.0.2 has its whole minute.
        for _ in 0..10 {
            throttle.begin_at(ip("10.0.0.2"), t0).unwrap().failed();
        }
        assert!(throttle.begin_at(ip("10.0.0.2"), t0).is_err());
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_its_56() {
        let throttle = guard(1);
        let t0 = Instant::now();
        throttle.begin_at(ip("2001:db8::1"), t0).unwrap().failed();
        assert!(throttle.begin_at(ip("2001:db8::ffff:1"), t0).is_err());
        // Other /64s of the same /56 share its larger allowance…
        for subnet in 1..PREFIX_56_FACTOR {
            let addr = ip(&format!("2001:db8:0:{subnet:x}::1"));
            throttle.begin_at(addr, t0).unwrap().failed();
        }
        // …and when it is used up, every /64 in the /56 is refused, a fresh one too.
        for addr in ["2001:db8:0:ff::1", "2001:db8:0:10::7"] {
            assert!(
                matches!(
                    throttle.begin_at(ip(addr), t0).err(),
                    Some(Refusal::Exhausted(_))
                ),
                "{addr}"
            );
        }
        // The next /56 is somebody else; IPv4-mapped addresses count as IPv4.
        assert!(throttle.begin_at(ip("2001:db8:0:100::1"), t0).is_ok());
        throttle
            .begin_at(ip("::ffff:10.0.0.9"), t0)
            .unwrap()
            .failed();
        assert!(throttle.begin_at(ip("10.0.0.9"), t0).is_err());
    }

    #[test]
    fn a_full_table_refuses_new_addresses_until_entries_expire() {
        let mut throttle = guard(3);
        throttle.max_tracked = 4;
        let t0 = Instant::now();
        for i in 1..=4 {
            throttle
                .begin_at(ip(&format!("10.0.0.{i}")), t0)
                .unwrap()
                .failed();
        }
        assert!(matches!(
            throttle.begin_at(ip("10.0.0.5"), t0).err(),
            Some(Refusal::Busy(BUSY_WAIT, _))
        ));
        // An IPv6 address needs two entries: refused too.
        assert!(throttle.begin_at(ip("2001:db8::1"), t0).is_err());
        // Addresses already tracked go on.
        assert!(throttle.begin_at(ip("10.0.0.1"), t0).is_ok());
        // Once their minute is over, old entries make room.
        assert!(throttle.begin_at(ip("10.0.0.5"), t0 + WINDOW).is_ok());
    }

    #[test]
    fn a_rate_counts_every_event() {
        let throttle = guard(2);
        throttle.count(ip("10.0.0.1")).unwrap();
        throttle.count(ip("10.0.0.1")).unwrap();
        assert!(matches!(
            throttle.count(ip("10.0.0.1")),
            Err(Refusal::Exhausted(_))
        ));
        throttle.count(ip("10.0.0.2")).unwrap();
    }

    #[test]
    fn zero_or_no_address_turns_the_per_address_guard_off() {
        let throttle = guard(0);
        for _ in 0..100 {
            throttle.begin(ip("::1")).unwrap().failed();
        }
        assert!(throttle.begin(ip("::1")).is_ok());
        let throttle = guard(1);
        throttle.begin(None).unwrap().failed();
        throttle.begin(None).unwrap().failed();
        assert!(throttle.begin(None).is_ok());
    }
}
