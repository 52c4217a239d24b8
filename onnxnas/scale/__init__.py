"""NeuralScale (docs/design.md §11): per-layer widths for a budget, by architecture descent,
per-layer power-law fits ``n = alpha * tau^beta`` and a budget solve on log tau.

``variables`` names the widths an arch lets change, ``importance`` scores filters (Taylor-FO
on post-BN gates), ``descent`` prunes network-wide and records (tau, widths), ``fit`` fits the
power laws, ``solve`` turns a fit (or a uniform factor) into an arch under any Cost, and
``iterate`` runs the paper's iterations with resumable per-iteration state.
"""
