"""vision.shapes: a seeded synthetic scene task; rendering checked by hand, text checked against metadata."""

import numpy as np
import pytest

from vision.shapes import (
    COLOURS,
    HELD_OUT,
    NUMBERS,
    SHAPES,
    Obj,
    Vocab,
    caption,
    make_split,
    questions,
    radii,
    render,
)


def test_same_seed_same_samples_other_seed_differs():
    a, b = make_split("train", 20, seed=3), make_split("train", 20, seed=3)
    assert all(np.array_equal(x.image, y.image) and x.caption == y.caption for x, y in zip(a, b, strict=True))
    assert [x.questions for x in a] == [y.questions for y in b]
    c = make_split("train", 20, seed=4)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))


def test_splits_disjoint_and_compositional_holdout():
    train, test, comp = (make_split(s, 150, seed=0) for s in ("train", "test", "compositional"))
    keys = [{s.image.tobytes() for s in split} for split in (train, test, comp)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    pairs = lambda samples: {(o.colour, o.shape) for s in samples for o in s.objects}  # noqa: E731
    assert not pairs(train) & set(HELD_OUT) and not pairs(test) & set(HELD_OUT)
    assert all(any((o.colour, o.shape) in HELD_OUT for o in s.objects) for s in comp)
    # every colour and every shape is still seen in training
    assert {c for c, _ in pairs(train)} == set(COLOURS) and {s for _, s in pairs(train)} == set(SHAPES)


def test_render_by_hand():
    objs = (
        Obj("circle", "red", 3, 6, 6),
        Obj("square", "blue", 2, 20, 8),
        Obj("triangle", "yellow", 4, 12, 22),
    )
    img = render(objs, 32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    for o in objs:
        assert tuple(img[o.cy, o.cx]) == COLOURS[o.colour]
    assert tuple(img[6, 9]) == COLOURS["red"] and tuple(img[9, 9]) == (0, 0, 0)  # edge; outside
    assert tuple(img[3, 9]) == (0, 0, 0)  # the circle's box corner is outside the circle
    assert tuple(img[6, 18]) == tuple(img[10, 22]) == COLOURS["blue"]  # square corners
    assert tuple(img[18, 12]) == COLOURS["yellow"] and tuple(img[18, 13]) == (0, 0, 0)  # triangle apex
    assert tuple(img[26, 8]) == tuple(img[26, 16]) == COLOURS["yellow"]  # base corners
    assert tuple(img[0, 0]) == tuple(img[31, 31]) == (0, 0, 0)
    coloured = sum(1 for y in range(32) for x in range(32) if img[y, x].any())
    assert coloured == 29 + 25 + (1 + 1 + 3 + 3 + 5 + 5 + 7 + 7 + 9)  # circle r=3 has 29 pixels


def test_small_shapes_are_told_apart():
    """At 32 px the small radius is 3: a triangle's rows are 1, 1, 3, 3, 5, 5, 7 px wide, a circle's
    1, 5, 5, 7, 5, 5, 1 (at radius 2 both would cover 13 pixels)."""
    assert radii(32) == {"small": 3, "large": 5}
    r = radii(32)["small"]
    widths = {}
    for shape in SHAPES:
        img = render((Obj(shape, "green", r, 10, 10),), 32)
        widths[shape] = [int(img[y].any(-1).sum()) for y in range(10 - r, 10 + r + 1)]
    assert widths == {
        "circle": [1, 5, 5, 7, 5, 5, 1],
        "square": [7] * 7,
        "triangle": [1, 1, 3, 3, 5, 5, 7],
    }


def test_text_by_hand():
    objs = (
        Obj("circle", "red", 2, 4, 4), Obj("square", "blue", 2, 16, 4),
        Obj("circle", "red", 2, 28, 28), Obj("triangle", "green", 2, 28, 4),
    )  # fmt: skip
    assert caption(objs) == "two red circles and a blue square and a green triangle"
    qs = {q: (t, a) for t, q, a in questions(objs)}
    assert qs["how many circles ?"] == ("counting", "two")
    assert qs["how many triangles ?"] == ("counting", "one")
    assert qs["what colour is the square ?"] == ("colour", "blue")
    assert "what colour is the circle ?" not in qs  # two circles: not unique
    # left of the square: one red circle; right of it: a circle and the triangle -> not asked
    assert qs["what is left of the square ?"] == ("spatial", "red circle")
    assert "what is right of the square ?" not in qs
    # the triangle at x=28 shares columns with the circle at x=28: no spatial question about it
    assert not any(q.endswith("of the triangle ?") for q in qs)


def test_text_consistent_with_metadata():
    for s in make_split("train", 60, seed=1) + make_split("compositional", 30, seed=1):
        objs = s.objects
        n_named = sum(
            NUMBERS.index(w) if w in NUMBERS else 1 for w in s.caption.split() if w in NUMBERS or w == "a"
        )
        assert n_named == len(objs) and 1 <= len(objs) <= 4
        for kind, q, a in s.questions:
            shape = q.split()[-2].rstrip("s")
            anchor = [o for o in objs if o.shape == shape]
            if kind == "counting":
                assert a == NUMBERS[len(anchor)]
            elif kind == "colour":
                assert len(anchor) == 1 and a == anchor[0].colour
            else:
                (o,) = anchor
                colour, what = a.split()
                hits = [p for p in objs if (p.colour, p.shape) == (colour, what)]
                side = q.split()[2]
                assert any((p.cx < o.cx) == (side == "left") for p in hits)
        for o in objs:  # the image shows each object's colour at its centre
            assert tuple(s.image[o.cy, o.cx]) == COLOURS[o.colour]


def test_vocab_roundtrip_and_padding():
    vocab = Vocab()
    s = make_split("test", 5, seed=0)[0]
    for text in [s.caption, *(q for _, q, _ in s.questions), *(a for _, _, a in s.questions)]:
        ids = vocab.encode(text, bos=True)
        assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
        assert vocab.decode([*ids, vocab.pad_id, 5]) == text
    batch = vocab.pad([[5, 6], [7]], length=4)
    assert batch.tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_split("val", 3), "split='val'"),
        (lambda: make_split("train", 0), "n=0"),
        (lambda: make_split("train", 3, image_size=16), "image_size=16"),
        (lambda: make_split("train", 3, max_objects=5), "max_objects=5"),
        (lambda: Vocab().encode("a purple circle"), "purple"),
        (lambda: Vocab().decode([99]), "token id 99"),
        (lambda: Vocab().pad([[1, 2, 3]], length=2), "length=2"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
