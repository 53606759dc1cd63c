//! The one error type every HTTP handler returns, and how it becomes a response.
//!
//! The status codes matter more than usual here because Alertmanager acts on them: a 5xx is
//! retried, a 4xx never is. So only the sender's own mistakes are 4xx (and say exactly what was
//! wrong, as `{"error": "…"}`), only "the broker did not take it, try again" is 503, and nothing
//! a client sends can produce a 500. axum's extractor rejections are mapped here too, so a wrong
//! content type or a malformed body gets the same JSON shape as everything else.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error with the message sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: the body or query is malformed or has the wrong shape.
    #[error("{0}")]
    BadRequest(String),
    /// 401: credentials are configured and were missing or wrong.
    #[error("missing or invalid credentials")]
    Unauthorized {
        /// The `WWW-Authenticate` challenges, one per configured scheme.
        challenges: Vec<&'static str>,
    },
    /// 403: a browser sent it on behalf of another site's page (`Sec-Fetch-Site`).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route or no such bonk.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413: the body is larger than `max_body_bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the broker did not accept the bonks in time; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The metric label for this outcome.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// Maps an extractor rejection by its status: a body over the limit stays 413, a wrong
    /// content type 415, and everything else the client sent wrong becomes 400 (axum says 422 for
    /// well-formed JSON of the wrong shape; for Alertmanager that is the same mistake as broken
    /// JSON).
    fn from_rejection(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
            _ => ApiError::BadRequest(message),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with `Content-Type: application/json`".to_owned()
            }
            _ => rejection.body_text(),
        };
        ApiError::from_rejection(rejection.status(), message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::from_rejection(rejection.status(), rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        ApiError::from_rejection(rejection.status(), rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let ApiError::Unauthorized { challenges } = &self {
            for challenge in challenges {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
        }
        response
    }
}
