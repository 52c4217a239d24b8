"""One split per dataset, whatever the seed: train / val / test, disjoint and stable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onnxnas.data import load_data, split_indices
from onnxnas.deploy.inputs import sample_inputs
from onnxnas.errors import OnnxNasError
from onnxnas.space import load_space
from onnxnas.space.choose import random_arch


def test_split_sizes_are_disjoint_and_cover_the_data() -> None:
    train, val, test = split_indices(1797)
    assert (len(train), len(val), len(test)) == (1259, 179, 359)
    assert sorted(train + val + test) == list(range(1797))
    assert split_indices(1797) == (train, val, test)  # no seed argument, no hidden state


def test_digits_split_is_the_same_for_search_train_and_finalize() -> None:
    data = load_data("digits", 8)
    assert (len(data.train), len(data.val), len(data.test)) == (1259, 179, 359)
    assert data.train.indices == split_indices(1797)[0]
    first = data.train[0][0]
    assert torch.equal(load_data("digits", 8).train[0][0], first)
    arch = random_arch(load_space("tiny"), __import__("random").Random(0))
    samples = sample_inputs("digits", arch, calibration=2, verification=2)  # calibration from train, checks from val
    full = load_data("digits", arch.resolution)
    np.testing.assert_array_equal(samples.calibration[0][0], full.train[0][0].numpy())
    np.testing.assert_array_equal(samples.verification[1][0], full.val[1][0].numpy())


def test_synthetic_split_does_not_depend_on_a_seed() -> None:
    a, b = load_data("synthetic", 8), load_data("synthetic", 8)
    assert (len(a.train), len(a.val), len(a.test)) == (359, 51, 102)
    assert torch.equal(a.test[3][0], b.test[3][0]) and a.test[3][1] == b.test[3][1]


def test_image_folder_split(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = load_data(str(tmp_path), 8)
    names = [sorted(str(f) for f, _ in part.files) for part in (data.train, data.val, data.test)]
    assert [len(n) for n in names] == [7, 1, 2]
    assert not set(names[0]) & set(names[1]) | set(names[0]) & set(names[2]) | set(names[1]) & set(names[2])
    assert (data.train.augment, data.val.augment, data.test.augment) == (True, False, False)


def test_too_few_images_to_split() -> None:
    with pytest.raises(OnnxNasError, match="2 sample\\(s\\) cannot be split into train, validation and test"):
        split_indices(2)
