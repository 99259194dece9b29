//! Shared pieces of the integration tests, the demo and the benchmark.
pub mod env;
pub mod frames;
pub mod layout1;
pub mod netns;
pub mod progs;
pub mod stress;
