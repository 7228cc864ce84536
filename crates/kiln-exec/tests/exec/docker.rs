//! Docker executor tests (written with the executor).
