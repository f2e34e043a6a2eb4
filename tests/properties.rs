//! Property tests (proptest): generated inputs against the parsers, the registry loader, the
//! templates and the journal reader. Each property is either "never panics, whatever the bytes"
//! or a round trip / invariant checked on generated valid input; proptest shrinks a failure to
//! a minimal case. Case counts are kept modest so the suite stays fast.
//!
//! A crate root's `mod` looks beside it, hence the `#[path]`s into `tests/properties/`.

#[path = "properties/inventory.rs"]
mod inventory;
#[path = "properties/journal.rs"]
mod journal;
#[path = "properties/parsers.rs"]
mod parsers;
#[path = "properties/registry.rs"]
mod registry;
#[path = "properties/template.rs"]
mod template;

/// The cases each property runs: enough to find edge cases, few enough to keep `cargo test` fast.
pub const CASES: u32 = 256;
