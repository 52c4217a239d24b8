"""compressed.bin: exact round trips, sizes near the bound, truncation and corruption refused."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from onnxnas.compress.codec import QuantTensor, decode, encode, entropy_coded_bytes, int8_mask_bytes
from onnxnas.compress.size import bound_bits
from onnxnas.errors import OnnxNasError


def random_tensor(name: str, shape: tuple[int, ...], bits: int, nonzero_fraction: float, seed: int) -> QuantTensor:
    """Non-zero integers uniform on the b-bit grid, zeros elsewhere, exactly round(s N) non-zeros."""
    rng = np.random.default_rng(seed)
    count = math.prod(shape)
    limit = max(1, 2 ** (bits - 1) - 1)
    magnitude = rng.integers(1, limit + 1, count)
    values = np.where(rng.random(count) < 0.5, -magnitude, magnitude)
    values[rng.permutation(count)[:count - round(nonzero_fraction * count)]] = 0
    return QuantTensor(name, values.astype(np.int8).reshape(shape), bits)


@pytest.fixture(scope="module")
def mixed() -> list[QuantTensor]:
    tensors = [random_tensor(f"conv{b}_{s}", (16, 8, 3, 3), b, s, seed=10 * b + int(10 * s))
               for b in (1, 2, 4, 8) for s in (0.0, 0.1, 0.5, 1.0)]
    return tensors + [random_tensor("fc.weight", (10, 7), 8, 0.3, 1), random_tensor("scalar", (), 4, 1.0, 2),
                      random_tensor("empty", (0, 4), 4, 1.0, 3)]


def test_round_trip_is_exact(mixed):
    decoded = decode(encode(mixed).data)
    assert list(decoded) == [t.name for t in mixed]
    for tensor in mixed:
        assert decoded[tensor.name].dtype == np.int8
        assert decoded[tensor.name].shape == tensor.values.shape
        assert np.array_equal(decoded[tensor.name], tensor.values), tensor.name


@pytest.mark.parametrize("bits,nonzero_fraction", [(8, 0.1), (4, 0.5), (2, 0.9), (1, 0.5), (8, 1.0), (4, 0.0)])
def test_size_close_to_bound(bits, nonzero_fraction):
    tensor = random_tensor("w", (256, 1024), bits, nonzero_fraction, seed=bits)
    coded = encode([tensor])
    bound = bound_bits(tensor.values.size, bits, nonzero_fraction)
    assert np.array_equal(decode(coded.data)["w"], tensor.values)
    assert coded.header_bytes == (4 + 2 + 4) + (2 + 1 + 1 + 2 * 4 + 1 + 8 + 4) + 4  # file head, record head ('w', 2 dims), crc
    assert 8 * len(coded.data) <= bound * 1.002 + 8 * 64
    assert coded.value_bytes == math.ceil(round(nonzero_fraction * tensor.values.size) * bits / 8)


def test_companion_sizes():
    tensor = random_tensor("w", (100, 80), 4, 0.5, seed=5)
    assert int8_mask_bytes([tensor]) == 4000 + 1000  # one byte per non-zero plus an N-bit mask
    # 14 equally likely codes: log2(14) bits each instead of 4, plus 16 histogram counts of 12 bits (nnz = 4000)
    coded = encode([tensor])
    values = entropy_coded_bytes([tensor]) - (len(coded.data) - coded.value_bytes) - 16 * 12 // 8
    assert values == pytest.approx(4000 * math.log2(14) / 8, abs=12)
    skewed = QuantTensor("s", np.where(np.arange(8000) % 10 == 0, 7, 1).astype(np.int8), 4)
    assert entropy_coded_bytes([skewed]) < len(encode([skewed]).data) / 2


def test_refuses_values_off_their_grid_and_repeated_names():
    with pytest.raises(OnnxNasError, match=r"'w' has integers beyond \+-7, outside its 4-bit grid"):
        encode([QuantTensor("w", np.array([8, 0], np.int8), 4)])
    with pytest.raises(OnnxNasError, match="is int16"):
        encode([QuantTensor("w", np.array([1], np.int16), 4)])
    with pytest.raises(OnnxNasError, match=r"names repeat: \['a'\]"):
        encode([QuantTensor("a", np.array([1], np.int8), 2)] * 2)


def test_truncated_file_raises_at_every_cut(mixed):
    data = encode(mixed).data
    for cut in (0, 3, 9, 14, 40, len(data) // 2, len(data) - 5, len(data) - 1):
        with pytest.raises(OnnxNasError, match=r"^model/compressed.bin: compressed weights file is truncated or corrupt"):
            decode(data[:cut], "model/compressed.bin")


def test_flipped_byte_raises(mixed):
    data = encode(mixed).data
    for position in (0, 5, 12, 30, len(data) // 3, len(data) - 2):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x10
        with pytest.raises(OnnxNasError, match="truncated or corrupt"):
            decode(bytes(corrupt), "compressed.bin")


def test_header_sizes_are_bounded_even_with_a_valid_crc():
    """A crafted file with a matching crc but absurd sizes is refused before anything is allocated."""
    import zlib

    def sealed(body: bytes) -> bytes:
        return body + struct.pack("<I", zlib.crc32(body))

    head = struct.pack("<4sHI", b"ONXC", 1, 1)
    huge = struct.pack("<H", 1) + b"w" + struct.pack("<BII", 2, 2**31, 2**31) + struct.pack("<BQI", 8, 0, 0)
    with pytest.raises(OnnxNasError, match="claims 4611686018427387904 elements"):
        decode(sealed(head + huge))
    many = struct.pack("<4sHI", b"ONXC", 1, 10**9)
    with pytest.raises(OnnxNasError, match="1000000000 tensors cannot fit in 0 bytes"):
        decode(sealed(many))
    lying = struct.pack("<H", 1) + b"w" + struct.pack("<BI", 1, 100) + struct.pack("<BQI", 8, 100, 0)
    with pytest.raises(OnnxNasError, match="'w' values needs 100 bytes, 0 remain"):
        decode(sealed(head + lying))
    with pytest.raises(OnnxNasError, match="format version 9 is not supported"):
        decode(sealed(struct.pack("<4sHI", b"ONXC", 9, 0)))
