//! The process limits a run's worker pool needs, checked and raised before any device is
//! contacted: open files (`RLIMIT_NOFILE`), threads (`RLIMIT_NPROC`, `kernel.threads-max`) and
//! memory mappings (`vm.max_map_count`, two per worker stack).
//!
//! Like nginx's `worker_rlimit_nofile` and Go's runtime, a run raises its soft open-files limit
//! to what it needs, up to the hard limit; only root can raise a hard limit, so a run that needs
//! more stops with the numbers and the fix instead of failing devices one by one with EMFILE.
//!
//! Owns: the arithmetic (pure, tested) and the `getrlimit`/`setrlimit` calls. Must not: print
//! (the caller reports the error) or lower any limit.

use std::fmt;

/// File descriptors one in-flight device holds: its socket and its reader of the payload.
pub const FILES_PER_WORKER: u64 = 2;
/// File descriptors besides the workers': stdio, the registry, journal, report, events and
/// metrics files, the status server and its clients, the HTTP agent's idle connections.
pub const RESERVED_FILES: u64 = 128;
/// Threads besides the workers: main, the watchdog, progress, the status server, signals.
pub const RESERVED_THREADS: u64 = 32;
/// Memory mappings besides the workers' stacks (code, heap arenas, libraries).
pub const RESERVED_MAPS: u64 = 4096;

/// What a run with `workers` workers needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Open file descriptors.
    pub files: u64,
    /// Threads.
    pub threads: u64,
    /// Memory mappings.
    pub maps: u64,
}

impl Needs {
    /// The needs of a pool of `workers`.
    pub fn for_workers(workers: usize) -> Needs {
        let workers = workers as u64;
        Needs {
            files: workers * FILES_PER_WORKER + RESERVED_FILES,
            threads: workers + RESERVED_THREADS,
            // Each stack is a mapping plus its guard page's.
            maps: workers * 2 + RESERVED_MAPS,
        }
    }
}

/// What to do with a resource limit (soft, hard) for a need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// The soft limit already allows it.
    Enough,
    /// Raise the soft limit to this (at most the hard limit).
    SoftTo(u64),
    /// The hard limit is below the need.
    TooLow,
}

/// The pure decision for one `setrlimit` resource; `u64::MAX` is unlimited.
pub fn raise(need: u64, soft: u64, hard: u64) -> Raise {
    if need <= soft {
        Raise::Enough
    } else if need <= hard {
        Raise::SoftTo(need)
    } else {
        Raise::TooLow
    }
}

/// The most workers whose need for one resource fits in `available`.
pub fn max_workers(available: u64, per_worker: u64, reserved: u64) -> u64 {
    available.saturating_sub(reserved) / per_worker
}

/// A limit too low for the run, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError(pub String);

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitError {}

/// Checks every limit for `workers` workers (started for `--concurrency`), raising soft
/// `RLIMIT_NOFILE` and `RLIMIT_NPROC` as needed.
pub fn ensure(workers: usize) -> Result<(), LimitError> {
    let needs = Needs::for_workers(workers);
    let files = Resource {
        resource: libc::RLIMIT_NOFILE,
        what: "open files",
        per_worker: FILES_PER_WORKER,
        reserved: RESERVED_FILES,
        fix: "ulimit -n as root before the run, or LimitNOFILE= in its systemd unit",
    };
    files.ensure(workers, needs.files)?;
    let threads = Resource {
        resource: libc::RLIMIT_NPROC,
        what: "processes and threads (of this user)",
        per_worker: 1,
        reserved: RESERVED_THREADS,
        fix: "ulimit -u as root before the run, or LimitNPROC= in its systemd unit",
    };
    threads.ensure(workers, needs.threads)?;
    check_kernel(
        workers,
        needs.threads,
        "kernel.threads-max",
        "/proc/sys/kernel/threads-max",
        threads_in_use(),
        1,
        RESERVED_THREADS,
    )?;
    check_kernel(
        workers,
        needs.maps,
        "vm.max_map_count",
        "/proc/sys/vm/max_map_count",
        maps_in_use(),
        2,
        RESERVED_MAPS,
    )
}

/// `getrlimit`'s resource argument: an enum in glibc, an int elsewhere (musl).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Which = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Which = libc::c_int;

struct Resource {
    resource: Which,
    what: &'static str,
    per_worker: u64,
    reserved: u64,
    fix: &'static str,
}

impl Resource {
    fn ensure(&self, workers: usize, need: u64) -> Result<(), LimitError> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(self.resource, &mut limit) } != 0 {
            return Ok(()); // unknown: let the run find out
        }
        let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
        match raise(need, soft, hard) {
            Raise::Enough => Ok(()),
            Raise::SoftTo(value) => {
                limit.rlim_cur = value;
                // SAFETY: `limit` is a valid rlimit with the soft value at most the hard one.
                if unsafe { libc::setrlimit(self.resource, &limit) } != 0 {
                    let error = std::io::Error::last_os_error();
                    return Err(LimitError(format!(
                        "--concurrency {workers} needs {need} {}, and raising the soft limit \
                         from {soft} failed ({error}): raise it ({}) or lower --concurrency \
                         to {}",
                        self.what,
                        self.fix,
                        max_workers(soft, self.per_worker, self.reserved)
                    )));
                }
                log::info!(
                    "raised the soft limit of {} from {soft} to {value}",
                    self.what
                );
                Ok(())
            }
            Raise::TooLow => Err(LimitError(format!(
                "--concurrency {workers} needs {need} {} but the hard limit is {hard}: raise it \
                 ({}) or lower --concurrency to {}",
                self.what,
                self.fix,
                max_workers(hard, self.per_worker, self.reserved)
            ))),
        }
    }
}

/// A system-wide kernel limit: `in_use` of `path`'s value are taken already.
fn check_kernel(
    workers: usize,
    need: u64,
    name: &str,
    path: &str,
    in_use: Option<u64>,
    per_worker: u64,
    reserved: u64,
) -> Result<(), LimitError> {
    let Some(limit) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return Ok(()); // not Linux, or hidden: let the run find out
    };
    let available = limit.saturating_sub(in_use.unwrap_or(0));
    if need <= available {
        return Ok(());
    }
    Err(LimitError(format!(
        "--concurrency {workers} needs {need} of {name} ({limit}, {} in use): raise it \
         (sysctl -w {name}=...) or lower --concurrency to {}",
        in_use.unwrap_or(0),
        max_workers(available, per_worker, reserved)
    )))
}

/// Threads on the system now: the total in `/proc/loadavg` (`running/total`).
fn threads_in_use() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// This process's memory mappings now.
fn maps_in_use() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    Some(text.lines().count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNLIMITED: u64 = u64::MAX;

    #[track_caller]
    fn check(need: u64, soft: u64, hard: u64, expected: Raise) {
        assert_eq!(raise(need, soft, hard), expected);
    }

    #[test]
    fn raises_the_soft_limit_up_to_the_hard_one() {
        check(100, 1024, 4096, Raise::Enough);
        check(1024, 1024, 4096, Raise::Enough);
        check(1025, 1024, 4096, Raise::SoftTo(1025));
        check(4096, 1024, 4096, Raise::SoftTo(4096));
        check(4097, 1024, 4096, Raise::TooLow);
        check(32_896, 20_000, 20_000, Raise::TooLow);
        check(32_896, 1024, UNLIMITED, Raise::SoftTo(32_896));
        check(32_896, UNLIMITED, UNLIMITED, Raise::Enough);
    }

    #[test]
    fn needs_grow_with_the_workers() {
        let needs = |workers| {
            let n = Needs::for_workers(workers);
            (n.files, n.threads, n.maps)
        };
        assert_eq!(needs(1), (130, 33, 4098));
        assert_eq!(needs(8000), (16_128, 8032, 20_096));
        assert_eq!(needs(16_384), (32_896, 16_416, 36_864));
    }

    #[test]
    fn the_most_workers_that_fit() {
        assert_eq!(max_workers(20_000, FILES_PER_WORKER, RESERVED_FILES), 9936);
        assert_eq!(max_workers(1024, FILES_PER_WORKER, RESERVED_FILES), 448);
        assert_eq!(max_workers(100, FILES_PER_WORKER, RESERVED_FILES), 0);
        let fits = Needs::for_workers(9936).files;
        assert!(fits <= 20_000 && Needs::for_workers(9937).files > 20_000);
    }
}
