//! tracing setup: logfmt (the default on a terminal), JSON lines, or the
//! journal with every event field as a journal field (`RECIPE=`,
//! `VERSION=`, ...). `auto` picks the journal when stderr is connected to
//! it (`JOURNAL_STREAM` names stderr's device and inode), else logfmt.

use std::fmt;
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald under systemd, else logfmt.
    Auto,
    /// `time=... level=INFO msg="..." key=value`.
    Logfmt,
    /// One JSON object per line.
    Json,
    /// Native journal protocol.
    Journald,
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Everything, including skipped triggers.
    Debug,
    /// Normal operation.
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

impl From<LogLevel> for LevelFilter {
    fn from(l: LogLevel) -> LevelFilter {
        match l {
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <LogFormat as clap::ValueEnum>::from_str(s, false)
    }
}

/// True when stderr is the journal stream systemd connected us to.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(js) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = js.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Installs the global subscriber. Returns the format actually used (the
/// journal may be unreachable, in which case logfmt on stderr is used).
pub fn init(format: LogFormat, level: LogLevel) -> LogFormat {
    let filter = LevelFilter::from(level);
    let mut format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Logfmt,
        f => f,
    };
    if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                // syslog(3) levels: info is 6 and debug 7, so
                // `journalctl -p notice` does not list routine events.
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("farmhand".into())
                    .with_priority_mappings(tracing_journald::PriorityMappings {
                        error: tracing_journald::Priority::Error,
                        warn: tracing_journald::Priority::Warning,
                        info: tracing_journald::Priority::Informational,
                        debug: tracing_journald::Priority::Debug,
                        trace: tracing_journald::Priority::Debug,
                    });
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init();
                return format;
            }
            Err(_) => format = LogFormat::Logfmt,
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        _ => builder.event_format(Logfmt).try_init(),
    };
    format
}

/// The logfmt event formatter: `time=... level=INFO msg="..." k=v`.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let mut v = LogfmtVisitor::default();
        event.record(&mut v);
        write!(w, "time={now} level={level} msg={}", quote(&v.message))?;
        for (k, val) in &v.fields {
            write!(w, " {k}={}", quote(val))?;
        }
        writeln!(w)
    }
}

#[derive(Default)]
struct LogfmtVisitor {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for LogfmtVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let s = format!("{value:?}");
        if field.name() == "message" {
            self.message = s;
        } else {
            self.fields.push((field.name().to_string(), s));
        }
    }
}

/// Quotes a logfmt value when it needs it.
pub fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control())
    {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_quoting() {
        assert_eq!(quote("libz"), "libz");
        assert_eq!(quote("1.3.1-1"), "1.3.1-1");
        assert_eq!(quote("starting build"), "\"starting build\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\"b\nc"), "\"a\\\"b\\nc\"");
    }
}
