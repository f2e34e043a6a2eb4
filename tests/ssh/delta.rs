//! `--delta-from` over SSH, the real binary against the private sshd and dropbear: a device
//! holding a known base gets a patch, applied and verified on the device; every other case
//! (unknown base, no base, no tool, a patch that fails to apply or to verify) sends the whole
//! payload in the same attempt, and the report says which and why. Whatever the route, the
//! device ends with exactly the payload (`sha256_file`).

use crate::servers::Server;
use crate::util::{push, push_with_timeouts, rows, sha256_file, text, with_key, workspace};
use std::fs;
use std::path::Path;

/// A 2 MiB base and the new version: a few 4 KiB blocks rewritten and 64 KiB inserted.
fn versions(seed: u64) -> (Vec<u8>, Vec<u8>) {
    let base = crate::util::bytes(2 << 20, seed);
    let mut new = base.clone();
    for block in [3usize, 77, 300, 411] {
        let fresh = crate::util::bytes(4096, seed + block as u64);
        new[block * 4096..(block + 1) * 4096].copy_from_slice(&fresh);
    }
    let inserted = crate::util::bytes(64 << 10, seed + 1000);
    new.splice(1 << 20..1 << 20, inserted);
    (base, new)
}

/// Writes `fw-1.0.bin` (the base) and `fw.bin` (the payload) into `dir`; returns the base.
fn write_versions(dir: &Path) -> Vec<u8> {
    let (base, new) = versions(11);
    fs::write(dir.join("fw-1.0.bin"), &base).unwrap();
    fs::write(dir.join("fw.bin"), &new).unwrap();
    base
}

/// A registry of `devices` (id, the file each holds at its path: `Some(bytes)` or none).
fn registry(server: &Server, dir: &Path, remote: &Path, devices: &[(&str, Option<&[u8]>)]) {
    let mut csv = String::from("id,url\n");
    for (id, held) in devices {
        let path = remote.join(format!("{id}.bin"));
        if let Some(bytes) = held {
            fs::write(&path, bytes).unwrap();
        }
        csv.push_str(&format!("{id},{}\n", server.url(&path)));
    }
    fs::write(dir.join("devices.csv"), csv).unwrap();
}

/// The report's rows by id: (status, attempts, bytes, transfer, delta_base, transfer_note).
fn outcomes(stdout: &str) -> Vec<(String, String, u64, String, String, String)> {
    let header: Vec<String> = csv::Reader::from_reader(stdout.as_bytes())
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let column = |name: &str| header.iter().position(|c| c == name).expect(name);
    rows(stdout)
        .into_iter()
        .map(|row| {
            (
                row[column("status")].clone(),
                row[column("attempts")].clone(),
                row[column("bytes")].parse().unwrap(),
                row[column("transfer")].clone(),
                row[column("delta_base")].clone(),
                row[column("transfer_note")].clone(),
            )
        })
        .collect()
}

/// Every device's file is the payload, and no `.part` or `.delta.part` is left.
fn assert_all_updated(dir: &Path, remote: &Path, ids: &[&str]) {
    let expected = sha256_file(&dir.join("fw.bin"));
    for id in ids {
        assert_eq!(
            sha256_file(&remote.join(format!("{id}.bin"))),
            expected,
            "{id}"
        );
        for leftover in [".bin.part", ".bin.delta.part"] {
            assert!(
                !remote.join(format!("{id}{leftover}")).exists(),
                "{id}{leftover}"
            );
        }
    }
}

fn run(server: &Server, dir: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "--delta-from",
        "fw-1.0.bin",
        "--report",
        "-",
        "--concurrency",
        "4",
    ];
    args.extend_from_slice(extra);
    args.push("devices.csv");
    let output = push(dir, &with_key(server, &args));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{stdout}");
    (stdout, stderr)
}

#[test]
fn a_known_base_gets_a_patch_and_others_the_whole_file() {
    let server = Server::sshd();
    let (dir, remote) = workspace(&server);
    let base = write_versions(dir.path());
    let stranger = crate::util::bytes(50_000, 99);
    let devices = [
        ("on-base-1", Some(&base[..])),
        ("on-base-2", Some(&base[..])),
        ("unknown", Some(&stranger[..])),
        ("fresh", None),
    ];
    registry(&server, dir.path(), &remote, &devices);
    let outputs = [
        "--events",
        "events.jsonl",
        "--metrics-file",
        "run.prom",
        "--journal",
        "run.journal",
    ];
    let (stdout, stderr) = run(&server, dir.path(), &outputs);
    assert!(
        stderr.contains("delta: zstd patch from fw-1.0.bin:"),
        "{stderr}"
    );
    let payload_len = fs::metadata(dir.path().join("fw.bin")).unwrap().len();
    let first = outcomes(&stdout);
    for (status, attempts, bytes, transfer, base, note) in &first[..2] {
        assert_eq!(
            (&**status, &**attempts, &**transfer, &**base),
            ("succeeded", "1", "delta", "fw-1.0.bin"),
            "{stdout}"
        );
        assert!(
            *bytes < payload_len / 10,
            "a patch of {bytes} bytes: {stdout}"
        );
        assert!(note == "zstd patch" || note == "bsdiff patch", "{note}");
    }
    let (status, attempts, bytes, transfer, _, note) = &first[2];
    assert_eq!(
        (&**status, &**attempts, &**transfer, *bytes),
        ("succeeded", "1", "full", payload_len)
    );
    assert!(note.contains("is none of --delta-from"), "{note}");
    let (_, _, _, transfer, _, note) = &first[3];
    assert_eq!(transfer, "full");
    assert!(note.starts_with("no readable base at "), "{note}");
    assert_all_updated(
        dir.path(),
        &remote,
        &["on-base-1", "on-base-2", "unknown", "fresh"],
    );
    assert!(
        stderr.contains("; 2 by delta, 2 full, "),
        "the summary: {stderr}"
    );
    // The events file, the metrics and the journal say the same.
    let events = fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let transferred: Vec<&str> = events
        .lines()
        .filter(|l| l.contains(r#""type":"transferred""#))
        .collect();
    assert_eq!(transferred.len(), 4, "{events}");
    assert!(
        transferred.iter().any(
            |l| l.contains(r#""delta_base":"fw-1.0.bin""#) && l.contains(r#""id":"on-base-1""#)
        ),
        "{events}"
    );
    let metrics = fs::read_to_string(dir.path().join("run.prom")).unwrap();
    assert!(
        metrics.contains("update_orchestrator_delta_devices_total{transfer=\"delta\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("update_orchestrator_delta_devices_total{transfer=\"full\"} 2"),
        "{metrics}"
    );
    let journal = fs::read_to_string(dir.path().join("run.journal")).unwrap();
    assert_eq!(
        journal
            .matches(r#""transfer":{"transfer":"delta","delta_base":"fw-1.0.bin""#)
            .count(),
        2,
        "{journal}"
    );
    // Resuming is as before: every device succeeded, delta or full, so nothing is pushed again.
    let (stdout, _) = run(&server, dir.path(), &["--journal", "run.journal"]);
    assert!(
        outcomes(&stdout).iter().all(|o| o.0 == "skipped"),
        "{stdout}"
    );
}

/// A directory of links to every program of this machine but those whose names start with
/// one of `skip`: a device's `PATH` without them.
fn programs_but(skip: &[&str]) -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    for dir in ["/usr/bin", "/bin", "/usr/sbin"] {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name();
            if skip
                .iter()
                .any(|tool| name.to_string_lossy().starts_with(tool))
            {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), bin.path().join(&name));
        }
    }
    bin
}

/// The private sshd, its commands run with `PATH` set to `bin`.
fn sshd_with_path(bin: &Path) -> Server {
    Server::sshd_at("127.0.0.1", &format!("SetEnv PATH={}", bin.display()))
}

#[test]
fn a_device_without_zstd_or_bspatch_gets_the_whole_file() {
    let bin = programs_but(&["zstd", "unzstd", "zstdcat", "bspatch"]);
    let server = sshd_with_path(bin.path());
    let (dir, remote) = workspace(&server);
    let base = write_versions(dir.path());
    registry(
        &server,
        dir.path(),
        &remote,
        &[("no-tools", Some(&base[..]))],
    );
    let (stdout, _) = run(&server, dir.path(), &[]);
    let (status, attempts, _, transfer, _, note) = &outcomes(&stdout)[0];
    assert_eq!(
        (&**status, &**attempts, &**transfer),
        ("succeeded", "1", "full"),
        "{stdout}"
    );
    assert!(
        note.contains(
            "has no tool for the patches from fw-1.0.bin: it needs zstd 1.4.5 or later or bspatch"
        ),
        "{note}"
    );
    assert_all_updated(dir.path(), &remote, &["no-tools"]);
}

// The note said "no readable base at PATH" though the base was there: any failure to hash it
// read as a missing base.
#[test]
fn a_device_that_cannot_hash_the_base_gets_the_whole_file_and_says_why() {
    let bin = programs_but(&["openssl", "sha256sum", "busybox"]);
    let server = sshd_with_path(bin.path());
    let (dir, remote) = workspace(&server);
    let base = write_versions(dir.path());
    registry(
        &server,
        dir.path(),
        &remote,
        &[("no-hash", Some(&base[..]))],
    );
    let (stdout, _) = run(&server, dir.path(), &["--verify", "size"]);
    let (status, attempts, _, transfer, _, note) = &outcomes(&stdout)[0];
    assert_eq!(
        (&**status, &**attempts, &**transfer),
        ("succeeded", "1", "full"),
        "{stdout}"
    );
    assert_eq!(
        note,
        "cannot hash the base: the device has no openssl, sha256sum or busybox"
    );
    assert_all_updated(dir.path(), &remote, &["no-hash"]);
}

#[test]
fn a_patch_that_fails_to_apply_or_verify_falls_back_in_the_same_attempt() {
    let server = Server::sshd();
    for (apply, expected_note) in [
        // the patch is damaged on the device: zstd refuses it
        (
            "echo damaged > {patch} && zstd -d -q -f --memory=64MB --patch-from={base} {patch} -o {out}",
            "--delta-apply on the device exited with status 1",
        ),
        // the tool says it worked but wrote something else: the final hash catches it
        (
            "echo wrong > {out}",
            "the patched file failed its check: SHA-256 on the device is",
        ),
        // the tool says it worked but wrote nothing: it failed the device with "cannot compute
        // SHA-256 on the device with openssl, sha256sum or busybox"
        (
            "true {base} {patch} {out}",
            "--delta-apply exited 0 but wrote no ",
        ),
    ] {
        let (dir, remote) = workspace(&server);
        let base = write_versions(dir.path());
        registry(&server, dir.path(), &remote, &[("dev", Some(&base[..]))]);
        let (stdout, _) = run(&server, dir.path(), &["--delta-apply", apply]);
        let payload_len = fs::metadata(dir.path().join("fw.bin")).unwrap().len();
        let (status, attempts, bytes, transfer, _, note) = &outcomes(&stdout)[0];
        assert_eq!(
            (&**status, &**attempts, &**transfer),
            ("succeeded", "1", "full"),
            "{stdout}"
        );
        assert!(note.contains(expected_note), "{note}");
        assert!(
            *bytes > payload_len,
            "the patch and the whole file went: {bytes}"
        );
        assert_all_updated(dir.path(), &remote, &["dev"]);
    }
}

// A zstd that never ended failed the device with the generic "upload: the command on the
// device did not finish within 4s" and left PATH.delta.part (and zstd running) behind.
#[test]
fn a_patch_step_that_never_ends_is_stopped_and_the_whole_file_goes() {
    // The device's zstd answers the probe, writes its process ID, and sleeps.
    let bin = programs_but(&["zstd", "unzstd", "zstdcat", "bspatch"]);
    let pid_file = bin.path().join("zstd.pid");
    let zstd = bin.path().join("zstd");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in -V) exec /usr/bin/zstd -V ;; esac\necho $$ > '{}'\nexec sleep 20\n",
        pid_file.display()
    );
    fs::write(&zstd, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&zstd, fs::Permissions::from_mode(0o755)).unwrap();
    let server = sshd_with_path(bin.path());
    let (dir, remote) = workspace(&server);
    let base = write_versions(dir.path());
    registry(&server, dir.path(), &remote, &[("stuck", Some(&base[..]))]);
    let args = ["--delta-from", "fw-1.0.bin", "--report", "-", "devices.csv"];
    let output = push_with_timeouts(dir.path(), "5s", "3s", &with_key(&server, &args));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{stdout}");
    let (status, attempts, _, transfer, _, note) = &outcomes(&stdout)[0];
    assert_eq!(
        (&**status, &**attempts, &**transfer),
        ("succeeded", "1", "full"),
        "{stdout}"
    );
    let path = remote.join("stuck.bin");
    let expected = format!(
        "zstd -d --patch-from={} did not finish within 4s; stopped it",
        path.display()
    );
    assert_eq!(note, &expected);
    assert_all_updated(dir.path(), &remote, &["stuck"]);
    let pid = fs::read_to_string(&pid_file).expect("the stuck zstd ran");
    assert!(!running(pid.trim()), "zstd (pid {pid}) is still running");
}

/// Whether process `pid` is alive (not gone, not a zombie), waiting up to 2 s for it to go.
fn running(pid: &str) -> bool {
    let stat = Path::new("/proc").join(pid).join("stat");
    for _ in 0..20 {
        match fs::read_to_string(&stat) {
            Err(_) => return false,
            Ok(text)
                if text
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return false;
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    true
}

/// The patch the run sends a device with zstd and bspatch: made here as the run makes it.
fn the_patch(dir: &Path) -> Vec<u8> {
    use update_orchestrator::delta::{DeltaSet, Tools, choose};
    let payload = update_orchestrator::payload::Payload::open(&dir.join("fw.bin"), false).unwrap();
    let base = dir.join("fw-1.0.bin");
    let set = DeltaSet::prepare(&payload, &[base], &mut |_| {}).unwrap();
    let tools = Tools {
        zstd: true,
        bspatch: true,
        custom: false,
    };
    let patch = choose(&set.bases[0], tools).expect("a patch");
    fs::read(patch.file.path()).unwrap()
}

// A PATH.delta.part left by something else was resumed blindly: the patch was appended to it,
// zstd failed, and the whole file went. A resumed patch was reported as "sftp".
#[test]
fn a_resumed_patch_is_checked_and_sent_again_when_it_is_not_ours() {
    let server = Server::sshd();
    for (name, stale) in [("ours", true), ("garbage", false)] {
        let (dir, remote) = workspace(&server);
        let base = write_versions(dir.path());
        let patch = the_patch(dir.path());
        let half = patch.len() / 2;
        let left = match stale {
            true => patch[..half].to_vec(),
            false => crate::util::bytes(half, 5),
        };
        fs::write(remote.join("dev.bin.delta.part"), &left).unwrap();
        registry(&server, dir.path(), &remote, &[("dev", Some(&base[..]))]);
        let (stdout, _) = run(&server, dir.path(), &[]);
        let (status, attempts, bytes, transfer, _, _) = &outcomes(&stdout)[0];
        assert_eq!(
            (&**status, &**attempts, &**transfer),
            ("succeeded", "1", "delta"),
            "{name}: {stdout}"
        );
        let method = rows(&stdout)[0][9].clone();
        let (patch_len, half) = (patch.len() as u64, half as u64);
        let expected = match stale {
            // the rest of the patch only
            true => ("sftp-resumed", patch_len - half),
            // the rest appended to the garbage, then the whole patch again
            false => ("sftp", patch_len - half + patch_len),
        };
        assert_eq!((&*method, *bytes), expected, "{name}: {stdout}");
        assert_all_updated(dir.path(), &remote, &["dev"]);
    }
}

#[test]
fn delta_apply_runs_a_custom_tool() {
    let server = Server::sshd();
    let (dir, remote) = workspace(&server);
    let base = write_versions(dir.path());
    registry(&server, dir.path(), &remote, &[("dev", Some(&base[..]))]);
    let log = remote.join("applied.log");
    let tool = remote.join("fw-patch");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\ncase \"$1\" in\n  zstd) exec zstd -d -q -f --memory=64MB --patch-from=\"$2\" \"$3\" -o \"$4\" ;;\n  bsdiff) exec bspatch \"$2\" \"$4\" \"$3\" ;;\nesac\nexit 9\n",
        log.display()
    );
    fs::write(&tool, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let apply = format!("{} {{format}} {{base}} {{patch}} {{out}}", tool.display());
    let (stdout, _) = run(&server, dir.path(), &["--delta-apply", &apply]);
    let (status, _, _, transfer, _, note) = &outcomes(&stdout)[0];
    assert_eq!((&**status, &**transfer), ("succeeded", "delta"), "{stdout}");
    let format = note.strip_suffix(" patch").expect(note);
    let logged = fs::read_to_string(&log).unwrap();
    let path = remote.join("dev.bin").display().to_string();
    let expected = format!("{format} {path} {path}.delta.part {path}.part\n");
    assert_eq!(logged, expected);
    assert_all_updated(dir.path(), &remote, &["dev"]);
}

#[test]
fn dropbear_gets_the_patch_by_scp() {
    let server = Server::dropbear(true);
    let (dir, remote) = workspace(&server);
    let base = write_versions(dir.path());
    registry(
        &server,
        dir.path(),
        &remote,
        &[("embedded", Some(&base[..])), ("other", None)],
    );
    let (stdout, _) = run(&server, dir.path(), &[]);
    let outcomes = outcomes(&stdout);
    assert_eq!(
        (&*outcomes[0].0, &*outcomes[0].3),
        ("succeeded", "delta"),
        "{stdout}"
    );
    assert_eq!(
        (&*outcomes[1].0, &*outcomes[1].3),
        ("succeeded", "full"),
        "{stdout}"
    );
    let method = rows(&stdout)[0][9].clone();
    assert_eq!(method, "scp");
    assert_all_updated(dir.path(), &remote, &["embedded", "other"]);
}
