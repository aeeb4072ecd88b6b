"""The TF-free checkpoint reader against what TensorFlow itself wrote and read.

The fixture (tests/fixtures/authors_tf, made once by `make_fixture.py` with TensorFlow 2.15, which CI does not
have): `Model` is the authors' GLAMOR-Net with random weights saved by their `model.save_weights`;
`two_shards/Bundle` is a small two-shard bundle written by TF's own save ops; `tensors.json` holds every
tensor's dtype, shape and sums (or values) as `tf.train.load_checkpoint` read them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from glamor_lightning.models.crc32c import _raw_bytes, crc32c, mask, unmask
from glamor_lightning.models.tf_checkpoint import TFCheckpoint, TFCheckpointError, checkpoint_prefix

FIXTURE = Path(__file__).parents[1] / "fixtures" / "authors_tf"
META = json.loads((FIXTURE / "tensors.json").read_text())


def test_crc32c_known_values_and_chunked_path():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 test vector
    assert crc32c(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert crc32c(data) == _raw_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF  # chunked numpy path = byte loop
    assert crc32c(data[40_000:], crc32c(data[:40_000])) == crc32c(data)
    assert unmask(mask(0xE3069283)) == 0xE3069283 and mask(0xE3069283) != 0xE3069283


def test_reads_every_tensor_tensorflow_wrote():
    ckpt = TFCheckpoint(FIXTURE / "Model")
    tensors = META["tensors"]
    assert ckpt.num_shards == 1
    assert sorted(ckpt) == sorted(tensors) and len(ckpt) == 81
    for name, info in tensors.items():
        assert list(ckpt.shape(name)) == info["shape"], name
        if info["dtype"] == "string":
            continue
        value = ckpt[name]  # CRC32C verified
        assert value.dtype == np.float32 and list(value.shape) == info["shape"]
        total = value.astype(np.float64)
        assert total.sum() == pytest.approx(info["sum"], rel=1e-9, abs=1e-9), name
        assert np.abs(total).sum() == pytest.approx(info["abs_sum"], rel=1e-9), name
    assert ckpt.shape("FaceEncodingNet/blocks/4/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE") == (3, 3, 256, 256)


def test_two_shards_and_dtypes():
    ckpt = TFCheckpoint(FIXTURE / "two_shards" / "Bundle")
    assert ckpt.num_shards == 2
    assert {ckpt.entries[n].shard_id for n in ckpt} == {0, 1}
    expected = META["two_shards"]
    assert sorted(ckpt) == sorted(expected)
    dtypes = {"a/float32": "float32", "a/int64": "int64", "b/float64": "float64", "b/int32": "int32"}
    for name, value in expected.items():
        got = ckpt[name]
        np.testing.assert_array_equal(got, np.array(value, dtype=got.dtype).reshape(got.shape))
        if name in dtypes:
            assert got.dtype == np.dtype(dtypes[name])
    assert ckpt["b/scalar"].shape == () and ckpt["b/empty"].shape == (0, 3)
    assert ckpt["a/int64"].tolist() == [-5, 2**40]


def test_prefix_from_index_or_shard_path():
    assert checkpoint_prefix("w/Model.index") == Path("w/Model")
    assert checkpoint_prefix("w/Model.data-00001-of-00002") == Path("w/Model")
    assert checkpoint_prefix("w/Model") == Path("w/Model")
    assert sorted(TFCheckpoint(FIXTURE / "two_shards" / "Bundle.index")) == sorted(META["two_shards"])


def test_string_tensor_is_listed_not_read():
    ckpt = TFCheckpoint(FIXTURE / "Model")
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in ckpt and "nothing" not in ckpt  # membership reads no tensor
    with pytest.raises(TFCheckpointError, match="'_CHECKPOINTABLE_OBJECT_GRAPH' .* dtype 7, which has no numpy"):
        ckpt["_CHECKPOINTABLE_OBJECT_GRAPH"]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A copy of the two-shard bundle to damage."""
    for f in (FIXTURE / "two_shards").iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "Bundle"


def test_missing_files_named(bundle: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"no index file .*nothing\.index"):
        TFCheckpoint(tmp_path / "nothing")
    os.remove(f"{bundle}.data-00001-of-00002")
    with pytest.raises(FileNotFoundError, match=r"missing data shard\(s\) .*Bundle\.data-00001-of-00002"):
        TFCheckpoint(bundle)


def test_truncated_shard_named(bundle: Path):
    shard = Path(f"{bundle}.data-00001-of-00002")
    shard.write_bytes(shard.read_bytes()[:20])
    ckpt = TFCheckpoint(bundle)
    entry = max((ckpt.entries[n] for n in ckpt if ckpt.entries[n].shard_id == 1), key=lambda e: e.offset)
    with pytest.raises(
        TFCheckpointError,
        match=rf"tensor '{entry.name}' .* has 20 bytes, but the tensor lies at bytes \[{entry.offset}, .*truncated",
    ):
        ckpt[entry.name]


def test_damaged_tensor_fails_its_checksum(bundle: Path):
    ckpt = TFCheckpoint(bundle)
    entry = ckpt.entries["b/float64"]
    shard = Path(f"{bundle}.data-{entry.shard_id:05d}-of-00002")
    data = bytearray(shard.read_bytes())
    data[entry.offset + 3] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(TFCheckpointError, match=r"tensor 'b/float64' .* fail their CRC32C check"):
        ckpt["b/float64"]
    assert not np.array_equal(TFCheckpoint(bundle, verify=False)["b/float64"], META["two_shards"]["b/float64"])


def test_damaged_index(bundle: Path):
    index = Path(f"{bundle}.index")
    good = index.read_bytes()
    index.write_bytes(good[:-1] + b"\x00")
    with pytest.raises(TFCheckpointError, match=r"not a readable TensorFlow checkpoint index: no LevelDB table footer"):
        TFCheckpoint(bundle)
    damaged = bytearray(good)
    damaged[10] ^= 0x01  # inside the first data block
    index.write_bytes(bytes(damaged))
    with pytest.raises(TFCheckpointError, match=r"block at offset 0 fails its CRC32C check"):
        TFCheckpoint(bundle)
    index.write_bytes(b"not an index")
    with pytest.raises(TFCheckpointError, match="no LevelDB table footer"):
        TFCheckpoint(bundle)
