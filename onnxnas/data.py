"""Datasets for search, retraining and INT8 calibration.

Nothing is downloaded: ``digits`` is scikit-learn's shipped 8x8 digits (real images),
``synthetic`` is generated, and anything else is a user's ImageFolder-layout directory.

Every dataset has one fixed split, whatever ``--seed`` a command runs with, so a search at
seed 0 and a retrain at seed 1 see the same training images: ``train`` (a search divides
it into weight and architecture batches), ``val`` (selection and verification) and
``test`` (touched only for a final report). The seed changes initialization and batch
order, never which images are held out.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import read_regular_bytes
from onnxnas.schema import MAX_CLASSES

MAX_IMAGES = 2_000_000  # ImageNet-1k's training set is 1.28 M
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 64_000_000  # a decompression bomb is a small file that decodes to billions of pixels
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_SEED = 0  # fixed: the split must not move with --seed
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class DataSplits:
    """``train`` feeds weights and architecture weights; ``val`` selects; ``test`` is for final reports only."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int


class _ResizedImages(Dataset):
    """Small source images kept as they are, resized (and widened to ``in_chs``) per item.

    Resizing lazily keeps memory at the source size: digits at 288x288 would take ~1.8 GB.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, resolution: int, in_chs: int,
                 noise: float = 0.0, seed: int = 0):
        self.images, self.labels, self.resolution, self.in_chs = images, labels, resolution, in_chs
        self.noise, self.seed = noise, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = F.interpolate(self.images[index:index + 1], size=(self.resolution, self.resolution),
                              mode="bilinear", align_corners=False)[0]
        if image.shape[0] == 1:
            image = image.expand(self.in_chs, -1, -1)
        if self.noise:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)  # same noise every epoch
            image = image + self.noise * torch.randn(image.shape, generator=gen)
        return image.contiguous(), self.labels[index]


def split_indices(n: int) -> tuple[list[int], list[int], list[int]]:
    """(train, val, test) indices of an ``n``-item dataset: one seeded permutation, the same for every run.

    The test split is the permutation's head and val the next part, so each is at least one item.
    """
    if n < 3:
        raise OnnxNasError(f"{n} sample(s) cannot be split into train, validation and test",
                           fix="use a dataset with 3 or more images (tens per class for a meaningful accuracy)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_test = max(1, int(n * TEST_FRACTION))
    n_val = max(1, int(n * VAL_FRACTION))
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _splits(name: str, dataset: Dataset, n: int, num_classes: int) -> DataSplits:
    train, val, test = split_indices(n)
    return DataSplits(name, Subset(dataset, train), Subset(dataset, val), Subset(dataset, test), num_classes)


def digits(resolution: int, in_chs: int = 3) -> DataSplits:
    """scikit-learn's 1797 handwritten 8x8 digits, standardized to [-1, 1] and resized (1259/179/359)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1) - 0.5) / 0.5
    dataset = _ResizedImages(images, torch.from_numpy(bunch.target.astype(np.int64)), resolution, in_chs)
    return _splits("digits", dataset, len(dataset), 10)


def synthetic(resolution: int, in_chs: int = 3, *, num_classes: int = 10, samples: int = 512) -> DataSplits:
    """Learnable random data: a fixed 8x8 prototype per class, upsampled, plus per-image noise (smoke tests).

    The images are a fixed function of (class count, samples), like any dataset on disk.
    """
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    prototypes = torch.randn(num_classes, in_chs, 8, 8, generator=gen)
    labels = torch.randint(0, num_classes, (samples,), generator=gen)
    dataset = _ResizedImages(prototypes[labels], labels, resolution, in_chs, noise=0.5, seed=SPLIT_SEED)
    return _splits("synthetic", dataset, samples, num_classes)


class ImageFolder(Dataset):
    """``root/<class>/<image>`` with PIL loading, resize, and optional flip/crop augmentation."""

    def __init__(self, root: Path, resolution: int, files: list[tuple[Path, int]], augment: bool):
        self.root, self.resolution, self.files, self.augment = root, resolution, files, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.files[index]
        data = read_regular_bytes(path, "image", MAX_IMAGE_BYTES)  # a FIFO or device here would hang the loader
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    if image.width * image.height > MAX_IMAGE_PIXELS:
                        raise ValueError(f"{image.width}x{image.height} pixels, more than {MAX_IMAGE_PIXELS}")
                    rgb = image.convert("RGB").resize((self.resolution, self.resolution), Image.BILINEAR)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            raise OnnxNasError(f"cannot read image: {str(exc)[:200]}", where=str(path),
                               fix="remove or replace the file") from exc
        tensor = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.augment:
            if torch.rand(()) < 0.5:
                tensor = tensor.flip(2)
            pad = max(1, self.resolution // 8)
            padded = F.pad(tensor.unsqueeze(0), (pad, pad, pad, pad), mode="reflect").squeeze(0)
            dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            tensor = padded[:, dy:dy + self.resolution, dx:dx + self.resolution]
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (tensor - mean) / std, label


def image_folder(root: Path, resolution: int) -> DataSplits:
    """``root/<class>/<image>``; the training split is augmented, val and test are not."""
    if not root.is_dir():
        raise OnnxNasError("data directory not found", where=str(root),
                           fix="pass 'digits', 'synthetic' or an ImageFolder directory (root/<class>/<image>)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) > MAX_CLASSES:
        raise OnnxNasError(f"found {len(classes)} class folders, more than {MAX_CLASSES}", where=str(root),
                           fix="pass the folder whose subfolders are the classes")
    files = []
    for label, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append((f, label))
                if len(files) > MAX_IMAGES:
                    raise OnnxNasError(f"holds more than {MAX_IMAGES} images", where=str(root),
                                       fix="use a subset of the data for search")
    if len(classes) < 2 or not files:
        raise OnnxNasError(f"found {len(classes)} class folder(s) and {len(files)} image(s)", where=str(root),
                           fix="use the layout root/<class>/<image> with at least two classes")
    train, val, test = ([files[i] for i in part] for part in split_indices(len(files)))
    return DataSplits(root.name, ImageFolder(root, resolution, train, augment=True),
                      ImageFolder(root, resolution, val, augment=False),
                      ImageFolder(root, resolution, test, augment=False), len(classes))


def load_data(source: str, resolution: int, in_chs: int = 3) -> DataSplits:
    """``digits``, ``synthetic`` or an ImageFolder path, at the space's resolution, with its fixed split.

    There is no seed: search, train, finalize and scale must all see the same split.
    """
    if source == "digits":
        return digits(resolution, in_chs)
    if source == "synthetic":
        return synthetic(resolution, in_chs)
    if in_chs != 3:
        raise OnnxNasError(f"image folders give RGB images but the space takes {in_chs} channels", where=source)
    return image_folder(Path(source), resolution)
