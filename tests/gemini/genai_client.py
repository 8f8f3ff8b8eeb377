"""The official google-genai SDK against the mock provider's Gemini API and
Vertex AI surfaces (tests/tests/gemini_mock.rs).

Usage: genai_client.py MOCK_URL. Prints one JSON object with what the SDK
parsed; the Rust test checks the values.
"""

import json
import sys
import time

from google import genai
from google.genai import errors, types

BASE = sys.argv[1].rstrip("/")
MODEL = "gemini-2.5-flash"


def usage(u):
    return {
        "prompt": u.prompt_token_count,
        "candidates": u.candidates_token_count,
        "total": u.total_token_count,
        "thoughts": u.thoughts_token_count,
        "cached": u.cached_content_token_count,
    }


def plain(client):
    r = client.models.generate_content(
        model=MODEL,
        contents="Hello from the SDK",
        config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2),
    )
    c = r.candidates[0]
    return {
        "text": r.text,
        "finish": c.finish_reason.value,
        "role": c.content.role,
        "usage": usage(r.usage_metadata),
        "model_version": r.model_version,
        "response_id": r.response_id,
    }


def streamed(client):
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Stream me a reply"))
    last = chunks[-1]
    return {
        "chunks": len(chunks),
        "text": "".join(ch.text or "" for ch in chunks),
        "finish": last.candidates[0].finish_reason.value,
        "finishes_before_last": [ch.candidates[0].finish_reason for ch in chunks[:-1]].count(None),
        "usage": usage(last.usage_metadata),
    }


def capped(client):
    r = client.models.generate_content(
        model=MODEL,
        contents="Please answer at some length",
        config=types.GenerateContentConfig(max_output_tokens=2),
    )
    return {"text": r.text, "finish": r.candidates[0].finish_reason.value, "usage": usage(r.usage_metadata)}


def thinking(client):
    r = client.models.generate_content(
        model=MODEL,
        contents="Think first",
        config=types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(thinking_budget=128, include_thoughts=True)
        ),
    )
    parts = r.candidates[0].content.parts
    return {
        "thought_parts": sum(1 for p in parts if p.thought),
        "text": r.text,
        "usage": usage(r.usage_metadata),
    }


WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather in a city",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


def function_call(client, stream=False):
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    prompt = "Use the weather tool for Paris"
    if stream:
        calls = []
        for ch in client.models.generate_content_stream(model=MODEL, contents=prompt, config=config):
            calls.extend(ch.function_calls or [])
    else:
        r = client.models.generate_content(model=MODEL, contents=prompt, config=config)
        calls = r.function_calls or []
    call = calls[0]
    return {"count": len(calls), "name": call.name, "args": call.args}


def function_result(client):
    """A tool result turn: the mock answers with text, not another call."""
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [
        types.Content(role="user", parts=[types.Part(text="Use the weather tool for Paris")]),
        types.Content(
            role="model",
            parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))],
        ),
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"temp_c": 21})],
        ),
    ]
    r = client.models.generate_content(model=MODEL, contents=contents, config=config)
    return {"text": r.text, "calls": len(r.function_calls or [])}


def blocked(client):
    headers = {"x-mock-gemini-block": "prompt"}
    r = client.models.generate_content(
        model=MODEL,
        contents="Something unsafe",
        config=types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers)),
    )
    headers = {"x-mock-gemini-block": "answer"}
    a = client.models.generate_content(
        model=MODEL,
        contents="Something unsafe",
        config=types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers)),
    )
    return {
        "prompt_block": r.prompt_feedback.block_reason.value,
        "prompt_candidates": len(r.candidates or []),
        "prompt_text": r.text,
        "answer_finish": a.candidates[0].finish_reason.value,
        "answer_text": a.text,
        "answer_blocked": [s.category.value for s in a.candidates[0].safety_ratings if s.blocked],
    }


def error(client):
    headers = {"x-mock-status": "429"}
    try:
        client.models.generate_content(
            model=MODEL,
            contents="hi",
            config=types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers)),
        )
    except errors.ClientError as e:
        return {"code": e.code, "status": e.status, "message": e.message}
    return {"code": None}


def count(client):
    r = client.models.count_tokens(model=MODEL, contents="Count these tokens please")
    return {"total": r.total_tokens}


def embed(client):
    r = client.models.embed_content(
        model="gemini-embedding-001",
        contents=["first text", "second text"],
        config=types.EmbedContentConfig(output_dimensionality=16),
    )
    again = client.models.embed_content(model="gemini-embedding-001", contents="first text",
                                        config=types.EmbedContentConfig(output_dimensionality=16))
    return {
        "count": len(r.embeddings),
        "dims": len(r.embeddings[0].values),
        "deterministic": r.embeddings[0].values == again.embeddings[0].values,
        "distinct": r.embeddings[0].values != r.embeddings[1].values,
    }


def vertex():
    """Vertex AI through a service account whose token endpoint is the mock's.

    The key pair is made here, for this run only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "mock-project",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "tollgate-test@mock-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": BASE + "/token",
    }
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    client = genai.Client(
        vertexai=True,
        project="mock-project",
        location="us-central1",
        credentials=creds,
        http_options={"base_url": BASE},
    )
    r = client.models.generate_content(model=MODEL, contents="Hello Vertex")
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Stream from Vertex"))
    n = client.models.count_tokens(model=MODEL, contents="Count on Vertex")
    first_token = creds.token
    # The mock's tokens live --token-ttl-secs (2 s in the test): wait past
    # expiry; google-auth refreshes the token before the next call.
    time.sleep(2.5)
    again = client.models.generate_content(model=MODEL, contents="After expiry")
    return {
        "text": r.text,
        "usage": usage(r.usage_metadata),
        "create_time": r.create_time is not None,
        "stream_text": "".join(ch.text or "" for ch in chunks),
        "stream_finish": chunks[-1].candidates[0].finish_reason.value,
        "stream_usage": usage(chunks[-1].usage_metadata),
        "count": n.total_tokens,
        "first_token": first_token,
        "refreshed_token": creds.token,
        "after_expiry": again.text,
    }


def main():
    client = genai.Client(api_key="test-gemini-key", http_options={"base_url": BASE})
    out = {
        "plain": plain(client),
        "stream": streamed(client),
        "capped": capped(client),
        "thinking": thinking(client),
        "function_call": function_call(client),
        "function_call_stream": function_call(client, stream=True),
        "function_result": function_result(client),
        "blocked": blocked(client),
        "error": error(client),
        "count": count(client),
        "embed": embed(client),
        "vertex": vertex(),
    }
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
