//! update-orchestrator: push one update file to thousands of devices, safely and resumably.

pub mod delivery;
pub mod digest;
pub mod events;
pub mod payload;
pub mod registry;
pub mod template;
