"""Filter-level heterogeneous compression (docs/design.md §12; Zur, Baskin et al.).

One job per module: ``ops`` (the op set), ``slots`` (the searched convs of a concrete arch and the
arch a configuration gives), ``configuration`` (per-conv samplers, probabilities, rounding),
``budget`` (BOPs targets through :class:`onnxnas.cost.BopsCost`), ``relaxed_bops`` (the Gumbel
estimator's differentiable BOPs), ``quantnet`` (the fake-quantized network), ``estimators``
(score function and Gumbel gradients for alpha), ``feasibility`` (the final pass), ``trainer``.
"""
