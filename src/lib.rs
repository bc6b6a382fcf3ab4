//! berth: an OCI Distribution 1.1 / Docker Registry v2 container registry.
//!
//! Layers, from the wire inwards (see ARCHITECTURE.md):
//! - [`api`]: HTTP routing, one handler file per resource, the one mapping of errors to OCI codes;
//! - [`registry`]: the registry's operations, independent of HTTP;
//! - [`upload`]: upload-session and digest-verifier actors, streaming request bodies to storage;
//! - [`storage`]: distribution's storage layout over `object_store`;
//! - [`oci`]: validated domain types and manifest parsing;
//! - [`config`] and [`server`]: loading the configuration and running the HTTP server;
//! - [`bench`]: `berth bench`, the load generator and its report.

pub mod api;
pub mod bench;
pub mod config;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
pub mod upload;
