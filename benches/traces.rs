//! Eviction and admission on traces, not by habit: replays synthetic but realistic image
//! traces against cache policies at three sizes and reports object and byte hit ratios,
//! with Belady's MIN (evict the object whose next use is furthest away; never admit one
//! that is not used again) as the bound.
//!
//! Traces (2 M requests each, seeded, so every run replays the same ones):
//! - `zipf-0.7`, `zipf-0.9`, `zipf-1.0`: popularity Zipf(α) over 1 M objects;
//! - `labeler`: a labeling team's sequential pass over a 400 k-image dataset, 20% of
//!   requests being reviewers revisiting one of the last 20 k images;
//! - `mixed`: the two interleaved (a dataset browser next to a labeling pass).
//!
//! Object sizes: log-normal around 600 KB, clamped to 0.2-5 MB, fixed per object.
//! Policies: LRU (both tiers' policy), moka's TinyLFU, S3-FIFO, W-TinyLFU with a fixed 1%
//! window and with a window that climbs the hit-ratio hill; the online bound (a policy
//! told the generator's probabilities, not the future: `oracle`), and MIN.
//!
//! `cargo bench --bench traces` (about three minutes). Not run by CI.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

const REQUESTS: usize = 2_000_000;

/// Object size from its id: log-normal (median ~600 KB, σ 0.8), 0.2-5 MB.
fn size_of(id: u64) -> u64 {
    let mut r = fastrand::Rng::with_seed(id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Box-Muller.
    let (u1, u2) = (r.f64().max(1e-12), r.f64());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let bytes = (600_000f64.ln() + 0.8 * z).exp();
    bytes.clamp(200_000.0, 5_000_000.0) as u64
}

fn zipf(alpha: f64, objects: usize, seed: u64) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(objects);
    let mut sum = 0.0;
    for k in 1..=objects {
        sum += 1.0 / (k as f64).powf(alpha);
        cdf.push(sum);
    }
    let mut r = fastrand::Rng::with_seed(seed);
    (0..REQUESTS)
        .map(|_| {
            let x = r.f64() * sum;
            cdf.partition_point(|&c| c < x) as u64
        })
        .collect()
}

/// A sequential pass over `dataset` images (ids offset so they differ from zipf's), with
/// reviewers revisiting one of the last `window` images for 20% of requests.
fn labeler(dataset: u64, window: u64, seed: u64) -> Vec<u64> {
    let mut r = fastrand::Rng::with_seed(seed);
    let mut next = 0u64;
    (0..REQUESTS)
        .map(|_| {
            if next > 0 && r.f64() < 0.2 {
                let back = r.u64(0..window.min(next));
                LABELER_BASE + (next - 1 - back) % dataset
            } else {
                next += 1;
                LABELER_BASE + (next - 1) % dataset
            }
        })
        .collect()
}

fn mixed(a: &[u64], b: &[u64], seed: u64) -> Vec<u64> {
    let mut r = fastrand::Rng::with_seed(seed);
    let (mut i, mut j) = (0, 0);
    (0..REQUESTS)
        .map(|_| {
            if r.bool() {
                i += 1;
                a[i - 1]
            } else {
                j += 1;
                b[j - 1]
            }
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Ratio {
    hits: u64,
    requests: u64,
    hit_bytes: u64,
    bytes: u64,
}

impl Ratio {
    fn record(&mut self, hit: bool, size: u64) {
        self.requests += 1;
        self.bytes += size;
        if hit {
            self.hits += 1;
            self.hit_bytes += size;
        }
    }
    fn objects(&self) -> f64 {
        self.hits as f64 / self.requests as f64
    }
    fn bytes(&self) -> f64 {
        self.hit_bytes as f64 / self.bytes as f64
    }
}

fn lru(trace: &[u64], capacity: u64) -> Ratio {
    let (mut ratio, mut used, mut tick) = (Ratio::default(), 0u64, 0u64);
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut order: BTreeMap<u64, u64> = BTreeMap::new();
    for &id in trace {
        let size = size_of(id);
        tick += 1;
        let hit = if let Some(t) = last.get_mut(&id) {
            order.remove(t);
            *t = tick;
            order.insert(tick, id);
            true
        } else {
            if size <= capacity {
                last.insert(id, tick);
                order.insert(tick, id);
                used += size;
                while used > capacity {
                    let (_, old) = order.pop_first().expect("something to evict");
                    last.remove(&old);
                    used -= size_of(old);
                }
            }
            false
        };
        ratio.record(hit, size);
    }
    ratio
}

fn tinylfu(trace: &[u64], capacity: u64) -> Ratio {
    let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::builder()
        .max_capacity(capacity / 1024)
        .weigher(|id: &u64, _| (size_of(*id) / 1024) as u32)
        .build();
    let mut ratio = Ratio::default();
    for (n, &id) in trace.iter().enumerate() {
        let hit = cache.get(&id).is_some();
        if !hit {
            cache.insert(id, ());
        }
        if n % 4096 == 0 {
            cache.run_pending_tasks();
        }
        ratio.record(hit, size_of(id));
    }
    ratio
}

/// S3-FIFO (Yang et al., SOSP'23): a small FIFO (10%) for new objects, a main FIFO, and a
/// ghost FIFO of ids recently evicted from the small one; 2-bit access counts.
fn s3fifo(trace: &[u64], capacity: u64) -> Ratio {
    s3fifo_with(trace, capacity, 10)
}

/// Hill climbing on the byte hit ratio (Caffeine's adaptive window): every `period`
/// requests a size moves by `step` (5% of the capacity at first) in the direction that
/// last raised the ratio, turning around with 9/10 of the step when it fell.
struct HillClimb {
    period: u64,
    hit_bytes: u64,
    bytes: u64,
    last_rate: Option<f64>,
    step: i64,
}

impl HillClimb {
    fn new(capacity: u64) -> HillClimb {
        HillClimb {
            period: (capacity / 600_000).max(1_000),
            hit_bytes: 0,
            bytes: 0,
            last_rate: None,
            step: (capacity / 20) as i64,
        }
    }

    fn record(&mut self, hit: bool, size: u64) {
        self.bytes += size;
        if hit {
            self.hit_bytes += size;
        }
    }

    /// At the end of a period (request `tick`), `size` moved by the step, within
    /// `low..=high`; `None` between ends of periods.
    fn adjust(&mut self, tick: u64, size: u64, low: u64, high: u64) -> Option<u64> {
        if tick == 0 || !tick.is_multiple_of(self.period) {
            return None;
        }
        let rate = self.hit_bytes as f64 / self.bytes.max(1) as f64;
        if self.last_rate.is_some_and(|last| rate < last) {
            self.step = -self.step * 9 / 10;
        }
        self.last_rate = Some(rate);
        (self.hit_bytes, self.bytes) = (0, 0);
        Some((size as i64 + self.step).clamp(low as i64, high as i64) as u64)
    }
}

/// S3-FIFO with a small FIFO of `small_percent` of the capacity.
fn s3fifo_with(trace: &[u64], capacity: u64, small_percent: u64) -> Ratio {
    s3fifo_sized(trace, capacity, small_percent, false)
}

/// S3-FIFO whose small FIFO climbs the byte-hit-ratio hill, as the adaptive W-TinyLFU's
/// window does: from 10% of the capacity, every `capacity / 600 KB` requests it moves by
/// 5% of the capacity in the direction that last raised the ratio (9/10 of the step after
/// each turn), between 5% and 80%.
fn s3fifo_adaptive(trace: &[u64], capacity: u64) -> Ratio {
    s3fifo_sized(trace, capacity, 10, true)
}

fn s3fifo_sized(trace: &[u64], capacity: u64, small_percent: u64, adaptive: bool) -> Ratio {
    let mut small_cap = capacity * small_percent / 100;
    let mut main_cap = capacity - small_cap;
    let mut climb = HillClimb::new(capacity);
    let (mut small, mut main, mut ghost) = (VecDeque::new(), VecDeque::new(), VecDeque::new());
    let (mut small_used, mut main_used) = (0u64, 0u64);
    let mut freq: HashMap<u64, u8> = HashMap::new();
    let mut in_ghost: HashMap<u64, ()> = HashMap::new();
    let ghost_len = 100_000;
    let mut ratio = Ratio::default();
    for (tick, &id) in trace.iter().enumerate() {
        if adaptive
            && let Some(new) =
                climb.adjust(tick as u64, small_cap, capacity / 20, capacity * 8 / 10)
        {
            small_cap = new;
            main_cap = capacity - small_cap;
        }
        let size = size_of(id);
        let hit = freq.contains_key(&id);
        ratio.record(hit, size);
        climb.record(hit, size);
        if let Some(f) = freq.get_mut(&id) {
            *f = (*f + 1).min(3);
            continue;
        }
        if size > main_cap {
            continue;
        }
        if in_ghost.remove(&id).is_some() {
            main.push_back(id);
            main_used += size;
        } else {
            small.push_back(id);
            small_used += size;
        }
        freq.insert(id, 0);
        // Evict from small: promote objects used again, else to the ghost.
        while small_used > small_cap {
            let Some(old) = small.pop_front() else { break };
            let s = size_of(old);
            small_used -= s;
            if freq.get(&old).copied().unwrap_or(0) > 0 {
                freq.insert(old, 0);
                main.push_back(old);
                main_used += s;
            } else {
                freq.remove(&old);
                in_ghost.insert(old, ());
                ghost.push_back(old);
                if ghost.len() > ghost_len
                    && let Some(g) = ghost.pop_front()
                {
                    in_ghost.remove(&g);
                }
            }
        }
        while main_used > main_cap {
            let Some(old) = main.pop_front() else { break };
            let f = freq.get(&old).copied().unwrap_or(0);
            if f > 0 {
                freq.insert(old, f - 1);
                main.push_back(old);
            } else {
                freq.remove(&old);
                main_used -= size_of(old);
            }
        }
    }
    ratio
}

/// Belady's MIN with sizes: on a miss, admit the object only if it is used again, then
/// evict the objects whose next use is furthest away until it fits.
fn belady(trace: &[u64], capacity: u64) -> Ratio {
    const NEVER: usize = usize::MAX;
    let mut next = vec![NEVER; trace.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for i in (0..trace.len()).rev() {
        next[i] = seen.insert(trace[i], i).unwrap_or(NEVER);
    }
    let mut ratio = Ratio::default();
    let mut cached: HashMap<u64, usize> = HashMap::new(); // id → its next use
    let mut heap: BinaryHeap<(usize, u64)> = BinaryHeap::new(); // lazy: stale entries skipped
    let mut used = 0u64;
    for (i, &id) in trace.iter().enumerate() {
        let size = size_of(id);
        let hit = cached.contains_key(&id);
        ratio.record(hit, size);
        if hit {
            if next[i] == NEVER {
                cached.remove(&id);
                used -= size;
            } else {
                cached.insert(id, next[i]);
                heap.push((next[i], id));
            }
            continue;
        }
        if next[i] == NEVER || size > capacity {
            continue;
        }
        cached.insert(id, next[i]);
        heap.push((next[i], id));
        used += size;
        while used > capacity {
            let Some((when, victim)) = heap.pop() else {
                break;
            };
            if cached.get(&victim) == Some(&when) {
                cached.remove(&victim);
                used -= size_of(victim);
            }
        }
    }
    ratio
}

/// What the generator of a trace says of its requests: the share of them that are Zipf(α)
/// draws, and the share that are the labeler's.
#[derive(Clone, Copy)]
struct Model {
    zipf_share: f64,
    alpha: f64,
    labeler_share: f64,
}

const DATASET: u64 = 400_000;
const WINDOW: u64 = 20_000;
const LABELER_BASE: u64 = 10_000_000;

/// The online bound: a policy told the trace's generator (not its future). Each cached
/// object is worth its expected requests per request: a Zipf object `share × p(rank)`, a
/// labeler image `share × 0.2 / window` while it is among the last `window` images of
/// the pass, 0 after. For byte hit ratio that rate is the worth per byte, so it keeps the
/// highest rates that fit: it admits an object only if the bytes it evicts all have a
/// lower rate. On Zipf traffic this is the optimal online policy (A0, the independent
/// reference model); no policy that learns rates from the past can do better on average.
/// Its gap to MIN is what knowing the future is worth, which no online policy can close.
fn oracle(trace: &[u64], capacity: u64, model: Model) -> Ratio {
    use std::collections::BTreeSet;
    let norm: f64 = (1..=1_000_000u64)
        .map(|k| (k as f64).powf(-model.alpha))
        .sum();
    let in_window = model.labeler_share * 0.2 / WINDOW as f64;
    // Rates as ordered integers (their order is all that matters).
    let key = |rate: f64| (rate * 1e18) as u64;
    let mut by_rate: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut cached: HashMap<u64, u64> = HashMap::new(); // id → its rate key
    let mut window: VecDeque<(u64, u64)> = VecDeque::new(); // (pass position, id), cached labeler images
    let mut position: HashMap<u64, u64> = HashMap::new(); // labeler id → its newest pass position
    let mut passed = 0u64; // new images the labeler has asked for
    let mut used = 0u64;
    let mut ratio = Ratio::default();
    for &id in trace {
        let size = size_of(id);
        let labeler = id >= LABELER_BASE;
        if labeler && id == LABELER_BASE + passed % DATASET {
            position.insert(id, passed);
            passed += 1;
        }
        // Images that left the window are worth nothing now.
        while let Some(&(pos, old)) = window.front() {
            if passed - 1 - pos < WINDOW {
                break;
            }
            window.pop_front();
            if position.get(&old) == Some(&pos)
                && let Some(k) = cached.get_mut(&old)
                && *k != 0
            {
                by_rate.remove(&(*k, old));
                *k = 0;
                by_rate.insert((0, old));
            }
        }
        let hit = cached.contains_key(&id);
        ratio.record(hit, size);
        if hit || size > capacity {
            continue;
        }
        let rate = if labeler {
            in_window
        } else {
            model.zipf_share * ((id + 1) as f64).powf(-model.alpha) / norm
        };
        let k = key(rate);
        let mut freed = 0u64;
        let mut victims = Vec::new();
        for &(vk, v) in &by_rate {
            if used - freed + size <= capacity || vk >= k {
                break;
            }
            freed += size_of(v);
            victims.push((vk, v));
        }
        if used - freed + size > capacity {
            continue;
        }
        for v in victims {
            by_rate.remove(&v);
            cached.remove(&v.1);
        }
        used = used - freed + size;
        cached.insert(id, k);
        by_rate.insert((k, id));
        if labeler {
            window.push_back((position[&id], id));
        }
    }
    ratio
}

/// A recency list by bytes: ids in order of last use.
#[derive(Default)]
struct Lru {
    order: BTreeMap<u64, u64>,
    at: HashMap<u64, u64>,
    bytes: u64,
}

impl Lru {
    fn contains(&self, id: u64) -> bool {
        self.at.contains_key(&id)
    }
    fn push(&mut self, id: u64, tick: u64) {
        self.order.insert(tick, id);
        self.at.insert(id, tick);
        self.bytes += size_of(id);
    }
    fn touch(&mut self, id: u64, tick: u64) {
        if let Some(t) = self.at.insert(id, tick) {
            self.order.remove(&t);
        }
        self.order.insert(tick, id);
    }
    fn remove(&mut self, id: u64) {
        if let Some(t) = self.at.remove(&id) {
            self.order.remove(&t);
            self.bytes -= size_of(id);
        }
    }
    fn oldest(&self) -> Option<u64> {
        self.order.first_key_value().map(|(_, &id)| id)
    }
}

/// ARC (Megiddo and Modha, FAST'03), by bytes: T1 holds objects seen once recently, T2
/// objects seen again; B1 and B2 remember what each evicted, and a hit there moves the
/// target size of T1 (`p`) towards the list that would have kept it.
#[derive(Default)]
struct ArcLists {
    t1: Lru,
    t2: Lru,
    b1: Lru,
    b2: Lru,
    p: f64,
}

impl ArcLists {
    /// Evicts from T1 or T2, into its ghost list, until `size` more bytes fit.
    fn make_room(&mut self, size: u64, capacity: u64, from_b2: bool, tick: u64) {
        while self.t1.bytes + self.t2.bytes + size > capacity {
            let t1 = self.t1.bytes as f64;
            let t1_over = t1 > self.p || (from_b2 && t1 >= self.p);
            let (from, ghost) = if (self.t1.bytes > 0 && t1_over) || self.t2.bytes == 0 {
                (&mut self.t1, &mut self.b1)
            } else {
                (&mut self.t2, &mut self.b2)
            };
            let Some(old) = from.oldest() else { break };
            from.remove(old);
            ghost.push(old, tick);
        }
    }
}

fn arc(trace: &[u64], capacity: u64) -> Ratio {
    let mut a = ArcLists::default();
    let c = capacity as f64;
    let mut ratio = Ratio::default();
    for (tick, &id) in trace.iter().enumerate() {
        let tick = tick as u64;
        let size = size_of(id);
        if a.t1.contains(id) || a.t2.contains(id) {
            a.t1.remove(id);
            a.t2.remove(id);
            a.t2.push(id, tick);
            ratio.record(true, size);
            continue;
        }
        ratio.record(false, size);
        if size > capacity {
            continue;
        }
        if a.b1.contains(id) {
            let delta = (a.b2.bytes as f64 / a.b1.bytes.max(1) as f64).max(1.0) * size as f64;
            a.p = (a.p + delta).min(c);
            a.b1.remove(id);
            a.make_room(size, capacity, false, tick);
            a.t2.push(id, tick);
        } else if a.b2.contains(id) {
            let delta = (a.b1.bytes as f64 / a.b2.bytes.max(1) as f64).max(1.0) * size as f64;
            a.p = (a.p - delta).max(0.0);
            a.b2.remove(id);
            a.make_room(size, capacity, true, tick);
            a.t2.push(id, tick);
        } else {
            // The ghost lists stay within the cache's size (T1 + B1) and twice it (all).
            while a.t1.bytes + a.b1.bytes + size > capacity {
                let Some(old) = a.b1.oldest() else { break };
                a.b1.remove(old);
            }
            while a.t1.bytes + a.t2.bytes + a.b1.bytes + a.b2.bytes + size > 2 * capacity {
                let Some(old) = a.b2.oldest() else { break };
                a.b2.remove(old);
            }
            a.make_room(size, capacity, false, tick);
            a.t1.push(id, tick);
        }
    }
    ratio
}

/// A count-min sketch of 4-bit counters, halved every `sample` increments (TinyLFU).
struct Sketch {
    rows: [Vec<u8>; 4],
    mask: u64,
    added: u64,
    sample: u64,
}

impl Sketch {
    fn new(width: usize, sample: u64) -> Sketch {
        let w = width.next_power_of_two();
        Sketch {
            rows: std::array::from_fn(|_| vec![0; w]),
            mask: w as u64 - 1,
            added: 0,
            sample,
        }
    }
    fn slot(&self, id: u64, row: usize) -> usize {
        let h = (id ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((h >> 17) & self.mask) as usize
    }
    fn add(&mut self, id: u64) {
        for r in 0..4 {
            let i = self.slot(id, r);
            self.rows[r][i] = (self.rows[r][i] + 1).min(15);
        }
        self.added += 1;
        if self.added >= self.sample {
            self.added /= 2;
            for row in &mut self.rows {
                for c in row.iter_mut() {
                    *c /= 2;
                }
            }
        }
    }
    fn estimate(&self, id: u64) -> u8 {
        (0..4)
            .map(|r| self.rows[r][self.slot(id, r)])
            .min()
            .unwrap_or(0)
    }
}

/// W-TinyLFU (Caffeine's design): a 1% window LRU in front of a segmented LRU (20%
/// probation, 80% protected); an object leaving the window enters the main space only if
/// the sketch says it is used more often than the probation victim it would replace.
fn wtinylfu(trace: &[u64], capacity: u64) -> Ratio {
    wtinylfu_with(trace, capacity, false)
}

/// W-TinyLFU whose window size climbs the hit-ratio hill, as Caffeine's does: every
/// period the window moves by a step (5% of the capacity, then smaller) in the direction
/// that last raised the hit ratio, from 0% up to 80% of the capacity.
fn wtinylfu_adaptive(trace: &[u64], capacity: u64) -> Ratio {
    wtinylfu_with(trace, capacity, true)
}

fn wtinylfu_with(trace: &[u64], capacity: u64, adaptive: bool) -> Ratio {
    let mut window_cap = capacity / 100;
    let mut main_cap = capacity - window_cap;
    let mut protected_cap = main_cap * 8 / 10;
    let mut climb = HillClimb::new(capacity);
    let entries = (capacity / 600_000).max(16);
    let mut sketch = Sketch::new(entries as usize * 4, entries * 10);
    let (mut window, mut probation, mut protected) =
        (Lru::default(), Lru::default(), Lru::default());
    let mut ratio = Ratio::default();
    for (tick, &id) in trace.iter().enumerate() {
        let tick = tick as u64;
        // Climbs the byte hit ratio, the measure.
        if adaptive && let Some(new) = climb.adjust(tick, window_cap, 0, capacity * 8 / 10) {
            window_cap = new;
            main_cap = capacity - window_cap;
            protected_cap = main_cap * 8 / 10;
            // The new sizes hold at once: the oldest of each space leave.
            while window.bytes > window_cap {
                let Some(old) = window.oldest() else { break };
                window.remove(old);
            }
            while probation.bytes + protected.bytes > main_cap {
                let Some(old) = probation.oldest().or_else(|| protected.oldest()) else {
                    break;
                };
                probation.remove(old);
                protected.remove(old);
            }
        }
        let size = size_of(id);
        sketch.add(id);
        let hit = window.contains(id) || protected.contains(id) || probation.contains(id);
        ratio.record(hit, size);
        climb.record(hit, size);
        if window.contains(id) {
            window.touch(id, tick);
            continue;
        }
        if protected.contains(id) {
            protected.touch(id, tick);
            continue;
        }
        if probation.contains(id) {
            probation.remove(id);
            protected.push(id, tick);
            while protected.bytes > protected_cap {
                let Some(old) = protected.oldest() else { break };
                protected.remove(old);
                probation.push(old, tick);
            }
            continue;
        }
        if size > main_cap {
            continue;
        }
        window.push(id, tick);
        while window.bytes > window_cap {
            let Some(candidate) = window.oldest() else {
                break;
            };
            window.remove(candidate);
            let c_size = size_of(candidate);
            // Room in the main space: admitted without a contest.
            let mut admit = true;
            while probation.bytes + protected.bytes + c_size > main_cap {
                let victim = probation.oldest().or_else(|| protected.oldest());
                let Some(victim) = victim else { break };
                if sketch.estimate(candidate) > sketch.estimate(victim) {
                    probation.remove(victim);
                    protected.remove(victim);
                } else {
                    admit = false;
                    break;
                }
            }
            if admit {
                probation.push(candidate, tick);
            }
        }
    }
    ratio
}

fn distinct_bytes(trace: &[u64]) -> u64 {
    let mut ids: Vec<u64> = trace.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().map(|&id| size_of(id)).sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if std::env::args().any(|a| a == "sweep") {
        return sweep();
    }
    let z7 = zipf(0.7, 1_000_000, 7);
    let z9 = zipf(0.9, 1_000_000, 9);
    let z10 = zipf(1.0, 1_000_000, 10);
    let lab = labeler(DATASET, WINDOW, 11);
    let mix = mixed(&z9, &lab, 12);
    let zipf_model = |alpha| Model {
        zipf_share: 1.0,
        alpha,
        labeler_share: 0.0,
    };
    let traces: [(&str, &Vec<u64>, Model); 5] = [
        ("zipf-0.7", &z7, zipf_model(0.7)),
        ("zipf-0.9", &z9, zipf_model(0.9)),
        ("zipf-1.0", &z10, zipf_model(1.0)),
        (
            "labeler",
            &lab,
            Model {
                zipf_share: 0.0,
                alpha: 1.0,
                labeler_share: 1.0,
            },
        ),
        (
            "mixed",
            &mix,
            Model {
                zipf_share: 0.5,
                alpha: 0.9,
                labeler_share: 0.5,
            },
        ),
    ];
    println!(
        "| trace | cache (of distinct bytes) | LRU obj / byte | TinyLFU (moka) obj / byte | S3-FIFO obj / byte | W-TinyLFU obj / byte | W-TinyLFU adaptive obj / byte | online bound obj / byte | MIN obj / byte | best / MIN (bytes) | online bound / MIN (bytes) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, trace, model) in traces {
        let total = distinct_bytes(trace);
        for share in [0.01, 0.05, 0.10] {
            let cap = (total as f64 * share) as u64;
            let results = [
                lru(trace, cap),
                tinylfu(trace, cap),
                s3fifo(trace, cap),
                wtinylfu(trace, cap),
                wtinylfu_adaptive(trace, cap),
                oracle(trace, cap, model),
                belady(trace, cap),
            ];
            let best = results[..5].iter().map(|r| r.bytes()).fold(0.0, f64::max);
            let cell = |r: &Ratio| format!("{:.3} / {:.3}", r.objects(), r.bytes());
            println!(
                "| {name} | {:.0}% ({} GB) | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
                share * 100.0,
                cap / 1_000_000_000,
                cell(&results[0]),
                cell(&results[1]),
                cell(&results[2]),
                cell(&results[3]),
                cell(&results[4]),
                cell(&results[5]),
                cell(&results[6]),
                best / results[6].bytes().max(1e-9),
                results[5].bytes() / results[6].bytes().max(1e-9)
            );
        }
    }
}

/// `-- sweep`: ARC and S3-FIFO with small queues of 10-50% against LRU and MIN, byte hit
/// ratios, on the Zipf-0.9, labeler and mixed traces.
fn sweep() {
    let z9 = zipf(0.9, 1_000_000, 9);
    let lab = labeler(DATASET, WINDOW, 11);
    let mix = mixed(&z9, &lab, 12);
    let shares = [10, 20, 30, 40, 50];
    print!("| trace | cache | LRU | ARC |");
    for s in shares {
        print!(" S3-FIFO {s}% |");
    }
    println!(" S3-FIFO adaptive | MIN |");
    println!(
        "|---|---|---:|---:|{}---:|---:|",
        "---:|".repeat(shares.len())
    );
    for (name, trace) in [("zipf-0.9", &z9), ("labeler", &lab), ("mixed", &mix)] {
        let total = distinct_bytes(trace);
        for share in [0.01, 0.05, 0.10] {
            let cap = (total as f64 * share) as u64;
            print!(
                "| {name} | {:.0}% | {:.3} | {:.3} |",
                share * 100.0,
                lru(trace, cap).bytes(),
                arc(trace, cap).bytes()
            );
            for s in shares {
                print!(" {:.3} |", s3fifo_with(trace, cap, s).bytes());
            }
            print!(" {:.3} |", s3fifo_adaptive(trace, cap).bytes());
            println!(" {:.3} |", belady(trace, cap).bytes());
        }
    }
}
