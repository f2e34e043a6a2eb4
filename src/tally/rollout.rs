//! The pause note in the rollout status text. The orchestrator's gates add `GATE_PAUSE_NOTE`
//! while an operator holds the run paused, without knowing how this run can be resumed (HTTP
//! control exists only with `--control-token-env`); the progress thread knows, and says only
//! what works (`pause_note`). A stopping run is not resumed: its text drops the note.
//!
//! Owns: recognising, replacing and dropping the note. Must not: do IO.

/// The note the orchestrator's gates put last in the rollout text while the run is paused (one
/// constant for both, in `events`).
pub(crate) const GATE_PAUSE_NOTE: &str = crate::events::PAUSE_NOTE;

/// How every pause note starts, the gates' and `pause_note`'s.
const PAUSE_NOTE_START: &str = "paused: resume with ";

/// The pause note for a run whose HTTP control endpoints exist or not, in process `pid`.
pub(crate) fn pause_note(http_control: bool, pid: u32) -> String {
    let http = if http_control {
        "POST /control/resume or "
    } else {
        ""
    };
    format!("{PAUSE_NOTE_START}{http}SIGUSR2 (kill -USR2 {pid})")
}

/// `text` with the gates' pause note, if it has it, replaced by `note`.
pub(crate) fn with_pause_note(text: &str, note: &str) -> Option<String> {
    text.strip_suffix(GATE_PAUSE_NOTE)
        .filter(|before| before.is_empty() || before.ends_with(", "))
        .map(|before| format!("{before}{note}"))
}

/// `text` without its pause note (the gates' or `pause_note`'s), if it has one.
pub(crate) fn without_pause_note(text: &str) -> String {
    let note = text
        .match_indices(PAUSE_NOTE_START)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || text[..at].ends_with(", "));
    match note {
        Some(at) => text[..at].trim_end_matches(", ").to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint sent an operator to `POST /control/resume`, which answers 404 without
    /// `--control-token-env`, and a paused run that was then aborted kept it in its last line.
    #[test]
    fn the_pause_note_says_what_resumes_this_run_and_goes_when_it_stops() {
        let http = pause_note(true, 42);
        let signal = pause_note(false, 42);
        assert_eq!(
            http,
            "paused: resume with POST /control/resume or SIGUSR2 (kill -USR2 42)"
        );
        assert_eq!(signal, "paused: resume with SIGUSR2 (kill -USR2 42)");
        let cases: [(&str, Option<&str>, &str); 5] = [
            (GATE_PAUSE_NOTE, Some(signal.as_str()), ""),
            (
                "wave 2/3, paused: resume with POST /control/resume or SIGUSR2",
                Some("wave 2/3, paused: resume with SIGUSR2 (kill -USR2 42)"),
                "wave 2/3",
            ),
            ("wave 2/3", None, "wave 2/3"),
            ("", None, ""),
            (
                "wave 1/2, failures 0/3 allowed, paused: resume with SIGUSR2 (kill -USR2 42)",
                None,
                "wave 1/2, failures 0/3 allowed",
            ),
        ];
        for (text, replaced, stopping) in cases {
            assert_eq!(
                with_pause_note(text, &signal).as_deref(),
                replaced,
                "{text:?}"
            );
            assert_eq!(without_pause_note(text), stopping, "{text:?}");
        }
        assert_eq!(
            without_pause_note("waiting (unpaused: resume with nothing)"),
            "waiting (unpaused: resume with nothing)"
        );
    }
}
