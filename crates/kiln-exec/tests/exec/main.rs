//! Integration tests of the executors, on this machine's real shell and real
//! Docker engine (`scripts/setup-test-env.sh` provides the engine and the
//! `kiln-test/busybox` image).

mod docker;
mod logs;
mod outputs;
mod process;
mod support;
