"""Command line: `prefgen run [CONFIG.yaml] [--input PATH] [--output DIR] [--limit N] ...`, and the
commands around a run (plan, config, calibrate, report, export, train-dpo, rounds).

Without a config file the embedded default runs: local Ray, vLLM's CPU build, the small
embedded model and the bundled sample instructions. Flags override the file's keys.
"""

from __future__ import annotations

import argparse
import sys

from prefgen.roles.judge.calibrate import PairsError
from prefgen.engines.cluster import PlacementTimeout
from prefgen.config import ConfigError, PipelineConfig, load_config
from prefgen.dataset.report import ReportError
from prefgen.dataset.export import ExportError
from prefgen.engines.starts import EngineStartFailed
from prefgen.input.read import InputError
from prefgen.engines.endpoint import EndpointStopped
from prefgen.run.pipeline import run
from prefgen.output.writer import RunStopped
from prefgen.engines.placement import PlanError
from prefgen.output.manifest import ResumeRefused
from prefgen.run.stopping import EXIT_STOPPED, StopRequested
from prefgen.rounds.plan import RoundsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefgen", description="Generate a preference dataset with Ray Data + vLLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline")
    run.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    run.add_argument("--input", help="instructions file or folder (JSONL, Parquet, CSV, datasets)")
    run.add_argument("--field", help="name of the instruction field")
    run.add_argument("--output", help="output directory or URI")
    run.add_argument("--limit", type=int, help="use only the first N input rows")
    run.add_argument(
        "--overwrite", action="store_true", help="start fresh: delete the dataset at the output (default: resume it)"
    )
    run.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS or a new local Ray)")
    run.add_argument("--seed", type=int, help="run seed")
    run.add_argument("--mode", choices=["auto", "streaming", "phased"], help="streaming, or one stage at a time")
    run.add_argument("--verbose", action="store_true",
                     help="print everything on the console (Ray, Ray Data, vLLM, workers) instead of a progress "
                          "display and a log file")
    show = sub.add_parser("config", help="print the full, validated config (defaults filled in)")
    show.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    plan = sub.add_parser("plan", help="print the engines, their placement, the stages and the calls per row; start nothing")
    plan.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    plan.add_argument("--gpus", type=float, default=0.0,
                      help="GPUs to plan for besides ray.expected_resources (default 0: this machine's view)")
    plan.add_argument("--cpus", type=float, default=None, help="CPUs to plan for (default: this machine's cores)")
    plan.add_argument("--mode", choices=["auto", "streaming", "phased"], help="streaming, or one stage at a time")
    cal = sub.add_parser("calibrate", help="run the judge on labelled pairs and report its agreement with them")
    cal.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    cal.add_argument("--pairs", required=True, help="JSONL of labelled pairs: prompt, chosen, rejected")
    cal.add_argument("--judge", help="which judge of the config (default: judge)")
    cal.add_argument("--limit", type=int, help="use only the first N pairs")
    cal.add_argument("--out", help="also write the figures as JSON to this file")
    rep = sub.add_parser("report", help="(re)write an output's dataset card (README.md) and plots (plots/*.png)")
    rep.add_argument("output", help="output directory or URI of a run")
    exp = sub.add_parser("export", help="write an output's pairs as JSONL, or push them with the card to the Hub")
    exp.add_argument("output", help="output directory or URI of a run")
    exp.add_argument("--format", choices=["jsonl", "trl-strings"], default="jsonl",
                     help="jsonl: message lists, ratings and provenance; trl-strings: prompt/chosen/rejected as text")
    exp.add_argument("--to", help="file or URI to write (default: OUTPUT/export/pairs.<full|trl>.jsonl)")
    exp.add_argument("--push-to-hub", metavar="REPO_ID", help="push pairs, rejects, card and plots to this Hub dataset repo")
    exp.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    exp.add_argument("--top-margin", type=float, metavar="FRACTION",
                     help="keep only this share of the pairs, those of the largest rating margin (e.g. 0.1)")
    exp.add_argument("--min-margin", type=float, metavar="N",
                     help="keep only the pairs whose rating margin is at least N (before --top-margin)")
    dpo = sub.add_parser("train-dpo", help="train a LoRA adapter with DPO (TRL) on a run's pairs (the 'train' extra)")
    dpo.add_argument("output", help="output directory or URI of a run")
    dpo.add_argument("--adapter-out", required=True, help="folder to write the adapter to (PEFT layout)")
    dpo.add_argument("--policy", help="the generator whose model is the base (default: the model every generator "
                     "ran on)")
    dpo.add_argument("--base", help="the base model to train (a folder, hub id or embedded://NAME; default: the "
                     "policy's model in the run's manifest)")
    dpo.add_argument("--init-adapter", help="train this adapter further instead of a new one")
    dpo.add_argument("--overwrite", action="store_true", help="replace an adapter already at --adapter-out")
    _training_flags(dpo)
    rounds = sub.add_parser("rounds", help="on-policy rounds: run, then train an adapter on the pairs, then sample "
                            "it in the next round (the 'train' extra)")
    rounds.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    rounds.add_argument("--rounds", type=int, required=True, help="how many rounds")
    rounds.add_argument("--out", required=True, help="folder of the rounds: roundK/{config.yaml,output,adapter}, "
                        "rounds.json")
    rounds.add_argument("--policy", help="the generator that samples the policy (default: the config's only one)")
    rounds.add_argument("--input", help="instructions file or folder (every round samples the same prompts)")
    rounds.add_argument("--limit", type=int, help="use only the first N input rows")
    _training_flags(rounds)
    return parser


def _training_flags(parser: argparse.ArgumentParser) -> None:
    """DPO's settings (`rounds.train.TrainSettings`; defaults for a small model on a CPU)."""
    from prefgen.rounds.train import TrainSettings

    d = TrainSettings()
    parser.add_argument("--steps", type=int, help="optimizer steps (default: --epochs passes over the pairs)")
    parser.add_argument("--epochs", type=float, default=d.epochs, help=f"passes over the pairs (default {d.epochs})")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate, help=f"default {d.learning_rate}")
    parser.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank of a new adapter (default {d.rank})")
    parser.add_argument("--modules", default=",".join(d.modules),
                        help=f"modules a new adapter targets, comma-separated (default {','.join(d.modules)})")
    parser.add_argument("--beta", type=float, default=d.beta, help=f"DPO's beta (default {d.beta})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per step (default {d.batch_size})")
    parser.add_argument("--max-length", type=int, default=d.max_length,
                        help=f"tokens of prompt plus answer kept (default {d.max_length})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"training seed (default {d.seed})")


def training_settings(args: argparse.Namespace):
    from prefgen.rounds.train import TrainSettings

    return TrainSettings(steps=args.steps, epochs=args.epochs, learning_rate=args.learning_rate, rank=args.rank,
                         modules=tuple(m for m in args.modules.split(",") if m), beta=args.beta,
                         batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)


def _train_dpo(args: argparse.Namespace) -> int:
    from prefgen.rounds.train import train_dpo

    train_dpo(args.output, args.adapter_out, training_settings(args), policy=args.policy, base=args.base,
              init_adapter=args.init_adapter, overwrite=args.overwrite)
    return 0


def _rounds(args: argparse.Namespace) -> int:
    from prefgen.rounds.loop import run_rounds

    overrides = {k: v for k, v in {"input.path": args.input, "input.limit": args.limit}.items() if v is not None}
    run_rounds(args.config, args.rounds, args.out, policy=args.policy, overrides=overrides,
               settings=training_settings(args))
    return 0


def _report(args: argparse.Namespace) -> int:
    from prefgen.dataset.report import write_report
    from prefgen.output.storage import storage

    report = write_report(storage(args.output))
    for failure in report.failed_plots:
        print(f"prefgen: warning: plot not drawn: {failure}", file=sys.stderr)
    print(f"[prefgen] {args.output.rstrip('/')}/README.md and {len(report.plots)} plot(s) under plots/ written")
    return 0


def _export(args: argparse.Namespace) -> int:
    from prefgen.dataset.export import export, push_to_hub
    from prefgen.report.margins import selection_line

    margins = {"top_margin": args.top_margin, "min_margin": args.min_margin}
    if args.push_to_hub:
        sent = push_to_hub(args.output, args.push_to_hub, private=args.private or None, **margins)
        print(f"[prefgen] pushed {sent['pairs']} pairs, {sent['rejects']} rejects and {', '.join(sent['files'])} "
              f"to https://huggingface.co/datasets/{args.push_to_hub}")
        selection = sent["selection"]
    else:
        target, n, selection = export(args.output, args.format, args.to, **margins)
        print(f"[prefgen] {n} pairs written to {target} ({args.format})")
    if selection is not None:
        print(f"[prefgen] {selection_line(selection)}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from prefgen.roles.judge.calibrate import calibrate, figure_lines

    figures = calibrate(load_config(args.config), args.pairs, args.judge, args.limit)
    print("[prefgen] calibration")
    for line in figure_lines(figures):
        print("  " + line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    pairs = {
        "input.path": args.input,
        "input.field": args.field,
        "input.limit": args.limit,
        "output.path": args.output,
        "output.overwrite": args.overwrite or None,
        "ray.address": args.ray_address,
        "seed": args.seed,
        "ray.mode": getattr(args, "mode", None),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _plan(args: argparse.Namespace) -> int:
    import os

    from prefgen.run.ray_start import plan_run
    from prefgen.roles.plan import plan_lines, plan_stages

    cfg = load_config(args.config, {"ray.mode": args.mode} if args.mode else None)
    stages = plan_stages(cfg)
    cluster = {"CPU": args.cpus if args.cpus is not None else float(os.cpu_count() or 1), "GPU": args.gpus}
    devices, mode, resources = plan_run(cfg, stages, cluster)
    print("\n".join(plan_lines(cfg, stages, devices, mode, resources)))
    return 0


# every command but `run` and `config`, by name: each takes the parsed arguments and returns the exit code
COMMANDS = {"plan": _plan, "calibrate": _calibrate, "report": _report, "export": _export, "train-dpo": _train_dpo,
            "rounds": _rounds}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "config":
            import yaml

            cfg = load_config(args.config)
            print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
            return 0
        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
        cfg: PipelineConfig = load_config(args.config, _overrides(args))
    except (ConfigError, InputError, PlanError, PairsError, ReportError, ExportError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    except RoundsError as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return exc.code
    return _run(cfg, args.verbose)


def _run(cfg: PipelineConfig, verbose: bool) -> int:
    """`prefgen run`: the pipeline behind the console (a progress display and a log file, or
    everything on the console with --verbose, see `run/console.py`).

    Exit codes: 0 done; 2 bad config or input (or a refused resume or plan); 3 stopped by a fault
    (an engine that cannot start, an endpoint, placement), resumable; 4 (`EXIT_STOPPED`) stopped on
    request by SIGTERM or SIGINT (`run/stopping.py`), resumable."""
    from prefgen.run.console import RunConsole, ray_logs_dir
    from prefgen.output.files import absolute_uri

    console = RunConsole(verbose)
    console.capture(absolute_uri(cfg.output.path))
    code, summary = 0, None
    try:
        summary = run(cfg, log=console.log, watch=console.watch, worker_logs=verbose)
    except (ConfigError, InputError, ResumeRefused, PlanError, PairsError) as exc:
        code, message = 2, f"prefgen: {exc}"
    except (EngineStartFailed, RunStopped, EndpointStopped, PlacementTimeout) as exc:  # the folder resumes when rerun
        code, message = 3, f"prefgen: run stopped: {exc}"
    except StopRequested as exc:  # SIGTERM / Ctrl-C: what was done is committed, the folder resumes
        code, message = EXIT_STOPPED, f"prefgen: run {exc} (exit code {EXIT_STOPPED})"
    except BaseException:
        console.finish()
        if console.log_path:
            console.say(f"prefgen: the run failed; the traceback is in {console.log_path}", err=True)
            console.upload()
        raise  # the traceback: on the console with --verbose, else in the log file
    console.finish()
    if code:
        print(message, file=sys.stderr, flush=True)  # the log file (fd 2) keeps it too
        if console.log_path:
            console.say(message + f"\nfull log: {console.log_path}", err=True)
        console.upload()
        return code
    console.log("[prefgen] done")
    for line in summary.lines():
        console.log("  " + line)
    if not verbose:
        console.log(f"  logs:           driver {console.upload_to or console.log_path}; "
                    f"Ray's processes (engine workers included) {ray_logs_dir()}")
    console.upload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
