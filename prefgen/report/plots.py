"""The report's plots: PNG images of the dataset's figures and of the judge-health figures.

Each function takes figures already computed (`prefgen.report.figures` from the output rows,
`prefgen.report.health` from the manifest) and returns the PNG's bytes, or None when there is nothing
to show (no evolution, single-mode judging, ...). Nothing is computed here but layout. Every
plot has a title and labelled axes, so it reads without the card's text. matplotlib runs on
its Agg backend (no display) and is imported only when a plot is drawn.
"""

from __future__ import annotations

import functools
import io

# file name under plots/ -> what the card says it shows
PLOTS = {
    "ratings_by_model.png": "Combined ratings of every rated candidate, per model",
    "ratings_by_origin.png": "Combined ratings of every rated candidate, per origin (generated, evolved, ...)",
    "margins.png": "Chosen rating minus rejected rating, per pair",
    "lengths.png": "Length of the chosen against the rejected answer, per pair",
    "chosen_position.png": "Where the chosen answer stood in the order shown to the judge, per shown order",
    "win_rates.png": "How often each model and each writer was the chosen side of a pair",
    "evolved_vs_parent.png": "Rewrites against the answers they rewrote, per criterion",
    "judge_health.png": "Judge health: ratings by position shown, figures against chance, rating levels",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _centres(edges: list[float]) -> tuple[list[float], float]:
    return [(a + b) / 2 for a, b in zip(edges, edges[1:])], (edges[1] - edges[0]) if len(edges) > 1 else 1.0


def _drawn(key: str):
    """A plot of the figure under `key`: what the decorated function draws (given the figure and
    pyplot, it returns the matplotlib figure) as PNG bytes, or None when the figure counted nothing.
    Called with the whole figures, as every plot here is."""
    def wrap(draw):
        @functools.wraps(draw)
        def plot(figures: dict) -> bytes | None:
            figure = figures[key]
            return _png(draw(figure, _pyplot())) if figure["n"] else None
        return plot
    return wrap


def _rating_hist(ratings: dict, key: str, title: str) -> bytes | None:
    groups = ratings[key]
    if not ratings["n"]:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    centres, width = _centres(ratings["edges"])
    bar = width * 0.8 / len(groups)
    for i, (name, g) in enumerate(groups.items()):
        offset = (i - (len(groups) - 1) / 2) * bar
        ax.bar([x + offset for x in centres], g["counts"], width=bar, label=f"{name} (n={g['n']}, mean {g['mean']:.2f})")
    ax.set(title=title, xlabel="combined rating", ylabel="candidates")
    ax.legend(fontsize=8)
    return _png(fig)


def ratings_by_model(figures: dict) -> bytes | None:
    return _rating_hist(figures["ratings"], "by_model", "Ratings per model")


def ratings_by_origin(figures: dict) -> bytes | None:
    return _rating_hist(figures["ratings"], "by_origin", "Ratings per origin")


@_drawn("margins")
def margins(m: dict, plt):
    fig, ax = plt.subplots(figsize=(7, 4))
    centres, width = _centres(m["edges"])
    ax.bar(centres, m["counts"], width=width * 0.9, color="tab:green")
    ax.set(title=f"Rating margin of the {m['n']} pairs (mean {m['mean']:.2f}, median {m['median']:.2f})",
           xlabel="chosen rating - rejected rating", ylabel="pairs")
    return fig


@_drawn("lengths")
def lengths(ln: dict, plt):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(ln["rejected"], ln["chosen"], s=14, alpha=0.6)
    top = max(ln["chosen"] + ln["rejected"] + [1])
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="same length")
    ax.set(title=f"Chosen vs rejected length ({ln['n']} pairs)\nmedians: chosen {ln['chosen_median']:.0f}, "
                 f"rejected {ln['rejected_median']:.0f} characters",
           xlabel="rejected answer (characters)", ylabel="chosen answer (characters)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


@_drawn("chosen_position")
def chosen_position(pos: dict, plt):
    orders = pos["orders"]
    fig, axes = plt.subplots(1, len(orders), figsize=(min(max(4 * len(orders), 6.5), 16), 4), squeeze=False,
                             sharey=True)
    for ax, (label, cell) in zip(axes[0], orders.items()):
        places = list(range(1, len(cell["counts"]) + 1))
        ax.bar(places, cell["counts"], color="tab:blue", label="chosen answer shown here")
        ax.plot(places, cell["expected"], "k_", markersize=20, markeredgewidth=2, label="chance")
        ax.set(title=f"{label} ({cell['calls']} calls)", xlabel="position shown to the judge (1 = first)",
               xticks=places)
    axes[0][0].set_ylabel("judge calls (one per pair and aspect)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Where the chosen answer was shown to the judge")
    return fig


@_drawn("win_rates")
def win_rates(w: dict, plt):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, what in ((axes[0], "by_model", "model"), (axes[1], "by_writer", "writer (generator or its rewrites)")):
        names = list(w[key])
        rates = [w[key][n]["rate"] for n in names]
        ax.barh(names, rates, color="tab:purple")
        for y, n in enumerate(names):
            cell = w[key][n]
            ax.text(min(rates[y], 0.98), y, f" {cell['wins']} won / {cell['losses']} lost", va="center", fontsize=8)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set(title=f"Win rate per {what}", xlabel="share of its pair sides that were chosen", xlim=(0, 1))
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"Who wins the {w['n']} pairs")
    return fig


@_drawn("evolved_vs_parent")
def evolved_vs_parent(ev: dict, plt):
    rows = {**ev["by_criterion"], "all": ev["total"]}
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.8))
    left = [0] * len(rows)
    for kind, colour, label in (("wins", "tab:green", "rewrite rated higher"), ("ties", "tab:grey", "same rating"),
                                ("losses", "tab:red", "rewrite rated lower")):
        values = [cell[kind] for cell in rows.values()]
        ax.barh(list(rows), values, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, values)]
    ax.set(title=f"Rewrite vs the answer it rewrote ({ev['n']} comparisons)", xlabel="comparisons",
           ylabel="criterion")
    ax.legend(fontsize=8)
    return fig


def judge_health(health: dict) -> bytes | None:
    """Panels of the manifest's health figures: mean rating by position, figures against chance,
    judgments per rating level."""
    if not health:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    by_pos = health.get("mean_rating_by_position", {})
    if by_pos.get("n"):
        places = [int(p) + 1 for p in by_pos["means"]]
        axes[0].bar(places, list(by_pos["means"].values()), color="tab:orange")
        axes[0].set(xticks=places)
    axes[0].set(title=f"Mean rating by position shown ({by_pos.get('n', 0)} judgments)",
                xlabel="position shown to the judge (1 = first)", ylabel="mean rating")
    bars = _against_chance(health)
    if bars:
        names = [b[0] for b in bars]
        axes[1].barh(names, [b[1] for b in bars], color="tab:blue", label="observed")
        axes[1].plot([b[2] for b in bars], names, "k|", markersize=18, markeredgewidth=2, label="chance")
        axes[1].legend(fontsize=8)
    axes[1].set(title="Against chance", xlabel="share", xlim=(0, 1))
    axes[1].tick_params(axis="y", labelsize=8)
    dist = health.get("rating_distribution", {})
    if dist.get("n"):
        levels = sorted(dist["shares"], key=float)
        axes[2].bar(levels, [dist["shares"][k] for k in levels], color="tab:cyan")
    axes[2].set(title=f"Judgments per rating level ({dist.get('n', 0)})", xlabel="rating", ylabel="share")
    fig.suptitle("Judge health")
    return _png(fig)


def _against_chance(h: dict) -> list[tuple[str, float, float]]:
    """(label, observed share, chance share) of each health figure that has both and a sample."""
    out = []
    mono = h.get("monotone_calls", {})
    if mono.get("n"):
        out.append((f"ratings fall with position\n({mono['n']} calls of 3+)", mono["weak_share"], mono["weak_chance"]))
        out.append(("... strictly", mono["strict_share"], mono["strict_chance"]))
    perm = h.get("permutation_agreement", {})
    if perm.get("n"):
        out.append((f"same rating in another order\n({perm['n']} comparisons)", perm["share"], perm["chance"]))
    longer = h.get("chosen_longer", {})
    if longer.get("n") and longer.get("share") is not None:
        out.append((f"chosen is the longer\n({longer['n']} pairs)", longer["share"], 0.5))
    ev = h.get("evolved_beat_parent", {})
    if ev.get("n") and ev.get("win_share") is not None:
        out.append((f"rewrite beats original\n({ev['n']} comparisons)", ev["win_share"], (1 - ev["tie_share"]) / 2))
    return out
