//! The signal handlers of a push: SIGINT and SIGTERM stop it, SIGUSR1 and SIGUSR2 pause and
//! resume it (through `Control`, as the status server's control endpoints do).

use super::AppError;
use crate::cli::exit;
use crate::control::Control;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// SIGINT and SIGTERM: the first sets `interrupt` (stop dispatching, let in-flight finish);
/// a second one exits at once with 130 (SIGINT) or 143 (SIGTERM).
pub(super) struct Signals {
    pub(super) interrupt: Arc<AtomicBool>,
    pub(super) terminated: Arc<AtomicBool>,
}

/// SIGUSR1 and SIGUSR2, as soon as the push starts: their default action ends the process, so
/// a pause sent while the payload is hashed or the registry read would otherwise kill the run
/// it meant to hold. A pause sent then holds the run before its first device.
pub(super) fn install_control(control: &Control) -> Result<(), AppError> {
    use signal_hook::consts::{SIGUSR1, SIGUSR2};
    use signal_hook::flag;
    let register = || -> io::Result<()> {
        flag::register(SIGUSR1, control.pause_signal.clone())?;
        flag::register(SIGUSR2, control.resume_signal.clone())?;
        Ok(())
    };
    register().map_err(|e| AppError::Fatal(format!("cannot install signal handlers: {e}")))
}

impl Signals {
    /// SIGINT and SIGTERM, once the run is about to start (before, their default action ends a
    /// push that has contacted nothing).
    /// `journal`: the run's journal, which the second signal's message points to.
    pub(super) fn install(journal: Option<&std::path::Path>) -> Result<Signals, AppError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminated = Arc::new(AtomicBool::new(false));
        let said: Arc<[u8]> = second_signal_message(journal).into_bytes().into();
        let register = || -> io::Result<()> {
            exit_on_second(SIGINT, exit::INTERRUPTED.into(), &interrupt, &said)?;
            flag::register(SIGINT, interrupt.clone())?;
            exit_on_second(SIGTERM, exit::TERMINATED.into(), &interrupt, &said)?;
            flag::register(SIGTERM, terminated.clone())?;
            flag::register(SIGTERM, interrupt.clone())?;
            Ok(())
        };
        register().map_err(|e| AppError::Fatal(format!("cannot install signal handlers: {e}")))?;
        Ok(Signals {
            interrupt,
            terminated,
        })
    }
}

/// What the second signal leaves: the outputs as the last interval wrote them (a report of the
/// rows so far, metrics and an HTML report still "running"), said before the process ends.
fn second_signal_message(journal: Option<&std::path::Path>) -> String {
    let truth = match journal {
        Some(path) => format!(
            "the journal has every final outcome (update-orchestrator status {})",
            path.display()
        ),
        None => "devices in flight are left as they are".to_string(),
    };
    format!(
        "\nupdate-orchestrator: a second signal: exiting now, without waiting for the devices in \
         flight; the report holds the rows written so far, and --metrics-file and \
         --report-html (if given) still show the run as running; {truth}\n"
    )
}

/// After the first `signal` (`interrupt` set), the next one writes `said` to stderr and ends
/// the process with `status`: only `write(2)` of bytes made before and `_exit(2)`, which are
/// async-signal-safe.
fn exit_on_second(
    signal: i32,
    status: i32,
    interrupt: &Arc<AtomicBool>,
    said: &Arc<[u8]>,
) -> io::Result<()> {
    let (interrupt, said) = (interrupt.clone(), said.clone());
    let action = move || {
        if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; `said` was allocated before
            // the handler was installed and is only read here.
            unsafe {
                libc::write(2, said.as_ptr().cast(), said.len());
            }
            signal_hook::low_level::exit(status);
        }
    };
    // SAFETY: the action only loads an atomic, writes and exits (see above).
    unsafe { signal_hook::low_level::register(signal, action) }.map(|_| ())
}
