//! update-orchestrator: push one update file to thousands of devices, safely and resumably.

pub mod digest;
pub mod events;
