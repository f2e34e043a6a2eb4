//! The exit codes: one table. `app::Outcome`, `app::AppError`, `main` and the usage errors
//! return these constants; argh's `error_code(...)` lines in `--help` take only literals, so a
//! test pins each `--help` listing to this table.
//!
//! Must not: decide an outcome (the app maps a run to one of these).

/// Every device succeeded (or there was nothing to do).
pub const SUCCEEDED: u8 = 0;
/// The run finished and some devices failed (or the payload changed mid-run).
pub const SOME_FAILED: u8 = 1;
/// A usage or input error: nothing was pushed.
pub const USAGE: u8 = 2;
/// Aborted by a rollout threshold (a canary failed, or `--max-failures`).
pub const ABORTED: u8 = 3;
/// Stopped early because the maintenance window (`--window`) closed.
pub const WINDOW_CLOSED: u8 = 4;
/// Interrupted by SIGINT (128 + 2).
pub const INTERRUPTED: u8 = 130;
/// Stopped by SIGTERM (128 + 15).
pub const TERMINATED: u8 = 143;

/// The codes and what they mean, as `update-orchestrator --help` lists them.
pub const TABLE: &[(u8, &str)] = &[
    (SUCCEEDED, "every device succeeded"),
    (SOME_FAILED, "the run finished and some devices failed"),
    (USAGE, "usage or input error: nothing was pushed"),
    (
        ABORTED,
        "aborted by a rollout threshold (a canary failed, or --max-failures)",
    ),
    (
        WINDOW_CLOSED,
        "stopped early because the maintenance window (--window) closed",
    ),
    (INTERRUPTED, "interrupted by SIGINT (143: SIGTERM)"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use argh::ArgsInfo;

    /// The `--help` listings of the top level and of `push` are the table (push may say more
    /// after the table's words); `status` lists a subset with its own words.
    #[test]
    fn help_lists_the_exit_code_table() {
        let listed = |info: argh::CommandInfoWithArgs| -> Vec<(i32, String)> {
            info.error_codes
                .iter()
                .map(|e| (e.code, e.description.to_string()))
                .collect()
        };
        let table: Vec<(i32, String)> = TABLE
            .iter()
            .map(|(code, text)| (i32::from(*code), text.to_string()))
            .collect();
        assert_eq!(listed(super::super::TopLevel::get_args_info()), table);
        let push = listed(super::super::PushArgs::get_args_info());
        assert_eq!(push.len(), table.len(), "{push:?}");
        for ((code, text), (table_code, table_text)) in push.iter().zip(&table) {
            assert_eq!(code, table_code);
            assert!(text.starts_with(table_text.as_str()), "{code}: {text}");
        }
        let status = listed(super::super::StatusArgs::get_args_info());
        let codes: Vec<i32> = status.iter().map(|(code, _)| *code).collect();
        assert_eq!(codes, [i32::from(SUCCEEDED), i32::from(USAGE)]);
    }
}
