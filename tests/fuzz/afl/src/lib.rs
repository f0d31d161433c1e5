//! The fuzz targets: each takes any bytes and must neither panic nor hang.

use tollgate::meter::{Protocol, StreamMeter};

const PROTOCOLS: [Protocol; 3] = [
    Protocol::OpenAiChat,
    Protocol::OpenAiResponses,
    Protocol::Anthropic,
];

fn price() -> tollgate::pricing::ModelPrice {
    let p = |t: &str| tollgate::money::PricePerMtok::parse(t).unwrap_or_default();
    let mut rates = tollgate::pricing::Rates::new(p("3"), p("15"));
    rates.cached_input = Some(p("0.3"));
    rates.cache_write = Some(p("3.75"));
    rates.cache_write_1h = Some(p("6"));
    rates.audio_input = Some(p("40"));
    rates.audio_output = Some(p("80"));
    tollgate::pricing::ModelPrice::simple(rates)
}

/// The stream meter, fed the input in pieces cut where its first byte says.
pub fn sse(input: &[u8]) {
    let price = price();
    let step = usize::from(input.first().copied().unwrap_or(7)).max(1);
    for protocol in PROTOCOLS {
        let mut meter = StreamMeter::new(protocol, step % 2 == 0);
        for piece in input.chunks(step) {
            meter.feed(piece, |_, _| {});
        }
        meter.finish();
        let (usage, _) = meter.conclude(step % 3 == 0, Some(1000), |_| 7);
        assert!(price.price(&usage).cost.nano() >= 0);
    }
}

/// Every usage reader, and the price of what it read.
pub fn usage(input: &[u8]) {
    let price = price();
    for protocol in PROTOCOLS {
        if let Some(usage) = tollgate::meter::usage_from_json(protocol, input) {
            assert!(price.price(&usage).cost.nano() >= 0);
        }
    }
}

/// The request scan, the hold's bound, and the splice of accepted bodies.
pub fn request(input: &[u8]) {
    let Ok(shape) = tollgate::bound::scan(input) else {
        return;
    };
    let limits = tollgate::bound::ModelLimits {
        context_window: Some(1_000_000),
        max_output_tokens: 128_000,
    };
    let _ = tollgate::bound::bound(&shape, input.len(), true, &limits, &price());
    if let Ok(Some(out)) = tollgate::providers::splice::splice(input, Some("up/x"), true) {
        assert!(tollgate::bound::scan(&out).is_ok());
    }
}

/// Config text, the billing header, money and prices.
pub fn text(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let _ = tollgate::config::Config::from_parts(&text, &[], |_| None);
    let _ = tollgate::domain::BillingChoice::parse(&text);
    let _ = tollgate::money::Money::parse_usd(&text);
    let _ = tollgate::money::PricePerMtok::parse(&text);
}
