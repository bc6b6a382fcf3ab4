//! berth: an OCI Distribution 1.1 / Docker Registry v2 container registry.
//!
//! Layers, from the wire inwards (see ARCHITECTURE.md):
//! - [`api`]: HTTP routing, one handler file per resource, the one mapping of errors to OCI codes;
//! - [`registry`]: the registry's operations, independent of HTTP;
//! - [`upload`]: upload-session and digest-verifier actors, streaming request bodies to storage;
//! - [`storage`]: distribution's storage layout over `object_store`;
//! - [`cache`]: the blob-descriptor cache (in memory or Redis) in front of storage lookups;
//! - [`oci`]: validated domain types and manifest parsing;
//! - [`auth`]: who a request comes from (htpasswd, tokens) and what it may do (access rules);
//! - [`config`], [`server`], [`listener`] and [`tls`]: loading the configuration and running the
//!   HTTP(S) server (the HTTPS listener answers plain HTTP with a 400);
//! - [`certs`]: `berth certs`, a private CA and server certificate;
//! - [`gc`]: `berth garbage-collect`;
//! - [`notify`]: webhook notifications of pushes, pulls, mounts and deletes;
//! - [`metrics`], [`health`]: Prometheus metrics and health checks for the debug listener;
//! - [`healthcheck`]: `berth healthcheck`, the container image's probe of its own `/v2/`;
//! - [`logging`]: text or JSON log lines, with `log.fields`;
//! - [`bench`]: `berth bench`, the load generator and its report.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cache;
pub mod certs;
pub mod config;
pub mod connections;
pub mod gc;
pub mod health;
pub mod healthcheck;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod redis_client;
pub mod registry;
pub mod server;
pub mod storage;
pub mod tls;
pub mod upload;
