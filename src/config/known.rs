//! Built-in limits of known models: the context window and the most output
//! tokens one answer can have, used when a `[[models]]` entry leaves
//! `context_window` or `max_output_tokens` unset. Matched by the longest
//! prefix of the upstream model name (then of the client's name), after
//! any `provider/` path. Where a family's members differ, the entry holds
//! the largest, and where a provider raises a limit behind a request header
//! (Anthropic's 1M-token context and 128k-token output betas), the raised
//! one: the hold must never be below what the upstream may use.

/// One family's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub prefix: &'static str,
    pub context_window: u64,
    pub max_output_tokens: u64,
}

const fn known(prefix: &'static str, context_window: u64, max_output_tokens: u64) -> Known {
    Known {
        prefix,
        context_window,
        max_output_tokens,
    }
}

/// The table (README, "Request shapes and their holds", prints it).
pub const KNOWN: &[Known] = &[
    known("gpt-5-pro", 400_000, 272_000),
    // gpt-5.4 and later: 1.05M context; the ones before, 400k.
    known("gpt-5", 1_050_000, 128_000),
    known("gpt-5-", 400_000, 128_000),
    known("gpt-5.1", 400_000, 128_000),
    known("gpt-5.2", 400_000, 128_000),
    known("gpt-4.1", 1_047_576, 32_768),
    known("gpt-4o", 128_000, 16_384),
    known("chatgpt-4o", 128_000, 16_384),
    known("gpt-4", 128_000, 16_384),
    known("gpt-3.5-turbo", 16_385, 4_096),
    known("o1", 200_000, 100_000),
    known("o3", 200_000, 100_000),
    known("o4-mini", 200_000, 100_000),
    known("codex-mini", 200_000, 100_000),
    known("text-embedding-3", 8_192, 8_192),
    known("text-embedding-ada-002", 8_192, 8_192),
    known("claude-opus-4", 1_000_000, 128_000),
    known("claude-sonnet-4", 1_000_000, 64_000),
    known("claude-haiku-4", 200_000, 64_000),
    known("claude-3-7-sonnet", 200_000, 128_000),
    known("claude-3-5", 200_000, 8_192),
    known("claude-3", 200_000, 4_096),
    known("gemini-3", 1_048_576, 65_536),
    known("gemini-2.5", 1_048_576, 65_536),
    known("gemini-2.0", 1_048_576, 8_192),
    known("gemini-1.5", 2_097_152, 8_192),
    known("deepseek-chat", 128_000, 8_192),
    known("deepseek-reasoner", 128_000, 64_000),
];

/// The entry for a model name, by longest prefix.
pub fn lookup(model: &str) -> Option<&'static Known> {
    let name = model.rsplit('/').next().unwrap_or(model);
    KNOWN
        .iter()
        .filter(|k| name.starts_with(k.prefix))
        .max_by_key(|k| k.prefix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(lookup("gpt-5.1").unwrap().max_output_tokens, 128_000);
        assert_eq!(
            lookup("gpt-5-pro-2025-10-06").unwrap().max_output_tokens,
            272_000
        );
        assert_eq!(
            lookup("gpt-4o-mini-2024-07-18").unwrap().context_window,
            128_000
        );
        assert_eq!(lookup("gpt-4.1-mini").unwrap().context_window, 1_047_576);
        assert_eq!(lookup("openai/o3-mini").unwrap().max_output_tokens, 100_000);
        assert_eq!(
            lookup("models/gemini-2.5-flash").unwrap().max_output_tokens,
            65_536
        );
        assert_eq!(
            lookup("claude-3-7-sonnet-20250219")
                .unwrap()
                .max_output_tokens,
            128_000
        );
        assert!(lookup("llama-3.1-8b").is_none());
        assert_eq!(lookup("gpt-5.4").unwrap().context_window, 1_050_000);
        assert_eq!(lookup("gpt-5-mini").unwrap().context_window, 400_000);
        assert_eq!(lookup("gpt-5.1-codex").unwrap().context_window, 400_000);
    }
}
