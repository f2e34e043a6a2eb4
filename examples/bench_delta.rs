//! `scripts/bench-delta`'s two cases, each printed as one table.
//!
//! `bench_delta ssh BINARY DEVICES MIB BANDWIDTH CONCURRENCY`: DEVICES SSH devices on a private
//! sshd (the tests' `tests/ssh/servers.rs`, on 127.0.0.1) each holding a MIB MiB base; the new
//! image has 1% of its 4 KiB blocks rewritten and 1 MiB inserted in the middle. The release
//! BINARY pushes it to all of them in full, then (the devices reset to the base) with
//! `--delta-from`, both under `--bandwidth BANDWIDTH`: wall time, orchestrator CPU and peak RSS,
//! bytes on the wire (the report's `bytes`), patch time. Every device's file is checked against
//! the new image after each run.
//!
//! `bench_delta pair OLD NEW`: the patches this crate makes from OLD to NEW (each format, size and
//! time), beside `zstd -19 --long --patch-from`, `bsdiff` and `xdelta3 -9` run by hand.
//!
//! Everything stays on loopback and in a temporary directory; the sshd is stopped by the
//! `Server`'s drop (its own pid).

#[allow(dead_code)]
#[path = "../tests/ssh/servers.rs"]
mod servers;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use update_orchestrator::delta::DeltaSet;
use update_orchestrator::payload::Payload;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ssh") if args.len() == 6 => ssh_case(&args[1..]),
        Some("pair") if args.len() == 3 => pair_case(Path::new(&args[1]), Path::new(&args[2])),
        _ => {
            eprintln!(
                "usage: bench_delta ssh BINARY DEVICES MIB BANDWIDTH CONCURRENCY | bench_delta pair OLD NEW"
            );
            std::process::exit(2);
        }
    }
}

/// What one child process cost: wall, CPU (user + system) and peak RSS, from `wait4`.
struct Cost {
    wall: Duration,
    cpu: Duration,
    peak_rss_mib: f64,
    success: bool,
    stderr: String,
}

// The child is reaped by `wait4` (which also gives its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(command: &mut Command) -> Cost {
    let started = Instant::now();
    let stderr_path = std::env::temp_dir().join(format!("bench-delta-{}.err", std::process::id()));
    let stderr = fs::File::create(&stderr_path).expect("stderr file");
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the command");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with pointers to live locals.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32, "wait4");
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = fs::remove_file(&stderr_path);
    Cost {
        wall: started.elapsed(),
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr,
    }
}

/// Random bytes from the kernel: incompressible, like an encrypted or compressed image.
fn noise(len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut out = vec![0; len];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut out))
        .expect("/dev/urandom");
    out
}

/// The image pair: 1% of the 4 KiB blocks rewritten, 1 MiB inserted in the middle.
fn image_pair(mib: usize) -> (Vec<u8>, Vec<u8>) {
    let base = noise(mib << 20);
    let mut new = base.clone();
    let blocks = new.len() / 4096;
    for n in 0..blocks / 100 {
        let block = (n * 7919) % blocks;
        new[block * 4096..(block + 1) * 4096].copy_from_slice(&noise(4096));
    }
    let middle = new.len() / 2;
    new.splice(middle..middle, noise(1 << 20));
    (base, new)
}

fn sha256(path: &Path) -> String {
    let file = fs::File::open(path).expect("open");
    update_orchestrator::digest::Sha256Digest::of_reader(file)
        .expect("read")
        .0
        .hex()
}

fn ssh_case(args: &[String]) {
    let binary = PathBuf::from(&args[0]);
    let devices: usize = args[1].parse().expect("DEVICES");
    let mib: usize = args[2].parse().expect("MIB");
    let (bandwidth, concurrency) = (&args[3], &args[4]);
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let (base, new) = image_pair(mib);
    fs::write(dir.join("fw-old.bin"), &base).expect("base");
    fs::write(dir.join("fw-new.bin"), &new).expect("new");
    let expected = sha256(&dir.join("fw-new.bin"));
    let server = servers::Server::sshd();
    fs::write(dir.join("known_hosts"), server.known_hosts_line() + "\n").expect("known_hosts");
    let remote = dir.join("devices");
    fs::create_dir(&remote).expect("devices dir");
    let mut csv = String::from("id,url\n");
    for i in 0..devices {
        csv.push_str(&format!(
            "dev-{i},{}\n",
            server.url(&remote.join(format!("dev-{i}.bin")))
        ));
    }
    fs::write(dir.join("devices.csv"), csv).expect("registry");
    println!(
        "{devices} SSH devices (private sshd on 127.0.0.1) holding a {mib} MiB base; new image {} bytes \
         (1% of 4 KiB blocks rewritten + 1 MiB inserted); --bandwidth {bandwidth}, --concurrency {concurrency}; {} cores, load {}",
        new.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<8} {:>9} {:>8} {:>13} {:>16} {:>11} {:>12} {:>9} {:>15} {:>12}",
        "push",
        "wall_s",
        "cpu_s",
        "peak_rss_MiB",
        "bytes_on_wire",
        "% of full",
        "delta/full",
        "link_s",
        "device_cpu_s",
        "patch_s"
    );
    let mut full_wall = None;
    let mut full_bytes = 0;
    for (name, extra) in [("full", None), ("delta", Some("fw-old.bin"))] {
        for i in 0..devices {
            fs::write(remote.join(format!("dev-{i}.bin")), &base).expect("reset a device");
        }
        let report = dir.join(format!("{name}.csv"));
        let mut command = Command::new(&binary);
        command
            .current_dir(dir)
            .args(["push", "--payload", "fw-new.bin"]);
        command.arg("--identity").arg(&server.client_key);
        command.args(["--known-hosts", "known_hosts", "--bandwidth", bandwidth]);
        command.args(["--concurrency", concurrency, "--progress-interval", "30s"]);
        command
            .args(["--stall-timeout", "120s", "--report"])
            .arg(&report);
        command.env_remove("SSH_AUTH_SOCK");
        if let Some(base) = extra {
            command.args(["--delta-from", base]);
        }
        command.arg("devices.csv");
        let device_cpu = sshd_cpu(server.pid());
        let cost = measure(&mut command);
        assert!(cost.success, "{name} push failed:\n{}", cost.stderr);
        let device_cpu = wait_for_sessions(server.pid()) - device_cpu;
        let text = fs::read_to_string(&report).expect("report");
        let bytes = report_bytes(&text);
        for i in 0..devices {
            assert_eq!(
                sha256(&remote.join(format!("dev-{i}.bin"))),
                expected,
                "dev-{i} after {name}"
            );
        }
        let patch_time = cost
            .stderr
            .lines()
            .filter(|line| line.starts_with("delta: ") && line.contains(" patch from "))
            .filter_map(|line| line.rsplit_once(" in ").map(|(_, t)| t.to_string()))
            .collect::<Vec<_>>()
            .join(" + ");
        let full = *full_wall.get_or_insert(cost.wall);
        if name == "full" {
            full_bytes = bytes;
        }
        println!(
            "{:<8} {:>9.1} {:>8.1} {:>13.0} {:>16} {:>10.2}% {:>11.1}x {:>9.1} {:>15.1} {:>12}",
            name,
            cost.wall.as_secs_f64(),
            cost.cpu.as_secs_f64(),
            cost.peak_rss_mib,
            bytes,
            bytes as f64 * 100.0 / full_bytes.max(1) as f64,
            full.as_secs_f64() / cost.wall.as_secs_f64(),
            bytes as f64 / link_rate(bandwidth),
            device_cpu,
            if patch_time.is_empty() {
                "-".to_string()
            } else {
                patch_time
            },
        );
    }
    println!(
        "(delta/full: how many times faster than the full push; link_s: bytes_on_wire at the \
         --bandwidth; device_cpu_s: CPU of the sshd and its sessions, the devices' own work \
         (hashing, zstd), here on the same cores as the orchestrator; every device checked by \
         SHA-256 after each push)"
    );
}

/// Bytes a second of a `--bandwidth` value such as `20MiB/s`.
fn link_rate(bandwidth: &str) -> f64 {
    let size = update_orchestrator::units::parse_size(bandwidth.trim_end_matches("/s"));
    size.map_or(f64::INFINITY, |rate| rate as f64)
}

/// CPU seconds of the sshd and every session it has reaped (utime, stime, cutime, cstime).
fn sshd_cpu(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, rest)| rest.split(' ').collect());
    let ticks: f64 = (11..15)
        .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// `sshd_cpu` once the sshd has reaped its sessions (at most 10 s), so the count is complete.
fn wait_for_sessions(pid: u32) -> f64 {
    let until = Instant::now() + Duration::from_secs(10);
    let children = format!("/proc/{pid}/task/{pid}/children");
    let busy = || {
        !fs::read_to_string(&children)
            .unwrap_or_default()
            .trim()
            .is_empty()
    };
    while Instant::now() < until && busy() {
        std::thread::sleep(Duration::from_millis(100));
    }
    sshd_cpu(pid)
}

/// The sum of the report's `bytes` column.
fn report_bytes(report: &str) -> u64 {
    let mut lines = report.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = header
        .iter()
        .position(|c| *c == "bytes")
        .expect("bytes column");
    lines
        .filter_map(|line| line.split(',').nth(column)?.parse::<u64>().ok())
        .sum()
}

fn pair_case(old: &Path, new: &Path) {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let new_len = fs::metadata(new).expect("NEW").len();
    let compressed = measure(
        Command::new("zstd")
            .args(["-19", "-q", "-f", "-o"])
            .arg(dir.join("full.zst"))
            .arg(new),
    );
    assert!(compressed.success, "zstd -19: {}", compressed.stderr);
    let full_zst = fs::metadata(dir.join("full.zst")).expect("full.zst").len();
    println!(
        "real pair: {} ({} bytes) -> {} ({new_len} bytes; zstd -19 of it alone: {full_zst} bytes)",
        old.display(),
        fs::metadata(old).expect("OLD").len(),
        new.display()
    );
    println!(
        "{:<40} {:>12} {:>10} {:>8} {:>13}",
        "patch", "bytes", "% of new", "time_s", "peak_rss_MiB"
    );
    let row = |name: &str, len: u64, time: Duration, rss: f64| {
        println!(
            "{:<40} {:>12} {:>9.2}% {:>8.1} {:>13}",
            name,
            len,
            len as f64 * 100.0 / new_len as f64,
            time.as_secs_f64(),
            if rss > 0.0 {
                format!("{rss:.0}")
            } else {
                "(in-process)".to_string()
            }
        );
    };
    let payload = Payload::open(new, false).expect("NEW as a payload");
    let started = Instant::now();
    let set = DeltaSet::prepare(&payload, &[old.to_path_buf()], &mut |_| {}).expect("our patches");
    let ours_took = started.elapsed();
    for patch in &set.bases[0].patches {
        row(
            &format!("ours: {}", patch.format),
            patch.file.len(),
            patch.took,
            0.0,
        );
    }
    if set.bases[0].patches.is_empty() {
        println!("ours: no patch under 60% of the new file");
    }
    println!(
        "(ours: both formats encoded in {:.1} s in all)",
        ours_took.as_secs_f64()
    );
    let tools: [(&str, &str, Vec<String>); 3] = [
        (
            "zstd -19 --long=27 --patch-from (by hand)",
            "zstd",
            vec![
                "-19".into(),
                "--long=27".into(),
                "-q".into(),
                "-f".into(),
                format!("--patch-from={}", old.display()),
                new.display().to_string(),
                "-o".into(),
                dir.join("p.zst").display().to_string(),
            ],
        ),
        (
            "bsdiff (by hand)",
            "bsdiff",
            vec![
                old.display().to_string(),
                new.display().to_string(),
                dir.join("p.bsdiff").display().to_string(),
            ],
        ),
        (
            "xdelta3 -9 (by hand)",
            "xdelta3",
            vec![
                "-e".into(),
                "-9".into(),
                "-f".into(),
                "-s".into(),
                old.display().to_string(),
                new.display().to_string(),
                dir.join("p.xdelta").display().to_string(),
            ],
        ),
    ];
    for (name, program, args) in tools {
        let out = PathBuf::from(args.last().expect("output"));
        let cost = measure(Command::new(program).args(&args));
        if !cost.success {
            println!("{name:<40} failed: {}", cost.stderr.trim());
            continue;
        }
        row(
            name,
            fs::metadata(&out).expect("patch").len(),
            cost.wall,
            cost.peak_rss_mib,
        );
    }
}
