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

/// `ssh://fleet@host/~/fw.bin` failed with "the remote path does not exist": `/~/` is the login
/// user's home, over SFTP (sshd) and SCP (dropbear), and `--exec`'s `{path}` is absolute.
#[test]
fn a_path_under_tilde_is_in_the_login_users_home() {
    let sshd = Server::sshd();
    // sshd logs us in to our own home (as /etc/passwd has it): a directory of this test's in it.
    let home = crate::servers::home_of(&sshd.user).expect("a home in /etc/passwd");
    let inside = tempfile::Builder::new()
        .prefix(".uo-test-home-")
        .tempdir_in(&home)
        .expect("a directory in HOME");
    let below = inside
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dropbear = Server::dropbear(true);
    for (server, home, relative, method) in [
        (&sshd, home.clone(), format!("{below}/fw.bin"), "sftp"),
        (
            &dropbear,
            dropbear.dir.path().join("home"),
            "fw.bin".to_string(),
            "scp",
        ),
    ] {
        let (dir, _) = workspace(server);
        fs::write(dir.path().join("fw.bin"), crate::util::bytes(40_000, 5)).unwrap();
        let url = format!(
            "ssh://{}@127.0.0.1:{}/~/{relative}",
            server.user, server.port
        );
        fs::write(dir.path().join("d.csv"), format!("id,url\nd,{url}\n")).unwrap();
        let key = server.client_key.display().to_string();
        let output = push(
            dir.path(),
            &[
                "--payload",
                "fw.bin",
                "--identity",
                &key,
                "--known-hosts",
                "known_hosts",
                "--exec",
                "echo {path} > {path}.where",
                "--report",
                "-",
                "d.csv",
            ],
        );
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{method}: {stderr}\n{stdout}"
        );
        assert_eq!(rows(&stdout)[0][9], method, "{stdout}");
        let stored = home.join(&relative);
        assert_eq!(
            crate::util::sha256_file(&stored),
            crate::util::sha256_file(&dir.path().join("fw.bin")),
            "{method}"
        );
        let mut where_file = stored.clone().into_os_string();
        where_file.push(".where");
        let told = fs::read_to_string(&where_file).unwrap();
        assert_eq!(told.trim_end(), stored.display().to_string(), "{method}");
    }
}
