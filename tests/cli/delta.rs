//! `--delta-from` before the run: the patches are what the stock device tools apply (the real
//! `zstd` and `bspatch` are the oracles), a wrong base is refused by zstd itself, `--dry-run`
//! shows each patch's size, and a patch not worth sending is dropped with a warning. The
//! SSH side (applying, verifying, falling back) is in `tests/ssh/delta.rs`.

use crate::util::Test;
use std::path::Path;
use std::process::Command;
use update_orchestrator::delta::{DeltaSet, Format};
use update_orchestrator::payload::Payload;

/// Pseudo-random bytes, so no two blocks compress alike.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    crate::util::fill_pseudo_random(&mut out, &mut state);
    out
}

/// A 1 MiB base, and the new version: three 4 KiB blocks rewritten, 32 KiB inserted.
fn versions() -> (Vec<u8>, Vec<u8>) {
    let base = noise(1 << 20, 7);
    let mut new = base.clone();
    for block in [5usize, 100, 200] {
        new[block * 4096..(block + 1) * 4096].copy_from_slice(&noise(4096, block as u64 + 1));
    }
    new.splice(500_000..500_000, noise(32 << 10, 99));
    (base, new)
}

fn run(program: &str, args: &[&Path]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/install-deps test installs it)"))
}

#[test]
fn stock_zstd_and_bspatch_apply_our_patches() {
    let test = Test::new();
    let (base, new) = versions();
    let base_path = test.write("fw-1.0.bin", &base);
    let payload = Payload::open(&test.write("fw.bin", &new), false).unwrap();
    let set = DeltaSet::prepare(&payload, std::slice::from_ref(&base_path), &mut |_| {}).unwrap();
    let patches = &set.bases[0].patches;
    let formats: Vec<Format> = patches.iter().map(|patch| patch.format).collect();
    assert!(
        formats.contains(&Format::Zstd) && formats.contains(&Format::Bsdiff),
        "{formats:?}"
    );
    for patch in patches {
        let len = patch.file.len();
        assert!(
            len < new.len() as u64 / 10,
            "{} patch of {len} bytes",
            patch.format
        );
        let out = test.path(&format!("out.{}", patch.format));
        let patch_path = patch.file.path();
        let output = match patch.format {
            Format::Zstd => {
                let memory = format!("--memory={}MB", (1u64 << patch.window_log) >> 20);
                let from = format!("--patch-from={}", base_path.display());
                Command::new("zstd")
                    .args(["-d", "-q", "-f", &memory, &from])
                    .arg(patch_path)
                    .arg("-o")
                    .arg(&out)
                    .output()
                    .expect("zstd (scripts/install-deps test installs it)")
            }
            Format::Bsdiff => run("bspatch", &[&base_path, &out, patch_path]),
        };
        assert!(output.status.success(), "{}: {output:?}", patch.format);
        assert!(
            std::fs::read(&out).unwrap() == new,
            "{} gave other bytes",
            patch.format
        );
    }
    // A wrong base: zstd's own checksum refuses the result (bspatch would not: the final
    // SHA-256 on the device is what catches it there).
    let wrong = test.write("wrong.bin", noise(1 << 20, 1234));
    let zstd = patches.iter().find(|p| p.format == Format::Zstd).unwrap();
    let output = Command::new("zstd")
        .args(["-d", "-q", "-f", "--memory=64MB"])
        .arg(format!("--patch-from={}", wrong.display()))
        .arg(zstd.file.path())
        .arg("-o")
        .arg(test.path("wrong.out"))
        .output()
        .unwrap();
    assert!(!output.status.success(), "zstd accepted a wrong base");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("checksum"),
        "{output:?}"
    );
}

#[test]
fn dry_run_shows_each_patch_and_drops_one_not_worth_sending() {
    let mut test = Test::new();
    let (base, new) = versions();
    test.write("fw-1.0.bin", &base);
    test.write("unrelated.bin", noise(1 << 20, 4321));
    test.write("fw.bin", &new);
    test.write("devices.csv", "id,url\na,ssh://127.0.0.1:9/data/fw.bin\n");
    test.args(["push", "--payload", "fw.bin", "--dry-run"])
        .args([
            "--delta-from",
            "fw-1.0.bin",
            "--delta-from",
            "unrelated.bin",
        ])
        .arg("devices.csv");
    let output = test.run();
    output
        .expect_status(0)
        .expect_stdout(
            "delta patches (SSH devices holding a base get the smallest they can apply):",
        )
        .expect_stderr("delta: zstd patch from fw-1.0.bin: ")
        .expect_stderr("not using the zstd patch from unrelated.bin: ")
        .expect_stdout("from unrelated.bin (sha256 ");
    let line = output
        .stdout
        .lines()
        .find(|l| l.contains("from fw-1.0.bin"))
        .unwrap();
    assert!(line.contains("zstd ") && line.contains("bsdiff "), "{line}");
    let unrelated = output
        .stdout
        .lines()
        .find(|l| l.contains("from unrelated.bin"))
        .unwrap();
    assert!(
        unrelated.ends_with("none worth sending: devices on it get the full file"),
        "{unrelated}"
    );
}

#[test]
fn delivery_commands_get_the_patch_for_the_declared_base() {
    let mut test = Test::new();
    let (base, new) = versions();
    test.write("fw-1.0.bin", &base);
    test.write("fw.bin", &new);
    let base_sha = update_orchestrator::digest::Sha256Digest::of_reader(&base[..])
        .unwrap()
        .0
        .hex();
    // by version (the part after the last '-' of the base's stem), by base_sha256, unknown
    test.write(
        "devices.csv",
        format!("id,version,base_sha256\nby-version,1.0,\nby-sha,,{base_sha}\nunknown,0.9,\n"),
    );
    let command = "if [ -n {delta} ]; then cp {delta} {id}.patch && echo {delta_format} {delta_base_sha256} > {id}.base; else echo none > {id}.none; fi";
    test.args(["push", "--payload", "fw.bin", "--delta-from", "fw-1.0.bin"])
        .args(["--deliver-cmd", command, "--report", "-"])
        .arg("devices.csv");
    let output = test.run();
    output.expect_status(0);
    for id in ["by-version", "by-sha"] {
        let said = std::fs::read_to_string(test.path(&format!("{id}.base"))).unwrap();
        let (format, sha) = said.trim().split_once(' ').unwrap();
        assert_eq!(sha, base_sha, "{id}");
        // The vendor tool's side: the patch rebuilds the payload from the base.
        let out = test.path(&format!("{id}.out"));
        let patch = test.path(&format!("{id}.patch"));
        let base_path = test.path("fw-1.0.bin");
        let status = match format {
            "zstd" => Command::new("zstd")
                .args(["-d", "-q", "-f", "--memory=64MB"])
                .arg(format!("--patch-from={}", base_path.display()))
                .arg(&patch)
                .arg("-o")
                .arg(&out)
                .status()
                .unwrap(),
            "bsdiff" => Command::new("bspatch")
                .args([&base_path, &out, &patch])
                .status()
                .unwrap(),
            other => panic!("format {other:?}"),
        };
        assert!(status.success(), "{id}: {format}");
        assert!(
            std::fs::read(&out).unwrap() == new,
            "{id}: the patch rebuilds the payload"
        );
    }
    assert!(test.path("unknown.none").exists(), "{output}");
}
