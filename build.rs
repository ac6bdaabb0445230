//! Sets `cfg(dualq_sanitize_thread)` when the crate is built under
//! ThreadSanitizer (`-Zsanitizer=thread`), as crossbeam does for its own
//! `crossbeam_sanitize_thread`: `cfg(sanitize = "thread")` is unstable, but
//! cargo passes the sanitizer to build scripts in `CARGO_CFG_SANITIZE`.
//!
//! ThreadSanitizer does not model standalone fences; under this cfg the one
//! fence whose ordering TSan must see is replaced by an equivalent atomic
//! access (see `acquire_last_ref` in `src/sync.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let sanitize = std::env::var("CARGO_CFG_SANITIZE").unwrap_or_default();
    if sanitize.split(',').any(|s| s == "thread") {
        println!("cargo:rustc-cfg=dualq_sanitize_thread");
    }
}
