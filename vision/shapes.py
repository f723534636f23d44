"""A synthetic vision-language task small enough to learn on a CPU: coloured shapes, captions, questions.

Teaches what a fusion comparison needs from its data: every answer follows from scene metadata that the
generator knows exactly, so accuracy per question type (counting, colour, spatial) can be read off
without a labeller. Each image (``image_size`` square, RGB uint8, black background) holds 1-4
non-overlapping circles, squares and triangles in four colours and two sizes. The caption counts
(colour, shape) groups in a canonical order ("two red circles and a blue square"); questions are asked
only when their answer is well defined. Splits are disjoint by construction: a scene goes to ``test``
or ``train`` by a hash of its pixels, and scenes with a held-out (colour, shape) pair go only to
``compositional``. :class:`Vocab` is the word-level tokenizer both fusion models share.

Reference: in the spirit of CLEVR (Johnson et al. 2017) and Sort-of-CLEVR (Santoro et al. 2017).
"""

import hashlib
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 240), "yellow": (235, 215, 40)}
SIZES = ("small", "large")
NUMBERS = ("zero", "one", "two", "three", "four")
SPLITS = ("train", "test", "compositional")
# never in train or test; each colour and each shape still appears in training with other partners
HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"))
TEST_EVERY = 10  # one scene in ten (by pixel hash) is a test scene


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    radius: int  # half the side of the shape's box, in pixels
    cx: int
    cy: int


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8
    objects: tuple[Obj, ...]
    caption: str
    questions: tuple[tuple[str, str, str], ...]  # (type, question, answer); type in counting/colour/spatial


def radii(image_size: int) -> dict[str, int]:
    """Half-sizes of the small and large shapes for an image side: 3 and 5 pixels at 32. Radius 3 is the
    smallest at which a triangle (rows 1, 1, 3, 3, 5, 5, 7 px wide) and a circle differ in more than a
    pixel or two; at radius 2 both cover 13 pixels."""
    return {"small": max(3, image_size // 10), "large": max(5, image_size // 6)}


def render(objects, image_size: int) -> np.ndarray:
    """Draw ``objects`` on black: (image_size, image_size, 3) uint8. Pixel (y, x) is inside a circle when
    its distance to the centre is <= radius, a square when both offsets are <= radius, and an upward
    triangle when rows cy - r .. cy + r hold |x - cx| <= (y - cy + r) / 2."""
    img = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    y, x = np.mgrid[0:image_size, 0:image_size]  # (H, W) each
    for o in objects:
        dy, dx, r = y - o.cy, x - o.cx, o.radius
        if o.shape == "circle":
            inside = dx * dx + dy * dy <= r * r
        elif o.shape == "square":
            inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:
            inside = (np.abs(dy) <= r) & (2 * np.abs(dx) <= dy + r)
        img[inside] = COLOURS[o.colour]
    return img


def _plural(n: int, colour: str, shape: str) -> str:
    return f"a {colour} {shape}" if n == 1 else f"{NUMBERS[n]} {colour} {shape}s"


def caption(objects) -> str:
    """Groups of equal (colour, shape), shapes in SHAPES order then colours in COLOURS order."""
    colours = list(COLOURS)
    groups = sorted(
        {(o.shape, o.colour) for o in objects}, key=lambda g: (SHAPES.index(g[0]), colours.index(g[1]))
    )
    counts = [sum(o.shape == s and o.colour == c for o in objects) for s, c in groups]
    return " and ".join(_plural(n, c, s) for n, (s, c) in zip(counts, groups, strict=True))


def questions(objects) -> tuple[tuple[str, str, str], ...]:
    """Counting for every shape; colour and left/right of a shape only where the answer is unique."""
    out = [("counting", f"how many {s}s ?", NUMBERS[sum(o.shape == s for o in objects)]) for s in SHAPES]
    for s in SHAPES:
        same = [o for o in objects if o.shape == s]
        if len(same) != 1:
            continue
        (a,) = same
        out.append(("colour", f"what colour is the {s} ?", a.colour))
        others = [o for o in objects if o is not a]
        left = [o for o in others if o.cx + o.radius < a.cx - a.radius]  # wholly left of the anchor's box
        right = [o for o in others if o.cx - o.radius > a.cx + a.radius]
        if len(left) + len(right) == len(others):  # no object overlaps the anchor's columns
            for side, objs in (("left", left), ("right", right)):
                if len(objs) == 1:
                    out.append(
                        ("spatial", f"what is {side} of the {s} ?", f"{objs[0].colour} {objs[0].shape}")
                    )
    return tuple(out)


def _scene(rng: np.random.Generator, image_size: int, max_objects: int) -> tuple[Obj, ...]:
    sizes = radii(image_size)
    while True:  # rare restarts when large shapes leave no room
        objs: list[Obj] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            shape, colour = SHAPES[rng.integers(3)], list(COLOURS)[rng.integers(4)]
            r = sizes[SIZES[rng.integers(2)]]
            for _ in range(100):
                cx, cy = (int(v) for v in rng.integers(r, image_size - r, size=2))
                if all(abs(cx - o.cx) > r + o.radius + 1 or abs(cy - o.cy) > r + o.radius + 1 for o in objs):
                    objs.append(Obj(shape, colour, r, cx, cy))
                    break
            else:
                break
        else:
            return tuple(objs)


def split_of(image: np.ndarray, objects) -> str:
    """Which split a scene belongs to: compositional if it has a held-out pair, else by pixel hash."""
    if any((o.colour, o.shape) in HELD_OUT for o in objects):
        return "compositional"
    h = int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "little")
    return "test" if h % TEST_EVERY == 0 else "train"


def make_split(split: str, n: int, seed: int = 0, image_size: int = 32, max_objects: int = 4) -> list[Sample]:
    """``n`` samples of ``split``, the same for the same arguments (each split draws its own stream)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose one of {SPLITS}")
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one sample")
    if image_size < 24:
        raise ValueError(f"image_size={image_size} is too small for four shapes: use 24 or more")
    if not 1 <= max_objects <= 4:
        raise ValueError(f"max_objects={max_objects}: captions count up to four, use 1..4")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    out: list[Sample] = []
    while len(out) < n:
        objs = _scene(rng, image_size, max_objects)
        img = render(objs, image_size)
        if split_of(img, objs) == split:
            out.append(Sample(img, objs, caption(objs), questions(objs)))
    return out


class Vocab:
    """Word-level tokenizer over every word the task can produce; ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2."""

    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self):
        words = ["a", "and", "how", "many", "what", "colour", "is", "the", "of", "left", "right", "?"]
        words += [*NUMBERS, *COLOURS, *SHAPES, *(s + "s" for s in SHAPES)]
        self.itos = [*self.SPECIALS, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        assert len(self.stoi) == len(self.itos), "duplicate word in the vocabulary"
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = False, eos: bool = True) -> list[int]:
        unknown = [w for w in text.split() if w not in self.stoi]
        if unknown:
            raise ValueError(f"words {unknown} are not in the shapes vocabulary ({len(self)} words)")
        ids = [self.stoi[w] for w in text.split()]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids) -> str:
        """Words up to the first ``<eos>``, without ``<pad>``/``<bos>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if not 0 <= i < len(self):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self)})")
            if i != self.pad_id and i != self.bos_id:
                words.append(self.itos[i])
        return " ".join(words)

    def pad(self, seqs, length: int | None = None) -> np.ndarray:
        """(len(seqs), length) int64, right-padded with ``pad_id``; length defaults to the longest."""
        length = max(map(len, seqs)) if length is None else length
        if any(len(s) > length for s in seqs):
            raise ValueError(f"a sequence of {max(map(len, seqs))} tokens does not fit length={length}")
        out = np.full((len(seqs), length), self.pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
        return out
