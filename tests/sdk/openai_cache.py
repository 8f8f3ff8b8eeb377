"""The official OpenAI Python SDK reading answers served from the gateway's cache.

Usage: python openai_cache.py BASE_URL

Streams the same temperature-0 question twice (the second answer is a replay
from the cache), then asks it once more without streaming. Prints one JSON
object with the texts, finish reasons and the `x-tollgate-cache` header of
each call; any unexpected exception ends the script with a non-zero exit.
Run by tests/tests/sdk.rs, which asserts on the output.
"""

import json
import sys

import openai

QUESTION = "Describe the colour of the sky on a clear day."


def streamed(client, include_usage):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        temperature=0,
        stream=True,
        stream_options={"include_usage": True} if include_usage else None,
        messages=[{"role": "user", "content": QUESTION}],
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in raw.parse():
        chunks += 1
        if chunk.usage is not None:
            usage = {"prompt": chunk.usage.prompt_tokens, "completion": chunk.usage.completion_tokens}
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return {"cache": raw.headers.get("x-tollgate-cache"), "text": text, "finish": finish, "usage": usage,
            "chunks": chunks}


def main():
    client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
    first = streamed(client, include_usage=False)
    second = streamed(client, include_usage=True)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": QUESTION}]
    )
    c = raw.parse()
    third = {"cache": raw.headers.get("x-tollgate-cache"), "text": c.choices[0].message.content,
             "finish": c.choices[0].finish_reason, "usage": {"prompt": c.usage.prompt_tokens,
                                                            "completion": c.usage.completion_tokens}}
    print(json.dumps({"first": first, "second": second, "third": third}))


if __name__ == "__main__":
    main()
