"""The official OpenAI Python SDK as a real client of the gateway.

Usage: python openai_client.py BASE_URL [MODEL]   (e.g. http://127.0.0.1:10000)

Asks for an Anthropic model (`claude-haiku-4-5`, or MODEL: a Gemini model)
over the OpenAI chat API, so the gateway translates each request to the
provider's API and each answer (JSON and SSE) back. Prints one JSON object with what the SDK parsed;
any unexpected exception ends the script with a traceback and a non-zero exit.
Run by tests/tests/sdk.rs, which asserts on the output.
"""

import json
import sys

import openai

MODEL = sys.argv[2] if len(sys.argv) > 2 else "claude-haiku-4-5"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


def usage(u):
    if u is None:
        return None
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def tool_calls(calls):
    return [
        {"id": c.id, "type": c.type, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
        for c in calls or []
    ]


def completion(c):
    choice = c.choices[0]
    return {
        "id": c.id,
        "object": c.object,
        "model": c.model,
        "choices": len(c.choices),
        "role": choice.message.role,
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "tool_calls": tool_calls(choice.message.tool_calls),
        "usage": usage(c.usage),
    }


def collect_stream(stream):
    """Join the chunks of a streamed answer as a client would."""
    out = {"chunks": 0, "objects": set(), "ids": set(), "content": "", "finish_reason": None,
           "usage": None, "usage_chunks": 0, "tool_calls": {}}
    for chunk in stream:
        out["chunks"] += 1
        out["objects"].add(chunk.object)
        out["ids"].add(chunk.id)
        if chunk.usage is not None:
            out["usage_chunks"] += 1
            out["usage"] = usage(chunk.usage)
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                out["content"] += delta.content
            for tc in delta.tool_calls or []:
                acc = out["tool_calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    acc["id"] = tc.id
                if tc.function and tc.function.name:
                    acc["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    acc["arguments"] += tc.function.arguments
            if choice.finish_reason:
                out["finish_reason"] = choice.finish_reason
    out["objects"] = sorted(out["objects"])
    out["ids"] = len(out["ids"])
    out["tool_calls"] = [
        {"id": acc["id"], "name": acc["name"], "arguments": json.loads(acc["arguments"])}
        for _, acc in sorted(out["tool_calls"].items())
    ]
    return out


def rate_limited(client, **kwargs):
    """The mock answers 429 on `x-mock-status: 429`; the SDK must raise RateLimitError."""
    try:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"}, **kwargs)
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "message": str(e)}
    return {"class": None}


def main():
    base = sys.argv[1].rstrip("/")
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0, timeout=30)
    result = {"sdk": "openai", "version": openai.__version__}

    result["chat"] = completion(client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to Ada"}],
    ))

    result["stream"] = collect_stream(client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say hello to Babbage"}],
    ))

    result["stream_no_usage"] = collect_stream(client.chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": "Say hello to Lovelace"}],
    ))

    asked = [{"role": "user", "content": "find Ada"}]
    tool = client.chat.completions.create(model=MODEL, tools=TOOLS, tool_choice="required", messages=asked)
    result["tool"] = completion(tool)

    # The tool's result goes back as a client would send it: the SDK's own
    # assistant message, then a `tool` message answering its call.
    call = tool.choices[0].message.tool_calls[0]
    result["tool_result"] = completion(client.chat.completions.create(
        model=MODEL, tools=TOOLS,
        messages=asked + [
            tool.choices[0].message,
            {"role": "tool", "tool_call_id": call.id, "content": "Ada Lovelace, 1815"},
        ],
    ))
    result["tool_result"]["call_id"] = call.id

    result["tool_stream"] = collect_stream(client.chat.completions.create(
        model=MODEL, tools=TOOLS, tool_choice="required", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "find Grace"}],
    ))

    # The SDK's own stream accumulator (strict about the chunk sequence).
    with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "Say hello to Turing"}],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    result["stream_helper"] = completion(final)

    result["error"] = rate_limited(client)
    result["error_stream"] = rate_limited(client, stream=True)

    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
