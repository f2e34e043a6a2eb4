//! The update lifecycle over SSH against the private sshd: `--probe` before the push,
//! `fixtures/fake-install.sh` as the install command (the version file vanishes, then holds the
//! new version after a delay, as a rebooting device would), the health wait and `--rollback`.

use crate::servers::Server;
use crate::util::text;
use std::fs;
use std::path::Path;

fn strs(row: &[String; 6]) -> [&str; 6] {
    row.each_ref().map(String::as_str)
}

/// Pushes `fw.bin` in `dir` to `server` (with its client key, and `dir/known_hosts` trusting it)
/// with `args`.
fn push(dir: &Path, server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let key = server.client_key.display().to_string();
    let login = [
        "--payload",
        "fw.bin",
        "--identity",
        &key,
        "--known-hosts",
        "known_hosts",
    ];
    let output = crate::util::push(dir, &[&login[..], args].concat());
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// Report rows as `id -> [status, error, stage, version_before, version_after, rollback]`.
fn rows(report: &str) -> Vec<(String, [String; 6])> {
    let mut reader = csv::Reader::from_reader(report.as_bytes());
    reader
        .records()
        .map(|r| {
            let r = r.expect("report row");
            let pick = [2, 7, 10, 11, 12, 13].map(|i| r[i].to_string());
            (r[0].to_string(), pick)
        })
        .collect()
}

#[test]
fn probe_install_wait_check_and_rollback_over_ssh() {
    let server = Server::sshd();
    let (dir, remote) = crate::util::workspace(&server);
    fs::write(dir.path().join("fw.bin"), crate::util::bytes(100_000, 5)).unwrap();
    let installer = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake-install.sh");
    // id, version now, version the install brings, its delay (s); the good device's version
    // file has spaces, quotes and `;` in its name: it must reach `cat` as one argument. The
    // margins (1s reboots, a 15s --health-timeout, 17s for the slow one) hold on a loaded
    // machine, where each SSH probe can take seconds.
    let devices = [
        ("current", "2.0", "2.0", "1", "current.version"),
        ("good", "1.0", "2.0", "1", "v 1;'\"$(id)`x`.version"),
        ("bad", "1.0", "1.0", "1", "bad.version"),
        ("slow", "1.0", "2.0", "17", "slow.version"),
    ];
    let mut csv = String::from("id,url,vfile,new,delay\n");
    for (id, now, new, delay, vfile) in devices {
        let vfile = remote.join(vfile);
        fs::write(&vfile, format!("{now}\n")).unwrap();
        let url = server.url(&remote.join(format!("{id}.bin")));
        let quoted = vfile.display().to_string().replace('"', "\"\"");
        csv.push_str(&format!("{id},{url},\"{quoted}\",{new},{delay}\n"));
    }
    fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let exec = format!(
        "sh {} {{path}} {{vfile}} {{new}} {{delay}}",
        installer.display()
    );
    let (status, stdout, stderr) = push(
        dir.path(),
        &server,
        &[
            "--exec",
            &exec,
            "--probe",
            "cat {vfile}",
            "--expect-version",
            "2.0",
            // Each SSH probe is a full handshake: polling gently keeps the CPU for the other
            // tests (hundreds of handshakes made a parallel upload test's verify time out).
            "--probe-interval",
            "1s",
            "--health-timeout",
            "15s",
            "--rollback",
            "echo rolled back > {path}.rollback",
            "--report",
            "-",
            "--concurrency",
            "4",
            "devices.csv",
        ],
    );
    assert_eq!(status, Some(1), "{stderr}\n{stdout}");
    let rows = rows(&stdout);
    let row = |id: &str| {
        rows.iter()
            .find(|(row_id, _)| row_id == id)
            .map(|(_, row)| row.clone())
            .unwrap_or_else(|| panic!("no row for {id}\n{stdout}"))
    };

    // Already at 2.0: skipped before any byte was sent.
    assert_eq!(
        strs(&row("current")),
        ["skipped", "already at version 2.0", "probe", "2.0", "", ""]
    );
    assert!(!remote.join("current.bin").exists());

    // Installed, "rebooted" for a second, back on 2.0.
    assert_eq!(
        strs(&row("good")),
        ["succeeded", "", "done", "1.0", "2.0", ""]
    );
    assert!(remote.join("good.bin").exists());
    assert!(!remote.join("good.bin.rollback").exists());

    // Back on 1.0: rolled back, and the rollback command really ran.
    let bad = row("bad");
    assert_eq!(
        [&bad[0], &bad[2], &bad[3], &bad[4], &bad[5]],
        ["failed", "rollback", "1.0", "1.0", "rolled back"]
    );
    assert!(
        bad[1].starts_with("check: the device reports version \"1.0\", not 2.0")
            && bad[1].ends_with("(rolled back)"),
        "{bad:?}"
    );
    assert_eq!(
        fs::read_to_string(remote.join("bad.bin.rollback")).unwrap(),
        "rolled back\n"
    );

    // Still "rebooting" when --health-timeout passed: the probe kept failing.
    let slow = row("slow");
    assert_eq!([&slow[0], &slow[2], &slow[4]], ["failed", "rollback", ""]);
    assert!(
        slow[1].starts_with("wait: last probe: exited with status 1, not version 2.0")
            && slow[1].contains("(--health-timeout)"),
        "{slow:?}"
    );
}

/// `devices.csv` in `dir`, listing one device, `id`, whose file is `remote/ID.bin`.
fn one_device(dir: &Path, server: &Server, remote: &Path, id: &str) {
    let url = server.url(&remote.join(format!("{id}.bin")));
    fs::write(dir.join("devices.csv"), format!("id,url\n{id},{url}\n")).unwrap();
}

/// Issue 19: `--exec 'fw-install {path} && (sleep 1; reboot) &'` keeps the exec channel open
/// through the reboot; the dropped session was retried, a fresh upload and the installer again
/// (it ran 4 times). Once `--exec` has started, a lost connection is "outcome unknown": the
/// probe decides, or the device fails, and the installer never runs twice.
#[test]
fn an_install_that_drops_its_session_runs_once() {
    let server = Server::sshd();
    let (dir, remote) = crate::util::workspace(&server);
    fs::write(dir.path().join("fw.bin"), crate::util::bytes(50_000, 9)).unwrap();
    let installer = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reboot-install.sh");
    let exec = format!(
        "sh {} {{path}}.runs {{path}}.version 2.0",
        installer.display()
    );
    let run = |id: &str, lifecycle: &[&str]| {
        one_device(dir.path(), &server, &remote, id);
        let retried = ["--retries", "3", "--exec", &exec, "--report", "-"];
        let args = [&retried[..], lifecycle, &["devices.csv"]].concat();
        let (status, stdout, stderr) = push(dir.path(), &server, &args);
        let runs = fs::read_to_string(remote.join(format!("{id}.bin.runs"))).unwrap_or_default();
        (status, rows(&stdout), runs, format!("{stderr}\n{stdout}"))
    };

    // With a probe: the health wait sees 2.0 and the device succeeds. The probe prints a
    // greeting first, as a login banner or a shell's rc file would: its last line counts.
    let probe = [
        "--probe",
        "echo 'Welcome to fw-os'; echo; cat {path}.version",
        "--expect-version",
        "2.0",
        "--probe-interval",
        "1s",
        "--health-timeout",
        "30s",
    ];
    let (status, rows, runs, output) = run("probed", &probe);
    assert_eq!(status, Some(0), "{output}");
    assert_eq!(runs, "run\n", "the installer ran once\n{output}");
    assert_eq!(
        strs(&rows[0].1),
        ["succeeded", "", "done", "", "2.0", ""],
        "{output}"
    );

    // Without one: failed, outcome unknown, and still one run.
    let (status, rows, runs, output) = run("blind", &[]);
    assert_eq!(status, Some(1), "{output}");
    assert_eq!(runs, "run\n", "the installer ran once\n{output}");
    let [status, error, stage, ..] = strs(&rows[0].1);
    assert_eq!([status, stage], ["failed", "install"], "{output}");
    assert!(
        error
            .starts_with("exec: connection lost during the install (outcome unknown; it ran once)"),
        "{error}"
    );
}

/// What a successful `--exec` printed is kept: a `stage` line in `--events` (`output`), and a
/// log record at `-v`.
#[test]
fn a_successful_install_keeps_its_last_lines() {
    let server = Server::sshd();
    let (dir, remote) = crate::util::workspace(&server);
    fs::write(dir.path().join("fw.bin"), crate::util::bytes(10_000, 3)).unwrap();
    one_device(dir.path(), &server, &remote, "dev-1");
    let args = [
        "-v",
        "--exec",
        "echo installing {path}; echo installer done",
        "--events",
        "events.jsonl",
        "devices.csv",
    ];
    let (status, _, stderr) = push(dir.path(), &server, &args);
    assert_eq!(status, Some(0), "{stderr}");
    let events = fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let stage: serde_json::Value = events
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["type"] == "stage")
        .unwrap_or_else(|| panic!("no stage line\n{events}"));
    let expected = format!(
        "last output: installing {} | installer done",
        remote.join("dev-1.bin").display()
    );
    assert_eq!(stage["stage"], "install", "{stage}");
    assert_eq!(stage["output"], expected.as_str(), "{stage}");
    assert!(
        stderr.contains(&format!("dev-1: --exec succeeded; {expected}")),
        "{stderr}"
    );
}
