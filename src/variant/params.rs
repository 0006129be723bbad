//! The variant parameters of a request (`w`, `h`, `fit`, `q`, `fmt`): parsed and checked in
//! the route phase, the line they add to the signed string, and the format `fmt=auto`
//! negotiates from `Accept`. Pure.

use crate::error::Error;

/// The variant parameter names, sorted (the order of the signed line).
pub(crate) const NAMES: [&str; 5] = ["fit", "fmt", "h", "q", "w"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fit {
    /// The whole image inside `w`×`h`, aspect kept (the default).
    Contain,
    /// `w`×`h` filled, aspect kept, the overflow cropped around the centre.
    Cover,
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Avif,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Avif => "avif",
        }
    }
}

/// What `fmt` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    Fixed(Format),
    /// Picked from `Accept` ([`negotiate`]); the answer carries `Vary: Accept`.
    Auto,
}

/// The format a variant is encoded in, once `Accept` was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    Fixed(Format),
    /// The source's own family: JPEG stays JPEG; PNG, GIF and WebP become PNG (they may
    /// have transparency). Without `fmt`, or `fmt=auto` for a client that takes neither
    /// WebP nor AVIF.
    LikeSource,
}

/// A request's variant parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub fit: Fit,
    pub q: Option<u8>,
    pub fmt: Option<FormatChoice>,
    /// The parameters as given, sorted by name, `name=value` joined by `&`: the fifth
    /// line of the signed string.
    pub signed: String,
}

impl Variant {
    /// The variant parameters among a query's (decoded) parameters: `None` when there
    /// are none; 400 for one given twice or a value out of its domain.
    pub fn parse(params: &[(String, String)]) -> Result<Option<Variant>, Error> {
        let mut given: Vec<(&str, &str)> = Vec::new();
        for name in NAMES {
            let mut values = params.iter().filter(|(k, _)| k == name);
            if let Some((_, v)) = values.next() {
                if values.next().is_some() {
                    return Err(Error::bad_request(format!(
                        "the {name}= parameter is given more than once"
                    )));
                }
                given.push((name, v));
            }
        }
        if given.is_empty() {
            return Ok(None);
        }
        let mut variant = Variant {
            w: None,
            h: None,
            fit: Fit::Contain,
            q: None,
            fmt: None,
            signed: given
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
        };
        for (name, value) in given {
            match name {
                "w" => variant.w = Some(number(name, value, 1, u32::MAX)?),
                "h" => variant.h = Some(number(name, value, 1, u32::MAX)?),
                "q" => variant.q = Some(number(name, value, 1, 100)? as u8),
                "fit" => {
                    variant.fit = match value {
                        "contain" => Fit::Contain,
                        "cover" => Fit::Cover,
                        _ => return Err(Error::bad_request("fit= must be contain or cover")),
                    }
                }
                _ => {
                    variant.fmt = Some(match value {
                        "jpeg" => FormatChoice::Fixed(Format::Jpeg),
                        "png" => FormatChoice::Fixed(Format::Png),
                        "webp" => FormatChoice::Fixed(Format::Webp),
                        "avif" => FormatChoice::Fixed(Format::Avif),
                        "auto" => FormatChoice::Auto,
                        _ => {
                            return Err(Error::bad_request(
                                "fmt= must be jpeg, png, webp, avif or auto",
                            ));
                        }
                    })
                }
            }
        }
        Ok(Some(variant))
    }

    /// 400 unless `w` and `h` are among the allowed `widths` (none allowed: variants off).
    pub fn check_sizes(&self, widths: &[u32]) -> Result<(), Error> {
        if widths.is_empty() {
            return Err(Error::bad_request(
                "image variants are turned off on this proxy ([variants] widths = [])",
            ));
        }
        for (name, v) in [("w", self.w), ("h", self.h)] {
            if let Some(v) = v
                && !widths.contains(&v)
            {
                let list: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
                return Err(Error::bad_request(format!(
                    "{name}={v} is not an allowed size; allowed: {}",
                    list.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The format to encode in for a client that sent `accept`.
    pub fn output(&self, accept: Option<&str>) -> Output {
        match self.fmt {
            Some(FormatChoice::Fixed(f)) => Output::Fixed(f),
            Some(FormatChoice::Auto) => negotiate(accept),
            None => Output::LikeSource,
        }
    }

    /// Whether the answer depends on `Accept` (`Vary: Accept`).
    pub fn varies_by_accept(&self) -> bool {
        self.fmt == Some(FormatChoice::Auto)
    }

    /// What identifies the rendered bytes in the cache: the resolved parameters and the
    /// negotiated output (so `w=256` and `w=256&fit=contain` share one entry, and two
    /// clients of `fmt=auto` that get WebP share another).
    pub fn cache_id(&self, output: Output) -> String {
        let out = match output {
            Output::Fixed(f) => f.as_str(),
            Output::LikeSource => "source",
        };
        let fit = match self.fit {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
        };
        let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "w={}&h={}&fit={fit}&q={}&out={out}",
            opt(self.w),
            opt(self.h),
            opt(self.q.map(u32::from))
        )
    }
}

/// A canonical decimal in `min..=max` (no sign, no leading zero: one spelling per value,
/// as for `exp`).
fn number(name: &str, value: &str, min: u32, max: u32) -> Result<u32, Error> {
    let canonical = !value.is_empty()
        && value.len() <= 10
        && value.bytes().all(|b| b.is_ascii_digit())
        && !value.starts_with('0');
    match value.parse::<u32>() {
        Ok(v) if canonical && (min..=max).contains(&v) => Ok(v),
        _ => Err(Error::bad_request(format!(
            "{name}= must be a whole number from {min} to {max}"
        ))),
    }
}

/// `fmt=auto`: WebP when the client lists it, else AVIF when it lists that, else the
/// source's family. WebP comes first although AVIF files are smaller: an AVIF encode
/// costs several times the CPU of a WebP one on the render pool (BENCHMARKS.md,
/// "Variants"), and every browser that takes AVIF takes WebP. `image/*` and `*/*` do not
/// count: browsers send them for formats they cannot show.
pub(crate) fn negotiate(accept: Option<&str>) -> Output {
    let takes = |wanted: &str| {
        accept.is_some_and(|a| {
            a.split(',').any(|item| {
                let mut parts = item.split(';');
                let media = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case(wanted) && !refused
            })
        })
    };
    if takes("image/webp") {
        Output::Fixed(Format::Webp)
    } else if takes("image/avif") {
        Output::Fixed(Format::Avif)
    } else {
        Output::LikeSource
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Option<Variant>, Error> {
        let params: Vec<(String, String)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Variant::parse(&params)
    }

    #[test]
    fn the_signed_line_sorts_what_was_given() {
        let v = parse("w=256&fmt=webp&fit=cover&exp=1&sig=x")
            .unwrap()
            .unwrap();
        assert_eq!(v.signed, "fit=cover&fmt=webp&w=256");
        assert_eq!(v.w, Some(256));
        assert_eq!(v.fit, Fit::Cover);
        assert_eq!(v.fmt, Some(FormatChoice::Fixed(Format::Webp)));
        assert!(parse("exp=1&sig=x").unwrap().is_none());
        assert_eq!(parse("q=80").unwrap().unwrap().signed, "q=80");
    }

    #[test]
    fn malformed_values_are_400() {
        for q in [
            "w=0",
            "w=-1",
            "w=0256",
            "w=abc",
            "w=",
            "h=1.5",
            "q=0",
            "q=101",
            "fit=fill",
            "fmt=gif",
            "fmt=",
            "w=1&w=2",
            "fmt=png&fmt=png",
            "w=99999999999",
        ] {
            let e = parse(q).unwrap_err();
            assert_eq!(e.status(), 400, "{q}");
        }
    }

    #[test]
    fn sizes_must_be_allowed() {
        let widths = [64, 256];
        assert!(
            parse("w=256&h=64")
                .unwrap()
                .unwrap()
                .check_sizes(&widths)
                .is_ok()
        );
        assert!(
            parse("fmt=webp")
                .unwrap()
                .unwrap()
                .check_sizes(&widths)
                .is_ok()
        );
        let e = parse("w=300")
            .unwrap()
            .unwrap()
            .check_sizes(&widths)
            .unwrap_err();
        assert!(e.message.contains("64, 256"), "{}", e.message);
        assert!(
            parse("h=100")
                .unwrap()
                .unwrap()
                .check_sizes(&widths)
                .is_err()
        );
        assert!(
            parse("fmt=webp")
                .unwrap()
                .unwrap()
                .check_sizes(&[])
                .is_err()
        );
    }

    #[test]
    fn auto_negotiates_from_accept() {
        let chromium = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert_eq!(negotiate(Some(chromium)), Output::Fixed(Format::Webp));
        assert_eq!(
            negotiate(Some("image/avif,image/*")),
            Output::Fixed(Format::Avif)
        );
        assert_eq!(
            negotiate(Some("image/webp;q=0, image/avif;q=0.5")),
            Output::Fixed(Format::Avif)
        );
        for accept in [None, Some("image/*,*/*;q=0.8"), Some("image/webp;q=0")] {
            assert_eq!(negotiate(accept), Output::LikeSource, "{accept:?}");
        }
    }

    #[test]
    fn the_cache_id_names_what_was_rendered() {
        let a = parse("w=256").unwrap().unwrap();
        let b = parse("fit=contain&w=256").unwrap().unwrap();
        let out = Output::Fixed(Format::Webp);
        assert_eq!(a.cache_id(out), b.cache_id(out));
        assert_ne!(a.cache_id(out), a.cache_id(Output::LikeSource));
        let auto = parse("fmt=auto&w=256").unwrap().unwrap();
        assert!(auto.varies_by_accept() && !a.varies_by_accept());
        assert_eq!(auto.output(Some("image/webp")), out);
        assert_eq!(
            auto.cache_id(auto.output(Some("image/webp"))),
            a.cache_id(out)
        );
    }
}
