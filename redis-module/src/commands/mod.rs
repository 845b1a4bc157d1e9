//! One file per group of `RC.*` commands. Each handler checks its arguments, resolves
//! names to their partition, and does all of its work inside that one partition.

pub mod info;
pub mod kick;
pub mod node;
pub mod presence;
pub mod probe;
pub mod publish;
pub mod publish_batch;
pub mod read;
pub mod rooms;
pub mod throttle;
