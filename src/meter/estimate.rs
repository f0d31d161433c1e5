//! Fallback estimates when usage is missing: the output tally and the
//! token counters (o200k tokenizer, or the tokenizer-free quick count).

use serde_json::Value;

/// Text and output seen so far, kept for the fallback estimate. Bounded: past
/// `TEXT_KEEP_BYTES` only the character count grows.
#[derive(Debug, Default)]
pub struct OutputTally {
    text: String,
    overflow_chars: u64,
}

const TEXT_KEEP_BYTES: usize = 64 * 1024;

impl OutputTally {
    pub fn push(&mut self, piece: &str) {
        if self.text.len() + piece.len() <= TEXT_KEEP_BYTES {
            self.text.push_str(piece);
        } else {
            self.overflow_chars += piece.chars().count() as u64;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.overflow_chars == 0
    }

    /// Tokens of the output seen, counted with the o200k tokenizer (overflow
    /// past the kept text at four characters a token).
    pub fn estimate_tokens(&self) -> u64 {
        count_tokens(&self.text) + self.overflow_chars.div_ceil(4)
    }

    /// Tokens of the output seen, by `quick_tokens` (no tokenizer).
    pub fn quick_tokens(&self) -> u64 {
        quick_tokens(&self.text) + self.overflow_chars.div_ceil(4)
    }
}

// === Estimates ===

/// Counts tokens with the o200k tokenizer (loaded on first use only: the
/// request path never needs it while upstreams report usage).
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// A tokenizer-free estimate for partial (already approximate) bills: four
/// ASCII bytes a token, one token per other character. On English prose it
/// is within a few percent of o200k; on CJK text it errs high. The o200k
/// tokenizer costs about 45 MB resident once loaded, so disconnects, which
/// are common, must not be what loads it.
pub fn quick_tokens(text: &str) -> u64 {
    let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
    let other = text.chars().filter(|c| !c.is_ascii()).count() as u64;
    ascii.div_ceil(4) + other
}

/// Estimates the input tokens of a request body: the text of its messages,
/// prompt, input, system and instructions, plus three tokens of framing per
/// message and three for the reply. `quick` counts by `quick_tokens`.
pub fn estimate_prompt_tokens(request: &Value, quick: bool) -> u64 {
    let mut text = String::new();
    let mut messages = 0u64;
    for field in [
        "messages",
        "prompt",
        "input",
        "system",
        "instructions",
        "tools",
    ] {
        if let Some(value) = request.get(field) {
            if field == "messages" {
                messages += value.as_array().map_or(0, |a| a.len() as u64);
            }
            collect_strings(value, &mut text);
        }
    }
    let counted = if quick {
        quick_tokens(&text)
    } else {
        count_tokens(&text)
    };
    counted + 3 * messages + 3
}

fn collect_strings(value: &Value, out: &mut String) {
    match value {
        Value::String(text) => {
            out.push_str(text);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| collect_strings(item, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_estimate_counts_ascii_by_four_and_others_by_one() {
        assert_eq!(quick_tokens(""), 0);
        assert_eq!(quick_tokens("abcd"), 1);
        assert_eq!(quick_tokens("abcde"), 2);
        assert_eq!(quick_tokens("日本語"), 3);
        let prose = "The quick brown fox jumps over the lazy dog, and then it rests for a while.";
        let exact = count_tokens(prose) as f64;
        let quick = quick_tokens(prose) as f64;
        assert!((quick - exact).abs() / exact < 0.35, "{quick} vs {exact}");
    }
}
