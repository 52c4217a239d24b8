"""The output folder: artefact names, safe ONNX loading, and all-or-nothing publishing.

finalize writes every file into a staging folder beside ``--out`` and moves the files
into place only after verification passed, so a failed run leaves no half-written
artefact. ONNX files handed to ``verify``/``bench`` may not pull external data from
outside their own folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import current_umask, read_regular_bytes

ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
MANIFEST_FILE = "manifest.json"
INPUTS_FILE = "reference_inputs.json"
OUTPUTS_FILE = "reference_outputs.json"
COMPRESSED_FILE = "compressed.bin"
MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit; bigger models keep their weights as external data
ARTEFACTS = (ONNX_FILE, ENGINE_FILE, INPUTS_FILE, OUTPUTS_FILE, COMPRESSED_FILE, MANIFEST_FILE)  # manifest last: it marks completion


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph can carry: initializers, sparse values, attribute tensors, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def check_external_data(model: onnx.ModelProto, folder: Path, where: str) -> None:
    """Refuse a model whose external data would be read from outside ``folder``."""
    root = folder.resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise OnnxNasError(f"initializer {tensor.name!r} points at external data {location!r} outside the "
                               "model's folder; refused", where=where,
                               fix="keep external data files next to the .onnx file (relative paths, no '..')")


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file after checking its external data stays in its folder, then run the full checker."""
    path = Path(path)
    data = read_regular_bytes(path, "ONNX model", MAX_ONNX_BYTES)
    try:
        header = onnx.load_model_from_string(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OnnxNasError(f"cannot read ONNX model: {str(exc).strip()[:200] or type(exc).__name__}", where=str(path),
                           fix="pass a .onnx file written by onnx.save or 'onnxnas finalize'") from exc
    check_external_data(header, path.parent, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, OSError) as exc:
        raise OnnxNasError(f"not a valid ONNX model: {str(exc).strip().splitlines()[0]}", where=str(path)) from exc
    return header


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out``; its artefacts replace ``out``'s on success, vanish on failure."""
    if out.exists() and not out.is_dir():
        raise OnnxNasError("--out exists and is not a folder", where=str(out), fix="pass a folder path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    except OSError as exc:
        raise OnnxNasError(f"cannot create the output folder: {exc.strerror}", where=str(out)) from exc
    try:
        yield stage
        try:
            _publish(stage, out)
        except OSError as exc:  # a full disk, a read-only or vanished --out: the user's to fix
            raise OnnxNasError(f"cannot move the verified artefacts into place: {exc.strerror}", where=str(out),
                               fix="free disk space or choose a writable --out, then rerun") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, out: Path) -> None:
    """Move the staged artefacts into ``out`` (one rename each) and drop stale ones of a previous run."""
    umask = current_umask()
    for path in stage.iterdir():  # temp files are private (0600); shipped files get the usual modes
        path.chmod(0o666 & ~umask)
    stage.chmod(0o777 & ~umask)
    if not out.exists():
        os.rename(stage, out)
        return
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # an interrupted publish leaves no manifest vouching for a mix
    for name in ARTEFACTS:
        if (stage / name).exists():
            os.replace(stage / name, out / name)
        elif (out / name).exists():
            (out / name).unlink()
