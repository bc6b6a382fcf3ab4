//! Manifest media types and the parse/validate step of a manifest PUT.
//!
//! A manifest is stored byte-exact; parsing only extracts what the registry must check or index:
//! the descriptors it references (which must exist), its `subject`, and what a referrers
//! descriptor reports about it (`artifactType`, annotations).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{Digest, OciError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The largest manifest accepted; the spec asks registries to take at least 4 MB.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Layer media types whose content may live outside the registry and need not be pushed.
const NON_DISTRIBUTABLE: [&str; 4] = [
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// The two shapes of manifest the registry distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image (or artifact) manifest: config + layers.
    Image,
    /// An index / manifest list: child manifests.
    Index,
}

/// A content descriptor as it appears in manifests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// Whether the registry must hold this blob: non-distributable layers and layers with
    /// external `urls` may be fetched from elsewhere.
    pub fn must_be_present(&self) -> bool {
        self.urls.is_empty() && !NON_DISTRIBUTABLE.contains(&self.media_type.as_str())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
    // Present only in schema1 manifests.
    fs_layers: Option<Value>,
}

/// What the registry needs to know about a pushed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub kind: Kind,
    /// The media type it is served with.
    pub media_type: String,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses and validates manifest bytes. `content_type` is the request's `Content-Type`
    /// (`None` when absent or generic such as `application/json`).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, OciError> {
        let invalid = |m: String| OciError::InvalidManifest(m);
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty() && *c != "application/json");
        if matches!(content_type, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) {
            return Err(schema1_refused());
        }
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a valid manifest document: {e}")))?;
        if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
            return Err(schema1_refused());
        }
        if raw.schema_version != Some(2) {
            return Err(invalid("schemaVersion must be 2".into()));
        }
        if let (Some(field), Some(header)) = (raw.media_type.as_deref(), content_type) {
            if field != header {
                return Err(invalid(format!(
                    "mediaType {field:?} does not match Content-Type {header:?}"
                )));
            }
        }
        let media_type = raw
            .media_type
            .clone()
            .or_else(|| content_type.map(str::to_string))
            .unwrap_or_else(|| {
                if raw.manifests.is_some() {
                    OCI_INDEX.to_string()
                } else {
                    OCI_MANIFEST.to_string()
                }
            });
        if raw.media_type.is_none()
            && matches!(content_type, Some(DOCKER_MANIFEST | DOCKER_MANIFEST_LIST))
        {
            // Docker's formats carry their type; without it a GET could not answer it.
            return Err(invalid(format!(
                "a {} must carry its mediaType field",
                content_type.unwrap_or_default()
            )));
        }
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
            OCI_INDEX | DOCKER_MANIFEST_LIST => Kind::Index,
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => return Err(schema1_refused()),
            other => {
                return Err(OciError::UnsupportedManifest(format!(
                    "media type {other:?} is not a manifest type this registry serves"
                )))
            }
        };
        match kind {
            Kind::Image => {
                if raw.config.is_none() {
                    return Err(invalid(
                        "an image manifest needs a config descriptor".into(),
                    ));
                }
                if raw.manifests.is_some() {
                    return Err(invalid("an image manifest has no manifests field".into()));
                }
            }
            Kind::Index => {
                if raw.manifests.is_none() {
                    return Err(invalid("an index needs a manifests field".into()));
                }
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("an index has no config or layers".into()));
                }
            }
        }
        let all = raw
            .config
            .iter()
            .chain(raw.layers.iter().flatten())
            .chain(raw.manifests.iter().flatten())
            .chain(raw.subject.iter());
        for d in all {
            if d.size < 0 {
                return Err(invalid(format!(
                    "descriptor {} has a negative size",
                    d.digest
                )));
            }
        }
        Ok(Manifest {
            kind,
            media_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            children: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }

    /// The media type of manifest bytes already stored: what a GET answers with.
    pub fn detect_media_type(bytes: &[u8]) -> String {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Peek {
            media_type: Option<String>,
            manifests: Option<Value>,
            schema_version: Option<i64>,
        }
        match serde_json::from_slice::<Peek>(bytes) {
            Ok(Peek {
                media_type: Some(m),
                ..
            }) => m,
            Ok(Peek {
                schema_version: Some(1),
                ..
            }) => DOCKER_SCHEMA1_SIGNED.to_string(),
            Ok(Peek {
                manifests: Some(_), ..
            }) => OCI_INDEX.to_string(),
            _ => OCI_MANIFEST.to_string(),
        }
    }

    /// The `artifactType` a referrers list reports for this manifest.
    pub fn referrer_artifact_type(&self) -> Option<String> {
        self.artifact_type.clone().or_else(|| match self.kind {
            Kind::Image => self.config.as_ref().map(|c| c.media_type.clone()),
            Kind::Index => None,
        })
    }

    /// Blobs that must exist in the repository before this manifest is accepted.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter())
            .filter(|d| d.must_be_present())
    }
}

fn schema1_refused() -> OciError {
    OciError::UnsupportedManifest(
        "Docker schema1 manifests are deprecated and not accepted; push with a current client \
         (schema2 or OCI)"
            .into(),
    )
}

/// Whether an `Accept` header admits `media_type` (case-insensitively; `q=0` excludes). No
/// header (or an empty one) accepts all.
pub fn accepts(accept_headers: &[&str], media_type: &str) -> bool {
    let media_type = media_type.to_ascii_lowercase();
    let mut any = false;
    for value in accept_headers {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if range.is_empty() {
                continue;
            }
            any = true;
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            if refused {
                continue;
            }
            let matches = range == media_type
                || range == "*/*"
                || range
                    .strip_suffix("/*")
                    .is_some_and(|prefix| media_type.split('/').next() == Some(prefix));
            if matches {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const L1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{L1}","size":0}}]{extra}}}"#
        )
    }

    #[test]
    fn parses_an_image_manifest() {
        let m = Manifest::parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{L1}","size":1}}"#
        );
        let m = Manifest::parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().digest.to_string(), L1);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
    }

    #[test]
    fn media_type_must_match_content_type() {
        let err = Manifest::parse(image("").as_bytes(), Some(DOCKER_MANIFEST)).unwrap_err();
        assert!(matches!(err, OciError::InvalidManifest(_)));
    }

    #[test]
    fn refuses_schema1_and_garbage() {
        let s1 = r#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#;
        assert!(matches!(
            Manifest::parse(s1.as_bytes(), None),
            Err(OciError::UnsupportedManifest(_))
        ));
        assert!(Manifest::parse(b"not json", None).is_err());
        assert!(Manifest::parse(br#"{"schemaVersion":2}"#, Some(OCI_MANIFEST)).is_err());
        let untyped = image("").replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        assert_ne!(untyped, image(""), "the top-level mediaType was removed");
        let err = Manifest::parse(untyped.as_bytes(), Some(DOCKER_MANIFEST)).unwrap_err();
        assert!(
            err.to_string().contains("must carry its mediaType"),
            "{err}"
        );
        assert!(Manifest::parse(untyped.as_bytes(), Some(OCI_MANIFEST)).is_ok());
    }

    #[test]
    fn non_distributable_layers_are_optional() {
        let json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{CFG}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{L1}","size":0}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{L1}","size":0,"urls":["https://x"]}}]}}"#
        );
        let m = Manifest::parse(json.as_bytes(), None).unwrap();
        assert_eq!(m.required_blobs().count(), 1, "only the config is required");
    }

    #[test]
    fn detects_stored_media_types() {
        assert_eq!(
            Manifest::detect_media_type(image("").as_bytes()),
            OCI_MANIFEST
        );
        assert_eq!(
            Manifest::detect_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(&[], OCI_MANIFEST));
        assert!(accepts(
            &[&format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}")],
            OCI_MANIFEST
        ));
        assert!(accepts(&["*/*"], OCI_INDEX));
        assert!(accepts(&["application/*;q=0.5"], OCI_INDEX));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_INDEX));
        assert!(accepts(
            &["application/vnd.oci.image.index.v1+JSON"],
            OCI_INDEX
        ));
        assert!(!accepts(&[&format!("{OCI_INDEX};q=0")], OCI_INDEX));
    }
}
