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
    pub(super) fn install() -> Result<Signals, AppError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminated = Arc::new(AtomicBool::new(false));
        let register = || -> io::Result<()> {
            flag::register_conditional_shutdown(
                SIGINT,
                exit::INTERRUPTED.into(),
                interrupt.clone(),
            )?;
            flag::register(SIGINT, interrupt.clone())?;
            flag::register_conditional_shutdown(
                SIGTERM,
                exit::TERMINATED.into(),
                interrupt.clone(),
            )?;
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
