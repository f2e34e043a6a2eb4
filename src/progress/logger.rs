//! The global logger: env_logger, wrapped so that log lines never tear the progress bars.
//!
//! Owns: the installed `log::Log`. Must not: own or draw bars; it only suspends the live ones
//! (found through `bars::live_bars`) around each write.

use std::sync::OnceLock;

use super::bars::live_bars;

/// Installs `builder`'s logger as the global logger, hiding live progress bars around each log
/// write, and sets the maximum log level from its filter. Only the first call has an effect;
/// later calls, or a call after another logger was installed, are ignored.
pub fn install_logger(mut builder: env_logger::Builder) {
    static LOGGER: OnceLock<BarAwareLogger> = OnceLock::new();
    if LOGGER.get().is_some() {
        return;
    }
    let logger = LOGGER.get_or_init(|| BarAwareLogger {
        inner: builder.build(),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.inner.filter());
    }
}

/// An env_logger `Logger` that suspends the live bars while it writes.
struct BarAwareLogger {
    inner: env_logger::Logger,
}

impl log::Log for BarAwareLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        // The slot's lock is released before writing: a slow write must not hold up the
        // progress thread when it clears the slot.
        match live_bars() {
            Some(multi) => multi.suspend(|| self.inner.log(record)),
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}
