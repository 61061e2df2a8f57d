"""Reliability: inject faults into real runs and record what happens, for this tree and for a base commit.

    python benchmarks/reliability.py                      # this tree
    python benchmarks/reliability.py --base 5031b4b       # also the same faults against that commit (git archive)

Writes benchmarks/results/reliability.md. Each fault is run on tiny GPT-2 / Llama models inside a real Trainer (and
one TRL SFTTrainer). With ``--base``, the base commit's hf_compress is put first on PYTHONPATH in a subprocess, so
both columns come from the same script on the same machine in one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "scripts"))


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ").replace("|", "/")
    return text if len(text) < 150 else text[:147] + "..."


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _weights_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b)


def _run_pruning(output_dir, resume=None, **pruning):
    from crash_in_on_save import PRUNING, TRAINING
    from transformers import Trainer

    from conftest import LMDataset, tiny_gpt2, training_args
    from hf_compress import PruningCallback, PruningConfig

    model = tiny_gpt2(0)
    callback = PruningCallback(PruningConfig(**{**PRUNING, **pruning}))
    trainer = Trainer(
        model=model, args=training_args(output_dir, **TRAINING), train_dataset=LMDataset(), callbacks=[callback]
    )
    trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(callback.modules.values())
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    total = sum(m.weight.numel() for m in modules)
    two_four_breaks = 0
    for m in modules:
        groups = (m.weight.detach().t() != 0).reshape(-1, 4).sum(1)
        two_four_breaks += int((groups > 2).sum())
    return state, zeros / total, two_four_breaks


_CACHE: dict = {}


def fault_resume(kind: str, work: Path) -> str:
    """Resume from checkpoint-10 of a 0.5 movement run after damaging it or changing the config."""
    straight_dir = work / "straight"
    if "straight" not in _CACHE:
        _CACHE["straight"] = _run_pruning(straight_dir)[0]
    straight = _CACHE["straight"]
    folder = work / kind
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(straight_dir / "checkpoint-10", folder / "checkpoint-10")
    checkpoint = folder / "checkpoint-10"
    overrides = {}
    if kind == "deleted_json":
        os.remove(checkpoint / "hf_compress_pruning.json")
    elif kind == "truncated_tensors":
        data = (checkpoint / "hf_compress_pruning.safetensors").read_bytes()
        (checkpoint / "hf_compress_pruning.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "target_0.2":
        overrides = {"target_sparsity": 0.2}
    elif kind == "pattern_2:4":
        overrides = {"pattern": "2:4", "target_sparsity": None}
    elif kind == "criterion_magnitude":
        overrides = {"criterion": "magnitude"}
    try:
        resumed, sparsity, breaks = _run_pruning(folder, resume=checkpoint, **overrides)
    except Exception as error:
        return f"refused: {_short(error)}"
    extra = f", {breaks} blocks break 2:4" if "2:4" in kind else ""
    return f"trained on: sparsity {sparsity:.3f}{extra}, max abs diff vs uninterrupted {_weights_diff(resumed, straight):.3g}"


def fault_crash_in_on_save(work: Path) -> str:
    """SIGKILL-like exit inside on_save (after the Trainer wrote checkpoint-10, before hf_compress's on_save)."""
    from safetensors.torch import load_file

    script = TESTS / "scripts" / "crash_in_on_save.py"
    for mode, folder in (("straight", "s"), ("kill", "c")):
        subprocess.run(
            [sys.executable, str(script), str(work / folder), mode], env=_env(), capture_output=True, timeout=600
        )
    result = subprocess.run(
        [sys.executable, str(script), str(work / "c"), "resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        return f"refused: {result.stderr.strip().splitlines()[-1][:150]}"
    diff = _weights_diff(load_file(work / "c" / "final.safetensors"), load_file(work / "s" / "final.safetensors"))
    staged = "from the staged copy" if "staged" in result.stderr else "without hf_compress state (warning only)"
    return f"resumed {staged}; max abs diff vs uninterrupted {diff:.3g}"


def fault_nan_configs() -> str:
    from hf_compress import DistillationConfig, PruningConfig, QATConfig

    nan, inf = float("nan"), float("inf")
    cases = [
        lambda: DistillationConfig(temperature=nan),
        lambda: DistillationConfig(hidden_weight=inf),
        lambda: DistillationConfig(alpha=nan),
        lambda: QATConfig(observer_momentum=nan),
        lambda: QATConfig(scale_learning_rate=inf),
        lambda: PruningConfig(target_sparsity=nan),
        lambda: PruningConfig(target_sparsity=0.5, initial_sparsity=nan),
    ]
    refused = 0
    for make in cases:
        try:
            make()
        except ValueError:
            refused += 1
    return f"{refused} of {len(cases)} refused at construction"


def fault_user_callback_raises(technique: str, work: Path) -> str:
    """A user callback raises at step 3; count hf_compress's hooks left on the model after the exception."""
    from test_cleanup import FailAt, hook_count
    from transformers import Trainer

    import hf_compress
    from conftest import LMDataset, tiny_gpt2, tiny_llama, training_args
    from hf_compress import (
        DistillationCallback,
        DistillationConfig,
        PruningCallback,
        PruningConfig,
        QATCallback,
        QATConfig,
    )

    model = tiny_llama() if technique != "sparsegpt" else tiny_gpt2(0)
    callback = {
        "qat": lambda: QATCallback(QATConfig(weight_bits=4, activations="per_token")),
        "distillation": lambda: DistillationCallback(tiny_llama(1), DistillationConfig()),
        "sparsegpt": lambda: PruningCallback(
            PruningConfig(target_sparsity=0.5, criterion="sparsegpt", start=0, end=2, frequency=1)
        ),
    }[technique]()
    trainer = Trainer(model=model, args=training_args(work / technique, max_steps=8), train_dataset=LMDataset())
    trainer.add_callback(FailAt(3))
    trainer.add_callback(callback)
    wrapper = getattr(hf_compress, "compression_run", None)
    try:
        if wrapper is None:
            trainer.train()
        else:
            with wrapper(trainer):
                trainer.train()
    except RuntimeError:
        pass
    how = "with compression_run" if wrapper is not None else "(no cleanup API)"
    return f"{hook_count(model)} hf_compress hooks left {how}"


def fault_one_shot_nan() -> str:
    import torch

    from conftest import LMDataset, tiny_llama
    from hf_compress import prune_one_shot

    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight[0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [{k: v[None] for k, v in LMDataset(n=2)[i].items()} for i in range(2)]
    try:
        prune_one_shot(model, batches, sparsity=0.5)
        outcome = "no error"
    except Exception as error:
        outcome = _short(error)
    changed = sum(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if v.isfinite().all())
    return f"{changed} weight tensors changed; {outcome}"


def fault_plugin_layout(work: Path) -> str:
    from transformers import Trainer

    from conftest import LMDataset, tiny_gpt2, training_args
    from hf_compress import PruningCallback, PruningConfig

    try:
        callback = PruningCallback(
            PruningConfig(target_sparsity=0.5, criterion="layout_blind", start=0, end=4, frequency=2)
        )
    except Exception as error:
        return f"refused: {_short(error)}"
    trainer = Trainer(
        model=tiny_gpt2(0),
        args=training_args(work / "plugin", max_steps=4),
        train_dataset=LMDataset(),
        callbacks=[callback],
    )
    try:
        trainer.train()
    except Exception as error:
        return f"refused: {_short(error)}"
    return "trained on with wrongly oriented scores"


def fault_peft_save(work: Path) -> str:
    """TRL SFTTrainer + peft_config, pruning 0.5 + distillation; save; reload in a new process."""
    script = TESTS / "scripts" / "peft_sft_save.py"
    result = subprocess.run(
        [sys.executable, str(script), str(work / "peft")], env=_env(), capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        return f"training failed: {result.stderr.strip().splitlines()[-1][:150]}"
    reload = (
        "import sys, hf_compress\nfrom peft import AutoPeftModelForCausalLM\nfrom hf_compress.targets import find_target_modules\n"
        "m = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1] + '/out')\n"
        "restore = getattr(hf_compress, 'restore_compression', None)\n"
        "restore and restore(m, sys.argv[1] + '/out')\n"
        "merged = hf_compress.merge_and_unload(m)\nmods = find_target_modules(merged).values()\n"
        "print(sum(int((x.weight == 0).sum()) for x in mods) / sum(x.weight.numel() for x in mods), bool(restore))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", reload, str(work / "peft")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work,  # not the repository root, whose hf_compress/ would shadow PYTHONPATH under --base
    )
    if result.returncode != 0:
        return f"reload failed: {result.stderr.strip().splitlines()[-1][:150]}"
    sparsity, restored = result.stdout.split()[-2:]
    how = (
        "AutoPeftModel + restore_compression + merge_and_unload"
        if restored == "True"
        else "AutoPeftModel + merge_and_unload"
    )
    return f"reloaded sparsity {float(sparsity):.4f} ({how})"


def fault_recipe_check(work: Path) -> str:
    import yaml

    cases = {
        "plugin field": {"callbacks": [{"name": "wanda_one_shot", "bogus_field": 1}]},
        "missing teacher": {"distillation": {"teacher": str(work / "no_such_teacher")}},
        "nan": {"pruning": {"target_sparsity": float("nan")}},
    }
    refused = []
    for name, recipe in cases.items():
        path = work / f"{name.replace(' ', '_')}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        result = subprocess.run(
            [sys.executable, "-m", "hf_compress.cli", "recipe", "check", str(path)],
            env=_env(),
            capture_output=True,
            timeout=300,
            cwd=work,  # not the repository root, whose hf_compress/ would shadow PYTHONPATH under --base
        )
        if result.returncode != 0:
            refused.append(name)
    return f"{len(refused)} of {len(cases)} refused ({', '.join(refused) or 'none'})"


def staging_cost() -> str:
    """Time of writing pruning state for a GPT-2-small-sized mask set: direct write vs stage at step end + rename."""
    from types import SimpleNamespace

    import torch

    from hf_compress.checkpoint_state import save_state

    masks = {
        f"mask.h.{i}.{n}": torch.rand(s) > 0.5
        for i in range(12)
        for n, s in (("attn", (2304, 768)), ("proj", (768, 768)), ("fc", (3072, 768)), ("fc_proj", (768, 3072)))
    }
    timings = {"direct": [], "staged": []}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(6):
            for mode in ("direct", "staged") if round_index % 2 == 0 else ("staged", "direct"):
                args = SimpleNamespace(output_dir=os.path.join(folder, f"{mode}{round_index}"))
                state = SimpleNamespace(global_step=10)
                start = time.perf_counter()
                if mode == "direct":
                    save_state(os.path.join(args.output_dir, "checkpoint-10"), "x", masks, {})
                    at_save = time.perf_counter() - start
                else:
                    from hf_compress.resume_checks import commit_state, stage_state

                    stage_state(args, state, SimpleNamespace(should_save=True), "x", masks, {})
                    middle = time.perf_counter()
                    commit_state(args, state, "x", True, None)
                    at_save = time.perf_counter() - middle
                timings[mode].append((time.perf_counter() - start, at_save))
    params = sum(m.numel() for m in masks.values()) / 1e6
    direct = statistics.median(t for t, _ in timings["direct"])
    staged = statistics.median(t for t, _ in timings["staged"])
    at_save = statistics.median(s for _, s in timings["staged"])
    return (
        f"{params:.1f} M masks: direct write {direct * 1000:.0f} ms, stage + rename {staged * 1000:.0f} ms "
        f"(ratio {staged / direct:.2f}); of which inside on_save (the rename) {at_save * 1000:.1f} ms"
    )


FAULTS = {
    "crash inside on_save (process exits after the Trainer wrote checkpoint-10)": lambda w: fault_crash_in_on_save(w),
    "hf_compress_pruning.json deleted from the checkpoint": lambda w: fault_resume("deleted_json", w),
    "hf_compress_pruning.safetensors truncated to half": lambda w: fault_resume("truncated_tensors", w),
    "resume a 0.5 run with target_sparsity=0.2": lambda w: fault_resume("target_0.2", w),
    "resume an unstructured run with pattern='2:4'": lambda w: fault_resume("pattern_2:4", w),
    "resume a movement run with criterion='magnitude'": lambda w: fault_resume("criterion_magnitude", w),
    "NaN / inf in 7 config fields": lambda w: fault_nan_configs(),
    "recipe check: bogus plugin field, missing teacher, .nan": lambda w: fault_recipe_check(w),
    "user callback raises at step 3, QAT (int4 + per-token activations)": lambda w: fault_user_callback_raises(
        "qat", w
    ),
    "user callback raises at step 3, distillation": lambda w: fault_user_callback_raises("distillation", w),
    "user callback raises at step 3, sparsegpt criterion": lambda w: fault_user_callback_raises("sparsegpt", w),
    "prune_one_shot with a NaN in block 1 (block 0 already pruned)": lambda w: fault_one_shot_nan(),
    "plugin criterion returns GPT-2 Conv1D scores as [in, out]": lambda w: fault_plugin_layout(w),
    "TRL SFTTrainer + LoRA, pruning 0.5 + distillation, saved and reloaded in a new process": lambda w: (
        fault_peft_save(w)
    ),
}


def run_all() -> dict:
    outcomes = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, fault in FAULTS.items():
            start = time.perf_counter()
            try:
                outcomes[name] = fault(Path(folder))
            except Exception as error:
                outcomes[name] = f"fault run failed: {_short(error)}"
            print(f"[{time.perf_counter() - start:.0f}s] {name}: {outcomes[name]}", file=sys.stderr, flush=True)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", help="also run the faults against this commit of hf_compress")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "reliability.md"))
    args = parser.parse_args()
    if args.json_only:
        print(json.dumps(run_all()))
        return
    after = run_all()
    cost = staging_cost()
    before = None
    if args.base:
        with tempfile.TemporaryDirectory() as source:
            archive = subprocess.run(
                ["git", "archive", args.base, "hf_compress"], cwd=ROOT, capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", source], input=archive.stdout, check=True)
            env = {**_env(), "PYTHONPATH": source}
            result = subprocess.run(
                [sys.executable, __file__, "--json-only"], env=env, capture_output=True, text=True, timeout=3000
            )
            before = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {}
    lines = [
        "# Reliability: faults injected and their outcome",
        "",
        f"Date: {time.strftime('%Y-%m-%d')}. Machine: 2 shared CPU cores, torch {__import__('torch').__version__}, "
        f"transformers {__import__('transformers').__version__}. Tiny GPT-2 / Llama models from configs in a real Trainer "
        "(TRL SFTTrainer for the LoRA row).",
        "",
        f"Reproduce: `python benchmarks/reliability.py{' --base ' + args.base if args.base else ''}`"
        + (
            f" (the 'before' column runs the same script against commit {args.base}'s hf_compress)"
            if args.base
            else ""
        ),
        "",
        "| fault | before | after |" if before is not None else "| fault | outcome |",
        "|---|---|---|" if before is not None else "|---|---|",
    ]
    for name, outcome in after.items():
        lines.append(
            f"| {name} | {before.get(name, 'n/a')} | {outcome} |" if before is not None else f"| {name} | {outcome} |"
        )
    lines += [
        "",
        f"Cost of staging the state before the Trainer's save (median of 6, order alternated): {cost}. The write moves from "
        "on_save to on_step_end of the saving step; nothing is written twice.",
        "",
        "A failed run's hooks come off automatically only inside `with hf_compress.compression_run(trainer)` (or with "
        "`hf_compress.release(trainer)`, or at the next `trainer.train()` on the same model): transformers has no "
        "event for an exception leaving `trainer.train()`.",
    ]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
