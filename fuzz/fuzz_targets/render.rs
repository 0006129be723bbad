//! The variant decode path: any bytes, rendered to a small thumbnail, either render or
//! answer an error (422), never panic; a render's output is an image of at most the box.
#![no_main]
use bucketfront::{Spec, render};
use bucketfront::{Fit, Format, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the format and the fit, so every encoder is reached.
    let Some((&pick, source)) = data.split_first() else {
        return;
    };
    let format = [Format::Jpeg, Format::Png, Format::Webp, Format::Avif][usize::from(pick % 4)];
    let spec = Spec {
        w: Some(32),
        h: Some(32),
        fit: if pick & 4 == 0 { Fit::Contain } else { Fit::Cover },
        q: Some(50),
        output: if pick & 8 == 0 { Output::Fixed(format) } else { Output::LikeSource },
    };
    // A small pixel budget keeps each execution short (a real bomb is refused the same way).
    if let Ok(r) = render(source, &spec, 4_000_000) {
        assert!(r.width <= 32 && r.height <= 32, "{}x{}", r.width, r.height);
        assert!(!r.bytes.is_empty());
    }
});
