"""Read a TensorFlow checkpoint (a "tensor bundle") with numpy and the standard library, without TensorFlow.

A TF2 checkpoint at PREFIX is `PREFIX.index` plus data shards `PREFIX.data-0000i-of-0000N`. The index is a
LevelDB-format table (sorted keys, prefix-compressed blocks, an index block and a 48-byte footer); its
values are protobuf messages: under the empty key a `BundleHeaderProto` (number of shards, endianness),
under each tensor name a `BundleEntryProto` (dtype, shape, shard id, byte offset and size in that shard,
masked CRC32C of the bytes). The shards are the tensors' raw bytes, back to back. Only the few protobuf
fields needed are decoded here, by hand: the format is stable and small, and this keeps TensorFlow (and a
protobuf dependency) out of the project.

`TFCheckpoint(prefix)` is a read-only mapping from tensor name to numpy array (read lazily, checksum
verified). String tensors (the `_CHECKPOINTABLE_OBJECT_GRAPH` of object-based checkpoints) are listed but
not decoded; slices of partitioned variables are not supported (Keras never writes them).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glamor_lightning.errors import CheckpointError
from glamor_lightning.models.crc32c import crc32c, unmask

#: the last 8 bytes of a LevelDB table, little-endian
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC32C (4 bytes)

#: TensorFlow DataType enum values (types.proto) that have a plain numpy layout
NUMPY_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_STRING = 7


class TFCheckpointError(CheckpointError):
    """A TensorFlow checkpoint that cannot be read: missing files, a damaged index or shard, a bad checksum."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: `BundleEntryProto`'s fields."""

    name: str
    dtype_code: int  #: TensorFlow DataType enum value
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  #: masked CRC32C of the bytes, as stored; None if absent
    sliced: bool = False  #: a partitioned variable, whose data lives in slice entries

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy dtype, or None for a type without a plain layout (strings, complex, ...)."""
        return NUMPY_DTYPES.get(self.dtype_code)


# -- protobuf and LevelDB decoding --------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at `pos`."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    """Protobuf int32/int64 fields are two's complement in 64 bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a protobuf message: ints for varint and fixed32/64 fields, bytes
    for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield number, value


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: `repeated Dim dim = 2` (Dim: `int64 size = 1`), `bool unknown_rank = 3`."""
    dims = []
    for number, value in _fields(buf):
        if number == 2:
            size = 0
            for dim_number, dim_value in _fields(value):
                if dim_number == 1:
                    size = _signed64(dim_value)
            dims.append(size)
        elif number == 3 and value:
            raise ValueError("a tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> TensorEntry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6 (fixed32), slices 7."""
    values: dict[str, object] = {"dtype_code": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0}
    crc, sliced = None, False
    for number, value in _fields(buf):
        if number == 1:
            values["dtype_code"] = value
        elif number == 2:
            values["shape"] = _shape(value)
        elif number in (3, 4, 5):
            values[{3: "shard_id", 4: "offset", 5: "size"}[number]] = _signed64(value)
        elif number == 6:
            crc = value
        elif number == 7:
            sliced = True
    return TensorEntry(name=name, crc32c=crc, sliced=sliced, **values)


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each entry of a LevelDB block: shared/unshared key lengths, value length, then the
    key suffix and the value; a restart-point array (uint32s and their count) ends the block."""
    if len(block) < 4:
        raise ValueError("block shorter than its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("restart array larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError("entry overruns its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _block(table: bytes, handle: bytes, what: str) -> bytes:
    """The contents of the block a BlockHandle (varint offset, varint size) points to, checksum verified."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + BLOCK_TRAILER_SIZE > len(table):
        raise ValueError(f"{what} block [{offset}, {offset + size}) lies past the end of the file")
    data = table[offset : offset + size + 1]  # contents and the compression byte, which the CRC covers
    compression = data[-1]
    if compression != 0:
        raise ValueError(f"{what} block is compressed (type {compression}); TensorFlow bundles never are")
    (stored,) = struct.unpack_from("<I", table, offset + size + 1)
    if crc32c(data) != unmask(stored):
        raise ValueError(f"{what} block at offset {offset} fails its CRC32C check")
    return data[:-1]


def read_index(path: str | os.PathLike) -> tuple[int, dict[str, TensorEntry]]:
    """(number of shards, entries by tensor name) of a bundle's `.index` file."""
    table = Path(path).read_bytes()
    if len(table) < FOOTER_SIZE or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC:
        raise ValueError("no LevelDB table footer (not a TensorFlow .index file, or truncated)")
    footer = table[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # the metaindex block handle (offset, size): unused by TensorFlow
    _, start = _varint(footer, pos)
    _, pos = _varint(footer, start)  # then the index block handle
    _, pos = _varint(footer, pos)
    index_handle = footer[start:pos]
    num_shards, entries = None, {}
    for _, handle in _block_entries(_block(table, index_handle, "index")):
        for key, value in _block_entries(_block(table, handle, "data")):
            if key == b"":
                num_shards = 1
                for number, field in _fields(value):
                    if number == 1:
                        num_shards = int(field)
                    elif number == 2 and field != 0:
                        raise ValueError("the bundle is big-endian; only little-endian bundles are supported")
                continue
            name = key.decode("utf-8")
            entries[name] = _entry(name, value)
    if num_shards is None:
        raise ValueError("no bundle header (the entry under the empty key)")
    return num_shards, entries


# -- the checkpoint ----------------------------------------------------------------------------------------


def index_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.index")


def shard_path(prefix: str | os.PathLike, shard: int, num_shards: int) -> Path:
    return Path(f"{os.fspath(prefix)}.data-{shard:05d}-of-{num_shards:05d}")


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The prefix of a checkpoint named by its prefix, its `.index` file or one of its data shards."""
    text = os.fspath(path)
    if text.endswith(".index"):
        return Path(text[: -len(".index")])
    head, sep, tail = text.rpartition(".data-")
    if sep and "-of-" in tail:
        return Path(head)
    return Path(text)


class TFCheckpoint(Mapping[str, np.ndarray]):
    """A TensorFlow checkpoint as a read-only mapping: tensor name → numpy array (read on access).

    `prefix` is the checkpoint path without `.index` (the `.index` or a shard path is accepted too).
    `verify` checks each tensor's CRC32C when it is read. Errors (`TFCheckpointError`) name the file and
    the tensor. String tensors are listed (`entries`) but reading one is an error.
    """

    def __init__(self, prefix: str | os.PathLike, verify: bool = True) -> None:
        self.prefix = checkpoint_prefix(prefix)
        self.verify = verify
        index = index_path(self.prefix)
        if not index.is_file():
            raise FileNotFoundError(
                f"TensorFlow checkpoint {self.prefix}: no index file {index} (give the path without .index)"
            )
        try:
            self.num_shards, self.entries = read_index(index)
        except (ValueError, struct.error, UnicodeDecodeError) as err:
            raise TFCheckpointError(f"{index} is not a readable TensorFlow checkpoint index: {err}") from None
        missing = [
            str(shard_path(self.prefix, i, self.num_shards))
            for i in sorted({e.shard_id for e in self.entries.values() if not e.sliced and e.size})
            if not shard_path(self.prefix, i, self.num_shards).is_file()
        ]
        if missing:
            raise FileNotFoundError(f"TensorFlow checkpoint {self.prefix}: missing data shard(s) {', '.join(missing)}")

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        where = f"tensor {name!r} of {self.prefix}"
        if entry.sliced:
            raise TFCheckpointError(f"{where} is a partitioned variable (slices); not supported")
        if entry.dtype is None:
            raise TFCheckpointError(f"{where} has TensorFlow dtype {entry.dtype_code}, which has no numpy layout")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * entry.dtype.itemsize != entry.size:
            raise TFCheckpointError(
                f"{where}: {entry.size} bytes stored for shape {entry.shape} of {entry.dtype} "
                f"({count * entry.dtype.itemsize} expected)"
            )
        if not 0 <= entry.shard_id < self.num_shards:
            raise TFCheckpointError(f"{where}: shard {entry.shard_id} of a {self.num_shards}-shard checkpoint")
        shard = shard_path(self.prefix, entry.shard_id, self.num_shards)
        with open(shard, "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
        if len(data) != entry.size:
            raise TFCheckpointError(
                f"{where}: {shard} has {shard.stat().st_size} bytes, but the tensor lies at bytes "
                f"[{entry.offset}, {entry.offset + entry.size}) (truncated download?)"
            )
        if self.verify and entry.crc32c is not None and crc32c(data) != unmask(entry.crc32c):
            raise TFCheckpointError(f"{where}: its bytes in {shard} fail their CRC32C check (damaged file?)")
        return np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape).astype(entry.dtype.newbyteorder("="))

    def __contains__(self, name: object) -> bool:
        return name in self.entries  # without reading the tensor (Mapping's default would)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of a tensor, without reading it."""
        return self.entries[name].shape
