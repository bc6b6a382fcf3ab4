//! The OCI vocabulary: small validated domain types (digests, repository names, tags, references,
//! byte ranges) and manifest parsing. Nothing here touches storage or HTTP, so every rule of the
//! specs' grammars is unit-tested in isolation.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod name;
pub mod range;
pub mod reference;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::OciError;
pub use name::RepoName;
pub use range::{ByteRange, ContentRange};
pub use reference::{Reference, Tag};
