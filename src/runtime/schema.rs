//! Checks a tool call's arguments against the tool's JSON Schema before anything reaches the
//! server, so a bad call gets a clear 4xx naming the field instead of whatever the server says.
//!
//! Covers the keywords tool schemas use in practice: `type` (one or a list), `properties`,
//! `required`, `additionalProperties: false`, `enum`, `const`, `items`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `minItems`/`maxItems`, and `anyOf`/`oneOf`/`allOf`. Unknown keywords
//! (`format`, `pattern`, `$ref`, …) are not enforced: the server still validates them.

use serde_json::Value;

/// The first problem found, as a sentence naming the JSON path (`arguments.timezone`).
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "arguments", 0)
}

const MAX_DEPTH: usize = 32;

fn check(schema: &Value, value: &Value, at: &str, depth: usize) -> Result<(), String> {
    let Some(schema) = schema.as_object() else { return Ok(()) };
    if depth > MAX_DEPTH {
        return Ok(());
    }
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|t| has_type(value, t)) {
            return Err(format!("{at} must be {} (got {})", names.join(" or "), type_name(value)));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let shown: Vec<String> = allowed.iter().take(10).map(Value::to_string).collect();
        return Err(format!("{at} must be one of {}", shown.join(", ")));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{at} must be {constant}"));
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        return Err(format!("{at}.{name} is required"));
                    }
                }
            }
            for (name, item) in map {
                match properties.and_then(|p| p.get(name)) {
                    Some(sub) => check(sub, item, &format!("{at}.{name}"), depth + 1)?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            let known: Vec<&str> = properties
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            return Err(format!(
                                "{at}.{name} is not a known argument (known: {})",
                                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                            ));
                        }
                        Some(sub @ Value::Object(_)) => check(sub, item, &format!("{at}.{name}"), depth + 1)?,
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            bound(schema, "minItems", "maxItems", items.len(), at, "items")?;
            if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter().enumerate() {
                    check(sub, item, &format!("{at}[{i}]"), depth + 1)?;
                }
            }
        }
        Value::String(s) => bound(schema, "minLength", "maxLength", s.chars().count(), at, "characters")?,
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                return Err(format!("{at} must be at least {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                return Err(format!("{at} must be at most {max}"));
            }
        }
        _ => {}
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(sub, value, at, depth + 1)?;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array)
            && !options.is_empty()
        {
            let errors: Vec<String> =
                options.iter().filter_map(|sub| check(sub, value, at, depth + 1).err()).collect();
            if errors.len() == options.len() {
                return Err(errors
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| format!("{at} matches no allowed shape")));
            }
        }
    }
    Ok(())
}

fn bound(
    schema: &serde_json::Map<String, Value>,
    min_key: &str,
    max_key: &str,
    len: usize,
    at: &str,
    unit: &str,
) -> Result<(), String> {
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && (len as u64) < min
    {
        return Err(format!("{at} must have at least {min} {unit}"));
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && (len as u64) > max
    {
        return Err(format!("{at} must have at most {max} {unit}"));
    }
    Ok(())
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.as_i64().is_some()
                || value.as_u64().is_some()
                || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::validate;

    #[test]
    fn the_time_servers_schema() {
        let schema = json!({
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "IANA name"}},
            "required": ["timezone"]
        });
        assert_eq!(validate(&schema, &json!({"timezone": "Asia/Tokyo"})), Ok(()));
        assert_eq!(validate(&schema, &json!({})), Err("arguments.timezone is required".into()));
        assert_eq!(
            validate(&schema, &json!({"timezone": 9})),
            Err("arguments.timezone must be string (got number)".into())
        );
        assert_eq!(validate(&schema, &json!([])), Err("arguments must be object (got array)".into()));
    }

    #[test]
    fn nested_enums_bounds_and_closed_objects() {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "mode": {"enum": ["a", "b"]},
                "n": {"type": "integer", "minimum": 1, "maximum": 5},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 2}, "maxItems": 2},
                "either": {"anyOf": [{"type": "string"}, {"type": "null"}]}
            }
        });
        assert_eq!(validate(&schema, &json!({"mode": "a", "n": 3, "tags": ["xy"], "either": null})), Ok(()));
        assert_eq!(
            validate(&schema, &json!({"mode": "c"})),
            Err("arguments.mode must be one of \"a\", \"b\"".into())
        );
        assert_eq!(
            validate(&schema, &json!({"n": 2.5})),
            Err("arguments.n must be integer (got number)".into())
        );
        assert_eq!(validate(&schema, &json!({"n": 9})), Err("arguments.n must be at most 5".into()));
        assert_eq!(
            validate(&schema, &json!({"tags": ["x"]})),
            Err("arguments.tags[0] must have at least 2 characters".into())
        );
        assert_eq!(
            validate(&schema, &json!({"tags": ["xx", "yy", "zz"]})),
            Err("arguments.tags must have at most 2 items".into())
        );
        assert_eq!(
            validate(&schema, &json!({"either": 1})),
            Err("arguments.either must be string (got number)".into())
        );
        assert_eq!(
            validate(&schema, &json!({"other": 1})),
            Err("arguments.other is not a known argument (known: either, mode, n, tags)".into())
        );
    }

    #[test]
    fn unknown_keywords_and_odd_schemas_pass() {
        assert_eq!(validate(&json!({"type": "object", "$ref": "#/x"}), &json!({"a": 1})), Ok(()));
        assert_eq!(validate(&json!(true), &json!({"a": 1})), Ok(()));
        assert_eq!(validate(&json!({"type": "string", "format": "date"}), &json!("nope")), Ok(()));
    }
}
