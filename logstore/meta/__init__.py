"""Metadata in etcd: Woodpecker's key layout and compare-and-swap transactions."""
from .keys import Keys
from .store import MetaStore, Versioned

__all__ = ["Keys", "MetaStore", "Versioned"]
