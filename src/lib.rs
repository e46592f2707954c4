//! libratelimit: may this key spend this cost now, and if not, when?
//!
//! A rate limiter for C servers (see include/ratelimit.h and README.md).
//! Layers, top to bottom: `ffi` (the C API) → `limiter` → `store` (backends)
//! → `table` (the bounded key table) → `algorithm` (pure decisions), with
//! `config`, `clock`, `keyhash`, `headers`, `metrics` and `keytext`
//! alongside.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod algorithm;
pub mod clock;
pub mod config;
pub mod error;
pub mod ffi;
pub mod headers;
pub mod keyhash;
// Keys as text (rl_metrics' key label, rlctl): Rust-only, nothing for the header.
/// cbindgen:ignore
pub mod keytext;
pub mod limiter;
/// cbindgen:ignore
pub mod metrics;
pub mod store;
pub mod table;
// Nothing in the heavy-hitter sketches is part of the C API (rl_top is in ffi/):
/// cbindgen:ignore
pub mod top;
