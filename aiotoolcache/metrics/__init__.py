"""Exporters of a ToolCache's counters to monitoring systems.

``aiotoolcache.metrics.prometheus`` (``pip install 'aiotoolcache[prometheus]'``)
registers a ``prometheus_client`` collector; ``aiotoolcache.metrics.otel``
(``pip install 'aiotoolcache[otel]'``) registers OpenTelemetry observable
instruments. Both read ``cache.stats()`` when scraped or collected, so
nothing is added to the request path.
"""

from __future__ import annotations

__all__: list[str] = []
