//! What an operator hits in the first hour (issue 18), through the real binary: a device that
//! accepts TCP and never speaks SSH, home-relative paths, encrypted keys, a full disk, and
//! messages that fit one report cell.

use crate::servers::Server;
use crate::util::{push, push_command, push_with_timeouts, rows, text, with_key, workspace};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let started = Instant::now();
    let args = ["--retries", "0", "--report", "-", "d.csv"];
    let output = push_with_timeouts(dir.path(), "2s", "120s", &with_key(&server, &args));
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
        let exec = [
            "--exec",
            "echo {path} > {path}.where",
            "--report",
            "-",
            "d.csv",
        ];
        let output = push(dir.path(), &with_key(server, &exec));
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

/// An encrypted `--identity` without its passphrase, or with a wrong one, was found on every
/// device (one refused login each): it is a usage error before anything is contacted, in
/// OpenSSH's key format and in the legacy PEM one alike.
#[test]
fn an_encrypted_key_is_opened_once_before_any_device() {
    let server = Server::sshd();
    let (dir, remote) = workspace(&server);
    fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
    let openssh = dir.path().join("openssh_key");
    crate::servers::keygen(&openssh, "right passphrase");
    // What older provisioning scripts made: `-----BEGIN EC PRIVATE KEY-----`, Proc-Type.
    let pem = dir.path().join("pem_key");
    let made = Command::new(crate::servers::require("/usr/bin/ssh-keygen"))
        .args([
            "-q",
            "-t",
            "ecdsa",
            "-b",
            "256",
            "-m",
            "PEM",
            "-N",
            "right passphrase",
        ])
        .arg("-f")
        .arg(&pem)
        .status()
        .expect("run ssh-keygen");
    assert!(made.success());
    for (key, name) in [(&openssh, "openssh.bin"), (&pem, "pem.bin")] {
        server.authorize(&crate::servers::public(key));
        let target = remote.join(name);
        fs::write(
            dir.path().join("d.csv"),
            format!("id,url\nd,{}\n", server.url(&target)),
        )
        .unwrap();
        let shown = key.display().to_string();
        let run = |passphrase: Option<&str>| {
            let mut command = push_command(dir.path(), "5s", "10s");
            command.args(["--payload", "fw.bin", "--identity", &shown]);
            command.args(["--known-hosts", "known_hosts", "--no-agent"]);
            if let Some(passphrase) = passphrase {
                command.args(["--passphrase-env", "UO_TEST_PASSPHRASE"]);
                command.env("UO_TEST_PASSPHRASE", passphrase);
            }
            command
                .arg("d.csv")
                .output()
                .expect("run update-orchestrator")
        };
        for (passphrase, expected) in [
            (
                None,
                "the key is encrypted: give its passphrase with --passphrase-env",
            ),
            (
                Some("wrong passphrase"),
                "the passphrase from --passphrase-env does not decrypt this key",
            ),
        ] {
            let output = run(passphrase);
            let stderr = text(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{name} {passphrase:?}: {stderr}"
            );
            let message = format!("--identity {shown}: {expected}");
            assert!(stderr.contains(&message), "{name} {passphrase:?}: {stderr}");
            assert!(
                !stderr.contains("wrong passphrase"),
                "a secret leaked: {stderr}"
            );
            assert!(!target.exists(), "{name}: a device was contacted");
        }
        let output = run(Some("right passphrase"));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {}",
            text(&output.stderr)
        );
        assert_eq!(fs::read(&target).unwrap(), b"firmware", "{name}");
    }
}

/// Without `--identity` (and no agent), OpenSSH's default identities are offered, as `ssh` does.
#[test]
fn without_identity_the_default_keys_are_offered() {
    let server = Server::sshd();
    let (dir, remote) = workspace(&server);
    fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    // An encrypted id_ed25519 without a passphrase is passed over; id_rsa (an ed25519 key under
    // that name is fine for libssh2) logs in.
    crate::servers::keygen(&home.join(".ssh/id_ed25519"), "locked");
    fs::copy(&server.client_key, home.join(".ssh/id_rsa")).unwrap();
    let target = remote.join("fw.bin");
    fs::write(
        dir.path().join("d.csv"),
        format!("id,url\nd,{}\n", server.url(&target)),
    )
    .unwrap();
    let output = push_command(dir.path(), "5s", "10s")
        .args([
            "--payload",
            "fw.bin",
            "--known-hosts",
            "known_hosts",
            "d.csv",
        ])
        .env("HOME", &home)
        .output()
        .expect("run update-orchestrator");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(fs::read(&target).unwrap(), b"firmware");
}

// Regression: a default key that group or others may read (`~/.ssh/id_ed25519` 0644) was
// offered silently, while `--identity` refuses the same file and OpenSSH ignores it
// ("UNPROTECTED PRIVATE KEY FILE"). It is left out, with a warning naming the fix.
#[test]
fn an_unprotected_default_key_is_left_out_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::sshd();
    let (dir, remote) = workspace(&server);
    fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_ed25519");
    fs::copy(&server.client_key, &key).unwrap();
    let target = remote.join("fw.bin");
    fs::write(
        dir.path().join("d.csv"),
        format!("id,url\nd,{}\n", server.url(&target)),
    )
    .unwrap();
    let push = || {
        push_command(dir.path(), "5s", "10s")
            .args(["--payload", "fw.bin", "--known-hosts", "known_hosts"])
            .args(["--retries", "0", "d.csv"])
            .env("HOME", &home)
            .output()
            .expect("run update-orchestrator")
    };
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let output = push();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "not offering the default identity {}: permissions 0644 are too open",
            key.display()
        )) && stderr.contains(&format!("fix with: chmod 600 {}", key.display())),
        "{stderr}"
    );
    assert!(!target.exists());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let output = push();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(fs::read(&target).unwrap(), b"firmware");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts `size` (`512k`) at `dir`; needs root (CI runs as root).
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs needs root (CI runs as root)"
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A read-only file system (a device's rootfs) failed as a bare "upload: failure", retried: SFTP
/// version 3 says no more. The device's shell is asked why: the error names the file and the
/// reason, and it is permanent. A missing directory names the directory. On dropbear (SCP, or
/// `cat` without scp) scp's refusal was thrown away and `cat` streamed into a shell that had
/// failed, until a "stall" 14 s later, retried 4 times: now the same words, at once, once.
#[test]
fn a_read_only_file_system_or_a_missing_directory_is_named_and_not_retried() {
    // Mounted before the servers start, so that their mount namespaces have it.
    let disks = tempfile::tempdir().unwrap();
    let read_only = disks.path().join("ro");
    let _tmpfs = Tmpfs::mount(&read_only, "8m,ro");
    for (server, method) in [
        (Server::sshd(), "sftp"),
        (Server::dropbear(true), "scp"),
        (Server::dropbear(false), "cat"),
    ] {
        let (dir, _) = workspace(&server);
        fs::write(dir.path().join("fw.bin"), crate::util::bytes(1 << 20, 3)).unwrap();
        let missing = disks.path().join("no-such-dir");
        fs::write(
            dir.path().join("d.csv"),
            format!(
                "id,url\nro,{}\nmissing,{}\n",
                server.url(&read_only.join("fw.bin")),
                server.url(&missing.join("fw.bin"))
            ),
        )
        .unwrap();
        let args = ["--retries", "3", "--report", "-", "d.csv"];
        let started = Instant::now();
        let output = push(dir.path(), &with_key(&server, &args));
        let elapsed = started.elapsed();
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{method}: {stderr}");
        let rows = rows(&stdout);
        let (ro, gone) = (&rows[0], &rows[1]);
        assert_eq!(
            (ro[2].as_str(), ro[3].as_str(), ro[4].as_str()),
            ("failed", "1", "0"),
            "{method}: {ro:?}"
        );
        assert!(
            ro[7].starts_with(&format!(
                "upload: cannot create {}/fw.bin.part: ",
                read_only.display()
            )) && ro[7].contains("Read-only file system"),
            "{method}: {ro:?}"
        );
        assert_eq!(
            (gone[2].as_str(), gone[3].as_str(), gone[4].as_str()),
            ("failed", "1", "0"),
            "{method}: {gone:?}"
        );
        assert!(
            gone[7].starts_with(&format!(
                "upload: cannot create {0}/fw.bin.part: its directory {0} does not exist on the \
                 device",
                missing.display()
            )),
            "{method}: {gone:?}"
        );
        // Not a stall: nothing waited for a timeout (--stall-timeout is 10 s here).
        assert!(elapsed < Duration::from_secs(9), "{method}: {elapsed:?}");
    }
}

/// 1 MiB into a 512 KiB file system ended as "upload: failure (retries exhausted)" after 4
/// attempts, leaving a 512 KiB `fw.bin.part` that kept the device's disk full: the space is
/// asked for first (SFTP's statvfs on sshd, `df` over dropbear's SCP), the failure is
/// permanent, and nothing is left behind.
#[test]
fn a_full_disk_fails_at_once_and_leaves_nothing_behind() {
    // Mounted before the servers start: each runs in a mount namespace of its own, a copy of
    // ours when it starts.
    let disks = tempfile::tempdir().unwrap();
    let small_sshd = disks.path().join("sshd");
    let small_dropbear = disks.path().join("dropbear");
    let _tmpfs = (
        Tmpfs::mount(&small_sshd, "512k"),
        Tmpfs::mount(&small_dropbear, "512k"),
    );
    let sshd = Server::sshd();
    let dropbear = Server::dropbear(true);
    for (server, small, method) in [
        (&sshd, &small_sshd, "sftp"),
        (&dropbear, &small_dropbear, "scp"),
    ] {
        let (dir, _) = workspace(server);
        fs::write(dir.path().join("fw.bin"), crate::util::bytes(1 << 20, 9)).unwrap();
        fs::write(
            dir.path().join("d.csv"),
            format!("id,url\nd,{}\n", server.url(&small.join("fw.bin"))),
        )
        .unwrap();
        let output = push(dir.path(), &with_key(server, &["--report", "-", "d.csv"]));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{method}: {stderr}");
        let row = &rows(&stdout)[0];
        assert_eq!(
            (row[2].as_str(), row[3].as_str()),
            ("failed", "1"),
            "{method}: {row:?}"
        );
        let expected = format!(
            "upload: not enough space on the device: 512 KiB free in {}, the payload needs 1.0 MiB",
            small.display()
        );
        assert_eq!(row[7], expected, "{method} {stderr}");
        assert_eq!(listing(small), Vec::<String>::new(), "{method}");

        // Two 400 KiB uploads at once: each fits alone, not both. Whether a device finds out
        // before writing or when a write fails (both may, racing), it fails once, by name, and
        // leaves no `.part`.
        fs::write(dir.path().join("fw.bin"), crate::util::bytes(400 << 10, 4)).unwrap();
        fs::write(
            dir.path().join("two.csv"),
            format!(
                "id,url\na,{}\nb,{}\n",
                server.url(&small.join("a.bin")),
                server.url(&small.join("b.bin"))
            ),
        )
        .unwrap();
        let args = ["--concurrency", "2", "--report", "-", "two.csv"];
        let output = push(dir.path(), &with_key(server, &args));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{method}: {stderr}");
        let report = rows(&stdout);
        let succeeded: Vec<&Vec<String>> =
            report.iter().filter(|row| row[2] == "succeeded").collect();
        assert!(succeeded.len() <= 1, "{method}: {stdout}");
        for row in report.iter().filter(|row| row[2] != "succeeded") {
            assert_eq!(row[2..4], ["failed", "1"], "{method}: {row:?}");
            assert!(
                row[7].starts_with("upload: not enough space on the device"),
                "{method}: {row:?}"
            );
        }
        let stored: Vec<String> = succeeded
            .iter()
            .map(|row| format!("{}.bin", row[0]))
            .collect();
        assert_eq!(listing(small), stored, "{method}: {stdout} {stderr}");
    }
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A chatty failing `--exec` put its whole output in the report: every device's message is one
/// cell, its phase first, a command's output cut to its start and its last words.
#[test]
fn every_failure_fits_one_report_cell_phase_first() {
    let server = Server::sshd();
    let (dir, remote) = workspace(&server);
    fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
    let refused = format!(
        "ssh://{}@127.0.0.1:{}/tmp/fw.bin",
        server.user,
        crate::servers::free_port()
    );
    let stranger = format!(
        "ssh://nobody-here-uo@127.0.0.1:{}{}",
        server.port,
        remote.join("b.bin").display()
    );
    fs::write(
        dir.path().join("d.csv"),
        format!(
            "id,url\nchatty,{}\nrefused,{refused}\nstranger,{stranger}\n",
            server.url(&remote.join("a.bin"))
        ),
    )
    .unwrap();
    let chatty = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); printf 'step %03d:\\tworking \
                  \\033[1mhard\\033[0m on it\\r\\n' $i; done; echo 'the last words' >&2; exit 3";
    let args = ["--exec", chatty, "--retries", "0", "--report", "-", "d.csv"];
    let output = push(dir.path(), &with_key(&server, &args));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for row in rows(&stdout) {
        let phase = match row[0].as_str() {
            "chatty" => "exec: ",
            "refused" => "connect: ",
            _ => "auth: ",
        };
        let cell = &row[7];
        assert!(cell.starts_with(phase), "{row:?}");
        assert!(!cell.contains(['\n', '\r', '\t', '\u{1b}']), "{cell:?}");
        assert!(
            cell.chars().count() <= 320,
            "{} chars: {cell}",
            cell.chars().count()
        );
        if row[0] == "chatty" {
            assert!(cell.contains("exited with status 3"), "{cell}");
            assert!(cell.ends_with("the last words"), "{cell}");
        }
    }
}

/// A URL naming a directory on the device (`.../firmware`, as scp users write it) wrote
/// `firmware.part` beside it and then `mv` moved it inside: the device was recorded as
/// updated, `--exec` ran on the directory, and nothing was replaced. It is refused before
/// anything is sent, permanently, over SFTP (sshd) and SCP (dropbear), a symlink to a
/// directory too, and nothing is left on the device.
#[test]
fn a_url_naming_a_directory_is_refused_before_anything_is_sent() {
    let sshd = Server::sshd();
    let dropbear = Server::dropbear(true);
    for (server, method) in [(&sshd, "sftp"), (&dropbear, "scp")] {
        let (dir, remote) = workspace(server);
        fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
        let (firmware, linked) = (remote.join("firmware"), remote.join("linked"));
        fs::create_dir(&firmware).unwrap();
        std::os::unix::fs::symlink(&firmware, &linked).unwrap();
        let marker = remote.join("installed");
        fs::write(
            dir.path().join("d.csv"),
            format!(
                "id,url\ndir,{}\nlink,{}\n",
                server.url(&firmware),
                server.url(&linked)
            ),
        )
        .unwrap();
        let exec = format!("touch {}", marker.display());
        let args = ["--retries", "3", "--exec", &exec, "--report", "-", "d.csv"];
        let output = push(dir.path(), &with_key(server, &args));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{method}: {stderr}");
        for (row, path) in rows(&stdout).iter().zip([&firmware, &linked]) {
            assert_eq!(
                (row[2].as_str(), row[3].as_str(), row[4].as_str()),
                ("failed", "1", "0"),
                "{method}: {row:?}"
            );
            assert_eq!(
                row[7],
                format!(
                    "upload: {0} is a directory on the device: the URL must name the file to \
                     write, e.g. {0}/fw.bin",
                    path.display()
                ),
                "{method}"
            );
        }
        let inside: Vec<_> = fs::read_dir(&firmware).unwrap().collect();
        assert!(inside.is_empty(), "{method}: {inside:?}");
        let mut beside: Vec<String> = fs::read_dir(&remote)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        assert_eq!(beside, ["firmware", "linked"], "{method}: nothing else");
    }
}
