"""Re-check a shipped folder (``onnxnas verify DIR``): integrity, then the equivalence chain again.

Needs no checkpoint: finalize saved its inputs and the PyTorch outputs beside the
artefacts, so the reference travels with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxnas.deploy.artefacts import ENGINE_FILE, INPUTS_FILE, ONNX_FILE, OUTPUTS_FILE
from onnxnas.deploy.engine import tensorrt_available
from onnxnas.deploy.manifest import read_manifest
from onnxnas.deploy.runtime import open_runner
from onnxnas.deploy.verify import VerificationReport, compare, load_reference, run_runners
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import file_sha256


def verify_folder(folder: Path, provider: str = "cpu") -> tuple[VerificationReport, list[str]]:
    """Check hashes against the manifest, rerun ONNX Runtime (and TensorRT where present) against
    the saved PyTorch outputs; returns the report and notes on what was skipped."""
    manifest = read_manifest(folder)
    files: dict[str, Any] = manifest.get("files", {})
    notes = []
    for key, name in (("onnx", ONNX_FILE), ("engine", ENGINE_FILE)):
        record = files.get(key)
        if record is None:
            continue
        path = folder / name
        if not path.is_file():
            raise OnnxNasError(f"{name} is listed in the manifest but missing", where=str(folder),
                               fix="ship the whole folder, or rerun 'onnxnas finalize'")
        if file_sha256(path) != record.get("sha256"):
            raise OnnxNasError(f"{name} differs from the file finalize wrote (sha256 mismatch)", where=str(path),
                               fix="restore the original file, or rerun 'onnxnas finalize'")
    inputs, results = load_reference(folder / INPUTS_FILE, folder / OUTPUTS_FILE)
    runners = [open_runner(folder / ONNX_FILE, provider=provider)]
    if files.get("engine") and tensorrt_available():
        runners.append(open_runner(folder / ENGINE_FILE))
    elif files.get("engine"):
        notes.append("model.engine not checked: TensorRT or a CUDA device is not present")
    results.extend(run_runners(runners, inputs))
    report = compare(results, manifest["precision"])
    return report, notes
