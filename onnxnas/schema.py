"""Typed, path-aware access to a parsed document: the one validator behind every file onnxnas reads.

Readers walk their document through :class:`Fields`, so a bad value anywhere (a string
where an object belongs, NaN, a boolean posing as a number, a width of 10**9) becomes one
:class:`OnnxNasError` that names the file, the JSON path and the fix, before anything
indexes into it or allocates for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from onnxnas.errors import OnnxNasError

# Sizes past these are typos or attacks, not networks; checked before anything is allocated.
MAX_CHANNELS = 16384
MAX_RESOLUTION = 4096
MAX_KERNEL = 15
MAX_STRIDE = 4
MAX_LAYERS = 1024
MAX_CLASSES = 100_000
MAX_LIST = 100_000
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def is_identifier(value: object) -> bool:
    """Names that may become part of a file name: no separators, no '..', no leading dot."""
    return isinstance(value, str) and bool(_IDENTIFIER.fullmatch(value)) and ".." not in value


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Fields:
    """One object of a document; typed getters that record which fields were read.

    ``path`` is the object's JSON path (``$.layers[3]``), ``source`` the file it came from.
    """

    def __init__(self, data: Any, path: str, source: str):
        if not isinstance(data, dict):
            raise OnnxNasError(f"{path}: expected an object, got {_kind(data)}", where=source,
                               fix="see the file format in README.md")
        self.data, self.path, self.source = data, path, source
        self.used: set[str] = set()

    def at(self, name: str) -> str:
        return f"{self.path}.{name}"

    def fail(self, name: str, message: str, fix: str | None = None) -> OnnxNasError:
        return OnnxNasError(f"{self.at(name)}: {message}", where=self.source, fix=fix or f"correct field '{name}'")

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, default: Any = ...) -> Any:
        """The raw value; a missing field without a default is an error."""
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.fail(name, "required field is missing", fix=f"add '{name}'")
            return default
        return self.data[name]

    def _defaulted(self, name: str, default: Any) -> bool:
        """The field is absent and its default stands (defaults are not validated)."""
        return name not in self.data and default is not ...

    def integer(self, name: str, default: Any = ..., low: int = 1, high: int = 2**31) -> Any:
        value = self.get(name, default)
        if self._defaulted(name, default):
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, f"expected an integer, got {_show(value)}")
        if not low <= value <= high:
            raise self.fail(name, f"expected an integer in [{low}, {high}], got {_show(value)}")
        return value

    def number(self, name: str, default: Any = ..., low: float = -math.inf, high: float = math.inf,
               low_open: bool = False) -> Any:
        """A finite number in [low, high] (or (low, high] with ``low_open``); NaN, inf and booleans are refused."""
        value = self.get(name, default)
        if self._defaulted(name, default):
            return value
        if not is_finite_number(value):
            raise self.fail(name, f"expected a finite number, got {_show(value)}")
        if value > high or value < low or (low_open and value == low):
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise self.fail(name, f"expected a number in {bounds}, got {_show(value)}")
        return float(value)

    def boolean(self, name: str, default: Any = ...) -> Any:
        value = self.get(name, default)
        if not isinstance(value, bool) and not self._defaulted(name, default):
            raise self.fail(name, f"expected true or false, got {_show(value)}")
        return value

    def string(self, name: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(name, default)
        if self._defaulted(name, default):
            return value
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"expected one of {', '.join(choices)}, got {_show(value)}",
                            fix=f"use one of: {', '.join(choices)}")
        return value

    def identifier(self, name: str, default: Any = ...) -> Any:
        """A name that may be used in file names (letters, digits, '_', '-', '.', '+'; no path parts)."""
        value = self.get(name, default)
        if not is_identifier(value) and not self._defaulted(name, default):
            raise self.fail(name, f"expected a plain name (letters, digits, '_', '-', '.'), got {_show(value)}",
                            fix="use a name without '/', '..' or a leading dot")
        return value

    def object(self, name: str, default: Any = ...) -> "Fields":
        return Fields(self.get(name, default), self.at(name), self.source)

    def list(self, name: str, default: Any = ..., max_items: int = MAX_LIST, min_items: int = 0) -> Any:
        value = self.get(name, default)
        if self._defaulted(name, default):
            return value
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise self.fail(name, f"expected a list of {min_items} to {max_items} items, got {_show(value)}")
        return value

    def items(self, name: str, check: Callable[[Any], bool], expected: str, default: Any = ...,
              max_items: int = 256) -> tuple[Any, ...]:
        """A non-empty list whose items pass ``check`` (a bare scalar counts as a list of one)."""
        value = self.get(name, default)
        if isinstance(value, (int, float, bool)) and not isinstance(default, tuple):
            value = [value]
        if (not isinstance(value, (list, tuple)) or not 0 < len(value) <= max_items
                or not all(check(v) for v in value)):
            raise self.fail(name, f"expected a non-empty list of {expected}, got {_show(value)}")
        return tuple(value)

    def done(self) -> None:
        """Refuse fields nobody read: a typo must not be ignored silently."""
        unknown = sorted(set(map(str, self.data)) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown field",
                            fix=f"remove it; known fields: {', '.join(sorted(self.used))}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A short rendering of a bad value (huge values must not flood the one-line error)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
