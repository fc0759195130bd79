//! `tgingest policy test`: run a policy over sample lines and show what would leave.
//!
//! Each input line is plain text, a `{"text": …}` object (an `id` field, if any, is echoed in
//! the verdict), or a whole `Event` as JSON (an object with `schema_version` or `event_id`).
//! Text becomes a message in the account's own private chat (Saved Messages, sent by itself). A
//! dry run does not insist on what only the pipeline needs: an event whose `event_id` does not
//! match its fields (or has none) is still tested, with a `warning` saying so. A line that
//! cannot be read is reported with its number and processing goes on, so one bad sample does
//! not hide the verdicts on the rest.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use serde::Serialize;
use serde_json::Value;

use super::{Decision, Policy};
use crate::event::{
    Chat, ChatKind, Event, EventError, EventKind, SCHEMA_VERSION, Sender, Source, event_id,
};

/// Totals over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyTestSummary {
    /// Non-empty lines read.
    pub lines: u64,
    /// Lines whose event was kept.
    pub kept: u64,
    /// Lines whose event was dropped.
    pub dropped: u64,
    /// Lines that could not be read as an event.
    pub errors: u64,
    /// Masked spans by kind name, over all kept lines.
    pub redactions: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    decision: &'a str,
    rule: Option<&'a str>,
    redactions: BTreeMap<&'a str, u32>,
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    decision: &'a str,
    error: &'a str,
}

/// One input line, read.
struct Sample {
    event: Event,
    /// The `id` of a `{"text": …}` object, echoed in the verdict.
    id: Option<String>,
    /// What the dry run went past instead of refusing the line (a wrong `event_id`, fields it
    /// does not read).
    warning: Option<String>,
}

/// A line that cannot be tested: why, and its `id` when it had one.
struct Unreadable {
    id: Option<String>,
    error: String,
}

impl From<String> for Unreadable {
    fn from(error: String) -> Self {
        Unreadable { id: None, error }
    }
}

/// The event a plain-text line stands for: a message in `account_id`'s Saved Messages.
fn synthetic_event(account_id: &str, line: u64, text: &str) -> Event {
    let message_id = line.to_string();
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(account_id, account_id, &message_id, EventKind::Message, 0),
        account_id: account_id.to_string(),
        kind: EventKind::Message,
        chat: Chat {
            kind: ChatKind::Private,
            id: account_id.to_string(),
            title: None,
        },
        sender: Some(Sender {
            id: account_id.to_string(),
            display_name: None,
            is_self: true,
        }),
        message_id,
        topic_id: None,
        reply_to: None,
        sent_at_us: 0,
        edit_version: 0,
        text: text.to_string(),
        media: None,
        source: Source::Live,
        observed_at_us: 0,
    }
}

/// The sample on one input line, or what is wrong with it.
fn parse_line(account_id: &str, line: u64, text: &str) -> Result<Sample, Unreadable> {
    if !text.trim_start().starts_with('{') {
        return Ok(Sample {
            event: synthetic_event(account_id, line, text),
            id: None,
            warning: None,
        });
    }
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err("not a JSON object".to_string().into()),
        Err(e) => return Err(format!("not a valid event as JSON: {e}").into()),
    };
    if object.contains_key("schema_version") || object.contains_key("event_id") {
        parse_event(object)
    } else {
        parse_text_object(account_id, line, object)
    }
}

/// A whole event; its `event_id` may be wrong or missing (a warning, not an error).
fn parse_event(mut object: serde_json::Map<String, Value>) -> Result<Sample, Unreadable> {
    let missing_id = !object.contains_key("event_id");
    if missing_id {
        object.insert("event_id".into(), Value::String(String::new()));
    }
    let event: Event = serde_json::from_value(Value::Object(object))
        .map_err(|e| format!("not a valid event as JSON: {e}"))?;
    let warning = match event.validate() {
        Ok(()) => None,
        Err(EventError::IdMismatch { expected, .. }) if missing_id => Some(format!(
            "event has no event_id (its fields give {expected:?}); tested anyway"
        )),
        Err(e @ EventError::IdMismatch { .. }) => Some(format!("{e}; tested anyway")),
        Err(e) => return Err(format!("event fails validation: {e}").into()),
    };
    Ok(Sample {
        event,
        id: None,
        warning,
    })
}

/// A `{"text": …, "id": …}` object: the text as a message of `account_id`.
fn parse_text_object(
    account_id: &str,
    line: u64,
    object: serde_json::Map<String, Value>,
) -> Result<Sample, Unreadable> {
    let id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!("\"id\" must be a string or a number, found {other}").into());
        }
    };
    let Some(Value::String(text)) = object.get("text") else {
        return Err(Unreadable {
            id,
            error: "a JSON line needs a \"text\" string (or must be a whole event, with \
                    schema_version)"
                .into(),
        });
    };
    let ignored: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "id" | "text"))
        .collect();
    let warning = (!ignored.is_empty()).then(|| format!("fields not read: {}", ignored.join(", ")));
    Ok(Sample {
        event: synthetic_event(account_id, line, text),
        id,
        warning,
    })
}

/// Shows a text on one output line.
fn one_line(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// Runs `policy` over every line of `input`, writing one verdict per line to `out` (one JSON
/// object per line with `json`, carrying the sample's `id` and a `warning` when there is one;
/// as text, a warning follows its verdict on a line of its own); plain-text lines and
/// `{"text": …}` objects are messages of `account_id`.
pub fn run_policy_test(
    policy: &Policy,
    mut input: impl BufRead,
    mut out: impl Write,
    json: bool,
    account_id: &str,
) -> io::Result<PolicyTestSummary> {
    let mut summary = PolicyTestSummary::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let parsed = match std::str::from_utf8(&buf) {
            Ok(text) => {
                let text = text.trim_end_matches(['\n', '\r']);
                if text.trim().is_empty() {
                    continue;
                }
                parse_line(account_id, line_no, text)
            }
            Err(e) => Err(format!("not UTF-8 text: {e}").into()),
        };
        summary.lines += 1;
        let Sample { event, id, warning } = match parsed {
            Ok(sample) => sample,
            Err(Unreadable { id, error }) => {
                summary.errors += 1;
                if json {
                    serde_json::to_writer(
                        &mut out,
                        &JsonError {
                            line: line_no,
                            id: id.as_deref(),
                            decision: "error",
                            error: &error,
                        },
                    )?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{}: error: {error}", label(line_no, id.as_deref()))?;
                }
                continue;
            }
        };
        let label = label(line_no, id.as_deref());
        match policy.decide_owned(event) {
            Decision::Keep { event, redactions } => {
                summary.kept += 1;
                for (kind, n) in &redactions {
                    *summary
                        .redactions
                        .entry(kind.name().to_string())
                        .or_default() += u64::from(*n);
                }
                if json {
                    let line = JsonLine {
                        line: line_no,
                        id: id.as_deref(),
                        decision: "kept",
                        rule: None,
                        redactions: redactions.iter().map(|(k, n)| (k.name(), *n)).collect(),
                        text: Some(&event.text),
                        warning: warning.as_deref(),
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    writeln!(out)?;
                } else {
                    let counts: Vec<String> = redactions
                        .iter()
                        .map(|(k, n)| format!("{}={n}", k.name()))
                        .collect();
                    let counts = if counts.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", counts.join(", "))
                    };
                    writeln!(out, "{label}: kept{counts}: {}", one_line(&event.text))?;
                }
            }
            Decision::Drop { rule } => {
                summary.dropped += 1;
                if json {
                    let line = JsonLine {
                        line: line_no,
                        id: id.as_deref(),
                        decision: "dropped",
                        rule: Some(rule.as_str()),
                        redactions: BTreeMap::new(),
                        text: None,
                        warning: warning.as_deref(),
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{label}: dropped by rule {rule}")?;
                }
            }
        }
        if let Some(warning) = warning.filter(|_| !json) {
            writeln!(out, "{label}: warning: {}", one_line(&warning))?;
        }
    }
    Ok(summary)
}

/// `line N`, or `line N (id X)` for a sample with an id.
fn label(line: u64, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("line {line} (id {})", one_line(id)),
        None => format!("line {line}"),
    }
}
