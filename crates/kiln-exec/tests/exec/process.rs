//! Process executor tests.
