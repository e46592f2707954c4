//! Where a memory-backend check's time goes, layer by layer, through the
//! cases of bench/cases.rs, all in one Rust process (so no layer pays for
//! a call into a shared library):
//!
//! - `memory store`: `MemoryStore::check`, the table and the algorithm,
//!   answering in ticks;
//! - `Limiter`: `Limiter::check` over it, which adds the dispatch to the
//!   backend and the decision in milliseconds;
//! - `rl_check`: the C entry point called directly, which adds the panic
//!   boundary, the argument checks and the `rl_decision` written out.
//!
//! The configuration is `make bench`'s (bench/lim_ratelimit.h). Set beside
//! the "governor (Rust)" column, this tells the cost of the library's own
//! work from the cost of its C API; `make bench`'s memory column adds the
//! call through the shared library's PLT to the last.
//!
//! By hand: `cargo bench --bench layers -- [iterations [case]]`.

use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, Ordering};

use ratelimit::config::Config;
use ratelimit::ffi::{rl_check, rl_create, rl_decision, rl_destroy, rl_limiter};
use ratelimit::limiter::Limiter;
use ratelimit::store::{MemoryStore, Store};

#[path = "cases.rs"]
mod cases;

const CONFIG: &str = "rate=1000000000/minute capacity=400000";
const DENYING: &str = "rate=1/h";

fn config(denying: bool) -> &'static str {
    if denying {
        DENYING
    } else {
        CONFIG
    }
}

struct StoreLayer(MemoryStore);

impl cases::Limiter for StoreLayer {
    fn check(&self, key: &String) -> bool {
        self.0.check(key.as_bytes(), 1).expect("memory check").outcome.allowed
    }
}

struct LimiterLayer(Limiter);

impl cases::Limiter for LimiterLayer {
    fn check(&self, key: &String) -> bool {
        self.0.check(key.as_bytes(), 1).expect("limiter check").allowed
    }
}

/// A handle made by `rl_create`, checked through `rl_check` (from any
/// thread, as ratelimit.h allows).
struct CLayer(AtomicPtr<rl_limiter>);

impl cases::Limiter for CLayer {
    fn check(&self, key: &String) -> bool {
        let mut d = rl_decision::default();
        assert_eq!(rl_check(self.0.load(Ordering::Relaxed), key.as_ptr().cast(), key.len(), 1, &mut d), 0);
        d.allowed == 1
    }
}

impl Drop for CLayer {
    fn drop(&mut self) {
        rl_destroy(*self.0.get_mut());
    }
}

fn main() {
    cases::main("memory store (Rust)", |denying| {
        StoreLayer(MemoryStore::new(&Config::parse(config(denying)).expect("config")).expect("store"))
    });
    cases::main("Limiter (Rust)", |denying| LimiterLayer(Limiter::from_config_str(config(denying)).expect("limiter")));
    cases::main("rl_check (in-process)", |denying| {
        let text = CString::new(config(denying)).expect("no NUL");
        let mut lim = std::ptr::null_mut();
        assert_eq!(rl_create(text.as_ptr(), &mut lim), 0);
        CLayer(AtomicPtr::new(lim))
    });
}
