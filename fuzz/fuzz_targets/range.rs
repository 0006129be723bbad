//! `Range` headers: any value against any size gives a range inside the object, the whole
//! object, or unsatisfiable; never a panic or an out-of-bounds part.
#![no_main]
use bucketfront::{RangeAsk, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let value = String::from_utf8_lossy(&data[8..]);
    if let RangeAsk::Part { start, end } = parse_range(&value, size) {
        assert!(start <= end && end < size, "{value:?} {size} → {start}-{end}");
    }
});
