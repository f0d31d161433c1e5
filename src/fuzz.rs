//! Fuzzing of every parser on the front door (issue 14): the SSE framer
//! and stream meter, each usage reader, the request scan and the body
//! splice, the decoder, config text, the `x-tollgate-billing` header, money
//! and prices.
//!
//! Mutation-based and deterministic: seeds from `tests/fuzz/corpus/<target>`
//! (fixtures and hostile shapes) are mutated (bit flips, cuts, repeats,
//! splices between seeds, JSON tokens, deep nesting) by a seeded generator.
//! Every input must end without a panic and allocate at most
//! [`ALLOWED_GROWTH`] × its size + [`ALLOWED_FLOOR`] bytes at its peak
//! (counted per thread by the test binary's allocator). A failing input is
//! written to `target/fuzz-failures/` with its target's name.
//!
//! `.ci/run` runs `TOLLGATE_FUZZ_ITERS` (default 3,000) inputs per target;
//! a long run: `TOLLGATE_FUZZ_ITERS=2000000 TOLLGATE_FUZZ_SEED=$RANDOM
//! cargo test --release --lib fuzz`. (A coverage-guided fuzzer on the
//! stable toolchain, cargo-afl, is documented in `tests/fuzz/README.md`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

/// Peak allocation allowed per input: this many times its size…
pub const ALLOWED_GROWTH: usize = 16;
/// …plus this (fixed costs: parser buffers, config defaults, tables).
pub const ALLOWED_FLOOR: usize = 4 << 20;

/// Counts each thread's live and peak bytes.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn moved(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counting touches only const-initialised thread locals (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        moved(layout.size() as isize);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        moved(-(layout.size() as isize));
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        moved(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        moved(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns the most bytes it had allocated at once (on this
/// thread, above what was live before).
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as usize
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e999999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.0000001",
    b"\\u0000",
    b"\\ud800",
    b"\\",
    b"\"model\"",
    b"\"stream_options\"",
    b"\"include_usage\":true",
    b"\"usage\"",
    b"\"max_tokens\"",
    b"\"n\"",
    b"\"file_id\"",
    b"\"url\":\"http://x\"",
    b"data: ",
    b"data: [DONE]\n\n",
    b"event: message_delta\n",
    b"\n\n",
    b"\r\n",
    b"\r",
    b":\n",
    b"$serde_json::private::Number",
    b"\xff\xfe",
    b"\xe2\x82",
    b"team:",
    b"[[providers]]\n",
    b"[[models]]\n",
    b"=",
    b"\"\"\"",
    b"'",
    b".",
    b"e",
    b"E+",
    b"+",
];

/// One mutation of `input` (another seed may be spliced in).
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                out.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                out.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(256)).min(len);
                let piece = out[start..end].to_vec();
                let at = rng.below(len + 1);
                for _ in 0..1 + rng.below(8) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 => out.truncate(rng.below(len + 1)),
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(len + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            7 => {
                // Deep nesting.
                let depth = 1 + rng.below(4000);
                let open = if rng.below(2) == 0 { b'[' } else { b'{' };
                let at = rng.below(len + 1);
                out.splice(at..at, std::iter::repeat_n(open, depth));
            }
            _ => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
        }
    }
    out
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut seeds = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if let Ok(bytes) = std::fs::read(&path) {
                seeds.push(bytes);
            }
        }
    }
    assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
    seeds
}

fn iterations() -> usize {
    std::env::var("TOLLGATE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

fn seed() -> u64 {
    std::env::var("TOLLGATE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7011_6a7e)
}

/// Runs one target over its corpus and mutations of it.
fn fuzz(target: &str, run: impl Fn(&[u8], &mut Rng)) {
    fuzz_within(target, ALLOWED_FLOOR, run);
}

/// [`fuzz`] with another fixed allowance (a decoder may fill its output
/// limit from a small input: that limit is its bound).
fn fuzz_within(target: &str, floor: usize, run: impl Fn(&[u8], &mut Rng)) {
    // Tables loaded once per process (the tokenizer, ~35 MB) are not a
    // cost of any one input: loaded before anything is measured.
    let _ = crate::meter::count_tokens("warm up");
    let seeds = corpus(target);
    let mut rng = Rng(seed() ^ (target.len() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let total = iterations();
    let mut current = seeds[0].clone();
    for i in 0..seeds.len() + total {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else if rng.below(4) == 0 {
            let pick = rng.below(seeds.len());
            mutate(&mut rng, &seeds[pick], &seeds)
        } else {
            mutate(&mut rng, &current, &seeds)
        };
        let mut run_rng = Rng(rng.next() | 1);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            peak_of(|| run(&input, &mut run_rng))
        }));
        let allowed = input.len() * ALLOWED_GROWTH + floor;
        let failure = match outcome {
            Err(_) => Some("panicked".to_string()),
            Ok(peak) if peak > allowed => Some(format!(
                "allocated {peak} bytes at its peak for {} input bytes",
                input.len()
            )),
            Ok(_) => None,
        };
        if let Some(failure) = failure {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{target}-{i}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "fuzz {target}: input {i} {failure}; saved to {}",
                path.display()
            );
        }
        // Wander: keep a fraction of mutants as the next starting point,
        // so mutations compound; go back to a seed now and then.
        if input.len() < 1 << 20 && rng.below(3) == 0 {
            current = input;
        } else if rng.below(16) == 0 {
            current = seeds[rng.below(seeds.len())].clone();
        }
    }
}

/// Splits `input` at random points, as a network would.
fn pieces<'a>(input: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let most = if rng.below(4) == 0 { 3 } else { 512 };
        let n = 1 + rng.below(rest.len().min(most));
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

mod targets {
    use super::*;
    use crate::meter::{Protocol, StreamMeter};

    const PROTOCOLS: [Protocol; 3] = [
        Protocol::OpenAiChat,
        Protocol::OpenAiResponses,
        Protocol::Anthropic,
    ];

    #[test]
    fn fuzz_sse_framer() {
        fuzz("sse", |input, rng| {
            let mut parser = crate::meter::sse::SseParser::new(64 * 1024);
            let mut events = 0usize;
            for piece in pieces(input, rng) {
                parser.feed(piece, |event, _| {
                    events += 1;
                    let _ = event;
                });
            }
            parser.finish(|_| events += 1);
        });
    }

    #[test]
    fn fuzz_stream_meter() {
        let price = full_price();
        fuzz("sse", |input, rng| {
            for protocol in PROTOCOLS {
                let mut meter = StreamMeter::new(protocol, rng.below(2) == 0);
                for piece in pieces(input, rng) {
                    meter.feed(piece, |_, _| {});
                }
                meter.finish();
                let _ = meter.final_usage();
                let (usage, _) = meter.conclude(rng.below(2) == 0, Some(1000), |_| 7);
                assert!(price.price(&usage).cost.nano() >= 0, "a negative cost");
            }
        });
    }

    /// A price with every part set, so every part of a usage is priced.
    fn full_price() -> crate::pricing::ModelPrice {
        let p = |t: &str| crate::money::PricePerMtok::parse(t).unwrap();
        let mut rates = crate::pricing::Rates::new(p("3"), p("15"));
        rates.cached_input = Some(p("0.3"));
        rates.cache_write = Some(p("3.75"));
        rates.cache_write_1h = Some(p("6"));
        rates.audio_input = Some(p("40"));
        rates.audio_output = Some(p("80"));
        crate::pricing::ModelPrice::simple(rates)
    }

    #[test]
    fn fuzz_usage_readers() {
        let price = full_price();
        fuzz("usage", |input, _| {
            for protocol in PROTOCOLS {
                if let Some(usage) = crate::meter::usage_from_json(protocol, input) {
                    let priced = price.price(&usage);
                    assert!(priced.cost.nano() >= 0, "a negative cost");
                }
            }
        });
    }

    #[test]
    fn fuzz_request_scan_bound_and_splice() {
        let limits = crate::bound::ModelLimits {
            context_window: Some(1_000_000),
            max_output_tokens: 128_000,
        };
        let rates = crate::pricing::Rates::new(
            crate::money::PricePerMtok::parse("3").unwrap(),
            crate::money::PricePerMtok::parse("15").unwrap(),
        );
        let price = crate::pricing::ModelPrice::simple(rates);
        fuzz("request", |input, rng| {
            let Ok(shape) = crate::bound::scan(input) else {
                return;
            };
            let _ = crate::bound::bound(&shape, input.len(), true, &limits, &price);
            // The request path splices only bodies the scan accepted.
            let model = if rng.below(2) == 0 {
                Some("upstream/model-x")
            } else {
                None
            };
            let usage = rng.below(2) == 0;
            if let Ok(Some(out)) = crate::providers::splice::splice(input, model, usage) {
                // A spliced body is still JSON with the same top-level
                // shape: the scan reads it again.
                assert!(crate::bound::scan(&out).is_ok(), "splice broke the body");
            }
        });
    }

    #[test]
    fn fuzz_decoder() {
        use crate::meter::decode::{decode_all, Coding};
        // The decoder's output limit is 64 MiB (`meter/decode.rs`).
        fuzz_within("decode", ALLOWED_FLOOR + 3 * (64 << 20), |input, _| {
            for coding in ["gzip", "deflate", "br"] {
                if let Ok(Some(coding)) = Coding::of(Some(coding)) {
                    let _ = decode_all(coding, input);
                }
            }
        });
    }

    #[test]
    fn fuzz_config_text() {
        fuzz("config", |input, _| {
            let text = String::from_utf8_lossy(input);
            let _ = crate::config::Config::from_parts(&text, &[], |_| None);
        });
    }

    #[test]
    fn fuzz_headers_and_money() {
        fuzz("text", |input, _| {
            let text = String::from_utf8_lossy(input);
            let _ = crate::domain::BillingChoice::parse(&text);
            let _ = crate::money::Money::parse_usd(&text);
            let _ = crate::money::Money::parse_usd_non_negative(&text);
            let _ = crate::money::PricePerMtok::parse(&text);
            let _ = crate::domain::clean_label(&text, 256);
        });
    }
}
