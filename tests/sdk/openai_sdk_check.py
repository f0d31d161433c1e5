"""Drives Tollgate with the official `openai` Python SDK.

Reads TOLLGATE_BASE_URL and TOLLGATE_KEY; prints one JSON line per call with
the request id (from the `x-request-id` response header) and what the SDK
saw, for the Rust test to check against the ledger.
"""
import json
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["TOLLGATE_BASE_URL"], api_key=os.environ["TOLLGATE_KEY"])

raw = client.chat.completions.with_raw_response.create(
    model="mock-1",
    messages=[{"role": "user", "content": "Say hello to the SDK test."}],
    max_tokens=8,
)
completion = raw.parse()
print(json.dumps({
    "kind": "json",
    "request_id": raw.headers.get("x-request-id"),
    "text": completion.choices[0].message.content,
    "prompt_tokens": completion.usage.prompt_tokens,
    "completion_tokens": completion.usage.completion_tokens,
}))

raw = client.chat.completions.with_raw_response.create(
    model="mock-1",
    messages=[{"role": "user", "content": "Now stream it."}],
    max_tokens=6,
    stream=True,
)
text = ""
saw_usage = False
for chunk in raw.parse():
    if chunk.usage is not None:
        saw_usage = True
    for choice in chunk.choices:
        text += choice.delta.content or ""
print(json.dumps({
    "kind": "stream",
    "request_id": raw.headers.get("x-request-id"),
    "text": text,
    "saw_usage": saw_usage,
}))

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    print(json.dumps({"kind": "not_found", "status": 200}))
except openai.NotFoundError as error:
    print(json.dumps({"kind": "not_found", "status": error.status_code, "code": error.code}))

sys.stdout.flush()
