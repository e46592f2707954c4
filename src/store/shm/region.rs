//! Creating, opening, checking and mapping a region: `shm_open`, `ftruncate`,
//! `posix_fallocate`, `mmap`, `munmap`, over `libc` directly.
//!
//! Many workers may start at once. Each first tries to create the object with
//! `O_CREAT | O_EXCL`: exactly one succeeds, sizes it, reserves its memory,
//! writes the header and the shards, and last sets `ready` (a release
//! store). The others open the existing object and wait, at most
//! `READY_WAIT`, for `ready` (acquire loads), then check it from its size up
//! before trusting a byte: size, magic, layout version, configuration,
//! geometry. Nothing in a region is ever used as a pointer.
//!
//! An attach (`attach`: no configuration of its own) opens only an existing
//! object, waits for it the same way, reads the configuration text stored in
//! it (bounds checked), has the caller turn it into a layout, and then checks
//! the region against that layout exactly as any opener does.
//!
//! Dropping a `Region` unmaps it; it never unlinks the object (see
//! `rl_shm_unlink`): the others may still be using it. The descriptor the
//! region was mapped from is handed to the caller, who opens the region's
//! file again from it for the handle's owner (owner.rs), then closes it.

use std::ffi::{CStr, CString};
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::{addr_of, addr_of_mut, NonNull};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::layout::{
    Header, Layout, CONFIG_TEXT_MAX, HEADER_BYTES, LAYOUT_VERSION, MAGIC, READY, SHARD_HEADER_BYTES, STRIPES,
};
use super::owner::MAX_OWNERS;
use crate::error::Error;

/// Most bytes of another region's configuration text a message shows (a
/// canonical text is shorter; only a damaged one is cut).
const SHOWN_TEXT_MAX: usize = 512;

/// Longest an opener waits for the creator to finish initialising.
pub const READY_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
thread_local! {
    /// Tests: how long a region creation on this thread pauses, twice: with
    /// the object still empty (before `ftruncate`), and sized and mapped but
    /// not yet initialised (before the header is written).
    pub static CREATE_PAUSE: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// A mapping of a whole region.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is an address range mapped MAP_SHARED; what lives in it is
// accessed through atomics or under the region's process-shared locks, from
// any thread of any process. The mapping itself stays valid until drop.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub fn header(&self) -> *mut Header {
        self.base.as_ptr().cast()
    }

    /// The `len` values of `T` at byte `offset` of the mapping.
    ///
    /// # Safety
    ///
    /// They must lie inside the mapping, aligned for `T`; `T` must be made
    /// of atomics only (any bytes a valid value, shared by any process);
    /// and the view must not be used after this `Region` is dropped.
    pub unsafe fn view<T>(&self, offset: usize, len: usize) -> InRegion<T> {
        debug_assert!(offset + len * std::mem::size_of::<T>() <= self.len);
        // SAFETY: inside the mapping (the caller's promise), so not null.
        InRegion { at: unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset).cast()) }, len }
    }

    /// Asks the CPU to start loading the cache line holding byte `offset`
    /// of the mapping, so that a read that needs it soon, behind a lock,
    /// finds it on its way. Reads and changes nothing; a no-op for an
    /// offset past the mapping, and on CPUs other than x86_64.
    #[inline(always)]
    pub fn prefetch(&self, offset: usize) {
        if offset >= self.len {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `offset` lies inside the mapping, which lives as long as
        // `self`; and a prefetch is only a hint: it cannot fault, and it
        // reads or writes nothing the program sees. (SSE, the intrinsic's
        // feature, is part of every x86_64 CPU.)
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.base.as_ptr().add(offset).cast::<i8>());
        }
    }
}

/// A slice of the region (the over-limit cache's entries, the tally's
/// stripes), made by `Region::view`.
pub struct InRegion<T> {
    at: NonNull<T>,
    len: usize,
}

// SAFETY: a view of atomics in a MAP_SHARED mapping (`Region::view`'s
// contract): usable from any thread, as the region itself is.
unsafe impl<T: Sync> Send for InRegion<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for InRegion<T> {}

impl<T> std::ops::Deref for InRegion<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `len` aligned values of atomics inside a mapping that
        // outlives the view (`Region::view`'s contract); only shared
        // references are ever made to them.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Closes a file descriptor when dropped.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

impl Fd {
    fn into_owned(self) -> OwnedFd {
        let fd = self.0;
        std::mem::forget(self);
        // SAFETY: a descriptor we own (forgotten above, so closed only by the OwnedFd).
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

fn map(fd: &Fd, len: usize) -> Result<Region, std::io::Error> {
    // SAFETY: a fresh shared mapping of `len` bytes of an open descriptor;
    // the kernel picks the address.
    let p =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.0, 0) };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    Ok(Region { base: NonNull::new(p.cast()).expect("mmap does not return NULL on success"), len })
}

/// Checks a shm name the way the configuration parser does.
pub fn c_name(name: &str) -> Result<CString, Error> {
    let ok = name.len() >= 2
        && name.len() <= 200
        && name.starts_with('/')
        && !name[1..].contains('/')
        && name.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(Error::Invalid(format!(
            "bad shm name {}: expected a POSIX shm name like /api-limits (one leading '/', no other '/', at most 200 characters)",
            crate::error::quoted(name)
        )));
    }
    Ok(CString::new(name).expect("checked: no NUL"))
}

/// Removes the object `name`. Processes that have it mapped keep using it.
pub fn unlink(name: &CStr) -> Result<(), Error> {
    let text = name.to_str().map_err(|_| Error::Invalid("the shm name is not valid UTF-8".into()))?;
    let c = c_name(text)?;
    // SAFETY: `c` is a NUL-terminated string.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        let e = errno();
        return Err(Error::Io(format!("removing shm region \"{text}\": {e}")));
    }
    Ok(())
}

/// What the creator writes into a new region.
pub struct Init {
    pub seed: [u64; 2],
    pub epoch_offset_ns: u64,
}

/// Opens the region `name` for `layout`, creating and initialising it if it
/// does not exist yet (with permissions `mode`). Returns the mapping and the
/// descriptor it was opened with.
pub fn create_or_open(name: &str, mode: u32, layout: &Layout, init: &Init) -> Result<(Region, OwnedFd), Error> {
    let c = c_name(name)?;
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: `c` is a NUL-terminated string.
        let fd = unsafe { libc::shm_open(c.as_ptr(), flags, mode as libc::mode_t) };
        if fd >= 0 {
            return create(Fd(fd), &c, name, mode, layout, init);
        }
        let e = errno();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::Io(format!("creating shm region \"{name}\": {e}")));
        }
        // SAFETY: as above.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if fd >= 0 {
            return open_existing(Fd(fd), name, layout, deadline);
        }
        let e = errno();
        // Removed between our two calls (a creator that failed): try again.
        if e.raw_os_error() != Some(libc::ENOENT) || Instant::now() > deadline {
            return Err(Error::Io(format!("opening shm region \"{name}\": {e}")));
        }
    }
}

fn create(fd: Fd, c: &CStr, name: &str, mode: u32, layout: &Layout, init: &Init) -> Result<(Region, OwnedFd), Error> {
    let result = (|| {
        let len = layout.region_bytes;
        // The umask must not narrow the permissions the caller asked for.
        // SAFETY: a plain call on a descriptor we own.
        if unsafe { libc::fchmod(fd.0, mode as libc::mode_t) } != 0 {
            return Err(format!("setting mode {mode:o}: {}", errno()));
        }
        #[cfg(test)]
        std::thread::sleep(CREATE_PAUSE.get());
        // SAFETY: a plain call on a descriptor we own (len fits off_t: Layout checked).
        if unsafe { libc::ftruncate(fd.0, len as libc::off_t) } != 0 {
            return Err(format!("sizing it to {len} bytes: {}", errno()));
        }
        // Reserve the memory now: a tmpfs that runs out later would kill a
        // worker with SIGBUS on first touch instead.
        let rc = loop {
            // SAFETY: a plain call on a descriptor we own.
            let rc = unsafe { libc::posix_fallocate(fd.0, 0, len as libc::off_t) };
            if rc != libc::EINTR {
                break rc;
            }
        };
        if rc != 0 && rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
            return Err(format!(
                "reserving {len} bytes (capacity={}): {}",
                layout.capacity,
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        let region = map(&fd, len).map_err(|e| format!("mapping {len} bytes: {e}"))?;
        #[cfg(test)]
        std::thread::sleep(CREATE_PAUSE.get());
        initialise(&region, layout, init);
        Ok(region)
    })();
    match result {
        Ok(region) => Ok((region, fd.into_owned())),
        Err(why) => {
            // SAFETY: `c` is a NUL-terminated string; the object is ours and unusable.
            unsafe { libc::shm_unlink(c.as_ptr()) };
            Err(Error::Io(format!("creating shm region \"{name}\": {why}")))
        }
    }
}

/// Writes a new region's header; `ready` last. Everything else starts as
/// the kernel's zeros: free locks, generation 0 owner slots, empty shards
/// and slots.
fn initialise(region: &Region, layout: &Layout, init: &Init) {
    let h = region.header();
    let g = &layout.geometry;
    // SAFETY: the region is freshly created, sized and zero-filled by the
    // kernel, and nobody else trusts it before `ready`; every pointer below is
    // inside the mapping (the layout computed its size) and aligned (the
    // header starts the page-aligned mapping).
    unsafe {
        addr_of_mut!((*h).region_bytes).write(layout.region_bytes as u64);
        addr_of_mut!((*h).config_hash).write(layout.config_hash);
        addr_of_mut!((*h).seed).write(init.seed);
        addr_of_mut!((*h).epoch_offset_ns).write(init.epoch_offset_ns);
        addr_of_mut!((*h).capacity).write(layout.capacity);
        addr_of_mut!((*h).shards).write(g.shards as u64);
        addr_of_mut!((*h).sets).write(g.sets as u64);
        addr_of_mut!((*h).stride).write(g.stride as u64);
        addr_of_mut!((*h).owners).write(MAX_OWNERS as u64);
        addr_of_mut!((*h).shard_headers_offset).write(layout.shard_headers_offset as u64);
        addr_of_mut!((*h).shard_header_bytes).write(SHARD_HEADER_BYTES as u64);
        addr_of_mut!((*h).slots_offset).write(layout.slots_offset as u64);
        addr_of_mut!((*h).shard_words).write(g.shard_words() as u64);
        addr_of_mut!((*h).top).write(layout.top.map_or(0, |t| t.entries() as u64));
        addr_of_mut!((*h).top_offset).write(layout.top_offset as u64);
        addr_of_mut!((*h).denials_offset).write(layout.denials_offset as u64);
        addr_of_mut!((*h).denials_per_shard).write(layout.denials_per_shard as u64);
        addr_of_mut!((*h).tally_offset).write(layout.tally_offset as u64);
        addr_of_mut!((*h).stripes).write(STRIPES as u64);
        let text = layout.config_text.as_bytes();
        addr_of_mut!((*h).config_text_offset).write(layout.config_text_offset as u64);
        addr_of_mut!((*h).config_text_len).write(text.len() as u64);
        // The text area lies between the header and the owner slots (layout.rs).
        std::ptr::copy_nonoverlapping(text.as_ptr(), region.base().add(layout.config_text_offset), text.len());
        (*h).version.store(LAYOUT_VERSION, Ordering::Relaxed);
        (*h).magic.store(MAGIC, Ordering::Release);
        (*h).ready.store(READY, Ordering::Release);
    }
}

fn remove_hint(name: &str) -> String {
    format!("remove it with rl_shm_unlink(\"{name}\") (or rm /dev/shm/{}) if no process uses it", &name[1..])
}

fn object_size(fd: &Fd, name: &str) -> Result<usize, Error> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success.
    if unsafe { libc::fstat(fd.0, st.as_mut_ptr()) } != 0 {
        return Err(Error::Io(format!("fstat of shm region \"{name}\": {}", errno())));
    }
    // SAFETY: fstat succeeded.
    let size = unsafe { st.assume_init() }.st_size;
    Ok(usize::try_from(size).unwrap_or(0))
}

/// Waits for an existing region to be ready, then checks it against `layout`.
fn open_existing(fd: Fd, name: &str, layout: &Layout, deadline: Instant) -> Result<(Region, OwnedFd), Error> {
    let (region, size) = wait_ready(&fd, name, deadline)?;
    check(&region, size, name, layout)?;
    Ok((region, fd.into_owned()))
}

/// Maps an existing object once it is a ready region of this layout
/// version (waiting for its creator until `deadline`); returns the mapping
/// and the object's size.
fn wait_ready(fd: &Fd, name: &str, deadline: Instant) -> Result<(Region, usize), Error> {
    let pause = || std::thread::sleep(Duration::from_millis(1));
    // Its size: 0 for a moment while its creator is between shm_open and
    // ftruncate; a creator sizes it once, in one call.
    let size = loop {
        let size = object_size(fd, name)?;
        if size > 0 {
            break size;
        }
        if Instant::now() > deadline {
            return Err(Error::Incompatible(format!(
                "shm region \"{name}\" is empty (0 bytes) after waiting {} s: it is not a libratelimit region, or its creator died before sizing it; {}",
                READY_WAIT.as_secs(),
                remove_hint(name)
            )));
        }
        pause();
    };
    if size < HEADER_BYTES {
        return Err(Error::Incompatible(format!(
            "shm region \"{name}\" is too small to be a libratelimit region ({size} bytes, the header alone is {HEADER_BYTES}); {}",
            remove_hint(name)
        )));
    }
    let region = map(fd, size).map_err(|e| Error::Io(format!("mapping shm region \"{name}\" ({size} bytes): {e}")))?;
    let h = region.header();
    loop {
        // SAFETY: the header is inside the mapping (size >= HEADER_BYTES) and
        // aligned; these fields are only ever accessed atomically.
        let (magic, version, ready) = unsafe {
            (
                (*h).magic.load(Ordering::Acquire),
                (*h).version.load(Ordering::Relaxed),
                (*h).ready.load(Ordering::Acquire),
            )
        };
        if magic != 0 && magic != MAGIC {
            return Err(Error::Incompatible(format!(
                "shm region \"{name}\" is not a libratelimit region (bad magic 0x{magic:016x}); {}",
                remove_hint(name)
            )));
        }
        if magic == MAGIC && version != LAYOUT_VERSION {
            return Err(Error::Incompatible(format!(
                "shm region \"{name}\" has layout version {version}, this library uses version {LAYOUT_VERSION}: \
                 all processes sharing a region must use the same libratelimit; {}",
                remove_hint(name)
            )));
        }
        if magic == MAGIC && ready == READY {
            return Ok((region, size));
        }
        if Instant::now() > deadline {
            return Err(Error::Io(format!(
                "shm region \"{name}\" was not ready after waiting {} s: its creator may have died while setting it up; {}",
                READY_WAIT.as_secs(),
                remove_hint(name)
            )));
        }
        pause();
    }
}

/// Opens the existing region `name` without knowing its configuration:
/// `layout_for` makes the layout from the configuration text stored in the
/// region (or refuses it), and the region is then checked against that
/// layout like any other. Returns the mapping, the descriptor and the
/// permission bits of the object. No region by that name is RL_ERR_IO.
pub fn attach(
    name: &str,
    layout_for: impl FnOnce(&str) -> Result<Layout, Error>,
) -> Result<(Region, OwnedFd, Layout, u32), Error> {
    let c = c_name(name)?;
    // SAFETY: `c` is a NUL-terminated string.
    let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        let e = errno();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Err(Error::Io(format!(
                "no shm region \"{name}\" to attach to ({e}): without rate=, backend=shm name=... opens an \
                 existing region and uses the configuration stored in it; create it first (with rate=), or check \
                 the name"
            )));
        }
        return Err(Error::Io(format!("opening shm region \"{name}\": {e}")));
    }
    let fd = Fd(fd);
    let (region, size) = wait_ready(&fd, name, Instant::now() + READY_WAIT)?;
    let text = stored_text(&region, size).map_err(|why| {
        Error::Incompatible(format!("shm region \"{name}\" {why}: it was damaged; {}", remove_hint(name)))
    })?;
    let layout = layout_for(&text)?;
    check(&region, size, name, &layout)?;
    let mode = object_mode(&fd, name)?;
    Ok((region, fd.into_owned(), layout, mode))
}

/// The permission bits of an open object.
fn object_mode(fd: &Fd, name: &str) -> Result<u32, Error> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success.
    if unsafe { libc::fstat(fd.0, st.as_mut_ptr()) } != 0 {
        return Err(Error::Io(format!("fstat of shm region \"{name}\": {}", errno())));
    }
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() }.st_mode & 0o777)
}

/// The configuration text of a ready region of `size` bytes, or why it
/// cannot be one: its offset and length are checked against the object's
/// size and the header's `region_bytes` before a byte is read, and it must
/// be printable ASCII, as every text the library writes is.
fn stored_text(region: &Region, size: usize) -> Result<String, String> {
    let h = region.header();
    // SAFETY: the header is inside the mapping; `ready` was seen set with an
    // acquire load, so the creator's writes (never written again) are
    // visible. Plain integer reads: any bit pattern is a value.
    let (offset, len, region_bytes) = unsafe {
        (
            addr_of!((*h).config_text_offset).read(),
            addr_of!((*h).config_text_len).read(),
            addr_of!((*h).region_bytes).read(),
        )
    };
    let end = offset.saturating_add(len);
    if offset < HEADER_BYTES as u64 || len > CONFIG_TEXT_MAX as u64 || end > size as u64 || end > region_bytes {
        return Err(format!("has its configuration text out of bounds ({len} bytes at offset {offset} of {size})"));
    }
    let mut bytes = vec![0u8; len as usize];
    // SAFETY: `offset + len <= size` (checked above, no overflow): the bytes
    // lie inside the mapping; they are plain bytes, and `bytes` is a buffer
    // of its own of exactly `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(region.base().add(offset as usize), bytes.as_mut_ptr(), bytes.len()) };
    if !bytes.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        return Err("has a configuration text that is not printable ASCII".into());
    }
    Ok(String::from_utf8(bytes).expect("checked: ASCII"))
}

/// Checks a ready region's header against what this process computed.
fn check(region: &Region, size: usize, name: &str, layout: &Layout) -> Result<(), Error> {
    let h = region.header();
    // SAFETY: the header is inside the mapping; `ready` was seen set with an
    // acquire load, so the creator's writes of these fields (never written
    // again) are visible. Plain integer reads: any bit pattern is a value.
    let (hash, fields) = unsafe {
        (
            addr_of!((*h).config_hash).read(),
            [
                addr_of!((*h).region_bytes).read(),
                addr_of!((*h).capacity).read(),
                addr_of!((*h).shards).read(),
                addr_of!((*h).sets).read(),
                addr_of!((*h).stride).read(),
                addr_of!((*h).owners).read(),
                addr_of!((*h).shard_headers_offset).read(),
                addr_of!((*h).shard_header_bytes).read(),
                addr_of!((*h).slots_offset).read(),
                addr_of!((*h).shard_words).read(),
                addr_of!((*h).top).read(),
                addr_of!((*h).top_offset).read(),
                addr_of!((*h).denials_offset).read(),
                addr_of!((*h).denials_per_shard).read(),
                addr_of!((*h).tally_offset).read(),
                addr_of!((*h).stripes).read(),
                addr_of!((*h).config_text_offset).read(),
                addr_of!((*h).config_text_len).read(),
            ],
        )
    };
    let text = stored_text(region, size);
    if hash != layout.config_hash && text.as_deref() == Ok(layout.config_text.as_str()) {
        // Only a damaged header (or one rewritten by hand) pairs a text with another hash.
        return Err(Error::Incompatible(format!(
            "shm region \"{name}\" has a configuration hash that does not match its text \"{}\": it was damaged; {}",
            layout.config_text,
            remove_hint(name)
        )));
    }
    if hash != layout.config_hash || text.as_deref() != Ok(layout.config_text.as_str()) {
        let theirs = match &text {
            // Canonical texts are far shorter; a damaged one is cut.
            Ok(t) if t.len() > SHOWN_TEXT_MAX => format!("holds limits for \"{}...\"", &t[..SHOWN_TEXT_MAX]),
            Ok(t) => format!("holds limits for \"{t}\""),
            Err(why) => why.clone(),
        };
        return Err(Error::Incompatible(format!(
            "shm region \"{name}\" {theirs}, not \"{}\": every process sharing a region must configure the same \
             rate, algorithm, burst, capacity and top (or attach with backend=shm name={name} and no rate=); use \
             another name= or {}",
            layout.config_text,
            remove_hint(name)
        )));
    }
    let g = &layout.geometry;
    let ours = [
        layout.region_bytes as u64,
        layout.capacity,
        g.shards as u64,
        g.sets as u64,
        g.stride as u64,
        MAX_OWNERS as u64,
        layout.shard_headers_offset as u64,
        SHARD_HEADER_BYTES as u64,
        layout.slots_offset as u64,
        g.shard_words() as u64,
        layout.top.map_or(0, |t| t.entries() as u64),
        layout.top_offset as u64,
        layout.denials_offset as u64,
        layout.denials_per_shard as u64,
        layout.tally_offset as u64,
        STRIPES as u64,
        layout.config_text_offset as u64,
        layout.config_text.len() as u64,
    ];
    if fields != ours || size != layout.region_bytes {
        return Err(Error::Incompatible(format!(
            "shm region \"{name}\" has the right configuration but another geometry or size ({size} bytes, \
             expected {}): it was made by another build or damaged; {}",
            layout.region_bytes,
            remove_hint(name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::limiter::limits_in_ns;

    fn layout(config: &str) -> Layout {
        let c = Config::parse(config).unwrap();
        Layout::new(&limits_in_ns(&c), c.capacity, c.top).unwrap()
    }

    /// Eight rates of long numbers, the last period `last` ms: the canonical
    /// texts of two of them differ only at their end, past the first 255
    /// bytes (all that a region used to keep of it).
    fn long_config(last: u64) -> String {
        let rate = "100000000000000000/86399999997ms,";
        format!("rate={}100000000000000000/{last}ms capacity=1000", rate.repeat(7))
    }

    fn region_name(tag: &str) -> (String, CString) {
        // SAFETY: getpid has no preconditions.
        let name = format!("/rl-rust-region-{}-{tag}", unsafe { libc::getpid() });
        let c = CString::new(name.as_str()).unwrap();
        let _ = unlink(&c);
        (name, c)
    }

    #[test]
    fn configurations_that_differ_anywhere_are_incompatible() {
        let (a, b) = (layout(&long_config(86_399_999_999)), layout(&long_config(86_399_999_998)));
        assert!(a.config_text.len() > 300 && a.config_text.len() == b.config_text.len());
        assert!(
            a.config_text.ends_with("86399999999ms algorithm=token_bucket capacity=1000 top=32"),
            "{}",
            a.config_text
        );
        assert_ne!(a.config_hash, b.config_hash);
        assert_eq!(a.geometry, b.geometry);

        let (name, c) = region_name("long");
        let init = Init { seed: [1, 2], epoch_offset_ns: 0 };
        let first = create_or_open(&name, 0o600, &a, &init).expect("created");
        let second = create_or_open(&name, 0o600, &b, &init);
        let same = create_or_open(&name, 0o600, &a, &init);
        // An attach reads the whole text back, and its layout is the creator's.
        let attached = attach(&name, |text| {
            assert_eq!(text, a.config_text);
            Ok(layout(text))
        });
        unlink(&c).unwrap();
        drop(first);
        match second {
            Err(Error::Incompatible(why)) => {
                assert!(why.contains(&format!("holds limits for \"{}\"", a.config_text)), "{why}");
                assert!(why.contains(&format!("not \"{}\"", b.config_text)), "{why}");
            }
            Err(e) => panic!("another error: {e:?}"),
            Ok(_) => panic!("a region made for another configuration was accepted"),
        }
        assert!(same.is_ok(), "the same configuration opens the region");
        let (_, _, attached, mode) = attached.expect("attached");
        assert_eq!((attached, mode), (a, 0o600));
    }

    /// A header whose text offset or length points anywhere is refused before
    /// a byte of the text is read, by an opener and by an attach alike.
    #[test]
    fn a_damaged_text_offset_or_length_is_refused() {
        let a = layout("rate=5/s capacity=100");
        let (name, c) = region_name("text");
        let init = Init { seed: [1, 2], epoch_offset_ns: 0 };
        let len = a.config_text.len() as u64;
        let size = a.region_bytes as u64;
        for (offset, length, why) in [
            (HEADER_BYTES as u64, len, None),
            (u64::MAX, len, Some("out of bounds")),
            (u64::MAX - 2, 5, Some("out of bounds")),
            (size - 2, 5, Some("out of bounds")),
            (size, 0, Some("holds limits for \"\"")),
            (0, len, Some("out of bounds")),
            (HEADER_BYTES as u64, u64::MAX, Some("out of bounds")),
            (HEADER_BYTES as u64, CONFIG_TEXT_MAX as u64 + 1, Some("out of bounds")),
            (HEADER_BYTES as u64 + 1, len - 1, Some("holds limits for \"ate=5/s")),
            (HEADER_BYTES as u64 + 64 * 8, len, Some("not printable")),
        ] {
            let (region, _fd) = create_or_open(&name, 0o600, &a, &init).expect("created");
            let h = region.header();
            // SAFETY: header fields inside the mapping; this test is the
            // only user of the region.
            unsafe {
                addr_of_mut!((*h).config_text_offset).write(offset);
                addr_of_mut!((*h).config_text_len).write(length);
            }
            let opened = create_or_open(&name, 0o600, &a, &init).map(drop);
            let attached = attach(&name, |text| {
                Config::parse(text)
                    .ok()
                    .and_then(|c| Layout::new(&limits_in_ns(&c), c.capacity, c.top))
                    .ok_or_else(|| Error::Incompatible(format!("holds limits for \"{text}\"")))
            })
            .map(drop);
            unlink(&c).unwrap();
            for result in [opened, attached] {
                match (why, result) {
                    (None, Ok(())) => {}
                    (Some(why), Err(Error::Incompatible(m))) => assert!(m.contains(why), "{offset} {length}: {m}"),
                    (why, r) => panic!("offset {offset}, length {length}: {r:?}, expected {why:?}"),
                }
            }
        }
    }

    /// A damaged header: its text with another hash, or a long text that is
    /// no configuration. Refused with a message that says so, of bounded length.
    #[test]
    fn a_damaged_hash_or_a_long_text_is_refused_briefly() {
        let a = layout("rate=5/s capacity=100");
        let (name, c) = region_name("hash");
        let init = Init { seed: [1, 2], epoch_offset_ns: 0 };
        let (region, _fd) = create_or_open(&name, 0o600, &a, &init).expect("created");
        let h = region.header();
        // SAFETY: a header field inside the mapping; this test is the only user.
        unsafe { addr_of_mut!((*h).config_hash).write(a.config_hash ^ 2) };
        match create_or_open(&name, 0o600, &a, &init).map(drop) {
            Err(Error::Incompatible(m)) => assert!(m.contains("hash that does not match its text"), "{m}"),
            r => panic!("{r:?}"),
        }
        // SAFETY: inside the mapping (the owner slots follow the text area,
        // and no handle owns one yet); this test is the only user.
        unsafe {
            std::ptr::write_bytes(region.base().add(HEADER_BYTES), b'x', CONFIG_TEXT_MAX);
            addr_of_mut!((*h).config_text_len).write(CONFIG_TEXT_MAX as u64);
        }
        match create_or_open(&name, 0o600, &a, &init).map(drop) {
            Err(Error::Incompatible(m)) => {
                assert!(m.contains(&format!("holds limits for \"{}...\"", "x".repeat(SHOWN_TEXT_MAX))), "{m}");
                assert!(m.len() < SHOWN_TEXT_MAX + 600, "{} bytes: {m}", m.len());
            }
            r => panic!("{r:?}"),
        }
        unlink(&c).unwrap();
    }
}
