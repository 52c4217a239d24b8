"""Timing backends and the device registry.

CPU tests time real ONNX Runtime sessions. The trtexec parser is checked on report
text in the format trtexec prints; the subprocess plumbing on a stand-in script.
Tests marked gpu / tensorrt / trtexec run where that hardware or binary exists.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import time
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from onnxnas.errors import OnnxNasError
from onnxnas.timing import (
    BACKENDS,
    DEVICES,
    Measurement,
    OnnxRuntimeBackend,
    TimingBackend,
    TimingJob,
    TimingProtocol,
    detect_hardware,
    get_backend,
    parse_trtexec_report,
    identity_model,
    resolve_device,
)
from onnxnas.timing.trtexec import TrtexecBackend, parse_trtexec_version

FAST = TimingProtocol(warmup_runs=3, runs=30, min_time_s=0.01)
SHAPE = (1, 16, 32, 32)


def conv_block() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU())


def conv_job(tmp_path: Path, precision: str = "fp32", factory=conv_block) -> TimingJob:
    return TimingJob(key=f"conv-{precision}", build_module=factory, input_shape=SHAPE, precision=precision,
                     onnx_path=tmp_path / f"conv-{precision}.onnx")


def assert_sane(m: Measurement, runs: int) -> None:
    assert m.median_us > 0
    assert 0 < m.p10_us <= m.median_us <= m.p90_us
    assert m.count >= runs


# --- ONNX Runtime ---------------------------------------------------------------------------------


def test_onnxruntime_times_a_conv_block_and_caches_its_onnx(tmp_path: Path) -> None:
    builds = []

    def counted() -> torch.nn.Module:
        builds.append(1)
        return conv_block()

    backend = OnnxRuntimeBackend()
    job = conv_job(tmp_path, factory=counted)
    first = backend.measure(job, FAST)
    assert_sane(first, FAST.runs)
    assert job.onnx_path.is_file()
    stamp = job.onnx_path.stat().st_mtime_ns
    second = backend.measure(job, FAST)
    assert_sane(second, FAST.runs)
    assert len(builds) == 1 and job.onnx_path.stat().st_mtime_ns == stamp  # exported once, reused


def test_onnxruntime_backend_reports_provider_and_satisfies_the_protocol() -> None:
    backend = OnnxRuntimeBackend(threads=1)
    assert isinstance(backend, TimingBackend)
    assert backend.provider == "CPUExecutionProvider"
    assert backend.version() == f"{ort.__version__} (CPUExecutionProvider)"


def test_min_time_keeps_sampling_past_runs(tmp_path: Path) -> None:
    job = conv_job(tmp_path)
    m = OnnxRuntimeBackend().measure(job, TimingProtocol(warmup_runs=1, runs=5, min_time_s=0.03))
    assert m.count > 5  # 5 runs of a ~0.1 ms conv cannot fill 30 ms
    assert m.count <= 5 * 20  # the cap


def test_per_call_overhead_is_smaller_than_a_conv_block(tmp_path: Path) -> None:
    conv = OnnxRuntimeBackend().measure(conv_job(tmp_path), FAST)
    probe = tmp_path / "identity.onnx"
    probe.write_bytes(identity_model(SHAPE, "fp32"))
    overhead = OnnxRuntimeBackend().measure_onnx(probe, FAST)
    assert_sane(overhead, FAST.runs)
    assert overhead.median_us < conv.median_us


def test_fp16_block_runs_on_the_cpu_provider(tmp_path: Path) -> None:
    # ONNX Runtime 1.31 runs fp16 Conv on CPU (it casts ops lacking fp16 kernels), so
    # fp16 on CPU is a real, positive timing rather than an error.
    job = conv_job(tmp_path, "fp16")
    m = OnnxRuntimeBackend().measure(job, FAST)
    assert_sane(m, FAST.runs)
    inputs = onnx.load(str(job.onnx_path)).graph.input
    assert inputs[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    probe = tmp_path / "identity16.onnx"
    probe.write_bytes(identity_model(SHAPE, "fp16"))
    assert OnnxRuntimeBackend().measure_onnx(probe, FAST).median_us > 0


def test_int8_jobs_are_timed_as_they_deploy(tmp_path: Path) -> None:
    job = conv_job(tmp_path, "int8")
    assert_sane(OnnxRuntimeBackend().measure(job, FAST), FAST.runs)
    graph = onnx.load(str(job.onnx_path)).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "BatchNormalization" not in ops
    int8_weights = [t for t in graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == sum(op == "Conv" for op in ops)  # every conv weight is an INT8 tensor


def test_a_model_ort_cannot_run_raises_with_its_reason(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(SHAPE))
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(SHAPE))
    node = helper.make_node("NoSuchOp", ["input"], ["output"], domain="org.example")
    model = helper.make_model(helper.make_graph([node], "bad", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.example", 1)])
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OnnxNasError) as err:
        OnnxRuntimeBackend().measure_onnx(path, FAST)
    assert str(path) in str(err.value)
    assert "ONNX Runtime (CPUExecutionProvider) cannot run the model" in str(err.value)
    assert "NoSuchOp" in str(err.value)


def test_missing_onnx_and_thread_mismatch_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(OnnxNasError, match="ONNX model not found"):
        OnnxRuntimeBackend().measure_onnx(tmp_path / "absent.onnx", FAST)
    with pytest.raises(OnnxNasError, match="asks for 2 CPU threads but the backend runs 1"):
        OnnxRuntimeBackend(threads=1).measure(conv_job(tmp_path), TimingProtocol(runs=5, threads=2))


def test_unknown_or_missing_provider_names_the_fix() -> None:
    with pytest.raises(OnnxNasError, match="unknown ONNX Runtime provider 'npu'"):
        OnnxRuntimeBackend(provider="npu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(OnnxNasError, match="pip install onnxruntime-gpu"):
            OnnxRuntimeBackend(provider="cuda")


# --- trtexec report parsing -----------------------------------------------------------------------

# TensorRT 8.2.5 on a Tesla T4, default reporting (percentile 99 only).
TRT8_REPORT = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v8205] # trtexec --loadEngine=model_fp16.trt
[09/01/2025-18:06:59] [I] TensorRT version: 8.2.5
[09/01/2025-18:07:04] [I] Warmup completed 6 queries over 200 ms
[09/01/2025-18:07:04] [I] Timing trace has 126 queries over 3.0734 s
[09/01/2025-18:07:04] [I] 
[09/01/2025-18:07:04] [I] === Trace details ===
[09/01/2025-18:07:04] [I] Trace averages of 10 runs:
[09/01/2025-18:07:04] [I] Average on 10 runs - GPU latency: 23.692 ms - Host latency: 34.5077 ms (end to end 47.4718 ms, enqueue 0.757256 ms)
[09/01/2025-18:07:04] [I] 
[09/01/2025-18:07:04] [I] === Performance summary ===
[09/01/2025-18:07:04] [I] Throughput: 40.997 qps
[09/01/2025-18:07:04] [I] Latency: min = 31.7932 ms, max = 36.7351 ms, mean = 34.6638 ms, median = 34.6692 ms, percentile(99%) = 36.0881 ms
[09/01/2025-18:07:04] [I] End-to-End Host Latency: min = 31.8066 ms, max = 51.0674 ms, mean = 47.4387 ms, median = 47.5804 ms, percentile(99%) = 50.3098 ms
[09/01/2025-18:07:04] [I] Enqueue Time: min = 0.588135 ms, max = 1.29871 ms, mean = 0.730344 ms, median = 0.708374 ms, percentile(99%) = 1.22754 ms
[09/01/2025-18:07:04] [I] H2D Latency: min = 6.76038 ms, max = 6.83435 ms, mean = 6.77499 ms, median = 6.76849 ms, percentile(99%) = 6.82928 ms
[09/01/2025-18:07:04] [I] GPU Compute Time: min = 20.9889 ms, max = 25.8992 ms, mean = 23.8437 ms, median = 23.8456 ms, percentile(99%) = 25.2888 ms
[09/01/2025-18:07:04] [I] D2H Latency: min = 4.03357 ms, max = 4.19946 ms, mean = 4.04503 ms, median = 4.04138 ms, percentile(99%) = 4.19824 ms
[09/01/2025-18:07:04] [I] Total Host Walltime: 3.0734 s
[09/01/2025-18:07:04] [I] Total GPU Compute Time: 3.00431 s
[09/01/2025-18:07:04] [I] Explanations of the performance metrics are printed in the verbose logs.
[09/01/2025-18:07:04] [I] 
&&&& PASSED TensorRT.trtexec [TensorRT v8205] # trtexec --loadEngine=model_fp16.trt
"""

# TensorRT 10.9, default reporting (percentiles 90, 95, 99).
TRT10_REPORT = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100900] [b34] # trtexec --onnx=resnet50/model.onnx --saveEngine=resnet50/model.trt
[04/07/2025-23:59:50] [I] Warmup completed 135 queries over 200 ms
[04/07/2025-23:59:50] [I] Timing trace has 2077 queries over 3.0039 s
[04/07/2025-23:59:50] [I]
[04/07/2025-23:59:50] [I] === Performance summary ===
[04/07/2025-23:59:50] [I] Throughput: 691.435 qps
[04/07/2025-23:59:50] [I] Latency: min = 1.4209 ms, max = 3.047 ms, mean = 1.48372 ms, median = 1.43823 ms, percentile(90%) = 1.45624 ms, percentile(95%) = 1.71796 ms, percentile(99%) = 2.61597 ms
[04/07/2025-23:59:50] [I] Enqueue Time: min = 0.208801 ms, max = 0.461304 ms, mean = 0.263621 ms, median = 0.259033 ms, percentile(90%) = 0.293823 ms, percentile(95%) = 0.311768 ms, percentile(99%) = 0.402832 ms
[04/07/2025-23:59:50] [I] H2D Latency: min = 0.0258789 ms, max = 0.0687256 ms, mean = 0.0362824 ms, median = 0.0361328 ms, percentile(90%) = 0.0378418 ms, percentile(95%) = 0.0385742 ms, percentile(99%) = 0.0616455 ms
[04/07/2025-23:59:50] [I] GPU Compute Time: min = 1.38855 ms, max = 3.00439 ms, mean = 1.44357 ms, median = 1.39775 ms, percentile(90%) = 1.40308 ms, percentile(95%) = 1.67834 ms, percentile(99%) = 2.57642 ms
[04/07/2025-23:59:50] [I] D2H Latency: min = 0.00286865 ms, max = 0.00561523 ms, mean = 0.00387057 ms, median = 0.00366211 ms, percentile(90%) = 0.00488281 ms, percentile(95%) = 0.00500488 ms, percentile(99%) = 0.00537109 ms
[04/07/2025-23:59:50] [I] Total Host Walltime: 3.0039 s
[04/07/2025-23:59:50] [I] Total GPU Compute Time: 2.9983 s
[04/07/2025-23:59:50] [W] * GPU compute time is unstable, with coefficient of variance = 13.1794%.
[04/07/2025-23:59:50] [W]   If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the stability.
[04/07/2025-23:59:50] [I] Explanations of the performance metrics are printed in the verbose logs.
&&&& PASSED TensorRT.trtexec [TensorRT v100900] [b34] # trtexec --onnx=resnet50/model.onnx --saveEngine=resnet50/model.trt
"""

# The summary as printed for this backend's --percentile=10,90 (same printer, other percentiles).
TRT10_P10_P90_REPORT = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v101300] [b9] # trtexec --onnx=block.onnx --percentile=10,90
[06/02/2025-10:12:03] [I] Timing trace has 412 queries over 0.0503 s
[06/02/2025-10:12:03] [I] === Performance summary ===
[06/02/2025-10:12:03] [I] Throughput: 8190.3 qps
[06/02/2025-10:12:03] [I] Latency: min = 0.0112 ms, max = 0.0291 ms, mean = 0.0121 ms, median = 0.0119 ms, percentile(10%) = 0.0114 ms, percentile(90%) = 0.0126 ms
[06/02/2025-10:12:03] [I] GPU Compute Time: min = 0.0102 ms, max = 0.0281 ms, mean = 0.0110 ms, median = 0.0108 ms, percentile(10%) = 0.0104 ms, percentile(90%) = 0.0116 ms
[06/02/2025-10:12:03] [I] Total GPU Compute Time: 0.00453 s
&&&& PASSED TensorRT.trtexec [TensorRT v101300] [b9] # trtexec --onnx=block.onnx --percentile=10,90
"""


def test_parse_trtexec_8x_report_bounds_missing_percentiles() -> None:
    m = parse_trtexec_report(TRT8_REPORT)
    assert m.median_us == pytest.approx(23845.6)
    assert m.p10_us == pytest.approx(20988.9)  # no percentile(10%): min is the bound
    assert m.p90_us == pytest.approx(25288.8)  # no percentile(90%): p99 is the bound
    assert m.count == 126


def test_parse_trtexec_10x_report_takes_gpu_compute_not_latency() -> None:
    m = parse_trtexec_report(TRT10_REPORT)
    assert m == Measurement(median_us=pytest.approx(1397.75), p10_us=pytest.approx(1388.55),
                            p90_us=pytest.approx(1403.08), count=2077)


def test_parse_trtexec_report_with_requested_percentiles() -> None:
    m = parse_trtexec_report(TRT10_P10_P90_REPORT)
    assert (m.median_us, m.p10_us, m.p90_us, m.count) == pytest.approx((10.8, 10.4, 11.6, 412))


def test_parse_trtexec_report_prefers_p95_over_p99_as_the_p90_bound() -> None:
    text = TRT10_REPORT.replace("percentile(90%) = 1.40308 ms, ", "")
    assert parse_trtexec_report(text).p90_us == pytest.approx(1678.34)


def test_parse_trtexec_report_rejects_incomplete_output() -> None:
    with pytest.raises(OnnxNasError, match="no 'GPU Compute Time"):
        parse_trtexec_report("[E] Error[4]: engine build failed\n&&&& FAILED TensorRT.trtexec")
    with pytest.raises(OnnxNasError, match="Timing trace has N queries"):
        parse_trtexec_report(TRT10_REPORT.replace("Timing trace has", "Timing had"))


def test_parse_trtexec_version_banner() -> None:
    assert parse_trtexec_version(TRT8_REPORT) == "8.2.5"
    assert parse_trtexec_version(TRT10_REPORT) == "10.9.0"
    assert parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] [b106] # trtexec") == "11.1.0"


# --- trtexec plumbing, on a stand-in executable ----------------------------------------------------


def stand_in_trtexec(folder: Path, banner_version: int, report: str, exit_code: int = 0) -> Path:
    """A script named trtexec that prints a banner and a report and records its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.txt").write_text(report)
    script = folder / "trtexec"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > "{folder}/args.txt"\n'
        f'echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{banner_version}] # trtexec $*"\n'
        f'cat "{folder}/report.txt"\n'
        f'[ {exit_code} -eq 0 ] || echo "[E] Error[2]: could not build the engine" >&2\n'
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_trtexec_backend_builds_the_tensorrt10_command_and_parses(tmp_path: Path) -> None:
    script = stand_in_trtexec(tmp_path / "bin", 100900, TRT10_REPORT)
    cache = tmp_path / "cache" / "timing.cache"
    backend = TrtexecBackend(cache, binary=str(script))
    assert backend.version() == "10.9.0"
    m = backend.measure(conv_job(tmp_path, "fp16"), TimingProtocol(runs=300, min_time_s=0.5))
    assert m.median_us == pytest.approx(1397.75) and m.count == 2077
    args = (tmp_path / "bin" / "args.txt").read_text().split()
    assert f"--onnx={tmp_path / 'conv-fp16.onnx'}" in args
    for flag in ("--fp16", "--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--percentile=10,90",
                 "--iterations=300", "--duration=0.5", "--warmUp=200", f"--timingCacheFile={cache}"):
        assert flag in args
    assert "--stronglyTyped" not in args


def test_trtexec_backend_on_tensorrt11_is_strongly_typed(tmp_path: Path) -> None:
    script = stand_in_trtexec(tmp_path / "bin", 110100, TRT10_P10_P90_REPORT)
    backend = TrtexecBackend(binary=str(script))
    job = conv_job(tmp_path, "fp16")
    backend.measure(job, FAST)
    args = (tmp_path / "bin" / "args.txt").read_text().split()
    assert "--stronglyTyped" in args and "--fp16" not in args and "--useCudaGraph" not in args
    inputs = onnx.load(str(job.onnx_path)).graph.input  # precision lives in the graph
    assert inputs[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_trtexec_failure_carries_its_stderr_tail(tmp_path: Path) -> None:
    script = stand_in_trtexec(tmp_path / "bin", 100900, "", exit_code=1)
    with pytest.raises(OnnxNasError, match=r"exited with status 1: .*could not build the engine"):
        TrtexecBackend(binary=str(script)).measure(conv_job(tmp_path), FAST)


def test_int8_is_passed_to_trtexec_as_a_qdq_graph(tmp_path: Path) -> None:
    script = stand_in_trtexec(tmp_path / "bin", 100900, TRT10_REPORT)
    job = conv_job(tmp_path, "int8")
    TrtexecBackend(binary=str(script)).measure(job, FAST)
    args = (tmp_path / "bin" / "args.txt").read_text().split()
    assert "--int8" in args and "--fp16" in args  # TensorRT 10: INT8 where Q/DQ say so, FP16 elsewhere
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(job.onnx_path)).graph.node}


def test_missing_trtexec_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(OnnxNasError, match="trtexec not found.*fix: install TensorRT"):
        TrtexecBackend(binary=str(tmp_path / "no-such-trtexec"))


# --- device registry ------------------------------------------------------------------------------


def test_unknown_device_lists_the_choices() -> None:
    with pytest.raises(OnnxNasError) as err:
        resolve_device("rtx9090")
    assert "unknown device 'rtx9090'" in str(err.value)
    assert "a10, a100, cpu, h100, h200, l4, orin, t4, v100" in str(err.value)


def test_device_words_do_not_match_longer_names() -> None:
    def gpus(name: str) -> set[str]:
        return {spec.name for spec in DEVICES.values() if spec.kind == "cuda" and spec.matches({"gpu": name})}

    assert gpus("NVIDIA A100-SXM4-40GB") == {"a100"}
    assert gpus("NVIDIA A10G") == {"a10"}
    assert gpus("NVIDIA L40S") == set()
    assert gpus("Tesla V100-SXM2-16GB") == {"v100"}
    assert gpus("NVIDIA H100 80GB HBM3") == {"h100"}
    assert gpus("Orin") == {"orin"}
    assert DEVICES["orin"].matches({"gpu": None, "jetson": "NVIDIA Jetson AGX Orin Developer Kit"})
    assert DEVICES["cpu"].matches({"kind": "cpu"})


def test_absent_device_fails_with_what_was_detected_and_force_records_it() -> None:
    hardware = detect_hardware()
    absent = next(spec for spec in DEVICES.values() if not spec.matches(hardware))
    with pytest.raises(OnnxNasError) as err:
        resolve_device(absent.name)
    message = str(err.value)
    assert "\n" not in message
    assert (hardware.get("gpu") or hardware["cpu"]) in message
    assert "--force-device" in message and "--device cpu" in message
    spec, info = resolve_device(absent.name.upper(), force=True)
    assert spec is absent
    assert info["forced"] is True and info["requested"] == absent.name
    assert info["cpu_cores"] == os.cpu_count()


def test_cpu_device_resolves_anywhere() -> None:
    spec, info = resolve_device("cpu")
    assert spec.default_backend == "onnxruntime" and info["forced"] is False
    assert info["cpu"] and info["kind"] in ("cpu", "cuda")


def test_get_backend_checks_names_and_device_support() -> None:
    cpu = DEVICES["cpu"]
    with pytest.raises(OnnxNasError, match="unknown backend 'tvm'.*onnxruntime, tensorrt, torch-cuda, trtexec"):
        get_backend("tvm", cpu)
    with pytest.raises(OnnxNasError, match="backend 'tensorrt' cannot time device 'cpu'.*use one of: onnxruntime"):
        get_backend("tensorrt", cpu)
    backend = get_backend("onnxruntime", cpu, threads=1)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.provider == "CPUExecutionProvider"
    assert set(BACKENDS) == {"onnxruntime", "tensorrt", "trtexec", "torch-cuda"}
    assert all(set(spec.backends) <= set(BACKENDS) and spec.default_backend in spec.backends
               for spec in DEVICES.values())


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_backend_without_tensorrt_names_the_extra() -> None:
    with pytest.raises(OnnxNasError, match=r"pip install onnxnas\[tensorrt\]"):
        get_backend("tensorrt", DEVICES["h100"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_torch_cuda_backend_without_cuda_is_a_user_error() -> None:
    with pytest.raises(OnnxNasError, match="needs a CUDA device"):
        get_backend("torch-cuda", DEVICES["a100"])


# --- hardware-gated -------------------------------------------------------------------------------


@pytest.mark.gpu
def test_detect_hardware_reads_the_gpu() -> None:
    hardware = detect_hardware()
    assert hardware["kind"] == "cuda" and hardware["gpu"] and hardware["sm_count"] > 0
    assert hardware["cuda"] == torch.version.cuda


@pytest.mark.gpu
def test_torch_cuda_times_a_conv_block(tmp_path: Path) -> None:
    backend = get_backend("torch-cuda", DEVICES["a100"])
    for precision in ("fp32", "fp16"):
        assert_sane(backend.measure(conv_job(tmp_path, precision), FAST), FAST.runs)


@pytest.mark.tensorrt
def test_tensorrt_times_a_conv_block_and_saves_its_timing_cache(tmp_path: Path) -> None:
    from onnxnas.timing.tensorrt import TensorRTBackend

    cache = tmp_path / "timing.cache"
    with TensorRTBackend(cache, precision="fp16") as backend:
        job = conv_job(tmp_path, "fp16")
        assert_sane(backend.measure(job, FAST), FAST.runs)
        assert_sane(backend.measure_onnx(job.onnx_path, FAST), FAST.runs)
        assert backend.version().split(".")[0].isdigit()
    assert cache.stat().st_size > 0


@pytest.mark.trtexec
def test_real_trtexec_times_a_conv_block(tmp_path: Path) -> None:
    backend = TrtexecBackend(tmp_path / "timing.cache")
    assert backend.binary == shutil.which("trtexec")
    assert_sane(backend.measure(conv_job(tmp_path, "fp16"), FAST), FAST.runs)


def test_canary_rejects_a_slow_spell() -> None:
    """The gate keeps a batch only if the canary ran near its fastest; a 2x slower canary fails it."""
    from onnxnas.timing.canary import Canary

    spin_ns = [200_000]

    def workload() -> None:
        end = time.perf_counter_ns() + spin_ns[0]
        while time.perf_counter_ns() < end:
            pass

    canary = Canary(workload, tolerance=1.2, calibration_runs=5)
    assert 200_000 <= canary.floor_ns < 240_000
    assert any(canary.quiet() for _ in range(10))  # any one check may be preempted; most are not
    spin_ns[0] = 400_000  # the machine now runs the same work at half speed: no check can pass
    assert not any(canary.quiet() for _ in range(10))
    spin_ns[0] = 200_000
    assert any(canary.quiet() for _ in range(10))


def test_pinned_cpus_restores_affinity() -> None:
    from onnxnas.timing.onnxruntime import pinned_cpus

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    with pinned_cpus(1):
        assert os.sched_getaffinity(0) == {max(before)}
    assert os.sched_getaffinity(0) == before
