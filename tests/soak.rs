//! The fault soak: the real binary against the simulated fleet with every kind of fault, plus
//! SSH paths on a private sshd, and a kill loop with the journal (issue 8). `cargo test` runs a
//! quick size (1,000 devices, 20 SSH paths, 3 kills); `scripts/soak` runs the full size
//! (10,000 devices, 200 SSH paths, 20 kills) with a release build and prints the figures.
//!
//! Codemap: `setup` holds the size, the timeouts and the bound they imply, and shared helpers;
//! `child` runs the binary and measures it (`wait4`: exit status, wall time, peak RSS);
//! `mixed` is the mixed-fault run, `kill_loop` the SIGKILL-and-resume loop. A crate root's
//! `mod` looks beside it, hence the `#[path]`s into `tests/soak/`.

// The SSH tests' servers: the soak starts only the OpenSSH sshd, not dropbear.
#[allow(dead_code)]
#[path = "ssh/servers.rs"]
mod servers;

#[path = "soak/child.rs"]
mod child;
#[path = "soak/setup.rs"]
mod setup;

#[path = "soak/kill_loop.rs"]
mod kill_loop;
#[path = "soak/mixed.rs"]
mod mixed;
