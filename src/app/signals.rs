//! The signal handlers of a push.

use super::AppError;
use crate::cli::exit;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// SIGINT and SIGTERM: the first sets `interrupt` (stop dispatching, let in-flight finish);
/// a second one exits at once with 130 (SIGINT) or 143 (SIGTERM).
pub(super) struct Signals {
    pub(super) interrupt: Arc<AtomicBool>,
    pub(super) terminated: Arc<AtomicBool>,
}

impl Signals {
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
