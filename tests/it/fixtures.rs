//! Every shared sample meters to the cost its README states, however the
//! bytes are split: whole, one byte at a time, at every CR/LF boundary
//! (including between a CR and its LF), and inside multi-byte characters.

use tollgate::meter::{usage_from_json, Protocol, StreamEnd, StreamMeter, Usage};
use tollgate::money::{Money, PricePerMtok};
use tollgate::pricing::ModelPrice;

use crate::helpers::fixture;

fn price(input: &str, output: &str, cached: &str, write: Option<&str>) -> ModelPrice {
    ModelPrice::simple(tollgate::pricing::Rates {
        cached_input: Some(PricePerMtok::parse(cached).unwrap()),
        cache_write: write.map(|w| PricePerMtok::parse(w).unwrap()),
        ..tollgate::pricing::Rates::new(
            PricePerMtok::parse(input).unwrap(),
            PricePerMtok::parse(output).unwrap(),
        )
    })
}

fn usd(text: &str) -> Money {
    Money::parse_usd(text).unwrap()
}

/// Every way of cutting `body` the harness guidance asks for.
fn splits(body: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut ways: Vec<Vec<&[u8]>> = vec![vec![body]];
    ways.push(body.chunks(1).collect());
    let cut_at = |cuts: Vec<usize>| {
        let mut pieces = Vec::new();
        let mut last = 0;
        for cut in cuts {
            if cut > last && cut < body.len() {
                pieces.push(&body[last..cut]);
                last = cut;
            }
        }
        pieces.push(&body[last..]);
        pieces
    };
    let line_cuts: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\r' || **b == b'\n')
        .flat_map(|(i, _)| [i, i + 1])
        .collect();
    ways.push(cut_at(line_cuts));
    let utf8_cuts: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, b)| (**b & 0b1100_0000) == 0b1000_0000)
        .map(|(i, _)| i)
        .collect();
    ways.push(cut_at(utf8_cuts));
    ways
}

fn meter_all_ways(name: &str, protocol: Protocol) -> (Option<Usage>, StreamEnd) {
    let body = fixture(name);
    let mut answers = Vec::new();
    for pieces in splits(&body) {
        let mut meter = StreamMeter::new(protocol, false);
        for piece in pieces {
            meter.feed(piece, |_, _| {});
        }
        meter.finish();
        answers.push((meter.reported_usage(), meter.end()));
    }
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0], "{name}: splitting changed the answer");
    }
    answers.remove(0)
}

#[test]
fn openai_chat_stream_with_usage() {
    let (usage, end) = meter_all_ways("openai_chat_stream_usage.sse", Protocol::OpenAiChat);
    let usage = usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (19, 10));
    assert_eq!(end, StreamEnd::Completed);
    let gpt4o_mini = price("0.15", "0.60", "0.075", None);
    assert_eq!(gpt4o_mini.cost(&usage), usd("0.00000885"));
}

#[test]
fn openai_chat_stream_edge_cases() {
    let (usage, end) = meter_all_ways("openai_chat_stream_edge_cases.sse", Protocol::OpenAiChat);
    let usage = usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (42, 9));
    assert_eq!(end, StreamEnd::Completed);
    let gpt4o_mini = price("0.15", "0.60", "0.075", None);
    assert_eq!(gpt4o_mini.cost(&usage), usd("0.0000117"));
}

#[test]
fn openai_chat_stream_without_usage_is_completed_but_unreported() {
    let (usage, end) = meter_all_ways("openai_chat_stream_no_usage.sse", Protocol::OpenAiChat);
    assert_eq!(usage, None);
    assert_eq!(end, StreamEnd::Completed);
}

#[test]
fn openai_midstream_error_is_seen() {
    let (usage, end) = meter_all_ways(
        "openai_chat_stream_midstream_error.sse",
        Protocol::OpenAiChat,
    );
    assert_eq!(usage, None);
    assert_eq!(end, StreamEnd::Errored);
}

#[test]
fn responses_stream_usage_comes_from_the_terminal_event() {
    let (usage, end) = meter_all_ways(
        "openai_responses_stream_completed.sse",
        Protocol::OpenAiResponses,
    );
    let usage = usage.unwrap();
    assert_eq!(
        (
            usage.input_tokens,
            usage.cached_tokens,
            usage.output_tokens,
            usage.reasoning_tokens
        ),
        (1200, 1024, 340, 256)
    );
    assert_eq!(end, StreamEnd::Completed);
    let gpt5_mini = price("0.25", "2.00", "0.025", None);
    assert_eq!(gpt5_mini.cost(&usage), usd("0.0007496"));
}

#[test]
fn anthropic_stream_takes_the_last_cumulative_usage() {
    let (usage, end) = meter_all_ways("anthropic_message_stream.sse", Protocol::Anthropic);
    let usage = usage.unwrap();
    assert_eq!(
        (
            usage.uncached_input(),
            usage.cached_tokens,
            usage.output_tokens
        ),
        (472, 1800, 15)
    );
    assert_eq!(end, StreamEnd::Completed);
    let haiku = price("1.00", "5.00", "0.10", Some("1.25"));
    assert_eq!(haiku.cost(&usage), usd("0.000727"));
}

#[test]
fn anthropic_stream_error_keeps_input_and_bills_partial_output() {
    let body = fixture("anthropic_message_stream_error.sse");
    let mut meter = StreamMeter::new(Protocol::Anthropic, false);
    meter.feed(&body, |_, _| {});
    meter.finish();
    assert_eq!(meter.end(), StreamEnd::Errored);
    let (usage, source) = meter.conclude(true, Some(1000), |_| 0);
    assert_eq!(usage.input_tokens, 2100);
    assert!(
        usage.output_tokens >= 1 && usage.output_tokens < 1000,
        "{usage:?}"
    );
    assert_eq!(source, tollgate::meter::UsageSource::Partial);
}

#[test]
fn gemini_compat_stream_takes_the_last_usage_with_thinking() {
    let (usage, _) = meter_all_ways(
        "gemini_openai_compat_stream_usage.sse",
        Protocol::OpenAiChat,
    );
    let usage = usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (1500, 491));
    let flash = price("0.30", "2.50", "0.03", None);
    assert_eq!(flash.cost(&usage), usd("0.0016775"));
}

#[test]
fn json_bodies_meter_exactly() {
    let gpt51 = price("1.25", "10.00", "0.125", None);
    let usage = usage_from_json(
        Protocol::OpenAiChat,
        &fixture("openai_chat_nonstream_cached_reasoning.json"),
    )
    .unwrap();
    assert_eq!(usage.reasoning_tokens, 192);
    assert_eq!(gpt51.cost(&usage), usd("0.0033475"));

    let sonnet = price("3.00", "15.00", "0.30", Some("3.75"));
    let usage = usage_from_json(
        Protocol::Anthropic,
        &fixture("anthropic_message_nonstream.json"),
    )
    .unwrap();
    assert_eq!(sonnet.cost(&usage), usd("0.01371225"));

    let flash = price("0.30", "2.50", "0.03", None);
    let usage = usage_from_json(
        Protocol::OpenAiChat,
        &fixture("gemini_native_generatecontent_response.json"),
    )
    .unwrap();
    assert_eq!(flash.cost(&usage), usd("0.00167352"));

    let embedding = price("0.02", "0", "0.02", None);
    let usage = usage_from_json(
        Protocol::OpenAiChat,
        &fixture("openai_embeddings_response.json"),
    )
    .unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (16, 0));
    assert_eq!(embedding.cost(&usage), usd("0.00000032"));

    let usage = usage_from_json(
        Protocol::OpenAiChat,
        &fixture("openai_completions_legacy_response.json"),
    )
    .unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (5, 7));
}

#[test]
fn error_bodies_carry_no_usage() {
    for name in [
        "gemini_openai_compat_error.json",
        "errors/openai_429_insufficient_quota.json",
        "errors/anthropic_529_overloaded.json",
    ] {
        assert_eq!(
            usage_from_json(Protocol::OpenAiChat, &fixture(name)),
            None,
            "{name}"
        );
    }
}
