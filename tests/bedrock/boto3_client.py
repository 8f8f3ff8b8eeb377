"""The official AWS SDK for Python (boto3's bedrock-runtime client) against the
mock provider's Amazon Bedrock Runtime surface (tests/tests/bedrock_mock.rs).

Usage: boto3_client.py MOCK_URL. Prints one JSON object with what the SDK
parsed; the Rust test checks the values. SigV4 with static test credentials,
then a Bedrock API key (AWS_BEARER_TOKEN_BEDROCK).
"""

import base64
import json
import os
import sys

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

BASE = sys.argv[1].rstrip("/")
REGION = "us-east-1"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "top_song",
                "description": "The most popular song on a radio station.",
                "inputSchema": {"json": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}},
            }
        }
    ]
}

# Mock control headers for the next call (x-mock-status, ...).
EXTRA_HEADERS = {}


def add_headers(request, **_):
    for k, v in EXTRA_HEADERS.items():
        request.headers[k] = v


def make_client():
    client = boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=BASE,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=30, connect_timeout=5),
    )
    client.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
    return client


def usage(u):
    return {"input": u["inputTokens"], "output": u["outputTokens"], "total": u["totalTokens"]}


def converse(client, model=MODEL):
    r = client.converse(
        modelId=model,
        system=[{"text": "Be brief."}],
        messages=[{"role": "user", "content": [{"text": "Hello from boto3"}]}],
        inferenceConfig={"maxTokens": 512, "temperature": 0.5, "topP": 0.9},
    )
    msg = r["output"]["message"]
    return {
        "text": "".join(b.get("text", "") for b in msg["content"]),
        "role": msg["role"],
        "stop": r["stopReason"],
        "usage": usage(r["usage"]),
        "latency": r["metrics"]["latencyMs"],
        "request_id": r["ResponseMetadata"]["RequestId"],
    }


def converse_stream(client):
    r = client.converse_stream(
        modelId=MODEL,
        messages=[{"role": "user", "content": [{"text": "Stream me a reply"}]}],
    )
    kinds, text, stop, meta = [], "", None, None
    for event in r["stream"]:
        (kind, body), = event.items()
        kinds.append(kind)
        if kind == "contentBlockDelta":
            text += body["delta"].get("text", "")
        elif kind == "messageStop":
            stop = body["stopReason"]
        elif kind == "metadata":
            meta = body
    return {
        "events": kinds,
        "text": text,
        "stop": stop,
        "usage": usage(meta["usage"]),
        "latency": meta["metrics"]["latencyMs"],
    }


def tool_call(client):
    first = {"role": "user", "content": [{"text": "Use the tool for WZPZ"}]}
    r = client.converse(modelId=MODEL, messages=[first], toolConfig=TOOLS)
    call = next(b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b)
    # Streamed, the input arrives in pieces after a contentBlockStart.
    s = client.converse_stream(modelId=MODEL, messages=[first], toolConfig=TOOLS)
    start, pieces, stream_stop = None, [], None
    for event in s["stream"]:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]["start"]["toolUse"]
        elif "contentBlockDelta" in event and "toolUse" in event["contentBlockDelta"]["delta"]:
            pieces.append(event["contentBlockDelta"]["delta"]["toolUse"]["input"])
        elif "messageStop" in event:
            stream_stop = event["messageStop"]["stopReason"]
    # The result sent back: a text answer.
    answered = client.converse(
        modelId=MODEL,
        messages=[
            first,
            r["output"]["message"],
            {"role": "user", "content": [{"toolResult": {"toolUseId": call["toolUseId"], "content": [{"json": {"song": "Elemental Hotel"}}]}}]},
        ],
        toolConfig=TOOLS,
    )
    return {
        "stop": r["stopReason"],
        "name": call["name"],
        "input": call["input"],
        "id": call["toolUseId"],
        "stream_name": start["name"] if start else None,
        "stream_pieces": len(pieces),
        "stream_input": json.loads("".join(pieces)),
        "stream_stop": stream_stop,
        "answered_stop": answered["stopReason"],
        "answered_text": answered["output"]["message"]["content"][0]["text"],
    }


def invoke(client, model=MODEL):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hello Claude on Bedrock"}],
    }
    r = client.invoke_model(modelId=model, body=json.dumps(body), contentType="application/json", accept="application/json")
    msg = json.loads(r["body"].read())
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    s = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(body), contentType="application/json")
    chunks = [json.loads(e["chunk"]["bytes"]) for e in s["body"]]
    return {
        "content_type": r["contentType"],
        "text": msg["content"][0]["text"],
        "model": msg["model"],
        "stop": msg["stop_reason"],
        "input_tokens": msg["usage"]["input_tokens"],
        "header_input_tokens": int(headers["x-amzn-bedrock-input-token-count"]),
        "stream_content_type": s["contentType"],
        "stream_types": [c["type"] for c in chunks],
        "stream_text": "".join(c["delta"].get("text", "") for c in chunks if c["type"] == "content_block_delta"),
        "metrics": chunks[-1].get("amazon-bedrock-invocationMetrics"),
    }


def errors(client):
    out = {}
    EXTRA_HEADERS["x-mock-status"] = "429"
    try:
        client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}])
        out["throttling"] = None
    except client.exceptions.ThrottlingException as e:
        out["throttling"] = {"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"], "message": e.response["Error"]["Message"]}
    EXTRA_HEADERS.clear()
    try:
        client.converse(modelId=MODEL, messages=[{"role": "assistant", "content": [{"text": "x"}]}])
        out["validation"] = None
    except client.exceptions.ValidationException as e:
        out["validation"] = {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}
    EXTRA_HEADERS["x-mock-status"] = "403"
    try:
        client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}])
        out["access_denied"] = None
    except client.exceptions.AccessDeniedException as e:
        out["access_denied"] = {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}
    EXTRA_HEADERS.clear()
    # An exception frame in the middle of a stream.
    EXTRA_HEADERS["x-mock-bedrock-stream-error"] = "429"
    texts = []
    try:
        r = client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "A long enough answer to cut"}]}])
        for event in r["stream"]:
            texts.append(event.get("contentBlockDelta", {}).get("delta", {}).get("text", ""))
        out["stream_error"] = None
    except EventStreamError as e:
        out["stream_error"] = {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"], "text_before": "".join(texts)}
    EXTRA_HEADERS.clear()
    return out


def plain_http(request, **_):
    # botocore sends a bearer token only to an https:// endpoint; the mock
    # speaks plain HTTP, so the client is given https:// and the URL is
    # turned back just before it is sent (after the auth was added).
    if request.url.startswith("https://"):
        request.url = "http://" + request.url[len("https://"):]


def bearer():
    # A Bedrock API key: botocore sends it as Authorization: Bearer instead of signing.
    os.environ["AWS_BEARER_TOKEN_BEDROCK"] = "ABSKtest-bedrock-api-key"
    try:
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-west-2",
            endpoint_url=BASE.replace("http://", "https://", 1),
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        client.meta.events.register("before-send.bedrock-runtime.*", plain_http)
        r = client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Hello with a key"}]}])
        s = client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Stream with a key"}]}])
        text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in s["stream"] if "contentBlockDelta" in e)
        return {"text": r["output"]["message"]["content"][0]["text"], "stream_text": text}
    finally:
        del os.environ["AWS_BEARER_TOKEN_BEDROCK"]


def main():
    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    client = make_client()
    out = {
        "versions": {"boto3": boto3.__version__, "botocore": botocore.__version__},
        "converse": converse(client),
        "arn": converse(client, ARN),
        "stream": converse_stream(client),
        "tool": tool_call(client),
        "invoke": invoke(client),
        "invoke_arn": invoke(client, ARN),
        "errors": errors(client),
        "bearer": bearer(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
