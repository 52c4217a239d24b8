"""The one exception type for user errors.

The CLI catches :class:`OnnxNasError` and prints its message as a single line (no
traceback) and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OnnxNasError(Exception):
    """A user error: bad input, a missing file, an unsupported choice.

    The message must name what is wrong (file, field) and how to fix it.
    """

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.where = where
        self.fix = fix
        parts = [f"{where}: {message}" if where else message]
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__(" -- ".join(parts))


def choice_error(kind: str, value: object, choices: list[str] | tuple[str, ...], *, where: str | None = None) -> OnnxNasError:
    """An error for an unknown name, listing the valid ones."""
    return OnnxNasError(
        f"unknown {kind} {value!r}",
        where=where,
        fix=f"use one of: {', '.join(sorted(str(c) for c in choices))}",
    )
