"""Byte stores behind the cache: the shared-tier (L2) contract and its implementations."""

from aiotoolcache.stores.base import Store

__all__ = ["Store"]
