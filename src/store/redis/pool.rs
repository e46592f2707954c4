//! Connections to Redis, pooled per process.
//!
//! A check takes an idle connection (or makes one), runs its one command and
//! gives it back; any number of threads may do so at once. Connections are
//! made lazily, by the first check that finds no idle one, so creating a
//! limiter never touches the network.
//!
//! **fork().** A socket must never be used by two processes: their requests
//! and replies would interleave. Each connection remembers the pid that made
//! it; a process that finds connections made by another pid (it is a child
//! of a fork) drops them without using them and makes its own. Dropping only
//! closes the child's copy of the descriptor: no command is sent and the
//! socket is not shut down, so the parent's connection is untouched. (As with
//! any fork of a multithreaded process, fork while no other thread is inside
//! an rl_* call: a lock held at that moment would stay held in the child.)
//!
//! **Failures.** A connection that failed (timeout, reset) is dropped, and so
//! is every idle connection made before the failure (the `generation`
//! counter): after Redis restarts they are all dead, and finding that out one
//! check at a time would cost a timeout each.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Idle connections kept at most; more are closed when given back.
const MAX_IDLE: usize = 64;

/// A connection and where it came from.
pub struct Pooled<C> {
    pub conn: C,
    pid: u32,
    generation: u64,
}

pub struct Pool<C> {
    idle: Mutex<Vec<Pooled<C>>>,
    generation: AtomicU64,
}

impl<C> Pool<C> {
    pub fn new() -> Pool<C> {
        Pool { idle: Mutex::new(Vec::new()), generation: AtomicU64::new(0) }
    }

    /// An idle connection made by this process since the last failure, if any.
    pub fn take(&self) -> Option<Pooled<C>> {
        let pid = std::process::id();
        let generation = self.generation.load(Ordering::Acquire);
        let mut idle = self.idle.lock();
        if idle.last().is_some_and(|c| c.pid != pid) {
            // A child of fork(): every idle connection is the parent's.
            let inherited = std::mem::take(&mut *idle);
            drop(idle);
            drop(inherited);
            return None;
        }
        while let Some(c) = idle.pop() {
            if c.generation == generation {
                return Some(c);
            }
        }
        None
    }

    /// Wraps a connection this process just made.
    pub fn wrap(&self, conn: C) -> Pooled<C> {
        Pooled { conn, pid: std::process::id(), generation: self.generation.load(Ordering::Acquire) }
    }

    /// Gives back a connection that worked. (Its pid is not asked again: the
    /// thread giving it back is the one that took or made it in this call,
    /// and a fork copies only the thread that forks, which is not inside
    /// the call. `take` is where a child finds its parent's connections.
    /// `getpid` is a system call, one fewer per check.)
    pub fn put(&self, c: Pooled<C>) {
        if c.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// A connection failed: forget it and every connection made before it.
    pub fn fail(&self, c: Pooled<C>) {
        drop(c);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let stale = std::mem::take(&mut *self.idle.lock());
        drop(stale);
    }

    /// Idle connections (for tests).
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_put_and_fail() {
        let pool: Pool<u32> = Pool::new();
        assert!(pool.take().is_none());
        let a = pool.wrap(1);
        let b = pool.wrap(2);
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.idle(), 2);
        let c = pool.take().unwrap();
        assert_eq!(c.conn, 2);
        pool.fail(c);
        assert_eq!(pool.idle(), 0);
        // A connection made before the failure is not taken back.
        let old = Pooled { conn: 9, pid: std::process::id(), generation: 0 };
        pool.put(old);
        assert_eq!(pool.idle(), 0);
        // Nor one made by another process.
        pool.idle.lock().push(Pooled { conn: 7, pid: std::process::id().wrapping_add(1), generation: 1 });
        assert!(pool.take().is_none());
        assert_eq!(pool.idle(), 0);
    }
}
