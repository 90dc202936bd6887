//! Running a pipeline on this machine: the pipeline file, the executor, the
//! job cache and its bounds, the logs and the host-local gate.

pub mod cache;
pub mod evict;
pub mod exec;
pub mod gate;
pub mod logs;
pub mod pipeline;
