//! SIGINT, SIGTERM and SIGHUP become a request to stop: the handler only counts them (an
//! atomic store is async-signal-safe); the driver polls [`stop_requests`].

use std::sync::atomic::{AtomicUsize, Ordering};

static STOP_REQUESTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP_REQUESTS.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handlers.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialised.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Stop signals received so far: 1 = stop gracefully, 2 or more = the user insists
/// (skip the grace period).
pub fn stop_requests() -> usize {
    STOP_REQUESTS.load(Ordering::SeqCst)
}
