//! What an operator hits in the first hour (issue 18), through the real binary: a device that
//! accepts TCP and never speaks SSH, home-relative paths, encrypted keys, a full disk, and
//! messages that fit one report cell.

use crate::servers::Server;
use crate::util::{push, push_with_timeouts, rows, text, workspace};
use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A device that accepted TCP and never spoke SSH held each attempt for the whole
/// `--stall-timeout` (2 minutes at the defaults): the handshake now ends within
/// `--connect-timeout`.
#[test]
fn a_silent_device_costs_no_more_than_the_connect_timeout() {
    let server = Server::sshd();
    let (dir, _) = workspace(&server);
    fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
    // Accepts (the kernel completes the TCP handshake for the backlog) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("ssh://{}@127.0.0.1:{port}/tmp/fw.bin", server.user);
    fs::write(dir.path().join("d.csv"), format!("id,url\nsilent,{url}\n")).unwrap();
    let key = server.client_key.display().to_string();
    let started = Instant::now();
    let output = push_with_timeouts(
        dir.path(),
        "2s",
        "120s",
        &[
            "--payload",
            "fw.bin",
            "--identity",
            &key,
            "--known-hosts",
            "known_hosts",
            "--retries",
            "0",
            "--report",
            "-",
            "d.csv",
        ],
    );
    let elapsed = started.elapsed();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let row = &rows(&stdout)[0];
    assert!(
        row[7].starts_with("handshake:") && row[7].contains("--connect-timeout (2s)"),
        "{row:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    drop(listener);
}
