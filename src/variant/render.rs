//! One render: source bytes → decoded (a JPEG by libjpeg-turbo at the smallest M/8 of its
//! size that is still large enough: the scaling happens in the DCT, before any pixel
//! exists) → resized (fast_image_resize, Lanczos3, alpha premultiplied) → turned upright
//! (EXIF orientation) → converted to sRGB (the source's ICC profile, qcms) → encoded. Pure CPU, synchronous:
//! it runs on the blocking pool, never on an async worker (`cache::variants`).

use std::io::Cursor;

use fast_image_resize as fir;
use image::metadata::Orientation;
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageFormat};

use super::params::{Fit, Format, Output};

/// What to make of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub fit: Fit,
    pub q: Option<u8>,
    pub output: Output,
}

/// An encoded variant.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// Why a source has no variant; every one answers 422.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the object is not an image that can be resized (JPEG, PNG, WebP or GIF)")]
    NotAnImage,
    #[error("the image has {pixels} pixels, more than this proxy resizes ({max})")]
    TooLarge { pixels: u64, max: u64 },
    #[error("animated images have no variants; ask for the original (without w, h, fit, q or fmt)")]
    Animated,
    #[error("the image is corrupt or truncated and cannot be resized")]
    Corrupt(String),
    #[error("the variant could not be encoded")]
    Encode(String),
}

impl RenderError {
    /// What the decoder or encoder said (for the log line, never the answer).
    pub fn detail(&self) -> String {
        match self {
            RenderError::Corrupt(d) | RenderError::Encode(d) => d.clone(),
            other => other.to_string(),
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> RenderError {
    RenderError::Corrupt(e.to_string())
}

/// Default qualities: what imgproxy and vipsthumbnail use for JPEG and WebP; AVIF's
/// scale is steeper (60 looks like JPEG 80 at about half the bytes).
fn quality(format: Format, q: Option<u8>) -> u8 {
    q.unwrap_or(match format {
        Format::Avif => 60,
        _ => 80,
    })
}

/// rav1e's speed (0 slowest … 10 fastest). Without rav1e's assembly (it needs nasm),
/// 10 renders a 1024 px AVIF in about the time libvips (libaom) takes and 8 in 2.4× that,
/// for files ~20% smaller (BENCHMARKS.md, "Variants"); AVIF is only made when asked for.
const AVIF_SPEED: u8 = 10;

/// Renders `source` as `spec` asks; refuses sources with more than `max_pixels` pixels
/// before decoding them.
pub fn render(source: &[u8], spec: &Spec, max_pixels: u64) -> Result<Rendered, RenderError> {
    let kind = match image::guess_format(source) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif)) => f,
        _ => return Err(RenderError::NotAnImage),
    };
    let decoded = if kind == ImageFormat::Jpeg {
        decode_jpeg(source, spec, max_pixels)?
    } else {
        decode_other(source, kind, spec, max_pixels)?
    };
    if decoded.pixels.width == 0 || decoded.pixels.height == 0 {
        return Err(corrupt("the image has no pixels"));
    }
    let format = match spec.output {
        Output::Fixed(f) => f,
        Output::LikeSource => match kind {
            ImageFormat::Jpeg => Format::Jpeg,
            ImageFormat::WebP if !decoded.pixels.alpha => Format::Jpeg,
            _ => Format::Png,
        },
    };
    let Decoded {
        pixels,
        orientation,
        icc,
    } = decoded;
    let (display_w, display_h) = upright(pixels.width, pixels.height, orientation);
    let plan = plan(display_w, display_h, spec.w, spec.h, spec.fit);
    let mut pixels = resize(pixels, &plan.in_stored(orientation))?;
    if let Some(icc) = icc {
        to_srgb(&mut pixels, &icc);
    }
    let pixels = orient(pixels, orientation);
    let bytes = encode(&pixels, format, quality(format, spec.q))?;
    Ok(Rendered {
        bytes,
        format,
        width: pixels.width,
        height: pixels.height,
    })
}

/// 8-bit RGB or RGBA, rows packed.
struct Pixels {
    width: u32,
    height: u32,
    alpha: bool,
    data: Vec<u8>,
}

struct Decoded {
    pixels: Pixels,
    orientation: Orientation,
    icc: Option<Vec<u8>>,
}

/// The scale a `w`×`h` image may be decoded at and still cover `spec`'s output, whichever
/// way its orientation turns out to stand it (a decoder that scales while decoding).
fn needed_scale(w: u32, h: u32, spec: &Spec) -> f64 {
    let upright = plan(w, h, spec.w, spec.h, spec.fit).scale;
    upright.max(plan(h, w, spec.w, spec.h, spec.fit).scale)
}

fn check_pixels(w: u64, h: u64, max: u64) -> Result<(), RenderError> {
    let pixels = w * h;
    if pixels > max {
        return Err(RenderError::TooLarge { pixels, max });
    }
    Ok(())
}

/// JPEG: libjpeg-turbo (mozjpeg's build of it) decodes at M/8 scale in the DCT; its
/// entropy decoding is about twice as fast as jpeg-decoder's (BENCHMARKS.md, "Variants").
/// libjpeg reports errors by unwinding out of C (`jpeg_error`), caught here.
fn decode_jpeg(source: &[u8], spec: &Spec, max_pixels: u64) -> Result<Decoded, RenderError> {
    std::panic::catch_unwind(|| decode_jpeg_unwinding(source, spec, max_pixels)).unwrap_or_else(
        |payload| {
            let detail = payload.downcast_ref::<String>().cloned();
            Err(corrupt(detail.unwrap_or_else(|| "libjpeg failed".into())))
        },
    )
}

/// Markers kept while decoding: EXIF (APP1), ICC profile chunks (APP2), Adobe (APP14).
const JPEG_MARKERS: &[mozjpeg::Marker] = &[
    mozjpeg::Marker::APP(1),
    mozjpeg::Marker::APP(2),
    mozjpeg::Marker::APP(14),
];

fn decode_jpeg_unwinding(
    source: &[u8],
    spec: &Spec,
    max_pixels: u64,
) -> Result<Decoded, RenderError> {
    let mut d = mozjpeg::Decompress::with_markers(JPEG_MARKERS)
        .with_err(jpeg_error::strict())
        .from_mem(source)
        .map_err(corrupt)?;
    let (w, h) = (d.width() as u32, d.height() as u32);
    check_pixels(w.into(), h.into(), max_pixels)?;
    // The orientation is in the EXIF marker, read below; `needed_scale` covers both.
    // libjpeg-turbo's IDCT scales by any M/8 (its reduced-size IDCTs): the smallest that
    // still covers the output, e.g. 6/8 for a 1600 px photo made 1024 px.
    let factor = needed_scale(w, h, spec);
    let eighths = (1u8..8)
        .find(|&n| f64::from(n) / 8.0 >= factor)
        .unwrap_or(8);
    d.scale(eighths);
    let mut orientation = Orientation::NoTransforms;
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut adobe = false;
    for m in d.markers() {
        match m.marker {
            mozjpeg::Marker::APP(1) if m.data.starts_with(b"Exif\0\0") => {
                orientation = Orientation::from_exif_chunk(&m.data[6..]).unwrap_or(orientation);
            }
            mozjpeg::Marker::APP(2)
                if m.data.len() > 14 && m.data.starts_with(b"ICC_PROFILE\0") =>
            {
                icc_chunks.push((m.data[12], &m.data[14..]));
            }
            mozjpeg::Marker::APP(14) if m.data.starts_with(b"Adobe") => adobe = true,
            _ => {}
        }
    }
    icc_chunks.sort_by_key(|&(seq, _)| seq);
    let icc: Vec<u8> = icc_chunks
        .into_iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    let (started, space) = match d.image().map_err(corrupt)? {
        mozjpeg::Format::RGB(s) => (s, mozjpeg::ColorSpace::JCS_RGB),
        mozjpeg::Format::Gray(s) => (s, mozjpeg::ColorSpace::JCS_GRAYSCALE),
        mozjpeg::Format::CMYK(s) => (s, mozjpeg::ColorSpace::JCS_CMYK),
    };
    let (raw, out_w, out_h) = read_scanlines(started)?;
    let rgb = space == mozjpeg::ColorSpace::JCS_RGB;
    let data = match space {
        mozjpeg::ColorSpace::JCS_GRAYSCALE => raw.iter().flat_map(|&l| [l, l, l]).collect(),
        mozjpeg::ColorSpace::JCS_CMYK => cmyk_to_rgb(&raw, adobe),
        _ => raw,
    };
    if data.len() != (out_w * out_h * 3) as usize {
        return Err(corrupt("pixel data of the wrong length"));
    }
    // CMYK and grey profiles are not converted (qcms takes RGB ones): the naive
    // conversion stands.
    let icc = (rgb && !icc.is_empty()).then_some(icc);
    Ok(Decoded {
        pixels: Pixels {
            width: out_w,
            height: out_h,
            alpha: false,
            data,
        },
        orientation,
        icc,
    })
}

/// Every row, then the end of the file (where a truncation is noticed).
fn read_scanlines(
    mut s: mozjpeg::decompress::DecompressStarted<&[u8]>,
) -> Result<(Vec<u8>, u32, u32), RenderError> {
    let data = s.read_scanlines::<u8>().map_err(corrupt)?;
    let (w, h) = (s.width() as u32, s.height() as u32);
    s.finish().map_err(corrupt)?;
    Ok((data, w, h))
}

/// Naive CMYK → RGB. Adobe's files (an APP14 "Adobe" marker) store every ink inverted,
/// which is what nearly every CMYK JPEG is.
fn cmyk_to_rgb(data: &[u8], adobe_inverted: bool) -> Vec<u8> {
    data.chunks_exact(4)
        .flat_map(|p| {
            let ink = |v: u8| if adobe_inverted { 255 - v } else { v };
            let k = 255 - u16::from(ink(p[3]));
            [0, 1, 2].map(|i| ((255 - u16::from(ink(p[i]))) * k / 255) as u8)
        })
        .collect()
}

/// libjpeg's error manager: a fatal error unwinds out of C (mozjpeg-sys is built with
/// "C-unwind" callbacks for this) to `decode_jpeg`'s `catch_unwind`, without the panic
/// hook (so the fuzzer's abort-on-panic hook sees only real panics). Of the warnings,
/// the two a truncated or damaged scan gives are fatal too: such a file is a 422, not a
/// picture with a grey bottom. Others (extra bytes between markers, common in camera
/// files) are tolerated, as libvips does.
mod jpeg_error {
    use mozjpeg_sys::{JWRN_HIT_MARKER, JWRN_JPEG_EOF, jpeg_common_struct, jpeg_error_mgr};
    use std::os::raw::c_int;

    pub(super) fn strict() -> jpeg_error_mgr {
        // SAFETY: a C struct of integers, pointers and optional function pointers, for
        // which all-zero bytes are a valid value (null, None, 0).
        let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
        // SAFETY: jpeg_std_error fills in every field of the manager it is given, a live
        // exclusive borrow here.
        unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
        err.error_exit = Some(fail);
        err.emit_message = Some(message);
        err
    }

    fn code(cinfo: &jpeg_common_struct) -> c_int {
        // SAFETY: libjpeg calls back with `err` pointing at the manager it was given.
        unsafe { cinfo.err.as_ref() }.map_or(-1, |e| e.msg_code)
    }

    extern "C-unwind" fn fail(cinfo: &mut jpeg_common_struct) {
        let msg = format!("libjpeg error (message code {})", code(cinfo));
        std::panic::resume_unwind(Box::new(msg));
    }

    extern "C-unwind" fn message(cinfo: &mut jpeg_common_struct, level: c_int) {
        let code = code(cinfo);
        if level < 0 && (code == JWRN_JPEG_EOF as c_int || code == JWRN_HIT_MARKER as c_int) {
            let msg = format!("libjpeg: truncated or damaged data (message code {code})");
            std::panic::resume_unwind(Box::new(msg));
        }
    }
}

fn decode_other(
    source: &[u8],
    kind: ImageFormat,
    spec: &Spec,
    max_pixels: u64,
) -> Result<Decoded, RenderError> {
    let mut limits = image::Limits::default();
    // Decoded pixels plus the decoders' own buffers: 16-bit RGBA is 8 bytes a pixel.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    let image = match kind {
        ImageFormat::WebP => decode_webp(source, spec, max_pixels)?,
        ImageFormat::Gif => {
            use image::AnimationDecoder;
            let open = || image::codecs::gif::GifDecoder::new(Cursor::new(source)).map_err(corrupt);
            // The size first: a frame is allocated at the full (logical screen) size.
            let (w, h) = open()?.dimensions();
            check_pixels(w.into(), h.into(), max_pixels)?;
            let mut probe = open()?;
            probe.set_limits(limits.clone()).map_err(corrupt)?;
            if probe.into_frames().take(2).count() > 1 {
                return Err(RenderError::Animated);
            }
            from_decoder(open()?, max_pixels, limits)?
        }
        _ => {
            let d = image::codecs::png::PngDecoder::new(Cursor::new(source)).map_err(corrupt)?;
            if d.is_apng().map_err(corrupt)? {
                return Err(RenderError::Animated);
            }
            from_decoder(d, max_pixels, limits)?
        }
    };
    Ok(image)
}

/// WebP: the metadata (animation, orientation, ICC) from image's parser, the pixels from
/// libwebp, scaled while decoding (its area-averaging rescaler) when the output needs at
/// most half the width: what libvips' shrink-on-load does.
fn decode_webp(source: &[u8], spec: &Spec, max_pixels: u64) -> Result<Decoded, RenderError> {
    let mut meta = image::codecs::webp::WebPDecoder::new(Cursor::new(source)).map_err(corrupt)?;
    if meta.has_animation() {
        return Err(RenderError::Animated);
    }
    let (w, h) = meta.dimensions();
    check_pixels(w.into(), h.into(), max_pixels)?;
    let orientation = meta.orientation().unwrap_or(Orientation::NoTransforms);
    let icc = meta.icc_profile().ok().flatten();
    let alpha = meta.color_type().has_alpha();
    let factor = needed_scale(w, h, spec);
    let (dw, dh) = if factor <= 0.5 {
        let side = |v: u32| ((f64::from(v) * factor).ceil() as u32).clamp(1, v);
        (side(w), side(h))
    } else {
        (w, h)
    };
    let data = webp_decode(source, (dw, dh), (dw, dh) != (w, h), alpha)
        .ok_or_else(|| corrupt("libwebp could not decode it"))?;
    Ok(Decoded {
        pixels: Pixels {
            width: dw,
            height: dh,
            alpha,
            data,
        },
        orientation,
        icc,
    })
}

/// libwebp's advanced decoding API, into a buffer of ours of exactly `size` pixels
/// (`scaled`: smaller than the image, through libwebp's rescaler).
fn webp_decode(source: &[u8], size: (u32, u32), scaled: bool, alpha: bool) -> Option<Vec<u8>> {
    use libwebp_sys as sys;
    let bpp = if alpha { 4 } else { 3 };
    let (w, h) = (i32::try_from(size.0).ok()?, i32::try_from(size.1).ok()?);
    let stride = w.checked_mul(bpp)?;
    let mut out = vec![0u8; usize::try_from(stride).ok()? * usize::try_from(h).ok()?];
    let mut config = sys::WebPDecoderConfig::new().ok()?;
    config.options.use_scaling = i32::from(scaled);
    config.options.scaled_width = w;
    config.options.scaled_height = h;
    config.output.colorspace = if alpha {
        sys::WEBP_CSP_MODE::MODE_RGBA
    } else {
        sys::WEBP_CSP_MODE::MODE_RGB
    };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = sys::WebPRGBABuffer {
        rgba: out.as_mut_ptr(),
        stride,
        size: out.len(),
    };
    // SAFETY: `config.output` points into `out`, which outlives the call and has room for
    // `stride × h` bytes; libwebp writes no more than that (it checks `size`) and keeps
    // no pointer to it once the call returns (external memory is never freed by it).
    let status = unsafe { sys::WebPDecode(source.as_ptr(), source.len(), &mut config) };
    (status == sys::VP8StatusCode::VP8_STATUS_OK).then_some(out)
}

fn from_decoder(
    mut d: impl ImageDecoder,
    max_pixels: u64,
    limits: image::Limits,
) -> Result<Decoded, RenderError> {
    let (w, h) = d.dimensions();
    check_pixels(w.into(), h.into(), max_pixels)?;
    d.set_limits(limits).map_err(corrupt)?;
    let orientation = d.orientation().unwrap_or(Orientation::NoTransforms);
    let icc = d.icc_profile().ok().flatten();
    let image = DynamicImage::from_decoder(d).map_err(corrupt)?;
    let alpha = image.color().has_alpha();
    let data = if alpha {
        image.into_rgba8().into_raw()
    } else {
        image.into_rgb8().into_raw()
    };
    Ok(Decoded {
        pixels: Pixels {
            width: w,
            height: h,
            alpha,
            data,
        },
        orientation,
        icc,
    })
}

/// Whether an orientation turns the image a quarter.
fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn upright(w: u32, h: u32, o: Orientation) -> (u32, u32) {
    if swaps_axes(o) { (h, w) } else { (w, h) }
}

/// The output size and the part of the image it shows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    out_w: u32,
    out_h: u32,
    /// The shown part, centred: its width and height as fractions of the image's (so the
    /// same plan fits a decode at any M/8 of the size).
    crop_w: f64,
    crop_h: f64,
    /// Output pixels per pixel of the full-size image.
    scale: f64,
}

impl Plan {
    /// The same plan for the image as stored, before `o` turns it upright (a centred
    /// crop stays centred under every flip and turn).
    fn in_stored(self, o: Orientation) -> Plan {
        if swaps_axes(o) {
            Plan {
                out_w: self.out_h,
                out_h: self.out_w,
                crop_w: self.crop_h,
                crop_h: self.crop_w,
                scale: self.scale,
            }
        } else {
            self
        }
    }
}

/// The plan for an image of `w`×`h` (upright). Never enlarges: a source smaller than
/// asked stays its size (`cover` still crops it to the asked shape).
fn plan(w: u32, h: u32, want_w: Option<u32>, want_h: Option<u32>, fit: Fit) -> Plan {
    let (wf, hf) = (f64::from(w), f64::from(h));
    let side = |v: f64| (v.round() as u32).max(1);
    let whole = |s: f64| Plan {
        out_w: side(wf * s),
        out_h: side(hf * s),
        crop_w: 1.0,
        crop_h: 1.0,
        scale: s,
    };
    match (want_w, want_h) {
        (None, None) => whole(1.0),
        (Some(ww), None) => whole((f64::from(ww) / wf).min(1.0)),
        (None, Some(wh)) => whole((f64::from(wh) / hf).min(1.0)),
        (Some(ww), Some(wh)) => {
            let (bw, bh) = (f64::from(ww), f64::from(wh));
            match fit {
                Fit::Contain => whole((bw / wf).min(bh / hf).min(1.0)),
                Fit::Cover => {
                    // The largest centred part of the image with the box's shape, shown
                    // at the box's size (or at its own, when it is smaller).
                    let (crop_w, crop_h) = if wf / hf > bw / bh {
                        (hf * bw / bh, hf)
                    } else {
                        (wf, wf * bh / bw)
                    };
                    let s = (bw / crop_w).min(1.0);
                    Plan {
                        out_w: side(crop_w * s),
                        out_h: side(crop_h * s),
                        crop_w: crop_w / wf,
                        crop_h: crop_h / hf,
                        scale: s,
                    }
                }
            }
        }
    }
}

fn pixel_type(alpha: bool) -> fir::PixelType {
    if alpha {
        fir::PixelType::U8x4
    } else {
        fir::PixelType::U8x3
    }
}

/// `pixels` (the whole image, possibly decoded smaller than full size) cropped and
/// resized as `plan` says.
fn resize(pixels: Pixels, plan: &Plan) -> Result<Pixels, RenderError> {
    let (pw, ph) = (f64::from(pixels.width), f64::from(pixels.height));
    let (crop_w, crop_h) = (plan.crop_w * pw, plan.crop_h * ph);
    let whole = plan.crop_w >= 1.0 && plan.crop_h >= 1.0;
    if whole && plan.out_w == pixels.width && plan.out_h == pixels.height {
        return Ok(pixels);
    }
    let pt = pixel_type(pixels.alpha);
    let failed = |e: &dyn std::fmt::Display| RenderError::Encode(format!("resize: {e}"));
    let src = fir::images::Image::from_vec_u8(pixels.width, pixels.height, pixels.data, pt)
        .map_err(|e| failed(&e))?;
    let mut dst = fir::images::Image::new(plan.out_w, plan.out_h, pt);
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
        .crop((pw - crop_w) / 2.0, (ph - crop_h) / 2.0, crop_w, crop_h);
    fir::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| failed(&e))?;
    Ok(Pixels {
        width: plan.out_w,
        height: plan.out_h,
        alpha: pixels.alpha,
        data: dst.into_vec(),
    })
}

/// Converts pixels tagged with an ICC profile to sRGB, which is what untagged images
/// mean to a browser (the encoders write no profile). An sRGB or unreadable profile
/// leaves them as they are.
fn to_srgb(pixels: &mut Pixels, icc: &[u8]) {
    let Some(profile) = qcms::Profile::new_from_slice(icc, false) else {
        return;
    };
    if profile.is_sRGB() {
        return;
    }
    let ty = if pixels.alpha {
        qcms::DataType::RGBA8
    } else {
        qcms::DataType::RGB8
    };
    let srgb = qcms::Profile::new_sRGB();
    if let Some(t) = qcms::Transform::new(&profile, &srgb, ty, qcms::Intent::Perceptual) {
        t.apply(&mut pixels.data);
    }
}

/// Turns the image upright as its EXIF orientation says (the output carries no EXIF).
fn orient(pixels: Pixels, o: Orientation) -> Pixels {
    if o == Orientation::NoTransforms {
        return pixels;
    }
    let Pixels {
        width,
        height,
        alpha,
        data,
    } = pixels;
    let image = if alpha {
        image::RgbaImage::from_raw(width, height, data).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(width, height, data).map(DynamicImage::ImageRgb8)
    };
    let Some(mut image) = image else {
        // Cannot happen: the buffer was made for these dimensions.
        return Pixels {
            width,
            height,
            alpha,
            data: Vec::new(),
        };
    };
    image.apply_orientation(o);
    let (width, height) = (image.width(), image.height());
    let data = if alpha {
        image.into_rgba8().into_raw()
    } else {
        image.into_rgb8().into_raw()
    };
    Pixels {
        width,
        height,
        alpha,
        data,
    }
}

fn encode(pixels: &Pixels, format: Format, q: u8) -> Result<Vec<u8>, RenderError> {
    let (w, h) = (pixels.width, pixels.height);
    let color = if pixels.alpha {
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    let failed =
        |e: &dyn std::fmt::Display| RenderError::Encode(format!("{}: {e}", format.as_str()));
    let mut out = Vec::new();
    match format {
        Format::Jpeg => {
            // JPEG has no transparency: composite over white, as browsers show it.
            let flat;
            let data = if pixels.alpha {
                flat = over_white(&pixels.data);
                &flat
            } else {
                &pixels.data
            };
            let (w, h) = (
                u16::try_from(w).map_err(|e| failed(&e))?,
                u16::try_from(h).map_err(|e| failed(&e))?,
            );
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, q);
            encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
            // Standard Huffman tables: with optimised ones, a flat image (a logo on white)
            // comes out as a file zune-jpeg 0.5 (the image crate's decoder) misreads,
            // though libjpeg-turbo reads it right; a few percent of size is not worth it.
            encoder
                .encode(data, w, h, jpeg_encoder::ColorType::Rgb)
                .map_err(|e| failed(&e))?;
        }
        Format::Png => {
            image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            )
            .write_image(&pixels.data, w, h, color)
            .map_err(|e| failed(&e))?;
        }
        Format::Webp => {
            let encoder = if pixels.alpha {
                webp::Encoder::from_rgba(&pixels.data, w, h)
            } else {
                webp::Encoder::from_rgb(&pixels.data, w, h)
            };
            let encoded = encoder
                .encode_simple(false, f32::from(q))
                .map_err(|e| failed(&format!("{e:?}")))?;
            out.extend_from_slice(&encoded);
        }
        Format::Avif => {
            image::codecs::avif::AvifEncoder::new_with_speed_quality(&mut out, AVIF_SPEED, q)
                .with_num_threads(Some(1))
                .write_image(&pixels.data, w, h, color)
                .map_err(|e| failed(&e))?;
        }
    }
    Ok(out)
}

fn over_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = u16::from(p[3]);
            [0, 1, 2].map(|i| ((u16::from(p[i]) * a + 255 * (255 - a)) / 255) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variant::samples;

    const MAX: u64 = 50_000_000;

    fn spec(w: Option<u32>, h: Option<u32>, fit: Fit, output: Output) -> Spec {
        Spec {
            w,
            h,
            fit,
            q: None,
            output,
        }
    }

    fn decode(bytes: &[u8]) -> DynamicImage {
        image::load_from_memory(bytes).unwrap()
    }

    #[test]
    fn plans_keep_the_aspect_and_never_enlarge() {
        let p = plan(4000, 3000, Some(256), None, Fit::Contain);
        assert_eq!((p.out_w, p.out_h), (256, 192));
        let p = plan(4000, 3000, Some(256), Some(256), Fit::Contain);
        assert_eq!((p.out_w, p.out_h), (256, 192));
        let p = plan(4000, 3000, Some(256), Some(256), Fit::Cover);
        assert_eq!((p.out_w, p.out_h), (256, 256));
        assert!((p.crop_w - 0.75).abs() < 1e-9 && p.crop_h == 1.0);
        let p = plan(100, 50, Some(256), None, Fit::Contain);
        assert_eq!((p.out_w, p.out_h), (100, 50));
        // Smaller than the box: cropped to its shape at the source's own scale.
        let p = plan(100, 50, Some(256), Some(256), Fit::Cover);
        assert_eq!((p.out_w, p.out_h), (50, 50));
        let p = plan(300, 3000, None, Some(64), Fit::Contain);
        assert_eq!((p.out_w, p.out_h), (6, 64));
    }

    #[test]
    fn every_output_format_is_what_its_bytes_say() {
        let src = samples::jpeg(&samples::picture(640, 480), 90, None, None);
        for (format, sniffed) in [
            (Format::Jpeg, ImageFormat::Jpeg),
            (Format::Png, ImageFormat::Png),
            (Format::Webp, ImageFormat::WebP),
            (Format::Avif, ImageFormat::Avif),
        ] {
            let r = render(
                &src,
                &spec(Some(64), None, Fit::Contain, Output::Fixed(format)),
                MAX,
            )
            .unwrap();
            assert_eq!(r.format, format);
            assert_eq!(
                image::guess_format(&r.bytes).unwrap(),
                sniffed,
                "{format:?}"
            );
            assert_eq!((r.width, r.height), (64, 48));
        }
    }

    #[test]
    fn a_large_jpeg_is_decoded_scaled_and_resized_exactly() {
        let src = samples::jpeg(&samples::picture(2400, 1600), 85, None, None);
        let r = render(
            &src,
            &spec(
                Some(256),
                Some(256),
                Fit::Cover,
                Output::Fixed(Format::Jpeg),
            ),
            MAX,
        )
        .unwrap();
        let img = decode(&r.bytes);
        assert_eq!((img.width(), img.height()), (256, 256));
    }

    /// The DCT scales by the smallest M/8 that still covers the output (not only 1/2,
    /// 1/4, 1/8): a 1600 px photo for a 1024 px box is decoded 1200 px wide.
    #[test]
    fn jpegs_decode_at_the_smallest_eighth_that_covers_the_output() {
        let src = samples::jpeg(&samples::picture(1600, 1200), 85, None, None);
        for (size, width) in [
            (1024, 1200),
            (512, 600),
            (256, 400),
            (128, 200),
            (2048, 1600),
        ] {
            let s = spec(
                Some(size),
                Some(size),
                Fit::Contain,
                Output::Fixed(Format::Png),
            );
            let decoded = decode_jpeg(&src, &s, MAX).unwrap();
            assert_eq!(decoded.pixels.width, width, "box {size}");
        }
    }

    #[test]
    fn a_large_webp_is_decoded_scaled_by_libwebp() {
        let left_red = samples::halves(800, 600, [250, 0, 0], [0, 0, 250]);
        let src = samples::webp(&left_red);
        let r = render(
            &src,
            &spec(Some(128), None, Fit::Contain, Output::Fixed(Format::Png)),
            MAX,
        )
        .unwrap();
        let img = decode(&r.bytes).into_rgb8();
        assert_eq!((img.width(), img.height()), (128, 96));
        let (left, right) = (img.get_pixel(10, 48), img.get_pixel(118, 48));
        assert!(left[0] > 230 && left[2] < 25, "{left:?}");
        assert!(right[2] > 230 && right[0] < 25, "{right:?}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Stored sideways: left half red, right half blue. Orientation 6 means "turn 90°
        // clockwise to view": the left half ends up on top.
        let stored = samples::halves(200, 100, [255, 0, 0], [0, 0, 255]);
        let src = samples::jpeg(&stored, 95, Some(6), None);
        let r = render(
            &src,
            &spec(Some(64), None, Fit::Contain, Output::Fixed(Format::Png)),
            MAX,
        )
        .unwrap();
        let img = decode(&r.bytes).into_rgb8();
        assert_eq!((img.width(), img.height()), (64, 128));
        let top = img.get_pixel(32, 10);
        let bottom = img.get_pixel(32, 118);
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    }

    #[test]
    fn icc_profiles_are_converted_to_srgb() {
        let red = image::RgbImage::from_pixel(32, 32, image::Rgb([255, 0, 0]));
        for src in [
            samples::png(&red, Some(samples::swapped_primaries_icc())),
            samples::jpeg(&red, 95, None, Some(samples::swapped_primaries_icc())),
        ] {
            let r = render(
                &src,
                &spec(None, None, Fit::Contain, Output::Fixed(Format::Png)),
                MAX,
            )
            .unwrap();
            let px = *decode(&r.bytes).into_rgb8().get_pixel(16, 16);
            // "Red" in that profile is sRGB's green.
            assert!(px[1] > 180 && px[0] < 90, "{px:?}");
        }
        // Without the profile, red stays red.
        let r = render(
            &samples::png(&red, None),
            &spec(None, None, Fit::Contain, Output::Fixed(Format::Png)),
            MAX,
        )
        .unwrap();
        assert_eq!(
            *decode(&r.bytes).into_rgb8().get_pixel(16, 16),
            image::Rgb([255, 0, 0])
        );
    }

    #[test]
    fn transparency_is_kept_where_the_format_has_it() {
        let src = samples::png_half_transparent(128, 64);
        for format in [Format::Png, Format::Webp] {
            let r = render(
                &src,
                &spec(Some(64), None, Fit::Contain, Output::Fixed(format)),
                MAX,
            )
            .unwrap();
            let img = decode(&r.bytes);
            assert!(img.color().has_alpha(), "{format:?}");
            let img = img.into_rgba8();
            assert!(img.get_pixel(5, 16)[3] > 240, "{format:?} opaque side");
            assert!(img.get_pixel(58, 16)[3] < 15, "{format:?} transparent side");
        }
        // No AVIF decoder is built in (AVIF sources are not read): its alpha plane is
        // an auxiliary image item of the container.
        let r = render(
            &src,
            &spec(Some(64), None, Fit::Contain, Output::Fixed(Format::Avif)),
            MAX,
        )
        .unwrap();
        let urn = b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha";
        assert!(
            r.bytes.windows(urn.len()).any(|w| w == urn),
            "an AVIF alpha plane"
        );
        // JPEG has none: the transparent half becomes white.
        let r = render(
            &src,
            &spec(Some(64), None, Fit::Contain, Output::Fixed(Format::Jpeg)),
            MAX,
        )
        .unwrap();
        let px = *decode(&r.bytes).into_rgb8().get_pixel(58, 16);
        assert!(px.0.iter().all(|&c| c > 235), "{px:?}");
        // Like the source: a PNG stays a PNG (it may be transparent).
        let r = render(
            &src,
            &spec(Some(64), None, Fit::Contain, Output::LikeSource),
            MAX,
        )
        .unwrap();
        assert_eq!(r.format, Format::Png);
    }

    /// A JPEG written by libjpeg in `space` from `pixels` (one value per component).
    fn jpeg_in(space: mozjpeg::ColorSpace, w: usize, h: usize, pixel: &[u8]) -> Vec<u8> {
        let mut c = mozjpeg::Compress::new(space);
        c.set_size(w, h);
        c.set_quality(95.0);
        let mut c = c.start_compress(Vec::new()).unwrap();
        c.write_scanlines(&pixel.repeat(w * h)).unwrap();
        c.finish().unwrap()
    }

    #[test]
    fn grey_and_cmyk_jpegs_become_rgb() {
        let out = spec(Some(64), None, Fit::Contain, Output::Fixed(Format::Png));
        let grey = jpeg_in(mozjpeg::ColorSpace::JCS_GRAYSCALE, 96, 64, &[128]);
        let img = decode(&render(&grey, &out, MAX).unwrap().bytes).into_rgb8();
        let p = img.get_pixel(32, 20).0;
        assert!(p.iter().all(|&v| v.abs_diff(128) <= 2), "{p:?}");
        // libjpeg writes CMYK with Adobe's marker, inks inverted: this is pure red
        // (no cyan, full magenta and yellow, no black).
        let red = jpeg_in(mozjpeg::ColorSpace::JCS_CMYK, 96, 64, &[255, 0, 0, 255]);
        let img = decode(&render(&red, &out, MAX).unwrap().bytes).into_rgb8();
        let p = img.get_pixel(32, 20).0;
        assert!(p[0] >= 250 && p[1] <= 5 && p[2] <= 5, "{p:?}");
    }

    #[test]
    fn refusals_are_errors_not_panics() {
        let png = samples::png(&samples::picture(400, 300), None);
        let any = spec(Some(64), None, Fit::Contain, Output::Fixed(Format::Webp));
        assert!(matches!(
            render(&png, &any, 100_000),
            Err(RenderError::TooLarge {
                pixels: 120_000,
                max: 100_000
            })
        ));
        let jpeg = samples::jpeg(&samples::picture(400, 300), 90, None, None);
        assert!(matches!(
            render(&jpeg, &any, 1000),
            Err(RenderError::TooLarge { .. })
        ));
        assert!(matches!(
            render(&jpeg[..jpeg.len() / 3], &any, MAX),
            Err(RenderError::Corrupt(_))
        ));
        assert!(matches!(
            render(&png[..png.len() / 2], &any, MAX),
            Err(RenderError::Corrupt(_))
        ));
        assert!(matches!(
            render(b"<svg></svg>", &any, MAX),
            Err(RenderError::NotAnImage)
        ));
        assert!(matches!(
            render(&samples::gif(16, 16, 3), &any, MAX),
            Err(RenderError::Animated)
        ));
        assert!(render(&samples::gif(16, 16, 1), &any, MAX).is_ok());
        // A small animated GIF on a huge logical screen (found by the fuzzer: every frame
        // is allocated at the screen's size): refused for its size, before any frame.
        let mut bomb = samples::gif(16, 16, 2);
        bomb[6..10].copy_from_slice(&[0x02, 0x89, 0x50, 0x4e]);
        assert!(matches!(
            render(&bomb, &any, MAX),
            Err(RenderError::TooLarge { .. })
        ));
        assert!(render(&samples::webp(&samples::picture(80, 60)), &any, MAX).is_ok());
    }

    /// Damaged copies of every kind of source: each render ends with an answer (the
    /// cargo-fuzz target in fuzz/ does the same without end).
    #[test]
    fn mutated_sources_never_panic() {
        let seeds = [
            samples::jpeg(&samples::picture(96, 64), 80, Some(6), None),
            samples::png(
                &samples::picture(64, 48),
                Some(samples::swapped_primaries_icc()),
            ),
            samples::png_half_transparent(40, 30),
            samples::webp(&samples::picture(50, 40)),
            samples::gif(20, 20, 2),
        ];
        let any = spec(Some(64), Some(64), Fit::Cover, Output::Fixed(Format::Png));
        let mut rng = fastrand::Rng::with_seed(7);
        for seed in &seeds {
            for _ in 0..150 {
                let mut bytes = seed.clone();
                for _ in 0..rng.usize(1..8) {
                    let at = rng.usize(..bytes.len());
                    bytes[at] = rng.u8(..);
                }
                if rng.bool() {
                    bytes.truncate(rng.usize(1..bytes.len()));
                }
                let _ = render(&bytes, &any, 1_000_000);
            }
        }
    }

    /// Writes the fuzzer's seed corpus (docs/fuzzing.md): every kind of source, each
    /// behind a first byte that picks the output.
    #[test]
    #[ignore = "writes fuzz/seeds/render; run by hand"]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/render");
        std::fs::create_dir_all(&dir).unwrap();
        let seeds = [
            samples::jpeg(&samples::picture(64, 48), 80, Some(6), None),
            samples::jpeg(
                &samples::picture(40, 30),
                90,
                None,
                Some(samples::swapped_primaries_icc()),
            ),
            samples::png(
                &samples::picture(48, 36),
                Some(samples::swapped_primaries_icc()),
            ),
            samples::png_half_transparent(40, 30),
            samples::webp(&samples::picture(50, 40)),
            samples::gif(20, 20, 1),
            samples::gif(20, 20, 2),
        ];
        for (i, seed) in seeds.iter().enumerate() {
            let mut bytes = vec![i as u8];
            bytes.extend_from_slice(seed);
            std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
        }
    }
}
