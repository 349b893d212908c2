"""Adapters that put a ToolCache behind the frameworks agents and MCP servers already use.

Each adapter lives in its own module and is imported by its own path, so
importing one never requires another framework:

- ``aiotoolcache.integrations.fastmcp``: ``ToolCacheMiddleware``, a FastMCP
  server middleware caching discovery, tool results, resources and prompts
  (``pip install 'aiotoolcache[fastmcp]'``).
- ``aiotoolcache.integrations.key_value``: ``ToolCacheKeyValue``, an
  ``AsyncKeyValue`` store (py-key-value) backed by a ToolCache, for FastMCP's
  own ``ResponseCachingMiddleware`` and any other py-key-value consumer
  (``pip install 'aiotoolcache[fastmcp]'``).
- ``aiotoolcache.integrations.mcp``: ``ToolCacheResponseStore`` for the MCP
  SDK's client response cache, and ``ToolCallCache`` / ``cached_call_tool``
  for caching tool calls made through an MCP client
  (``pip install 'aiotoolcache[mcp]'``).
"""
