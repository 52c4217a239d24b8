"""UDC: unified DNAS for compressible models (Fedorov et al., NeurIPS 2022; docs/design.md §7).

One job per module: ``options`` (what each layer position may choose), ``schedules`` (temperature,
xi_t, theta_rs), ``sampling`` (Gumbel samples, rejection sampling, the top-kappa STE),
``projection`` (eq. 8), ``supernet`` (the relaxed network: shared weights under mixed width,
bits and sparsity, identity as an operator), ``constraint`` (expected and exact size / latency,
the normalized penalty), ``repair`` (the guarantee), ``trainer`` (one epoch of search).
"""
