//! Triton CN agents on the zones pool (issue 7): bundle index, agent manifests, upgrade state machine.
//!
//! This crate is the pure core: parsing and validation ([`manifest`],
//! [`index`]), start order ([`order`]) and the upgrade/rollback state machine
//! ([`upgrade`]) that returns actions for an effectful executor to perform.

pub mod index;
pub mod manifest;
pub mod order;
pub mod upgrade;
