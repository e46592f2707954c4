//! Who holds a lock, and whether that process is still alive.
//!
//! A shard lock (lock.rs) is one word of the region: 0 when free, otherwise
//! the *owner word* of the handle that holds it. A waiter that finds a lock
//! held for a while asks whether its owner is alive; if not, the owner died
//! holding it, and the waiter takes the lock over and repairs the shard.
//! That question must never be answered "dead" for a live owner (two writers
//! in one shard), and must be answered "dead" soon after a real death (or
//! the shard is lost until someone removes the region).
//!
//! ## Owner words
//!
//! Each handle, in each process, claims one of the region's `MAX_OWNERS`
//! owner slots: it takes a non-blocking **open-file-description lock**
//! (`F_OFD_SETLK`) on byte `k` of the region's shm object, through the
//! handle's own descriptor, then bumps the slot's generation in the region
//! (`Header` is followed by `MAX_OWNERS` generation words, see layout.rs).
//! Its owner word is `(k + 1) << 48 | generation`.
//!
//! An owner word `(k, g)` is alive while the slot's generation is still `g`
//! and someone holds the lock on byte `k`: `F_OFD_GETLK` answers that. The
//! kernel drops that lock when the last reference to its open file
//! description goes — when the process dies, however it dies, before its
//! parent can even reap it. So:
//!   - a live owner keeps its byte locked: it is never taken for dead (only
//!     the owner itself could close its descriptor, by destroying the handle,
//!     which it may not do while using it);
//!   - a dead owner's byte is unlocked, or locked by the next claimant of
//!     slot `k`, who bumps the generation right after taking it: either way
//!     it is seen dead (in the moment between the two, alive: a wrong answer
//!     only in the safe direction, corrected at the waiter's next look).
//!
//! No process id is involved: a pid means nothing across PID namespaces
//! (containers sharing the region but not their pids), whereas a lock on the
//! one shm inode is the same lock for everyone who maps it. A *stopped*
//! process (SIGSTOP, a debugger) keeps its descriptors, so it stays alive:
//! lock.rs bounds every wait for that case.
//!
//! The description that holds the byte lock is the handle's own, opened for
//! that alone (through `/proc/self/fd`, or by name, checking the inode, where
//! `/proc` is missing), not the one the region is mapped from: a mapping
//! holds a reference to the description it was made from, and forked
//! children inherit mappings, so a lock on that description would outlive
//! its owner in every child. (Its own one page mapping, below, is made
//! `MADV_DONTFORK`, so children do not inherit it.)
//!
//! ## A descriptor closed behind the library's back
//!
//! A host may close descriptors it did not open (a daemon's `closefrom()`
//! after fork) and reuse the numbers. Two things keep that from letting two
//! writers into one shard:
//!   - the description that takes an owner byte is also mapped (one page,
//!     never touched, `MADV_DONTFORK` so that children do not inherit it;
//!     made at each claim, so in each process): the mapping holds the
//!     description, and so its byte lock, for as long as the handle lives,
//!     whatever happens to the descriptor; others keep seeing it alive;
//!   - before every use of the descriptor (asking about an owner, claiming a
//!     slot, closing it) the handle checks that it still is its own: the
//!     region's file (device and inode, as recorded at open) *and* its own
//!     description (its own byte reads as unlocked through it, which only the
//!     description holding the lock sees). If not, it never trusts an answer
//!     through it: every holder counts as alive (waits end at `timeout_ms`
//!     with an error naming the descriptor), and the number is left to
//!     whoever has it now. A number the kernel hands this process again (to a
//!     new handle) is proof that the old one was closed, and is noted at once.
//!
//! A handle that holds no owner byte in this process yet (a forked worker
//! before its first operation, whose host closed descriptors after fork)
//! simply opens the region again by name for its claim, if the name still
//! refers to the same file; otherwise its operations fail with that error.
//!
//! ## fork()
//!
//! A child inherits its parent's descriptors, and so their open file
//! descriptions and the locks on them. Left alone, the child would keep its
//! parent's owner word alive after the parent died, and share it while
//! both live. So a `pthread_atfork` child handler, installed with the first
//! handle, gives each of the child's shm descriptors an open file description
//! of its own (reopening `/proc/self/fd/N` and `dup3`-ing it over `N`, all
//! async-signal-safe calls), which holds no lock, and moves this process to a
//! new *fork epoch*. A handle whose owner word is from another epoch claims
//! a new one before it takes any lock. Should the reopen fail (no `/proc`),
//! the descriptor is closed rather than shared, and the child's handle
//! opens the region again by name for its claim (same inode only), or
//! reports an error on use instead of sharing its parent's identity.
//! (A child made by a raw `clone` that skips the atfork handlers shares its
//! parent's owner word: a death of either is then seen only once both are
//! gone, so a lock left by one costs `timeout_ms` waits, never corruption.)

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::error::Error;

/// Owner slots in a region: at most this many handles, over all processes,
/// can have one region open at once.
pub const MAX_OWNERS: usize = 4096;
/// Bits of an owner word that hold the slot's generation.
const GENERATION_BITS: u32 = 48;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// Bumped in the child after every `fork()`: owner words claimed in another
/// epoch belong to another process.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Most shm handles one process can have open at once.
const MAX_HANDLES: usize = 1024;
/// The descriptor of each open shm handle of this process, for the fork
/// handler: 0 free, `fd + 1` in use, `LOST` once a child closed it.
static DESCRIPTORS: [AtomicI32; MAX_HANDLES] = [const { AtomicI32::new(0) }; MAX_HANDLES];
const LOST: i32 = -1;
/// In `DESCRIPTORS`: the descriptor was closed by someone else (the number
/// was seen reused, or no longer refers to the region's file).
const REPLACED: i32 = -2;
/// The device and inode of the file each registered descriptor was opened
/// on (0, 0 while not yet recorded), so that the fork handler can leave a
/// reused number alone.
static IDENTITIES: [[AtomicU64; 2]; MAX_HANDLES] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_HANDLES];

static INSTALL_FORK_HANDLER: Once = Once::new();

/// Runs in the child after `fork()`: see the module docs. Only
/// async-signal-safe calls (atomics, open, dup3, close).
extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::AcqRel);
    for (slot, identity) in DESCRIPTORS.iter().zip(&IDENTITIES) {
        let v = slot.load(Ordering::Acquire);
        let recorded = (identity[0].load(Ordering::Acquire), identity[1].load(Ordering::Acquire));
        if v > 0 && recorded != (0, 0) && file_identity(v - 1) != Some(recorded) {
            // Closed behind our back, the number reused: not ours to touch.
            slot.store(REPLACED, Ordering::Release);
            continue;
        }
        if v > 0 && !own_description(v - 1) {
            // SAFETY: our registered descriptor, closed once (the slot says LOST).
            unsafe { libc::close(v - 1) };
            slot.store(LOST, Ordering::Release);
        }
    }
}

/// Gives descriptor `fd` an open file description of its own, for the same
/// file; false if that could not be done.
fn own_description(fd: libc::c_int) -> bool {
    let new = open_again(fd);
    if new < 0 {
        return false;
    }
    // SAFETY: both are descriptors of this process; dup3 closes the old
    // description's `fd` and makes `fd` refer to the new one, atomically.
    let ok = unsafe { libc::dup3(new, fd, libc::O_CLOEXEC) } == fd;
    // SAFETY: `new` is ours, closed once.
    unsafe { libc::close(new) };
    ok
}

/// Opens the file of descriptor `fd` again, as a new open file description
/// (through `/proc/self/fd`, which works for a removed shm object too); a
/// negative number on failure. Async-signal-safe: no allocation.
fn open_again(fd: libc::c_int) -> libc::c_int {
    // "/proc/self/fd/" and the decimal digits of fd, NUL-terminated.
    let mut path = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        path[prefix.len() + i] = digits[len - 1 - i];
    }
    // SAFETY: `path` is NUL-terminated (zero-filled beyond the digits).
    unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) }
}

/// The device and inode of descriptor `fd`'s file. Async-signal-safe.
fn file_identity(fd: libc::c_int) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success; it is read only then.
    (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| {
        // SAFETY: fstat succeeded.
        let st = unsafe { st.assume_init() };
        // dev_t and ino_t are not u64 on every target.
        #[allow(clippy::unnecessary_cast)]
        (st.st_dev as u64, st.st_ino as u64)
    })
}

/// The kernel just gave this process descriptor number `fd`: so any handle
/// still registered with that number had its descriptor closed by someone else.
fn forget_reused(fd: libc::c_int) {
    for slot in &DESCRIPTORS {
        let _ = slot.compare_exchange(fd + 1, REPLACED, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Where `/proc` is missing: opens the shm object `name` again, if it still
/// is the file `mapped` refers to (same device and inode).
pub(super) fn open_by_name(mapped: libc::c_int, name: &str) -> Result<libc::c_int, Error> {
    let failed = |why: String| {
        Error::Io(format!(
            "opening shm region \"{name}\" a second time, for its lock owner (neither /proc/self/fd nor the name would do): {why}"
        ))
    };
    let identity =
        file_identity(mapped).ok_or_else(|| failed(format!("fstat: {}", std::io::Error::last_os_error())))?;
    open_named(name, identity).map_err(failed)
}

/// Opens the shm object `name` again, if it still is the file `identity`
/// (device and inode) names.
fn open_named(name: &str, identity: (u64, u64)) -> Result<libc::c_int, String> {
    let c = std::ffi::CString::new(name).map_err(|_| "the name has a NUL byte".to_owned())?;
    // SAFETY: `c` is a NUL-terminated string.
    let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if file_identity(fd) == Some(identity) {
        return Ok(fd);
    }
    // SAFETY: ours, closed once.
    unsafe { libc::close(fd) };
    Err("the name now refers to another object".into())
}

/// Maps one page of `fd`'s description, not inherited by children: it holds
/// the description open for as long as it is mapped (see the module docs).
fn keep_alive(fd: libc::c_int) -> Result<usize, String> {
    let len = page();
    // SAFETY: a fresh read-only shared mapping of the start of the region's
    // file (larger than a page: header and owner slots); never accessed.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(format!("mapping its description: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the mapping just made.
    if unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: the mapping just made, unmapped once.
        unsafe { libc::munmap(p, len) };
        return Err(format!("madvise(MADV_DONTFORK): {e}"));
    }
    Ok(p as usize)
}

/// The length of a keep-alive mapping.
fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1)
}

/// `F_OFD_SETLK`/`F_OFD_GETLK` on byte `k` of `fd`'s file.
fn byte_lock(fd: libc::c_int, cmd: libc::c_int, k: usize) -> Result<libc::flock, std::io::Error> {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = k as libc::off_t;
    fl.l_len = 1;
    // l_pid must be 0 for the OFD commands.
    // SAFETY: `fl` is a valid flock for the call to read and fill.
    if unsafe { libc::fcntl(fd, cmd, &mut fl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl)
}

/// A handle's identity in its region's locks, per process.
pub struct Owner {
    /// Index of this handle's descriptor in `DESCRIPTORS`.
    slot: usize,
    /// This handle's owner word in epoch `epoch` (0: none yet).
    word: AtomicU64,
    epoch: AtomicU64,
    /// 0, or 1 + the fork epoch of the thread claiming a word right now (a
    /// claim left over from another epoch was made by a thread that does
    /// not exist in this process).
    claiming: AtomicU64,
    /// The region's name, for error messages.
    name: String,
    /// The descriptor number this handle was given last, for error messages.
    number: AtomicI32,
    /// The device and inode of the region's file.
    identity: (u64, u64),
    /// The address of one page of the description holding this handle's
    /// owner byte, mapped to hold it (and its byte lock) even if the
    /// descriptor is closed; it exists in the process of fork epoch
    /// `keepalive_epoch - 1` only (0: none).
    keepalive: AtomicUsize,
    keepalive_epoch: AtomicU64,
}

impl Owner {
    /// Opens a description of the region's file of its own (`mapped` is the
    /// descriptor the region was mapped from) and claims an owner word.
    pub fn new(mapped: &std::os::fd::OwnedFd, name: &str, generations: &[AtomicU64]) -> Result<Owner, Error> {
        use std::os::fd::AsRawFd;
        INSTALL_FORK_HANDLER.call_once(|| {
            // SAFETY: registers a handler that only makes async-signal-safe calls.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
        forget_reused(mapped.as_raw_fd());
        let fd = match open_again(mapped.as_raw_fd()) {
            fd if fd >= 0 => fd,
            _ => open_by_name(mapped.as_raw_fd(), name)?,
        };
        forget_reused(fd);
        let Some(identity) = file_identity(fd) else {
            let e = std::io::Error::last_os_error();
            // SAFETY: we own `fd` and close it once.
            unsafe { libc::close(fd) };
            return Err(Error::Io(format!("opening shm region \"{name}\" for its lock owner: fstat: {e}")));
        };
        let Some(slot) =
            DESCRIPTORS.iter().position(|s| s.compare_exchange(0, fd + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok())
        else {
            // SAFETY: we own `fd` and close it once.
            unsafe { libc::close(fd) };
            return Err(Error::Io(format!(
                "opening shm region \"{name}\": this process already has {MAX_HANDLES} shm limiters open"
            )));
        };
        IDENTITIES[slot][0].store(identity.0, Ordering::Release);
        IDENTITIES[slot][1].store(identity.1, Ordering::Release);
        let owner = Owner {
            slot,
            word: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            claiming: AtomicU64::new(0),
            name: name.to_owned(),
            number: AtomicI32::new(fd),
            identity,
            keepalive: AtomicUsize::new(0),
            keepalive_epoch: AtomicU64::new(0),
        };
        owner.claim(generations)?;
        Ok(owner)
    }

    /// This handle's owner word in this process, claiming one first after a fork.
    #[inline]
    pub fn word(&self, generations: &[AtomicU64]) -> Result<u64, Error> {
        if self.epoch.load(Ordering::Acquire) == FORK_EPOCH.load(Ordering::Relaxed) {
            let word = self.word.load(Ordering::Relaxed);
            if word != 0 {
                return Ok(word);
            }
        }
        self.claim(generations)
    }

    /// The descriptor, once checked to be still this handle's own (see the
    /// module docs); an error if a fork handler had to close it, or if
    /// someone else closed it.
    fn fd(&self) -> Result<libc::c_int, Error> {
        match DESCRIPTORS[self.slot].load(Ordering::Acquire) {
            v if v > 0 && self.is_own(v - 1) => Ok(v - 1),
            v if v > 0 || v == REPLACED => {
                if v > 0 {
                    let _ = DESCRIPTORS[self.slot].compare_exchange(v, REPLACED, Ordering::AcqRel, Ordering::Relaxed);
                }
                Err(Error::Io(self.replaced()))
            }
            _ => Err(Error::Io(format!(
                "shm region \"{}\": after fork() this process could not reopen the region through \
                 /proc/self/fd, so it cannot tell its locks from its parent's; open the limiter in the \
                 child with rl_create instead",
                self.name
            ))),
        }
    }

    /// Why this handle can no longer use its descriptor.
    fn replaced(&self) -> String {
        format!(
            "shm region \"{}\": descriptor {}, which this limiter opened on the region, was closed or now refers \
             to another file (a closefrom() or dup2() over it?), so this process cannot tell whether lock holders \
             are alive, and counts them all as alive; create the limiter after closing descriptors, and leave its \
             descriptors open",
            self.name,
            self.number.load(Ordering::Relaxed)
        )
    }

    /// The descriptor was closed behind our back before this process took an
    /// owner byte: opens the region again by name, if it is still the same file.
    fn reopen(&self) -> Result<libc::c_int, Error> {
        let fd = open_named(&self.name, self.identity)
            .map_err(|why| Error::Io(format!("{}; opening it again by name failed too: {why}", self.replaced())))?;
        forget_reused(fd);
        let v = DESCRIPTORS[self.slot].load(Ordering::Acquire);
        if v > 0 || DESCRIPTORS[self.slot].compare_exchange(v, fd + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            // SAFETY: ours, closed once.
            unsafe { libc::close(fd) };
            return Err(Error::Io(self.replaced()));
        }
        self.number.store(fd, Ordering::Relaxed);
        Ok(fd)
    }

    /// The problem with this handle's descriptor, if it can no longer be used.
    pub fn descriptor_trouble(&self) -> Option<String> {
        match DESCRIPTORS[self.slot].load(Ordering::Acquire) {
            REPLACED => Some(self.replaced()),
            _ => None,
        }
    }

    /// Whether descriptor `fd` is still this handle's: the region's file,
    /// and (once this process holds an owner byte) the very description that
    /// holds it, through which alone that byte reads as unlocked.
    fn is_own(&self, fd: libc::c_int) -> bool {
        if file_identity(fd) != Some(self.identity) {
            return false;
        }
        if self.epoch.load(Ordering::Acquire) != FORK_EPOCH.load(Ordering::Relaxed) {
            return true; // no byte of ours in this process yet (after a fork)
        }
        match (self.word.load(Ordering::Acquire) >> GENERATION_BITS) as usize {
            0 => true,
            k => {
                matches!(byte_lock(fd, libc::F_OFD_GETLK, k - 1), Ok(fl) if fl.l_type == libc::F_UNLCK as libc::c_short)
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn claim(&self, generations: &[AtomicU64]) -> Result<u64, Error> {
        let epoch = FORK_EPOCH.load(Ordering::Acquire);
        // One claim per handle at a time (two would lock the same byte
        // through the same description, and one's release would free both).
        loop {
            let c = self.claiming.load(Ordering::Acquire);
            if c == 0 || c != epoch + 1 {
                if self.claiming.compare_exchange(c, epoch + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    break;
                }
                continue;
            }
            std::thread::yield_now();
        }
        let result = self.claim_now(epoch, generations);
        self.claiming.store(0, Ordering::Release);
        result
    }

    fn claim_now(&self, epoch: u64, generations: &[AtomicU64]) -> Result<u64, Error> {
        if self.epoch.load(Ordering::Acquire) == epoch {
            let word = self.word.load(Ordering::Acquire);
            if word != 0 {
                return Ok(word); // claimed by the thread we waited for
            }
        }
        let fd = match self.fd() {
            Ok(fd) => fd,
            // No owner byte of ours in this process: a new description will do.
            Err(_) if self.keepalive_epoch.load(Ordering::Acquire) != epoch + 1 => self.reopen()?,
            Err(e) => return Err(e),
        };
        if self.keepalive_epoch.load(Ordering::Acquire) != epoch + 1 {
            // (Another epoch's mapping is not in this process: nothing to unmap.)
            let at = keep_alive(fd).map_err(|why| Error::Io(format!("shm region \"{}\": {why}", self.name)))?;
            self.keepalive.store(at, Ordering::Release);
            self.keepalive_epoch.store(epoch + 1, Ordering::Release);
        }
        let n = generations.len();
        for (k, slot_generation) in generations.iter().enumerate() {
            match byte_lock(fd, libc::F_OFD_SETLK, k) {
                Ok(_) => {
                    let mut generation = 0;
                    while generation == 0 {
                        generation = slot_generation.fetch_add(1, Ordering::AcqRel).wrapping_add(1) & GENERATION_MASK;
                    }
                    let word = ((k as u64 + 1) << GENERATION_BITS) | generation;
                    self.word.store(word, Ordering::Release);
                    self.epoch.store(epoch, Ordering::Release);
                    return Ok(word);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => continue,
                Err(e) => {
                    return Err(Error::Io(format!(
                        "shm region \"{}\": locking an owner slot (F_OFD_SETLK): {e}",
                        self.name
                    )))
                }
            }
        }
        Err(Error::Io(format!(
            "shm region \"{}\": all {n} owner slots are taken (at most {n} handles, over all processes, can have a region open at once)",
            self.name
        )))
    }

    /// The descriptor number this handle asks the kernel through (for tests).
    #[cfg(test)]
    pub fn raw_fd(&self) -> Option<libc::c_int> {
        self.fd().ok()
    }

    /// Whether the owner word `word`, found in a lock, belongs to a live
    /// handle. In doubt (an error asking the kernel), alive: a wrong "alive"
    /// costs a bounded wait, a wrong "dead" would let two writers in.
    pub fn alive(&self, word: u64, generations: &[AtomicU64]) -> bool {
        if self.epoch.load(Ordering::Acquire) == FORK_EPOCH.load(Ordering::Relaxed)
            && word == self.word.load(Ordering::Acquire)
        {
            return true; // another thread of this handle
        }
        let k = (word >> GENERATION_BITS) as usize;
        if k == 0 || k > generations.len() {
            return false; // not an owner word at all: nobody can be holding it
        }
        let k = k - 1;
        if generations[k].load(Ordering::Acquire) & GENERATION_MASK != word & GENERATION_MASK {
            return false; // the slot was claimed again since: its owner let go
        }
        let Ok(fd) = self.fd() else { return true };
        match byte_lock(fd, libc::F_OFD_GETLK, k) {
            Ok(fl) => fl.l_type != libc::F_UNLCK as libc::c_short,
            Err(_) => true,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Unregister before closing, so that a fork from then on leaves the
        // descriptor alone; close it only if it still is ours.
        let v = DESCRIPTORS[self.slot].load(Ordering::Acquire);
        let own = v > 0 && self.is_own(v - 1);
        IDENTITIES[self.slot][0].store(0, Ordering::Release);
        IDENTITIES[self.slot][1].store(0, Ordering::Release);
        DESCRIPTORS[self.slot].store(0, Ordering::Release);
        if own {
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(v - 1) };
        }
        if self.keepalive_epoch.load(Ordering::Acquire) == FORK_EPOCH.load(Ordering::Acquire) + 1 {
            // SAFETY: the mapping made by this process's claim, unmapped
            // once; with it goes the last reference to our description, and
            // so our byte lock.
            unsafe { libc::munmap(self.keepalive.load(Ordering::Acquire) as *mut libc::c_void, page()) };
        }
    }
}
