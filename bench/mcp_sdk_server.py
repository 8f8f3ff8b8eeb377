#!/usr/bin/env python3
"""The MCP test server (tests/mcp/server.py, the official MCP Python SDK)
served the way uvicorn serves an application by default, for the MCP
benchmark (bench/mcp_bench.py).

Usage: python mcp_sdk_server.py --port PORT [--variant crm] [--json-response]

The test server binds its own socket and hands it to uvicorn; a socket made
without naming its protocol is not one asyncio sets TCP_NODELAY on, so on a
reused connection each answer's events wait behind the client's delayed ACK
(about 40 ms per call on Linux). Here uvicorn binds the address itself, as
`uvicorn app:app` does, and its connections have TCP_NODELAY.
"""

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "mcp"))

import server  # noqa: E402  (tests/mcp/server.py)


class Options(argparse.Namespace):
    """The test server's options: any not given here is off (None)."""

    def __getattr__(self, name):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="sdk")
    ap.add_argument("--variant", default="crm", choices=["crm", "weather", "poisoned", "many"])
    ap.add_argument("--json-response", action="store_true", help="JSON bodies instead of SSE streams")
    args = ap.parse_args()
    app = server.build(Options(name=args.name, variant=args.variant, json_response=args.json_response))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
