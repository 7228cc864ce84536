//! The `kiln` command. `main.rs` only parses arguments; each command lives in
//! its own module so tests and benchmarks can call it directly.

pub mod agent_command;
pub mod cli;
pub mod client;
pub mod console;
pub mod local;
pub mod process_memory;
pub mod repo;
pub mod reports;
pub mod run_command;
pub mod secrets;
pub mod server_command;
pub mod signals;
