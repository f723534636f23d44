"""rag.store.persist: save/load round trips, corruption and truncation errors, and atomicity under SIGKILL."""

import json
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import faiss
import numpy as np
import pytest

from rag.store.vector_store import VectorStore

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def _store(metric="cosine", n=500, d=16, seed=0, index="flat", **params):
    rng = np.random.default_rng(seed)
    store = VectorStore(d, metric=metric, index=index, **params)
    meta = [{"lang": ["en", "de"][i % 2], "year": 1990 + i % 30} for i in range(n)]
    store.add(rng.standard_normal((n, d), dtype=np.float32), ids=np.arange(n) * 3 + 7, metadata=meta)
    store.remove(np.arange(7, 3 * n, 9))  # every third stored id
    store.upsert(
        rng.standard_normal((2, d), dtype=np.float32), ids=[10, 10_000], metadata=[{"lang": "fr"}, {}]
    )
    return store, rng.standard_normal((20, d), dtype=np.float32)


def _same_results(a, b, q, k=12):
    for flt in (None, {"lang": "en", "year": {"gte": 2000}}):
        sa, ia = a.search(q, k, filter=flt)
        sb, ib = b.search(q, k, filter=flt)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(sa, sb)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_round_trip_keeps_results_and_deletes(tmp_path, metric):
    store, q = _store(metric)
    store.save(tmp_path / "s.store")
    loaded = VectorStore.load(tmp_path / "s.store")
    _same_results(store, loaded, q)
    assert len(loaded) == len(store) and loaded.next_id == store.next_id
    assert 7 not in loaded and 10 in loaded and 13 in loaded  # removed, upserted, kept
    vec, meta = loaded.get(10)
    np.testing.assert_array_equal(vec, store.get(10)[0])
    assert meta == {"lang": "fr"}
    _, ids = loaded.search(q, len(store) + 5)
    assert not np.isin(ids, np.arange(7, 1500, 9)).any()
    loaded.add(np.ones(16), ids=[7])  # the loaded store keeps working
    assert 7 in loaded and loaded.get(10)[1] == {"lang": "fr"}


def test_round_trip_matches_faiss_after_load(tmp_path):
    rng = np.random.default_rng(1)
    x, q = rng.standard_normal((300, 8), dtype=np.float32), rng.standard_normal((5, 8), dtype=np.float32)
    store = VectorStore(8, metric="l2")
    store.add(x)
    store.save(tmp_path / "s")
    ref = faiss.IndexFlatL2(8)
    ref.add(x)
    ref_scores, ref_ids = ref.search(q, 5)
    scores, ids = VectorStore.load(tmp_path / "s").search(q, 5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)


def test_empty_store_round_trips(tmp_path):
    VectorStore(4, metric="l2", block_size=64).save(tmp_path / "e")
    loaded = VectorStore.load(tmp_path / "e")
    assert len(loaded) == 0 and loaded.metric == "l2" and loaded.index.block_size == 64
    scores, ids = loaded.search(np.ones(4), 3)
    assert np.all(ids == -1) and np.all(scores == np.inf)


@pytest.mark.parametrize(
    "index, params", [("ivf", {"nlist": 8, "nprobe": 3}), ("hnsw", {"M": 8, "ef_search": 32})]
)
def test_ann_indexes_round_trip(tmp_path, index, params):
    store, q = _store("cosine", n=400, index=index, **params)
    store.save(tmp_path / "a")
    loaded = VectorStore.load(tmp_path / "a")
    assert loaded.index_kind == index and type(loaded.index) is type(store.index)
    assert {k: getattr(loaded.index, k) for k in params} == params
    _same_results(store, loaded, q)


def test_a_flipped_byte_is_a_checksum_error(tmp_path):
    store, _ = _store()
    path = tmp_path / "s"
    store.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside vectors.npy
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt store.*checksum mismatch"):
        VectorStore.load(path)


def test_our_sha256_catches_a_member_rewritten_with_a_valid_zip_crc(tmp_path):
    store, _ = _store()
    path, forged = tmp_path / "s", tmp_path / "forged"
    store.save(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "metadata.json":
                data = data.replace(b'"en"', b'"xx"', 1)
            dst.writestr(name, data)
    with pytest.raises(ValueError, match=r"'metadata.json' checksum mismatch"):
        VectorStore.load(forged)


@pytest.mark.parametrize("keep", [0, 100, 0.5, -10])
def test_a_truncated_file_raises(tmp_path, keep):
    store, _ = _store()
    path = tmp_path / "s"
    store.save(path)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"corrupt store.*truncated"):
        VectorStore.load(path)


def test_an_unsupported_version_raises(tmp_path):
    store, _ = _store()
    path, newer = tmp_path / "s", tmp_path / "newer"
    store.save(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(newer, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "header.json":
                data = json.dumps({**json.loads(data), "version": 99}).encode()
            dst.writestr(name, data)
    with pytest.raises(ValueError, match="version 99 not supported"):
        VectorStore.load(newer)
    with pytest.raises(ValueError, match=r"not a rag\.store\.VectorStore file"):
        np.savez(tmp_path / "other.npz", a=np.ones(3))
        VectorStore.load(tmp_path / "other.npz")


CHILD = """
import sys, time
import numpy as np
import numpy.lib.format as fmt
from rag.store.vector_store import VectorStore

original = fmt.write_array
def write_then_stall(*args, **kwargs):  # stall inside the save, once vectors.npy is partly on disk
    original(*args, **kwargs)
    args[0].f._fileobj.flush()
    print("stalled", flush=True)
    time.sleep(600)
fmt.write_array = write_then_stall

store = VectorStore(64, metric="ip")
store.add(np.random.default_rng(1).standard_normal((20000, 64), dtype=np.float32))
store.save(sys.argv[1])
"""


def test_sigkill_mid_save_leaves_the_previous_store(tmp_path):
    old, q = _store("ip", d=64)
    path = tmp_path / "s.store"
    old.save(path)
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "stalled", child.stderr.read()
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".s.store.tmp-")]
        assert (
            len(temps) == 1 and temps[0].stat().st_size > 20000 * 64 * 4 // 2
        )  # the new vectors, written aside
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    loaded = VectorStore.load(path)
    assert len(loaded) == len(old)
    _same_results(old, loaded, q)
    with pytest.raises(ValueError, match="corrupt store"):
        VectorStore.load(temps[0])  # the crashed save's leftover is never a valid store
    loaded.save(path)  # a later save still works beside the leftover
    _same_results(old, VectorStore.load(path), q)
