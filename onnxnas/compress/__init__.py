"""Compression pieces shared by UDC, filter-level search and deploy (docs/design.md §7, §12, §13).

One job per module: ``quantizer`` (Q and learned ranges), ``masks`` (sparsity and width masks,
schedules), ``number_format`` (UDC's shifted grid), ``quant_noise``, ``groups`` (per-filter-group
quantization), ``size`` (the size bound), ``codec`` (the real coded file).
"""
