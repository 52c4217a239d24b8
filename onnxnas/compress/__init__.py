"""Compression: quantizers, masks, number formats, and the size model (DESIGN.md section 7)."""
