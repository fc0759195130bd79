//! `tgingest policy test`: run a policy over sample lines and show what would leave.
//!
//! Each input line is either an `Event` as JSON (a line starting with `{`) or plain text, which
//! becomes a message in the account's own private chat (Saved Messages, sent by itself). A line
//! that cannot be read is reported with its number and processing goes on, so one bad sample
//! does not hide the verdicts on the rest.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use serde::Serialize;

use super::{Decision, Policy};
use crate::event::{Chat, ChatKind, Event, EventKind, SCHEMA_VERSION, Sender, Source, event_id};

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
    decision: &'a str,
    rule: Option<&'a str>,
    redactions: BTreeMap<&'a str, u32>,
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    line: u64,
    decision: &'a str,
    error: &'a str,
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

/// The event on one input line, or what is wrong with it.
fn parse_line(account_id: &str, line: u64, text: &str) -> Result<Event, String> {
    if !text.trim_start().starts_with('{') {
        return Ok(synthetic_event(account_id, line, text));
    }
    let event: Event =
        serde_json::from_str(text).map_err(|e| format!("not a valid event as JSON: {e}"))?;
    event
        .validate()
        .map_err(|e| format!("event fails validation: {e}"))?;
    Ok(event)
}

/// Shows a text on one output line.
fn one_line(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// Runs `policy` over every line of `input`, writing one verdict per line to `out` (one JSON
/// object per line with `json`); plain-text lines are messages of `account_id`.
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
            Err(e) => Err(format!("not UTF-8 text: {e}")),
        };
        summary.lines += 1;
        let event = match parsed {
            Ok(event) => event,
            Err(error) => {
                summary.errors += 1;
                if json {
                    serde_json::to_writer(
                        &mut out,
                        &JsonError {
                            line: line_no,
                            decision: "error",
                            error: &error,
                        },
                    )?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "line {line_no}: error: {error}")?;
                }
                continue;
            }
        };
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
                        decision: "kept",
                        rule: None,
                        redactions: redactions.iter().map(|(k, n)| (k.name(), *n)).collect(),
                        text: Some(&event.text),
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
                    writeln!(
                        out,
                        "line {line_no}: kept{counts}: {}",
                        one_line(&event.text)
                    )?;
                }
            }
            Decision::Drop { rule } => {
                summary.dropped += 1;
                if json {
                    let line = JsonLine {
                        line: line_no,
                        decision: "dropped",
                        rule: Some(rule.as_str()),
                        redactions: BTreeMap::new(),
                        text: None,
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "line {line_no}: dropped by rule {rule}")?;
                }
            }
        }
    }
    Ok(summary)
}
