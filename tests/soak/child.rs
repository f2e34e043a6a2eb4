//! One run of the binary as a child process: reaped with `wait4`, which gives its exact peak
//! RSS (sampling /proc would miss the last moments), waited for within a bound, or killed with
//! SIGKILL by its pid.
//!
//! Owns: the child from spawn to reap (a child still running when this is dropped is killed and
//! reaped, by pid). Must not: know what the run is expected to do.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `update-orchestrator` whose output goes to files.
pub struct Run {
    child: std::process::Child,
    started: Instant,
    stderr: PathBuf,
    reaped: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    pub wall: Duration,
    /// The child's peak resident set, from the kernel's accounting at exit.
    pub peak_rss_kib: u64,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Ended {
    /// Whether SIGKILL ended it (rather than its own exit).
    pub fn was_killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }

    /// Its last `lines` lines of stderr, for failure messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stderr.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Run {
    /// Starts the binary with `args` in `dir`, stdout and stderr into `NAME.stdout` and
    /// `NAME.stderr` there, without the ssh-agent.
    pub fn start(dir: &Path, name: &str, args: &[String]) -> Run {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let file = |path: &Path| std::fs::File::create(path).expect("create an output file");
        let child = Command::new(env!("CARGO_BIN_EXE_update-orchestrator"))
            .current_dir(dir)
            .args(args)
            .env_remove("SSH_AUTH_SOCK")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("start update-orchestrator");
        Run {
            child,
            started: Instant::now(),
            stderr,
            reaped: false,
        }
    }

    /// Waits for the child to exit on its own, at most `bound`; past it the child is killed and
    /// `Err` says so: a run that outlives the bound its timeouts allow has a hung worker.
    pub fn wait_within(mut self, bound: Duration) -> Result<Ended, Ended> {
        while self.started.elapsed() < bound {
            if let Some(ended) = self.reap(libc::WNOHANG) {
                return Ok(ended);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(self.kill())
    }

    /// Sends SIGKILL unless it has already exited, and reaps it.
    pub fn kill(mut self) -> Ended {
        if let Some(ended) = self.reap(libc::WNOHANG) {
            return ended;
        }
        // Not reaped yet, so the pid is still this child's (a zombie at worst).
        let _ = self.child.kill();
        self.reap(0).expect("a blocking wait4 returns the child")
    }

    /// `wait4` on the child's pid; `None` when `WNOHANG` finds it still running.
    fn reap(&mut self, flags: libc::c_int) -> Option<Ended> {
        let pid = self.child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value, which wait4 overwrites.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals; `pid` is our unreaped child.
            let got = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            match got {
                0 => return None,
                got if got == pid => break,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => panic!("wait4({pid}): {}", std::io::Error::last_os_error()),
            }
        }
        self.reaped = true;
        Some(Ended {
            status: ExitStatus::from_raw(status),
            wall: self.started.elapsed(),
            peak_rss_kib: usage.ru_maxrss as u64,
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.reap(0);
        }
    }
}
