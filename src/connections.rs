//! How many connections one address may hold open (`http.maxconnectionsperaddress`).
//!
//! Every connection costs memory while its request head arrives (the HTTP layer buffers up to
//! 128 KiB of an unfinished head for up to 5 s), so thousands of connections trickling heads
//! from one address could hold gigabytes. A connection over its address's share is shut down as
//! soon as it is accepted, before a byte of it is buffered; the total is bounded separately by the
//! server (`http.maxconnections`: beyond it, new connections wait in the listen backlog). IPv6
//! addresses count by /64 (one host's usual allocation); trusted proxies are exempt, since every
//! client behind them shares their address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The open connections per address, shared by all workers.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    per_address: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    closed: Arc<AtomicU64>,
}

/// One admitted connection: its address's count goes down when it is dropped (with the
/// connection's data, when the connection closes).
#[derive(Debug)]
pub struct Admitted {
    /// `None`: a trusted proxy's connection, counted only as closed.
    key: Option<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    closed: Arc<AtomicU64>,
}

impl ConnectionLimiter {
    /// `per_address` 0: no limit.
    pub fn new(per_address: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            per_address: if per_address == 0 {
                usize::MAX
            } else {
                per_address
            },
            open: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// Admits a connection from `addr`, or `None` when its address already holds its share.
    pub fn admit(&self, addr: IpAddr) -> Option<Admitted> {
        let key = address_key(addr);
        let mut open = self.open.lock().expect("connection table");
        let count = open.entry(key).or_insert(0);
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        Some(Admitted {
            key: Some(key),
            open: self.open.clone(),
            closed: self.closed.clone(),
        })
    }

    /// A connection that no share limits (a trusted proxy's).
    pub fn admit_unlimited(&self) -> Admitted {
        Admitted {
            key: None,
            open: self.open.clone(),
            closed: self.closed.clone(),
        }
    }

    /// Gives memory freed by closed connections back to the system now and then: the allocator
    /// keeps it otherwise, so a burst of connections would leave the process large for good.
    pub fn start_trimming(&self) {
        let closed = self.closed.clone();
        actix_web::rt::spawn(async move {
            let mut trimmed_at = 0;
            loop {
                actix_web::rt::time::sleep(Duration::from_secs(5)).await;
                let now = closed.load(Ordering::Relaxed);
                if now - trimmed_at >= TRIM_AFTER_CLOSED {
                    trimmed_at = now;
                    trim();
                }
            }
        });
    }

    /// Addresses holding connections now.
    pub fn addresses(&self) -> usize {
        self.open.lock().expect("connection table").len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        let Some(key) = self.key else { return };
        let mut open = self.open.lock().expect("connection table");
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

/// Closed connections between two trims at least (each held up to a 128 KiB head buffer).
const TRIM_AFTER_CLOSED: u64 = 256;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// What an address counts as, for every per-address limit: IPv4 as itself, IPv6 by its /64 (one
/// host's usual allocation).
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
        v4 => v4,
    }
}

impl ConnectionLimiter {
    /// Closes a connection at once: the HTTP layer reads end-of-file and drops it.
    pub fn refuse(&self, stream: &actix_web::rt::net::TcpStream) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        shut_down(stream);
    }
}

fn shut_down(stream: &actix_web::rt::net::TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor the stream owns; it stays open until the stream is
    // dropped, only its traffic ends.
    unsafe {
        libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_its_share_and_gets_it_back() {
        let limiter = ConnectionLimiter::new(2);
        let a1 = limiter.admit(ip("192.0.2.1")).unwrap();
        let _a2 = limiter.admit(ip("192.0.2.1")).unwrap();
        assert!(limiter.admit(ip("192.0.2.1")).is_none());
        // Another address is not affected.
        let _b = limiter.admit(ip("192.0.2.2")).unwrap();
        drop(a1);
        assert!(limiter.admit(ip("192.0.2.1")).is_some());
        assert_eq!(limiter.addresses(), 2);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let limiter = ConnectionLimiter::new(1);
        let _a = limiter.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(limiter.admit(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limiter.admit(ip("2001:db8:1:3::1")).is_some());
        let _v4 = limiter.admit(ip("198.51.100.1")).unwrap();
        assert!(limiter.admit(ip("::ffff:198.51.100.1")).is_none());
    }

    #[test]
    fn closed_connections_leave_no_entries() {
        let limiter = ConnectionLimiter::new(3);
        let held: Vec<_> = (0..3)
            .map(|_| limiter.admit(ip("203.0.113.5")).unwrap())
            .collect();
        drop(held);
        assert_eq!(limiter.addresses(), 0);
    }
}
