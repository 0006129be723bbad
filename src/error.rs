//! The one error type of the request path, and the one place where an error becomes
//! an HTTP status and a JSON body.
//!
//! Every phase (route, source, authorize, lookup, fetch, respond) returns [`Error`]; its
//! [`Error::kind`] decides the status, and [`Error::source_side`] says whether the client,
//! the origin or bucketfront itself caused it (for logs and metrics). The client only
//! ever sees the public message: upstream error text stays in the log line.

use http::StatusCode;

/// Who caused an error: decides 4xx vs 5xx and is recorded on the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Origin,
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Origin => "origin",
            Side::Internal => "internal",
        }
    }
}

/// The error codes of docs/http.md, "Answers", one per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    RangeNotSatisfiable,
    BadGateway,
    Overloaded,
    GatewayTimeout,
    /// A variant of a source that cannot be decoded, is too large or is animated.
    Unprocessable,
    /// The object is in an archive storage class or tier: it must be restored first.
    Archived,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Kind::BadGateway => StatusCode::BAD_GATEWAY,
            Kind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Kind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Archived => StatusCode::CONFLICT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::UnsupportedMediaType => "unsupported_media_type",
            Kind::RangeNotSatisfiable => "range_not_satisfiable",
            Kind::BadGateway => "bad_gateway",
            Kind::Overloaded => "overloaded",
            Kind::GatewayTimeout => "gateway_timeout",
            Kind::Unprocessable => "unprocessable",
            Kind::Archived => "archived",
        }
    }
}

/// A request-path error: what the client is told, plus what only the log sees.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub side: Side,
    /// The sentence the client sees.
    pub message: String,
    /// The real reason (upstream error code, I/O error); logged, never sent.
    pub detail: Option<String>,
}

impl Error {
    pub fn new(kind: Kind, side: Side, message: impl Into<String>) -> Self {
        Error {
            kind,
            side,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(Kind::BadRequest, Side::Client, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::new(Kind::Forbidden, Side::Client, message)
    }

    /// The one 404 for "no such key", "no such bucket" and "access denied": the body
    /// is identical in all three cases so that it cannot be used as an existence oracle.
    pub fn not_found() -> Self {
        Error::new(
            Kind::NotFound,
            Side::Origin,
            "no such object, or the proxy may not read it",
        )
    }

    /// The one 502: the origin failed (the detail, logged only, says how).
    pub fn bad_gateway() -> Self {
        Error::new(
            Kind::BadGateway,
            Side::Origin,
            "the origin failed; try again later",
        )
    }

    /// The one 415: the object's content type is outside `allowed_content_types`.
    pub fn unsupported_media_type(content_type: Option<&str>) -> Self {
        Error::new(
            Kind::UnsupportedMediaType,
            Side::Origin,
            "the object's content type is not served by this proxy",
        )
        .with_detail(format!("content type {:?}", content_type.unwrap_or("")))
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The JSON body of docs/http.md, "Answers".
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.kind.code(), "message": self.message }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_code_and_message() {
        let e = Error::bad_request("bucket name is invalid").with_detail("secret detail");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"], "bad_request");
        assert_eq!(v["message"], "bucket name is invalid");
        assert!(!e.body().contains("secret detail"));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn not_found_is_uniform() {
        assert_eq!(Error::not_found().body(), Error::not_found().body());
        assert_eq!(Kind::Overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
