//! Which keys a configuration may hold, so that nothing a user writes is silently ignored.
//!
//! berth's own keys come from the configuration types themselves (their JSON schema, derived
//! with `schemars`, so the list cannot drift from what is read). distribution's keys that berth
//! does not implement are listed here with what becomes of them. Every key of the loaded
//! configuration (file and `REGISTRY_*` variables alike) is checked against both: a key berth
//! does not know is reported with the nearest known one ("did you mean `addr`?"), a key of
//! distribution's that berth ignores is reported by name, once.

use std::collections::BTreeSet;

use config::{Value, ValueKind};
use serde_json::Value as Json;

use super::Config;

/// distribution's keys (2.8 and 3.x) berth reads but does not implement, with why that is safe
/// or what to do instead. A key also covers everything under it.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("loglevel", "deprecated in distribution; use log.level"),
    ("log.hooks", "log hooks (mail) are not supported"),
    (
        "http.secret",
        "not needed: berth keeps upload state on the server, not in signed URLs",
    ),
    (
        "http.tls.clientauth",
        "with http.tls.clientcas a verified client certificate is always required",
    ),
    ("http.http2", "HTTP/2 is always offered over TLS"),
    ("http.h2c", "HTTP/2 without TLS is not supported"),
    ("http.net", "berth listens on TCP only"),
    ("storage.filesystem.maxthreads", "berth needs no thread cap"),
    ("storage.s3.accelerate", "not supported"),
    (
        "storage.s3.encrypt",
        "berth requests no server-side encryption; the bucket's default applies",
    ),
    (
        "storage.s3.v4auth",
        "berth always signs with AWS Signature V4",
    ),
    (
        "storage.s3.storageclass",
        "objects get the bucket's default class",
    ),
    (
        "storage.s3.objectacl",
        "objects get the bucket's default ACL",
    ),
    ("storage.s3.useragent", "not supported"),
    ("storage.s3.usedualstack", "not supported"),
    (
        "storage.s3.usefipsendpoint",
        "not supported: give regionendpoint",
    ),
    ("storage.s3.loglevel", "use log.level"),
    ("storage.tag", "not needed"),
    ("auth.token.autoredirect", "not supported"),
    (
        "auth.token.signingalgorithms",
        "berth accepts RS256/384/512, ES256/384/512",
    ),
    (
        "middleware",
        "storage and registry middleware are not supported",
    ),
    (
        "catalog",
        "the catalog pages by the client's n (at most 1000)",
    ),
    ("tags", "not supported"),
    ("notifications.events", "events carry no references"),
    ("redis.tls", "Redis over TLS is not supported yet"),
    ("redis.addrs", "give one server as redis.addr"),
    ("redis.maxidleconns", "use redis.pool.maxidle"),
    ("redis.poolsize", "use redis.pool.maxactive"),
    ("redis.connmaxidletime", "use redis.pool.idletimeout"),
    ("health.file", "only health.storagedriver is implemented"),
    ("health.http", "only health.storagedriver is implemented"),
    ("health.tcp", "only health.storagedriver is implemented"),
    ("validation", "manifest URL validation is not implemented"),
    ("compatibility", "schema 1 manifests are not supported"),
    (
        "reporting",
        "bugsnag and newrelic reporting are not supported",
    ),
];

/// distribution's keys berth does not implement and will not start with: serving without them
/// would be less safe than what was configured. The second field says why; the third whether
/// only a true value counts (`encrypt: false` asks for nothing).
const REFUSED: &[(&str, &str, bool)] = &[
    (
        "proxy",
        "pull-through caching is not implemented yet; berth would serve a writable registry where \
         a read-only mirror was configured",
        false,
    ),
    (
        "http.tls.letsencrypt",
        "Let's Encrypt is not supported; berth would serve plain HTTP: give http.tls.certificate \
         and key",
        false,
    ),
    (
        "storage.s3.encrypt",
        "server-side encryption is not requested by berth; use the bucket's default encryption \
         and remove the key",
        true,
    ),
    (
        "storage.s3.keyid",
        "server-side encryption with a KMS key is not supported; use the bucket's default \
         encryption and remove the key",
        false,
    ),
];

/// What the `config` crate names the origin of a value from environment variables.
const ENV_ORIGIN: &str = "the environment";

/// Keys whose presence selects something and that the types do not hold as fields.
const SELECTORS: &[&str] = &["storage.inmemory"];

/// What a key of the configuration turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Neither berth's nor distribution's: probably a typo.
    Unknown {
        key: String,
        section: String,
        suggestion: Option<String>,
        /// The `REGISTRY_…` variable it came from, if not from the file.
        variable: Option<String>,
    },
    /// distribution's key that berth ignores.
    NotImplemented { key: String, why: &'static str },
    /// distribution's key that berth does not implement and cannot safely ignore.
    Refused { key: String, why: &'static str },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Unknown {
                key,
                section,
                suggestion,
                variable,
            } => {
                let name = key.rsplit('.').next().unwrap_or(key);
                let under = if section.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("under `{section}`")
                };
                write!(f, "`{name}`: unknown key {under}")?;
                if let Some(variable) = variable {
                    write!(f, " (from {variable})")?;
                }
                if !self.is_fatal() {
                    write!(f, ", ignored")?;
                }
                match suggestion {
                    Some(s) => write!(f, "; did you mean `{s}`?"),
                    None => Ok(()),
                }
            }
            Finding::NotImplemented { key, why } => {
                write!(
                    f,
                    "`{key}` is not implemented by berth and is ignored ({why})"
                )
            }
            Finding::Refused { key, why } => {
                write!(f, "`{key}` is not implemented by berth: {why}")
            }
        }
    }
}

impl Finding {
    /// Whether berth must not start with it: a key berth cannot safely ignore, or one that looks
    /// like a misspelling of a key berth reads (`tsl` for `tls` would serve plain HTTP). An
    /// unknown key near no known one is only reported, and so is an unknown top-level variable
    /// (`REGISTRY_PORT`, which Kubernetes sets for a service named `registry`).
    pub fn is_fatal(&self) -> bool {
        match self {
            Finding::Refused { .. } => true,
            Finding::Unknown {
                key,
                suggestion,
                variable,
                ..
            } => suggestion.is_some() && (variable.is_none() || key.contains('.')),
            Finding::NotImplemented { .. } => false,
        }
    }
}

/// Every key of `raw` that berth does not read, in the order of the file (sections sorted).
pub fn check(raw: &Value) -> Vec<Finding> {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let mut findings = Vec::new();
    walk(root, root, raw, "", &mut findings);
    findings
}

fn walk(root: &Json, node: &Json, value: &Value, path: &str, out: &mut Vec<Finding>) {
    match &value.kind {
        ValueKind::Table(table) => {
            let shape = Shape::of(root, node);
            let mut keys: Vec<&String> = table.keys().collect();
            keys.sort();
            for key in keys {
                let child_path = join(path, key);
                let child = &table[key];
                if let Some(why) = refused(&child_path, child) {
                    out.push(Finding::Refused {
                        key: child_path,
                        why,
                    });
                } else if let Some(why) = not_implemented(&child_path) {
                    out.push(Finding::NotImplemented {
                        key: child_path,
                        why,
                    });
                } else if SELECTORS.contains(&child_path.as_str()) {
                } else if let Some(schema) = shape.properties.get(key.as_str()) {
                    walk(root, schema, child, &child_path, out);
                } else if let Some(schema) = shape.any_key {
                    walk(root, schema, child, &child_path, out);
                } else if shape.is_object {
                    let (leaf, origin) = first_leaf(child, &child_path);
                    out.push(Finding::Unknown {
                        suggestion: suggest(key, path, &shape),
                        section: path.to_string(),
                        variable: (origin == Some(ENV_ORIGIN))
                            .then(|| format!("REGISTRY_{}", leaf.replace('.', "_").to_uppercase())),
                        key: child_path,
                    });
                }
            }
        }
        ValueKind::Array(items) => {
            let shape = Shape::of(root, node);
            if let Some(schema) = shape.items {
                for (i, item) in items.iter().enumerate() {
                    walk(root, schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The path and origin of `value`; for a table (which the `config` crate makes on the way to a
/// variable's leaf, without an origin), those of its first leaf.
fn first_leaf<'a>(value: &'a Value, path: &str) -> (String, Option<&'a str>) {
    match &value.kind {
        ValueKind::Table(table) => match table.iter().next() {
            Some((key, child)) => first_leaf(child, &join(path, key)),
            None => (path.to_string(), value.origin()),
        },
        _ => (path.to_string(), value.origin()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Why `value` at `path` stops start-up, if it does ([`REFUSED`]).
fn refused(path: &str, value: &Value) -> Option<&'static str> {
    let bare = strip_indices(path);
    REFUSED
        .iter()
        .find(|(key, _, only_true)| {
            bare == *key && (!only_true || value.clone().into_bool().unwrap_or(true))
        })
        .map(|(_, why, _)| *why)
}

/// The entry of [`NOT_IMPLEMENTED`] covering `path` (array indices do not count).
fn not_implemented(path: &str) -> Option<&'static str> {
    let bare = strip_indices(path);
    NOT_IMPLEMENTED
        .iter()
        .find(|(key, _)| bare == *key || bare.starts_with(&format!("{key}.")))
        .map(|(_, why)| *why)
}

fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

/// The nearest known key to `key` in its section, berth's own or distribution's: by edit distance
/// (close enough to be a typo) after case and punctuation are set aside.
fn suggest(key: &str, section: &str, shape: &Shape<'_>) -> Option<String> {
    let mut candidates: BTreeSet<String> = shape.properties.keys().map(|k| k.to_string()).collect();
    let bare_section = strip_indices(section);
    let distributions = NOT_IMPLEMENTED
        .iter()
        .map(|(k, _)| *k)
        .chain(REFUSED.iter().map(|(k, _, _)| *k));
    for known in distributions {
        let parent = known.rsplit_once('.').map_or("", |(p, _)| p);
        if parent == bare_section {
            candidates.insert(known.rsplit('.').next().unwrap_or(known).to_string());
        }
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let wanted = squash(key);
    // Similarity rather than edit distance alone: `adress` is four edits from `addr` yet plainly
    // meant it; a shortening (`rootdir`) also counts.
    let close = |candidate: &str| {
        let candidate = squash(candidate);
        let edits = strsim::damerau_levenshtein(&wanted, &candidate);
        let similarity = strsim::jaro_winkler(&wanted, &candidate);
        let near = edits <= (candidate.len() / 3).max(1)
            || similarity >= 0.8
            || (wanted.len() >= 4 && candidate.starts_with(&wanted));
        near.then_some(similarity)
    };
    candidates
        .into_iter()
        .filter_map(|c| close(&c).map(|score| (score, c)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// What a schema node allows: named properties, any key (a map), or items (a list).
struct Shape<'a> {
    properties: std::collections::BTreeMap<&'a str, &'a Json>,
    any_key: Option<&'a Json>,
    items: Option<&'a Json>,
    is_object: bool,
}

impl<'a> Shape<'a> {
    fn of(root: &'a Json, node: &'a Json) -> Shape<'a> {
        let mut shape = Shape {
            properties: Default::default(),
            any_key: None,
            items: None,
            is_object: false,
        };
        shape.collect(root, node, 0);
        shape
    }

    fn collect(&mut self, root: &'a Json, node: &'a Json, depth: usize) {
        if depth > 16 {
            return;
        }
        let Some(obj) = node.as_object() else { return };
        if let Some(Json::String(reference)) = obj.get("$ref") {
            if let Some(target) = reference
                .strip_prefix('#')
                .and_then(|pointer| root.pointer(pointer))
            {
                self.collect(root, target, depth + 1);
            }
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(Json::Array(options)) = obj.get(combinator) {
                for option in options {
                    self.collect(root, option, depth + 1);
                }
            }
        }
        if let Some(Json::Object(props)) = obj.get("properties") {
            self.is_object = true;
            for (name, schema) in props {
                self.properties.insert(name.as_str(), schema);
            }
        }
        match obj.get("additionalProperties") {
            Some(Json::Bool(false)) | None => {}
            Some(schema) => {
                self.is_object = true;
                self.any_key = Some(schema);
            }
        }
        if let Some(items) = obj.get("items") {
            self.items = Some(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(yaml: &str) -> Vec<String> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
            .build()
            .unwrap();
        check(&raw.cache).iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_misspelled_key_is_reported_with_its_suggestion() {
        let found =
            findings("http:\n  adress: ':5000'\nstorage:\n  filesystem:\n    rootdirctory: /x\n");
        assert_eq!(
            found,
            [
                "`adress`: unknown key under `http`; did you mean `addr`?",
                "`rootdirctory`: unknown key under `storage.filesystem`; did you mean `rootdirectory`?",
            ]
        );
    }

    #[test]
    fn distributions_keys_berth_ignores_are_named() {
        let found = findings(
            "http:\n  secret: s3cr3t\nproxy:\n  remoteurl: https://x\nstorage:\n  s3:\n    \
             encrypt: false\n    keyid: k\n",
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("`http.secret` is not implemented by berth and is ignored"));
        assert!(found[1].starts_with("`proxy` is not implemented by berth: pull-through"));
        assert!(found[2].starts_with("`storage.s3.encrypt` is not implemented by berth and is"));
        assert!(found[3].starts_with("`storage.s3.keyid` is not implemented by berth: "));
    }

    #[test]
    fn known_keys_maps_and_lists_pass() {
        let yaml = "version: 0.1\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\n\
                    notifications:\n  endpoints:\n    - name: a\n      url: http://x\n      headers:\n        Authorization: [x]\n\
                    storage:\n  inmemory:\n  cache:\n    layerinfo: inmemory\nlog:\n  fields:\n    service: registry\n";
        assert_eq!(findings(yaml), Vec::<String>::new());
    }

    #[test]
    fn keys_inside_lists_are_checked() {
        let found = findings(
            "notifications:\n  endpoints:\n    - name: a\n      url: http://x\n      timout: 1s\n",
        );
        assert_eq!(
            found,
            ["`timout`: unknown key under `notifications.endpoints[0]`; did you mean `timeout`?"]
        );
    }

    #[test]
    fn an_unknown_section_far_from_any_key_gets_no_guess() {
        assert_eq!(
            findings("frobnicate:\n  x: 1\n"),
            ["`frobnicate`: unknown key at the top level, ignored"]
        );
    }
}
