//! The route phase: method, path and query → [`Action`]. Pure; a malformed request is
//! refused here, before anything else is looked at.

use http::Method;

use crate::auth::SignatureParams;
use crate::error::{Error, Kind, Side};
use crate::source::{decode_component, parse_path};
use crate::variant::Variant;

/// Where an object request names its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/{bucket}/{key…}`, decoded.
    Path { bucket: String, key: String },
    /// `?url=SOURCE`, decoded once.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Object(Target),
    Presign { target: Target, redirect: bool },
}

/// A request's route as logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteName {
    Object,
    Fetch,
    Presign,
    Preflight,
    /// Refused before a route was known (404, 405, 400 in parsing).
    Other,
}

impl RouteName {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteName::Object => "object",
            RouteName::Fetch => "fetch",
            RouteName::Presign => "presign",
            RouteName::Preflight => "preflight",
            RouteName::Other => "other",
        }
    }

    /// Whether the request asked for an object (so it has a cache status).
    pub fn serves_objects(self) -> bool {
        matches!(self, RouteName::Object | RouteName::Fetch)
    }
}

impl Route {
    pub fn name(&self) -> RouteName {
        match self {
            Route::Object(Target::Path { .. }) => RouteName::Object,
            Route::Object(Target::Url(_)) => RouteName::Fetch,
            Route::Presign { .. } => RouteName::Presign,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// GET or HEAD (`head` true) of a route; `variant` for an object route with variant
    /// parameters (its signed line is in `sig`).
    Serve {
        route: Route,
        head: bool,
        sig: SignatureParams,
        variant: Option<Variant>,
    },
    Preflight(Route),
}

/// Parses a request line. `Err` carries 400, 404 or 405.
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Action, Error> {
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        Method::OPTIONS => false,
        _ => {
            return Err(Error::new(
                Kind::MethodNotAllowed,
                Side::Client,
                "only GET, HEAD and OPTIONS are allowed",
            ));
        }
    };
    let params = parse_query(query.unwrap_or(""))?;
    // A security parameter given twice is ambiguous (which one did the signer mean?).
    for name in ["exp", "sig", "kid", "url", "redirect"] {
        if params.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(Error::bad_request(format!(
                "the {name}= parameter is given more than once"
            )));
        }
    }
    let variant = Variant::parse(&params)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let route = if path == "/_/fetch" {
        Route::Object(Target::Url(
            get("url").ok_or_else(|| Error::bad_request("missing url= parameter"))?,
        ))
    } else if path == "/_/presign" {
        let url = get("url").ok_or_else(|| Error::bad_request("missing url= parameter"))?;
        Route::Presign {
            target: Target::Url(url),
            redirect: is_true(get("redirect")),
        }
    } else if let Some(rest) = path.strip_prefix("/_/presign/") {
        let (bucket, key) = parse_path(rest)?;
        Route::Presign {
            target: Target::Path { bucket, key },
            redirect: is_true(get("redirect")),
        }
    } else if path.starts_with("/_/") || path.matches('/').count() < 2 {
        return Err(not_found());
    } else {
        let (bucket, key) = parse_path(path)?;
        Route::Object(Target::Path { bucket, key })
    };
    if *method == Method::OPTIONS {
        return Ok(Action::Preflight(route));
    }
    if variant.is_some() && matches!(route, Route::Presign { .. }) {
        return Err(Error::bad_request(
            "presigned URLs are for originals: remove w, h, fit, q and fmt",
        ));
    }
    let sig = SignatureParams {
        exp: get("exp"),
        sig: get("sig"),
        kid: get("kid"),
        variant: variant.as_ref().map(|v| v.signed.clone()),
    };
    Ok(Action::Serve {
        route,
        head,
        sig,
        variant,
    })
}

pub(crate) fn not_found() -> Error {
    Error::new(Kind::NotFound, Side::Client, "no such route").with_detail("unknown route")
}

fn is_true(v: Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "yes"))
}

/// `a=1&b=2` → pairs, values percent-decoded once (`+` literal, as in paths).
pub(crate) fn parse_query(query: &str) -> Result<Vec<(String, String)>, Error> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(route: Route) -> Action {
        Action::Serve {
            route,
            head: false,
            sig: SignatureParams::default(),
            variant: None,
        }
    }

    fn path(b: &str, k: &str) -> Target {
        Target::Path {
            bucket: b.into(),
            key: k.into(),
        }
    }

    #[test]
    fn route_table() {
        let get = Method::GET;
        assert_eq!(
            route(&get, "/b-1/a/b.jpg", None).unwrap(),
            serve(Route::Object(path("b-1", "a/b.jpg")))
        );
        assert_eq!(
            route(&get, "/b-1/k.jpg", Some("x-id=GetObject")).unwrap(),
            serve(Route::Object(path("b-1", "k.jpg")))
        );
        assert_eq!(
            route(&get, "/_/fetch", Some("url=s3%3A%2F%2Fb-1%2Fk")).unwrap(),
            serve(Route::Object(Target::Url("s3://b-1/k".into())))
        );
        assert_eq!(
            route(&get, "/_/presign/b-1/k", Some("redirect=1")).unwrap(),
            serve(Route::Presign {
                target: path("b-1", "k"),
                redirect: true
            })
        );
        let Action::Serve { sig, .. } =
            route(&get, "/b-1/k", Some("exp=5&sig=abc&kid=k1")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (sig.exp.as_deref(), sig.sig.as_deref(), sig.kid.as_deref()),
            (Some("5"), Some("abc"), Some("k1"))
        );
        assert_eq!(
            route(&Method::OPTIONS, "/b-1/k", None).unwrap(),
            Action::Preflight(Route::Object(path("b-1", "k")))
        );
        let status =
            |m: &Method, p: &str, q: Option<&str>| route(m, p, q).unwrap_err().status().as_u16();
        assert_eq!(status(&get, "/", None), 404);
        let Action::Serve { sig, variant, .. } =
            route(&get, "/b-1/k", Some("w=256&fmt=auto&exp=5&sig=x")).unwrap()
        else {
            panic!()
        };
        assert_eq!(sig.variant.as_deref(), Some("fmt=auto&w=256"));
        assert_eq!(variant.unwrap().w, Some(256));
        for bad in ["w=0", "w=1&w=1", "fit=fill", "q=0", "fmt=gif"] {
            assert_eq!(status(&get, "/b-1/k", Some(bad)), 400, "{bad}");
        }
        assert_eq!(status(&get, "/_/presign/b-1/k", Some("w=256")), 400);
        assert_eq!(status(&get, "/favicon.ico", None), 404);
        assert_eq!(status(&get, "/_/other", None), 404);
        assert_eq!(status(&get, "/_/fetch", None), 400);
        assert_eq!(status(&get, "/b-1/%zz", None), 400);
        assert_eq!(status(&Method::POST, "/b-1/k", None), 405);
        assert_eq!(status(&Method::DELETE, "/", None), 405);
    }
}
