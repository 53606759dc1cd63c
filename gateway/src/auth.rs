//! HTTP authentication: an optional bearer token and/or basic auth, the two methods Alertmanager's
//! `http_config` offers.
//!
//! Secrets are compared in constant time (`subtle`), so response timing does not reveal how much
//! of a guess was right, and they live in [`Secret`], whose `Debug` never prints them — a settings
//! struct logged at start-up cannot leak a token.

use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use subtle::ConstantTimeEq;

/// A secret string that never appears in logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Constant-time comparison (the length may leak, the content does not).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The credentials a request must present. With none configured every request passes.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    bearer: Option<Secret>,
    basic: Option<(String, Secret)>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// A header with a scheme that is not configured, or credentials that do not match.
    Invalid,
}

impl Credentials {
    /// Credentials requiring `bearer` and/or `basic` (user, password); either one suffices.
    pub fn new(bearer: Option<Secret>, basic: Option<(String, Secret)>) -> Self {
        Self { bearer, basic }
    }

    /// True when no authentication is configured.
    pub fn is_open(&self) -> bool {
        self.bearer.is_none() && self.basic.is_none()
    }

    /// True when `token` is the configured bearer token.
    pub fn bearer_matches(&self, token: &str) -> bool {
        self.bearer
            .as_ref()
            .is_some_and(|secret| secret.matches(token.as_bytes()))
    }

    /// The `WWW-Authenticate` challenges to send with a 401, one per configured scheme.
    pub fn challenges(&self) -> Vec<&'static str> {
        let mut challenges = Vec::new();
        if self.bearer.is_some() {
            challenges.push("Bearer realm=\"bonker\"");
        }
        if self.basic.is_some() {
            challenges.push("Basic realm=\"bonker\", charset=\"UTF-8\"");
        }
        challenges
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        if self.is_open() {
            return Ok(());
        }
        let header = headers.get(AUTHORIZATION).ok_or(AuthFailure::Missing)?;
        let header = header.to_str().map_err(|_| AuthFailure::Invalid)?.trim();
        let (scheme, value) = header.split_once(' ').ok_or(AuthFailure::Invalid)?;
        let value = value.trim();
        let accepted = if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer_matches(value)
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.basic_matches(value)
        } else {
            false
        };
        if accepted {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }

    fn basic_matches(&self, encoded: &str) -> bool {
        let Some((user, password)) = &self.basic else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (given_user, given_password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both halves are always compared, so timing does not tell which one was wrong.
        let user_ok = user.as_bytes().ct_eq(given_user);
        let password_ok = password.0.as_bytes().ct_eq(given_password);
        bool::from(user_ok & password_ok)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header value"),
        );
        headers
    }

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn open_when_nothing_is_configured() {
        assert_eq!(Credentials::default().check(&HeaderMap::new()), Ok(()));
        assert!(Credentials::default().challenges().is_empty());
    }

    #[test]
    fn bearer_tokens() {
        let credentials = Credentials::new(Some(Secret::new("t0ken")), None);
        assert_eq!(credentials.check(&headers("Bearer t0ken")), Ok(()));
        assert_eq!(credentials.check(&headers("bearer  t0ken ")), Ok(()));
        assert_eq!(
            credentials.check(&headers("Bearer t0ke")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            credentials.check(&HeaderMap::new()),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            credentials.check(&headers(&basic("t0ken", "t0ken"))),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(credentials.challenges(), ["Bearer realm=\"bonker\""]);
    }

    #[test]
    fn basic_auth_and_either_method_when_both_are_set() {
        let credentials = Credentials::new(
            Some(Secret::new("tok")),
            Some(("alertmanager".into(), Secret::new("pa:ss"))),
        );
        assert_eq!(
            credentials.check(&headers(&basic("alertmanager", "pa:ss"))),
            Ok(())
        );
        assert_eq!(credentials.check(&headers("Bearer tok")), Ok(()));
        for wrong in [
            basic("alertmanager", "pass"),
            basic("other", "pa:ss"),
            "Basic !!notbase64".to_owned(),
            "Basic".to_owned(),
            "Digest abc".to_owned(),
        ] {
            assert_eq!(
                credentials.check(&headers(&wrong)),
                Err(AuthFailure::Invalid),
                "{wrong}"
            );
        }
        assert_eq!(credentials.challenges().len(), 2);
    }
}
