// Drives Tollgate with the official Node SDKs (`openai`, `@anthropic-ai/sdk`).
// Reads TOLLGATE_BASE_URL (…/v1), TOLLGATE_KEY (a funded key) and
// TOLLGATE_BROKE_KEY (a key with no balance); prints one JSON line per call
// with the request id and what the SDK saw, for tests/it/sdk.rs to check
// against the ledger and the mock upstream.
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const base = process.env.TOLLGATE_BASE_URL;
const key = process.env.TOLLGATE_KEY;
const brokeKey = process.env.TOLLGATE_BROKE_KEY;
const root = base.replace(/\/v1$/, "");

const openai = new OpenAI({ baseURL: base, apiKey: key });
const anthropic = new Anthropic({ baseURL: root, apiKey: key });
const out = (line) => console.log(JSON.stringify(line));

// Chat, JSON.
{
  const { data, response } = await openai.chat.completions
    .create({ model: "gpt-5.1", messages: [{ role: "user", content: "total?" }], max_tokens: 500 })
    .withResponse();
  out({
    kind: "chat",
    request_id: response.headers.get("x-request-id"),
    prompt_tokens: data.usage.prompt_tokens,
    completion_tokens: data.usage.completion_tokens,
  });
}

// Chat, streamed: the usage chunk the gateway asked for stays hidden.
{
  const { data: stream, response } = await openai.chat.completions
    .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], stream: true })
    .withResponse();
  let text = "";
  let sawUsage = false;
  for await (const chunk of stream) {
    if (chunk.usage) sawUsage = true;
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  out({ kind: "chat_stream", request_id: response.headers.get("x-request-id"), text, saw_usage: sawUsage });
}

// Embeddings.
{
  const { data, response } = await openai.embeddings
    .create({ model: "text-embedding-3-small", input: ["a", "b"] })
    .withResponse();
  out({
    kind: "embeddings",
    request_id: response.headers.get("x-request-id"),
    vectors: data.data.length,
    prompt_tokens: data.usage.prompt_tokens,
  });
}

// Responses, streamed.
{
  const { data: stream, response } = await openai.responses
    .create({ model: "gpt-5.1", input: "total?", stream: true })
    .withResponse();
  let completed = null;
  for await (const event of stream) {
    if (event.type === "response.completed") completed = event.response;
  }
  out({
    kind: "responses_stream",
    request_id: response.headers.get("x-request-id"),
    input_tokens: completed?.usage?.input_tokens ?? null,
    output_tokens: completed?.usage?.output_tokens ?? null,
  });
}

// Messages, JSON and streamed.
{
  const { data, response } = await anthropic.messages
    .create({ model: "claude-sonnet-4-5", max_tokens: 1024, messages: [{ role: "user", content: "hi" }] })
    .withResponse();
  out({
    kind: "messages",
    request_id: response.headers.get("x-request-id"),
    input_tokens: data.usage.input_tokens,
    output_tokens: data.usage.output_tokens,
  });
}
{
  const stream = anthropic.messages.stream({
    model: "claude-sonnet-4-5",
    max_tokens: 1024,
    messages: [{ role: "user", content: "hi" }],
  });
  const message = await stream.finalMessage();
  out({
    kind: "messages_stream",
    output_tokens: message.usage.output_tokens,
    text: message.content.map((c) => c.text ?? "").join(""),
  });
}

// A 402 is final: the SDKs (which retry 408, 409, 429 and 5xx by default)
// must not send it again.
for (const [kind, call] of [
  ["openai_402", () => new OpenAI({ baseURL: base, apiKey: brokeKey }).chat.completions.create({ model: "gpt-5.1", messages: [{ role: "user", content: "hi" }] })],
  ["anthropic_402", () => new Anthropic({ baseURL: root, apiKey: brokeKey }).messages.create({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [{ role: "user", content: "hi" }] })],
]) {
  try {
    await call();
    out({ kind, status: 200 });
  } catch (error) {
    out({ kind, status: error.status ?? null, code: error.error?.error?.code ?? error.error?.code ?? null, type: error.error?.error?.type ?? null });
  }
}
