//! Jump hosts and proxy commands at the command line: a bastion sshd on 127.0.0.1 and device
//! sshds listening on other loopback addresses (127.0.0.2, 127.0.0.3) that the bastion's
//! `PermitOpen` allows it to forward to. Every test proves the route from the servers' logs
//! (the bastion's logins and `direct-tcpip` channels at `LogLevel DEBUG1`), so a direct
//! connection to a device would fail it.

use crate::servers::{Server, public};
use crate::util::{push, rows, sha256_file, text};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A device sshd on `address`, and a bastion on 127.0.0.1 that may forward only to it (and to
/// `also`), logging channels; the bastion accepts the device's client key.
fn bastion_for(devices: &[&Server]) -> Server {
    let permit: Vec<String> = devices
        .iter()
        .map(|device| format!("{}:{}", device.address, device.port))
        .collect();
    let extra = format!("LogLevel DEBUG1\nPermitOpen {}", permit.join(" "));
    let bastion = Server::sshd_at("127.0.0.1", &extra);
    for device in devices {
        bastion.authorize(&public(&device.client_key));
    }
    bastion
}

/// A test directory: `remote/`, `fw.bin` (`len` bytes), and `known_hosts` with every server.
fn workspace(servers: &[&Server], len: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    fs::create_dir(&remote).unwrap();
    fs::write(dir.path().join("fw.bin"), crate::util::bytes(len, 3)).unwrap();
    let lines: Vec<String> = servers.iter().map(|s| s.known_hosts_line()).collect();
    fs::write(dir.path().join("known_hosts"), lines.join("\n") + "\n").unwrap();
    (dir, remote)
}

/// `devices.csv` with `count` devices on `device`, and an optional `jump` column.
fn registry(dir: &Path, remote: &Path, rows: &[(&Server, Option<String>)], count: usize) {
    let with_jump = rows.iter().any(|(_, jump)| jump.is_some());
    let mut csv = String::from(if with_jump {
        "id,url,jump\n"
    } else {
        "id,url\n"
    });
    for i in 0..count {
        let (device, jump) = &rows[i % rows.len()];
        let url = device.url(&remote.join(format!("d{i}.bin")));
        match jump {
            Some(jump) => csv.push_str(&format!("d{i},{url},{jump}\n")),
            None => csv.push_str(&format!("d{i},{url}\n")),
        }
    }
    fs::write(dir.join("devices.csv"), csv).unwrap();
}

fn jump_url(bastion: &Server) -> String {
    format!("ssh://{}@127.0.0.1:{}", bastion.user, bastion.port)
}

/// The flags every run here shares: the device key, the known_hosts file, no SSH config.
fn base<'a>(key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--payload",
        "fw.bin",
        "--identity",
        key,
        "--known-hosts",
        "known_hosts",
        "--ssh-config",
        "none",
        "--report",
        "report.csv",
    ];
    args.extend(extra);
    args.push("devices.csv");
    args
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// Every device's file arrived whole, and the report says so.
#[track_caller]
fn all_delivered(dir: &Path, remote: &Path, count: usize) -> Vec<Vec<String>> {
    let report = fs::read_to_string(dir.join("report.csv")).unwrap();
    let rows = rows(&report);
    assert_eq!(rows.len(), count, "{report}");
    let expected = sha256_file(&dir.join("fw.bin"));
    for row in &rows {
        assert_eq!(row[2], "succeeded", "{row:?}");
        assert_eq!(
            sha256_file(&remote.join(format!("{}.bin", row[0]))),
            expected
        );
    }
    rows
}

#[test]
fn two_hundred_devices_share_one_connection_to_the_jump_host() {
    let device = Server::sshd_at("127.0.0.2", "");
    let bastion = bastion_for(&[&device]);
    let (dir, remote) = workspace(&[&bastion, &device], 64 << 10);
    registry(dir.path(), &remote, &[(&device, None)], 200);
    let key = device.client_key.display().to_string();
    let jump = jump_url(&bastion);
    let args = base(
        &key,
        &["--jump", &jump, "--concurrency", "50", "--verify", "size"],
    );
    // The servers' readiness probes connected already: only what the run adds counts.
    let before = bastion.log().len();
    let output = push(dir.path(), &args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    all_delivered(dir.path(), &remote, 200);
    let log = bastion.log()[before..].to_string();
    assert_eq!(count(&log, "Accepted publickey"), 1, "one login:\n{log}");
    assert_eq!(
        count(&log, "Connection from"),
        1,
        "one TCP connection:\n{log}"
    );
    // One channel per device session (SFTP, or a fallback's second one) to the one address
    // PermitOpen allows: the devices were reached through the bastion.
    let channels = count(&log, "ctype direct-tcpip");
    assert!(channels >= 200, "{channels} channels:\n{log}");
    assert_eq!(count(&device.log(), "Accepted publickey"), 200);
    // The cipher whose ChaCha20 and Poly1305 our vendored libssh2 runs on OpenSSL
    // (vendor/libssh2-sys/PATCHES.md): these deliveries went through the patched code.
    for direction in ["client->server", "server->client"] {
        let negotiated = format!("{direction} cipher: chacha20-poly1305@openssh.com");
        assert_eq!(count(&log, &negotiated), 1, "{negotiated}:\n{log}");
    }
}

#[test]
fn a_lost_jump_connection_is_reopened_and_its_devices_retried() {
    let device = Server::sshd_at("127.0.0.2", "");
    let mut bastion = bastion_for(&[&device]);
    let (dir, remote) = workspace(&[&bastion, &device], 1 << 20);
    registry(dir.path(), &remote, &[(&device, None)], 40);
    let key = device.client_key.display().to_string();
    let jump = jump_url(&bastion);
    let args = base(
        &key,
        &[
            "--jump",
            &jump,
            "--concurrency",
            "8",
            "--device-bandwidth",
            "4MiB/s",
            "--retries",
            "20",
            "--verify",
            "size",
        ],
    );
    let child = crate::util::push_command(dir.path(), "5s", "10s")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the bastion, and its connections, once some devices are done and others in flight.
    let started = Instant::now();
    while finished_files(&remote) < 8 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    bastion.restart();
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let rows = all_delivered(dir.path(), &remote, 40);
    let retried = rows.iter().filter(|row| row[3] != "1").count();
    assert!(retried > 0, "no device was retried: {rows:?}");
    let log = bastion.log();
    assert_eq!(
        count(&log, "Accepted publickey"),
        2,
        "reconnected once:\n{log}"
    );
}

/// A jump connection that goes silent without closing (the bastion's session frozen) is given
/// up once it answers no keepalive: the devices are retried over a new connection. It was
/// reused for every retry, each failing "no channel ... within --connect-timeout".
#[test]
fn a_silent_jump_connection_is_given_up_and_reopened() {
    let device = Server::sshd_at("127.0.0.2", "");
    let bastion = bastion_for(&[&device]);
    let (dir, remote) = workspace(&[&bastion, &device], 1 << 20);
    registry(dir.path(), &remote, &[(&device, None)], 12);
    let key = device.client_key.display().to_string();
    let jump = jump_url(&bastion);
    let args = base(
        &key,
        &[
            "--jump",
            &jump,
            "--concurrency",
            "4",
            "--device-bandwidth",
            "2MiB/s",
            "--retries",
            "10",
            "--verify",
            "size",
        ],
    );
    let child = crate::util::push_command(dir.path(), "3s", "3s")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while finished_files(&remote) < 4 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let frozen = bastion.freeze_connections();
    let output = child.wait_with_output();
    Server::thaw(&frozen);
    let output = output.unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    all_delivered(dir.path(), &remote, 12);
    assert!(
        stderr.contains("the jump host answered nothing"),
        "the silent connection was given up: {stderr}"
    );
    let log = bastion.log();
    assert_eq!(
        count(&log, "Accepted publickey"),
        2,
        "reconnected once:\n{log}"
    );
}

fn finished_files(remote: &Path) -> usize {
    fs::read_dir(remote)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "bin"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_jump_host_with_a_changed_key_is_refused_and_no_device_is_contacted() {
    let device = Server::sshd_at("127.0.0.2", "");
    let bastion = bastion_for(&[&device]);
    let impostor = Server::sshd();
    let (dir, remote) = workspace(&[&device], 1024);
    // known_hosts has another key for the bastion's address.
    let wrong = impostor.known_hosts_line().replace(
        &format!(":{} ", impostor.port),
        &format!(":{} ", bastion.port),
    );
    let known = fs::read_to_string(dir.path().join("known_hosts")).unwrap() + &wrong + "\n";
    fs::write(dir.path().join("known_hosts"), known).unwrap();
    registry(dir.path(), &remote, &[(&device, None)], 3);
    let key = device.client_key.display().to_string();
    let jump = jump_url(&bastion);
    // The servers' readiness probes connected already: only what the run adds counts.
    let before = bastion.log().len();
    let output = push(dir.path(), &base(&key, &["--jump", &jump]));
    let stderr = text(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    let report = fs::read_to_string(dir.path().join("report.csv")).unwrap();
    let hop = format!("jump host {}@127.0.0.1:{}", bastion.user, bastion.port);
    for row in rows(&report) {
        assert_eq!(row[2], "failed", "{row:?}");
        assert_eq!(row[3], "1", "a changed key is not retried: {row:?}");
        assert!(row[7].contains(&hop), "{row:?}");
        assert!(row[7].to_lowercase().contains("changed"), "{row:?}");
    }
    assert_eq!(
        count(&device.log(), "Connection from"),
        0,
        "{}",
        device.log()
    );
    assert_eq!(count(&bastion.log(), "Accepted publickey"), 0);
    // One try for all three devices: a refusal no retry can mend is remembered (a login per
    // device trips fail2ban on a real bastion).
    let log = bastion.log()[before..].to_string();
    assert_eq!(count(&log, "Connection from"), 1, "{log}");
}

/// A jump host that accepts TCP and never speaks SSH held the devices behind it one after
/// another, each for the whole --connect-timeout (N devices: N timeouts, a connection each):
/// the workers that waited while the one open failed now fail with it.
#[test]
fn devices_waiting_on_a_silent_jump_host_fail_with_its_one_open() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let device = Server::sshd_at("127.0.0.2", "");
    let (dir, remote) = workspace(&[&device], 1024);
    registry(dir.path(), &remote, &[(&device, None)], 6);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    silent.set_nonblocking(true).unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: the test ends it, or 60 s pass.
            for _ in 0..3000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok((stream, _)) = silent.accept() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    held.push(stream);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let key = device.client_key.display().to_string();
    let jump = format!("ssh://{}@127.0.0.1:{port}", device.user);
    let extra = ["--jump", &jump, "--retries", "0", "--concurrency", "6"];
    let output = crate::util::push_with_timeouts(dir.path(), "2s", "10s", &base(&key, &extra));
    stop.store(true, Ordering::SeqCst);
    acceptor.join().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let report = fs::read_to_string(dir.path().join("report.csv")).unwrap();
    for row in rows(&report) {
        assert_eq!(row[2], "failed", "{row:?}");
        assert!(
            row[7].contains(&format!("jump host {}@127.0.0.1:{port}", device.user))
                && row[7].contains("SSH handshake"),
            "{row:?}"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one open for all six");
}

#[test]
fn a_jump_column_routes_each_device_through_its_own_gateway() {
    let east = Server::sshd_at("127.0.0.2", "");
    let west = Server::sshd_at("127.0.0.3", "");
    let east_gateway = bastion_for(&[&east]);
    let west_gateway = bastion_for(&[&west]);
    west_gateway.authorize(&public(&east.client_key));
    east.authorize(&public(&west.client_key));
    west.authorize(&public(&east.client_key));
    let (dir, remote) = workspace(&[&east, &west, &east_gateway, &west_gateway], 4096);
    let rows_spec = [
        (&east, Some(jump_url(&east_gateway))),
        (&west, Some(jump_url(&west_gateway))),
    ];
    registry(dir.path(), &remote, &rows_spec, 12);
    let key = east.client_key.display().to_string();
    // --jump names a gateway that may forward nowhere useful: the column wins.
    let decoy = jump_url(&west_gateway);
    let output = push(
        dir.path(),
        &base(&key, &["--jump", &decoy, "--concurrency", "4"]),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    all_delivered(dir.path(), &remote, 12);
    for (gateway, device) in [(&east_gateway, &east), (&west_gateway, &west)] {
        assert_eq!(count(&gateway.log(), "Accepted publickey"), 1);
        assert_eq!(count(&device.log(), "Accepted publickey"), 6);
    }
}

#[test]
fn a_chain_of_two_jump_hosts() {
    let device = Server::sshd_at("127.0.0.2", "");
    let inner = bastion_for(&[&device]);
    let outer = bastion_for(&[&inner]);
    outer.authorize(&public(&device.client_key));
    let (dir, remote) = workspace(&[&device, &inner, &outer], 4096);
    registry(dir.path(), &remote, &[(&device, None)], 6);
    let key = device.client_key.display().to_string();
    let chain = format!("{},{}", jump_url(&outer), jump_url(&inner));
    let output = push(dir.path(), &base(&key, &["--jump", &chain]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    all_delivered(dir.path(), &remote, 6);
    assert_eq!(count(&outer.log(), "Accepted publickey"), 1);
    assert_eq!(count(&inner.log(), "Accepted publickey"), 1);
}

/// `ssh -W` through the bastion as the ProxyCommand, from an SSH config; `%h %p %r` expanded.
#[test]
fn a_proxy_command_carries_each_connection() {
    let device = Server::sshd_at("127.0.0.2", "");
    let bastion = bastion_for(&[&device]);
    let (dir, remote) = workspace(&[&bastion, &device], 4096);
    let key = device.client_key.display().to_string();
    let config = format!(
        "Host dev\n  HostName 127.0.0.2\n  Port {}\n  User {}\n  ProxyCommand ssh -W %h:%p \
         -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=known_hosts \
         -i {key} -p {} %r@127.0.0.1 2>proxy-%r.log\n",
        device.port, device.user, bastion.port
    );
    fs::write(dir.path().join("ssh_config"), config).unwrap();
    let mut csv = String::from("id,url\n");
    for i in 0..4 {
        csv.push_str(&format!("d{i},ssh://dev{}/d{i}.bin\n", remote.display()));
    }
    fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let mut args = base(&key, &[]);
    let at = args.iter().position(|arg| *arg == "none").unwrap();
    args[at] = "ssh_config";
    let output = push(dir.path(), &args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    all_delivered(dir.path(), &remote, 4);
    let log = bastion.log();
    assert!(
        count(&log, "Accepted publickey") >= 4,
        "one ssh -W per device:\n{log}"
    );
    assert!(
        dir.path()
            .join(format!("proxy-{}.log", device.user))
            .exists()
    );
}

/// `~/.ssh/config` with Host patterns, ProxyJump and IdentityFile: no flag names the route,
/// the user, the port or the key; `--dry-run` shows what `ssh -G` resolves, and the push goes
/// that way.
#[test]
fn home_ssh_config_routes_like_openssh() {
    let device = Server::sshd_at("127.0.0.2", "");
    let bastion = bastion_for(&[&device]);
    let (dir, remote) = workspace(&[&bastion, &device], 4096);
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::copy(&device.client_key, home.join(".ssh/fleet")).unwrap();
    fs::copy(
        dir.path().join("known_hosts"),
        home.join(".ssh/known_hosts"),
    )
    .unwrap();
    let config = format!(
        "Host pos-* !pos-9*\n  HostName 127.0.0.2\n  Port {}\n  User {}\n  IdentityFile ~/.ssh/fleet\n  \
         ProxyJump gw\n\nHost gw\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  \
         IdentityFile ~/.ssh/fleet\n\nHost *\n  User nobody-here\n",
        device.port, device.user, bastion.port, bastion.user
    );
    fs::write(home.join(".ssh/config"), &config).unwrap();
    let mut csv = String::from("id,url\n");
    for i in 0..3 {
        csv.push_str(&format!(
            "pos-{i},ssh://pos-{i}{}/pos-{i}.bin\n",
            remote.display()
        ));
    }
    fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let run = |extra: &[&str]| {
        crate::util::push_command(dir.path(), "5s", "10s")
            .env("HOME", &home)
            .env("USER", &device.user)
            .args(["--payload", "fw.bin", "--report", "report.csv"])
            .args(extra)
            .arg("devices.csv")
            .output()
            .unwrap()
    };
    let dry = run(&["--dry-run"]);
    let stdout = text(&dry.stdout);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let oracle = ssh_g(&home.join(".ssh/config"), "pos-0");
    let gw = ssh_g(&home.join(".ssh/config"), "gw");
    let expected = format!(
        "pos-0: {}@{}:{} identity {}; jump {}@{}:{}",
        oracle["user"],
        oracle["hostname"],
        oracle["port"],
        oracle["identityfile"].replace('~', &home.display().to_string()),
        gw["user"],
        gw["hostname"],
        gw["port"]
    );
    assert_eq!(oracle["proxyjump"], "gw");
    assert!(stdout.contains(&expected), "{expected}\n{stdout}");
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    all_delivered(dir.path(), &remote, 3);
    assert_eq!(count(&bastion.log(), "Accepted publickey"), 1);
}

/// `ssh -G -F config host`, as a map (the first value of each key).
fn ssh_g(config: &Path, host: &str) -> std::collections::HashMap<String, String> {
    let output = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(host)
        .stdin(Stdio::null())
        .output()
        .expect("ssh -G");
    let mut map = std::collections::HashMap::new();
    for line in text(&output.stdout).lines() {
        if let Some((key, value)) = line.split_once(' ') {
            map.entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    map
}

/// A device the jump host cannot reach, and one it may not forward to: each error names the
/// hop and the address; the first is retried (refused), the second is not (prohibited).
#[test]
fn errors_name_the_hop() {
    let device = Server::sshd_at("127.0.0.2", "");
    let dead_port = crate::servers::free_port();
    let extra = format!("LogLevel DEBUG1\nPermitOpen 127.0.0.2:{dead_port}");
    let bastion = Server::sshd_at("127.0.0.1", &extra);
    bastion.authorize(&public(&device.client_key));
    let (dir, remote) = workspace(&[&bastion, &device], 1024);
    let csv = format!(
        "id,url\nrefused,ssh://{user}@127.0.0.2:{dead_port}{r}/a.bin\n\
         prohibited,{}\n",
        device.url(&remote.join("b.bin")),
        user = device.user,
        r = remote.display()
    );
    fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let key = device.client_key.display().to_string();
    let jump = jump_url(&bastion);
    let output = push(
        dir.path(),
        &base(&key, &["--jump", &jump, "--retries", "1"]),
    );
    assert_ne!(output.status.code(), Some(0));
    let report = fs::read_to_string(dir.path().join("report.csv")).unwrap();
    let rows = rows(&report);
    let hop = format!(
        "via jump host {}@127.0.0.1:{}: ",
        bastion.user, bastion.port
    );
    let refused = &rows[0];
    assert_eq!(
        (refused[2].as_str(), refused[3].as_str()),
        ("failed", "2"),
        "{refused:?}"
    );
    let expected = format!("{hop}connection to 127.0.0.2:{dead_port} refused or unreachable");
    assert!(refused[7].contains(&expected), "{refused:?}");
    let prohibited = &rows[1];
    assert_eq!(
        (prohibited[2].as_str(), prohibited[3].as_str()),
        ("failed", "1"),
        "{prohibited:?}"
    );
    let expected = format!(
        "{hop}the jump host may not forward to 127.0.0.2:{}",
        device.port
    );
    assert!(prohibited[7].contains(&expected), "{prohibited:?}");
    assert_eq!(count(&device.log(), "Accepted publickey"), 0);
}

/// A `jump` value that is no jump host stops the run before any device is contacted, naming
/// the registry line.
#[test]
fn a_bad_jump_column_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("fw.bin"), b"x").unwrap();
    let csv = "id,url,jump\na,ssh://127.0.0.2:1/a.bin,\nb,ssh://127.0.0.2:1/b.bin,gw/x\n";
    fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let output = push(
        dir.path(),
        &["--payload", "fw.bin", "--ssh-config", "none", "devices.csv"],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("devices.csv:3: column jump: jump host \"gw/x\": write it as"),
        "{stderr}"
    );
}
