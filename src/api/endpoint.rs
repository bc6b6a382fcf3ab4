//! A request path becomes a typed [`Endpoint`]; with the method it knows its [`Action`].

use actix_web::http::{Method, StatusCode};

use super::error::ApiError;
use crate::oci::{Digest, OciError, Reference, RepoName};

/// The resources of the `/v2/` API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Base,
    Catalog,
    Tags {
        repo: RepoName,
    },
    Manifest {
        repo: RepoName,
        reference: Reference,
    },
    Blob {
        repo: RepoName,
        digest: Digest,
    },
    UploadStart {
        repo: RepoName,
    },
    Upload {
        repo: RepoName,
        id: String,
    },
    Referrers {
        repo: RepoName,
        digest: Digest,
    },
}

/// What a request does, for access control and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`: only needs a login.
    Login,
    Pull,
    Push,
    Delete,
    Catalog,
}

impl Endpoint {
    /// Parses `/v2/...`. `None` for paths outside the API. A repository name is everything before
    /// the last resource keyword, so names may themselves contain `blobs` or `manifests`.
    pub fn parse(method: &Method, path: &str) -> Result<Option<Endpoint>, ApiError> {
        let Some(rest) = path.strip_prefix("/v2") else {
            return Ok(None);
        };
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Some(Endpoint::Base));
        }
        if rest == "_catalog" {
            return Ok(Some(Endpoint::Catalog));
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name = |upto: usize| -> Result<RepoName, ApiError> {
            Ok(segments[..upto].join("/").parse::<RepoName>()?)
        };
        let endpoint = match segments.as_slice() {
            [.., "tags", "list"] if n > 2 => Endpoint::Tags { repo: name(n - 2)? },
            [.., "blobs", "uploads", ""] | [.., "blobs", "uploads"] if n > 2 => {
                let upto = if segments[n - 1].is_empty() {
                    n - 3
                } else {
                    n - 2
                };
                if upto == 0 {
                    return Ok(None);
                }
                Endpoint::UploadStart { repo: name(upto)? }
            }
            [.., "blobs", "uploads", id] if n > 3 => Endpoint::Upload {
                repo: name(n - 3)?,
                id: id.to_string(),
            },
            [.., "blobs", digest] if n > 2 => Endpoint::Blob {
                repo: name(n - 2)?,
                digest: digest.parse()?,
            },
            [.., "manifests", reference] if n > 2 => Endpoint::Manifest {
                repo: name(n - 2)?,
                reference: parse_reference(method, reference)?,
            },
            [.., "referrers", digest] if n > 2 => Endpoint::Referrers {
                repo: name(n - 2)?,
                digest: digest.parse()?,
            },
            _ => return Ok(None),
        };
        Ok(Some(endpoint))
    }

    /// The action `method` performs on this endpoint; `None` if the method is not allowed.
    pub fn action(&self, method: &Method) -> Option<Action> {
        let m = method.clone();
        let read = m == Method::GET || m == Method::HEAD;
        match self {
            Endpoint::Base if read => Some(Action::Login),
            Endpoint::Catalog if read => Some(Action::Catalog),
            Endpoint::Tags { .. } | Endpoint::Referrers { .. } if m == Method::GET => {
                Some(Action::Pull)
            }
            Endpoint::Manifest { .. } | Endpoint::Blob { .. } if read => Some(Action::Pull),
            Endpoint::Manifest { .. } if m == Method::PUT => Some(Action::Push),
            Endpoint::Manifest { .. } | Endpoint::Blob { .. } if m == Method::DELETE => {
                Some(Action::Delete)
            }
            Endpoint::UploadStart { .. } if m == Method::POST => Some(Action::Push),
            Endpoint::Upload { .. }
                if m == Method::GET
                    || m == Method::PATCH
                    || m == Method::PUT
                    || m == Method::DELETE =>
            {
                Some(Action::Push)
            }
            _ => None,
        }
    }

    /// The repository the request is about, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags { repo }
            | Endpoint::Manifest { repo, .. }
            | Endpoint::Blob { repo, .. }
            | Endpoint::UploadStart { repo }
            | Endpoint::Upload { repo, .. }
            | Endpoint::Referrers { repo, .. } => Some(repo),
        }
    }

    /// The kind of resource, as a metrics label (bounded: never the path).
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags { .. } => "tags",
            Endpoint::Manifest { .. } => "manifest",
            Endpoint::Blob { .. } => "blob",
            Endpoint::UploadStart { .. } | Endpoint::Upload { .. } => "upload",
            Endpoint::Referrers { .. } => "referrers",
        }
    }
}

/// A manifest reference. A string that cannot be a tag names no manifest: reading or deleting
/// it is "unknown" (404), pushing to it is invalid (400).
fn parse_reference(method: &Method, s: &str) -> Result<Reference, ApiError> {
    match s.parse::<Reference>() {
        Ok(r) => Ok(r),
        Err(OciError::InvalidTag(t)) if method != Method::PUT => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("no manifest is tagged {t:?}: it is not a valid tag"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(p: &str) -> Endpoint {
        Endpoint::parse(&Method::GET, p).unwrap().unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Endpoint::Base);
        assert_eq!(parse("/v2"), Endpoint::Base);
        assert_eq!(parse("/v2/_catalog"), Endpoint::Catalog);
        let repo: RepoName = "a/b".parse().unwrap();
        assert_eq!(
            parse("/v2/a/b/tags/list"),
            Endpoint::Tags { repo: repo.clone() }
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/"),
            Endpoint::UploadStart { repo: repo.clone() }
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads"),
            Endpoint::UploadStart { repo: repo.clone() }
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/123"),
            Endpoint::Upload {
                repo: repo.clone(),
                id: "123".into()
            }
        );
        assert!(matches!(
            parse(&format!("/v2/a/b/blobs/{D}")),
            Endpoint::Blob { .. }
        ));
        assert!(matches!(
            parse("/v2/a/b/manifests/latest"),
            Endpoint::Manifest { .. }
        ));
        assert!(matches!(
            parse(&format!("/v2/a/b/referrers/{D}")),
            Endpoint::Referrers { .. }
        ));
        // Keywords inside a name.
        assert_eq!(
            parse("/v2/blobs/manifests/tags/list"),
            Endpoint::Tags {
                repo: "blobs/manifests".parse().unwrap()
            }
        );
    }

    #[test]
    fn bad_parts_are_errors_and_unknown_paths_are_none() {
        assert!(Endpoint::parse(&Method::GET, "/v2/A/tags/list").is_err());
        assert!(Endpoint::parse(&Method::GET, "/v2/a/blobs/sha256:zz").is_err());
        assert!(Endpoint::parse(&Method::GET, "/v2/../x/tags/list").is_err());
        assert_eq!(Endpoint::parse(&Method::GET, "/v3/x").unwrap(), None);
        assert_eq!(Endpoint::parse(&Method::GET, "/v2/a/other").unwrap(), None);
        let get = Endpoint::parse(&Method::GET, "/v2/a/manifests/.bad").unwrap_err();
        assert_eq!((get.status.as_u16(), get.code), (404, "MANIFEST_UNKNOWN"));
        let put = Endpoint::parse(&Method::PUT, "/v2/a/manifests/.bad").unwrap_err();
        assert_eq!((put.status.as_u16(), put.code), (400, "TAG_INVALID"));
    }

    #[test]
    fn actions() {
        let m = parse("/v2/a/manifests/x");
        assert_eq!(m.action(&Method::PUT), Some(Action::Push));
        assert_eq!(m.action(&Method::DELETE), Some(Action::Delete));
        assert_eq!(m.action(&Method::POST), None);
        assert_eq!(
            parse("/v2/_catalog").action(&Method::GET),
            Some(Action::Catalog)
        );
    }
}
