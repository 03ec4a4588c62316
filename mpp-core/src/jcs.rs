//! JSON Canonicalization Scheme (RFC 8785) and the `base64url(JCS(json))` encoding of the
//! challenge `request` and `opaque` parameters.
//!
//! ```
//! use serde_json::json;
//!
//! // Keys sort by UTF-16 code units (uppercase first); no HTML escaping; raw UTF-8.
//! let value = json!({"b": "<&>", "a": 1, "Z": "é"});
//! assert_eq!(mpp_core::jcs::to_string(&value).unwrap(), r#"{"Z":"é","a":1,"b":"<&>"}"#);
//! ```

use serde_json::Value;
use std::fmt::Write as _;

/// A value that JCS cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcsError {
    /// NaN or an infinity (serde_json cannot hold them, but arbitrary numbers may reach here).
    #[error("number {0} cannot be canonicalized")]
    Number(String),
}

/// Serializes `value` in canonical form.
pub fn to_string(value: &Value) -> Result<String, JcsError> {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value)?;
    Ok(out)
}

/// `base64url_nopad(UTF-8(JCS(value)))`: the wire form of `request` and `opaque`.
pub fn encode_b64(value: &Value) -> Result<String, JcsError> {
    Ok(crate::base64url::encode(to_string(value)?))
}

fn write_value(out: &mut String, value: &Value) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // RFC 8785 §3.2.3: compare keys as sequences of UTF-16 code units.
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &serde_json::Number) -> Result<(), JcsError> {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
        return Ok(());
    }
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
        return Ok(());
    }
    let f = n.as_f64().ok_or_else(|| JcsError::Number(n.to_string()))?;
    write_ecmascript_f64(out, f).ok_or_else(|| JcsError::Number(n.to_string()))
}

/// ECMAScript `Number.prototype.toString` for finite doubles, from ryu's shortest digits.
fn write_ecmascript_f64(out: &mut String, f: f64) -> Option<()> {
    if !f.is_finite() {
        return None;
    }
    if f == 0.0 {
        out.push('0');
        return Some(());
    }
    let mut buf = ryu::Buffer::new();
    let repr = buf.format_finite(f.abs());
    // Split ryu's output into significant digits and a decimal exponent `n` such that
    // value = 0.d1d2...dk × 10^n (the ECMAScript formulation).
    let (mantissa, exp) = match repr.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (repr, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // value = 0.D × 10^(len(int) + exp) with D = int ++ frac; each leading zero stripped
    // from D lowers that exponent by one, trailing zeros change nothing.
    let all_digits = format!("{int_part}{frac_part}");
    let without_leading = all_digits.trim_start_matches('0');
    let leading_zeros = (all_digits.len() - without_leading.len()) as i32;
    let digits = without_leading.trim_end_matches('0');
    let k = digits.len() as i32;
    let n = int_part.len() as i32 + exp - leading_zeros;
    if f < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(digits);
    } else {
        let e = n - 1;
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if e >= 0 { "+" } else { "-" }, e.abs());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es(f: f64) -> String {
        let mut s = String::new();
        write_ecmascript_f64(&mut s, f).unwrap();
        s
    }

    #[test]
    fn ecmascript_number_forms() {
        assert_eq!(es(1.5), "1.5");
        assert_eq!(es(0.1), "0.1");
        assert_eq!(es(100.0), "100");
        assert_eq!(es(1e21), "1e+21");
        assert_eq!(es(1e20), "100000000000000000000");
        assert_eq!(es(1.5e-7), "1.5e-7");
        assert_eq!(es(0.000001), "0.000001");
        assert_eq!(es(-2.25), "-2.25");
        assert_eq!(es(123.456), "123.456");
        assert_eq!(es(5e-324), "5e-324");
    }

    #[test]
    fn parsed_floats_canonicalize_stably() {
        // Found by the base64url_json fuzz target: without correctly rounded parsing,
        // serde_json read this as a neighbouring double, and JCS changed it on every pass.
        let v: Value = serde_json::from_str(r#"{"!":6.666666666666667e+41}"#).unwrap();
        let once = to_string(&v).unwrap();
        assert_eq!(once, r#"{"!":6.666666666666667e+41}"#);
        let again: Value = serde_json::from_str(&once).unwrap();
        assert_eq!(to_string(&again).unwrap(), once);
    }

    #[test]
    fn control_characters_and_nesting() {
        let v = json!({"a": [1, {"c": "\u{1}\n", "b": null}], "A": true});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"A":true,"a":[1,{"b":null,"c":"\u0001\n"}]}"#
        );
    }

    #[test]
    fn utf16_ordering_differs_from_utf8() {
        // U+FF61 (one UTF-16 unit 0xFF61) sorts after U+1F600 (surrogates 0xD83D...) in
        // UTF-16 order, but before it in UTF-8 byte order.
        let v = json!({"\u{ff61}": 1, "\u{1f600}": 2});
        assert_eq!(to_string(&v).unwrap(), "{\"\u{1f600}\":2,\"\u{ff61}\":1}");
    }
}
