//! io_uring ring flags for glommio 0.9 without forking it.
//!
//! glommio creates every ring through liburing's `io_uring_queue_init_params`
//! with no setup flags. Readiness raised by another CPU is then delivered
//! with a forced rescheduling IPI to the busy executor (~1.6 per proxied
//! request measured here). Every binary in this workspace is linked with
//! `--wrap=io_uring_queue_init_params` (see `.cargo/config.toml` and the
//! build scripts), which routes glommio's call here; we add
//! `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (kernel >= 5.19)
//! and retry with the original flags when the kernel answers EINVAL.
//! See `../shared/notes/io_uring-ring-flags.md` for the measurement.
//!
//! Switch: `SHADOWTEE_COOP_TASKRUN=0` keeps glommio's original flags, so the
//! difference can be measured side by side.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU32, Ordering};

const IORING_SETUP_SQPOLL: u32 = 1 << 1;
const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;
const IORING_SETUP_TASKRUN_FLAG: u32 = 1 << 9;

/// The head of liburing's `struct io_uring_params`: `sq_entries`,
/// `cq_entries` and `flags` are its first three `u32` fields (stable kernel
/// ABI, `include/uapi/linux/io_uring.h`). Only these are touched.
#[repr(C)]
pub struct RingParamsHead {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
}

/// Rings created with the extra flags (for tests and `shadowtee` diagnostics).
pub static COOP_RINGS: AtomicU32 = AtomicU32::new(0);
/// Rings created with glommio's original flags.
pub static PLAIN_RINGS: AtomicU32 = AtomicU32::new(0);

extern "C" {
    fn __real_io_uring_queue_init_params(
        entries: u32,
        ring: *mut c_void,
        p: *mut RingParamsHead,
    ) -> c_int;
}

fn enabled() -> bool {
    !matches!(
        std::env::var("SHADOWTEE_COOP_TASKRUN").as_deref(),
        Ok("0") | Ok("off") | Ok("false")
    )
}

/// # Safety
/// Called by liburing's callers (glommio) with the same contract as
/// `io_uring_queue_init_params`: `ring` and `p` are valid for the call.
#[no_mangle]
pub unsafe extern "C" fn __wrap_io_uring_queue_init_params(
    entries: u32,
    ring: *mut c_void,
    p: *mut RingParamsHead,
) -> c_int {
    if p.is_null() || !enabled() {
        PLAIN_RINGS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { __real_io_uring_queue_init_params(entries, ring, p) };
    }
    // SAFETY: `p` is non-null and points to an `io_uring_params`, whose first
    // three u32 fields are mirrored by `RingParamsHead` (see its doc).
    let original = unsafe { (*p).flags };
    if original & IORING_SETUP_SQPOLL == 0 {
        // SAFETY: as above.
        unsafe { (*p).flags = original | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG };
        // SAFETY: forwarding the caller's arguments with extra flags.
        let rc = unsafe { __real_io_uring_queue_init_params(entries, ring, p) };
        if rc != -libc::EINVAL {
            if rc >= 0 {
                COOP_RINGS.fetch_add(1, Ordering::Relaxed);
            }
            return rc;
        }
        // SAFETY: as above; restore the caller's flags for the retry.
        unsafe { (*p).flags = original };
    }
    PLAIN_RINGS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __real_io_uring_queue_init_params(entries, ring, p) }
}
