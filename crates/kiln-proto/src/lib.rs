//! Generated types and services of `proto/agent.proto`, and their
//! conversions from and to the pipeline's types.

mod convert;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("kiln.agent.v1");
}

pub use v1::*;
