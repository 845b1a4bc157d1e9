//! The node's standing in Redis: its leases, and which server is the primary.
//!
//! # Layout
//!
//! - [`lease`]: lease renewal, and registering the node's connections and memberships
//!   again after Redis lost them.
//! - [`failover`]: asks Sentinel every second which server is the primary, and moves.

pub mod failover;
pub mod lease;
