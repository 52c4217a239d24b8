"""Checkpoint loading: plain-tensor only, exact matching, supernet widths sliced to the arch."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from onnxnas.blocks import build_model
from onnxnas.deploy.checkpoint import fit_state_dict, hidden_dims, load_checkpoint
from onnxnas.errors import OnnxNasError
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch

CHOICES = [{"kernel_size": 3}, {"kernel_size": 3, "hidden_chs": 32, "se": True}, "skip",
           {"kernel_size": 5, "hidden_chs": 48, "se": True}, {"kernel_size": 3, "hidden_chs": 32}, "skip"]


def tiny_arch(**widths: int):
    """The test arch; ``l1=64`` etc. override layer hidden widths."""
    choices = [dict(c, hidden_chs=widths.get(f"l{i}", c.get("hidden_chs", 0))) if isinstance(c, dict) else c
               for i, c in enumerate(CHOICES)]
    return make_arch(load_space("tiny"), choices)


def save(path: Path, arch, state, hidden_index=None) -> Path:
    torch.save({"onnxnas_checkpoint": 1, "arch_hash": arch.hash, "state_dict": state,
                "hidden_index": hidden_index or {}}, path)
    return path


def test_plain_state_dict_round_trips(tmp_path: Path) -> None:
    arch = tiny_arch()
    state = build_model(arch).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    fitted = fit_state_dict(load_checkpoint(tmp_path / "plain.pt"), arch)
    assert fitted.keys() == state.keys()
    assert all(torch.equal(fitted[k], state[k]) for k in state)


def test_hidden_dims_follow_the_block_code() -> None:
    spec = tiny_arch().layers[3]  # irb with SE
    dims = hidden_dims(spec)
    assert dims["conv_pw.0.weight"] == (0,) and dims["conv_dw.0.weight"] == (0,)
    assert dims["se.conv_reduce.weight"] == (1,) and dims["se.conv_expand.bias"] == (0,)
    assert dims["conv_pwl.0.weight"] == (1,) and dims["conv_pwl.1.weight"] == ()


def test_supernet_checkpoint_is_sliced_to_the_kept_channels(tmp_path: Path) -> None:
    """The sliced network computes exactly what the wide one computes with a hidden-channel mask."""
    arch, wide_arch = tiny_arch(), tiny_arch(l1=64, l3=96)
    wide = build_model(wide_arch).eval()
    for m in wide.modules():  # non-trivial BN statistics, so a wrong slice would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    kept = {1: list(range(1, 64, 2)), 3: list(range(0, 96, 2))}
    ckpt = save(tmp_path / "wide.pt", wide_arch, wide.state_dict(), {str(k): v for k, v in kept.items()})

    narrow = build_model(arch).eval()
    narrow.load_state_dict(fit_state_dict(load_checkpoint(ckpt), arch))
    assert narrow.blocks[1].conv_exp.conv.weight.shape[0] == 32
    assert narrow.blocks[3].conv_pw.conv.weight.shape[0] == 48
    assert narrow.blocks[3].se.conv_reduce.weight.shape[1] == 48
    for i, index in kept.items():
        mask = torch.zeros(wide_arch.layers[i].hidden_chs)
        mask[index] = 1.0
        wide.blocks[i].hidden_mask = mask
    x = torch.randn(2, *arch.input_shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(narrow(x), wide(x), atol=1e-5, rtol=1e-5)


def test_default_hidden_index_keeps_the_first_channels(tmp_path: Path) -> None:
    arch, wide_arch = tiny_arch(), tiny_arch(l4=64)
    state = build_model(wide_arch).state_dict()
    fitted = fit_state_dict(load_checkpoint(save(tmp_path / "c.pt", wide_arch, state)), arch)
    assert torch.equal(fitted["blocks.4.conv_pw.0.weight"], state["blocks.4.conv_pw.0.weight"][:32])
    assert torch.equal(fitted["blocks.4.conv_pwl.0.weight"], state["blocks.4.conv_pwl.0.weight"][:, :32])


def test_mismatch_names_the_first_tensor_and_both_shapes(tmp_path: Path) -> None:
    arch = tiny_arch()
    other = dataclasses.replace(arch, layers=(dataclasses.replace(arch.layers[0], kernel_size=5), *arch.layers[1:]))
    ckpt = save(tmp_path / "k5.pt", other, build_model(other).state_dict())
    with pytest.raises(OnnxNasError) as info:
        fit_state_dict(load_checkpoint(ckpt), arch)
    assert "'blocks.0.0.weight' has shape [16, 16, 5, 5], the arch needs [16, 16, 3, 3]" in str(info.value)


def test_narrower_checkpoint_and_missing_and_extra_tensors(tmp_path: Path) -> None:
    arch = tiny_arch()
    narrow_state = build_model(tiny_arch(l1=16)).state_dict()
    with pytest.raises(OnnxNasError, match=r"layer 1 has 16 hidden channels, fewer than the arch's 32"):
        fit_state_dict(load_checkpoint(save(tmp_path / "n.pt", arch, narrow_state)), arch)
    state = build_model(arch).state_dict()
    del state["head.fc.bias"]
    with pytest.raises(OnnxNasError, match=r"lacks tensor 'head.fc.bias' \(the arch needs shape \[10\]\)"):
        fit_state_dict(load_checkpoint(save(tmp_path / "m.pt", arch, state)), arch)
    state = build_model(arch).state_dict()
    state["blocks.2.0.weight"] = torch.zeros(3)
    with pytest.raises(OnnxNasError, match=r"has tensor 'blocks.2.0.weight' \(shape \[3\]\) that the arch does not"):
        fit_state_dict(load_checkpoint(save(tmp_path / "x.pt", arch, state)), arch)


def test_bad_hidden_index_and_version(tmp_path: Path) -> None:
    arch, wide_arch = tiny_arch(), tiny_arch(l1=64)
    state = build_model(wide_arch).state_dict()
    with pytest.raises(OnnxNasError, match=r"hidden_index\[1\] must list 32 distinct channels in \[0, 64\)"):
        fit_state_dict(load_checkpoint(save(tmp_path / "i.pt", wide_arch, state, {"1": [0] * 32})), arch)
    torch.save({"onnxnas_checkpoint": 99, "state_dict": state}, tmp_path / "v.pt")
    with pytest.raises(OnnxNasError, match="unsupported onnxnas_checkpoint version 99"):
        load_checkpoint(tmp_path / "v.pt")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"x": _Exploit(marker)}}, tmp_path / "evil.pt")
    with pytest.raises(OnnxNasError, match="not a plain-tensor checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
