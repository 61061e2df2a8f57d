"""PruningCallback under DeepSpeed ZeRO-2 / ZeRO-3 through the Trainer, 2 CPU processes (gloo).

    python benchmarks/deepspeed_bench.py            # writes benchmarks/results/deepspeed.md

Launches ``torchrun --nproc_per_node 2`` three times (DDP, ZeRO-2, ZeRO-3) on a Llama built from a config
(16 layers, hidden 256) and measures:

- ``diff``: final weights of the same pruning run (magnitude, global scope, 50%, cubic, 16 steps, same global
  batch) under ZeRO-2 / ZeRO-3 against DDP: max abs difference over every parameter.
- ``memory`` (ZeRO-3): extra peak RSS of each rank during every global mask update (VmHWM reset just before the
  update, read just after, with a fixed glibc mmap threshold so freed blocks leave the RSS), as a fraction of the
  rank's weight bytes (its fp32 partition of the parameters plus its fp32 master partition). The persistent masks
  (1 bit per pruned weight, each rank holding its partition's piece) are reported beside it and added to it.
- ``overhead`` (ZeRO-3): seconds per step of the Trainer with PruningCallback (magnitude, layer scope, mask
  update every 10 steps) over the plain ZeRO-3 Trainer, rounds interleaved in the same processes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "deepspeed.md"
EXAMPLES = ROOT / "examples" / "accelerate"
MODEL = dict(
    vocab_size=512,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
DIFF_STEPS, OVERHEAD_STEPS, ROUNDS = 16, 20, 3


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(stage: int, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from hf_compress import PruningCallback, PruningConfig, distributed

    torch.set_num_threads(1)

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n=512, length=32):
            generator = torch.Generator().manual_seed(0)
            self.ids = torch.randint(0, MODEL["vocab_size"], (n, length), generator=generator)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(**MODEL))

    def args(name, steps):
        deepspeed = str(EXAMPLES / f"deepspeed_zero{stage}.json") if stage else None
        return TrainingArguments(
            output_dir=str(out / name),
            per_device_train_batch_size=2,
            max_steps=steps,
            learning_rate=1e-3,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            data_seed=0,
            disable_tqdm=True,
            logging_steps=1000,
            deepspeed=deepspeed,
        )

    class UpdatePeak(TrainerCallback):
        """Wraps the pruning callback's on_optimizer_step: resets VmHWM before a mask update, reads it after."""

        def __init__(self, pruning, before: bool, records: list):
            self.pruning, self.before, self.records = pruning, before, records

        def on_optimizer_step(self, args, state, control, **kwargs):
            step = state.global_step + 1
            if self.before:
                Path("/proc/self/clear_refs").write_text("5")
                self.rss = _status_kib("VmRSS")
            elif self.pruning.last_update_step == step:
                self.records.append((step, (_status_kib("VmHWM") - self.partner.rss) * 1024))

    result = {"stage": stage}
    # 1. final weights + peak memory at the global mask updates
    pruning = PruningCallback(
        PruningConfig(target_sparsity=0.5, scope="global", schedule="cubic", start=0, end=12, frequency=4)
    )
    peaks: list = []
    before, after = UpdatePeak(pruning, True, peaks), UpdatePeak(pruning, False, peaks)
    after.partner = before
    trained = model()
    trainer = Trainer(
        model=trained, args=args("diff", DIFF_STEPS), train_dataset=Tokens(), callbacks=[before, pruning, after]
    )
    trainer.train()
    params = list(trained.parameters())
    zero3 = hasattr(params[0], "ds_id")
    local_numel = sum((p.ds_tensor.ds_numel if zero3 else p.numel()) for p in params)
    result["rank_weight_bytes"] = local_numel * 4 * (2 if stage else 1)  # module partition + fp32 master
    result["mask_bytes"] = pruning.pruner.keep_masks.stored_bytes()  # what this rank holds, bit-packed
    result["whole_mask_bytes"] = sum(mask.numel() for mask in pruning.masks.values())  # whole, 1 byte per weight
    result["update_peaks"] = peaks
    result["sparsity"] = 1 - sum(int(m.sum()) for m in pruning.masks.values()) / sum(
        m.numel() for m in pruning.masks.values()
    )
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero3):
        weights = {name: p.detach().clone() for name, p in trained.named_parameters()}
    if distributed.is_main_process():
        torch.save(weights, out / f"weights{stage}.pt")
    del trainer

    # 2. step time with and without PruningCallback, interleaved rounds
    if stage == 3:
        times = {"plain": [], "pruning": []}
        for _ in range(ROUNDS):
            for variant in ("plain", "pruning"):
                callbacks = []
                if variant == "pruning":
                    config = PruningConfig(
                        target_sparsity=0.5, schedule="cubic", start=0, end=OVERHEAD_STEPS, frequency=10
                    )
                    callbacks = [PruningCallback(config)]
                trainer = Trainer(
                    model=model(), args=args(variant, OVERHEAD_STEPS), train_dataset=Tokens(), callbacks=callbacks
                )
                began = time.perf_counter()
                trainer.train()
                times[variant].append((time.perf_counter() - began) / OVERHEAD_STEPS)
                del trainer
        result["step_seconds"] = times
    (out / f"rank{distributed.rank()}_stage{stage}.json").write_text(json.dumps(result))
    distributed.shutdown()
    os._exit(0)


def launch(stage: int, out: Path) -> None:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    env["MALLOC_TRIM_THRESHOLD_"] = "65536"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29733"]
    command += [str(Path(__file__).resolve()), "--worker", str(stage), "--out", str(out)]
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=1800)


def report(out: Path) -> str:
    import statistics

    import torch

    ranks = {s: [json.loads((out / f"rank{r}_stage{s}.json").read_text()) for r in range(2)] for s in (0, 2, 3)}
    reference = torch.load(out / "weights0.pt")
    diffs, flips, rest = {}, {}, {}
    for stage in (2, 3):
        weights = torch.load(out / f"weights{stage}.pt")
        diffs[stage] = max(float((weights[k] - reference[k]).abs().max()) for k in reference)
        flipped = {k: (weights[k] == 0) != (reference[k] == 0) for k in reference}
        flips[stage] = sum(int(f.sum()) for f in flipped.values())
        rest[stage] = max(float((weights[k] - reference[k]).abs()[~flipped[k]].max()) for k in reference)
    numel = sum(v.numel() for v in reference.values())
    zero3 = ranks[3]
    peak_fractions = [p / r["rank_weight_bytes"] for r in zero3 for _, p in r["update_peaks"]]
    mask_fraction = max(r["mask_bytes"] / r["rank_weight_bytes"] for r in zero3)
    whole_fraction = zero3[0]["whole_mask_bytes"] / zero3[0]["rank_weight_bytes"]
    times = zero3[0]["step_seconds"]
    ratios = [p / q for p, q in zip(times["pruning"], times["plain"])]
    date = datetime.date.today().isoformat()
    lines = [
        "# DeepSpeed ZeRO-2 / ZeRO-3 benchmarks",
        "",
        f"Date: {date}. Machine: 2 CPU cores (shared with other runs), no GPU, 2 processes on gloo, "
        "torch.set_num_threads(1), DeepSpeed "
        f"{__import__('deepspeed').__version__} with `DS_ACCELERATOR=cpu`, the example configs "
        "`examples/accelerate/deepspeed_zero{2,3}.json` through `TrainingArguments(deepspeed=...)`.",
        "",
        "Reproduce: `python benchmarks/deepspeed_bench.py`",
        "",
        f"Model: Llama from a config {MODEL}, {numel / 1e6:.1f} M parameters; per-device batch 2 x 32 tokens.",
        "",
        "## Final weights against DDP",
        "",
        f"PruningCallback magnitude, global scope, 50%, cubic to step 12, update every 4 steps, {DIFF_STEPS} steps, "
        "same global batch.",
        "",
        "| engine | max abs diff vs DDP (every parameter) | weights pruned in one run only | max abs diff elsewhere "
        "| final sparsity |",
        "|---|---:|---:|---:|---:|",
        f"| ZeRO-2 | {diffs[2]:.2e} | {flips[2]} of {numel} | {rest[2]:.2e} | {ranks[2][0]['sparsity']:.4f} |",
        f"| ZeRO-3 | {diffs[3]:.2e} | {flips[3]} of {numel} | {rest[3]:.2e} | {ranks[3][0]['sparsity']:.4f} |",
        f"| DDP | 0 | 0 | 0 | {ranks[0][0]['sparsity']:.4f} |",
        "",
        "The engines sum gradients in a different order than DDP, so weights drift at float-rounding level; Adam "
        "turns that into up to ~1e-3 on weights with tiny gradients (rarely seen embedding rows), and a "
        "weight sitting at the global magnitude threshold can then fall on the other side of it (the column of "
        "weights pruned in one run only). The 2-process CI tests on the tiny Llama see no such tie: identical masks "
        "at every update, final weights within 4e-8 of DDP.",
        "",
        "## Peak memory per rank during a global mask update (ZeRO-3)",
        "",
        "Extra peak RSS during the mask update (VmHWM reset just before it, read just after) over the RSS before it, "
        "as a fraction of the rank's weight bytes (its fp32 parameter partition + its fp32 master partition). Goal: "
        "<= 10%.",
        "",
        "| rank | step | extra peak (MiB) | fraction of rank's weight bytes |",
        "|---|---:|---:|---:|",
    ]
    for rank, r in enumerate(zero3):
        for step, peak in r["update_peaks"]:
            lines.append(f"| {rank} | {step} | {peak / 2**20:.2f} | {peak / r['rank_weight_bytes']:.1%} |")
    lines += [
        "",
        f"Max over ranks and updates: **{max(peak_fractions):.1%}** (rank weight bytes "
        f"{zero3[0]['rank_weight_bytes'] / 2**20:.1f} MiB).",
        "",
        "The masks themselves are held for the whole run: 1 bit per pruned weight, each rank keeping only the piece "
        f"that lines up with its ZeRO-3 partition: {zero3[0]['mask_bytes'] / 2**20:.2f} MiB = **{mask_fraction:.1%}** "
        "of the rank's weight bytes. Whole masks at 1 byte per weight on every rank, as before, would take "
        f"{zero3[0]['whole_mask_bytes'] / 2**20:.1f} MiB = {whole_fraction:.0%}. Masks plus the update's peak: "
        f"**{max(peak_fractions) + mask_fraction:.1%}** (goal <= 10%).",
        "",
        "## Step overhead of PruningCallback under ZeRO-3",
        "",
        f"Seconds per step over {OVERHEAD_STEPS}-step runs (rank 0), plain ZeRO-3 Trainer and with PruningCallback "
        "(magnitude, layer scope, cubic, update every 10 steps), alternating in the same processes, "
        f"{ROUNDS} rounds.",
        "",
        "| round | plain s/step | with PruningCallback s/step | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for i, (p, q) in enumerate(zip(times["pruning"], times["plain"])):
        lines.append(f"| {i + 1} | {q:.3f} | {p:.3f} | {p / q:.3f} |")
    lines += ["", f"Median ratio: **{statistics.median(ratios):.3f}x**.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_work" / "deepspeed")
    parser.add_argument("--report-only", action="store_true", help="rebuild the results file from --out")
    options = parser.parse_args()
    if options.worker is not None:
        worker(options.worker, options.out)
        return
    options.out.mkdir(parents=True, exist_ok=True)
    for stage in () if options.report_only else (0, 2, 3):
        launch(stage, options.out)
    text = report(options.out)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
