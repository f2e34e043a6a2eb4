//! `ProxyCommand`: a local command whose stdin and stdout are the device's connection (`ssh -W
//! %h:%p gw`, `nc %h %p`, a vendor tunnel), one process per connection, as OpenSSH runs it.
//!
//! Owns: the process (`sh -c`, in its own process group, its stdin and stdout one end of a
//! socketpair: libssh2 needs `send`/`recv`, a pipe will not do) and ending it: the group is
//! killed and reaped when the connection is dropped. Its stderr is kept for the error message.
//! Must not: outlive the attempt, or inherit the terminal.

use super::errors::{failure, io_failure};
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A running proxy command.
#[derive(Debug)]
pub(crate) struct ProxyProcess {
    child: Child,
    command: String,
}

/// Starts `command`; the stream is the connection.
pub(crate) fn spawn(command: &str) -> Result<(UnixStream, ProxyProcess), DeliveryError> {
    let (ours, theirs) = UnixStream::pair().map_err(|error| io_failure(Phase::Connect, &error))?;
    let stdin = OwnedFd::from(theirs);
    let stdout = stdin
        .try_clone()
        .map_err(|error| io_failure(Phase::Connect, &error))?;
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|error| {
            failure(
                Phase::Connect,
                ErrorKind::Io,
                format!("cannot start the ProxyCommand {command:?}: {error}"),
            )
        })?;
    Ok((
        ours,
        ProxyProcess {
            child,
            command: command.to_string(),
        },
    ))
}

impl ProxyProcess {
    /// Ends the command and says what it printed on stderr (its last line), for an error
    /// message about a connection that failed.
    pub(crate) fn finish(&mut self) -> String {
        self.kill();
        let mut text = String::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            let _ = stderr.take(64 << 10).read_to_string(&mut text);
        }
        let last = text.lines().rev().find(|line| !line.trim().is_empty());
        match last {
            Some(line) => format!("ProxyCommand {:?} said: {}", self.command, line.trim()),
            None => format!("ProxyCommand {:?}", self.command),
        }
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_command_is_the_connection() {
        let (mut stream, mut process) = spawn("tr a-z A-Z; echo done >&2").unwrap();
        stream.write_all(b"hello").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "HELLO");
        assert_eq!(
            process.finish(),
            "ProxyCommand \"tr a-z A-Z; echo done >&2\" said: done"
        );
    }
}
