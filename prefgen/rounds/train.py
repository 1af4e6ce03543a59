"""`prefgen train-dpo OUT --adapter-out DIR`: a LoRA adapter trained with TRL's `DPOTrainer` on a
run's pairs, written as a PEFT folder that a config can list under its model's `adapters:`.

The base is the policy's model in the run's manifest (the one named by `--policy`, or the model every
generator ran on), or `--base`; an embedded model resolves to its converted folder. Without
`--init-adapter` a fresh LoRA (`LoraConfig`, rank 8 on q_proj/v_proj by default) is trained; with it,
that adapter is trained further (in both cases DPO's reference is the base, the adapter turned off).
The folder is written beside its target and renamed into place once prefgen's own adapter check
(`models/adapters.py`) accepts it against the base; `train_dpo.json` in it records the figures.
trl and peft are the `train` extra.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefgen.dataset.report import ReportError, read_manifest, read_output
from prefgen.output.files import PAIRS_DIR
from prefgen.output.storage import storage
from prefgen.rounds.plan import RoundsError, base_source

FIGURES_FILE = "train_dpo.json"
COLUMNS = ("prompt", "chosen", "rejected")  # TRL's conversational preference columns


@dataclass
class TrainSettings:
    """How DPO trains the adapter; the defaults suit a small model on a CPU."""

    steps: int | None = None  # None: `epochs` passes over the pairs
    epochs: float = 1.0
    learning_rate: float = 5e-5
    rank: int = 8
    modules: tuple[str, ...] = ("q_proj", "v_proj")
    beta: float = 0.1
    batch_size: int = 2
    max_length: int = 512
    seed: int = 0

    def flags(self) -> list[str]:
        """These settings as `prefgen train-dpo` flags."""
        flags = [] if self.steps is None else ["--steps", str(self.steps)]
        flags += ["--epochs", str(self.epochs), "--learning-rate", str(self.learning_rate), "--rank", str(self.rank),
                  "--modules", ",".join(self.modules), "--beta", str(self.beta), "--batch-size", str(self.batch_size),
                  "--max-length", str(self.max_length), "--seed", str(self.seed)]
        return flags


def require_train_extra() -> None:
    """A clear error when trl or peft is not installed."""
    missing = [m for m in ("trl", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise RoundsError(f"training an adapter needs {' and '.join(missing)}, not installed: "
                          "pip install 'prefgen[train]' (in the repository: uv sync --extra train)")


def load_pairs(out: str) -> tuple[dict, list[dict]]:
    """The run's manifest and its pairs' prompt/chosen/rejected columns; a clear error if it has none."""
    store = storage(out)
    try:
        manifest = read_manifest(store)
    except ReportError as exc:
        raise RoundsError(str(exc)) from None
    table = read_output(store, PAIRS_DIR)
    if table.num_rows == 0:
        rejects = manifest.get("rejects") or {}
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(rejects.items()))
        why = f" (its rows were rejected: {reasons}; see {out}/rejects/)" if reasons else ""
        raise RoundsError(f"{out} holds no pairs{why}; DPO has nothing to train on")
    return manifest, table.select(list(COLUMNS)).to_pylist()


def _target(adapter_out: str, overwrite: bool) -> Path:
    target = Path(adapter_out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise RoundsError(f"{target} exists and is not empty: give another --adapter-out, or --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def train_dpo(out: str, adapter_out: str, settings: TrainSettings = TrainSettings(), policy: str | None = None,
              base: str | None = None, init_adapter: str | None = None, overwrite: bool = False) -> dict:
    """Train an adapter on the pairs of the run at `out` into `adapter_out`; returns its figures."""
    require_train_extra()
    manifest, rows = load_pairs(out)
    source = base or base_source(manifest["config"], policy)
    target = _target(adapter_out, overwrite)

    import datasets
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefgen.models.adapters import AdapterSpec, check_adapters
    from prefgen.models.embedded import resolve_model

    model_dir = resolve_model(source)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # float32: DPO's small updates vanish in bfloat16 weights (see README, Output)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = None
    if init_adapter:
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        lora = LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, target_modules=list(settings.modules),
                          lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    gpu = torch.cuda.is_available()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        args = DPOConfig(output_dir=str(staging / "trainer"), max_steps=settings.steps or -1,
                         num_train_epochs=settings.epochs, learning_rate=settings.learning_rate, beta=settings.beta,
                         per_device_train_batch_size=settings.batch_size, max_length=settings.max_length,
                         logging_steps=1, save_strategy="no", report_to="none", seed=settings.seed,
                         use_cpu=not gpu, bf16=gpu)
        trainer = DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=lora)
        print(f"[prefgen] train-dpo: {len(rows)} pairs of {out}, base {source}"
              + (f", from adapter {init_adapter}" if init_adapter else f", a new rank-{settings.rank} LoRA"), flush=True)
        started = time.monotonic()
        trainer.train()
        wall = time.monotonic() - started
        adapter = staging / "adapter"
        trainer.model.save_pretrained(str(adapter))
        try:
            check_adapters(source, {target.name: AdapterSpec(path=str(adapter))})
        except ValueError as exc:
            raise RoundsError(f"the trained adapter does not pass prefgen's adapter check: {exc}") from None
        steps = trainer.state.global_step
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        figures = {"output": out, "base": source, "init_adapter": init_adapter, "pairs": len(rows), "steps": steps,
                   "wall_s": round(wall, 2), "s_per_step": round(wall / steps, 2) if steps else None,
                   "losses": [round(x, 5) for x in losses], "settings": asdict(settings)}
        (adapter / FIGURES_FILE).write_text(json.dumps(figures, indent=2))
        if target.exists():
            shutil.rmtree(target)
        adapter.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"[prefgen] train-dpo: {steps} steps in {wall:.1f} s ({figures['s_per_step']} s/step), loss "
          f"{losses[0] if losses else float('nan'):.4f} -> {losses[-1] if losses else float('nan'):.4f}; "
          f"adapter written to {target}", flush=True)
    return figures
