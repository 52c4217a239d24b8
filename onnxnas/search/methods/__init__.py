"""Search methods by name; each module defines ``add_arguments(parser)`` and ``run(args) -> int``.

A new method (UDC, ...) adds one entry here and one module; ``onnxnas search --method``
lists whatever is registered.
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS = {"filterlevel": "onnxnas.search.methods.filterlevel", "prunet": "onnxnas.search.methods.prunet",
           "udc": "onnxnas.search.methods.udc"}


def get_method(name: str) -> ModuleType:
    return importlib.import_module(METHODS[name])
