"""CRC32C (Castagnoli), the checksum of TensorFlow checkpoints and LevelDB tables, in numpy.

TensorFlow stores a *masked* CRC (`mask`), so that the CRC of data that holds CRCs stays well distributed.
A byte-at-a-time loop in Python would take seconds on a large tensor, so long inputs are cut into K equal
chunks whose CRC registers advance together in numpy (one vector step per byte position); the chunks are
then chained in order, using that the register update is linear over GF(2):
`raw(state, chunk) = raw(state, zeros) XOR raw(0, chunk)`, where feeding L zero bytes is one fixed linear map
of the 32-bit state, applied with four 256-entry tables.
"""

from __future__ import annotations

import numpy as np

POLY = 0x82F63B78  # the Castagnoli polynomial, bit-reflected
MASK_DELTA = 0xA282EAD8
#: inputs shorter than this are done byte by byte: setting up the chunked path costs more
CHUNKED_FROM = 1 << 14


def _table() -> np.ndarray:
    values = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        values = np.where(values & 1, (values >> 1) ^ np.uint32(POLY), values >> 1).astype(np.uint32)
    return values


TABLE = _table()
_TABLE_LIST = [int(v) for v in TABLE]


def _raw_bytes(state: int, data: bytes) -> int:
    """The register after feeding `data` to it one byte at a time (no pre- or post-inversion)."""
    table = _TABLE_LIST
    for byte in data:
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def _zeros_map(length: int) -> list[np.ndarray]:
    """Four tables T_k with raw(x, zeros(length)) = XOR_k T_k[byte k of x]: the linear map of `length` zero bytes."""
    basis = np.uint32(1) << np.arange(32, dtype=np.uint32)  # the 32 single-bit states, advanced together
    for _ in range(length):
        basis = TABLE[basis & 0xFF] ^ (basis >> 8)
    values = np.arange(256, dtype=np.uint32)
    tables = []
    for k in range(4):
        out = np.zeros(256, dtype=np.uint32)
        for bit in range(8):
            out ^= np.where((values >> bit) & 1, basis[8 * k + bit], np.uint32(0)).astype(np.uint32)
        tables.append(out)
    return tables


def _raw_chunked(state: int, data: bytes) -> int:
    n = len(data)
    length = max(64, int(np.sqrt(n)))
    count = n // length
    columns = np.frombuffer(data, dtype=np.uint8, count=count * length).reshape(count, length).T.copy()
    chunk_states = np.zeros(count, dtype=np.uint32)  # raw(0, chunk_i), all chunks at once
    for column in columns:
        chunk_states = TABLE[(chunk_states ^ column) & 0xFF] ^ (chunk_states >> 8)
    t0, t1, t2, t3 = ([int(v) for v in table] for table in _zeros_map(length))
    for chunk_state in chunk_states.tolist():
        state = t0[state & 0xFF] ^ t1[(state >> 8) & 0xFF] ^ t2[(state >> 16) & 0xFF] ^ t3[state >> 24] ^ chunk_state
    return _raw_bytes(state, data[count * length :])


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of `data`; `value` is the CRC of preceding data, to extend it."""
    data = bytes(data)
    state = value ^ 0xFFFFFFFF
    state = _raw_chunked(state, data) if len(data) >= CHUNKED_FROM else _raw_bytes(state, data)
    return state ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """TensorFlow's masked form of a CRC (rotate right by 15, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """The CRC a masked value stands for (`mask`'s inverse)."""
    rotated = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
