"""NeuralScale's pieces: width variables, Taylor-FO scores, descent rows, power-law fits, budget solve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from onnxnas.arch import arch_from_dict, check_fits_space, load_arch
from onnxnas.blocks import build_model
from onnxnas.cost import Budget, CountCost, arch_counts
from onnxnas.errors import OnnxNasError
from onnxnas.scale.descent import DescentConfig, DescentRow, descend, read_rows, write_rows
from onnxnas.scale.fit import Fit, PowerLaw, fit_power_laws, load_fit, save_fit
from onnxnas.scale.importance import Gates
from onnxnas.scale.solve import check_budget_range, round_widths, solution_arch, solve_fit, solve_uniform
from onnxnas.scale.variables import WidthPlan
from onnxnas.space import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny.arch.json"


@pytest.fixture(scope="module")
def tiny() -> WidthPlan:
    return WidthPlan.of(load_arch(TINY), "tied")


def exact_fit(plan: WidthPlan, betas: list[float], tau0: float = 40_000.0) -> Fit:
    """A fit that passes through every input width at tau0."""
    laws = tuple(PowerLaw(v.slots, v.base / tau0 ** b, b, 1.0, 10) for v, b in zip(plan.variables, betas))
    return Fit(1, laws, (5_000.0, tau0))


# ---- variables ---------------------------------------------------------------------------------------
def test_tiny_variables_tie_identity_adds(tiny: WidthPlan) -> None:
    assert [(v.name, v.base, v.max_width) for v in tiny.variables] == [
        ("stem", 16, 128), ("layers.0", 16, 128), ("layers.1", 24, 192), ("layers.3+layers.4", 32, 256), ("head", 128, 1024)]
    projection = WidthPlan.of(load_arch(TINY), "projection")
    assert [v.name for v in projection.variables] == ["stem", "layers.0", "layers.1", "layers.3", "layers.4", "head"]


def test_apply_follows_hidden_ratios_and_stays_a_derived_arch(tiny: WidthPlan) -> None:
    arch = tiny.apply([8, 24, 16, 40, 64])
    assert arch.derived and arch.to_dict()["derived_from"] == "tiny"
    rows = [(l.type, l.in_chs, l.out_chs, l.hidden_chs) for l in arch.layers]
    # fused_irb 16 -> 24 had hidden 64 (e = 4), irb 24 -> 32 hidden 96 (e = 4), irb 32 -> 32 hidden 128 (e = 4)
    assert rows == [("conv", 8, 24, 0), ("fused_irb", 24, 16, 96), ("skip", 16, 16, 0), ("irb", 16, 40, 64),
                    ("irb", 40, 40, 160), ("skip", 40, 40, 0)]
    assert arch.layers[4].has_residual and arch.head.in_chs == 40 and arch.head.hidden_chs == 64
    check_fits_space(arch, load_space("tiny"))
    again = arch_from_dict(json.loads(json.dumps(arch.to_dict())))
    assert again == arch


def test_projection_adds_a_shortcut_only_where_widths_differ() -> None:
    plan = WidthPlan.of(load_arch(TINY), "projection")
    projected = plan.apply([16, 16, 24, 32, 48, 128])
    assert projected.layers[4].shortcut == "conv1x1" and projected.layers[4].has_residual
    assert plan.apply([16, 16, 24, 32, 32, 128]).layers[4].shortcut == ""
    check_fits_space(projected, load_space("tiny"))


def test_mbv2_tied_groups_follow_its_adds() -> None:
    plan = WidthPlan.of(load_arch(ROOT / "examples" / "mbv2-int8.arch.json"), "tied")
    # MobileNetV2: stem, 7 stages (the first without an add), head: 1 + 7 + 1 variables
    assert len(plan.variables) == 9
    assert [len(v.slots) for v in plan.variables] == [1, 1, 2, 3, 4, 3, 3, 1, 1]


# ---- importance -------------------------------------------------------------------------------------
def test_taylor_score_is_the_squared_gate_gradient(tiny: WidthPlan) -> None:
    """(gate * dL/dgate)^2 with an explicit gate of ones after the stem BN (whose swish runs in place)."""
    torch.manual_seed(0)
    model = build_model(tiny.arch).train()
    gate = torch.ones(16, requires_grad=True)
    model.stem.bn.register_forward_hook(lambda module, inputs, out: out * gate.view(1, -1, 1, 1))
    gates = Gates(model, tiny, tiny.base_widths)
    x, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    F.cross_entropy(model(x), labels).backward()
    gates.batch_done()
    expected = (gate.detach() * gate.grad) ** 2
    assert torch.allclose(gates.mean_scores()[0], expected, rtol=1e-4, atol=1e-12)
    assert float(expected.min()) > 0.0
    gates.prune(0, 3)
    gates.reset()
    outputs: list[torch.Tensor] = []
    model.stem.register_forward_hook(lambda module, inputs, out: outputs.append(out.detach()))
    F.cross_entropy(model(x), labels).backward()
    gates.batch_done()
    assert gates.mean_scores()[0][3] == 0.0 and gates.alive()[0] == 15
    assert float(outputs[-1][:, 3].abs().max()) == 0.0  # a pruned filter outputs nothing
    gates.remove()


def test_a_filter_feeding_a_depthwise_separable_block_is_scored_and_removed_there() -> None:
    """mbv2's stem feeds a ds block whose train-mode BN undoes any per-channel scale: the stem gate alone
    reads ~0, so the ds block's depthwise BN carries the stem's gate, score and mask."""
    torch.manual_seed(0)
    arch = load_arch(ROOT / "examples" / "mbv2-int8.arch.json")
    plan = WidthPlan.of(arch, "tied")
    model = build_model(arch).train()
    stem_gate, dw_gate = torch.ones(32, requires_grad=True), torch.ones(32, requires_grad=True)
    model.stem.bn.register_forward_hook(lambda module, inputs, out: out * stem_gate.view(1, -1, 1, 1))
    model.blocks[0].conv_dw.bn.register_forward_hook(lambda module, inputs, out: out * dw_gate.view(1, -1, 1, 1))
    gates = Gates(model, plan, plan.base_widths)
    x, labels = torch.randn(4, 3, 64, 64), torch.arange(4)
    F.cross_entropy(model(x), labels).backward()
    gates.batch_done()
    stem_only = stem_gate.grad ** 2
    expected = stem_only + dw_gate.grad ** 2
    assert torch.allclose(gates.mean_scores()[0], expected, rtol=1e-4, atol=1e-14)
    assert float(stem_only.max()) < 1e-4 * float(expected.min())  # the stem's own gate sees almost nothing
    gates.prune(0, 5)
    outputs: list[torch.Tensor] = []
    model.blocks[0].conv_dw.register_forward_hook(lambda module, inputs, out: outputs.append(out.detach()))
    model(x)
    assert float(outputs[-1][:, 5].abs().max()) == 0.0 and float(outputs[-1][:, 4].abs().max()) > 0.0
    gates.remove()


# ---- descent ----------------------------------------------------------------------------------------
def test_descent_prunes_k_filters_per_step_and_records_after_every_variable_lost_one(tiny: WidthPlan,
                                                                                      tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    model = build_model(tiny.arch)
    seen: list[list[int]] = []
    rows = descend(model, tiny, tiny.base_widths, DataLoader(data, batch_size=16), DescentConfig(prune_step=10, prune_every=1),
                   torch.device("cpu"), on_step=lambda step, alive: seen.append(alive))
    totals = [sum(a) for a in seen]
    assert totals[0] == 216 - 10 and all(a - b == 10 for a, b in zip(totals, totals[1:]))
    assert totals[-1] - 10 < 0.05 * 216 or min(seen[-1]) <= 10  # stopped at 5% or before emptying a variable
    first = next(i for i, alive in enumerate(seen) if all(a < w for a, w in zip(alive, tiny.base_widths)))
    assert [r.step for r in rows] == list(range(first + 1, len(seen) + 1))
    assert all(r.tau == CountCost("params").exact(tiny.apply(list(r.widths))) for r in rows)
    assert [r.tau for r in rows] == sorted((r.tau for r in rows), reverse=True)
    path = write_rows(tmp_path / "iter_1.csv", tiny, rows)
    assert path.read_text().splitlines()[0] == "step,tau,stem,layers.0,layers.1,layers.3+layers.4,head"
    assert read_rows(path, tiny) == rows


# ---- fit --------------------------------------------------------------------------------------------
def test_fit_recovers_exact_power_laws(tiny: WidthPlan, tmp_path: Path) -> None:
    truth = exact_fit(tiny, [0.3, 0.5, 0.6, 0.7, 0.9])
    rows = [DescentRow(i, tau, tuple(truth.widths(tau))) for i, tau in enumerate([1e3, 3e3, 1e4, 3e4])]
    fit = fit_power_laws(rows, tiny, 1, "x.csv")
    for got, want in zip(fit.laws, truth.laws):
        assert got.beta == pytest.approx(want.beta, abs=1e-9) and got.alpha == pytest.approx(want.alpha, rel=1e-9)
        assert got.r2 == pytest.approx(1.0, abs=1e-12) and got.n_points == 4
    assert fit.tau_range == (1e3, 3e4)
    assert load_fit(save_fit(tmp_path / "fit.json", fit), tiny) == fit


def test_fit_needs_three_distinct_widths_and_names_the_variable(tiny: WidthPlan) -> None:
    rows = [DescentRow(i, tau, (16 - i, 15 - i, 23 - i, 32 if i < 2 else 31, 120 - i)) for i, tau in
            enumerate([9e3, 8e3, 7e3, 6e3])]
    with pytest.raises(OnnxNasError, match=r"x\.csv: iteration 2: width variable layers\.3\+layers\.4 takes only 2 "
                                           r"distinct width\(s\) in the descent \(\[31, 32\]\)"):
        fit_power_laws(rows, tiny, 2, "x.csv")


# ---- solve ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [12_000.0, 20_000.0, 30_000.0, 60_000.0])
def test_params_budget_is_a_cap_met_within_one_percent(tiny: WidthPlan, limit: float) -> None:
    fit = exact_fit(tiny, [0.3, 0.5, 0.6, 0.7, 0.9])
    budget = Budget("params", limit)
    for solution in (solve_fit(tiny, fit, CountCost("params"), budget, 8, "fit"),
                     solve_uniform(tiny, CountCost("params"), budget, 8)):
        arch = tiny.apply(list(solution.widths))
        assert solution.cost == arch_counts(arch).params <= limit
        assert all(w % 8 == 0 for w in solution.widths)
        # the fill is maximal: one more granularity step on any variable breaks the cap
        for v in range(len(solution.widths)):
            wider = [w + 8 * (i == v) for i, w in enumerate(solution.widths)]
            assert arch_counts(tiny.apply(wider)).params > limit
        assert -0.015 <= solution.gap <= 0.0 if limit < 30_000 else -0.01 <= solution.gap <= 0.0


def test_solution_arch_records_the_solve(tiny: WidthPlan) -> None:
    fit = exact_fit(tiny, [0.3, 0.5, 0.6, 0.7, 0.9])
    solution = solve_fit(tiny, fit, CountCost("params"), Budget("params", 60_000.0), 8, "fit")
    record = solution_arch(tiny, solution, fit, 8, {}).provenance
    assert record["method"] == "neuralscale"
    ns = record["neuralscale"]
    assert ns["rounding"] == {"mode": "nearest", "granularity": 8, "min": 8} and ns["budget"] == "params=60000"
    assert ns["cost_reached"] == solution.cost and ns["extrapolated"] == (solution.t > 40_000.0)
    assert [v["layers"] for v in ns["variables"]] == [list(v.slots) for v in tiny.variables]
    widths = round_widths(fit.widths(solution.t), 8, tiny.max_widths)
    for step in ns["overrides"]:  # each fill step adds one granularity step
        assert step["to"] - step["from"] == 8
    assert sum(solution.widths) - sum(widths) == 8 * len(ns["overrides"])


def test_uniform_at_the_input_size_is_the_input(tiny: WidthPlan) -> None:
    own = CountCost("params").exact(tiny.arch)
    solution = solve_uniform(tiny, CountCost("params"), Budget("params", own), 8)
    assert solution.widths == tuple(tiny.base_widths) and solution.cost == own == 39_280


def test_budget_outside_the_legal_range_is_one_line(tiny: WidthPlan) -> None:
    with pytest.raises(OnnxNasError, match=r"budget params=1000 is below the smallest legal network \(6,196 with every "
                                           r"width at 8\)"):
        check_budget_range(tiny, CountCost("params"), Budget("params", 1000.0), 8)
    with pytest.raises(OnnxNasError, match=r"budget macs=1e\+12 is above the largest legal network"):
        check_budget_range(tiny, CountCost("macs"), Budget("macs", 1e12), 8)


def test_range_check_prices_only_the_end_on_the_budgets_side(tiny: WidthPlan) -> None:
    """A latency cost would time 8x-wide blocks for the largest network: a budget under the input's cost
    never prices it, one above never prices the smallest."""
    class Recording(CountCost):
        def __init__(self) -> None:
            super().__init__("params")
            self.heads: list[int] = []

        def exact(self, arch: object) -> float:
            self.heads.append(arch.head.hidden_chs)  # type: ignore[attr-defined]
            return super().exact(arch)

    own = CountCost("params").exact(tiny.arch)
    below, above = Recording(), Recording()
    check_budget_range(tiny, below, Budget("params", own / 2), 8)
    check_budget_range(tiny, above, Budget("params", own * 2), 8)
    assert below.heads == [128, 8] and above.heads == [128, 1024]


def test_negative_beta_names_the_variable(tiny: WidthPlan) -> None:
    fit = exact_fit(tiny, [0.3, 0.5, -0.2, 0.7, 0.9])
    with pytest.raises(OnnxNasError, match=r"iteration 1: width variable layers\.1 has beta -0\.2000 < 0.*--use-iteration"):
        solve_fit(tiny, fit, CountCost("params"), Budget("params", 30_000.0), 8, "fits/iter_1.json")


def test_macs_budget_with_a_real_descent_fit_hits_the_cap(tiny: WidthPlan) -> None:
    fit = exact_fit(tiny, [0.25, 0.55, 0.6, 0.8, 1.0])
    solution = solve_fit(tiny, fit, CountCost("macs"), Budget("macs", 1e6), 8, "fit")
    assert 1e6 * 0.99 <= solution.cost <= 1e6
    assert math.isclose(solution.cost, arch_counts(tiny.apply(list(solution.widths))).macs)


def test_a_fit_of_other_variables_is_refused_on_resume(tiny: WidthPlan, tmp_path: Path) -> None:
    path = save_fit(tmp_path / "iter_1.json", exact_fit(tiny, [0.3, 0.5, 0.6, 0.7, 0.9]))
    projection = WidthPlan.of(load_arch(TINY), "projection")
    with pytest.raises(OnnxNasError, match=r"iter_1\.json: \$\.variables: expected a list of 6 to 6 items"):
        load_fit(path, projection)
    data = json.loads(path.read_text())
    data["variables"][0]["alpha"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(OnnxNasError, match=r"\$\.variables\[0\]\.alpha"):
        load_fit(path, tiny)


def test_latency_cost_times_missing_keys_and_interpolates_what_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from onnxnas.lut.table import LatencyTable, LutEntry
    from onnxnas.scale import latency

    table = LatencyTable.load(ROOT / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json")
    arch = load_arch(TINY)
    wider = dataclasses.replace(arch, layers=arch.layers[:4] + (dataclasses.replace(arch.layers[4], hidden_chs=120),)
                                + arch.layers[5:])
    asked: list[str] = []

    def fail_all(config: object, units: list, journal: object) -> list[LutEntry]:
        asked.extend(u.key for u in units)
        return [LutEntry(u.key, error="RuntimeError: no device") for u in units]
    monkeypatch.setattr(latency, "measure_units", fail_all)
    cost = latency.TimedLatencyCost(table, tmp_path, load_space("tiny"), "tiny")
    assert cost.exact(arch) == pytest.approx(table.arch_latency(arch)) and asked == []
    key = "irb:1x32x4x4:o32:k5:s1:h120:se0:relu:res1:fp32"
    value = cost.exact(wider)
    assert asked == [key] and cost.table.entries[key].interpolated
    low, high = (table.entries[key.replace("h120", h)].median_us for h in ("h112", "h128"))
    assert cost.table.entries[key].median_us == pytest.approx((low + high) / 2)
    assert value == pytest.approx(table.arch_latency(arch) - table.entries[key.replace("h120", "h128")].median_us
                                  + (low + high) / 2)
    assert key not in table.entries  # the input table is never modified
    saved = LatencyTable.load(cost.save())
    assert saved.header["derived_from"] == table.source and saved.header["timed_by_scale"]["keys"] == 1


def test_latency_cost_really_times_a_missing_key_with_the_tables_backend(tmp_path: Path) -> None:
    """No monkeypatch: the missing width goes through the builder's job and the real ORT backend."""
    import dataclasses

    from onnxnas.lut.table import LatencyTable
    from onnxnas.scale import latency

    table = LatencyTable.load(ROOT / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json")
    arch = load_arch(TINY)
    wider = dataclasses.replace(arch, layers=arch.layers[:4] + (dataclasses.replace(arch.layers[4], hidden_chs=120),)
                                + arch.layers[5:])
    key = "irb:1x32x4x4:o32:k5:s1:h120:se0:relu:res1:fp32"
    cost = latency.TimedLatencyCost(table, tmp_path, load_space("tiny"), "tiny")
    assert math.isfinite(cost.exact(wider)) and cost.timed == 1
    entry = cost.table.entries[key]
    assert entry.ok and not entry.interpolated and entry.median_us > 0 and entry.count >= table.protocol.runs
    assert json.loads(cost.config.journal_path.read_text().splitlines()[-1])["key"] == key  # journaled as it finished


def test_a_cost_that_is_not_monotone_is_flagged_not_fatal(tiny: WidthPlan) -> None:
    class Bumpy:
        """params, less 2,000 whenever the head's width is a multiple of 16: widening it by 8 can make it cheaper."""

        kind, unit = "params", ""

        def exact(self, arch: object) -> float:
            value = CountCost("params").exact(arch)
            return value - 2_000 if arch.head.hidden_chs % 16 == 0 else value

    fit = exact_fit(tiny, [0.3, 0.5, 0.6, 0.7, 0.9])
    solution = solve_fit(tiny, fit, Bumpy(), Budget("params", 20_000.0), 8, "fit")
    assert solution.cost <= 20_000.0 and not solution.monotone
    assert solve_fit(tiny, fit, CountCost("params"), Budget("params", 20_000.0), 8, "fit").monotone


@pytest.mark.parametrize("state, message", [
    ("{not json", "scale state"),
    ('{"format": 1, "arch_hash": "0000", "config": {}, "done": 0, "metrics": []}', "belongs to another arch"),
    ("DONE_WITHOUT_FITS", "iter_1.json"),
])
def test_a_damaged_state_is_one_line_on_resume(state: str, message: str, tiny: WidthPlan, tmp_path: Path) -> None:
    from onnxnas.data import synthetic
    from onnxnas.scale.iterate import ScaleConfig, run_iterations

    cfg = ScaleConfig(iterations=2)
    if state == "DONE_WITHOUT_FITS":
        state = json.dumps({"format": 1, "arch_hash": tiny.arch.hash, "config": cfg.to_dict(), "done": 1,
                            "metrics": [{"iteration": 1}]})
    (tmp_path / "state.json").write_text(state)
    with pytest.raises(OnnxNasError, match=message) as err:
        run_iterations(tiny, synthetic(32, samples=32), cfg, tmp_path, resume=True, progress=False)
    assert "\n" not in str(err.value)
