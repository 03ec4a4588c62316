//! `WWW-Authenticate: Payment ...` formatting and parsing (RFC 9110 auth-params).
//!
//! Formatting quotes every value, escapes `\` and `"`, writes non-ASCII as `\uXXXX` (the mppx
//! convention) and refuses control characters such as CR/LF, so no header can be injected.
//! Parsing finds `Payment` only at a scheme boundary outside quoted strings, treats scheme
//! and parameter names case-insensitively, refuses duplicate parameters and oversized values,
//! and accepts several challenges in one field.
//!
//! ```
//! use mpp_core::Challenge;
//!
//! let wire = r#"Bearer realm="api", payment id="a", realm="api", method="tempo", intent="charge", request="e30""#;
//! let challenges = Challenge::parse_all(wire).unwrap();
//! assert_eq!(challenges.len(), 1);
//! assert_eq!(challenges[0].id, "a");
//! assert!(Challenge::parse_all("Bearer token").is_err());
//! ```

use crate::challenge::Challenge;
use crate::encoded_json::EncodedJson;
use std::fmt::Write as _;

/// The longest `request` value accepted (both SDK parsers cap it at 16 KiB).
pub const MAX_REQUEST_LEN: usize = 16 * 1024;
/// The longest header value the parser looks at.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// Why a `WWW-Authenticate` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeParseError {
    /// No `Payment` challenge in the value.
    #[error("no Payment challenge")]
    NoPaymentChallenge,
    /// The value is longer than [`MAX_HEADER_LEN`] or a `request` longer than [`MAX_REQUEST_LEN`].
    #[error("challenge too large")]
    TooLarge,
    /// A syntax error (unterminated quoted string, missing `=`, ...).
    #[error("malformed challenge: {0}")]
    Syntax(&'static str),
    /// The same parameter twice (names compare case-insensitively).
    #[error("duplicate parameter `{0}`")]
    DuplicateParam(String),
    /// A required parameter is missing or empty.
    #[error("missing parameter `{0}`")]
    MissingParam(&'static str),
    /// A parameter has an invalid value.
    #[error("invalid `{0}` parameter")]
    InvalidParam(&'static str),
}

/// Why a challenge cannot be written as a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeFormatError {
    /// A value holds a control character (CR, LF, ...): refused to prevent header injection.
    #[error("parameter `{0}` contains a control character")]
    ControlCharacter(&'static str),
    /// The id is empty.
    #[error("the challenge has no id")]
    EmptyId,
}

impl Challenge {
    /// Formats the value of one `WWW-Authenticate` field line.
    pub fn to_header_value(&self) -> Result<String, ChallengeFormatError> {
        if self.id.is_empty() {
            return Err(ChallengeFormatError::EmptyId);
        }
        // Sized once: every value plus the names, quotes and separators of all ten params.
        let values = [
            Some(self.id.len()),
            Some(self.realm.len()),
            Some(self.method.len()),
            Some(self.intent.len()),
            Some(self.request.wire().len()),
            self.expires.as_ref().map(String::len),
            self.description.as_ref().map(String::len),
            self.digest.as_ref().map(String::len),
            self.opaque.as_ref().map(|o| o.wire().len()),
            self.header.as_ref().map(String::len),
        ];
        let mut out = String::with_capacity(128 + values.iter().flatten().sum::<usize>());
        out.push_str("Payment ");
        let params: [(&'static str, Option<&str>); 10] = [
            ("id", Some(&self.id)),
            ("realm", Some(&self.realm)),
            ("method", Some(&self.method)),
            ("intent", Some(&self.intent)),
            ("request", Some(self.request.wire())),
            ("expires", self.expires.as_deref()),
            ("description", self.description.as_deref()),
            ("digest", self.digest.as_deref()),
            ("opaque", self.opaque.as_ref().map(EncodedJson::wire)),
            ("header", self.header.as_deref()),
        ];
        let mut first = true;
        for (name, value) in params {
            let Some(value) = value else { continue };
            if !first {
                out.push_str(", ");
            }
            first = false;
            out.push_str(name);
            out.push_str("=\"");
            write_quoted(&mut out, name, value)?;
            out.push('"');
        }
        Ok(out)
    }

    /// Parses every `Payment` challenge in one `WWW-Authenticate` value. Other schemes are
    /// skipped. Fails if there is none, or if any `Payment` challenge is malformed.
    pub fn parse_all(value: &str) -> Result<Vec<Challenge>, ChallengeParseError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(ChallengeParseError::TooLarge);
        }
        let mut parser = Parser {
            s: value.as_bytes(),
            pos: 0,
            at_scheme: true,
        };
        let mut out = Vec::new();
        while let Some(start) = parser.next_payment_scheme()? {
            parser.pos = start + "payment".len();
            out.push(parser.parse_payment_params()?);
        }
        if out.is_empty() {
            return Err(ChallengeParseError::NoPaymentChallenge);
        }
        Ok(out)
    }

    /// Parses the challenges of several `WWW-Authenticate` field lines (one challenge per line
    /// is what servers send), skipping lines without a `Payment` challenge.
    pub fn parse_all_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Challenge>, ChallengeParseError> {
        let mut out = Vec::new();
        for line in lines {
            match Self::parse_all(line) {
                Ok(found) => out.extend(found),
                Err(ChallengeParseError::NoPaymentChallenge) => {}
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Err(ChallengeParseError::NoPaymentChallenge);
        }
        Ok(out)
    }
}

fn write_quoted(
    out: &mut String,
    name: &'static str,
    value: &str,
) -> Result<(), ChallengeFormatError> {
    // Fast path (ids, base64url, timestamps, host names): nothing to escape. A fold without
    // early exit, so the check runs over whole words.
    let plain = value.bytes().fold(true, |plain, b| {
        plain & (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push_str(value);
        return Ok(());
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => return Err(ChallengeFormatError::ControlCharacter(name)),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// True when `pos` sits on a scheme token that ended the previous challenge.
    at_scheme: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Finds the next `Payment` scheme token at a boundary (start of value, or right after a
    /// comma, outside quoted strings) at or after `pos`.
    fn next_payment_scheme(&mut self) -> Result<Option<usize>, ChallengeParseError> {
        let mut at_boundary = self.at_scheme;
        self.at_scheme = false;
        let mut in_quotes = false;
        let mut i = self.pos;
        while i < self.s.len() {
            let b = self.s[i];
            if in_quotes {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quotes = false,
                    _ => {}
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => {
                    in_quotes = true;
                    at_boundary = false;
                }
                b',' => at_boundary = true,
                b' ' | b'\t' => {}
                _ if at_boundary => {
                    at_boundary = false;
                    if self.is_payment_scheme_at(i) {
                        return Ok(Some(i));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Ok(None)
    }

    fn is_payment_scheme_at(&self, i: usize) -> bool {
        let word = b"payment";
        self.s
            .get(i..i + word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
            && matches!(self.s.get(i + word.len()), None | Some(b' ' | b'\t' | b','))
    }

    fn parse_payment_params(&mut self) -> Result<Challenge, ChallengeParseError> {
        let mut params: Vec<(String, String)> = Vec::with_capacity(8);
        loop {
            // Separators between params: OWS "," OWS (empty list elements are allowed).
            loop {
                self.skip_ows();
                if self.peek() == Some(b',') {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            let name_start = self.pos;
            while self.peek().is_some_and(is_tchar) {
                self.pos += 1;
            }
            if self.pos == name_start {
                if self.peek().is_none() {
                    break;
                }
                return Err(ChallengeParseError::Syntax("expected a parameter name"));
            }
            let name_end = self.pos;
            self.skip_ows();
            if self.peek() != Some(b'=') {
                // A token not followed by `=` starts the next challenge's scheme.
                self.pos = name_start;
                self.at_scheme = true;
                break;
            }
            self.pos += 1;
            self.skip_ows();
            let value = self.parse_value()?;
            let name = String::from_utf8_lossy(&self.s[name_start..name_end]).to_ascii_lowercase();
            if params.iter().any(|(n, _)| *n == name) {
                return Err(ChallengeParseError::DuplicateParam(name));
            }
            params.push((name, value));
        }
        build_challenge(params)
    }

    fn parse_value(&mut self) -> Result<String, ChallengeParseError> {
        if self.peek() != Some(b'"') {
            let start = self.pos;
            while self.peek().is_some_and(is_tchar) {
                self.pos += 1;
            }
            if start == self.pos {
                return Err(ChallengeParseError::Syntax("expected a parameter value"));
            }
            return Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned());
        }
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(ChallengeParseError::Syntax("unterminated quoted string"));
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(next) = self.peek() else {
                        return Err(ChallengeParseError::Syntax("unterminated quoted string"));
                    };
                    self.pos += 1;
                    if next == b'u'
                        && let Some(c) = self.unicode_escape()
                    {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        continue;
                    }
                    bytes.push(next);
                }
                b => bytes.push(b),
            }
            if bytes.len() > MAX_REQUEST_LEN {
                return Err(ChallengeParseError::TooLarge);
            }
        }
        self.skip_trailing_junk();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Decodes the mppx `\uXXXX` convention (with surrogate pairs) after a `\u`.
    fn unicode_escape(&mut self) -> Option<char> {
        let read_unit = |s: &[u8], at: usize| -> Option<u16> {
            let hex = s.get(at..at + 4)?;
            u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        };
        let first = read_unit(self.s, self.pos)?;
        if (0xD800..0xDC00).contains(&first) {
            let tail = self.s.get(self.pos + 4..self.pos + 6)?;
            if tail != b"\\u" {
                return None;
            }
            let second = read_unit(self.s, self.pos + 6)?;
            let c = char::decode_utf16([first, second]).next()?.ok()?;
            self.pos += 10;
            return Some(c);
        }
        let c = char::from_u32(u32::from(first))?;
        self.pos += 4;
        Some(c)
    }

    /// After a quoted value, skips anything up to the next comma (outside quotes): the SDKs
    /// end a value at the first unescaped quote and ignore what follows.
    fn skip_trailing_junk(&mut self) {
        let mut in_quotes = false;
        while let Some(b) = self.peek() {
            match (in_quotes, b) {
                (false, b',') => return,
                (_, b'"') => in_quotes = !in_quotes,
                (true, b'\\') => self.pos += 1,
                _ => {}
            }
            self.pos += 1;
        }
    }
}

fn build_challenge(params: Vec<(String, String)>) -> Result<Challenge, ChallengeParseError> {
    use ChallengeParseError::{InvalidParam, MissingParam};
    let mut id = None;
    let mut realm = None;
    let mut method = None;
    let mut intent = None;
    let mut request = None;
    let mut expires = None;
    let mut digest = None;
    let mut description = None;
    let mut opaque = None;
    let mut header = None;
    for (name, value) in params {
        match name.as_str() {
            "id" => id = Some(value),
            "realm" => realm = Some(value),
            "method" => method = Some(value),
            "intent" => intent = Some(value),
            "request" => request = Some(value),
            "expires" => expires = Some(value),
            "digest" => digest = Some(value),
            "description" => description = Some(value),
            "opaque" => opaque = Some(value),
            "header" => header = Some(value),
            _ => {}
        }
    }
    let id = id.filter(|v| !v.is_empty()).ok_or(MissingParam("id"))?;
    let realm = realm.ok_or(MissingParam("realm"))?;
    let method = method
        .filter(|v| !v.is_empty())
        .ok_or(MissingParam("method"))?;
    if !method
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(InvalidParam("method"));
    }
    let intent = intent
        .filter(|v| !v.is_empty())
        .ok_or(MissingParam("intent"))?;
    if !intent
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(InvalidParam("intent"));
    }
    let request = request.ok_or(MissingParam("request"))?;
    if request.len() > MAX_REQUEST_LEN {
        return Err(ChallengeParseError::TooLarge);
    }
    let request = EncodedJson::from_wire(&request).map_err(|_| InvalidParam("request"))?;
    if let Some(e) = &expires {
        crate::expiry::parse_timestamp(e).map_err(|_| InvalidParam("expires"))?;
    }
    if digest
        .as_deref()
        .is_some_and(|d| !d.starts_with(crate::digest::DIGEST_PREFIX))
    {
        return Err(InvalidParam("digest"));
    }
    let opaque = opaque
        .map(|o| EncodedJson::from_wire(&o).map_err(|_| InvalidParam("opaque")))
        .transpose()?;
    Ok(Challenge {
        id,
        realm,
        method,
        intent,
        request,
        expires,
        digest,
        description,
        opaque,
        header,
    })
}
