"""Search-space specs: dataclasses, loading with validation, built-in spaces."""

from onnxnas.space.load import BUILTIN_SPACES, load_space, space_from_dict
from onnxnas.space.spec import LayerPosition, SearchSpace, StageSpec, StemSpec

__all__ = ["BUILTIN_SPACES", "LayerPosition", "SearchSpace", "StageSpec", "StemSpec", "load_space", "space_from_dict"]
