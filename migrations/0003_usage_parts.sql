-- The parts of a cost the provider bills beyond plain tokens (issue 12):
-- one-hour cache writes, audio, server-tool calls by kind, the service
-- tier the upstream reported, and whether long-context prices applied.
ALTER TABLE usage_rows ADD COLUMN cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_rows ADD COLUMN audio_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_rows ADD COLUMN audio_output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_rows ADD COLUMN web_search_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_rows ADD COLUMN web_fetch_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_rows ADD COLUMN code_execution_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_rows ADD COLUMN service_tier TEXT;
ALTER TABLE usage_rows ADD COLUMN long_context BIGINT NOT NULL DEFAULT 0;
