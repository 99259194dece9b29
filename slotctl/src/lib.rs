//! slotctl's command line and exit statuses, shared by the binary and by
//! the generator of its man pages and shell completions
//! (`examples/dist.rs`, run by `cargo xtask dist`).
pub mod cli;
pub mod exit;
