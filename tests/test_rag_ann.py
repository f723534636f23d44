"""k-means, IVF and HNSW against sklearn, faiss and hnswlib on small clustered data (seconds, one thread)."""

import json

import faiss
import hnswlib
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from gpt.flags import parse_dataclass
from rag.bench import ann as ann_bench
from rag.store.hnsw import HNSWIndex
from rag.store.ivf import IVFIndex
from rag.store.kmeans import assign, kmeans
from rag.store.vector_store import VectorStore

pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 32


def clustered(n: int, n_queries: int, dim: int = DIM, centers: int = 40, noise: float = 0.8, seed: int = 0):
    """Unit vectors around ``centers`` random directions; the queries come from the same mixture."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    x = c[rng.integers(centers, size=n + n_queries)] + noise * rng.normal(size=(n + n_queries, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:n], x[n:]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(
        np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / k for a, b in zip(found, truth, strict=True)])
    )


def faiss_exact(x, q, k, metric="ip"):
    index = faiss.IndexFlatIP(x.shape[1]) if metric == "ip" else faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(q, k)


@pytest.fixture(scope="module", autouse=True)
def faiss_one_thread():
    faiss.omp_set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return clustered(4000, 200)


# -- k-means ---------------------------------------------------------------------------------------------


def test_assign_hand_worked():
    x = np.array([[0, 0], [1, 0], [9, 0], [10, 1]], dtype=np.float32)
    c = np.array([[0.5, 0], [10, 0]], dtype=np.float32)
    labels, dist = assign(x, c, block=3)  # two blocks
    assert labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(dist, [0.25, 0.25, 1, 1], atol=1e-5)


def test_kmeans_matches_sklearn_on_blobs():
    x, truth = make_blobs(3000, n_features=DIM, centers=20, cluster_std=1.0, random_state=0)
    x = x.astype(np.float32)
    ours = kmeans(x, 20, seed=0)
    ref = KMeans(20, n_init=10, random_state=0).fit(x)
    # same partition up to a relabelling: every (ours, sklearn) label pair is one of exactly 20
    pairs = set(zip(ours.labels.tolist(), ref.labels_.tolist(), strict=True))
    assert len(pairs) == 20 and len({a for a, _ in pairs}) == 20 and len({b for _, b in pairs}) == 20
    assert len(set(zip(ours.labels.tolist(), truth.tolist(), strict=True))) == 20
    assert abs(ours.inertia - ref.inertia_) <= 1e-4 * ref.inertia_


def test_kmeans_reseeds_an_empty_cluster():
    x, _ = make_blobs(600, n_features=4, centers=3, cluster_std=0.3, random_state=1)
    x = x.astype(np.float32)
    init = np.concatenate(
        [x[[0, 1]], np.full((1, 4), 1e3, np.float32)]
    )  # the third seed is far from all points
    result = kmeans(x, 3, init=init)
    assert result.n_reseeded >= 1
    assert np.bincount(result.labels, minlength=3).min() > 0
    ref = KMeans(3, n_init=10, random_state=0).fit(x)
    assert abs(result.inertia - ref.inertia_) <= 1e-4 * ref.inertia_


def test_kmeans_subsamples_like_faiss():
    x, _ = make_blobs(3000, n_features=8, centers=4, random_state=2)
    result = kmeans(x.astype(np.float32), 4, max_points_per_centroid=100)
    assert len(result.labels) == 400
    assert len(kmeans(x.astype(np.float32), 4, max_points_per_centroid=None).labels) == 3000


def test_kmeans_bad_params():
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="k=0"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="metric='cos'"):
        kmeans(x, 2, metric="cos")
    with pytest.raises(ValueError, match="k=11"):
        kmeans(x, 11)


# -- IVF ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_probing_every_list_is_exact(data, metric):
    x, q = data
    index = IVFIndex(metric, DIM, nlist=32, nprobe=32)
    index.add(x, np.arange(len(x)))
    scores, rows = index.search(x, q, 10, None)
    ref_scores, ref_rows = faiss_exact(x, q, 10, metric)
    assert np.array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_ivf_two_adds_and_state_round_trip(data):
    x, q = data
    index = IVFIndex("ip", DIM, nlist=32, nprobe=32, seed=3)
    index.add(x[:2000], np.arange(2000))  # trains here
    index.add(x[2000:], np.arange(2000, len(x)))
    assert index.list_sizes().sum() == len(x)
    assert np.array_equal(np.sort(index.list_rows), np.arange(len(x)))
    assert np.array_equal(index.search(x, q, 10, None)[1], faiss_exact(x, q, 10)[1])
    index.nprobe = 4
    state = {name: np.array(a) for name, a in index.state().items()}
    again = IVFIndex.from_state("ip", index.params, state)
    for a, b in zip(index.search(x, q, 10, None), again.search(x, q, 10, None), strict=True):
        assert np.array_equal(a, b)


def test_ivf_recall_rises_with_nprobe_and_tracks_faiss(data):
    x, q = data
    _, truth = faiss_exact(x, q, 10)
    nlist = 64
    ours = IVFIndex("ip", DIM, nlist=nlist)
    ours.add(x, np.arange(len(x)))
    ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    ref.train(x)
    ref.add(x)
    ours_r, ref_r = [], []
    for nprobe in (1, 2, 4, 8, 16):
        ours.nprobe = ref.nprobe = nprobe
        ours_r.append(recall(ours.search(x, q, 10, None)[1], truth))
        ref_r.append(recall(ref.search(q, 10)[1], truth))
    # different k-means seeds give different cells: recall within 0.03 (measured gaps <= 0.008)
    assert np.all(np.abs(np.array(ours_r) - np.array(ref_r)) <= 0.03), (ours_r, ref_r)
    assert np.all(np.diff(ours_r) >= -0.01), ours_r
    assert ours_r[0] < 0.9 < ours_r[-1]  # the data is hard enough that probing matters


def test_ivf_allowed_rows_only(data):
    x, q = data
    allowed = np.random.default_rng(1).random(len(x)) < 0.2
    index = IVFIndex("ip", DIM, nlist=32, nprobe=8)
    index.add(x, np.arange(len(x)))
    _, rows = index.search(x, q, 10, allowed)
    assert np.all(allowed[rows[rows >= 0]])
    sub = np.flatnonzero(allowed)
    _, truth = faiss_exact(x[sub], q, 10)
    assert recall(rows, sub[truth]) >= 0.9
    _, none = index.search(x, q, 10, np.zeros(len(x), bool))
    assert np.all(none == -1)


def test_ivf_bad_params():
    with pytest.raises(ValueError, match="nlist=0"):
        IVFIndex("ip", DIM, nlist=0)
    with pytest.raises(ValueError, match="nprobe=0"):
        IVFIndex("ip", DIM, nprobe=0)
    with pytest.raises(ValueError, match="metric='cosine'"):
        IVFIndex("cosine", DIM)
    index = IVFIndex("ip", DIM, nlist=100)
    with pytest.raises(ValueError, match=r"nlist=100 .* got 50"):
        index.add(np.ones((50, DIM), np.float32), np.arange(50))
    with pytest.raises(ValueError, match="nprobe=-1"):
        index.nprobe = -1


# -- HNSW -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hnsw(data):
    x, _ = data
    index = HNSWIndex("ip", DIM, M=8, ef_construction=64, seed=0)
    index.add(x, np.arange(len(x)))
    return index


def test_hnsw_recall_matches_hnswlib(data, hnsw):
    x, q = data
    _, truth = faiss_exact(x, q, 10)
    ref = hnswlib.Index("ip", DIM)
    ref.init_index(len(x), M=8, ef_construction=64, random_seed=0)
    ref.set_num_threads(1)
    ref.add_items(x, np.arange(len(x)))
    ours_r, ref_r = [], []
    for ef in (10, 20, 50):
        hnsw.ef_search = ef
        ref.set_ef(ef)
        ours_r.append(recall(hnsw.search(x, q, 10, None)[1], truth))
        ref_r.append(recall(ref.knn_query(q, 10)[0].astype(np.int64), truth))
    # different random levels give different graphs: within 0.02 (measured gaps <= 0.002)
    assert np.all(np.abs(np.array(ours_r) - np.array(ref_r)) <= 0.02), (ours_r, ref_r)
    assert max(ours_r) >= 0.95, ours_r


def test_hnsw_graph_shape(hnsw):
    n = hnsw.n
    assert len(hnsw.levels) == n and hnsw.levels[hnsw.entry_point] == hnsw.max_level == hnsw.levels.max()
    # P(level >= 1) = exp(-1/mL) = 1/M
    assert abs(np.mean(hnsw.levels >= 1) - 1 / hnsw.M) < 0.03
    for node in range(0, n, 97):
        for layer in range(hnsw.levels[node] + 1):
            nb = hnsw.neighbors(layer, node)
            assert 0 < len(nb) <= (hnsw.M0 if layer == 0 else hnsw.M)
            assert node not in nb and len(set(nb.tolist())) == len(nb)
            assert np.all(hnsw.levels[nb] >= layer)
        assert len(hnsw.neighbors(hnsw.levels[node] + 1, node)) == 0


def test_hnsw_small_graph_with_large_ef_is_exact():
    x, q = clustered(60, 10, dim=8, centers=4)
    for metric in ("ip", "l2"):
        index = HNSWIndex(metric, 8, M=4, ef_construction=60, ef_search=60)
        index.add(x, np.arange(100, 160))  # rows need not start at 0
        scores, rows = index.search(x, q, 5, None)
        ref_scores, ref_rows = faiss_exact(x, q, 5, metric)
        assert np.array_equal(rows, ref_rows + 100)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_hnsw_l2_recall(data):
    x, q = data
    x, q = 3 * x[:1500], 3 * q  # not unit length: l2 and ip rank differently
    index = HNSWIndex("l2", DIM, M=8, ef_construction=64, ef_search=50)
    index.add(x, np.arange(len(x)))
    _, truth = faiss_exact(x, q, 10, "l2")
    assert recall(index.search(x, q, 10, None)[1], truth) >= 0.95


def test_hnsw_allowed_rows_only(data, hnsw):
    x, q = data
    allowed = np.random.default_rng(1).random(len(x)) < 0.2
    hnsw.ef_search = 50
    _, rows = hnsw.search(x, q, 10, allowed)
    assert np.all(allowed[rows[rows >= 0]]) and np.all(rows >= 0)
    sub = np.flatnonzero(allowed)
    _, truth = faiss_exact(x[sub], q, 10)
    assert recall(rows, sub[truth]) >= 0.9


def test_hnsw_state_round_trip_and_resume(data, tmp_path):
    x, q = data
    x = x[:1200]
    a = HNSWIndex("ip", DIM, M=6, ef_construction=32, seed=5)
    a.add(x[:800], np.arange(800))
    path = tmp_path / "hnsw.npz"
    np.savez(path, **a.state())
    with np.load(path, allow_pickle=False) as f:
        b = HNSWIndex.from_state("ip", json.loads(json.dumps(a.params)), dict(f))
    for s, t in zip(a.search(x, q, 10, None), b.search(x, q, 10, None), strict=True):
        assert np.array_equal(s, t)
    a.add(x[800:], np.arange(800, 1200))  # adding after a reload builds the same graph
    b.add(x[800:], np.arange(800, 1200))
    assert np.array_equal(a.levels, b.levels)
    for s, t in zip(a.search(x, q, 10, None), b.search(x, q, 10, None), strict=True):
        assert np.array_equal(s, t)


def test_hnsw_bad_params():
    for kwargs, name in [
        (dict(M=1), "M=1"),
        (dict(ef_construction=0), "ef_construction=0"),
        (dict(ef_search=0), "ef_search=0"),
    ]:
        with pytest.raises(ValueError, match=name):
            HNSWIndex("ip", DIM, **kwargs)
    with pytest.raises(ValueError, match="dim=0"):
        HNSWIndex("ip", 0)


# -- through the store, and the benchmark ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"), [("ivf", dict(nlist=32, nprobe=8)), ("hnsw", dict(M=8, ef_search=50))]
)
def test_vector_store_with_approximate_index(data, kind, params):
    x, q = data
    x = x[:1500]
    store = VectorStore(DIM, metric="cosine", index=kind, **params)
    ids = store.add(3 * x, ids=np.arange(1500) + 10, metadata=[{"even": i % 2 == 0} for i in range(1500)])
    assert np.array_equal(ids, np.arange(1500) + 10)
    _, truth = faiss_exact(x, q, 10)
    scores, found = store.search(q, 10)
    assert recall(found - 10, truth) >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, found - 10, axis=1), atol=1e-5)  # cosines
    _, found = store.search(q, 10, filter={"even": True})
    assert np.all((found - 10) % 2 == 0)
    even = np.arange(0, 1500, 2)
    assert recall(found - 10, even[faiss_exact(x[even], q, 10)[1]]) >= 0.9


def test_bench_smoke(tmp_path):
    result = ann_bench.run(ann_bench.AnnBenchConfig(smoke=True, out=str(tmp_path)))
    assert {"config", "data", "n", "dim", "k", "threads", "device", "rows", "targets", "notes"} <= set(result)
    families = {r["family"] for r in result["rows"]}
    assert families == {
        "flat (ours)",
        "faiss flat",
        "IVF (ours)",
        "faiss IVF",
        "HNSW (ours)",
        "faiss HNSW",
        "hnswlib",
    }
    for r in result["rows"]:
        assert 0 <= r["recall"] <= 1 and r["qps"] > 0 and r["memory_mb"] > 0
    assert all(r["recall"] == 1.0 for r in result["rows"] if "flat" in r["family"])
    assert len(result["targets"]) == 3
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == result["rows"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "faiss IndexFlatIP" in ann_bench.report(result)


def test_bench_config_defaults_follow_the_data():
    cfg = parse_dataclass(ann_bench.AnnBenchConfig, ["--data", "minilm"])
    assert (cfg.n, cfg.n_base, cfg.n_lists) == (None, 20_000, 141)
    cfg = parse_dataclass(ann_bench.AnnBenchConfig, ["--n", "400", "--nlist", "7"])
    assert (cfg.n_base, cfg.n_lists) == (400, 7)
    with pytest.raises(ValueError, match="hnsw_n=500"):
        ann_bench.AnnBenchConfig(n=400, hnsw_n=500)
    with pytest.raises(ValueError, match="nlist=0"):
        ann_bench.AnnBenchConfig(nlist=0)
