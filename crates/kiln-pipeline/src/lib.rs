//! The `.kiln.yml` pipeline file.
//!
//! [`parse`] turns the text of a pipeline file into a validated, matrix-expanded
//! [`Pipeline`], or into [`Diagnostics`] that each name a file, line and column.
//! This crate does no I/O: the server, the agents and `kiln run` all share it.

mod blank;
mod dag;
mod diagnostics;
mod duration;
mod expand;
mod file;
mod model;
mod parse;
mod schema;
mod status;
mod when;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use duration::Duration;
pub use model::{Artifacts, Build, Pipeline, Reports, Resources, Service, Step, Task};
pub use parse::{MAX_PIPELINE_BYTES, parse};
pub use schema::json_schema;
pub use status::{Event, Status, UnknownName};
pub use when::{ChangeSet, When, glob_match, paths_select};
