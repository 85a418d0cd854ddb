//! What a request may say, checked before anything is stored: names, threads, the message body.
//! Pure.

use serde_json::Value;

use super::api_error::ApiError;

pub const MAX_BODY: usize = 1 << 20;
pub const MAX_WAIT_S: u64 = 600;
const MAX_FROM: usize = 128;

/// Agent names are fleet-file names: lowercase letters, digits, `-`, `_`.
pub fn agent_name(s: &str) -> Result<&str, ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    ok.then_some(s).ok_or_else(|| ApiError::bad("invalid_agent", "an agent name is lowercase letters, digits, - and _"))
}

/// Thread ids: letters, digits, `-`, `_`, at most 64.
pub fn thread_id(s: &str) -> Result<&str, ApiError> {
    let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(s).ok_or_else(|| {
        ApiError::bad("invalid_thread", "`thread` is 1–64 letters, digits, - or _ (e.g. \"main\", \"ops-42\")")
    })
}

/// A message as posted: `{"text", "thread"?, "from"?}`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub text: String,
    pub thread: String,
    pub from: Option<String>,
}

/// A body that must be a JSON object.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("invalid_json", format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = v else { return Err(ApiError::bad("invalid_body", "the body must be a JSON object")) };
    Ok(map)
}

pub fn new_message(body: &[u8]) -> Result<NewMessage, ApiError> {
    let map = json_object(body)?;
    if let Some(k) = map.keys().find(|k| !["text", "thread", "from"].contains(&k.as_str())) {
        return Err(ApiError::bad(
            "unknown_field",
            format!("unknown field `{k}`; a message has `text`, `thread`, `from`"),
        ));
    }
    let text = match map.get("text") {
        None | Some(Value::Null) => return Err(ApiError::bad("missing_field", "`text` is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad("invalid_field", "`text` must be a string")),
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad("empty_text", "`text` is empty"));
    }
    let thread = match map.get("thread") {
        None | Some(Value::Null) => "main".to_string(),
        Some(Value::String(s)) => thread_id(s)?.to_string(),
        Some(_) => return Err(ApiError::bad("invalid_field", "`thread` must be a string")),
    };
    let from = match map.get("from") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_FROM && !s.chars().any(char::is_control) && !s.trim().is_empty() => {
            Some(s.clone())
        }
        Some(Value::String(_)) => {
            return Err(ApiError::bad("invalid_field", "`from` is 1–128 characters, no control characters"))
        }
        Some(_) => return Err(ApiError::bad("invalid_field", "`from` must be a string")),
    };
    Ok(NewMessage { text, thread, from })
}

/// `?wait=SECONDS`: 0–600.
pub fn wait_secs(s: Option<&str>) -> Result<Option<u64>, ApiError> {
    match s {
        None => Ok(None),
        Some(w) => match w.parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_S => Ok(Some(n)),
            _ => Err(ApiError::bad("invalid_wait", format!("`wait` is a number of seconds, 0–{MAX_WAIT_S}"))),
        },
    }
}

/// `?limit=`: 1–1000, default 100.
pub fn limit(s: Option<&str>) -> Result<usize, ApiError> {
    match s {
        None => Ok(100),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::bad("invalid_limit", "`limit` is 1–1000")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        new_message(body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn a_message_is_text_with_an_optional_thread_and_sender() {
        let m = new_message(br#"{"text":"hi","thread":"ops-1","from":"ana"}"#).unwrap();
        assert_eq!(m, NewMessage { text: "hi".into(), thread: "ops-1".into(), from: Some("ana".into()) });
        assert_eq!(new_message(br#"{"text":"hi"}"#).unwrap().thread, "main");
    }

    #[test]
    fn bad_bodies_are_named() {
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_body");
        assert_eq!(code("{}"), "missing_field");
        assert_eq!(code(r#"{"text":1}"#), "invalid_field");
        assert_eq!(code(r#"{"text":"  "}"#), "empty_text");
        assert_eq!(code(r#"{"text":"x","thread":"../etc"}"#), "invalid_thread");
        assert_eq!(code(r#"{"text":"x","thread":7}"#), "invalid_field");
        assert_eq!(code(r#"{"text":"x","from":"a\r\nSet-Cookie: x"}"#), "invalid_field");
        assert_eq!(code(r#"{"text":"x","extra":1}"#), "unknown_field");
    }

    #[test]
    fn names_and_numbers_are_checked() {
        assert!(agent_name("alice").is_ok());
        assert!(agent_name("../alice").is_err());
        assert!(agent_name("Alice").is_err());
        assert!(agent_name("").is_err());
        assert_eq!(wait_secs(Some("60")).unwrap(), Some(60));
        assert!(wait_secs(Some("-1")).is_err());
        assert!(wait_secs(Some("601")).is_err());
        assert_eq!(limit(None).unwrap(), 100);
        assert!(limit(Some("0")).is_err());
    }
}
