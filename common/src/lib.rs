//! Pure roomcast logic shared by the Redis module and the edge.
//!
//! Nothing here talks to Redis or to a socket, so every rule can be unit-tested and
//! fuzzed on its own, and the module and the edge cannot disagree about it.
//!
//! # Layout
//!
//! - [`crc16`]: the CRC16 (XMODEM) that Redis Cluster uses to map keys to slots.
//! - [`partition`]: rooms and users → partitions, the partition hash tags, and the
//!   parsing of plain (`room`) and partition-tagged (`{tag}room`) names.
//! - [`names`]: what a valid room, user, node or connection name is.
//! - [`codes`]: the module's machine-readable error codes (`LIMITED`, `NOLEASE`, …).
//! - [`command`]: the argument parsing of every module command (pure, so it is
//!   property-tested and fuzzed without Redis).
//! - [`keys`]: the Redis key layout of a partition (one place for every key name).
//! - [`entry`]: inbox stream entries: field names, kinds, the layout the module writes
//!   and the decoder the edge reads them with.
//! - [`push`]: the live push of an inbox entry (its id, the inbox's previous id and its
//!   fields), the binary layout the module publishes and the edge decodes.
//! - [`batch`]: the `batch` inbox entry: several entries for one node packed into one
//!   stream entry (what one `RC.PUBLISHM` writes to each node it reaches).
//! - [`varint`]: the varints of the binary layouts ([`push`], [`batch`]).
//! - [`gcra`]: the generic cell rate algorithm behind `RC.THROTTLE` and the publish policy.
//! - [`json`]: a small validating JSON scanner (connection metadata).
//! - [`offset`]: room history offsets (`<epoch>:<seq>`).
//! - [`stream_id`]: Redis stream entry ids (`ms-seq`).

pub mod batch;
pub mod codes;
pub mod command;
pub mod crc16;
pub mod entry;
pub mod gcra;
pub mod json;
pub mod keys;
pub mod names;
pub mod offset;
pub mod partition;
pub mod push;
pub mod stream_id;
pub mod varint;
