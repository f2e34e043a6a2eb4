//! Integration tests of the SSH delivery against real servers on 127.0.0.1: a private OpenSSH
//! `sshd`, and `dropbear` without SFTP. Most call `SshDelivery` through the library; `cli` runs
//! the real binary. A missing server program fails the tests with the command that
//! installs it.
//!
//! Codemap: `servers` starts and stops the servers, `util` is the harness (payloads,
//! registries, one attempt and its metered bytes); every other module is one area of behaviour.
//! A crate root's `mod` looks beside it, hence the `#[path]`s into `tests/ssh/`.

#[path = "ssh/servers.rs"]
mod servers;
#[path = "ssh/util.rs"]
mod util;

#[path = "ssh/auth.rs"]
mod auth;
#[path = "ssh/cli.rs"]
mod cli;
#[path = "ssh/config.rs"]
mod config;
#[path = "ssh/delta.rs"]
mod delta;
#[path = "ssh/exec.rs"]
mod exec;
#[path = "ssh/failures.rs"]
mod failures;
#[path = "ssh/fallback.rs"]
mod fallback;
#[path = "ssh/first_hour.rs"]
mod first_hour;
#[path = "ssh/host_keys.rs"]
mod host_keys;
#[path = "ssh/jump.rs"]
mod jump;
#[path = "ssh/lifecycle.rs"]
mod lifecycle;
#[path = "ssh/upload.rs"]
mod upload;
