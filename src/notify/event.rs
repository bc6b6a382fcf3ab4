//! distribution's event records and envelope, and the per-endpoint filter. Plain data: no I/O.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// The envelope's media type. distribution 2.8 sends `v1` (its docs of later versions say `v2`,
/// with the same fields).
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// distribution's media type for blob targets: it does not know what a blob holds.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    Mount,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an event is about. Empty fields are left out, as distribution's `omitempty` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub length: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

impl Target {
    /// A manifest pushed or pulled; `tag` when the request named one.
    pub fn manifest(
        repository: &str,
        digest: &str,
        media_type: &str,
        size: u64,
        url: String,
        tag: Option<&str>,
    ) -> Target {
        Target {
            media_type: media_type.to_string(),
            size,
            digest: digest.to_string(),
            length: size,
            repository: repository.to_string(),
            url,
            tag: tag.unwrap_or_default().to_string(),
            ..Target::default()
        }
    }

    /// A blob pushed, pulled or (with [`Target::from_repository`]) mounted.
    pub fn blob(repository: &str, digest: &str, size: u64, url: String) -> Target {
        Target {
            media_type: BLOB_MEDIA_TYPE.to_string(),
            size,
            digest: digest.to_string(),
            length: size,
            repository: repository.to_string(),
            url,
            ..Target::default()
        }
    }

    /// A deletion: distribution sends only the digest and repository (and the tag when a tag was
    /// deleted).
    pub fn deleted(repository: &str, digest: &str, tag: Option<&str>) -> Target {
        Target {
            digest: digest.to_string(),
            repository: repository.to_string(),
            tag: tag.unwrap_or_default().to_string(),
            ..Target::default()
        }
    }

    pub fn from_repository(mut self, from: &str) -> Target {
        self.from_repository = from.to_string();
        self
    }
}

/// The request that caused an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who caused it: the authenticated user, empty on an open registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Which registry process generated it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339 with nanoseconds, as Go writes `time.Time`.
    pub timestamp: String,
    pub action: String,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: ActorRecord,
    pub source: SourceRecord,
}

impl Event {
    /// A new event, stamped now with a fresh id.
    pub fn new(
        action: Action,
        target: Target,
        request: RequestRecord,
        actor: ActorRecord,
        source: SourceRecord,
    ) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            action: action.as_str().to_string(),
            target,
            request,
            actor,
            source,
        }
    }

    /// One line of JSON (JSON escapes newlines inside strings): the form kept in the spool.
    pub fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialize")
    }
}

/// The body of one notification: `{"events":[…]}` around already serialized events.
pub fn envelope<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = b"{\"events\":[".to_vec();
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body
}

/// What an endpoint does not want: `ignoredmediatypes`, `ignore.mediatypes`, `ignore.actions`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    media_types: HashSet<String>,
    actions: HashSet<String>,
}

impl Filter {
    pub fn new<'a>(
        media_types: impl IntoIterator<Item = &'a String>,
        actions: impl IntoIterator<Item = &'a String>,
    ) -> Filter {
        Filter {
            media_types: media_types.into_iter().cloned().collect(),
            actions: actions
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn allows(&self, action: Action, target: &Target) -> bool {
        !self.actions.contains(action.as_str())
            && (target.media_type.is_empty() || !self.media_types.contains(&target.media_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(action: Action, target: Target) -> Event {
        Event::new(
            action,
            target,
            RequestRecord {
                id: "r1".into(),
                addr: "10.0.0.1:5555".into(),
                host: "reg:5000".into(),
                method: "PUT".into(),
                useragent: "docker/27".into(),
            },
            ActorRecord::default(),
            SourceRecord {
                addr: "host:5000".into(),
                instance_id: "i1".into(),
            },
        )
    }

    #[test]
    fn manifest_push_has_distributions_fields() {
        let ev = sample(
            Action::Push,
            Target::manifest(
                "lib/app",
                "sha256:ab",
                "application/vnd.oci.image.manifest.v1+json",
                708,
                "http://reg:5000/v2/lib/app/manifests/sha256:ab".into(),
                Some("latest"),
            ),
        );
        let json: serde_json::Value = serde_json::from_slice(&ev.to_line()).unwrap();
        assert_eq!(json["action"], "push");
        let t = &json["target"];
        assert_eq!(t["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(t["size"], 708);
        assert_eq!(t["length"], 708);
        assert_eq!(t["digest"], "sha256:ab");
        assert_eq!(t["repository"], "lib/app");
        assert_eq!(t["tag"], "latest");
        assert!(t.get("fromRepository").is_none());
        assert_eq!(json["request"]["useragent"], "docker/27");
        assert_eq!(json["source"]["instanceID"], "i1");
        // An anonymous actor is `{}`, as distribution sends it.
        assert_eq!(json["actor"], serde_json::json!({}));
        // Go's time.Time: RFC 3339, nanoseconds, UTC.
        let ts = json["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == "2016-03-09T14:44:26.402973972Z".len());
        assert!(!String::from_utf8(ev.to_line()).unwrap().contains('\n'));
    }

    #[test]
    fn deletes_carry_only_digest_and_repository() {
        let ev = sample(Action::Delete, Target::deleted("r", "sha256:cd", None));
        let json: serde_json::Value = serde_json::from_slice(&ev.to_line()).unwrap();
        assert_eq!(
            json["target"],
            serde_json::json!({"digest": "sha256:cd", "repository": "r"})
        );
    }

    #[test]
    fn mounts_name_their_source() {
        let t = Target::blob("b", "sha256:ef", 3, "u".into()).from_repository("a");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["fromRepository"], "a");
        assert_eq!(json["mediaType"], BLOB_MEDIA_TYPE);
    }

    #[test]
    fn envelope_wraps_events() {
        let body = envelope([&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["events"].as_array().unwrap().len(), 2);
        assert_eq!(envelope([]), b"{\"events\":[]}");
    }

    #[test]
    fn filter_ignores_media_types_and_actions() {
        let media = vec![BLOB_MEDIA_TYPE.to_string()];
        let actions = vec!["Pull".to_string()];
        let f = Filter::new(&media, &actions);
        let blob = Target::blob("r", "d", 1, String::new());
        let manifest = Target::manifest("r", "d", "m", 1, String::new(), None);
        assert!(!f.allows(Action::Push, &blob));
        assert!(f.allows(Action::Push, &manifest));
        assert!(!f.allows(Action::Pull, &manifest));
        // Deletes have no media type: only an ignored action filters them.
        assert!(f.allows(Action::Delete, &Target::deleted("r", "d", None)));
        assert!(Filter::default().allows(Action::Pull, &blob));
    }
}
