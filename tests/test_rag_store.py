"""rag.store.VectorStore and FlatIndex against faiss IndexFlatIP/IndexFlatL2, filters against brute force."""

import faiss
import numpy as np
import pytest

from rag.store.flat import FlatIndex
from rag.store.vector_store import VectorStore

pytestmark = pytest.mark.usefixtures("one_thread")

N, D, Q, K = 3000, 32, 40, 10


@pytest.fixture(autouse=True)
def _faiss_one_thread():
    faiss.omp_set_num_threads(1)


def _data(seed=0, n=N, d=D, q=Q):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((q, d), dtype=np.float32)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_matches_faiss(metric):
    x, q = _data()
    ref = faiss.IndexFlatIP(D) if metric == "ip" else faiss.IndexFlatL2(D)
    ref.add(x)
    ref_scores, ref_rows = ref.search(q, K)
    ids = np.random.default_rng(1).permutation(10 * N)[:N]  # external ids unrelated to rows
    store = VectorStore(D, metric=metric)
    store.add(x, ids=ids)
    scores, got = store.search(q, K)
    assert scores.shape == got.shape == (Q, K) and scores.dtype == np.float32 and got.dtype == np.int64
    np.testing.assert_array_equal(got, ids[ref_rows])  # continuous random data: no ties
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_cosine_matches_faiss_on_normalised_vectors():
    x, q = _data(2)
    x *= np.random.default_rng(3).uniform(0.1, 10, (N, 1)).astype(np.float32)  # lengths must not matter
    xn, qn = x.copy(), q.copy()
    faiss.normalize_L2(xn)
    faiss.normalize_L2(qn)
    ref = faiss.IndexFlatIP(D)
    ref.add(xn)
    ref_scores, ref_rows = ref.search(qn, K)
    store = VectorStore(D, metric="cosine")
    store.add(x)
    scores, ids = store.search(q, K)
    np.testing.assert_array_equal(ids, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert np.all(scores <= 1 + 1e-6)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_block_sizes_and_query_batches_agree(metric):
    x, q = _data(4)
    allowed = np.random.default_rng(5).random(N) < 0.3
    outs = []
    for block_size, query_batch in [(8192, 512), (7, 3), (64, 1), (1000, 13), (N, Q)]:
        index = FlatIndex(metric, D, block_size=block_size, query_batch=query_batch)
        index.add(x, np.arange(N))
        outs.append((index.search(x, q, K, None), index.search(x, q, K, allowed)))
    for full, masked in outs[1:]:
        for got, want in ((full, outs[0][0]), (masked, outs[0][1])):
            np.testing.assert_array_equal(got[1], want[1])
            # BLAS picks kernels by shape (gemv for one query), so scores may differ in the last bit
            np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert np.all(allowed[outs[0][1][1]])


def test_ties_keep_and_list_the_lowest_rows_first():
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (6, 8)).astype(np.float32)[
        rng.integers(0, 6, 400)
    ]  # 6 distinct rows, many copies
    q = rng.integers(-2, 3, (25, 8)).astype(np.float32)
    for metric, ref in (("ip", faiss.IndexFlatIP(8)), ("l2", faiss.IndexFlatL2(8))):
        ref.add(x)
        ref_scores, ref_rows = ref.search(q, 7)
        index = FlatIndex(metric, 8, block_size=50)
        index.add(x, np.arange(len(x)))
        scores, rows = index.search(x, q, 7, None)
        np.testing.assert_allclose(scores, ref_scores)
        # faiss keeps the same tied rows; IndexFlatL2 lists them ascending, IndexFlatIP descending
        np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(ref_rows, axis=1))
        if metric == "l2":
            np.testing.assert_array_equal(rows, ref_rows)
        # our order: best score first, then ascending row
        sign = -1 if metric == "ip" else 1
        order = np.lexsort((rows, sign * scores), axis=1)
        np.testing.assert_array_equal(order, np.broadcast_to(np.arange(7), order.shape))


def test_hand_worked_ties_and_padding():
    index = FlatIndex("ip", 2, block_size=2)
    x = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0.5, 0]], np.float32)
    index.add(x, np.arange(5))
    scores, rows = index.search(x, np.array([[1, 0]], np.float32), 4, np.array([1, 1, 0, 1, 1], bool))
    assert rows.tolist() == [[0, 3, 4, 1]] and scores.tolist() == [[1, 1, 0.5, 0]]
    scores, rows = index.search(x, np.array([[1, 0]], np.float32), 3, np.array([0, 1, 0, 0, 0], bool))
    assert rows.tolist() == [[1, -1, -1]] and scores.tolist() == [[0, -np.inf, -np.inf]]
    same = FlatIndex("l2", 2, block_size=64)  # every row ties: the first k rows win, in order
    same.add(np.ones((1000, 2), np.float32), np.arange(1000))
    scores, rows = same.search(np.ones((1000, 2), np.float32), np.zeros((3, 2), np.float32), 5, None)
    assert rows.tolist() == [[0, 1, 2, 3, 4]] * 3 and np.all(scores == 2)


def _meta(n, seed=7):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = {"lang": ["en", "de", "fr"][rng.integers(3)], "year": int(rng.integers(1990, 2020))}
        if i % 3 == 0:
            m["tag"] = ["a", "b", "c", "d"][rng.integers(4)]
        out.append(m)
    return out


@pytest.mark.parametrize(
    "flt, keep",
    [
        ({"lang": "en"}, lambda m: m["lang"] == "en"),
        ({"year": {"gte": 2000, "lt": 2010}}, lambda m: 2000 <= m["year"] < 2010),
        ({"year": {"gt": 2015}}, lambda m: m["year"] > 2015),
        ({"year": {"lte": 1991}}, lambda m: m["year"] <= 1991),
        ({"tag": {"in": ["a", "c"]}}, lambda m: m.get("tag") in ("a", "c")),
        ({"lang": {"ne": "en"}, "year": {"gte": 2005}}, lambda m: m["lang"] != "en" and m["year"] >= 2005),
        (
            {"lang": "de", "tag": "b", "year": {"lt": 2000}},
            lambda m: m["lang"] == "de" and m.get("tag") == "b" and m["year"] < 2000,
        ),
    ],
)
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_filters_equal_brute_force_over_the_subset(flt, keep, metric):
    x, q = _data(8)
    meta = _meta(N)
    store = VectorStore(D, metric=metric)
    store.add(x, metadata=meta)
    store.remove(np.arange(0, N, 5))  # deleted rows must stay out too
    subset = np.array([i for i, m in enumerate(meta) if keep(m) and i % 5], dtype=np.int64)
    assert len(subset) > 0
    xs, qs = x[subset], q
    if metric == "cosine":
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        qs = q / np.linalg.norm(q, axis=1, keepdims=True)
        brute = -(qs @ xs.T)
    else:
        brute = ((qs[:, None, :] - xs[None]) ** 2).sum(-1)
    want = subset[np.argsort(brute, axis=1, kind="stable")[:, :K]]
    n_found = min(K, len(subset))
    scores, ids = store.search(q, K, filter=flt)
    np.testing.assert_array_equal(ids[:, :n_found], want[:, :n_found])
    assert np.all(ids[:, n_found:] == -1)
    want_scores = np.sort(brute, axis=1)[:, :n_found] * (-1 if metric == "cosine" else 1)
    np.testing.assert_allclose(scores[:, :n_found], want_scores, rtol=1e-4, atol=1e-4)


def test_a_selective_filter_still_returns_k_results():
    x, q = _data(9)
    meta = [
        {"rare": i % 250 == 0} for i in range(N)
    ]  # 12 matching rows, none of them near the queries' top-k
    store = VectorStore(D, metric="ip")
    store.add(x, metadata=meta)
    _, ids = store.search(q, K, filter={"rare": True})
    assert np.all(ids >= 0) and np.all(ids % 250 == 0)
    _, ids = store.search(q, 20, filter={"rare": True})
    assert np.all((ids[:, :12] % 250 == 0) & (ids[:, :12] >= 0)) and np.all(ids[:, 12:] == -1)


def test_filter_errors_name_the_field_and_operator():
    store = VectorStore(4)
    store.add(np.eye(4), metadata=[{"lang": "en"}, {"lang": "de"}, {}, {"year": 2000}])
    with pytest.raises(ValueError, match="'colour'"):
        store.search(np.ones(4), 2, filter={"colour": "red"})
    with pytest.raises(ValueError, match="'between'"):
        store.search(np.ones(4), 2, filter={"year": {"between": [1, 2]}})
    with pytest.raises(ValueError, match="'lang'"):
        store.search(np.ones(4), 2, filter={"lang": {"gt": 3}})
    with pytest.raises(TypeError, match="list"):
        store.search(np.ones(4), 2, filter={"lang": {"in": "en"}})
    _, ids = store.search(np.ones(4), 4, filter={"year": {"gte": 1999}})
    assert ids.tolist() == [[3, -1, -1, -1]]  # rows without the field never pass


def _snapshot(store, q):
    return (
        store.vectors.copy(),
        store.ids.copy(),
        store.alive.copy(),
        len(store),
        store.next_id,
        store.meta.rows(),
        store.search(q, 5),
    )


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple):
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_bad_input_raises_and_leaves_the_store_unchanged():
    x, q = _data(10, n=50, d=8, q=3)
    store = VectorStore(8, metric="l2")
    store.add(x[:40], ids=np.arange(100, 140), metadata=[{"i": i} for i in range(40)])
    store.remove([100])
    before = _snapshot(store, q)
    nan = x[40:43].copy()
    nan[1, 3] = np.nan
    inf = x[40:43].copy()
    inf[2, 0] = np.inf
    bad_calls = [
        (ValueError, r"\(N, 8\)", lambda: store.add(np.ones((2, 7)))),
        (ValueError, r"\(N, 8\)", lambda: store.add(np.ones(9))),
        (ValueError, "row 1", lambda: store.add(nan)),
        (ValueError, "row 2", lambda: store.add(inf)),
        (ValueError, "duplicate ids", lambda: store.add(x[40:43], ids=[1, 2, 1])),
        (ValueError, "already stored.*101", lambda: store.add(x[40:43], ids=[1, 101, 2])),
        (ValueError, "3 vectors but ids", lambda: store.add(x[40:43], ids=[1, 2])),
        (ValueError, "3 vectors but 2 metadata", lambda: store.add(x[40:43], metadata=[{}, {}])),
        (TypeError, "metadata\\[1\\]", lambda: store.add(x[40:42], metadata=[{}, {"v": object()}])),
        (ValueError, ">= 0", lambda: store.add(x[40:42], ids=[5, -1])),
        (TypeError, "integers", lambda: store.add(x[40:42], ids=[1.5, 2.5])),
        (TypeError, "numeric", lambda: store.add([["a"] * 8])),
        (ValueError, "row 1", lambda: store.upsert(nan, ids=[1, 2, 3])),
        (ValueError, "duplicate ids", lambda: store.upsert(x[40:42], ids=[101, 101])),
        (ValueError, "k must be >= 1", lambda: store.search(q, 0)),
        (TypeError, "k must be an int", lambda: store.search(q, 2.0)),
        (ValueError, r"\(N, 8\)", lambda: store.search(np.ones((2, 3)), 2)),
        (ValueError, "row 0", lambda: store.search(np.full(8, np.nan), 2)),
        (TypeError, "integers", lambda: store.remove(["a"])),
    ]
    for error, match, call in bad_calls:
        with pytest.raises(error, match=match):
            call()
        _assert_same(_snapshot(store, q), before)


def test_upsert_and_remove_semantics():
    x, _ = _data(11, n=20, d=8, q=2)
    store = VectorStore(8, metric="ip")
    assert store.add(x[:10]).tolist() == list(range(10))
    assert store.add(x[10:12]).tolist() == [10, 11]  # next free ids
    store.upsert(x[12:14], ids=[3, 50], metadata=[{"v": "new"}, {"v": "fifty"}])
    assert len(store) == 13 and 50 in store and store.next_id == 51
    vec, meta = store.get(3)
    np.testing.assert_array_equal(vec, x[12])
    assert meta == {"v": "new"}
    _, ids = store.search(x[3], 13)
    assert ids.shape == (1, 13) and sorted(ids[0].tolist()) == [*range(12), 50]
    _, ids = store.search(x[12], 1)
    assert ids.tolist() == [[3]]  # the new vector answers for id 3, the old row is masked
    assert store.remove([3, 3, 999]) == 1  # unknown ids count 0, as faiss remove_ids
    assert store.delete(np.array([4, 5])) == 2 and store.remove(4) == 0
    assert len(store) == 10 and 3 not in store and "3" not in store
    with pytest.raises(KeyError, match="3"):
        store.get(3)
    _, ids = store.search(x, 20)
    assert not np.isin(ids, [3, 4, 5]).any() and (ids[:, 10:] == -1).all()
    store.add(x[3], ids=[3])  # a removed id may be added again
    _, ids = store.search(x[3], 1)
    assert ids.tolist() == [[3]]


@pytest.mark.parametrize("metric, missing", [("cosine", -np.inf), ("ip", -np.inf), ("l2", np.inf)])
def test_empty_store_returns_empty_results(metric, missing):
    store = VectorStore(4, metric=metric)
    scores, ids = store.search(np.ones((3, 4)), 5)
    assert scores.shape == ids.shape == (3, 5)
    assert np.all(scores == missing) and np.all(ids == -1)
    store.add(np.ones((2, 4)))
    store.remove([0, 1])
    scores, ids = store.search(np.ones(4), 2)
    assert scores.shape == (1, 2) and np.all(scores == missing) and np.all(ids == -1)
    assert len(store) == 0


def test_one_dimensional_query_and_search_time_params():
    x, q = _data(12, n=100, d=8, q=1)
    store = VectorStore(8, metric="ip")
    store.add(x)
    scores, ids = store.search(q[0], 3)
    assert scores.shape == ids.shape == (1, 3)
    store.index.block_size = 7  # a search-time knob, changed after building
    np.testing.assert_array_equal(store.search(q, 3)[1], ids)


def test_unknown_names_raise_listing_the_choices():
    with pytest.raises(ValueError, match=r"'annoy'.*flat"):
        VectorStore(4, index="annoy")
    with pytest.raises(ValueError, match=r"'dot'.*cosine"):
        VectorStore(4, metric="dot")
    with pytest.raises(ValueError, match="'nprobe'"):
        VectorStore(4, index="flat", nprobe=3)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_many_small_adds_equal_one_batch(metric):
    x, q = _data(13, n=1500, d=8, q=5)
    one, many = VectorStore(8, metric=metric), VectorStore(8, metric=metric)
    one.add(x)
    for i in range(0, len(x), 7):  # buffers grow by doubling across these
        many.add(x[i : i + 7])
        if i % 700 == 0:
            many.search(q, 3)  # searches between adds see every row added so far
    for a, b in zip(one.search(q, 20), many.search(q, 20), strict=True):
        np.testing.assert_array_equal(a, b)


def test_numpy_filter_path_equals_python_comparisons():
    from rag.store.filters import MetadataTable, filter_mask

    rng = np.random.default_rng(14)
    rows = []
    for i in range(400):
        row = {
            "i": int(rng.integers(-5, 5)),
            "f": [1, 2.5, -3, 0.0, 7][i % 5],
            "s": ["a", "b", "ab", ""][i % 4],
        }
        row["m"] = [1, "1", True, 2.0][i % 4]  # mixed kinds: compared in Python
        if i % 3:
            row["big"] = 2**70 if i % 2 else 5  # beyond int64: compared in Python
        rows.append(row)
    table = MetadataTable()
    table.append(rows, len(rows))
    python_ops = {
        "eq": lambda v, x: v == x,
        "ne": lambda v, x: v != x,
        "gt": lambda v, x: v > x,
        "gte": lambda v, x: v >= x,
        "lt": lambda v, x: v < x,
        "lte": lambda v, x: v <= x,
    }
    operands = {
        "i": [0, 2.5, -5, True],
        "f": [2.5, 0, -3.0],
        "s": ["ab", "b"],
        "m": [1, "1"],
        "big": [5, 2**70],
    }
    for field, xs in operands.items():
        for x in xs:
            for op, fn in python_ops.items():
                if field == "m" and op not in ("eq", "ne"):
                    continue
                want = [field in r and bool(fn(r[field], x)) for r in rows]
                assert filter_mask({field: {op: x}}, table).tolist() == want, (field, op, x)
        for choice in (xs, xs[:1], []):
            want = [field in r and r[field] in choice for r in rows]
            assert filter_mask({field: {"in": choice}}, table).tolist() == want, (field, choice)
