"""Gemini- and Bedrock-native clients (google-genai, boto3) reading answers
served from the gateway's cache.

Usage: python native_cache.py BASE_URL KEY

Each SDK asks the same temperature-0 question three times: plain (the
provider answers and the cache keeps it), streamed and plain again (both
replayed from the cache, in the SDK's own shapes: Gemini's SSE events,
Bedrock's event-stream frames). Prints one JSON object with the texts,
finish reasons, usage and `x-tollgate-cache` header of each call; run by
tests/tests/sdk.rs.
"""

import json
import sys

from google import genai
from google.genai import types

import boto3_client  # this directory's: the bearer-token client set-up

BASE = sys.argv[1].rstrip("/")
KEY = sys.argv[2]
QUESTION = "Describe the colour of the sky on a clear day."


def cache_header(response):
    http = getattr(response, "sdk_http_response", None)
    headers = getattr(http, "headers", None) or {}
    return {k.lower(): v for k, v in headers.items()}.get("x-tollgate-cache")


def gemini():
    c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=BASE, timeout=30_000))
    config = types.GenerateContentConfig(temperature=0)
    model = "gemini-2.5-flash"

    def plain():
        r = c.models.generate_content(model=model, contents=QUESTION, config=config)
        return {"cache": cache_header(r), "text": r.text, "finish": r.candidates[0].finish_reason.value,
                "usage": {"prompt": r.usage_metadata.prompt_token_count,
                          "candidates": r.usage_metadata.candidates_token_count}}

    first = plain()
    chunks = list(c.models.generate_content_stream(model=model, contents=QUESTION, config=config))
    streamed = {"cache": cache_header(chunks[0]), "chunks": len(chunks),
                "text": "".join(ch.text or "" for ch in chunks),
                "finish": chunks[-1].candidates[0].finish_reason.value,
                "usage": {"prompt": chunks[-1].usage_metadata.prompt_token_count,
                          "candidates": chunks[-1].usage_metadata.candidates_token_count}}
    return {"first": first, "streamed": streamed, "again": plain()}


def bedrock():
    c = boto3_client.client(KEY)
    ask = {"modelId": "amazon.nova-pro-v1:0", "messages": [{"role": "user", "content": [{"text": QUESTION}]}],
           "inferenceConfig": {"temperature": 0}}

    def plain():
        r = c.converse(**ask)
        return {"cache": r["ResponseMetadata"]["HTTPHeaders"].get("x-tollgate-cache"),
                "text": "".join(b.get("text", "") for b in r["output"]["message"]["content"]),
                "finish": r["stopReason"], "usage": r["usage"]}

    first = plain()
    r = c.converse_stream(**ask)
    read = boto3_client.read_stream(r)
    streamed = {"cache": r["ResponseMetadata"]["HTTPHeaders"].get("x-tollgate-cache"), "text": read["text"],
                "finish": read["stop"], "usage": read["usage"], "events": read["events"]}
    return {"first": first, "streamed": streamed, "again": plain()}


if __name__ == "__main__":
    print(json.dumps({"gemini": gemini(), "bedrock": bedrock()}))
