use super::encode::{skip_bsdiff, window_log};
use super::*;

#[track_caller]
fn check_tools(answer: &str, expected: Tools) {
    assert_eq!(parse_tools(answer), expected, "{answer:?}");
}

#[test]
fn tools_are_read_from_the_probe() {
    let none = Tools::default();
    let zstd = Tools { zstd: true, ..none };
    let bspatch = Tools {
        bspatch: true,
        ..none
    };
    check_tools("zstd: \nbspatch: \n", none);
    check_tools(
        "zstd: *** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***\nbspatch: \n",
        zstd,
    );
    check_tools(
        "zstd: *** zstd command line interface 64-bits v1.4.5, by Yann Collet ***\nbspatch: \n",
        zstd,
    );
    // --patch-from arrived in 1.4.5
    check_tools(
        "zstd: *** zstd command line interface 64-bits v1.4.4, by Yann Collet ***\n",
        none,
    );
    check_tools(
        "zstd: *** zstd command line interface 32-bits v1.3.8, by Yann Collet ***\n",
        none,
    );
    check_tools(
        "zstd: sh: zstd: not found\nbspatch: /usr/bin/bspatch\n",
        bspatch,
    );
    check_tools(
        "zstd: *** Zstandard CLI (64-bit) v1.10.0, by Yann Collet ***\nbspatch: /bin/bspatch\n",
        Tools {
            zstd: true,
            bspatch: true,
            custom: false,
        },
    );
    check_tools("", none);
}

#[test]
fn bsdiff_is_made_where_it_can_pay() {
    const MIB: u64 = 1 << 20;
    for (base, payload, zstd, skipped) in [
        // small files: always (bsdiff takes seconds at most)
        (8 * MIB, 8 * MIB, Some(MIB / 100), None),
        (16 * MIB, 16 * MIB, Some(MIB / 100), None),
        // large files whose zstd patch is already small (data): not worth its time
        (
            64 * MIB,
            65 * MIB,
            Some(2 * MIB),
            Some("the zstd patch is under 5%"),
        ),
        // large files whose zstd patch is poor (executables): made
        (64 * MIB, 65 * MIB, Some(4 * MIB), None),
        (64 * MIB, 65 * MIB, None, None),
        // too large for its memory
        (300 * MIB, 65 * MIB, None, Some("over 256 MiB")),
        (64 * MIB, 300 * MIB, Some(MIB), Some("over 256 MiB")),
    ] {
        let why = skip_bsdiff(base, payload, zstd);
        match (skipped, &why) {
            (None, None) => {}
            (Some(expected), Some(why)) => assert!(why.contains(expected), "{why}"),
            _ => panic!("{base} {payload} {zstd:?}: {why:?}"),
        }
    }
}

#[test]
fn the_window_covers_the_larger_file() {
    for (base, payload, expected) in [
        (1, 1, 10),
        (64 << 20, 64 << 20, 27),
        ((64 << 20) - 1, 1, 26),
        (1 << 20, (65 << 20) + 1, 27),
        (5 << 30, 1, 30),
    ] {
        assert_eq!(window_log(base, payload), expected, "{base} {payload}");
        assert!(1u64 << expected >= base.max(payload).min(1 << 30));
    }
}

#[test]
fn the_zstd_command_names_the_memory_it_needs() {
    assert_eq!(
        zstd_apply_command(
            27,
            "/data/fw bin",
            "/data/fw.bin.delta.part",
            "/data/fw.bin.part"
        ),
        "zstd -d -q -f --memory=128MB --patch-from='/data/fw bin' '/data/fw.bin.delta.part' -o '/data/fw.bin.part'"
    );
    assert!(zstd_apply_command(10, "a", "b", "c").contains("--memory=1MB"));
}
