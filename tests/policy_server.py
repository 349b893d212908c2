"""A minimal MCP server for ``policy suggest`` tests: it lists tools, in two pages.

Plain JSON-RPC with the standard library, so it starts in milliseconds; it
answers ``initialize``, ``ping`` and ``tools/list`` only. Over stdio by
default; ``--http`` serves streamable HTTP (JSON responses, no SSE stream)
on a free loopback port and prints the port on its first line.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOOLS: list[dict[str, Any]] = [
    {"name": "get_item", "description": "Get one item."},
    {"name": "book_table", "description": "Book a table."},
    {"name": "stock_lookup", "description": "Stock levels of a SKU."},
    {"name": "think", "description": "Note a thought.\nNothing else."},
    {"name": "inventory", "description": "Searches the inventory for a SKU."},
    {"name": "report", "description": "Returns the daily report."},
    {
        "name": "delete_preview",
        "description": "Show what a delete would remove, without removing it.",
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "get_or_create_cart",
        "description": "Get the user's cart, creating it when missing.",
        "annotations": {"readOnlyHint": False},
    },
    {"name": 'odd "name" \\ here', "description": "List odd things."},
]
PAGE = 5


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None  # a notification
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "shop", "version": "1"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        start = int(params.get("cursor") or 0)
        page = [{"inputSchema": {"type": "object"}, **tool} for tool in TOOLS[start : start + PAGE]]
        result = {"tools": page}
        if start + PAGE < len(TOOLS):
            result["nextCursor"] = str(start + PAGE)
    else:
        error = {"code": -32601, "message": f"method not found: {method}"}
        return {"jsonrpc": "2.0", "id": message["id"], "error": error}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = answer(json.loads(body))
        if reply is None:
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # no server-initiated stream
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    if sys.argv[1:] == ["--http"]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        return
    for line in sys.stdin:
        if line.strip():
            reply = answer(json.loads(line))
            if reply is not None:
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
