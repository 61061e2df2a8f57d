"""Pruning benchmarks of issue 2, measured side by side; results in ``benchmarks/results/pruning.md``.

Sections (run all, or some with ``--only``):

- ``overhead``: median optimizer-step time (``on_step_begin`` -> ``on_step_end``) with ``PruningCallback``
  (magnitude / movement, unstructured, frequency 100) over the plain Trainer's, same model, runs interleaved.
- ``mask_memory``: bytes of pruning state per pruned parameter (masks; movement scores), from the callback's tensors.
- ``global``: one global-scope mask update on a >= 100M-parameter Llama built from a config: extra peak memory
  (peak RSS over the RSS before, in a fresh subprocess) as % of the model's weight bytes, and the found threshold and
  sparsity against the exact ones (``torch.kthvalue`` over a concatenation, computed afterwards just to compare).
- ``schedule``: final sparsity minus target per pattern (unstructured, 2:4, row, head; layer and global scope).

Each section rewrites its own block of the results file, with the command that reproduces it and the date.

```bash
python benchmarks/pruning_bench.py                      # everything (~10 minutes on 2 CPU cores)
python benchmarks/pruning_bench.py --only overhead --rounds 6 --steps 30
```
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

RESULTS = os.environ.get(
    "PRUNING_BENCH_RESULTS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pruning.md")
)
SECTIONS = ("overhead", "mask_memory", "global", "schedule")


# ---------------------------------------------------------------- shared helpers
def command_line() -> str:
    return "python " + " ".join(["benchmarks/pruning_bench.py", *sys.argv[1:]])


def environment() -> str:
    import transformers

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}{gpu}"
    )


def write_section(name: str, markdown: str) -> None:
    """Replace the ``name`` block of the results file (creating the file and block when missing)."""
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Pruning benchmarks (issue 2)\n"
    begin, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    # keep the sections in their canonical order, whatever order they were measured in
    head = text.split("<!-- section:", 1)[0].rstrip()
    present = re.findall(r"<!-- section:([\w-]+) -->", text)
    order = [s for s in SECTIONS if s in present] + [s for s in present if s not in SECTIONS]
    ordered = [re.search(rf"<!-- section:{s} -->.*?<!-- /section:{s} -->", text, flags=re.S).group(0) for s in order]
    with open(RESULTS, "w") as handle:
        handle.write(head + "\n\n" + "\n\n".join(ordered) + "\n")
    print(markdown)


def stamp() -> str:
    return f"Measured {datetime.date.today().isoformat()} on {environment()}.\n\nReproduce: `{command_line()}`"


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, vocab: int, seed: int = 0):
        self.ids = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def llama(hidden: int, intermediate: int, layers: int, heads: int, vocab: int, seed: int = 0, kv_heads=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config)


def training_args(output_dir: str, **overrides):
    from transformers import TrainingArguments

    values = dict(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        learning_rate=1e-4,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


# ---------------------------------------------------------------- 1. overhead
def make_step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step, from on_step_begin to on_step_end."""

        def __init__(self):
            self.times: list[tuple[int, float]] = []
            self._began = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append((state.global_step, time.perf_counter() - self._began))

    return StepTimer()


OVERHEAD_MODEL = dict(hidden=256, intermediate=1024, layers=8, heads=8, vocab=4096)


def run_overhead(options) -> dict:
    from transformers import Trainer

    from hf_compress import PruningCallback, PruningConfig

    steps, warmup, rounds = options.steps, options.warmup, options.rounds
    variants = {
        "plain": None,
        "magnitude": dict(criterion="magnitude"),
        "movement": dict(criterion="movement"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    round_medians: dict[str, list[float]] = {name: [] for name in variants}
    update_times: dict[str, list[float]] = {name: [] for name in variants}
    masks_info = {}
    params = None
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(rounds):
            names = list(variants)
            names = names[round_index % len(names) :] + names[: round_index % len(names)]  # rotate the order
            for name in names:
                model = llama(**OVERHEAD_MODEL, seed=0)
                params = sum(p.numel() for p in model.parameters())
                timer = make_step_timer()
                callbacks = [timer]
                pruning = None
                if variants[name] is not None:
                    # frequency 100: masks are updated at step 0 (train begin) and at `end` = the last step
                    config = PruningConfig(
                        target_sparsity=0.5,
                        pattern="unstructured",
                        schedule="cubic",
                        frequency=100,
                        start=0,
                        end=steps,
                        **variants[name],
                    )
                    pruning = PruningCallback(config)
                    callbacks.append(pruning)
                data = RandomTokens(8 * steps, options.seq, OVERHEAD_MODEL["vocab"], seed=round_index)
                args = training_args(folder, max_steps=steps, use_cpu=options.device == "cpu")
                trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
                trainer.train()
                regular = []
                for step, seconds in timer.times[warmup:]:
                    if pruning is not None and step == steps:
                        update_times[name].append(seconds)
                    else:
                        regular.append(seconds)
                times[name] += regular
                round_medians[name].append(statistics.median(regular))
                if pruning is not None and name not in masks_info:
                    masks_info[name] = pruning_state_bytes(pruning)
                print(
                    f"round {round_index} {name}: median {statistics.median(s for _, s in timer.times[warmup:]):.4f}s"
                )
                del trainer, model, pruning
                gc.collect()
    return {
        "times": times,
        "round_medians": round_medians,
        "update_times": update_times,
        "params": params,
        "state": masks_info,
    }


def pruning_state_bytes(callback) -> dict:
    keep_masks = callback.pruner.keep_masks  # what the run holds between mask updates
    weights = sum(keep_masks.numel(name) for name in keep_masks.names())
    criterion = sum(t.numel() * t.element_size() for t in callback.criterion.state_dict().values())
    return {"mask_bytes": keep_masks.stored_bytes(), "weights": weights, "criterion_bytes": criterion}


def device_text(options) -> str:
    if options.device == "cuda" and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} (float32)"
    return f"CPU, {torch.get_num_threads()} torch threads"


def overhead_markdown(result: dict, options) -> str:
    times = result["times"]
    base = statistics.median(times["plain"])
    lines = [
        "## Overhead of PruningCallback per optimizer step",
        "",
        f"Llama-style model built from a config ({result['params'] / 1e6:.1f}M parameters: hidden "
        f"{OVERHEAD_MODEL['hidden']}, {OVERHEAD_MODEL['layers']} layers, vocab {OVERHEAD_MODEL['vocab']}), batch 8, "
        f"sequence {options.seq}, AdamW, {device_text(options)}. {options.rounds} rounds; each round trains every variant for "
        f"{options.steps} steps from the same initial model (variant order rotated per round), the first "
        f"{options.warmup} steps of each run are discarded. Step time = `on_step_begin` -> `on_step_end` "
        "(forward, backward, optimizer step and every callback). PruningCallback: target 0.5, unstructured, "
        "cubic, frequency 100 (mask updates at train begin and at the last step, timed separately below).",
        "",
        "| variant | steps timed | median step (s) | ratio to plain | median of per-round ratios | goal | met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    goals = {"plain": None, "magnitude": 1.03, "movement": 1.15}
    plain_rounds = result["round_medians"]["plain"]
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / base
        paired = statistics.median(v / p for v, p in zip(result["round_medians"][name], plain_rounds))
        goal = goals[name]
        met = "" if goal is None else ("yes" if ratio <= goal else "**no**")
        lines.append(
            f"| {name} | {len(values)} | {median:.4f} | {ratio:.3f}x | {paired:.3f}x | "
            f"{'' if goal is None else f'<= {goal}x'} | {met} |"
        )
    lines += ["", "Mask-update steps (the last step of each pruned run: scores, thresholds, new masks):", ""]
    lines += [
        "| variant | update steps | median update-step time (s) | extra over a plain step (s) | amortised over 100 steps |"
    ]
    lines += ["|---|---:|---:|---:|---:|"]
    for name, values in result["update_times"].items():
        if not values:
            continue
        median = statistics.median(values)
        extra = median - base
        lines.append(f"| {name} | {len(values)} | {median:.4f} | {extra:+.4f} | {extra / 100 / base:+.2%} of a step |")
    spread = {name: (min(v), max(v)) for name, v in times.items()}
    lines += [
        "",
        "Spread of step times (min-max, s): "
        + ", ".join(f"{name} {low:.3f}-{high:.3f}" for name, (low, high) in spread.items())
        + ". Single steps are noisy where other jobs share the CPU cores; the medians of interleaved runs are what "
        "the goal compares.",
        "",
        stamp(),
    ]
    return "\n".join(lines)


def mask_memory_markdown(state: dict) -> str:
    lines = [
        "## Memory of the pruning state per pruned parameter",
        "",
        "Measured from the tensors `PruningCallback` holds after the overhead runs (`callback.pruner.keep_masks`, "
        "bit-packed, and `callback.criterion.state_dict()`). Reading `callback.masks` unpacks them to torch.bool.",
        "",
        "| criterion | pruned parameters | mask bytes | mask bytes / parameter | criterion state bytes / parameter "
        "| goal (mask) | met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, info in state.items():
        per = info["mask_bytes"] / info["weights"]
        lines.append(
            f"| {name} | {info['weights']} | {info['mask_bytes']} | {per:.3f} | "
            f"{info['criterion_bytes'] / info['weights']:.3f} | <= 1 | {'yes' if per <= 1 else '**no**'} |"
        )
    lines += [
        "",
        "Movement additionally keeps its accumulated scores (float32, 4 bytes per pruned parameter): that is the "
        "criterion's state, not the mask.",
        "",
        stamp(),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- 3. global scope on >= 100M parameters
GLOBAL_MODEL = dict(hidden=768, intermediate=3072, layers=12, heads=12, vocab=8192)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{field}:\s+(\d+)", handle.read()).group(1))


def _trim() -> None:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _timed(fn, *args):
    began = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - began


def _extra_peak(fn):
    """``(peak RSS during fn - RSS before, fn())`` in bytes; the peak (VmHWM) is reset just before."""
    _trim()
    rss_before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM to the current RSS
        handle.write("5")
    value = fn()
    return (_status_kib("VmHWM") - rss_before) * 1024, value


def global_worker(target: float) -> dict:
    """Runs in a fresh subprocess: one global mask update on a big model, with peak-RSS accounting."""
    from transformers import TrainerControl, TrainerState

    from hf_compress import PruningCallback, PruningConfig
    from hf_compress.pruning.scope import global_threshold
    from hf_compress.targets import weight_out_in

    model = llama(**GLOBAL_MODEL, seed=0)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # start later than step 0 so on_train_begin only sets up (masks from the weights); the update is timed alone
    config = PruningConfig(target_sparsity=target, scope="global", schedule="one_shot", start=10, end=10, frequency=10)
    callback = PruningCallback(config)
    with tempfile.TemporaryDirectory() as folder:
        args = training_args(folder, max_steps=10)
        state = TrainerState(max_steps=10)
        callback.on_train_begin(args, state, TrainerControl(), model=model)
    pruner, keep_masks = callback.pruner, callback.pruner.keep_masks
    pruned_params = sum(keep_masks.numel(name) for name in keep_masks.names())
    mask_bytes = keep_masks.stored_bytes()

    count = int(round(target * pruned_params))
    # (a) the threshold search alone, with the pruner's own per-module score functions
    score_fns = [
        lambda group=group: pruner._unit_scores(group, pruner._module_scores(group)) for group in pruner.groups
    ]
    extra_threshold_bytes, (threshold, threshold_seconds) = _extra_peak(
        lambda: _timed(global_threshold, score_fns, count)
    )
    # (b) the whole global mask update exactly as the callback runs it at a mask-update step
    extra_bytes, (_, seconds) = _extra_peak(lambda: _timed(pruner._update_masks, 10))
    # the update replaces each module's mask by a new one: at most one module's whole (bool) mask is alive in addition
    largest_mask = max(keep_masks.numel(name) for name in keep_masks.names())

    masks = callback.masks  # whole, unpacked to bool, read once
    pruned = sum(int((~mask).sum()) for mask in masks.values())
    found_threshold = max(
        float(weight_out_in(module.weight.detach(), module).abs()[~masks[name]].max())
        for name, module in callback.modules.items()
        if (~masks[name]).any()
    )
    del masks
    # exact threshold, only for the comparison: k-th smallest |w| over a concatenation of all targeted weights
    all_scores = torch.cat([module.weight.detach().abs().reshape(-1) for module in callback.modules.values()])
    exact_threshold = float(torch.kthvalue(all_scores, count).values)
    exact_at_or_below = int((all_scores <= exact_threshold).sum())
    del all_scores
    return {
        "params": params,
        "weight_bytes": weight_bytes,
        "pruned_params": pruned_params,
        "mask_bytes": mask_bytes,
        "largest_mask_bytes": largest_mask,
        "extra_peak_bytes": extra_bytes,
        "seconds": seconds,
        "extra_threshold_bytes": extra_threshold_bytes,
        "threshold_seconds": threshold_seconds,
        "search_threshold": threshold,
        "target": target,
        "count": count,
        "pruned": pruned,
        "found_threshold": found_threshold,
        "exact_threshold": exact_threshold,
        "exact_at_or_below": exact_at_or_below,
    }


def concat_worker() -> dict:
    """The approach the issue rules out, for scale: extra peak of one concatenated copy of all scores + kthvalue."""
    from hf_compress.targets import find_target_modules

    model = llama(**GLOBAL_MODEL, seed=0)
    modules = find_target_modules(model)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def concatenate_and_select():
        scores = torch.cat([m.weight.detach().abs().reshape(-1) for m in modules.values()])
        return float(torch.kthvalue(scores, scores.numel() // 2).values)

    extra, _ = _extra_peak(concatenate_and_select)
    return {"extra_peak_bytes": extra, "weight_bytes": weight_bytes}


def run_global(options) -> dict:
    results = {}
    for worker, argument in (("global", str(options.global_target)), ("concat", "")):
        # a fixed mmap threshold makes glibc hand every large block back to the OS on free, so the peak RSS
        # follows the live bytes instead of what the allocator's heap happened to keep
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", worker, "--worker-arg", argument or "0"]
            + ["--threads", str(options.threads)],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
        results[worker] = json.loads(output.stdout.strip().splitlines()[-1])
    return results


def global_markdown(result: dict) -> str:
    run, concat = result["global"], result["concat"]
    extra_pct = 100 * run["extra_peak_bytes"] / run["weight_bytes"]
    threshold_pct = 100 * run["extra_threshold_bytes"] / run["weight_bytes"]
    concat_pct = 100 * concat["extra_peak_bytes"] / concat["weight_bytes"]
    achieved = run["pruned"] / run["pruned_params"]
    lines = [
        "## Global scope on a >= 100M-parameter model",
        "",
        f"Llama-style model built from a config, not trained: {run['params'] / 1e6:.1f}M parameters "
        f"({run['weight_bytes'] / 2**20:.0f} MiB of float32 weights; hidden {GLOBAL_MODEL['hidden']}, "
        f"{GLOBAL_MODEL['layers']} layers, vocab {GLOBAL_MODEL['vocab']}), {run['pruned_params'] / 1e6:.1f}M of them "
        f'in the targeted Linear modules. One `PruningCallback` mask update with `scope="global"`, magnitude, '
        f"unstructured, target {run['target']}, run in a fresh subprocess (the masks already exist, as they do "
        "during training). Extra peak memory = peak RSS during the update (VmHWM, reset just before through "
        "`/proc/self/clear_refs`) minus the RSS before it; glibc runs with `MALLOC_MMAP_THRESHOLD_=65536` so that freed tensors go back to the OS "
        "at once and the peak RSS follows the live bytes.",
        "",
        "| quantity | value | goal | met |",
        "|---|---:|---:|---|",
        f"| extra peak memory of the threshold search (`scope.global_threshold`) | "
        f"{run['extra_threshold_bytes'] / 2**20:.1f} MiB = {threshold_pct:.2f}% of weight bytes | <= 10% | "
        f"{'yes' if threshold_pct <= 10 else '**no**'} |",
        f"| extra peak memory of the whole global mask update (search + new masks) | "
        f"{run['extra_peak_bytes'] / 2**20:.1f} MiB = {extra_pct:.2f}% of weight bytes | <= 10% | "
        f"{'yes' if extra_pct <= 10 else '**no**'} |",
        f"| for scale: one concatenated copy of all scores + `kthvalue` | {concat['extra_peak_bytes'] / 2**20:.1f} MiB = "
        f"{concat_pct:.1f}% | (ruled out) | |",
        f"| persistent masks (not part of threshold finding) | {run['mask_bytes'] / 2**20:.1f} MiB = "
        f"{100 * run['mask_bytes'] / run['weight_bytes']:.1f}% (1 bit per pruned weight) | | |",
        f"| time: threshold search / whole update (slowed by the allocator setting and shared cores) | {run['threshold_seconds']:.1f} s / {run['seconds']:.1f} s | | |",
        f"| threshold returned by the search | {run['search_threshold']:.9g} | | |",
        f"| found threshold (largest pruned \\|w\\|) | {run['found_threshold']:.9g} | | |",
        f"| exact threshold (`kthvalue` of the concatenation, k = {run['count']}) | {run['exact_threshold']:.9g} | | |",
        f"| threshold difference | {abs(run['found_threshold'] - run['exact_threshold']):.3g} | | |",
        f"| weights pruned / wanted | {run['pruned']} / {run['count']} (difference {run['pruned'] - run['count']:+d}) | | |",
        f"| achieved sparsity - target | {100 * (achieved - run['target']):+.6f} pp | | |",
        "",
        "The threshold search scores one module at a time (its float32 scores and a boolean comparison, so a few "
        "bytes times the largest module's weights) and is exact: a bisection over the float32 bit patterns, at most "
        "33 counting passes. The whole update adds little to it: `scope.select_global` is a generator that first "
        "counts per module, then yields each module's pruned-unit vector in turn, and the callback turns it into "
        "that module's mask before the next one is scored.",
        "",
        stamp(),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- 4. schedule accuracy
SCHEDULE_MODEL = dict(hidden=128, intermediate=384, layers=2, heads=8, vocab=256, kv_heads=4)


def run_schedule(options) -> list[dict]:
    from transformers import Trainer

    from hf_compress import PruningCallback, PruningConfig, sparsity_report

    cases = []
    for pattern in ("unstructured", "2:4", "row", "head"):
        targets = (0.5,) if pattern == "2:4" else (0.37, 0.5, 0.8)
        for target in targets:
            scopes = ("layer", "global") if pattern != "2:4" else ("layer",)
            for scope in scopes:
                cases.append((pattern, target, scope))
    rows = []
    steps = options.schedule_steps
    with tempfile.TemporaryDirectory() as folder:
        for pattern, target, scope in cases:
            model = llama(**SCHEDULE_MODEL, seed=1)
            kwargs = {} if pattern == "2:4" else {"target_sparsity": target}
            config = PruningConfig(
                pattern=pattern, scope=scope, schedule="cubic", start=0.1, end=0.73, frequency=7, **kwargs
            )
            callback = PruningCallback(config)
            data = RandomTokens(8 * steps, 32, SCHEDULE_MODEL["vocab"], seed=0)
            trainer = Trainer(
                model=model,
                args=training_args(folder, max_steps=steps, per_device_train_batch_size=4),
                train_dataset=data,
                callbacks=[callback],
            )
            trainer.train()
            names = [f"^{re.escape(name)}$" for name in callback.modules]
            report = sparsity_report(trainer.model, targets=names)
            rows.append(
                {
                    "pattern": pattern,
                    "scope": scope,
                    "target": config.final_sparsity,
                    "final": report.sparsity,
                    "min_layer": report.min_layer_sparsity,
                    "max_layer": report.max_layer_sparsity,
                    "modules": len(report.layers),
                    "params": report.total_params,
                }
            )
            print(rows[-1])
    return rows


def schedule_markdown(rows: list[dict], options) -> str:
    lines = [
        "## Schedule accuracy: final sparsity minus target",
        "",
        f"Llama-style model from a config (hidden {SCHEDULE_MODEL['hidden']}, intermediate "
        f"{SCHEDULE_MODEL['intermediate']}, {SCHEDULE_MODEL['layers']} layers, {SCHEDULE_MODEL['heads']} query / "
        f"{SCHEDULE_MODEL['kv_heads']} key-value heads), {options.schedule_steps} optimizer steps, cubic schedule, "
        "start 0.1, end 0.73, frequency 7 (so `end` is not on the frequency grid). Final sparsity = exact zeros over "
        "the weights of the modules the callback pruned, after training (`sparsity_report`).",
        "",
        "| pattern | scope | target | final sparsity | final - target (pp) | layer min / max | goal | met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        delta = 100 * (row["final"] - row["target"])
        goal = "\\|delta\\| <= 0.1 pp" if row["pattern"] == "unstructured" else ""
        met = ("yes" if abs(delta) <= 0.1 else "**no**") if goal else ""
        lines.append(
            f"| {row['pattern']} | {row['scope']} | {row['target']:.2f} | {row['final']:.6f} | {delta:+.4f} | "
            f"{row['min_layer']:.4f} / {row['max_layer']:.4f} | {goal} | {met} |"
        )
    lines += [
        "",
        "Structured patterns remove whole units, so their final sparsity is the target rounded to whole units: a row "
        f"is 1/{SCHEDULE_MODEL['hidden']} or less of a module, a head 1/{SCHEDULE_MODEL['heads']} of an attention "
        "block; with grouped-query attention a key/value head's rows go only once every query head reading them is "
        "pruned, so `head` counts fewer zero weights than the head fraction. There is no goal for those patterns.",
        "",
        stamp(),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--global-target", type=float, default=0.6)
    parser.add_argument("--schedule-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadier on a shared machine)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the overhead runs train")
    parser.add_argument("--suffix", default="", help="appended to section names, e.g. '-h200' for another machine")
    parser.add_argument("--worker", choices=("global", "concat"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-arg", default="0", help=argparse.SUPPRESS)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if options.worker == "global":
        print(json.dumps(global_worker(float(options.worker_arg))))
        return
    if options.worker == "concat":
        print(json.dumps(concat_worker()))
        return

    if "overhead" in options.only or "mask_memory" in options.only:
        result = run_overhead(options)
        if "overhead" in options.only:
            write_section("overhead" + options.suffix, overhead_markdown(result, options))
        if "mask_memory" in options.only:
            write_section("mask_memory" + options.suffix, mask_memory_markdown(result["state"]))
    if "global" in options.only:
        write_section("global" + options.suffix, global_markdown(run_global(options)))
    if "schedule" in options.only:
        write_section("schedule" + options.suffix, schedule_markdown(run_schedule(options), options))


if __name__ == "__main__":
    main()
