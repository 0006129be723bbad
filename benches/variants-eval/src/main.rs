//! Three variant pipelines on the same sources, sizes and formats (BENCHMARKS.md,
//! "Variants: which pipeline"):
//!
//! - `ours`: `bucketfront::render` (libjpeg-turbo scaled in the DCT, image's
//!   PNG/WebP decoders, fast_image_resize Lanczos3, libwebp, rav1e);
//! - `libvips`: libvips 8.14 through the `libvips` crate (`thumbnail_buffer`, which shrinks
//!   JPEGs on load too), one thread (`concurrency_set(1)`), as one render slot would run it;
//! - `vipsthumbnail`: Debian's command, as shipped (its default threads), process start
//!   included: the anchor the issue names.
//!
//! Every case runs in a process of its own (this binary re-executed, or vipsthumbnail),
//! so its peak RSS (VmHWM, or the child's `ru_maxrss`) is its own; the idle process's
//! VmHWM, measured in the same run, is subtracted. Quality: SSIM (8×8 windows, luma) of
//! each output against the source reduced by exact area averaging to the output's size,
//! a reference neutral to every resampler.
//!
//! `cargo run --release` (needs `apt install libvips-dev libvips-tools`); `-- quick` runs
//! one repetition per case.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bucketfront::{self as render, Spec};
use bucketfront::{Fit, Format, Output, samples};

const FORMATS: [Format; 4] = [Format::Jpeg, Format::Png, Format::Webp, Format::Avif];
const SIZES: [u32; 2] = [256, 1024];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("one") => one(&args[2..]),
        Some("idle") => println!("{}", vm_hwm_kib()),
        Some("webptest") => {
            let img = image::open(&args[2]).unwrap().into_rgb8();
            let e = webp::Encoder::from_rgb(img.as_raw(), img.width(), img.height());
            std::fs::write(&args[3], &*e.encode_simple(false, 80.0).unwrap()).unwrap();
        }
        _ => compare(args.get(1).is_some_and(|a| a == "quick")),
    }
}

/// The sources: a 12-megapixel JPEG, a 4K PNG and a lossy WebP, made in code (the issue's
/// three), and a 2-megapixel JPEG, the size of many datasets' images, which a 1024 px
/// output cannot decode at 1/2.
fn inputs(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    let photo = samples::picture(4000, 3000);
    let jpeg = dir.join("12mp.jpg");
    std::fs::write(&jpeg, samples::jpeg(&photo, 90, None, None)).unwrap();
    let png = dir.join("4k.png");
    std::fs::write(&png, samples::png(&samples::picture(3840, 2160), None)).unwrap();
    let webp_src = samples::picture(2048, 1536);
    let webp = dir.join("3mp.webp");
    let encoded = webp::Encoder::from_rgb(webp_src.as_raw(), 2048, 1536).encode(85.0);
    std::fs::write(&webp, &*encoded).unwrap();
    let small = dir.join("2mp.jpg");
    std::fs::write(&small, samples::jpeg(&samples::picture(1600, 1200), 85, None, None)).unwrap();
    vec![
        ("12 MP JPEG", jpeg),
        ("4K PNG", png),
        ("3 MP WebP", webp),
        ("2 MP JPEG", small),
    ]
}

fn ext(f: Format) -> &'static str {
    match f {
        Format::Jpeg => "jpg",
        Format::Png => "png",
        Format::Webp => "webp",
        Format::Avif => "avif",
    }
}

/// A child run: `one PIPELINE INPUT SIZE FORMAT REPS OUT` → "ms_per_render vmhwm_kib".
fn one(args: &[String]) {
    let (pipeline, input, size, format, reps, out) = (
        args[0].as_str(),
        std::fs::read(&args[1]).unwrap(),
        args[2].parse::<u32>().unwrap(),
        parse_format(&args[3]),
        args[4].parse::<u32>().unwrap(),
        PathBuf::from(&args[5]),
    );
    let mut output = Vec::new();
    let started = Instant::now();
    match pipeline {
        "ours" => {
            let spec = Spec {
                w: Some(size),
                h: Some(size),
                fit: Fit::Contain,
                q: None,
                output: Output::Fixed(format),
            };
            for _ in 0..reps {
                output = render::render(&input, &spec, 100_000_000).unwrap().bytes;
            }
        }
        _ => {
            let app = libvips::VipsApp::new("variants-eval", false).unwrap();
            app.concurrency_set(1);
            app.cache_set_max(0);
            for _ in 0..reps {
                output = vips_render(&input, size, format)
                    .unwrap_or_else(|e| panic!("{e}: {}", app.error_buffer().unwrap_or("")));
            }
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(reps);
    std::fs::write(out, &output).unwrap();
    println!("{ms:.2} {}", vm_hwm_kib());
}

fn vips_render(input: &[u8], size: u32, format: Format) -> libvips::Result<Vec<u8>> {
    // Without options: the crate's *_with_opts send every option, some of which (such as
    // `input-profile`) libvips 8.14 does not have. Unset, the height is the width: the
    // same box as ours and vipsthumbnail's (the sources are all larger than it).
    let img = libvips::ops::thumbnail_buffer(input, size as i32)?;
    // The same qualities as ours (80, AVIF 60), set through the suffix.
    let suffix = match format {
        Format::Jpeg => ".jpg[Q=80]",
        Format::Png => ".png",
        Format::Webp => ".webp[Q=80]",
        Format::Avif => ".heif[Q=60,compression=av1]",
    };
    img.image_write_to_buffer(suffix)
}

fn parse_format(s: &str) -> Format {
    match s {
        "jpg" => Format::Jpeg,
        "png" => Format::Png,
        "webp" => Format::Webp,
        _ => Format::Avif,
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Case {
    ms: f64,
    /// CPU time per render (the child's user + system, process start included).
    cpu: f64,
    rss_kib: u64,
    bytes: usize,
    ssim: f64,
}

fn compare(quick: bool) {
    let _vips = libvips::VipsApp::new("variants-eval", false).unwrap();
    let dir = std::env::temp_dir().join(format!("variants-eval-{}", std::process::id()));
    let exe = std::env::current_exe().unwrap();
    let idle: u64 = String::from_utf8(Command::new(&exe).arg("idle").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    println!("idle process VmHWM: {idle} KiB (subtracted below)\n");
    println!(
        "| source | size | format | ours ms (CPU) | libvips ms (CPU) | vipsthumbnail ms (CPU) | ours / vipsthumbnail | ours MiB | libvips MiB | vipsthumbnail MiB | ours KB (SSIM) | libvips KB (SSIM) | vipsthumbnail KB (SSIM) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for (name, input) in inputs(&dir) {
        let source = image::open(&input).unwrap().into_luma8();
        for size in SIZES {
            for format in FORMATS {
                let reps = if quick {
                    1
                } else if format == Format::Avif || size == 1024 {
                    3
                } else {
                    8
                };
                let mut cases = Vec::new();
                for pipeline in ["ours", "libvips", "vipsthumbnail"] {
                    let out = dir.join(format!("{pipeline}-{size}.{}", ext(format)));
                    let (ms, cpu, rss) = if pipeline == "vipsthumbnail" {
                        vipsthumbnail(&input, size, format, reps, &out)
                    } else {
                        let (line, cpu, _) = run_measured(
                            Command::new(&exe)
                                .args(["one", pipeline])
                                .arg(&input)
                                .args([size.to_string(), ext(format).to_string(), reps.to_string()])
                                .arg(&out),
                        );
                        let mut parts = line.split_whitespace();
                        let ms: f64 = parts.next().unwrap().parse().unwrap();
                        let rss: u64 = parts.next().unwrap().parse().unwrap();
                        (ms, cpu / f64::from(reps), rss.saturating_sub(idle))
                    };
                    let bytes = std::fs::read(&out).unwrap();
                    let ssim = ssim_against(&source, &decode_luma(&bytes, format));
                    cases.push(Case {
                        ms,
                        cpu,
                        rss_kib: rss,
                        bytes: bytes.len(),
                        ssim,
                    });
                }
                let ratio = cases[0].ms / cases[2].ms;
                ratios.push((format!("{name} {size} {}", ext(format)), ratio, cases[0].ms / cases[1].ms));
                let mib = |k: u64| k as f64 / 1024.0;
                println!(
                    "| {name} | {size} | {} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} ({:.3}) | {:.1} ({:.3}) | {:.1} ({:.3}) |",
                    ext(format),
                    cases[0].ms,
                    cases[0].cpu,
                    cases[1].ms,
                    cases[1].cpu,
                    cases[2].ms,
                    cases[2].cpu,
                    ratio,
                    mib(cases[0].rss_kib),
                    mib(cases[1].rss_kib),
                    mib(cases[2].rss_kib),
                    cases[0].bytes as f64 / 1000.0,
                    cases[0].ssim,
                    cases[1].bytes as f64 / 1000.0,
                    cases[1].ssim,
                    cases[2].bytes as f64 / 1000.0,
                    cases[2].ssim,
                );
            }
        }
    }
    let geo = |f: &dyn Fn(&(String, f64, f64)) -> f64| {
        (ratios.iter().map(|r| f(r).ln()).sum::<f64>() / ratios.len() as f64).exp()
    };
    println!(
        "\ngeometric mean of ours / vipsthumbnail: {:.2}; of ours / libvips (1 thread): {:.2}",
        geo(&|r| r.1),
        geo(&|r| r.2)
    );
    let slower: Vec<&String> = ratios.iter().filter(|r| r.1 > 1.0).map(|r| &r.0).collect();
    println!("cases where ours is slower than vipsthumbnail: {slower:?}");
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs `cmd` to its end; its stdout, its CPU time (user + system) and its peak RSS (KiB).
fn run_measured(cmd: &mut Command) -> (String, f64, u64) {
    use std::io::Read;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // Reaped here (not by Child::wait) to read the child's own resource usage.
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert!(r == pid && status == 0, "{cmd:?} failed");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_ms = (secs(usage.ru_utime) + secs(usage.ru_stime)) * 1000.0;
    (out, cpu_ms, usage.ru_maxrss as u64)
}

/// `reps` runs of Debian's vipsthumbnail; per run (process included): wall and CPU time,
/// and the largest run's peak RSS.
fn vipsthumbnail(
    input: &Path,
    size: u32,
    format: Format,
    reps: u32,
    out: &Path,
) -> (f64, f64, u64) {
    let target = match format {
        Format::Jpeg => format!("{}[Q=80]", out.display()),
        Format::Png => out.display().to_string(),
        Format::Webp => format!("{}[Q=80]", out.display()),
        // vipsthumbnail picks the saver by suffix; .avif is heifsave with AV1.
        Format::Avif => format!("{}[Q=60,compression=av1]", out.display()),
    };
    let (mut peak, mut cpu) = (0, 0.0);
    let started = Instant::now();
    for _ in 0..reps {
        let (_, ms, rss) = run_measured(
            Command::new("vipsthumbnail")
                .arg(input)
                .args(["--size", &format!("{size}x{size}>")])
                .arg("-o")
                .arg(&target),
        );
        cpu += ms;
        peak = peak.max(rss);
    }
    let wall = started.elapsed().as_secs_f64() * 1000.0 / f64::from(reps);
    (wall, cpu / f64::from(reps), peak)
}

fn decode_luma(bytes: &[u8], format: Format) -> image::GrayImage {
    if format != Format::Avif {
        return image::load_from_memory(bytes).unwrap().into_luma8();
    }
    // No AVIF decoder in image without dav1d: libvips (started once by `compare`) reads
    // it and hands over a PNG.
    let img = libvips::VipsImage::new_from_buffer(bytes, "").unwrap();
    let png = img.image_write_to_buffer(".png").unwrap();
    image::load_from_memory(&png).unwrap().into_luma8()
}

/// `source` reduced to `w`×`h` by exact area averaging.
fn area_reduce(source: &image::GrayImage, w: u32, h: u32) -> Vec<f64> {
    let (sw, sh) = (source.width() as f64, source.height() as f64);
    let mut out = vec![0.0; (w * h) as usize];
    for y in 0..h {
        let (y0, y1) = (y as f64 * sh / h as f64, (y + 1) as f64 * sh / h as f64);
        for x in 0..w {
            let (x0, x1) = (x as f64 * sw / w as f64, (x + 1) as f64 * sw / w as f64);
            let (mut sum, mut area) = (0.0, 0.0);
            for sy in y0.floor() as u32..(y1.ceil() as u32).min(source.height()) {
                let fy = (y1.min(sy as f64 + 1.0) - y0.max(sy as f64)).max(0.0);
                for sx in x0.floor() as u32..(x1.ceil() as u32).min(source.width()) {
                    let fx = (x1.min(sx as f64 + 1.0) - x0.max(sx as f64)).max(0.0);
                    sum += source.get_pixel(sx, sy)[0] as f64 * fx * fy;
                    area += fx * fy;
                }
            }
            out[(y * w + x) as usize] = sum / area;
        }
    }
    out
}

/// Mean SSIM over 8×8 windows (stride 4) of `output` against `source` reduced to its size.
fn ssim_against(source: &image::GrayImage, output: &image::GrayImage) -> f64 {
    let (w, h) = (output.width(), output.height());
    let reference = area_reduce(source, w, h);
    let at = |v: &[f64], x: u32, y: u32| v[(y * w + x) as usize];
    let out: Vec<f64> = output.pixels().map(|p| p[0] as f64).collect();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut total, mut n) = (0.0, 0.0);
    for y in (0..h.saturating_sub(8)).step_by(4) {
        for x in (0..w.saturating_sub(8)).step_by(4) {
            let (mut ma, mut mb, mut va, mut vb, mut cov) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..8 {
                for dx in 0..8 {
                    ma += at(&reference, x + dx, y + dy);
                    mb += at(&out, x + dx, y + dy);
                }
            }
            ma /= 64.0;
            mb /= 64.0;
            for dy in 0..8 {
                for dx in 0..8 {
                    let (a, b) = (at(&reference, x + dx, y + dy) - ma, at(&out, x + dx, y + dy) - mb);
                    va += a * a;
                    vb += b * b;
                    cov += a * b;
                }
            }
            let (va, vb, cov) = (va / 63.0, vb / 63.0, cov / 63.0);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            n += 1.0;
        }
    }
    total / n
}
