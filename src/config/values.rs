//! How values are written in the file: Go-style durations, address lists, defaults shared by
//! several sections.

/// Durations written as Go does (`168h`, `90m`, `1h30m`, `500ms`, `10s`).
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration such as 168h, 30m, 10s or 500ms"
            ))
        })
    }

    /// Only for the configuration's schema, which shows defaults (`30s`).
    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", value.as_secs_f64()))
    }

    pub fn parse(text: &str) -> Option<Duration> {
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            let value: f64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let seconds = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                "us" | "µs" => 0.000_001,
                "ns" => 0.000_000_001,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total += Duration::from_secs_f64(value * seconds);
        }
        Some(total)
    }
}

/// Lists of addresses or CIDR ranges, from YAML lists or one comma-separated string.
pub mod nets {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        let entries = match OneOrMany::deserialize(d)? {
            OneOrMany::Many(list) => list,
            OneOrMany::One(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        };
        entries
            .iter()
            .map(|entry| parse(entry).map_err(serde::de::Error::custom))
            .collect()
    }

    /// `10.0.0.0/8`, or a single address (`10.0.0.5`, `::1`).
    pub fn parse(entry: &str) -> Result<ipnet::IpNet, String> {
        let entry = entry.trim();
        entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("{entry:?} is neither an address nor a CIDR range"))
    }
}

pub fn yes() -> bool {
    true
}

/// `Default` for configuration sections is what an empty section deserializes to, so a section
/// left out and one written empty get the same values: the field defaults are stated once, in
/// the `#[serde(default = …)]` attributes.
macro_rules! default_is_empty_section {
    ($($section:ty),* $(,)?) => {
        $(impl Default for $section {
            fn default() -> Self {
                serde_json::from_value(serde_json::Value::Object(Default::default()))
                    .expect("every key of the section has a default")
            }
        })*
    };
}
pub(super) use default_is_empty_section;

/// The words a keyword value may be (`log.level: info`), read case-insensitively, with an
/// error that lists them in the file's terms rather than the Rust type's
/// (`"verbose" is not one of error, warn, info, …`). The enum says
/// `#[serde(try_from = "String")]`.
macro_rules! keywords {
    ($enum:ident { $($word:literal => $variant:ident),+ $(,)? }) => {
        impl TryFrom<String> for $enum {
            type Error = String;
            fn try_from(word: String) -> Result<Self, String> {
                match word.trim().to_ascii_lowercase().as_str() {
                    $($word => Ok($enum::$variant),)+
                    _ => Err(format!(
                        "{word:?} is not one of {}",
                        [$($word),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(super) use keywords;

/// A section (or map, or list) written with nothing under it (`http:` whose keys are all
/// commented out) is the empty section, as in distribution, not an error.
pub fn section<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}
