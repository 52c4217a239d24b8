"""Re-check a shipped folder (``onnxnas verify DIR``): integrity, then the equivalence chain again.

Needs no checkpoint: finalize saved its inputs and the PyTorch outputs beside the
artefacts, so the reference travels with them.
"""

from __future__ import annotations

from pathlib import Path
from onnxnas.deploy.artefacts import ENGINE_FILE, INPUTS_FILE, ONNX_FILE, OUTPUTS_FILE
from onnxnas.deploy.engine import tensorrt_available
from onnxnas.deploy.manifest import load_manifest
from onnxnas.deploy.runtime import open_runner
from onnxnas.deploy.verify import VerificationReport, compare, load_reference, run_runners
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import file_sha256


def verify_folder(folder: Path, provider: str = "cpu") -> tuple[VerificationReport, list[str]]:
    """Check hashes against the manifest, rerun ONNX Runtime (and TensorRT where present) against
    the saved PyTorch outputs; returns the report and notes on what was skipped."""
    manifest = load_manifest(folder)
    notes = []
    for record, name in ((manifest.onnx, ONNX_FILE), (manifest.engine, ENGINE_FILE)):
        if record is None:
            continue
        path = folder / name
        if not path.is_file():
            raise OnnxNasError(f"{name} is listed in the manifest but missing (or not a regular file)", where=str(folder),
                               fix="ship the whole folder, or rerun 'onnxnas finalize'")
        if path.stat().st_size != record.bytes or file_sha256(path) != record.sha256:
            raise OnnxNasError(f"{name} differs from the file finalize wrote (size or sha256 mismatch)", where=str(path),
                               fix="restore the original file, or rerun 'onnxnas finalize'")
    inputs, results = load_reference(folder / INPUTS_FILE, folder / OUTPUTS_FILE)
    runners = [open_runner(folder / ONNX_FILE, provider=provider)]
    if manifest.engine and tensorrt_available():
        runners.append(open_runner(folder / ENGINE_FILE))
    elif manifest.engine:
        notes.append("model.engine not checked: TensorRT or a CUDA device is not present")
    results.extend(run_runners(runners, inputs))
    report = compare(results, manifest.precision)
    return report, notes
