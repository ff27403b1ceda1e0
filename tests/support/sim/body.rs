//! Strict reading of a JSON request body, shared by every dialect: the content type, no
//! nulls anywhere, no unknown keys, and typed fields whose refusal names the field's path.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

/// Parses a create body: `application/json`, a JSON object, no `null` at any depth.
pub(super) fn parse_object(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Map<String, Value>, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "Content-Type: must be application/json, got {content_type:?}"
        ));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("body: not JSON ({e})"))?;
    no_nulls(&value, "body")?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(format!("body: must be a JSON object, got {other}")),
    }
}

fn no_nulls(value: &Value, at: &str) -> Result<(), String> {
    match value {
        Value::Null => Err(format!("{at}: null is not a valid value")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| no_nulls(v, &format!("{at}[{i}]"))),
        Value::Object(obj) => obj.iter().try_for_each(|(k, v)| {
            let at = if at == "body" {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            no_nulls(v, &at)
        }),
        _ => Ok(()),
    }
}

/// A JSON object being checked, with the path its refusals name (`image_list[0]`).
pub(super) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: String,
}

impl<'a> Fields<'a> {
    pub(super) fn root(obj: &'a Map<String, Value>, allowed: &[&str]) -> Result<Self, String> {
        let fields = Fields {
            obj,
            at: String::new(),
        };
        fields.only(allowed)?;
        Ok(fields)
    }

    /// An item of a list that must be an object with only `allowed` keys.
    pub(super) fn item(value: &'a Value, at: String, allowed: &[&str]) -> Result<Self, String> {
        let Value::Object(obj) = value else {
            return Err(format!("{at}: must be an object, got {value}"));
        };
        let fields = Fields { obj, at };
        fields.only(allowed)?;
        Ok(fields)
    }

    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        match self.obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(format!("{}: unknown field", self.name(key))),
            None => Ok(()),
        }
    }

    /// The full path of a key, for refusals.
    pub(super) fn name(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.obj.contains_key(key)
    }

    /// `value` read from `key`, or a refusal saying the key is required.
    pub(super) fn require<T>(&self, key: &str, value: Option<T>) -> Result<T, String> {
        value.ok_or_else(|| format!("{}: required", self.name(key)))
    }

    fn wrong_type(&self, key: &str, expected: &str) -> String {
        format!(
            "{}: must be {expected}, got {}",
            self.name(key),
            self.obj[key]
        )
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    /// A string that must be present and not empty.
    pub(super) fn required_str(&self, key: &str) -> Result<&'a str, String> {
        match self.str(key)? {
            None => Err(format!("{}: required", self.name(key))),
            Some("") => Err(format!("{}: must not be empty", self.name(key))),
            Some(s) => Ok(s),
        }
    }

    /// A string no longer than `max` characters.
    pub(super) fn text(&self, key: &str, max: usize) -> Result<Option<&'a str>, String> {
        let s = self.str(key)?;
        if let Some(s) = s {
            let len = s.chars().count();
            if len > max {
                return Err(format!(
                    "{}: {len} characters, at most {max} allowed",
                    self.name(key)
                ));
            }
        }
        Ok(s)
    }

    pub(super) fn one_of(&self, key: &str, allowed: &[&str]) -> Result<Option<&'a str>, String> {
        match self.str(key)? {
            Some(s) if !allowed.contains(&s) => Err(format!(
                "{}: {s:?} is not one of {allowed:?}",
                self.name(key)
            )),
            other => Ok(other),
        }
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key, "a boolean")),
        }
    }

    /// A whole JSON number (not a numeric string).
    pub(super) fn integer(&self, key: &str) -> Result<Option<u64>, String> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
            Some(_) => Err(self.wrong_type(key, "a whole number")),
        }
    }

    pub(super) fn number(&self, key: &str) -> Result<Option<f64>, String> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(self.wrong_type(key, "a number")),
        }
    }

    pub(super) fn array(&self, key: &str) -> Result<Option<&'a [Value]>, String> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(self.wrong_type(key, "an array")),
        }
    }

    /// The objects of an optional list, each allowed only `allowed` keys.
    pub(super) fn items(&self, key: &str, allowed: &[&str]) -> Result<Vec<Fields<'a>>, String> {
        let items = self.array(key)?.unwrap_or_default();
        items
            .iter()
            .enumerate()
            .map(|(i, v)| Fields::item(v, format!("{}[{i}]", self.name(key)), allowed))
            .collect()
    }

    pub(super) fn object(&self, key: &str, allowed: &[&str]) -> Result<Option<Fields<'a>>, String> {
        self.obj
            .get(key)
            .map(|v| Fields::item(v, self.name(key), allowed))
            .transpose()
    }
}
