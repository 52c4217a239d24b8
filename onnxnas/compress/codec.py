"""``compressed.bin``: the real coded size of a model's INT8 weights (docs/design.md §7, "Real size").

Layout (little-endian), then a crc32 of everything before it::

    magic b"ONXC" | u16 format version | u32 tensor count
    per tensor: u16 name length | name (utf-8) | u8 ndim | u32 dims... | u8 bits b | u64 non-zeros
                | u32 mask words | mask: range-coded (constriction, order-0 Bernoulli at the tensor's
                  own s = nnz/N), u32 words | values: nnz b-bit codes, bit-packed, ceil(nnz b / 8) bytes
    u32 crc32

The mask is coded only when 0 < nnz < N (otherwise the count says it all). A non-zero value v
of a b-bit grid (|v| <= 2^(b-1) - 1, or 1 at b = 1) is the b-bit code sign << (b-1) | (|v| - 1),
what an NPU would store. Decoding checks the crc32 before it parses anything and bounds every
size it reads, so a truncated or corrupt file is an error, never wrong tensors.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from collections.abc import Sequence

import constriction
import numpy as np

from onnxnas.compress.quantizer import max_level
from onnxnas.errors import OnnxNasError

MAGIC = b"ONXC"
FORMAT_VERSION = 1
MAX_NDIM = 8
MAX_ELEMENTS = 2**31  # per tensor and in total: the format's limit, checked before allocating
_FILE_HEAD = struct.Struct("<4sHI")
_CRC = struct.Struct("<I")
_DIM = struct.Struct("<I")
_TENSOR_TAIL = struct.Struct("<BQI")  # bits, non-zeros, mask words
_MIN_RECORD = 2 + 1 + _TENSOR_TAIL.size  # an unnamed scalar


@dataclasses.dataclass(frozen=True)
class QuantTensor:
    """A named int8 tensor whose integers lie on a b-bit grid (b = 1..8)."""

    name: str
    values: np.ndarray
    bits: int


@dataclasses.dataclass(frozen=True)
class EncodedFile:
    """The file's bytes and how they split: mask payload, value payload, the rest is headers."""

    data: bytes
    mask_bytes: int
    value_bytes: int

    @property
    def header_bytes(self) -> int:
        return len(self.data) - self.mask_bytes - self.value_bytes


def _bernoulli(nonzero: int, count: int) -> constriction.stream.model.Bernoulli:
    return constriction.stream.model.Bernoulli(nonzero / count, perfect=False)


def _check_tensor(tensor: QuantTensor) -> np.ndarray:
    if tensor.values.dtype != np.int8:
        raise OnnxNasError(f"tensor {tensor.name!r} is {tensor.values.dtype}, the codec takes int8")
    limit = max_level(tensor.bits)
    flat = tensor.values.reshape(-1)
    if flat.size and int(np.abs(flat.astype(np.int16)).max()) > limit:
        raise OnnxNasError(f"tensor {tensor.name!r} has integers beyond +-{limit}, outside its {tensor.bits}-bit grid",
                           fix="quantize it onto the b-bit grid, or declare more bits")
    return flat


def _codes(nonzero: np.ndarray, bits: int) -> np.ndarray:
    magnitude = np.abs(nonzero.astype(np.int16)) - 1
    return (((nonzero < 0).astype(np.int16) << (bits - 1)) | magnitude).astype(np.uint16)


def _pack(codes: np.ndarray, bits: int) -> bytes:
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    return np.packbits(((codes[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def _unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    planes = np.unpackbits(np.frombuffer(data, np.uint8), count=count * bits).reshape(count, bits)
    codes = planes.astype(np.int16) @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int16))
    magnitude = (codes & ((1 << (bits - 1)) - 1)) + 1
    return np.where(codes >> (bits - 1), -magnitude, magnitude).astype(np.int8)


def _encode_mask(mask: np.ndarray, nonzero: int) -> bytes:
    if nonzero in (0, mask.size):
        return b""
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(mask.astype(np.int32), _bernoulli(nonzero, mask.size))
    return encoder.get_compressed().astype("<u4").tobytes()


def _record(tensor: QuantTensor) -> tuple[bytes, bytes, np.ndarray]:
    """A tensor's record header and coded mask, and its non-zero integers (shared by both coded sizes)."""
    flat = _check_tensor(tensor)
    mask = flat != 0
    nonzero = int(mask.sum())
    coded_mask = _encode_mask(mask, nonzero)
    name = tensor.name.encode("utf-8")
    shape = tensor.values.shape
    head = (struct.pack("<H", len(name)) + name + struct.pack("<B", len(shape))
            + b"".join(_DIM.pack(d) for d in shape) + _TENSOR_TAIL.pack(tensor.bits, nonzero, len(coded_mask) // 4))
    return head, coded_mask, flat[mask]


def encode(tensors: Sequence[QuantTensor]) -> EncodedFile:
    """Code the tensors into one compressed.bin; :func:`decode` returns them exactly."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise OnnxNasError(f"tensor names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    parts = [_FILE_HEAD.pack(MAGIC, FORMAT_VERSION, len(tensors))]
    mask_bytes = value_bytes = 0
    for tensor in tensors:
        head, coded_mask, nonzero = _record(tensor)
        values = _pack(_codes(nonzero, tensor.bits), tensor.bits)
        parts += [head, coded_mask, values]
        mask_bytes += len(coded_mask)
        value_bytes += len(values)
    body = b"".join(parts)
    return EncodedFile(body + _CRC.pack(zlib.crc32(body)), mask_bytes, value_bytes)


class _Reader:
    """Bounded reads over the file body; running out means the header lied."""

    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def fail(self, what: str) -> OnnxNasError:
        return OnnxNasError(f"compressed weights file is truncated or corrupt: {what}", where=self.source,
                            fix="rerun onnxnas finalize to regenerate it")

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int, what: str) -> bytes:
        if count > self.left:
            raise self.fail(f"{what} needs {count} bytes, {self.left} remain")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> tuple:
        return layout.unpack(self.take(layout.size, what))


def _read_tensor(reader: _Reader, index: int, budget: int) -> tuple[str, np.ndarray]:
    (name_len,) = struct.unpack("<H", reader.take(2, f"tensor {index} name length"))
    try:
        name = reader.take(name_len, f"tensor {index} name").decode("utf-8")
    except UnicodeDecodeError:
        raise reader.fail(f"tensor {index} name is not utf-8") from None
    (ndim,) = struct.unpack("<B", reader.take(1, f"tensor {name!r} rank"))
    if ndim > MAX_NDIM:
        raise reader.fail(f"tensor {name!r} has rank {ndim} (at most {MAX_NDIM})")
    shape = tuple(reader.unpack(_DIM, f"tensor {name!r} shape")[0] for _ in range(ndim))
    count = math.prod(shape)
    bits, nonzero, mask_words = reader.unpack(_TENSOR_TAIL, f"tensor {name!r} header")
    if count > budget:
        raise reader.fail(f"tensor {name!r} claims {count} elements, over the format's limit")
    if not 1 <= bits <= 8 or nonzero > count:
        raise reader.fail(f"tensor {name!r} has {bits} bits and {nonzero} non-zeros of {count}")
    if (mask_words == 0) != (nonzero in (0, count)):
        raise reader.fail(f"tensor {name!r} mask length {mask_words} words does not fit {nonzero} of {count} non-zeros")
    mask_data = reader.take(4 * mask_words, f"tensor {name!r} mask")
    values = _unpack(reader.take(math.ceil(nonzero * bits / 8), f"tensor {name!r} values"), nonzero, bits)
    if mask_words:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(mask_data, "<u4").astype(np.uint32))
        mask = decoder.decode(_bernoulli(nonzero, count), count).astype(bool)
        if int(mask.sum()) != nonzero:
            raise reader.fail(f"tensor {name!r} mask decodes to {int(mask.sum())} non-zeros, the header says {nonzero}")
    else:
        mask = np.full(count, nonzero == count)
    flat = np.zeros(count, np.int8)
    flat[mask] = values
    return name, flat.reshape(shape)


def decode(data: bytes, source: str = "compressed.bin") -> dict[str, np.ndarray]:
    """The exact int8 tensors of a compressed.bin; OnnxNasError (naming ``source``) if it is truncated or corrupt."""
    reader = _Reader(data, source)
    if len(data) < _FILE_HEAD.size + _CRC.size:
        raise reader.fail(f"{len(data)} bytes, shorter than the file header")
    body, (crc,) = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])
    magic, version, count = _FILE_HEAD.unpack(body[:_FILE_HEAD.size])
    if magic != MAGIC:
        raise reader.fail(f"magic {magic!r} is not {MAGIC!r}")
    if zlib.crc32(body) != crc:
        raise reader.fail("crc32 mismatch")
    if version != FORMAT_VERSION:
        raise OnnxNasError(f"compressed weights format version {version} is not supported (this onnxnas reads "
                           f"{FORMAT_VERSION})", where=source, fix="decode it with the onnxnas that wrote it")
    reader = _Reader(body, source)
    reader.take(_FILE_HEAD.size, "file header")
    if count > reader.left // _MIN_RECORD:
        raise reader.fail(f"{count} tensors cannot fit in {reader.left} bytes")
    tensors: dict[str, np.ndarray] = {}
    budget = MAX_ELEMENTS
    for index in range(count):
        name, values = _read_tensor(reader, index, budget)
        if name in tensors:
            raise reader.fail(f"tensor name {name!r} repeats")
        tensors[name] = values
        budget -= values.size
    if reader.left:
        raise reader.fail(f"{reader.left} bytes follow the last tensor")
    return tensors


def entropy_coded_bytes(tensors: Sequence[QuantTensor]) -> int:
    """For information: the file's size with the non-zero values range-coded too.

    Each tensor's codes use a categorical over their empirical histogram, whose 2^b counts are
    charged at ceil(log2(nnz + 1)) bits each; mask and headers as in :func:`encode`.
    """
    total = _FILE_HEAD.size + _CRC.size
    for tensor in tensors:
        head, coded_mask, nonzero = _record(tensor)
        total += len(head) + len(coded_mask)
        if nonzero.size:
            codes = _codes(nonzero, tensor.bits).astype(np.int32)
            histogram = np.bincount(codes, minlength=2**tensor.bits).astype(np.float64)
            encoder = constriction.stream.queue.RangeEncoder()
            encoder.encode(codes, constriction.stream.model.Categorical(histogram / nonzero.size, perfect=False))
            total += 4 * encoder.num_words() + math.ceil(histogram.size * nonzero.size.bit_length() / 8)
    return total


def int8_mask_bytes(tensors: Sequence[QuantTensor]) -> int:
    """For comparison, plain sparse INT8: one int8 byte per non-zero plus a 1-bit-per-element mask, ceil(N / 8) bytes."""
    return sum(int(np.count_nonzero(t.values)) + math.ceil(t.values.size / 8) for t in tensors)
