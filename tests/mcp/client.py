"""A step-driven MCP client on the official MCP Python SDK, for the gateway's end-to-end tests.

Usage: python client.py --url URL [--header 'Name: value' ...] [--session-id ID]
                        [--protocol-version V] [--keep-session] [--timeout SECONDS]

Connects with the SDK's Streamable HTTP client and `ClientSession`, sending the extra headers on
every HTTP request, runs `initialize` and prints one JSON line:
  {"ok": true, "step": "initialize", "session_id": ..., "protocol_version": ..., "server_info": {...}}
(or {"ok": false, "step": "initialize", "error": {"code", "message", "http_status"}} and exit 0).
Then reads steps from stdin, one JSON object a line, and answers each with exactly one JSON line:
  {"op": "list"}                      all pages: {"ok": true, "tools": [{"name", "description",
                                      "inputSchema"}...], "pages": n}
  {"op": "list", "cursor": C}         one page from C (null: the first): adds "nextCursor"
  {"op": "call", "name": N, "arguments": {...}}
                                      {"ok": true, "isError": b, "content": [...],
                                      "structuredContent": ..., "progress": [...]}
  {"op": "ping"}                      {"ok": true}
  {"op": "raw", "method": M, "params": {...}}
                                      {"ok": true, "result": {...}}
  {"op": "notifications", "method": M}
                                      the server notifications of method M received so far
                                      (waiting up to "timeout" seconds for one):
                                      {"ok": true, "notifications": [{"method", "params"}...]}
  {"op": "asked"}                     the requests the server sent this client (elicitation,
                                      sampling, roots; with --answer-server-requests, answered):
                                      {"ok": true, "asked": [method...]}
  {"op": "quit"}                      exits 0 (so does the end of stdin)
call, ping and raw steps may carry "timeout" (seconds; default --timeout). A failed step answers
{"ok": false, "error": {"code": JSON-RPC code or null, "message": ..., "http_status": the last
HTTP status >= 400 seen during the step, if any}}; the script never dies on an error. After the
connection itself fails, every further step answers {"ok": false, ...} as well.

Like any SDK user's, a tools/call of a tool this session never listed makes the SDK send a
tools/list first (to validate structured content against the tool's output schema).

--session-id ID skips initialize and joins that session (the SDK adopts an assumed initialize
result; the header is sent on every request); the first line then has "step": "resume".
--keep-session leaves the session open at exit (no DELETE), so another client can join it; a
client that joined with --session-id never deletes it either.
"""

import argparse
import json
import sys
from typing import Any

import anyio
import httpx2
import mcp.types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

GENERIC_RESULT = TypeAdapter(dict[str, Any])
NOTIFICATIONS = []  # what the server sent unasked, in order: {"method", "params"}
RawRequest = types.Request[dict[str, Any] | None, str]


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def dump(model):
    return model.model_dump(by_alias=True, mode="json", exclude_none=True) if model is not None else None


class Http:
    """What the HTTP client saw: the session id the server issued, the statuses of the current step."""

    def __init__(self):
        self.session_id = None
        self.statuses = []

    async def on_response(self, response):
        self.statuses.append(response.status_code)
        sid = response.headers.get("mcp-session-id")
        if sid:
            self.session_id = sid

    def failed_status(self):
        bad = [s for s in self.statuses if s >= 400]
        return bad[-1] if bad else None


def error(exc, http):
    if isinstance(exc, MCPError):
        err = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            err["data"] = exc.data
    else:
        err = {"code": None, "message": str(exc) or type(exc).__name__, "class": type(exc).__name__}
    status = http.failed_status()
    if status is not None:
        err["http_status"] = status
    return {"ok": False, "error": err}


def leaf(exc):
    """The first non-group exception inside an exception group (the transport's task group raises those)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def read_step():
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    if not line:
        return None
    line = line.strip()
    if not line:
        return {}
    try:
        step = json.loads(line)
    except ValueError as e:
        return {"op": "invalid", "why": f"not JSON: {e}"}
    return step if isinstance(step, dict) else {"op": "invalid", "why": "a step is a JSON object"}


async def list_tools(session, step):
    # session.list_tools (not a bare send_request) so the session caches the tools' output
    # schemas as any SDK user's would; a tools/call of a tool never listed makes the SDK list first.
    if "cursor" in step:
        result = await session.list_tools(params=types.PaginatedRequestParams(cursor=step["cursor"]))
        return {"ok": True, "tools": [tool(t) for t in result.tools], "pages": 1, "nextCursor": result.next_cursor}
    tools, pages, cursor = [], 0, None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        result = await session.list_tools(params=params)
        pages += 1
        tools += [tool(t) for t in result.tools]
        cursor = result.next_cursor
        if cursor is None or pages >= 1000:
            break
    return {"ok": True, "tools": tools, "pages": pages}


def tool(t):
    return {"name": t.name, "description": t.description, "inputSchema": t.input_schema}


async def call_tool(session, step):
    progress = []

    async def on_progress(value, total, message):
        progress.append({"progress": value, "total": total, "message": message})

    result = await session.call_tool(
        step.get("name", ""),
        step.get("arguments"),
        read_timeout_seconds=step.get("timeout"),
        progress_callback=on_progress,
    )
    out = {
        "ok": True,
        "isError": bool(result.is_error),
        "content": [dump(c) for c in result.content],
        "structuredContent": result.structured_content,
    }
    if progress:
        out["progress"] = progress
    return out


async def on_message(message):
    if isinstance(message, Exception):
        return
    note = dump(message)
    NOTIFICATIONS.append({"method": note.get("method"), "params": note.get("params")})


ASKED = []


async def on_elicitation(ctx, params):
    ASKED.append("elicitation/create")
    schema = getattr(params, "requested_schema", None)
    if hasattr(schema, "model_dump"):
        schema = schema.model_dump(by_alias=True)
    wanted = (schema or {}).get("properties", {})
    if "email" in wanted:
        return types.ElicitResult(action="accept", content={"email": "ada.lovelace@example.com"})
    if "name" in wanted:
        return types.ElicitResult(action="accept", content={"name": "Grace"})
    return types.ElicitResult(action="accept", content={"confirm": True})


async def on_sampling(ctx, params):
    ASKED.append("sampling/createMessage")
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="sampled"), model="client-model"
    )


async def on_roots(ctx):
    ASKED.append("roots/list")
    return types.ListRootsResult(roots=[types.Root(uri="file:///home/ada/project")])


async def notifications(step):
    method = step.get("method")
    with anyio.move_on_after(step.get("timeout") or 10):
        while not any(n["method"] == method for n in NOTIFICATIONS):
            await anyio.sleep(0.05)
    return {"ok": True, "notifications": [n for n in NOTIFICATIONS if n["method"] == method]}


async def run_step(session, step):
    op = step.get("op")
    if op == "notifications":
        return await notifications(step)
    if op == "list":
        return await list_tools(session, step)
    if op == "call":
        return await call_tool(session, step)
    if op == "ping":
        await session.send_request(
            types.PingRequest(), types.EmptyResult, request_read_timeout_seconds=step.get("timeout")
        )
        return {"ok": True}
    if op == "raw":
        result = await session.send_request(
            RawRequest(method=step.get("method", ""), params=step.get("params")),
            GENERIC_RESULT,
            request_read_timeout_seconds=step.get("timeout"),
        )
        return {"ok": True, "result": result}
    if op == "asked":
        return {"ok": True, "asked": ASKED}
    if op == "invalid":
        return {"ok": False, "error": {"code": None, "message": step["why"]}}
    return {"ok": False, "error": {"code": None, "message": f"unknown op: {op!r}"}}


async def main(args):
    http = Http()
    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            emit({"ok": False, "step": "initialize", "error": {"code": None, "message": f"bad --header {h!r}"}})
            return
        headers[name.strip()] = value.strip()
    if args.session_id:
        headers["mcp-session-id"] = args.session_id

    client = httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"response": [http.on_response]},
    )
    started = False  # the first line (initialize / resume) was printed
    pending = None  # the step being run when the connection failed, if any
    try:
        async with (
            client,
            streamable_http_client(args.url, http_client=client, terminate_on_close=not args.keep_session) as (
                read,
                write,
            ),
            ClientSession(
                read,
                write,
                read_timeout_seconds=args.timeout,
                message_handler=on_message,
                **(
                    {"elicitation_callback": on_elicitation, "sampling_callback": on_sampling,
                     "list_roots_callback": on_roots}
                    if args.answer_server_requests
                    else {}
                ),
            ) as session,
        ):
            if args.session_id:
                session.adopt(
                    types.InitializeResult(
                        protocol_version=args.protocol_version,
                        capabilities=types.ServerCapabilities(tools=types.ToolsCapability()),
                        server_info=types.Implementation(name="unknown", version=""),
                    )
                )
                started = True
                emit({"ok": True, "step": "resume", "session_id": args.session_id,
                      "protocol_version": session.protocol_version, "server_info": None})
            else:
                try:
                    init = await session.initialize()
                except Exception as e:
                    emit({"ok": False, "step": "initialize", **error(leaf(e), http)})
                    return
                started = True
                emit({"ok": True, "step": "initialize", "session_id": http.session_id,
                      "protocol_version": init.protocol_version, "server_info": dump(init.server_info)})
            while True:
                step = await read_step()
                if step is None or step.get("op") == "quit":
                    return
                if not step:
                    continue
                http.statuses = []
                pending = step
                try:
                    answer = await run_step(session, step)
                except Exception as e:
                    answer = error(e, http)
                pending = None
                emit(answer)
    except BaseException as e:  # the transport's task group failed (connection refused or lost)
        if not isinstance(e, Exception | BaseExceptionGroup):
            raise
        failure = error(leaf(e), http)
        if not started:
            emit({"ok": False, "step": "initialize", **failure})
            return
        if pending is not None:
            emit(failure)
        failure["error"]["message"] = "connection lost: " + failure["error"]["message"]
        while True:
            step = await read_step()
            if step is None or step.get("op") == "quit":
                return
            if step:
                emit(failure)


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the MCP endpoint, e.g. http://127.0.0.1:8080/mcp")
    p.add_argument("--header", action="append", default=[], help="'Name: value', sent on every request")
    p.add_argument("--session-id", help="join this session instead of initializing a new one")
    p.add_argument("--protocol-version", default="2025-11-25", help="assumed with --session-id")
    p.add_argument("--keep-session", action="store_true", help="do not DELETE the session at exit")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")
    p.add_argument("--answer-server-requests", action="store_true",
                   help="declare elicitation, sampling and roots, and answer them (recorded for the asked op)")
    return p.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse())
    sys.exit(0)
