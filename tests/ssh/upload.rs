//! Uploads to OpenSSH's sshd: SFTP to `.part`, the check, the rename, resuming, many devices.

use super::servers::Server;
use super::util::{
    attempt, bytes, check_error, one_device, options, payload, registry, remote_dir, sha256_file,
};
use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use update_orchestrator::delivery::ssh::{SshDelivery, Verify};
use update_orchestrator::delivery::{ErrorKind, Phase};
use update_orchestrator::template::Template;

#[test]
fn uploads_verifies_renames_and_runs_exec() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (content, payload) = payload(dir.path(), 3 * 1024 * 1024 + 4321);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    options.exec =
        Some(Template::parse("sha256sum {path} > {path}.installed && echo done {id}").unwrap());
    let delivery = SshDelivery::new(options);
    let outcome = attempt(
        &delivery,
        &one_device("pos-1", &server.url(&target)),
        0,
        &payload,
    );
    let metered = outcome.metered;
    let delivered = outcome.delivered();
    assert_eq!(delivered.method, "sftp");
    assert_eq!(delivered.bytes_sent, payload.len());
    assert_eq!(metered, payload.len());
    assert_eq!(delivered.http_status, None);
    assert!(fs::read(&target).unwrap() == content, "stored bytes differ");
    assert!(
        !target.with_extension("bin.part").exists(),
        "a .part was left"
    );
    let installed = fs::read_to_string(target.with_extension("bin.installed")).unwrap();
    assert!(
        installed.starts_with(&payload.digest().hex()),
        "{installed}"
    );
}

#[test]
fn replaces_an_existing_file() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (content, payload) = payload(dir.path(), 100_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    fs::write(&target, b"the old firmware").unwrap();
    let delivery = SshDelivery::new(options(&server, dir.path()));
    let devices = one_device("d", &server.url(&target));
    for _ in 0..2 {
        attempt(&delivery, &devices, 0, &payload).delivered();
        assert!(fs::read(&target).unwrap() == content);
    }
}

#[test]
fn hundred_devices_at_concurrency_twenty() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 256 * 1024);
    let remote = remote_dir(dir.path());
    let rows: Vec<Vec<String>> = (0..100)
        .map(|n| {
            let url = server.url(&remote.join(format!("d{n:03}.bin")));
            vec![format!("d{n:03}"), url]
        })
        .collect();
    let devices = registry(&["id", "url"], &rows);
    // This test is about 100 devices arriving intact at concurrency 20, not speed: on a loaded
    // 2-core machine twenty `sha256sum`s at once overran the usual 10s verify bound.
    let mut options = options(&server, dir.path());
    options.stall_timeout = Duration::from_secs(30);
    let delivery = SshDelivery::new(options);
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= devices.devices.len() {
                        break;
                    }
                    if let Err(error) = attempt(&delivery, &devices, index, &payload).result {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("d{index:03}: {error}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    for n in 0..100 {
        let stored = remote.join(format!("d{n:03}.bin"));
        assert_eq!(
            sha256_file(&stored),
            payload.digest().hex(),
            "{}",
            stored.display()
        );
    }
}

#[test]
fn resumes_from_a_part_file() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (content, payload) = payload(dir.path(), 3 * 1024 * 1024);
    let target = remote_dir(dir.path()).join("fw.bin");
    let part = target.with_extension("bin.part");
    let already = 1024 * 1024 + 17;
    fs::write(&part, &content[..already]).unwrap();
    let delivery = SshDelivery::new(options(&server, dir.path()));
    let outcome = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    );
    let metered = outcome.metered;
    let delivered = outcome.delivered();
    assert_eq!(delivered.method, "sftp-resumed");
    assert_eq!(delivered.bytes_sent, payload.len() - already as u64);
    assert_eq!(metered, delivered.bytes_sent);
    assert_eq!(sha256_file(&target), payload.digest().hex());
    assert!(!part.exists(), "a .part was left");
}

// Regression: a `.part` left by an interrupted upload of another payload was resumed, failed
// the check as if the device had corrupted the file, and cost the attempt (and a backoff) on
// every device. It is removed and the payload sent again from the start, in the same attempt.
#[test]
fn a_part_left_by_another_payload_is_sent_again_within_the_attempt() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 2 * 1024 * 1024);
    let target = remote_dir(dir.path()).join("fw.bin");
    let part = target.with_extension("bin.part");
    fs::write(&part, bytes(1024 * 1024, 99)).unwrap();
    let delivery = SshDelivery::new(options(&server, dir.path()));
    let devices = one_device("d", &server.url(&target));
    let outcome = attempt(&delivery, &devices, 0, &payload);
    let metered = outcome.metered;
    let delivered = outcome.delivered();
    assert_eq!(
        (delivered.method, delivered.bytes_sent),
        ("sftp", 1024 * 1024 + payload.len())
    );
    assert_eq!(metered, delivered.bytes_sent);
    assert_eq!(sha256_file(&target), payload.digest().hex());
    assert!(!part.exists(), "a .part was left");
}

#[test]
fn size_check_and_no_check_upload_whole_files() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (content, payload) = payload(dir.path(), 1_500_000);
    let remote = remote_dir(dir.path());
    for (verify, name) in [(Verify::Size, "size.bin"), (Verify::None, "none.bin")] {
        let target = remote.join(name);
        // Without a SHA-256 check a .part is never trusted: it is overwritten, not resumed.
        fs::write(target.with_extension("bin.part"), &content[..1000]).unwrap();
        let mut options = options(&server, dir.path());
        options.verify = verify;
        let delivery = SshDelivery::new(options);
        let delivered = attempt(
            &delivery,
            &one_device("d", &server.url(&target)),
            0,
            &payload,
        )
        .delivered();
        assert_eq!(
            (delivered.method, delivered.bytes_sent),
            ("sftp", payload.len()),
            "{verify:?}"
        );
        assert!(fs::read(&target).unwrap() == content, "{verify:?}");
    }
}

#[test]
fn missing_remote_directory_is_permanent() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 1000);
    let target = dir.path().join("no-such-dir/fw.bin");
    let delivery = SshDelivery::new(options(&server, dir.path()));
    let error = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    )
    .error();
    check_error(&error, Phase::Upload, ErrorKind::Request, false);
    assert!(error.message.contains("check the URL"), "{error}");
}

// Regression: the `.part` was created 0644 and renamed over the file, so a 0700 installer
// lost its x bit (`--exec '{path}'` failed with status 126) and a 0600 file became readable by
// all. As scp does: a replaced file keeps its mode, a new one gets the payload's (less the
// device's umask). Over SFTP (sshd), SCP and `cat` (dropbear).
#[test]
fn a_replaced_file_keeps_its_mode_and_a_new_one_gets_the_payloads() {
    use std::os::unix::fs::PermissionsExt;
    let mode_of =
        |path: &std::path::Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    for (server, method) in [
        (Server::sshd(), "sftp"),
        (Server::dropbear(true), "scp"),
        (Server::dropbear(false), "cat"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let installer = dir.path().join("installer.sh");
        fs::write(&installer, "#!/bin/sh\necho installed\n").unwrap();
        fs::set_permissions(&installer, fs::Permissions::from_mode(0o755)).unwrap();
        let payload = update_orchestrator::payload::Payload::open(&installer, false).unwrap();
        let remote = remote_dir(dir.path());
        let (private, new) = (remote.join("private.sh"), remote.join("new.sh"));
        let executable = remote.join("installer.sh");
        for (path, mode) in [(&private, 0o600), (&executable, 0o700)] {
            fs::write(path, "old").unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        let plain = SshDelivery::new(options(&server, dir.path()));
        let mut installing = options(&server, dir.path());
        installing.exec = Some(Template::parse("{path}").unwrap());
        let delivery = SshDelivery::new(installing);
        let delivered = attempt(
            &delivery,
            &one_device("d", &server.url(&executable)),
            0,
            &payload,
        )
        .delivered();
        assert_eq!(delivered.method, method);
        assert!(
            delivered
                .install_output
                .as_deref()
                .unwrap_or("")
                .contains("installed"),
            "{method}: {delivered:?}"
        );
        assert_eq!(mode_of(&executable), 0o700, "{method}");
        for (path, expected) in [(&private, 0o600), (&new, 0o755)] {
            attempt(&plain, &one_device("d", &server.url(path)), 0, &payload).delivered();
            assert_eq!(mode_of(path), expected, "{method}: {}", path.display());
        }
    }
}

// Regression: with sshd's `MaxSessions 1` no device could be updated: the SFTP channel stayed
// open while the check's command asked for a second one ("verify: Channel open failure
// (connect failed)"), retried, the payload sent again each time. One session channel at a
// time, as OpenSSH's scp and sftp use.
#[test]
fn a_device_allowing_one_session_at_a_time_is_updated() {
    let server = Server::sshd_at("127.0.0.1", "MaxSessions 1");
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 300_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    fs::write(&target, "old").unwrap();
    for verify in [Verify::Sha256, Verify::Size, Verify::None] {
        let mut options = options(&server, dir.path());
        options.verify = verify;
        options.exec = Some(Template::parse("echo installed {path}").unwrap());
        let delivery = SshDelivery::new(options);
        let delivered = attempt(
            &delivery,
            &one_device("d", &server.url(&target)),
            0,
            &payload,
        )
        .delivered();
        assert_eq!(delivered.method, "sftp", "{verify:?}");
        assert!(
            delivered
                .install_output
                .as_deref()
                .unwrap_or("")
                .contains("installed"),
            "{verify:?}: {delivered:?}"
        );
        assert_eq!(sha256_file(&target), payload.digest().hex(), "{verify:?}");
        fs::write(&target, "old").unwrap();
    }
}

// Regression: a `.part` that is a directory had scp write the payload inside it (a stray copy),
// then failed the check, and every attempt did it again. It is refused at once, permanently,
// with nothing written, on SFTP and SCP alike.
#[test]
fn a_part_that_is_a_directory_is_refused_at_once() {
    for server in [Server::sshd(), Server::dropbear(true)] {
        let dir = tempfile::tempdir().unwrap();
        let (_, payload) = payload(dir.path(), 100_000);
        let target = remote_dir(dir.path()).join("fw.bin");
        let part = target.with_extension("bin.part");
        fs::create_dir(&part).unwrap();
        let delivery = SshDelivery::new(options(&server, dir.path()));
        let outcome = attempt(
            &delivery,
            &one_device("d", &server.url(&target)),
            0,
            &payload,
        );
        let error = outcome.error();
        check_error(&error, Phase::Upload, ErrorKind::Request, false);
        assert!(
            error
                .message
                .starts_with(&format!("{} is a directory on the device", part.display())),
            "{error}"
        );
        assert_eq!(error.bytes_sent, 0, "{error}");
        assert_eq!(
            fs::read_dir(&part).unwrap().count(),
            0,
            "written inside {error}"
        );
        assert!(!target.exists());
    }
}
