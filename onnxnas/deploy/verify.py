"""Equivalence checks with Polygraphy's Comparator: PyTorch -> ONNX Runtime -> TensorRT.

Each artefact is compared with the one before it in the chain. The tolerance is per
precision and relative to the reference's peak magnitude, because logits have no
fixed scale: an output passes when ``max |candidate - reference| <= tol * max |reference|``.
The PyTorch reference carries the same per-channel weight grid as the QDQ graph (see
:func:`onnxnas.deploy.concrete.quantized_reference`), so ``tol`` covers only what the
runtime adds: float rounding, fp16, INT8 activations.

The inputs and the PyTorch outputs are saved as Polygraphy JSON next to the artefacts,
so ``onnxnas verify DIR`` (or ``polygraphy run --load-inputs/--load-outputs``) can rerun
the checks on shipped files without the checkpoint. Polygraphy's own default tolerance
(1e-5, relative and absolute) fails every INT8 model, so :func:`polygraphy_command` writes
the command with the absolute tolerances this verification used, and it passes as written.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator, CompareFunc, RunResults
from polygraphy.exception import PolygraphyException
from polygraphy.json import from_json, to_json
from polygraphy.logger import G_LOGGER
from torch import nn

from onnxnas.deploy.artefacts import ENGINE_FILE, INPUTS_FILE, ONNX_FILE, OUTPUTS_FILE
from onnxnas.deploy.manifest import io_signature
from onnxnas.deploy.runtime import open_runner
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_text, read_text

# Measured on random-init tiny and GPUNet-1 networks with data-calibrated BN (worst case seen): fp32 ~1e-6,
# fp16 ~2e-3, int8 ~0.24 of the peak (per-tensor max-calibrated activations on 16 images, low-margin logits).
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.3}
RULE = "max |candidate - reference| <= tolerance * max |reference|, per output, over all inputs"
Feed = dict[str, np.ndarray]
MAX_REFERENCE_BYTES = 1 << 30  # the saved inputs are at most --verify-samples images


class TorchRunner(BaseRunner):
    """A CPU PyTorch runner (Polygraphy's own PytRunner moves inputs to CUDA)."""

    def __init__(self, module: nn.Module, input_metadata: TensorMetadata, output_names: Sequence[str],
                 name: str = "pytorch"):
        super().__init__(name=name, prefix="pytorch-runner")
        self.module, self.input_metadata, self.output_names = module, input_metadata, list(output_names)

    def activate_impl(self) -> None:
        self.module.eval()

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self.input_metadata

    def infer_impl(self, feed_dict: Feed) -> OrderedDict[str, np.ndarray]:
        start = time.perf_counter()
        with torch.no_grad():
            outputs = self.module(*(torch.from_numpy(np.asarray(v, np.float32)) for v in feed_dict.values()))
        self.inference_time = time.perf_counter() - start
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return OrderedDict((n, o.numpy()) for n, o in zip(self.output_names, outputs))

    def deactivate_impl(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output of one comparison, worst case over the inputs."""

    max_abs: float
    max_rel: float
    peak: float
    atol: float

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.atol


@dataclasses.dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    outputs: dict[str, OutputCheck]


@dataclasses.dataclass(frozen=True)
class VerificationReport:
    precision: str
    tolerance: float
    inputs: int
    comparisons: list[Comparison]

    def first_failure(self) -> tuple[Comparison, str, OutputCheck] | None:
        return next(((c, name, o) for c in self.comparisons for name, o in c.outputs.items() if not o.passed), None)

    def polygraphy_tolerances(self) -> dict[str, Any]:
        """What ``polygraphy run`` needs to repeat the ONNX Runtime check: absolute atol per output
        (tolerance x the reference's peak, rounded up), rtol 0, and the max-error statistic."""
        ort = self.comparisons[0]  # the saved reference against ONNX Runtime, always first in the chain
        return {"atol": {name: _round_up(o.atol) for name, o in ort.outputs.items()}, "rtol": 0.0,
                "check_error_stat": "max", "reference": ort.reference, "candidate": ort.candidate}

    def to_dict(self) -> dict[str, Any]:
        return {"rule": RULE, "precision": self.precision, "tolerance": self.tolerance, "inputs": self.inputs,
                "polygraphy": self.polygraphy_tolerances(),
                "comparisons": [{"reference": c.reference, "candidate": c.candidate,
                                 "outputs": {n: {**dataclasses.asdict(o), "passed": o.passed} for n, o in c.outputs.items()}}
                                for c in self.comparisons]}

    def raise_on_failure(self) -> None:
        """A user error naming the first diverging output."""
        failure = self.first_failure()
        if failure is not None:
            c, name, o = failure
            raise OnnxNasError(f"verification failed: output {name!r} of {c.candidate} diverges from {c.reference}: "
                               f"max abs diff {o.max_abs:.3g} > {o.atol:.3g} ({self.precision} tolerance "
                               f"{self.tolerance:g} x peak {o.peak:.3g})",
                               fix="inspect the artefacts with 'polygraphy run'; nothing was written to --out")


def polygraphy_command(report: VerificationReport, folder: str = "") -> str:
    """``polygraphy run`` of the shipped ONNX model against the saved PyTorch outputs, with the tolerances
    this verification used; file names are relative to ``folder`` ("" for the folder itself)."""
    tol = report.polygraphy_tolerances()

    def path(name: str) -> str:
        return shlex.quote(f"{folder.rstrip('/')}/{name}" if folder else name)

    atol = " ".join(shlex.quote(f"{name}:{value:g}") for name, value in tol["atol"].items())
    return (f"polygraphy run {path(ONNX_FILE)} --onnxrt --load-inputs {path(INPUTS_FILE)} --load-outputs "
            f"{path(OUTPUTS_FILE)} --atol {atol} --rtol 0 --check-error-stat max")


def _round_up(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits, never below it (a printed atol must not be tighter)."""
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    rounded = float(f"{math.ceil(value / step) * step:.{digits}g}")
    return rounded if rounded >= value else float(f"{rounded + step:.{digits}g}")


def run_runners(runners: Sequence[BaseRunner], inputs: Sequence[Feed]) -> RunResults:
    """Run every runner on every input (Polygraphy's Comparator, logging quiet)."""
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            return Comparator.run(list(runners), data_loader=list(inputs))
    except PolygraphyException as exc:
        raise OnnxNasError(f"a runtime could not run the model: {exc}") from exc


def compare(results: RunResults, precision: str) -> VerificationReport:
    """Compare each runner in ``results`` with the one before it."""
    tolerance = TOLERANCES[precision]
    reference_iterations = results[0][1]
    peaks = {name: max(float(np.abs(np.asarray(it[name], np.float64)).max()) for it in reference_iterations)
             for name in reference_iterations[0].keys()}
    _check_reference(peaks, results[0][0])
    atol = {name: tolerance * peak for name, peak in peaks.items()}
    func = CompareFunc.simple(atol=atol, rtol=0.0, check_error_stat="max")
    pairs = [(i, i + 1) for i in range(len(results) - 1)]
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        accuracy = Comparator.compare_accuracy(results, comparisons=pairs, compare_func=func)
    accuracy = accuracy if hasattr(accuracy, "items") else accuracy[0]  # newer Polygraphy returns one per compare_func
    comparisons = []
    for (reference, candidate), iterations in accuracy.items():
        outputs = {name: OutputCheck(max_abs=max(it[name].max_absdiff for it in iterations),
                                     max_rel=max(it[name].max_reldiff for it in iterations),
                                     peak=peaks[name], atol=atol[name])
                   for name in peaks}
        comparisons.append(Comparison(reference, candidate, outputs))
    return VerificationReport(precision, tolerance, len(reference_iterations), comparisons)


def _check_reference(peaks: dict[str, float], runner: str) -> None:
    """The tolerance is relative to the reference's peak, so an all-zero (dead) or non-finite reference
    would pass anything: refuse it instead of verifying vacuously."""
    for name, peak in peaks.items():
        if not math.isfinite(peak):
            raise OnnxNasError(f"verification refused: output {name!r} of {runner} holds NaN or infinite values",
                               fix="check the weights (a diverged or damaged checkpoint?)")
        if peak == 0.0:
            raise OnnxNasError(f"verification refused: output {name!r} of {runner} is all zeros on every input, so "
                               "the relative tolerance would pass any candidate (a dead network?)",
                               fix="check the weights: a float checkpoint whose values are not all zero")


def save_reference(results: RunResults, inputs: Sequence[Feed], inputs_path: Path, outputs_path: Path) -> None:
    """Write the inputs and the first runner's outputs as Polygraphy JSON (atomically)."""
    atomic_write_text(inputs_path, to_json(list(inputs)))
    atomic_write_text(outputs_path, RunResults([results[0]]).to_json())


def load_reference(inputs_path: Path, outputs_path: Path) -> tuple[list[Feed], RunResults]:
    """Read what :func:`save_reference` wrote (NumPy payloads load with ``allow_pickle=False``)."""
    inputs = _polygraphy_json(inputs_path, "reference inputs", from_json)
    outputs = _polygraphy_json(outputs_path, "reference outputs", RunResults.from_json)
    if (not isinstance(inputs, list) or not inputs or not all(isinstance(feed, dict) for feed in inputs)
            or not isinstance(outputs, RunResults) or len(outputs) != 1):
        raise OnnxNasError("reference files do not hold one list of inputs and one runner's outputs",
                           where=str(inputs_path.parent), fix="rerun 'onnxnas finalize' to regenerate the folder")
    return [dict(feed) for feed in inputs], outputs


def _polygraphy_json(path: Path, what: str, parse: Callable[[str], Any]) -> Any:
    """A bounded read, then Polygraphy's decoder (NumPy payloads with ``allow_pickle=False``), failures as one line."""
    text = read_text(path, what, MAX_REFERENCE_BYTES)
    try:
        return parse(text)
    except RecursionError as exc:
        raise OnnxNasError(f"malformed {what}: nested too deeply", where=str(path),
                           fix="rerun 'onnxnas finalize' to regenerate the folder") from exc
    except Exception as exc:  # Polygraphy and NumPy decoders raise many unrelated types on bad input
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise OnnxNasError(f"malformed {what}: {reason}", where=str(path),
                           fix="rerun 'onnxnas finalize' to regenerate the folder") from exc


def _torch_and_onnx(reference: nn.Module, folder: Path, samples: Sequence[np.ndarray],
                    name: str = "pytorch") -> tuple[list[BaseRunner], list[Feed]]:
    """A PyTorch runner of ``reference`` and an ONNX Runtime runner of ``folder``'s model, with ``samples`` as feeds."""
    signature = io_signature(onnx.load(str(folder / ONNX_FILE), load_external_data=False))
    (model_input,) = signature["inputs"]
    dtype = np.dtype(model_input["dtype"])
    inputs = [{model_input["name"]: x.astype(dtype)} for x in samples]
    meta = TensorMetadata().add(model_input["name"], dtype, model_input["shape"])
    return [TorchRunner(reference, meta, [o["name"] for o in signature["outputs"]], name),
            open_runner(folder / ONNX_FILE)], inputs


def verify_artefacts(reference: nn.Module, folder: Path, samples: Sequence[np.ndarray], precision: str, *,
                     with_engine: bool) -> VerificationReport:
    """PyTorch -> ONNX Runtime (-> TensorRT) for the artefacts in ``folder``; raises on the first divergence,
    else saves the inputs and the PyTorch outputs beside the artefacts for ``onnxnas verify``."""
    runners, inputs = _torch_and_onnx(reference, folder, samples)
    if with_engine:
        runners.append(open_runner(folder / ENGINE_FILE))
    results = run_runners(runners, inputs)
    report = compare(results, precision)
    report.raise_on_failure()
    save_reference(results, inputs, folder / INPUTS_FILE, folder / OUTPUTS_FILE)
    return report


# A searched net's fake-quantized reference and its INT8 artefact share every weight integer and put
# activations on 8-bit per-tensor grids max-calibrated on the same images; they differ in where the graph adds
# Q/DQ pairs (conv outputs before ReLU, residual inputs, the pool) and in float rounding, which moves a logit
# by a few activation steps, so only images with a top-2 margin that small may flip. Measured on a 3-epoch tiny
# search: 99.4% (178/179 digits images, digits calibration), 96% (digits-trained, synthetic calibration and
# images) and 99% (synthetic-trained, synthetic). 95% tolerates those flips
# and still fails a damaged grid, which drops agreement towards chance (10% on ten classes).
AGREEMENT_THRESHOLD = 0.95
AGREEMENT_IMAGES = 200


@dataclasses.dataclass(frozen=True)
class AgreementReport:
    """Top-1 agreement of the ONNX model with PyTorch's fake-quantized model on held-out images."""

    reference: str
    candidate: str
    data: str
    images: int
    agreeing: int
    threshold: float

    @property
    def agreement(self) -> float:
        return self.agreeing / self.images

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "agreement": self.agreement, "passed": self.passed,
                "rule": "fraction of images where argmax(candidate logits) == argmax(reference logits) >= threshold"}

    def raise_on_failure(self) -> None:
        if not self.passed:
            raise OnnxNasError(f"verification failed: top-1 agreement of {self.candidate} with {self.reference} is "
                               f"{self.agreement:.1%} ({self.agreeing}/{self.images} {self.data} images), below the "
                               f"threshold {self.threshold:.0%}",
                               fix="check the checkpoint's quant_ranges/quant_bits against the searched arch; "
                                   "nothing was written to --out")


def top1_agreement(reference: nn.Module, folder: Path, images: Sequence[np.ndarray], data: str,
                   threshold: float = AGREEMENT_THRESHOLD) -> AgreementReport:
    """Run ``reference`` and ``folder``'s ONNX model on ``images`` (one per batch) and count equal top-1 classes."""
    if not images:
        raise OnnxNasError(f"top-1 agreement needs held-out images and {data!r} has none",
                           fix="pass --calib-data with a validation split")
    runners, inputs = _torch_and_onnx(reference, folder, images, "pytorch-fake-quantized")
    results = run_runners(runners, inputs)
    (ref_name, ref_out), (cand_name, cand_out) = results[0], results[1]
    agreeing = sum(int(np.argmax(next(iter(a.values()))) == np.argmax(next(iter(b.values()))))
                   for a, b in zip(ref_out, cand_out, strict=True))
    return AgreementReport(ref_name, cand_name, data, len(images), agreeing, threshold)
