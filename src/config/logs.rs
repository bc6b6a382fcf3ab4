//! `log`: level, access log, format and extra fields.

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(try_from = "String")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
    // distribution's extra levels, mapped onto the nearest.
    Panic,
    Fatal,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LogConfig {
    #[serde(default)]
    pub level: LogLevel,
    #[serde(default, deserialize_with = "super::values::section")]
    pub accesslog: AccessLogConfig,
    /// `text` (the default) or `json`: one JSON object per line.
    #[serde(default)]
    pub formatter: LogFormatter,
    /// Fields added to every log line (`environment: staging`).
    #[serde(default, deserialize_with = "super::values::section")]
    pub fields: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(try_from = "String")]
pub enum LogFormatter {
    #[default]
    Text,
    Json,
    /// distribution's logstash formatter: written as JSON.
    Logstash,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub disabled: bool,
}

super::values::keywords!(LogLevel { "error" => Error, "warn" => Warn, "info" => Info, "debug" => Debug, "trace" => Trace, "panic" => Panic, "fatal" => Fatal });

super::values::keywords!(LogFormatter { "text" => Text, "json" => Json, "logstash" => Logstash });
