"""Latency-aware architecture search: supernet, Prunode, block pruning, layer skipping, methods."""
