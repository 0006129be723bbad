//! Per-tenant credentials: the proxy's own identity, or an assumed cross-account role.
//!
//! [`CachedCredentials`] wraps a provider (usually STS AssumeRole) so that each tenant
//! has its own credentials, refreshed before they expire and never shared. A failed
//! AssumeRole is remembered and retried with exponential backoff instead of calling STS
//! again on every request (the SDK caches successes only).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};

/// Credentials are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum State {
    Empty,
    Ready(Credentials),
    Failed {
        message: String,
        retry_at: SystemTime,
        backoff: Duration,
    },
}

#[derive(Debug)]
pub(crate) struct CachedCredentials {
    name: String,
    inner: SharedCredentialsProvider,
    state: Mutex<State>,
    /// Serializes refreshes so that N concurrent misses cause one STS call.
    refresh: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    pub(crate) fn new(name: impl Into<String>, inner: SharedCredentialsProvider) -> Self {
        CachedCredentials {
            name: name.into(),
            inner,
            state: Mutex::new(State::Empty),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, now: SystemTime) -> Option<provider::Result> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Ready(c) if c.expiry().is_none_or(|exp| now + REFRESH_MARGIN < exp) => {
                Some(Ok(c.clone()))
            }
            State::Failed {
                message, retry_at, ..
            } if now < *retry_at => Some(Err(CredentialsError::provider_error(format!(
                "{message} (backing off)"
            )))),
            _ => None,
        }
    }

    async fn load(&self) -> provider::Result {
        if let Some(r) = self.cached(SystemTime::now()) {
            return r;
        }
        let _guard = self.refresh.lock().await;
        if let Some(r) = self.cached(SystemTime::now()) {
            return r;
        }
        let result = self.inner.provide_credentials().await;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(c) => *state = State::Ready(c.clone()),
            Err(e) => {
                let backoff = match &*state {
                    State::Failed { backoff, .. } => (*backoff * 2).min(MAX_BACKOFF),
                    _ => MIN_BACKOFF,
                };
                let message = format!(
                    "credentials for tenant {:?} failed: {}",
                    self.name,
                    error_chain(e)
                );
                tracing::warn!(tenant = %self.name, backoff_ms = backoff.as_millis() as u64, "{message}");
                *state = State::Failed {
                    message,
                    retry_at: SystemTime::now() + backoff,
                    backoff,
                };
            }
        }
        result
    }
}

impl ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.load())
    }
}

/// An error and its sources on one line (the SDK nests the useful part deep).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        fail: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let result = if self.fail {
                Err(CredentialsError::provider_error("AccessDenied"))
            } else {
                Ok(Credentials::new(
                    "AKID",
                    "SECRET",
                    None,
                    Some(SystemTime::now() + Duration::from_secs(3600)),
                    "test",
                ))
            };
            provider::future::ProvideCredentials::ready(result)
        }
    }

    fn cached(fail: bool) -> (CachedCredentials, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            fail,
        });
        (CachedCredentials::new("t", inner), calls)
    }

    #[tokio::test]
    async fn successes_are_cached() {
        let (c, calls) = cached(false);
        for _ in 0..10 {
            assert_eq!(
                c.provide_credentials().await.unwrap().access_key_id(),
                "AKID"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_back_off() {
        let (c, calls) = cached(true);
        for _ in 0..10 {
            let err = c.provide_credentials().await.unwrap_err();
            assert!(error_chain(&err).contains("AccessDenied"));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "failed calls are not repeated inside the backoff"
        );
    }
}
