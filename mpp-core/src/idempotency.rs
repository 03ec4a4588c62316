//! `Idempotency-Key` (core.md §11): a paid request sent again with the same key and the same
//! credential gets the stored response, and the handler does not run again.
//!
//! An [`IdempotencyStore`] records, per key, the credential that paid and, once the request
//! was served, its response. The HTTP layer asks [`IdempotencyStore::begin`] before it admits
//! a request that carries a key, and either [`IdempotencyStore::complete`]s it with the
//! response or [`IdempotencyStore::abandon`]s it (nothing was charged, so a retry runs again).
//! [`MemoryIdempotencyStore`] keeps them in the process; the SQL stores of a method crate
//! (`mpp_tempo::store::SqliteStore`, `PgStore`) keep them for every instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

use crate::BoxFuture;

/// A response kept for repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers, in order (`Payment-Receipt` among them).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// The headers as HTTP/1 lines (`name: value\r\n`): how they are stored.
    pub fn encode_headers(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Reads headers written by [`StoredResponse::encode_headers`] (header names are tokens
    /// and values hold no CR or LF, so the lines split back exactly).
    pub fn decode_headers(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
        let mut headers = Vec::new();
        for line in bytes.split(|b| *b == b'\n') {
            let Some(line) = line.strip_suffix(b"\r") else {
                if line.is_empty() {
                    continue;
                }
                return None;
            };
            let colon = line.windows(2).position(|w| w == b": ")?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            headers.push((name.to_owned(), line[colon + 2..].to_vec()));
        }
        Some(headers)
    }
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Nothing recorded: the request goes ahead, held by the caller's `owner`.
    Started,
    /// Served before with this credential: send this again.
    Replay(StoredResponse),
    /// A request with this key and credential is still being served (409).
    InFlight,
    /// The key was used with another credential (422).
    OtherCredential,
}

/// The idempotency store failed (the request is answered 503: nothing is charged).
#[derive(Debug, thiserror::Error)]
#[error("idempotency store: {0}")]
pub struct IdempotencyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl IdempotencyError {
    /// Wraps a backend error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Where requests with an `Idempotency-Key` are recorded. Every operation is atomic per key:
/// of concurrent requests with one key, one starts.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Records that `owner` starts serving `key` paid with `credential` (both digests), until
    /// `expires_at`, unless a live record holds `key`, which is then reported.
    fn begin<'a>(
        &'a self,
        key: &'a str,
        credential: &'a str,
        owner: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Begin, IdempotencyError>>;

    /// Stores the response of the request `owner` started, kept until `expires_at`. `false`
    /// when the record is no longer `owner`'s.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        response: &'a StoredResponse,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>>;

    /// Forgets a request `owner` started and did not serve (nothing was charged): the same
    /// key may start again.
    fn abandon<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>>;
}

impl<T: IdempotencyStore + ?Sized> IdempotencyStore for Arc<T> {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        credential: &'a str,
        owner: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Begin, IdempotencyError>> {
        (**self).begin(key, credential, owner, expires_at)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        response: &'a StoredResponse,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>> {
        (**self).complete(key, owner, response, expires_at)
    }

    fn abandon<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>> {
        (**self).abandon(key, owner)
    }
}

/// The default bound on records held by a [`MemoryIdempotencyStore`].
pub const DEFAULT_MEMORY_RECORDS: usize = 10_000;

/// An in-process [`IdempotencyStore`], bounded: expired records are swept when it is full,
/// and a new key is then refused as a store fault (503) rather than forgetting a live one.
#[derive(Debug, Clone)]
pub struct MemoryIdempotencyStore {
    inner: Arc<Mutex<MemoryRecords>>,
}

#[derive(Debug)]
struct MemoryRecords {
    records: HashMap<String, Record>,
    capacity: usize,
}

#[derive(Debug)]
struct Record {
    credential: String,
    owner: String,
    response: Option<StoredResponse>,
    expires_at: OffsetDateTime,
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_RECORDS)
    }
}

impl MemoryIdempotencyStore {
    /// An empty store holding at most `capacity` live records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemoryRecords {
                records: HashMap::new(),
                capacity,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryRecords> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IdempotencyStore for MemoryIdempotencyStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        credential: &'a str,
        owner: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Begin, IdempotencyError>> {
        Box::pin(async move {
            let now = OffsetDateTime::now_utc();
            let mut inner = self.lock();
            if let Some(record) = inner.records.get(key).filter(|r| r.expires_at > now) {
                return Ok(if record.credential != credential {
                    Begin::OtherCredential
                } else {
                    match &record.response {
                        Some(response) => Begin::Replay(response.clone()),
                        None => Begin::InFlight,
                    }
                });
            }
            if inner.records.len() >= inner.capacity {
                inner.records.retain(|_, r| r.expires_at > now);
                if inner.records.len() >= inner.capacity {
                    return Err(IdempotencyError::new(
                        "the in-memory idempotency store is full",
                    ));
                }
            }
            inner.records.insert(
                key.to_owned(),
                Record {
                    credential: credential.to_owned(),
                    owner: owner.to_owned(),
                    response: None,
                    expires_at,
                },
            );
            Ok(Begin::Started)
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        response: &'a StoredResponse,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            match inner.records.get_mut(key) {
                Some(record) if record.owner == owner && record.response.is_none() => {
                    record.response = Some(response.clone());
                    record.expires_at = expires_at;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn abandon<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let mine = inner
                .records
                .get(key)
                .is_some_and(|r| r.owner == owner && r.response.is_none());
            if mine {
                inner.records.remove(key);
            }
            Ok(mine)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_round_trip() {
        let response = StoredResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), b"text/plain".to_vec()),
                ("payment-receipt".into(), b"eyJhIjoiYjogYyJ9".to_vec()),
                ("x-empty".into(), Vec::new()),
            ],
            body: b"hello".to_vec(),
        };
        let encoded = response.encode_headers();
        assert_eq!(
            StoredResponse::decode_headers(&encoded).unwrap(),
            response.headers
        );
        assert!(StoredResponse::decode_headers(b"no separator\r\n").is_none());
    }
}
