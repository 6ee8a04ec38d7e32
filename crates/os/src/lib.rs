//! What every huione crate needs from the operating system, written once: the wall clock
//! ([`clock`]), crash-safe file replacement ([`fs`]) and command-line tools' process
//! set-up ([`process`]).
//!
//! *Invariant*: no dependency besides `std` and `libc`, so the lowest crates (keys,
//! certs) can use it. The consensus core takes `now` as an argument and never calls into this crate; the
//! simulator keeps its own simulated clock.

pub mod clock;
pub mod fs;
pub mod process;
