//! The process's log (`log` section): `text` lines as env_logger writes them, or with
//! `formatter: json` (and `logstash`, written the same way) one JSON object per line:
//! `time`, `level`, `target`, `message`, the configured `log.fields`, and for access-log lines
//! the request's fields (`method`, `path`, `status`, `bytes`, `duration_ms`, `user`, …).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::config::{LogConfig, LogFormatter};

thread_local! {
    /// Fields of the line being logged on this thread (see [`with_fields`]).
    static FIELDS: RefCell<Vec<(&'static str, Value)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `log` (a `log::…!` call) with `fields` attached to the lines it writes: the JSON
/// formatter adds them as keys; the text formatter leaves them out (the message says it all).
pub fn with_fields(fields: Vec<(&'static str, Value)>, log: impl FnOnce()) {
    FIELDS.with(|f| *f.borrow_mut() = fields);
    log();
    FIELDS.with(|f| f.borrow_mut().clear());
}

/// One JSON log line (without its newline).
pub fn json_line(
    time: &str,
    record: &log::Record<'_>,
    fields: &BTreeMap<String, String>,
    extra: &[(&'static str, Value)],
) -> String {
    let mut line = Map::new();
    line.insert("time".into(), Value::from(time));
    line.insert(
        "level".into(),
        Value::from(record.level().as_str().to_ascii_lowercase()),
    );
    line.insert("target".into(), Value::from(record.target()));
    line.insert("message".into(), Value::from(record.args().to_string()));
    for (k, v) in fields {
        line.entry(k.clone())
            .or_insert_with(|| Value::from(v.as_str()));
    }
    for (k, v) in extra {
        line.insert((*k).to_string(), v.clone());
    }
    Value::Object(line).to_string()
}

/// The process's logger: until [`init`] knows the configured format, warnings and errors (from
/// loading the configuration itself) are kept, then written in that format.
struct Deferred {
    logger: OnceLock<env_logger::Logger>,
    early: Mutex<Vec<(log::Level, String, String)>>,
}

static LOGGER: Deferred = Deferred {
    logger: OnceLock::new(),
    early: Mutex::new(Vec::new()),
};

impl log::Log for Deferred {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.logger.get().is_none_or(|l| l.enabled(metadata))
    }

    fn log(&self, record: &log::Record<'_>) {
        match self.logger.get() {
            Some(logger) => logger.log(record),
            None => self.early.lock().unwrap().push((
                record.level(),
                record.target().to_string(),
                record.args().to_string(),
            )),
        }
    }

    fn flush(&self) {
        if let Some(logger) = self.logger.get() {
            logger.flush();
        }
    }
}

/// Keeps warnings and errors logged before [`init`] (while the configuration loads).
pub fn early() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Installs the process's logger from `config`; `RUST_LOG` still overrides the level. Lines kept
/// by [`early`] are written first.
pub fn init(config: &LogConfig) {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(config.level.filter())
        // A TLS handshake or garbage sent to the plain-HTTP port is the client's problem, not an
        // error of the registry (skopeo and podman try TLS first).
        .filter_module("actix_http::h1::dispatcher", log::LevelFilter::Off)
        .parse_env("RUST_LOG");
    let fields = config.fields.clone();
    match config.formatter {
        LogFormatter::Json | LogFormatter::Logstash => {
            builder.format(move |buf, record| {
                let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let line = FIELDS.with(|extra| json_line(&time, record, &fields, &extra.borrow()));
                writeln!(buf, "{line}")
            });
        }
        LogFormatter::Text if !fields.is_empty() => {
            let suffix: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            builder.format(move |buf, record| {
                writeln!(
                    buf,
                    "[{} {:<5} {}] {}{suffix}",
                    buf.timestamp(),
                    record.level(),
                    record.target(),
                    record.args()
                )
            });
        }
        LogFormatter::Text => {}
    }
    let logger = builder.build();
    let max = logger.filter();
    if LOGGER.logger.set(logger).is_err() {
        return;
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(max);
    let early = std::mem::take(&mut *LOGGER.early.lock().unwrap());
    if let Some(logger) = LOGGER.logger.get() {
        for (level, target, message) in early {
            log::Log::log(
                logger,
                &log::Record::builder()
                    .args(format_args!("{message}"))
                    .level(level)
                    .target(&target)
                    .build(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_fields_and_extras() {
        let fields = BTreeMap::from([("environment".to_string(), "staging".to_string())]);
        let args = format_args!("GET /v2/ 200");
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Info)
            .target("berth::access")
            .build();
        let line = json_line(
            "2026-01-01T00:00:00.000Z",
            &record,
            &fields,
            &[("status", Value::from(200))],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["target"], "berth::access");
        assert_eq!(v["message"], "GET /v2/ 200");
        assert_eq!(v["environment"], "staging");
        assert_eq!(v["status"], 200);
        assert_eq!(v["time"], "2026-01-01T00:00:00.000Z");
    }
}
