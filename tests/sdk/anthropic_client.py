"""The official Anthropic Python SDK as a real client of the gateway.

Usage: python anthropic_client.py BASE_URL [MODEL]   (e.g. http://127.0.0.1:10000)

Asks for an OpenAI model (`gpt-4o-mini`, or MODEL: a Gemini model) over the
Anthropic Messages API, so the gateway translates each request to the
provider's API and each answer
(JSON and SSE) back. Prints one JSON object with what the SDK parsed; any
unexpected exception ends the script with a traceback and a non-zero exit.
Run by tests/tests/sdk.rs, which asserts on the output.
"""

import json
import sys

import anthropic

MODEL = sys.argv[2] if len(sys.argv) > 2 else "gpt-4o-mini"
TOOLS = [
    {
        "name": "lookup",
        "description": "Look something up",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
]


def message(m):
    return {
        "id": m.id,
        "type": m.type,
        "role": m.role,
        "model": m.model,
        "text": "".join(b.text for b in m.content if b.type == "text"),
        "blocks": [b.type for b in m.content],
        "tool_uses": [{"id": b.id, "name": b.name, "input": b.input} for b in m.content if b.type == "tool_use"],
        "stop_reason": m.stop_reason,
        "usage": {"input_tokens": m.usage.input_tokens, "output_tokens": m.usage.output_tokens},
    }


def rate_limited(client, **kwargs):
    """The mock answers 429 on `x-mock-status: 429`; the SDK must raise RateLimitError."""
    try:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"}, **kwargs)
    except anthropic.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "message": str(e)}
    return {"class": None}


def main():
    base = sys.argv[1].rstrip("/")
    client = anthropic.Anthropic(base_url=base, api_key="sk-test", max_retries=0, timeout=30)
    result = {"sdk": "anthropic", "version": anthropic.__version__}

    result["message"] = message(client.messages.create(
        model=MODEL, max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "Say hello to Grace"}],
    ))

    # The SDK's stream helper: text as it arrives, then the accumulated message.
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Say hello to Hopper"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    result["stream"] = dict(message(final), streamed_text=text)

    # Raw events, in order.
    events = client.messages.create(
        model=MODEL, max_tokens=100, stream=True, messages=[{"role": "user", "content": "Say hello to Noether"}],
    )
    result["stream_events"] = [e.type for e in events]

    asked = [{"role": "user", "content": "find Grace"}]
    tool = client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, tool_choice={"type": "any"}, messages=asked)
    result["tool"] = message(tool)

    # The tool's result goes back as a client would send it: the SDK's own
    # content blocks as the assistant turn, then a `tool_result` block.
    use = next(b for b in tool.content if b.type == "tool_use")
    result["tool_result"] = message(client.messages.create(
        model=MODEL, max_tokens=200, tools=TOOLS,
        messages=asked + [
            {"role": "assistant", "content": tool.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Grace Hopper, 1906"}]},
        ],
    ))
    result["tool_result"]["use_id"] = use.id

    with client.messages.stream(
        model=MODEL, max_tokens=200, tools=TOOLS, tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "find Ada"}],
    ) as stream:
        final = stream.get_final_message()
    result["tool_stream"] = message(final)

    result["error"] = rate_limited(client)
    result["error_stream"] = rate_limited(client, stream=True)

    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
