//! Synthetic source images with the properties renders must respect (EXIF orientation,
//! an ICC profile, transparency, animation), made in code so that tests, benches and the
//! fuzzer's seeds need no binary fixtures.

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, Frame, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

/// A `w`×`h` picture that compresses and resamples like a photo: smooth gradients,
/// soft-edged discs, thin dark lines (sharp edges) and a little sensor-like noise.
pub fn picture(w: u32, h: u32) -> RgbImage {
    let (wf, hf) = (w.max(1) as f32, h.max(1) as f32);
    let discs = [
        (0.30, 0.40, 0.18, [230.0, 200.0, 80.0]),
        (0.70, 0.62, 0.25, [40.0, 120.0, 60.0]),
        (0.55, 0.22, 0.10, [200.0, 60.0, 60.0]),
    ];
    let step = (w / 12).max(4);
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / wf, y as f32 / hf);
        let mut c = [60.0 + 150.0 * fy, 90.0 + 100.0 * fx, 200.0 - 120.0 * fy];
        for (cx, cy, r, color) in discs {
            let d = ((fx - cx).powi(2) * (wf / hf).powi(2) + (fy - cy).powi(2)).sqrt();
            let t = ((r - d) / 0.01).clamp(0.0, 1.0);
            for i in 0..3 {
                c[i] = c[i] * (1.0 - t) + color[i] * t;
            }
        }
        if x % step < 2 || y % step < 2 {
            c = c.map(|v| v * 0.55);
        }
        let mut n = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
        n ^= n >> 15;
        n = n.wrapping_mul(0x2C1B_3C6D);
        let noise = ((n >> 24) % 13) as f32 - 6.0;
        Rgb(c.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    })
}

/// Left half `left`, right half `right`.
pub fn halves(w: u32, h: u32, left: [u8; 3], right: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| Rgb(if x < w / 2 { left } else { right }))
}

/// A JPEG of `img`, with an EXIF orientation and an ICC profile when given.
pub fn jpeg(
    img: &RgbImage,
    quality: u8,
    orientation: Option<u16>,
    icc: Option<Vec<u8>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut out, quality);
    if let Some(o) = orientation {
        let _ = enc.set_exif_metadata(exif_orientation(o));
    }
    write_rgb(enc, img, icc);
    out
}

/// Writes `img` (RGB) with `enc`, with an ICC profile when given.
fn write_rgb(mut enc: impl ImageEncoder, img: &RgbImage, icc: Option<Vec<u8>>) {
    if let Some(icc) = icc {
        let _ = enc.set_icc_profile(icc);
    }
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        ExtendedColorType::Rgb8,
    )
    .expect("encoding an image in memory");
}

/// A PNG of `img` (RGB), with an ICC profile when given.
pub fn png(img: &RgbImage, icc: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    write_rgb(PngEncoder::new(&mut out), img, icc);
    out
}

/// A PNG whose left half is opaque red and right half fully transparent.
pub fn png_half_transparent(w: u32, h: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 0])
        }
    });
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(img.as_raw(), w, h, ExtendedColorType::Rgba8)
        .expect("encoding a PNG in memory");
    out
}

/// A lossless WebP of `img`.
pub fn webp(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .expect("encoding a WebP in memory");
    out
}

/// A GIF of `frames` frames (one frame: a still GIF).
pub fn gif(w: u32, h: u32, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        let frames = (0..frames).map(|i| {
            let shade = (i * 80 % 256) as u8;
            Frame::new(RgbaImage::from_pixel(
                w,
                h,
                Rgba([shade, 0, 255 - shade, 255]),
            ))
        });
        enc.encode_frames(frames).expect("encoding a GIF in memory");
    }
    out
}

/// An EXIF block (from its TIFF header on) holding only an orientation (1-8).
pub fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut e = b"MM\0\x2a\0\0\0\x08".to_vec();
    e.extend_from_slice(&1u16.to_be_bytes()); // one entry
    e.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    e.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    e.extend_from_slice(&1u32.to_be_bytes()); // one value
    e.extend_from_slice(&orientation.to_be_bytes());
    e.extend_from_slice(&[0, 0]);
    e.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    e
}

/// An RGB display profile (ICC v2, matrix and gamma curves) whose red and green
/// primaries are sRGB's green and red: a pixel that says "red" in it is green in sRGB,
/// so a render that converts profiles visibly differs from one that ignores them.
pub fn swapped_primaries_icc() -> Vec<u8> {
    // sRGB's colorants adapted to D50, as ICC profiles store them.
    let red = [0.4361, 0.2225, 0.0139];
    let green = [0.3851, 0.7169, 0.0971];
    let blue = [0.1431, 0.0606, 0.7141];
    let white = [0.9642, 1.0, 0.8249];
    let xyz = |v: [f64; 3]| {
        let mut t = b"XYZ \0\0\0\0".to_vec();
        for c in v {
            t.extend_from_slice(&((c * 65536.0).round() as i32).to_be_bytes());
        }
        t
    };
    // gamma 2.2 as u8Fixed8, padded to 4 bytes.
    let curve = b"curv\0\0\0\0\0\0\0\x01\x02\x33\0\0".to_vec();
    let tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
        (b"rXYZ", xyz(green)),
        (b"gXYZ", xyz(red)),
        (b"bXYZ", xyz(blue)),
        (b"wtpt", xyz(white)),
        (b"rTRC", curve.clone()),
        (b"gTRC", curve.clone()),
        (b"bTRC", curve),
    ];
    let mut data = Vec::new();
    let mut table = Vec::new();
    let base = 128 + 4 + 12 * tags.len();
    for (sig, body) in &tags {
        table.extend_from_slice(*sig);
        table.extend_from_slice(&((base + data.len()) as u32).to_be_bytes());
        table.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(body);
        while data.len() % 4 != 0 {
            data.push(0);
        }
    }
    let size = base + data.len();
    let mut p = vec![0u8; 128];
    p[0..4].copy_from_slice(&(size as u32).to_be_bytes());
    p[8..12].copy_from_slice(&[2, 0x10, 0, 0]);
    p[12..16].copy_from_slice(b"mntr");
    p[16..20].copy_from_slice(b"RGB ");
    p[20..24].copy_from_slice(b"XYZ ");
    p[36..40].copy_from_slice(b"acsp");
    for (i, c) in white.iter().enumerate() {
        let at = 68 + 4 * i;
        p[at..at + 4].copy_from_slice(&((c * 65536.0).round() as i32).to_be_bytes());
    }
    p.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    p.extend_from_slice(&table);
    p.extend_from_slice(&data);
    p
}
