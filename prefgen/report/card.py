"""The dataset card: `README.md` of an output folder, Hugging Face Hub metadata included.

YAML front matter the Hub reads (configs and data files: pairs as the default config, rejects
as a second one; task, tags, size category, a `license:` to fill), then in plain words: how to
load and train on the data, what made it (models, prompts by name, judge, pairing rule, config
digest, versions, all from manifest.json), counts, rejects by reason, the plots (relative
links), judge health and its warnings (rendered by `report.health_lines`, computed in
`prefgen.report.health`), and the licences to check: each model's licence governs its outputs.
"""

from __future__ import annotations

import yaml

from prefgen.models.embedded import EMBEDDED_SCHEME
from prefgen.report.plots import PLOTS
from prefgen.report.margins import selection_line
from prefgen.report.summary import format_counts, health_lines

# The one training example, shown in every card (README.md's training section shows the same code).
# {dataset}: the arguments of load_dataset; {model}: the model to train.
# README.md's "Loading it and training with TRL" block, which the DPOTrainer integration test runs;
# `test_report_card` checks the two are the same text. The card adds the line that sets MODEL.
TRAINING_SNIPPET = '''MODEL = "{model}"  # the policy to train: a hub id or a folder
import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

ds = datasets.load_dataset({dataset}, split="train")
model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(MODEL)
args = DPOConfig(output_dir="dpo-out", max_length=1024, bf16=torch.cuda.is_available())
trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
trainer.train()
'''
TRAINING_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a small model to start from; use your own
EMBEDDED_UPSTREAM = {"SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSE_TODO = "# TODO: your licence for this dataset, once the model licences below are checked"
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


def size_category(n: int) -> str:
    """The Hub's size category of a dataset of n rows."""
    return next((label for limit, label in SIZES if n < limit), "n>1B")


def data_files(has_rejects: bool, files: dict | None = None) -> list[dict]:
    """The card's configs: pairs as the default; rejects when there are any. `files`: the data
    files of pairs and rejects (a glob or a list); None: the layout `datasets.Dataset.push_to_hub`
    writes on the Hub (data/ for the default config, <config>/ for the others)."""
    files = files or {"pairs": "data/train-*", "rejects": "rejects/train-*"}
    pairs, rejects = files["pairs"], files["rejects"]
    configs = [{"config_name": "default", "default": True, "data_files": [{"split": "train", "path": pairs}]}]
    if has_rejects:
        configs.append({"config_name": "rejects", "data_files": [{"split": "train", "path": rejects}]})
    return configs


def front_matter(pairs: int, has_rejects: bool, files: dict | None) -> str:
    meta = {
        "pretty_name": "Preference pairs made with prefgen",
        "license": "unknown",
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "synthetic", "prefgen"],
        "size_categories": [size_category(pairs)],
        "configs": data_files(has_rejects, files),
    }
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return "---\n" + text.replace("license: unknown\n", f"license: unknown  {LICENSE_TODO}\n", 1) + "---\n"


def training_snippet(dataset_args: str, model: str = TRAINING_MODEL) -> str:
    return TRAINING_SNIPPET.format(dataset=dataset_args, model=model)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _short(text: str | None, n: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _roles(cfg: dict) -> dict[str, list[str]]:
    """Model name -> the roles it plays."""
    roles: dict[str, list[str]] = {}
    for g in cfg.get("generators") or []:
        roles.setdefault(g.get("model"), []).append(f"generator {g.get('name')}")
    evo = cfg.get("evolution") or {}
    if evo.get("enabled"):
        roles.setdefault(evo.get("model"), []).append("evolver")
    for j in [cfg.get("judge") or {}, *(cfg.get("jury") or [])]:
        if j:
            roles.setdefault(j.get("model"), []).append(f"judge {j.get('name')}")
    return roles


def _source(spec: dict) -> str:
    if spec.get("kind") == "endpoint":
        return f"`{spec.get('model')}` at {spec.get('base_url')}"
    adapters = ", ".join(f"`{name}`" for name in spec.get("adapters") or {})
    return f"`{spec.get('source')}`" + (f" with LoRA adapters {adapters}" if adapters else "")


def what_made_it(manifest: dict) -> list[str]:
    from prefgen.prompts import REWRITE_TEMPLATES

    cfg = manifest.get("config") or {}
    roles = _roles(cfg)
    lines = ["## What made the data", "", "| model | kind | source | roles |", "|---|---|---|---|"]
    for name, spec in (cfg.get("models") or {}).items():
        lines.append(f"| {name} | {spec.get('kind', 'vllm')} | {_source(spec)} | {', '.join(roles.get(name, []))} |")
    lines.append("")
    for g in cfg.get("generators") or []:
        s = g.get("sampling") or {}
        prompt = f'system prompt "{_short(g.get("system_prompt"))}"' if g.get("system_prompt") else "no system prompt"
        template = "its own user template" if g.get("template") else "the instruction as the user message"
        model = g.get("model") + (f", adapter {g['adapter']}" if g.get("adapter") else "")
        lines.append(f"- generator **{g.get('name')}** ({model}): {g.get('num_completions', 1)} answer(s) per "
                     f"instruction, temperature {s.get('temperature')}, max_tokens {s.get('max_tokens')}; {prompt}; {template}")
    evo = cfg.get("evolution") or {}
    if evo.get("enabled"):
        template = next((n for n, t in REWRITE_TEMPLATES.items() if t == evo.get("template")), "a template of its own")
        lines.append(f"- evolution ({evo.get('model')}): {evo.get('num_evolutions')} rewrite round(s), template "
                     f"{template}, criteria: {', '.join(evo.get('criteria') or [])}; originals kept: "
                     f"{'yes' if evo.get('keep_original') else 'no'}")
    for j in [cfg.get("judge") or {}, *(cfg.get("jury") or [])]:
        if j:
            own = [a for a in j.get("aspects") or [] if a in (j.get("rubrics") or {})]
            lines.append(f"- judge **{j.get('name')}** ({j.get('model')}): {j.get('mode')} mode, aspects "
                         f"{', '.join(j.get('aspects') or [])}{' (own rubrics: ' + ', '.join(own) + ')' if own else ''}, "
                         f"{j.get('permutations')} shown order(s), combined by {j.get('combine')}")
    p = cfg.get("pairing") or {}
    lines.append(f"- pairing: {p.get('strategy')}, minimum margin {p.get('min_margin')}, length-matched: "
                 f"{'yes' if p.get('length_matched') else 'no'}, truncated chosen allowed: "
                 f"{'yes' if p.get('allow_truncated_chosen') else 'no'}")
    if (manifest.get("verification") or {}).get("pairs_checked"):
        kept = "flagged" if (p.get("verification") or {}).get("on_fail") == "flag" else "rejected"
        lines.append(f"- pair check: the judge named the better answer of each pair in both orders; a pair whose "
                     f"verdict flipped with the order or went against the ratings was {kept}")
    else:
        lines.append("- pair check: off (no pair was checked in both orders)")
    inp = cfg.get("input") or {}
    lines += [f"- input: `{inp.get('path') or 'the bundled sample instructions'}` (field `{inp.get('field')}`, "
              f"digest {manifest.get('input_digest')}), seed {cfg.get('seed')}",
              f"- config digest: `{manifest.get('config_digest')}` (the full config is in manifest.json)",
              f"- versions: {', '.join(f'{k} {v}' for k, v in (manifest.get('versions') or {}).items())}", ""]
    return lines


def counts_section(manifest: dict, counts: dict) -> list[str]:
    rejects = counts["rejects"]
    lines = ["## Counts", "",
             f"- instructions in: {manifest.get('input_rows', '?')}; paired: {counts['instructions']}; "
             f"rejected: {sum(rejects.values())}",
             f"- pairs: {counts['pairs']}"]
    if manifest.get("candidates"):
        lines.append(f"- candidates: {format_counts(manifest['candidates'])}")
    if manifest.get("judging"):
        lines.append(f"- judging: {format_counts(manifest['judging'])}")
    fig = (manifest.get("health") or {}).get("pair_verification") or {}
    if fig.get("n"):
        pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
        lines.append(f"- pair check: {fig['n']} pairs checked in both orders, {pct(fig['verified_share'])} verified, "
                     f"flip rate {pct(fig['flip_rate'])} ({format_counts(manifest['verification'])})")
    if manifest.get("output_tokens") is not None:
        lines.append(f"- tokens generated: {manifest['output_tokens']}")
    if rejects:
        lines += ["", "| reject reason | instructions |", "|---|---|"]
        lines += [f"| `{r}` | {n} |" for r, n in sorted(rejects.items(), key=lambda kv: -kv[1])]
    return lines + [""]


def _plot_note(name: str, f: dict, selection: dict | None = None) -> str:
    """One line of numbers under a plot, from the same figures it draws; under the margins, the
    export's margin selection (or how to make one)."""
    if name == "margins.png":
        chosen = (f"This export is a {selection_line(selection)}." if selection else
                  "`prefgen export --top-margin 0.1` (or `--min-margin N`) keeps the pairs of the largest margins.")
        return f"{f['margins']['n']} pairs, mean margin {f['margins']['mean']:.2f}. {chosen}"
    if name == "lengths.png":
        ln = f["lengths"]
        return f"Median length: chosen {ln['chosen_median']:.0f}, rejected {ln['rejected_median']:.0f} characters."
    if name == "chosen_position.png":
        cells = f["chosen_position"]["orders"]
        return "; ".join(f"{label}: chosen shown first in {_pct(c['counts'][0], c['calls'])} of {c['calls']} "
                         f"(chance {_pct(c['expected'][0], c['calls'])})" for label, c in cells.items()) + "."
    if name == "win_rates.png":
        return "; ".join(f"{n} {100 * c['rate']:.0f}%" for n, c in f["win_rates"]["by_writer"].items()) + "."
    if name == "evolved_vs_parent.png":
        t = f["evolved_vs_parent"]["total"]
        return f"Rewrites rated higher {t['wins']}, same {t['ties']}, lower {t['losses']}."
    if name.startswith("ratings_by_"):
        groups = f["ratings"]["by_model" if name == "ratings_by_model.png" else "by_origin"]
        return "; ".join(f"{g}: mean {c['mean']:.2f} over {c['n']}" for g, c in groups.items()) + "."
    return ""


def plots_section(figures: dict, plots: list[str], failed: list[str], selection: dict | None = None) -> list[str]:
    lines = ["## Plots", ""]
    for name in [n for n in PLOTS if n in plots]:
        lines += [f"**{PLOTS[name]}.** {_plot_note(name, figures, selection)}", "", f"![{PLOTS[name]}](plots/{name})",
                  ""]
    missing = [n for n in PLOTS if n not in plots]
    if missing:
        lines += [f"Not drawn (nothing to show, e.g. no evolution or no shown order): {', '.join(missing)}.", ""]
    lines += [f"Could not be drawn: {f}" for f in failed]
    return lines


def health_section(manifest: dict) -> list[str]:
    lines = ["## Judge health", ""]
    figure_lines = health_lines(manifest.get("health") or {}, [])[1:]
    lines += [f"- {line.strip()}" for line in figure_lines] or ["- no judge-health figures in the manifest"]
    warnings = manifest.get("health_warnings") or []
    lines += ["", "**Warnings:**" if warnings else "No judge-health warning was raised.", ""]
    lines += [f"- {w}" for w in warnings]
    others = manifest.get("warnings") or []
    if others:
        lines += ["", "Warnings about the configuration:", ""] + [f"- {w}" for w in others]
    return lines + [""]


def licences_section(manifest: dict) -> list[str]:
    cfg = manifest.get("config") or {}
    lines = ["## Licences to check", "",
             "Each model's licence (for a hosted API, its provider's terms) governs the use of what it wrote "
             "or rated; check each before you fill in `license:` above and publish:", ""]
    for name, spec in (cfg.get("models") or {}).items():
        source = spec.get("source") or ""
        if spec.get("kind") == "endpoint":
            where = f"the terms of the API at {spec.get('base_url')} for model `{spec.get('model')}`"
        elif source.startswith(EMBEDDED_SCHEME):
            upstream = EMBEDDED_UPSTREAM.get(source[len(EMBEDDED_SCHEME):])
            where = (f"embedded in prefgen; the weights are https://huggingface.co/{upstream}" if upstream
                     else "embedded in prefgen: the licence of its weights")
        elif source.startswith("/"):
            where = f"a local folder, `{source}`: the licence of the weights it holds"
        else:
            where = f"https://huggingface.co/{source}"
        lines.append(f"- {name} (`{source or spec.get('model')}`): {where}")
    inp = (cfg.get("input") or {}).get("path")
    lines.append(f"- the instructions (`{inp or 'the bundled sample instructions'}`): their own licence")
    return lines + [""]


def dataset_card(manifest: dict, figures: dict, plots: list[str], counts: dict, output: str,
                 repo_id: str | None = None, failed_plots: list[str] | None = None, files: dict | None = None,
                 selection: dict | None = None) -> str:
    """The card's text for the output at `output`, whose data files are `files` (see data_files);
    `repo_id` set: as pushed to that Hub repo; `selection`: the pairs were selected by margin."""
    has_rejects = bool(counts["rejects"])
    if repo_id:
        load = f'"{repo_id}"'
        rejects_load = f'datasets.load_dataset("{repo_id}", "rejects", split="train")'
    else:
        out = output.rstrip("/")
        load = f'"parquet", data_files="{out}/pairs/part-*.parquet"'
        rejects_load = f'datasets.load_dataset("parquet", data_files="{out}/rejects/part-*.parquet", split="train")'
    status = manifest.get("status")
    lines = [front_matter(counts["pairs"], has_rejects, None if repo_id else files),
             "# Preference pairs made with prefgen", "",
             f"{counts['pairs']} preference pairs (`prompt`, `chosen`, `rejected`, with ratings and provenance) from "
             f"{counts['instructions']} instructions, generated, rated and paired by "
             "prefgen on Ray Data + vLLM.", ""]
    if status != "complete":
        lines += [f"**This output's run is {status or 'of unknown status'}**: the card describes what was committed so "
                  "far.", ""]
    lines += ["## Load and train", "", "```python", training_snippet(load).rstrip(), "```", "",
              f"The rows instructions gave no pair for, with the reason: `{rejects_load}`." if has_rejects else "", "",
              "Each pair row holds, besides `prompt`/`chosen`/`rejected` (message lists), `chosen_rating`, "
              "`rejected_rating`, `chosen_model`, `rejected_model`, the candidate ids, `id`, `pair_id`, `source`, "
              "`line`, and `candidates`: every candidate with its judgments.", ""]
    lines += what_made_it(manifest) + counts_section(manifest, counts)
    lines += (plots_section(figures, plots, failed_plots or [], selection) + health_section(manifest)
              + licences_section(manifest))
    return "\n".join(lines)
