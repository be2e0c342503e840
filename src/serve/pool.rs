//! A bounded pool of connections: at most `size` exist at once, idle ones are lent out again,
//! and a request that finds none free waits — until its deadline, then it is told so.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::deadline::Deadline;

pub struct Pool<T> {
    /// For metrics and the "exhausted" message.
    pub name: &'static str,
    size: usize,
    state: Mutex<State<T>>,
    freed: Condvar,
}

struct State<T> {
    /// With the time each was handed back.
    idle: Vec<(T, Instant)>,
    /// Lent out, or reserved for a connection being opened.
    lent: usize,
    /// Requests blocked in [`Pool::lease`]: a lease handed back wakes one only if there is one
    /// (on Linux every notify is a futex syscall, even with nobody to wake).
    waiting: usize,
}

/// Every connection of the pool is lent out and none came back before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("busy: all {size} of pool {name} in use until the deadline")]
pub struct Exhausted {
    name: &'static str,
    size: usize,
}

/// A connection taken from the pool, or the right to open one (`item` empty). Dropped, it goes
/// back (unless [`Lease::discard`]ed); an empty lease frees its place.
pub struct Lease<'p, T> {
    pool: &'p Pool<T>,
    item: Option<T>,
    /// How long the connection lay unused before this lease; `None` for a new one.
    pub idle_for: Option<Duration>,
}

/// Connections in use and idle, for `/metrics`.
pub struct Usage {
    pub size: usize,
    pub lent: usize,
    pub idle: usize,
}

impl<T> Pool<T> {
    pub fn new(name: &'static str, size: usize) -> Self {
        Pool {
            name,
            size,
            state: Mutex::new(State {
                idle: Vec::new(),
                lent: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves the counts consistent (no code between).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned idle connection, or a free place to open one, waiting for
    /// either until `deadline`.
    pub fn lease(&self, deadline: &Deadline) -> Result<Lease<'_, T>, Exhausted> {
        let mut state = self.state();
        loop {
            if let Some((item, since)) = state.idle.pop() {
                state.lent += 1;
                return Ok(Lease {
                    pool: self,
                    item: Some(item),
                    idle_for: Some(since.elapsed()),
                });
            }
            if state.lent < self.size {
                state.lent += 1;
                return Ok(Lease {
                    pool: self,
                    item: None,
                    idle_for: None,
                });
            }
            let Some(left) = deadline.cap(Duration::MAX) else {
                return Err(Exhausted {
                    name: self.name,
                    size: self.size,
                });
            };
            state.waiting += 1;
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiting -= 1;
        }
    }

    pub fn usage(&self) -> Usage {
        let state = self.state();
        Usage {
            size: self.size,
            lent: state.lent,
            idle: state.idle.len(),
        }
    }
}

impl<T> Lease<'_, T> {
    pub fn get(&mut self) -> Option<&mut T> {
        self.item.as_mut()
    }

    /// Puts a (new) connection into the lease.
    pub fn fill(&mut self, item: T) -> &mut T {
        self.idle_for = None;
        self.item.insert(item)
    }

    /// The connection failed: it is closed instead of going back.
    pub fn discard(&mut self) {
        self.item = None;
        self.idle_for = None;
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        let mut state = self.pool.state();
        state.lent -= 1;
        if let Some(item) = self.item.take() {
            state.idle.push((item, Instant::now()));
        }
        let someone_waits = state.waiting > 0;
        drop(state);
        if someone_waits {
            self.pool.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_idle_first_then_new_then_waits_until_the_deadline() {
        let pool = Pool::new("test", 1);
        let deadline = Deadline::after(Duration::from_millis(50));
        let mut first = pool.lease(&deadline).unwrap();
        assert!(first.get().is_none());
        first.fill(7);
        let err = pool.lease(&deadline).err().expect("pool of one is busy");
        assert_eq!(
            err.to_string(),
            "busy: all 1 of pool test in use until the deadline"
        );
        drop(first);
        let mut again = pool.lease(&deadline).unwrap();
        assert_eq!(again.get(), Some(&mut 7));
        assert!(again.idle_for.is_some());
        again.discard();
        drop(again);
        assert_eq!(pool.usage().idle, 0);
        assert_eq!(pool.usage().lent, 0);
    }

    #[test]
    fn a_lease_handed_back_wakes_a_request_waiting_for_one() {
        let pool = Pool::new("test", 1);
        let mut first = pool
            .lease(&Deadline::after(Duration::from_secs(1)))
            .unwrap();
        first.fill(7);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                // Long enough that only a wake-up, not the deadline, ends the wait.
                let mut lease = pool
                    .lease(&Deadline::after(Duration::from_secs(60)))
                    .unwrap();
                lease.get().copied()
            });
            while pool.state().waiting == 0 {
                std::thread::yield_now();
            }
            drop(first);
            assert_eq!(waiter.join().unwrap(), Some(7));
        });
        assert_eq!(pool.state().waiting, 0);
    }
}
