"""Draw a ``Value``'s computation graph with matplotlib: one box per Value, one circle per operation.

Teaches what ``backward()`` walks over. Each Value is a box showing its ``data`` and ``grad``;
each operation is a small circle between the Values it read and the Value it made. Columns are
topological depth (leaves on the left, the root on the right), so every arrow points right, the
way the forward pass runs; ``backward()`` runs right to left.

Unlike micrograd's ``trace_graph.ipynb``, which renders with the graphviz binary, this uses
matplotlib only (a simple layered layout, no edge-crossing minimisation), so it runs anywhere the
notebooks run. Reference: Karpathy's micrograd (github.com/karpathy/micrograd, ``trace_graph.ipynb``).
"""

import matplotlib.pyplot as plt

from micrograd.engine import topological_order

VALUE_GID, OP_GID = "micrograd-value", "micrograd-op"  # gids tag the text artists, so tests can count them
COLUMN_GAP = 1.7  # inches from a Value column to the next op column, and from an op column to its Values
ROW_GAP = 0.5  # inches between rows


def draw_graph(root, ax=None, max_values=200):
    """Draw the graph that ``root`` was computed from; returns the matplotlib Figure.

    One box per Value (a Value used twice is one box with two arrows out), labelled
    ``label | data | grad``, and one circle per operation, labelled with the op. ``max_values``
    guards against drawing a whole training step: beyond ~200 boxes the picture is unreadable.
    """
    nodes = topological_order(root)  # children before parents
    if len(nodes) > max_values:
        raise ValueError(
            f"the graph has {len(nodes)} Values, more than max_values={max_values}; draw a smaller "
            "expression or pass a larger max_values"
        )
    # Depth: one more than the deepest child, so every arrow points right; then each leaf moves right
    # to just before its first use, which keeps edges short. A Value at depth d is drawn at
    # x = 2d * COLUMN_GAP and the op that made it one column to its left.
    depth, users = {}, {v: [] for v in nodes}
    for v in nodes:
        depth[v] = 1 + max(depth[c] for c in v._children) if v._children else 0
        for c in v._children:
            users[c].append(v)
    for v in nodes:
        if not v._children and users[v]:
            depth[v] = min(depth[u] for u in users[v]) - 1
    n_depths = max(depth.values()) + 1
    columns = [[v for v in nodes if depth[v] == d] for d in range(n_depths)]  # topological order within
    value_xy, op_xy = {}, {}
    for d, members in enumerate(columns):
        for row, v in enumerate(members):
            y = ((len(members) - 1) / 2 - row) * ROW_GAP  # centred on y = 0
            value_xy[v] = (2 * d * COLUMN_GAP, y)
            if v._children:
                op_xy[v] = ((2 * d - 1) * COLUMN_GAP, y)

    width = 2 * (n_depths - 1) * COLUMN_GAP + 2.6  # + a box's width
    height = max(len(m) for m in columns) * ROW_GAP + 0.4
    if ax is None:
        fig, ax = plt.subplots(figsize=(width, height))  # 1 data unit = 1 inch, so boxes keep their size
    else:
        fig = ax.figure

    boxes, circles = {}, {}  # the drawn labels; arrows are clipped to their outlines
    for v in nodes:
        text = f"data {v.data:.4f} | grad {v.grad:.4f}"
        boxes[v] = ax.text(
            *value_xy[v], f"{v.label} | {text}" if v.label else text,
            ha="center", va="center", fontsize=8, gid=VALUE_GID,
            bbox={"boxstyle": "round,pad=0.3", "fc": "#e8f0fe", "ec": "0.3"},
        )  # fmt: skip
        if v._children:
            circles[v] = ax.text(
                *op_xy[v], v._op, ha="center", va="center", fontsize=9, gid=OP_GID,
                bbox={"boxstyle": "circle,pad=0.3", "fc": "#fde8c8", "ec": "0.3"},
            )  # fmt: skip
    for v, circle in circles.items():
        edges = [(circle, boxes[v])]  # op -> the Value it made
        edges += [(boxes[c], circle) for c in dict.fromkeys(v._children)]  # inputs -> op (a * a: one arrow)
        for src, dst in edges:
            arrow = {
                "arrowstyle": "->", "color": "0.4", "lw": 0.9,
                "patchA": src.get_bbox_patch(), "patchB": dst.get_bbox_patch(),
            }  # fmt: skip
            ax.annotate("", xy=dst.get_position(), xytext=src.get_position(), arrowprops=arrow)
    ax.set_xlim(-1.3, width - 1.3)
    ax.set_ylim(-height / 2, height / 2)
    ax.axis("off")
    return fig
