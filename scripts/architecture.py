"""Draw the package layers and the imports between them: docs/architecture.png, and the
mermaid diagram in docs/architecture.md (between its ``<!-- graph -->`` markers).

The graph is read from the source (tests/layering.py), so the picture is what the code
does, not what someone remembered; tests/test_layering.py fails when the page is stale.

    python scripts/architecture.py           # rewrite both
    python scripts/architecture.py --check   # exit 1 if the page's diagram is stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import layering  # noqa: E402  (the repository root must be on the path first)

PAGE = REPO / "docs" / "architecture.md"
PNG = REPO / "docs" / "architecture.png"
BEGIN, END = "<!-- graph -->", "<!-- /graph -->"
LONE_X = (3.0, 1.6, 3.0, 3.6, 5.0, 0.9)  # x of a layer's only package, by layer


def _id(pkg: str) -> str:
    return pkg.replace("-", "_")


def mermaid(g: layering.Graph) -> str:
    """Layers bottom to top, one edge per package pair that has imports."""
    out = ["```mermaid", "flowchart BT"]
    present = set(layering.packages())
    for i, (name, pkgs) in enumerate(layering.LAYERS):
        out.append(f'  subgraph L{i}["{i}. {name}"]')
        out += [f'    {_id(p)}["{p}/"]' for p in pkgs if p in present]
        out.append("  end")
    for a, b in sorted(g.package_edges):
        out.append(f"  {_id(a)} --> {_id(b)}")
    out.append("```")
    return "\n".join(out)


def draw(g: layering.Graph, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines, edges = g.lines(), g.package_edges
    fig, ax = plt.subplots(figsize=(11, 7.5))
    pos: dict[str, tuple[float, float]] = {}
    for row, (name, pkgs) in enumerate(layering.LAYERS):
        y = row * 1.6
        ax.axhspan(y - 0.55, y + 0.55, color="#f2f4f7" if row % 2 else "#e8edf3", zorder=0)
        ax.text(-0.3, y, f"{row}. {name}", ha="right", va="center", fontsize=10,
                fontweight="bold", color="#445")
        for k, pkg in enumerate(pkgs):
            # a lone package is set off-centre, alternately, so long arrows pass beside it
            x = (k + 0.5) * 6 / len(pkgs) if len(pkgs) > 1 else LONE_X[row % len(LONE_X)]
            pos[pkg] = (x, y)
            ax.text(x, y, f"{pkg}/\n{lines.get(pkg, 0):,} lines", ha="center", va="center",
                    fontsize=9, zorder=3,
                    bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "#335"})
    for (a, b), n in sorted(edges.items()):
        (xa, ya), (xb, yb) = pos[a], pos[b]
        ax.annotate("", xy=(xb, yb + 0.32), xytext=(xa, ya - 0.32), zorder=2,
                    arrowprops={"arrowstyle": "-|>", "color": "#4a6fa5", "lw": 0.8 + n ** 0.5 / 3,
                                "alpha": 0.6, "shrinkA": 2, "shrinkB": 2,
                                "connectionstyle": "arc3,rad=0.12"})
        ax.text(xa + (xb - xa) * 0.22, ya - 0.32 + (yb - ya + 0.64) * 0.22, str(n), fontsize=7,
                color="#2a4f85",
                ha="center", va="center", zorder=4,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlim(-2.0, 6.2)
    ax.set_ylim(-0.8, (len(layering.LAYERS) - 1) * 1.6 + 0.8)
    ax.axis("off")
    ax.set_title("Quart-FaaS packages by layer; arrows: imports (count of module pairs), "
                 "always downwards", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    g = layering.build()
    page = PAGE.read_text()
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{mermaid(g)}\n{END}{tail}"
    if args.check:
        if new != page:
            print(f"stale: {PAGE.relative_to(REPO)}; run python scripts/architecture.py")
            return 1
        return 0
    PAGE.write_text(new)
    draw(g, PNG)
    print(f"wrote {PAGE.relative_to(REPO)} and {PNG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
