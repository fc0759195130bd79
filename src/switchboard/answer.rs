//! Reading Switchboard's answers: the pure functions that turn what came back (a body, an SSE
//! event, a JSON-RPC response, a tool result) into a reply or a typed [`CallError`].
//!
//! Apart from the client's I/O, and public, so `tests/decoders.rs` can feed them anything a
//! peer might send (property tests) without a server. Every error text the server provides is
//! [`clip`]ped, cut on a character boundary.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::client::{CallError, IngestReply};

/// Longest server-provided text kept in an error.
pub const MAX_ERROR_TEXT: usize = 1000;

/// `s`, cut to at most [`MAX_ERROR_TEXT`] bytes on a character boundary (`…` marks a cut).
pub fn clip(s: &str) -> String {
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_string();
    }
    let mut end = MAX_ERROR_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The error for a non-success HTTP status (`text`: the body, clipped into the message).
pub fn status_error(status: StatusCode, headers: &HeaderMap, text: &str) -> CallError {
    let message = format!("HTTP {status}: {}", clip(text.trim()));
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => CallError::TooLarge(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CallError::Unauthorized(message),
        StatusCode::TOO_MANY_REQUESTS => CallError::RateLimited {
            // Seconds only (the HTTP-date form is rare from proxies); at most 5 minutes.
            retry_after: header_str(headers, "retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(300))),
            message,
        },
        _ => CallError::Transport(message),
    }
}

/// A text the server sent in `value`, clipped; `fallback` when it sent none, or only white space.
fn server_text(value: &Value, fallback: &str) -> String {
    match value.as_str() {
        Some(text) if !text.trim().is_empty() => clip(text),
        _ => fallback.to_string(),
    }
}

/// A header's value as text, if it is there and is text.
pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A response body that is not SSE: the JSON value it holds, or a protocol error quoting (clipped)
/// what came instead.
pub fn json_reply(bytes: &[u8]) -> Result<Value, CallError> {
    serde_json::from_slice(bytes).map_err(|e| {
        CallError::Protocol(format!(
            "reply is not JSON ({e}): {}",
            clip(&String::from_utf8_lossy(bytes))
        ))
    })
}

/// The JSON-RPC response to `id` inside an SSE event, if that is what it carries.
pub fn response_to(event: &str, data: &str, id: u64) -> Option<Value> {
    if event != "message" {
        return None;
    }
    let v: Value = serde_json::from_str(data).ok()?;
    (v.get("id").and_then(Value::as_u64) == Some(id)
        && (v.get("result").is_some() || v.get("error").is_some()))
    .then_some(v)
}

/// The `result` of a JSON-RPC response, or why there is none.
pub fn rpc_result(mut response: Value, id: u64) -> Result<Value, CallError> {
    if response.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(CallError::Protocol(format!(
            "response id {} does not match request id {id}",
            clip(&response.get("id").unwrap_or(&Value::Null).to_string())
        )));
    }
    if let Some(err) = response.get("error") {
        return Err(CallError::Protocol(format!(
            "JSON-RPC error {}: {}",
            clip(&err["code"].to_string()),
            server_text(&err["message"], "(no message)")
        )));
    }
    match response.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(CallError::Protocol(
            "JSON-RPC response has neither result nor error".into(),
        )),
    }
}

/// A tool result's body: `isError: true` is a (transient) tool error; otherwise the JSON object
/// from `structuredContent` (bare, or FastMCP's `{"result": …}` wrapping) or `content[0].text`.
pub fn tool_body(mut result: Value) -> Result<Value, CallError> {
    if result["isError"].as_bool().unwrap_or(false) {
        return Err(CallError::ToolError(server_text(
            &result["content"][0]["text"],
            "tool reported an error without text",
        )));
    }
    let mut structured = result
        .get_mut("structuredContent")
        .map(Value::take)
        .unwrap_or_default();
    if structured.get("status").is_some() {
        return Ok(structured);
    }
    if let Some(inner) = structured
        .get_mut("result")
        .filter(|r| r.get("status").is_some())
    {
        return Ok(inner.take());
    }
    match result["content"][0]["text"]
        .as_str()
        .map(serde_json::from_str::<Value>)
    {
        Some(Ok(v)) if v.is_object() => Ok(v),
        _ => Err(CallError::Protocol(
            "tool result has neither structuredContent nor a JSON object in content[0].text".into(),
        )),
    }
}

/// What Switchboard answered to an `ingest` call, from the tool body ([`tool_body`]).
pub fn parse_ingest(body: &Value) -> Result<IngestReply, CallError> {
    match body["status"].as_str() {
        Some("accepted") => {
            let request_id = match &body["request_id"] {
                Value::String(s) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(CallError::Protocol(
                        "accepted reply without a request_id".into(),
                    ));
                }
            };
            Ok(IngestReply::Accepted {
                request_id,
                duplicate: body["duplicate"].as_bool().unwrap_or(false),
            })
        }
        Some("error") => Ok(IngestReply::Rejected {
            error: server_text(&body["error"], "(no reason given)"),
        }),
        other => Err(CallError::Protocol(format!(
            "ingest reply has unknown status {}",
            clip(&format!("{other:?}"))
        ))),
    }
}

/// What Switchboard answered to a heartbeat, from the tool body ([`tool_body`]); a rejection
/// (`status: "error"`) is a `Protocol` error.
pub fn parse_heartbeat(body: &Value) -> Result<(), CallError> {
    match body["status"].as_str() {
        Some("accepted") => Ok(()),
        Some("error") => Err(CallError::Protocol(format!(
            "heartbeat rejected: {}",
            server_text(&body["error"], "(no reason given)")
        ))),
        _ => Err(CallError::Protocol(format!(
            "heartbeat reply has no known status: {}",
            clip(&body.to_string())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tool_bodies_come_from_structured_content_or_text() {
        let accepted = json!({"status": "accepted", "request_id": "r", "duplicate": true});
        let from_structured = json!({"structuredContent": accepted, "isError": false});
        let wrapped = json!({"structuredContent": {"result": accepted}});
        let from_text = json!({"content": [{"type": "text", "text": accepted.to_string()}]});
        for r in [from_structured, wrapped, from_text] {
            assert_eq!(
                parse_ingest(&tool_body(r).unwrap()).unwrap(),
                IngestReply::Accepted {
                    request_id: "r".into(),
                    duplicate: true
                }
            );
        }
        let err = json!({"isError": true, "content": [{"type": "text", "text": "db down"}]});
        assert_eq!(tool_body(err), Err(CallError::ToolError("db down".into())));
        assert!(matches!(
            tool_body(json!({"content": [{"type": "text", "text": "nope"}]})),
            Err(CallError::Protocol(_))
        ));
        let rejected = json!({"status": "error", "error": "Invalid ingest.v1 envelope: x"});
        assert_eq!(
            parse_ingest(&rejected).unwrap(),
            IngestReply::Rejected {
                error: "Invalid ingest.v1 envelope: x".into()
            }
        );
    }
}
