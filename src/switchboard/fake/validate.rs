//! The fake's strict validation of `ingest.v1` and `connector.heartbeat.v1` arguments, after
//! Switchboard's pydantic models: closed lists, no unknown key at any level, non-empty strings
//! (after trimming), RFC 3339 timestamps with a `T`, an offset and at most 6 fractional digits.
//! Every problem is reported at once, rendered like pydantic's `ValidationError`: a count line,
//! then per problem its location on a line of its own, the message with `type`, `input_value`
//! and `input_type`, and a "For further information visit …" line. Multi-line and long, and
//! quoting the input (non-ASCII included), as the real server's errors are.

use serde_json::{Map, Value};

use super::FakeOptions;

/// `chat_type` values Switchboard knows.
const CHAT_TYPES: &[&str] = &["private", "group", "supergroup", "channel"];
/// `control.policy_tier` values (current servers; `passive` arrived later than the others).
const POLICY_TIERS: &[&str] = &["default", "interactive", "high_priority", "passive"];
/// `control.ingestion_tier` values.
const INGESTION_TIERS: &[&str] = &["full", "metadata"];
/// `control.payload_type` values (servers from late March 2026 on).
const PAYLOAD_TYPES: &[&str] = &[crate::switchboard::batch::PAYLOAD_TYPE];
/// The keys of one `payload.raw.conversation_history` entry (all sent, all required here).
const HISTORY_KEYS: &[&str] = &[
    "message_id",
    "sender_id",
    "display_name",
    "text",
    "timestamp",
    "is_new",
    "reply_to",
];
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

/// One problem, as pydantic reports it.
struct Problem {
    /// Dotted location (`source.channel`).
    loc: String,
    /// pydantic's error type (`literal_error`, `missing`, …): also the docs URL's last segment.
    kind: &'static str,
    message: String,
    /// The offending input (the parent object for a missing field).
    input: Value,
}

#[derive(Default)]
struct Errors(Vec<Problem>);

impl Errors {
    fn add(
        &mut self,
        path: &str,
        kind: &'static str,
        message: impl std::fmt::Display,
        input: &Value,
    ) {
        self.0.push(Problem {
            loc: path.to_string(),
            kind,
            message: message.to_string(),
            input: input.clone(),
        });
    }

    /// Every problem, rendered as a pydantic `ValidationError` of `model` would be.
    fn into_result(self, model: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(report(model, &self.0))
    }
}

/// pydantic's `str(ValidationError)`: a count line, then per problem the location on its own
/// line, the message with type and input, and the docs link — multi-line, like the real server's.
fn report(model: &str, problems: &[Problem]) -> String {
    let n = problems.len();
    let mut out = format!(
        "{n} validation error{} for {model}",
        if n == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str(&format!(
            "\n{}\n  {} [type={}, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.11/v/{}",
            p.loc,
            p.message,
            p.kind,
            py_repr_clipped(&p.input),
            py_type(&p.input),
            p.kind
        ));
    }
    out
}

/// The report FastMCP gives when a tool's top-level arguments are missing.
pub(super) fn missing_arguments(tool: &str, args: &Map<String, Value>, missing: &[&str]) -> String {
    let input = Value::Object(args.clone());
    let problems: Vec<Problem> = missing
        .iter()
        .map(|k| Problem {
            loc: (*k).to_string(),
            kind: "missing",
            message: "Field required".into(),
            input: input.clone(),
        })
        .collect();
    format!(
        "Error executing tool {tool}: {}",
        report(&format!("{tool}Arguments"), &problems)
    )
}

/// Longest `input_value` shown, in characters (pydantic elides the middle of longer ones).
const MAX_INPUT_REPR: usize = 120;

fn py_repr_clipped(v: &Value) -> String {
    let repr = py_repr(v);
    let n = repr.chars().count();
    if n <= MAX_INPUT_REPR {
        return repr;
    }
    let half = MAX_INPUT_REPR / 2;
    let head: String = repr.chars().take(half).collect();
    let tail: String = repr.chars().skip(n - half).collect();
    format!("{head}...{tail}")
}

/// Python's `repr` of the JSON value (non-ASCII kept, as Python 3 keeps it).
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_str(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
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
                "dict_type",
                "Input should be a valid dictionary",
                other,
            );
            None
        }
    }
}

/// pydantic's message for a `Literal[...]` field.
fn literal(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    match quoted.split_last() {
        None => "Input should be a value of an empty literal".into(),
        Some((last, [])) => format!("Input should be {last}"),
        Some((last, rest)) => format!("Input should be {} or {last}", rest.join(", ")),
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
    let parent = Value::Object(m.clone());
    for k in required {
        if !m.contains_key(*k) {
            errs.add(&join(path, k), "missing", "Field required", &parent);
        }
    }
    for (k, v) in m {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            errs.add(
                &join(path, k),
                "extra_forbidden",
                "Extra inputs are not permitted",
                v,
            );
        }
    }
}

fn non_empty(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(v @ Value::String(_)) => errs.add(
            path,
            "string_too_short",
            "String should have at least 1 character",
            v,
        ),
        Some(other) => errs.add(path, "string_type", "Input should be a valid string", other),
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
        Some(other) => errs.add(path, "string_type", "Input should be a valid string", other),
    }
}

fn one_of(v: Option<&Value>, path: &str, allowed: &[&str], errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => {}
        Some(other) => errs.add(path, "literal_error", literal(allowed), other),
    }
}

fn count(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None => {}
        Some(Value::Number(n)) if n.is_u64() => {}
        Some(other @ Value::Number(n)) if n.is_i64() => errs.add(
            path,
            "greater_than_equal",
            "Input should be greater than or equal to 0",
            other,
        ),
        Some(other) => errs.add(path, "int_type", "Input should be a valid integer", other),
    }
}

fn timestamp(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        None => {}
        Some(v @ Value::String(s)) => {
            if let Err(problem) = rfc3339_problem(s) {
                errs.add(
                    path,
                    "datetime_from_date_parsing",
                    format!("Input should be a valid datetime: {problem}"),
                    v,
                );
            }
        }
        Some(other) => errs.add(
            path,
            "datetime_type",
            "Input should be a valid datetime",
            other,
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
            "literal_error",
            literal(&[super::super::INGEST_SCHEMA]),
            other,
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

    let is_batch = opts.conversation_batches
        && args
            .get("control")
            .and_then(|c| c.get("payload_type"))
            .and_then(Value::as_str)
            == Some(crate::switchboard::batch::PAYLOAD_TYPE);
    if let Some(sender) = args
        .get("sender")
        .and_then(|v| object(v, "sender", &mut errs))
    {
        let mut optional: Vec<&str> = Vec::new();
        if opts.sender_details {
            optional.extend(["display_name", "chat_type", "participant_count"]);
        }
        if opts.conversation_batches {
            optional.extend(["participants", "owner_sender_id"]);
        }
        keys(sender, "sender", &["identity"], &optional, &mut errs);
        if opts.conversation_batches {
            batch_sender(sender, &mut errs);
        }
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
        let mut optional = vec![
            "idempotency_key",
            "policy_tier",
            "ingestion_tier",
            "trace_context",
        ];
        if opts.conversation_batches {
            optional.push("payload_type");
        }
        keys(control, "control", &[], &optional, &mut errs);
        one_of(
            control.get("payload_type"),
            "control.payload_type",
            PAYLOAD_TYPES,
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
                "dict_type",
                "Input should be a valid dictionary or None (metadata tier)",
                other,
            ),
            (_, Some(other)) => errs.add(
                "payload.raw",
                "dict_type",
                "Input should be a valid dictionary",
                other,
            ),
        }
        if is_batch {
            batch_payload(args, payload, &mut errs);
        }
        match payload.get("attachments") {
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(other) => errs.add(
                "payload.attachments",
                "list_type",
                "Input should be a valid list",
                other,
            ),
        }
    }
    errs.into_result("IngestEnvelopeV1")
}

/// `sender.participants` (`{id: name}`) and `sender.owner_sender_id` (string or null).
fn batch_sender(sender: &Map<String, Value>, errs: &mut Errors) {
    if let Some(p) = sender.get("participants")
        && let Some(p) = object(p, "sender.participants", errs)
    {
        for (id, name) in p {
            if !name.is_string() {
                errs.add(
                    &format!("sender.participants.{id}"),
                    "string_type",
                    "Input should be a valid string",
                    name,
                );
            }
        }
    }
    string_or_null(
        sender.get("owner_sender_id"),
        "sender.owner_sender_id",
        errs,
    );
}

/// A message id as a batch carries it: a non-empty decimal string (or a whole number).
fn message_id(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// `payload.raw.conversation_history` of a batch: a list of entries with exactly
/// [`HISTORY_KEYS`], typed, strictly ascending by message id, at least one `is_new`; and the
/// batch's ids agree with its members (`batch:<chat>:<min>-<max>`, `tg_batch:<chat>:<min>:<max>`).
fn batch_payload(args: &Map<String, Value>, payload: &Map<String, Value>, errs: &mut Errors) {
    let path = "payload.raw.conversation_history";
    let Some(raw) = payload.get("raw").and_then(Value::as_object) else {
        return; // reported as payload.raw already, or missing
    };
    let history = match raw.get("conversation_history") {
        Some(Value::Array(h)) => h,
        Some(other) => {
            return errs.add(path, "list_type", "Input should be a valid list", other);
        }
        None => {
            return errs.add(
                path,
                "missing",
                "Field required",
                &Value::Object(raw.clone()),
            );
        }
    };
    let mut previous: Option<u64> = None;
    let mut new_ids = Vec::new();
    for (i, entry) in history.iter().enumerate() {
        let at = format!("{path}.{i}");
        let Some(e) = object(entry, &at, errs) else {
            continue;
        };
        keys(e, &at, HISTORY_KEYS, &[], errs);
        let id = message_id(e.get("message_id"));
        match id {
            None if e.contains_key("message_id") => errs.add(
                &join(&at, "message_id"),
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
                &e["message_id"],
            ),
            Some(id) if previous.is_some_and(|p| p >= id) => errs.add(
                &join(&at, "message_id"),
                "value_error",
                "Value error, conversation_history must be sorted by message_id, without repeats",
                &e["message_id"],
            ),
            _ => {}
        }
        previous = id.or(previous);
        non_empty(e.get("sender_id"), &join(&at, "sender_id"), errs);
        string_or_null(e.get("display_name"), &join(&at, "display_name"), errs);
        if let Some(t) = e.get("text")
            && !t.is_string()
        {
            errs.add(
                &join(&at, "text"),
                "string_type",
                "Input should be a valid string",
                t,
            );
        }
        timestamp(e.get("timestamp"), &join(&at, "timestamp"), errs);
        match e.get("is_new") {
            Some(Value::Bool(true)) => new_ids.extend(id),
            Some(Value::Bool(false)) | None => {}
            Some(other) => errs.add(
                &join(&at, "is_new"),
                "bool_type",
                "Input should be a valid boolean",
                other,
            ),
        }
        if let Some(r) = e.get("reply_to")
            && !r.is_null()
            && message_id(Some(r)).is_none()
        {
            errs.add(
                &join(&at, "reply_to"),
                "int_parsing",
                "Input should be a valid integer or None",
                r,
            );
        }
    }
    let (Some(min), Some(max)) = (new_ids.first(), new_ids.last()) else {
        return errs.add(
            path,
            "value_error",
            "Value error, a conversation_history batch needs at least one entry with is_new = true",
            &Value::Array(history.clone()),
        );
    };
    let chat = args
        .get("event")
        .and_then(|e| e.get("external_thread_id"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let expected = [
        (
            "event.external_event_id",
            args.get("event").and_then(|e| e.get("external_event_id")),
            format!("batch:{chat}:{min}-{max}"),
        ),
        (
            "control.idempotency_key",
            args.get("control").and_then(|c| c.get("idempotency_key")),
            format!("tg_batch:{chat}:{min}:{max}"),
        ),
    ];
    for (at, got, want) in expected {
        if let Some(got) = got
            && got.as_str() != Some(want.as_str())
        {
            errs.add(
                at,
                "value_error",
                format!("Value error, a batch's id must name its new messages: expected {want:?}"),
                got,
            );
        }
    }
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
            "literal_error",
            literal(&[super::super::HEARTBEAT_SCHEMA]),
            other,
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
                "uuid_parsing",
                "Input should be a valid UUID",
                other,
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
            errs.add(
                "capabilities.backfill",
                "bool_type",
                "Input should be a valid boolean",
                b,
            );
        }
    }
    timestamp(args.get("sent_at"), "sent_at", &mut errs);
    errs.into_result("ConnectorHeartbeatV1")
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
