"""GGUF reader and writer, cross-tested against gguf-py (GGUFReader, GGUFWriter) and a hand-built file.

Fixtures defined here: ``smollm2`` (our parse of the SmolLM2 Q4_1 file) and ``smollm2_ref`` (gguf-py's),
each built once per module; ``writer_file``, a GGUFWriter file with every value type and array kind.
"""

import os
import struct

import numpy as np
import pytest

from quant.ggml_blocks import GGMLType, quantize
from quant.gguf import GGUFError, GGUFValueType, read_gguf
from quant.gguf_writer import write_gguf

gguf = pytest.importorskip("gguf")

V = GGUFValueType
SMOLLM2 = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _flat(value):
    """gguf-py's ReaderField.contents() flattens nested arrays; flatten ours the same way to compare."""
    if isinstance(value, list):
        return [x for item in value for x in (_flat(item) if isinstance(item, list) else [item])]
    return value


def assert_same_as_gguf_reader(ours, ref):
    """Metadata (keys in order, values, types) and tensors (names, shapes, types, offsets, bytes) agree."""
    ref_fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.metadata) == list(ref_fields)
    for key, field in ref_fields.items():
        assert _flat(ours.metadata[key]) == field.contents(), key
        ref_types = tuple(V(t) for t in field.types)
        if ours.metadata[key] == []:  # gguf-py drops the element type of an empty array
            assert ours.types[key][:1] == ref_types, key
        else:
            assert ours.types[key] == ref_types, key
    assert ours.alignment == ref.alignment and ours.data_offset == ref.data_offset
    assert list(ours.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(reversed(t.shape.tolist())), t.name  # numpy order = ggml dims reversed
        assert info.type == t.tensor_type and info.offset == t.data_offset and info.n_bytes == t.n_bytes
        assert np.array_equal(ours.tensor_bytes(t.name), t.data.view(np.uint8).reshape(-1)), t.name


@pytest.fixture(scope="module")
def smollm2_path(data_file):
    return data_file(*SMOLLM2)


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return read_gguf(smollm2_path)


@pytest.fixture(scope="module")
def smollm2_ref(smollm2_path):
    return gguf.GGUFReader(smollm2_path)


def test_smollm2_reads_like_gguf_reader(smollm2, smollm2_ref):
    assert_same_as_gguf_reader(smollm2, smollm2_ref)


def test_smollm2_facts_from_its_source_card(smollm2):
    """Numbers stated in data/smollm2/SOURCE.md, read through the pleasant API."""
    m = smollm2.metadata
    assert smollm2.version == 3 and m["general.architecture"] == "llama"
    assert m["llama.block_count"] == 30 and m["llama.context_length"] == 8192
    assert m["llama.embedding_length"] == 576 and m["llama.feed_forward_length"] == 1536
    assert (m["llama.attention.head_count"], m["llama.attention.head_count_kv"]) == (9, 3)
    assert m["llama.rope.freq_base"] == 100000.0 and m[
        "llama.attention.layer_norm_rms_epsilon"
    ] == np.float32(1e-5)
    assert len(m["tokenizer.ggml.tokens"]) == 49152 and len(m["tokenizer.ggml.merges"]) == 48900
    assert smollm2.types["tokenizer.ggml.tokens"] == (V.ARRAY, V.STRING)
    assert sum(t.n_elements for t in smollm2.tensors.values()) == 134_515_008
    assert smollm2.tensors["token_embd.weight"].shape == (49152, 576)  # torch's (vocab, dim)
    assert smollm2.tensors["token_embd.weight"].type == GGMLType.Q8_0
    view = smollm2.tensor_bytes("token_embd.weight")
    assert not view.flags.owndata and not view.flags.writeable  # a view into the mapped file


@pytest.mark.parametrize(
    "name", ["token_embd.weight", "blk.0.ffn_down.weight", "blk.29.attn_k.weight", "output_norm.weight"]
)
def test_smollm2_tensor_dequantizes_like_gguf(smollm2, smollm2_ref, name):
    """Q8_0, Q4_1 and F32 tensors of the real file, exact (tolerance 0) against gguf.quants.dequantize."""
    t = next(t for t in smollm2_ref.tensors if t.name == name)
    expected = gguf.quants.dequantize(t.data, t.tensor_type)
    got = smollm2.tensor(name)
    assert got.dtype == np.float32 and got.shape == smollm2.tensors[name].shape
    assert np.array_equal(got, expected.reshape(got.shape))


def test_smollm2_rewrites_byte_identically(smollm2, smollm2_path, tmp_path):
    out = tmp_path / "copy.gguf"
    tensors = [(name, smollm2.tensor_bytes(name), t.type, t.shape) for name, t in smollm2.tensors.items()]
    write_gguf(out, smollm2.metadata, tensors, types=smollm2.types)
    assert out.read_bytes() == smollm2_path.read_bytes()


# ---------------------------------------------------------------------------------------------------
# Files written by gguf.GGUFWriter: every value type and array kind, every tensor type we decode


def _k_quant_bytes(rng, type, n_blocks):
    """Random super-blocks whose fp16 scales are finite (random bits could be NaN)."""
    raw = rng.integers(0, 256, (n_blocks, type.bytes_per_block), dtype=np.uint8)
    for at in {GGMLType.Q4_K: [0, 2], GGMLType.Q6_K: [208]}[type]:
        raw[:, at : at + 2] = rng.standard_normal((n_blocks, 1)).astype(np.float16).view(np.uint8)
    return raw


def _tensors(rng):
    """name -> (bytes as uint8, type, numpy shape)."""
    out = {}
    for name, type, shape in [
        ("f32.2d", GGMLType.F32, (3, 5)),
        ("f32.odd_1d", GGMLType.F32, (7,)),  # 28 bytes: padding follows
        ("f32.4d", GGMLType.F32, (2, 1, 3, 2)),
        ("f16.3d", GGMLType.F16, (2, 3, 4)),
        ("bf16", GGMLType.BF16, (4, 6)),
        ("q8_0", GGMLType.Q8_0, (3, 64)),
        ("q4_0", GGMLType.Q4_0, (2, 32)),
        ("q4_1", GGMLType.Q4_1, (5, 96)),
    ]:
        out[name] = (quantize(rng.standard_normal(shape).astype(np.float32), type), type, shape)
    for type in (GGMLType.Q4_K, GGMLType.Q6_K):
        out[type.name.lower()] = (_k_quant_bytes(rng, type, 6).reshape(3, -1), type, (3, 512))
    return out


METADATA = [  # (key, value, type): every scalar type, every array element type, nested arrays
    ("u8", 200, V.UINT8),
    ("i8", -100, V.INT8),
    ("u16", 60000, V.UINT16),
    ("i16", -30000, V.INT16),
    ("u32", 4_000_000_000, V.UINT32),
    ("i32", -2_000_000_000, V.INT32),
    ("f32", 0.1, V.FLOAT32),
    ("bool", True, V.BOOL),
    ("str", "héllo ✓ 日本", V.STRING),
    ("str.empty", "", V.STRING),
    ("u64", 2**64 - 1, V.UINT64),
    ("i64", -(2**63), V.INT64),
    ("f64", 0.1, V.FLOAT64),
    ("arr.u8", [0, 255, 7], (V.ARRAY, V.UINT8)),
    ("arr.i8", [-128, 127], (V.ARRAY, V.INT8)),
    ("arr.u16", [1, 65535], (V.ARRAY, V.UINT16)),
    ("arr.i16", [-32768, 5], (V.ARRAY, V.INT16)),
    ("arr.u32", [1, 2, 3], (V.ARRAY, V.UINT32)),
    ("arr.i32", [-1, 0, 1], (V.ARRAY, V.INT32)),
    ("arr.f32", [0.5, -1.25, 3e38], (V.ARRAY, V.FLOAT32)),
    ("arr.bool", [True, False, True], (V.ARRAY, V.BOOL)),
    ("arr.str", ["a", "", "ü ✓", "<|im_end|>"], (V.ARRAY, V.STRING)),
    ("arr.u64", [2**64 - 1, 0], (V.ARRAY, V.UINT64)),
    ("arr.i64", [-(2**63), 2**63 - 1], (V.ARRAY, V.INT64)),
    ("arr.f64", [0.1, -2.5], (V.ARRAY, V.FLOAT64)),
    ("arr.nested.i32", [[1, 2], [3], [4, 5, 6]], (V.ARRAY, V.ARRAY, V.INT32)),
    ("arr.nested.str", [["x", "y"], ["z"]], (V.ARRAY, V.ARRAY, V.STRING)),
]


@pytest.fixture
def writer_file(tmp_path):
    """A GGUFWriter file with every value type, a custom alignment of 64 and ten tensor kinds."""
    path = tmp_path / "ref.gguf"
    w = gguf.GGUFWriter(path, arch="test")
    w.add_custom_alignment(64)
    for key, value, vtype in METADATA:
        vtype = (vtype,) if isinstance(vtype, V) else vtype
        sub = gguf.GGUFValueType(vtype[1]) if len(vtype) > 1 else None
        w.add_key_value(key, value, gguf.GGUFValueType(vtype[0]), sub_type=sub)
    for name, (raw, type, _) in _tensors(np.random.default_rng(0)).items():
        w.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType(type))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_reads_gguf_writer_files_like_gguf_reader(writer_file):
    ours = read_gguf(writer_file)
    assert_same_as_gguf_reader(ours, gguf.GGUFReader(writer_file))
    assert ours.alignment == 64 and ours.data_offset % 64 == 0
    for key, value, vtype in METADATA:
        assert ours.types[key] == ((vtype,) if isinstance(vtype, V) else vtype), key
        if vtype in (V.FLOAT32,) or vtype == (V.ARRAY, V.FLOAT32):
            assert ours.metadata[key] == pytest.approx(value, rel=2**-24), key  # rounded to float32
        else:
            assert ours.metadata[key] == value, key  # nested lists stay nested


def test_dequantizes_every_tensor_type_like_gguf(writer_file):
    ours, ref = read_gguf(writer_file), gguf.GGUFReader(writer_file)
    for t in ref.tensors:
        expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.tensors[t.name].shape)
        assert np.array_equal(ours.tensor(t.name), expected), t.name


def test_read_then_write_of_a_gguf_writer_file_is_byte_identical(writer_file, tmp_path):
    f = read_gguf(writer_file)
    tensors = [(n, f.tensor_bytes(n), t.type, t.shape) for n, t in f.tensors.items()]
    write_gguf(tmp_path / "again.gguf", f.metadata, tensors, types=f.types)
    assert (tmp_path / "again.gguf").read_bytes() == writer_file.read_bytes()


# ---------------------------------------------------------------------------------------------------
# Files written by us


def test_our_files_parse_with_gguf_reader(tmp_path):
    """Inferred types, numpy values, an empty array (typed by hand) and float tensors quantized on write."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    metadata = {
        "general.architecture": "llama",
        "general.alignment": 16,  # UINT32 by the spec, without being told
        "n": 12,
        "eps": 1e-5,
        "flag": False,
        "tokens": ["<s>", "a", "b"],
        "scores": np.array([0.5, 1.5], np.float32),
        "wide": np.uint64(2**40),
        "empty": [],
        "grid": [[1, 2], [3, 4]],
    }
    types = {"empty": (V.ARRAY, V.UINT32)}
    tensors = [("w.q8", w, GGMLType.Q8_0), ("w.f16", w, GGMLType.F16), ("b", w[0], GGMLType.F32)]
    path = tmp_path / "ours.gguf"
    write_gguf(path, metadata, tensors, types=types)

    ours, ref = read_gguf(path), gguf.GGUFReader(path)
    assert_same_as_gguf_reader(ours, ref)
    assert ours.types == {
        "general.architecture": (V.STRING,),
        "general.alignment": (V.UINT32,),
        "n": (V.INT32,),
        "eps": (V.FLOAT32,),
        "flag": (V.BOOL,),
        "tokens": (V.ARRAY, V.STRING),
        "scores": (V.ARRAY, V.FLOAT32),
        "wide": (V.UINT64,),
        "empty": (V.ARRAY, V.UINT32),
        "grid": (V.ARRAY, V.ARRAY, V.INT32),
    }
    assert ours.alignment == 16 and ours.metadata["empty"] == [] and ours.metadata["grid"] == [[1, 2], [3, 4]]
    assert ours.tensors["w.q8"].shape == (4, 64) and list(ref.tensors[0].shape) == [64, 4]  # ggml order
    assert np.array_equal(ours.tensor("w.f16"), w.astype(np.float16).astype(np.float32))
    assert np.array_equal(ours.tensor("b"), w[0])
    assert np.abs(ours.tensor("w.q8") - w).max() <= np.abs(w).max() / 127  # Q8_0: within one step


def test_hand_built_file(tmp_path):
    """One metadata key and one 2-element F32 tensor, byte by byte as the spec lays them out."""
    path = tmp_path / "tiny.gguf"
    write_gguf(path, {"a": 1}, [("w", np.array([1.0, 2.0], np.float32), GGMLType.F32)])
    expected = (
        b"GGUF" + bytes.fromhex("03000000")  # magic, version 3
        + bytes.fromhex("0100000000000000" "0100000000000000")  # 1 tensor, 1 key-value
        + bytes.fromhex("0100000000000000") + b"a"  # key: length 1, "a"
        + bytes.fromhex("05000000" "01000000")  # type INT32, value 1
        + bytes.fromhex("0100000000000000") + b"w"  # tensor name: length 1, "w"
        + bytes.fromhex("01000000" "0200000000000000")  # n_dims 1, ne[0] = 2
        + bytes.fromhex("00000000" "0000000000000000")  # type F32, offset 0 in the data section
        + bytes(96 - 74)  # infos end at byte 74; data starts at the next multiple of 32
        + bytes.fromhex("0000803f" "00000040")  # 1.0f, 2.0f
        + bytes(32 - 8)  # each tensor is padded to the alignment
    )  # fmt: skip
    assert path.read_bytes() == expected
    f = read_gguf(path)
    assert f.data_offset == 96 and f.tensors["w"].offset == 96
    assert f.metadata == {"a": 1} and np.array_equal(f.tensor("w"), [1.0, 2.0])


def test_write_is_atomic(tmp_path, monkeypatch):
    """A write that fails before the rename leaves the old file as it was and no temp file behind."""
    path = tmp_path / "model.gguf"
    write_gguf(path, {"version": "old"})
    old = path.read_bytes()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_gguf(path, {"version": "new"}, [("w", np.ones(32, np.float32), GGMLType.F32)])
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


@pytest.mark.parametrize(
    ("metadata", "types", "tensors", "message"),
    [
        ({"n": 2**40}, None, [], r"'n' = 1099511627776 does not fit the default INT32; pass types="),
        ({"mixed": [1, "a"]}, None, [], r"'mixed' mixes \['INT32'\] and \['STRING'\]"),
        ({"e": []}, None, [], r"'e' is an empty list.*pass types="),
        ({"b": 300}, {"b": V.UINT8}, [], r"'b' cannot be stored as \['UINT8'\]"),
        ({"t": 1}, {"t": V.ARRAY}, [], r"types\['t'\] = .* is not a value type"),
        ({}, {"missing": V.UINT8}, [], r"not in metadata: \['missing'\]"),
        ({"general.alignment": 48}, None, [], r"general.alignment = 48; it must be a positive power of two"),
        ({}, None, [("q", np.ones((2, 48), np.float32), GGMLType.Q4_0)], r"shape \(2, 48\).*block size 32"),
        ({}, None, [("q", np.zeros(17, np.uint8), GGMLType.Q8_0, (32,))], r"takes 34 bytes; got 17"),
        ({}, None, [("q", np.zeros(34, np.uint8), GGMLType.Q8_0)], r"raw bytes, so it needs a shape"),
        (
            {},
            None,
            [("a", np.ones(2, np.float32), 0), ("a", np.ones(2, np.float32), 0)],
            r"'a' appears twice",
        ),
    ],
)
def test_writer_errors_name_the_fix(tmp_path, metadata, types, tensors, message):
    with pytest.raises(ValueError, match=message):
        write_gguf(tmp_path / "x.gguf", metadata, tensors, types=types)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# Corrupt files: one GGUFError whose message names the byte offset


@pytest.fixture
def small(tmp_path):
    """(path, bytes, gguf-py's parse) of a small file whose layout the tests locate through gguf-py."""
    path = tmp_path / "small.gguf"
    metadata = {"general.architecture": "llama", "count": np.uint64(7), "names": ["a" * 30, "bb", "ccc"]}
    write_gguf(path, metadata, [("tok", np.ones((2, 32), np.float32), GGMLType.Q8_0)])
    return path, path.read_bytes(), gguf.GGUFReader(path)


def _value_at(ref, key):
    """Byte offset of a key's value type id (after the key string)."""
    return ref.fields[key].offset + 8 + len(key)


def _expect_error(path, data, message):
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=message):
        read_gguf(path)


def test_wrong_magic_and_version(small):
    path, data, _ = small
    _expect_error(path, b"GGUX" + data[4:], r"expected the magic b'GGUF' at byte 0, found b'GGUX'")
    _expect_error(path, data[:4] + struct.pack("<I", 1) + data[8:], r"unsupported GGUF version 1 at byte 4")
    _expect_error(
        path, data[:4] + struct.pack(">I", 3) + data[8:], r"version 50331648 at byte 4 \(a big-endian"
    )
    _expect_error(path, b"", r"is empty: expected the magic b'GGUF' at byte 0")


def test_truncated_at_several_offsets(small):
    path, data, ref = small
    names = _value_at(ref, "names") + 4 + 4 + 8  # type, element type, count: then element 0's length
    info = ref.tensors[0].field.offset  # first tensor info
    count = _value_at(ref, "count") + 4  # the UINT64 value
    cases = [  # (cut, offset and what the message must name)
        (2, "4 bytes of the magic b'GGUF' at byte 0"),
        (13, "8 bytes of the tensor count at byte 8"),
        (24 + 8 + 5, "20 bytes of metadata key 0 at byte 32"),  # inside "general.architecture"
        (count + 3, f"8 bytes of value of 'count' at byte {count}"),
        (names + 3, f"24 bytes of 3 STRING elements of value of 'names' at byte {names}"),  # 8 or more each
        (names + 38 + 2, f"8 bytes of the length of element 1 of value of 'names' at byte {names + 38}"),
        (info + 8 + 3 + 2, f"4 bytes of n_dims of tensor 'tok' at byte {info + 11}"),
        (info + 8 + 3 + 4 + 16 + 1, f"4 bytes of the type of tensor 'tok' at byte {info + 31}"),
    ]
    for cut, message in cases:
        _expect_error(
            path, data[:cut], f"truncated file: expected {message}, but the file ends at byte {cut}"
        )
    start = ref.tensors[0].data_offset
    _expect_error(
        path,
        data[: start + 5],
        rf"expects its 68 bytes at bytes {start}..{start + 68}, .* ends at byte {start + 5}",
    )


def test_unknown_types_name_their_offset(small):
    path, data, ref = small
    at = _value_at(ref, "count")
    _expect_error(
        path,
        data[:at] + struct.pack("<I", 99) + data[at + 4 :],
        rf"unknown value type of 'count' 99 at byte {at}",
    )
    at = _value_at(ref, "names") + 4
    _expect_error(
        path, data[:at] + struct.pack("<I", 13) + data[at + 4 :], rf"array element type .* 13 at byte {at}"
    )
    at = ref.tensors[0].field.offset + 8 + 3 + 4 + 2 * 8  # name, n_dims, 2 dims
    _expect_error(
        path, data[:at] + struct.pack("<I", 77) + data[at + 4 :], rf"unknown ggml type 77 .* at byte {at}"
    )


def test_other_corruptions_name_their_offset(small):
    path, data, ref = small
    at = _value_at(ref, "names") + 8  # the array length: a corrupt huge count fails fast, without a huge list
    huge = data[:at] + struct.pack("<Q", 2**60) + data[at + 8 :]
    _expect_error(
        path,
        huge,
        rf"expected {8 * 2**60} bytes of {2**60} STRING elements of value of 'names' at byte {at + 8}",
    )
    info = ref.tensors[0].field.offset
    at = info + 8 + 3 + 4 + 2 * 8 + 4  # the tensor's data offset
    _expect_error(
        path, data[:at] + struct.pack("<Q", 8) + data[at + 8 :], rf"info at byte {info}\) has data offset 8"
    )
    at = ref.fields["general.architecture"].offset + 8  # the key's first byte
    _expect_error(
        path, data[:at] + b"\xff" + data[at + 1 :], rf"metadata key 0 at byte {at} is not valid UTF-8"
    )
    at = info + 8 + 3  # n_dims
    _expect_error(
        path, data[:at] + struct.pack("<I", 5) + data[at + 4 :], rf"'tok' at byte {info} has n_dims 5"
    )


def test_bad_alignment_names_its_offset(tmp_path):
    path = tmp_path / "a.gguf"
    write_gguf(path, {"x": 1, "general.alignment": 64}, types={"general.alignment": V.UINT64})
    with pytest.raises(ValueError, match="alignment"):  # gguf-py refuses it too
        gguf.GGUFReader(path)
    at = 24 + 8 + 1 + 4 + 4  # after the header and the key "x" (an INT32)
    _expect_error(path, path.read_bytes(), rf"general.alignment at byte {at} must be a UINT32 power of two")
