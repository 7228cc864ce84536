//! End-to-end tests of the `kiln` binary: real processes, real git
//! repositories, the real Docker engine and real PostgreSQL
//! (`scripts/setup-test-env.sh` provides both).

mod access;
mod access_matrix;
mod agents;
mod architecture;
mod docs;
mod downloads;
mod events;
mod forges;
mod forks;
mod hostile;
mod isolation;
mod limits;
mod reruns;
mod run;
mod run_logs;
mod server;
mod soak;
mod support;
mod tls;
mod ui;
mod ui_live;
mod ui_log;
mod ui_settings;
mod up;
