//! The fake's strict validation of `ingest.v1` and `connector.heartbeat.v1` arguments, after
//! Switchboard's pydantic models: closed lists, no unknown key at any level, non-empty strings
//! (after trimming), RFC 3339 timestamps with a `T`, an offset and at most 6 fractional digits.
//! Every problem is reported (like pydantic), each as `<path>: <problem>`.

use serde_json::{Map, Value};

use super::FakeOptions;

/// `chat_type` values Switchboard knows.
const CHAT_TYPES: &[&str] = &["private", "group", "supergroup", "channel"];
/// `control.policy_tier` values (current servers; `passive` arrived later than the others).
const POLICY_TIERS: &[&str] = &["default", "interactive", "high_priority", "passive"];
/// `control.ingestion_tier` values.
const INGESTION_TIERS: &[&str] = &["full", "metadata"];
/// `status.state` values of a heartbeat.
const STATES: &[&str] = &["healthy", "degraded", "error"];

/// Top-level arguments the `ingest` tool requires (their absence is a tool error, not a reply).
pub(super) const INGEST_REQUIRED: &[&str] =
    &["schema_version", "source", "event", "sender", "payload"];
/// Top-level arguments the `connector.heartbeat` tool requires.
pub(super) const HEARTBEAT_REQUIRED: &[&str] = &[
    "schema_version",
    "connector",
    "status",
    "counters",
    "sent_at",
];

#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn add(&mut self, path: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{path}: {problem}"));
    }

    fn into_result(self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(format!("1 validation error: {}", self.0[0])),
            n => Err(format!("{n} validation errors: {}", self.0.join("; "))),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The object at `path`, or an error.
fn object<'a>(v: &'a Value, path: &str, errs: &mut Errors) -> Option<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        other => {
            errs.add(
                path,
                format!("must be an object, found {}", type_name(other)),
            );
            None
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Required keys present, no key outside `required ∪ optional`.
fn keys(
    m: &Map<String, Value>,
    path: &str,
    required: &[&str],
    optional: &[&str],
    errs: &mut Errors,
) {
    for k in required {
        if !m.contains_key(*k) {
            errs.add(&join(path, k), "field required");
        }
    }
    for k in m.keys() {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            errs.add(&join(path, k), "extra fields not permitted");
        }
    }
}

fn non_empty(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::String(_)) => errs.add(path, "must not be empty or whitespace"),
        Some(other) => errs.add(
            path,
            format!("must be a string, found {}", type_name(other)),
        ),
    }
}

fn non_empty_or_null(v: Option<&Value>, path: &str, errs: &mut Errors) {
    if !matches!(v, Some(Value::Null)) {
        non_empty(v, path, errs);
    }
}

fn string_or_null(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => errs.add(
            path,
            format!("must be a string, found {}", type_name(other)),
        ),
    }
}

fn one_of(v: Option<&Value>, path: &str, allowed: &[&str], errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => {}
        Some(other) => errs.add(path, format!("must be one of {allowed:?}, found {other}")),
    }
}

fn count(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::Number(n)) if n.is_u64() => {}
        Some(other) => errs.add(path, format!("must be an integer >= 0, found {other}")),
    }
}

fn timestamp(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::String(s)) => {
            if let Err(problem) = rfc3339_problem(s) {
                errs.add(path, problem);
            }
        }
        Some(other) => errs.add(
            path,
            format!("must be an RFC 3339 string, found {}", type_name(other)),
        ),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`, and a real instant.
pub(super) fn rfc3339_problem(s: &str) -> Result<(), String> {
    let s = s.trim();
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.len() == r.len() && d.iter().all(u8::is_ascii_digit))
    };
    let shape = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10);
    if !shape {
        return Err(format!("{s:?} is not an RFC 3339 date-time"));
    }
    if b.get(10) != Some(&b'T') {
        return Err(format!("{s:?} must separate date and time with 'T'"));
    }
    if !(digits(11..13) && b.get(13) == Some(&b':') && digits(14..16))
        || b.get(16) != Some(&b':')
        || !digits(17..19)
    {
        return Err(format!("{s:?} is not an RFC 3339 date-time"));
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let frac = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return Err(format!("{s:?} has an empty fraction"));
        }
        if frac > 6 {
            return Err(format!(
                "{s:?} has {frac} fractional digits; at most 6 are allowed"
            ));
        }
        i += 1 + frac;
    }
    let offset = &s[i..];
    let offset_ok = offset == "Z"
        || (offset.len() == 6
            && matches!(offset.as_bytes()[0], b'+' | b'-')
            && digits(i + 1..i + 3)
            && offset.as_bytes()[3] == b':'
            && digits(i + 4..i + 6));
    if !offset_ok {
        return Err(format!(
            "{s:?} must end with a timezone offset ('Z' or ±hh:mm)"
        ));
    }
    s.parse::<jiff::Timestamp>()
        .map(|_| ())
        .map_err(|e| format!("{s:?} is not a valid instant: {e}"))
}

/// Validates `ingest` arguments whose required top-level keys are known to be present.
pub(super) fn ingest(args: &Map<String, Value>, opts: &FakeOptions) -> Result<(), String> {
    let mut errs = Errors::default();
    keys(args, "", INGEST_REQUIRED, &["control"], &mut errs);

    match args.get("schema_version") {
        Some(Value::String(s)) if s.trim() == super::super::INGEST_SCHEMA => {}
        Some(other) => errs.add(
            "schema_version",
            format!("unsupported schema version {other}; expected 'ingest.v1'"),
        ),
        None => {}
    }

    if let Some(source) = args
        .get("source")
        .and_then(|v| object(v, "source", &mut errs))
    {
        keys(
            source,
            "source",
            &["channel", "provider", "endpoint_identity"],
            &[],
            &mut errs,
        );
        let channels: Vec<&str> = opts.channels.iter().map(String::as_str).collect();
        one_of(
            source.get("channel"),
            "source.channel",
            &channels,
            &mut errs,
        );
        one_of(
            source.get("provider"),
            "source.provider",
            &["telegram"],
            &mut errs,
        );
        non_empty(
            source.get("endpoint_identity"),
            "source.endpoint_identity",
            &mut errs,
        );
    }

    if let Some(event) = args
        .get("event")
        .and_then(|v| object(v, "event", &mut errs))
    {
        keys(
            event,
            "event",
            &["external_event_id", "observed_at"],
            &["external_thread_id"],
            &mut errs,
        );
        non_empty(
            event.get("external_event_id"),
            "event.external_event_id",
            &mut errs,
        );
        non_empty_or_null(
            event.get("external_thread_id"),
            "event.external_thread_id",
            &mut errs,
        );
        timestamp(event.get("observed_at"), "event.observed_at", &mut errs);
    }

    if let Some(sender) = args
        .get("sender")
        .and_then(|v| object(v, "sender", &mut errs))
    {
        let details: &[&str] = if opts.sender_details {
            &["display_name", "chat_type", "participant_count"]
        } else {
            &[]
        };
        keys(sender, "sender", &["identity"], details, &mut errs);
        non_empty(sender.get("identity"), "sender.identity", &mut errs);
        if opts.sender_details {
            string_or_null(sender.get("display_name"), "sender.display_name", &mut errs);
            if !matches!(sender.get("chat_type"), Some(Value::Null)) {
                one_of(
                    sender.get("chat_type"),
                    "sender.chat_type",
                    CHAT_TYPES,
                    &mut errs,
                );
            }
            if !matches!(sender.get("participant_count"), Some(Value::Null)) {
                count(
                    sender.get("participant_count"),
                    "sender.participant_count",
                    &mut errs,
                );
            }
        }
    }

    let mut tier = "full";
    if let Some(control) = args
        .get("control")
        .and_then(|v| object(v, "control", &mut errs))
    {
        keys(
            control,
            "control",
            &[],
            &[
                "idempotency_key",
                "policy_tier",
                "ingestion_tier",
                "trace_context",
            ],
            &mut errs,
        );
        non_empty_or_null(
            control.get("idempotency_key"),
            "control.idempotency_key",
            &mut errs,
        );
        one_of(
            control.get("policy_tier"),
            "control.policy_tier",
            POLICY_TIERS,
            &mut errs,
        );
        one_of(
            control.get("ingestion_tier"),
            "control.ingestion_tier",
            INGESTION_TIERS,
            &mut errs,
        );
        if let Some(Value::String(t)) = control.get("ingestion_tier") {
            tier = if t == "metadata" { "metadata" } else { "full" };
        }
        if let Some(tc) = control.get("trace_context") {
            object(tc, "control.trace_context", &mut errs);
        }
    }

    if let Some(payload) = args
        .get("payload")
        .and_then(|v| object(v, "payload", &mut errs))
    {
        keys(
            payload,
            "payload",
            &["raw", "normalized_text"],
            &["attachments"],
            &mut errs,
        );
        non_empty(
            payload.get("normalized_text"),
            "payload.normalized_text",
            &mut errs,
        );
        match (tier, payload.get("raw")) {
            (_, None) | (_, Some(Value::Object(_))) | ("metadata", Some(Value::Null)) => {}
            ("metadata", Some(other)) => errs.add(
                "payload.raw",
                format!(
                    "must be an object or null (metadata tier), found {}",
                    type_name(other)
                ),
            ),
            (_, Some(other)) => errs.add(
                "payload.raw",
                format!("must be an object, found {}", type_name(other)),
            ),
        }
        match payload.get("attachments") {
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(other) => errs.add(
                "payload.attachments",
                format!("must be a list or null, found {}", type_name(other)),
            ),
        }
    }
    errs.into_result()
}

/// Validates `connector.heartbeat` arguments whose required top-level keys are present.
pub(super) fn heartbeat(args: &Map<String, Value>) -> Result<(), String> {
    let mut errs = Errors::default();
    keys(
        args,
        "",
        HEARTBEAT_REQUIRED,
        &["checkpoint", "capabilities"],
        &mut errs,
    );
    match args.get("schema_version") {
        Some(Value::String(s)) if s == super::super::HEARTBEAT_SCHEMA => {}
        Some(other) => errs.add(
            "schema_version",
            format!("must be 'connector.heartbeat.v1', found {other}"),
        ),
        None => {}
    }
    if let Some(c) = args
        .get("connector")
        .and_then(|v| object(v, "connector", &mut errs))
    {
        keys(
            c,
            "connector",
            &["connector_type", "endpoint_identity", "instance_id"],
            &["version"],
            &mut errs,
        );
        non_empty(
            c.get("connector_type"),
            "connector.connector_type",
            &mut errs,
        );
        non_empty(
            c.get("endpoint_identity"),
            "connector.endpoint_identity",
            &mut errs,
        );
        match c.get("instance_id") {
            None => {}
            Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => {}
            Some(other) => errs.add(
                "connector.instance_id",
                format!("must be a UUID, found {other}"),
            ),
        }
        string_or_null(c.get("version"), "connector.version", &mut errs);
    }
    if let Some(s) = args
        .get("status")
        .and_then(|v| object(v, "status", &mut errs))
    {
        keys(
            s,
            "status",
            &["state", "uptime_s"],
            &["error_message"],
            &mut errs,
        );
        one_of(s.get("state"), "status.state", STATES, &mut errs);
        string_or_null(s.get("error_message"), "status.error_message", &mut errs);
        count(s.get("uptime_s"), "status.uptime_s", &mut errs);
    }
    if let Some(c) = args
        .get("counters")
        .and_then(|v| object(v, "counters", &mut errs))
    {
        let required = [
            "messages_ingested",
            "messages_failed",
            "source_api_calls",
            "checkpoint_saves",
        ];
        keys(c, "counters", &required, &["dedupe_accepted"], &mut errs);
        for k in required.iter().chain(&["dedupe_accepted"]) {
            count(c.get(*k), &join("counters", k), &mut errs);
        }
    }
    if let Some(cp) = args.get("checkpoint").filter(|v| !v.is_null())
        && let Some(cp) = object(cp, "checkpoint", &mut errs)
    {
        keys(cp, "checkpoint", &[], &["cursor", "updated_at"], &mut errs);
        string_or_null(cp.get("cursor"), "checkpoint.cursor", &mut errs);
        if !matches!(cp.get("updated_at"), Some(Value::Null)) {
            timestamp(cp.get("updated_at"), "checkpoint.updated_at", &mut errs);
        }
    }
    if let Some(caps) = args.get("capabilities").filter(|v| !v.is_null())
        && let Some(caps) = object(caps, "capabilities", &mut errs)
    {
        keys(caps, "capabilities", &[], &["backfill"], &mut errs);
        if let Some(b) = caps.get("backfill")
            && !b.is_boolean()
        {
            errs.add("capabilities.backfill", "must be a boolean");
        }
    }
    timestamp(args.get("sent_at"), "sent_at", &mut errs);
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::rfc3339_problem;

    #[test]
    fn timestamps_need_t_offset_and_at_most_six_fractional_digits() {
        for ok in [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.1Z",
            "2026-03-01T10:00:00.123456+02:00",
            "2026-03-01T10:00:00-05:30",
        ] {
            assert_eq!(rfc3339_problem(ok), Ok(()), "{ok}");
        }
        for bad in [
            "2026-03-01T10:00:00.1234567Z",
            "2026-03-01 10:00:00Z",
            "2026-03-01T10:00:00",
            "2026-03-01T10:00:00.Z",
            "2026-03-01T10:00:00+0200",
            "2026-02-30T10:00:00Z",
            "1700000000",
            "",
        ] {
            assert!(rfc3339_problem(bad).is_err(), "{bad}");
        }
    }
}
