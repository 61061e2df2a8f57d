"""Structured compression (issue 13): speed of the saved shrunk model, gradual-pruning step overhead, quality.

- ``speed``: the byte-level Llama of ``benchmarks/pipelines.py`` (4 layers, width 256, MLP 768) and its shrunk
  students, each saved with ``save_pretrained`` and reloaded with ``AutoModelForCausalLM`` (stock code), timed side by
  side in one process (interleaved rounds, median) at 1 and 2 threads, batch 1 and 16, sequence 128; FLOPs counted
  with ``torch.utils.flop_counter``; parameters, size on disk.
- ``memory``: resident RSS of each saved model after loading, and the extra peak of a batch-16 forward.
- ``overhead``: Trainer steps with ``StructuredPruningCallback(mode="gradual")`` against a plain Trainer, interleaved.
- ``quality``: the pipelines protocol (same data, a teacher of the same architecture, R recovery steps, perplexity
  divided by the dense reference's) for width-only, depth-only and budget-search students, against Torch-Pruning
  (run in its own venv by ``benchmarks/structured_torch_pruning.py``) and from-scratch training.

    python benchmarks/structured_bench.py --only speed
    python benchmarks/structured_bench.py --only speed --size base   # the same cuts on a ~125M Llama
    python benchmarks/structured_bench.py --only speed --size quality   # the quality table's student shapes
    python benchmarks/structured_bench.py --only memory
    python benchmarks/structured_bench.py --only overhead
    python benchmarks/structured_bench.py --only quality --teacher-steps 300 --recovery-steps 300
    python benchmarks/structured_bench.py --only recovery-lr --width 256 --teacher-steps 2000   # lr on a dev split
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_compress import StructuredPruningConfig, shrink  # noqa: E402
from hf_compress.structured.criteria import MagnitudeStructureCriterion  # noqa: E402
from hf_compress.structured.families import family_of  # noqa: E402
from hf_compress.structured.selection import resolve_shape, select_structures  # noqa: E402
from hf_compress.structured.structures import zero_structures_  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "structured.md")
SEQ_LEN = 128

# students of the speed table: target shapes on the 4-layer, 256-wide teacher (4 heads of 64, MLP 768)
SPEED_SHAPES = {
    "width ~0.5x": {"num_key_value_heads": 2, "intermediate_size": 384, "hidden_size": 192},
    "depth 2/4 layers": {"num_hidden_layers": 2},
    "width+depth ~0.26x (Torch-Pruning 0.5 size)": {
        "num_key_value_heads": 2,
        "intermediate_size": 384,
        "hidden_size": 128,
        "num_hidden_layers": 4,
    },
}
# a ~125M-parameter Llama (12 layers, width 768, GQA 12/4 heads of 64, MLP 2048, vocab 32,000): the same cuts at a
# size where the work per call, not Python's per-call overhead, sets the latency
BASE_SPEED_SHAPES = {
    "width H576 MLP 1024 KV 2": {"num_key_value_heads": 2, "intermediate_size": 1024, "hidden_size": 576},
    "depth 6/12 layers": {"num_hidden_layers": 6},
    "width H384 MLP 1024 KV 2": {"num_key_value_heads": 2, "intermediate_size": 1024, "hidden_size": 384},
    # the budget search's kind of shape at the same parameter count: every head kept, the MLP pays for it
    "width H384 heads kept, MLP 682": {"num_key_value_heads": 4, "intermediate_size": 682, "hidden_size": 384},
}


def llama_config(vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=64,
        max_position_embeddings=SEQ_LEN,
        tie_word_embeddings=False,
    )


def teacher_config() -> LlamaConfig:
    return llama_config(256, 256, 768, 4, 4, 4)


def base_config() -> LlamaConfig:
    return llama_config(32000, 768, 2048, 12, 12, 4)


def quality_teacher_config() -> LlamaConfig:
    from structured_quality import teacher_config as quality_config

    return quality_config(256, 4)


# the quality table's teacher (8 heads of 32) and the shapes its students have at Torch-Pruning's two parameter
# counts: Torch-Pruning's uniform ratios, and the budget search's choices (every head kept, a narrow rotated residual
# stream); the last row times the per-call floor: the same 4 layers with almost no arithmetic
FLOOR_LABEL = "per-call floor (same layers, width 8)"
QUALITY_SPEED_SHAPES = {
    "Torch-Pruning 0.375 shape (0.40x)": {"num_key_value_heads": 5, "intermediate_size": 480, "hidden_size": 160},
    "budget search, H104 heads kept (0.40x)": {"num_key_value_heads": 8, "intermediate_size": 748, "hidden_size": 104},
    "Torch-Pruning 0.5 shape (0.26x)": {"num_key_value_heads": 4, "intermediate_size": 384, "hidden_size": 128},
    "budget search, H96 heads kept (0.26x)": {"num_key_value_heads": 8, "intermediate_size": 412, "hidden_size": 96},
    "dev-best H80, heads kept (0.26x)": {"num_key_value_heads": 8, "intermediate_size": 572, "hidden_size": 80},
    FLOOR_LABEL: {"num_key_value_heads": 1, "num_attention_heads": 1, "intermediate_size": 8, "hidden_size": 8},
}

SPEED_SIZES = {
    "protocol": (teacher_config, SPEED_SHAPES),
    "base": (base_config, BASE_SPEED_SHAPES),
    "quality": (quality_teacher_config, QUALITY_SPEED_SHAPES),
}
SPEED_TITLES = {
    "protocol": "Speed of the saved shrunk model vs the dense teacher (CPU)",
    "base": "Speed at ~125M parameters: the same cuts on a 12-layer, 768-wide Llama (CPU)",
    "quality": "Speed of the quality table's student shapes: Torch-Pruning's against the budget search's (CPU)",
}


def params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def shrunk_copy(teacher, shape: dict):
    """Magnitude-scored structures zeroed, then ``hf_compress.shrink`` (speed does not depend on which go)."""
    family = family_of(teacher)
    target, _ = resolve_shape(family, shape)
    scores = MagnitudeStructureCriterion().scores(family)
    if target.num_layers < family.shape().num_layers:
        scores.layers = torch.arange(family.shape().num_layers, 0, -1).float()
    import copy

    student = copy.deepcopy(teacher)
    student_family = family_of(student)
    zero_structures_(student_family, select_structures(student_family, scores, target))
    return shrink(student, inplace=True)


def flops(model, batch: int) -> int:
    """FLOPs of one forward, counted through eager attention: ``FlopCounterMode`` does not count CPU SDPA's two
    attention products (on the quality teacher, 0.889 against 0.956 GFLOP at 1 x 128)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hf_compress.quantization.export_onnx_trace import eager_attention

    ids = torch.zeros(batch, SEQ_LEN, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with eager_attention(model), counter, torch.no_grad():
        model(input_ids=ids)
    return counter.get_total_flops()


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))


def time_forward(model, batch: int, reps: int) -> float:
    ids = torch.randint(0, 256, (batch, SEQ_LEN))
    with torch.no_grad():
        model(input_ids=ids)  # warm-up
        began = time.perf_counter()
        for _ in range(reps):
            model(input_ids=ids)
    return (time.perf_counter() - began) / reps


def memory_mib(path: str, batch: int) -> tuple[float, float]:
    """``(resident, extra peak of one forward at batch)`` in MiB, from a fresh process.

    A first load, deleted, takes the modeling code's imports and caches out of the figures. Resident = VmRSS after a
    second load and one forward (safetensors weights are memory-mapped: only touched pages count) minus VmRSS before
    it. Extra peak = VmHWM during one more forward (reset just before through ``/proc/self/clear_refs``) minus VmRSS
    before it. glibc runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors go back to the OS.
    """
    import subprocess

    code = (
        "import gc, torch; from transformers import AutoModelForCausalLM; torch.set_num_threads(1)\n"
        "def kib(key):\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])\n"
        f"m = AutoModelForCausalLM.from_pretrained({path!r}); del m; gc.collect()\n"  # imports, caches
        "before = kib('VmRSS:')\n"
        f"m = AutoModelForCausalLM.from_pretrained({path!r}).eval(); gc.collect()\n"
        f"ids = torch.zeros({batch}, {SEQ_LEN}, dtype=torch.long)\n"
        "with torch.no_grad():\n"
        "    m(input_ids=ids)\n"
        "    gc.collect(); ready = kib('VmRSS:'); open('/proc/self/clear_refs', 'w').write('5')\n"
        "    m(input_ids=ids)\n"
        "print(ready - before, kib('VmHWM:') - ready)\n"
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True, env=env
    )
    resident, forward = (int(v) for v in out.stdout.split()[-2:])
    return resident / 1024, forward / 1024


def save_speed_models(size: str = "protocol") -> dict[str, str]:
    """The dense teacher and its shrunk students, saved with ``save_pretrained``: ``{label: path}``."""
    make_config, shapes = SPEED_SIZES[size]
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(make_config()).eval()
    work = tempfile.mkdtemp(prefix="structured-speed-")
    models = {}
    teacher.save_pretrained(os.path.join(work, "dense"))
    models["dense teacher"] = os.path.join(work, "dense")
    for label, shape in shapes.items():
        path = os.path.join(work, label.split()[0] + str(len(models)))
        shrunk_copy(teacher, shape).save_pretrained(path)
        models[label] = path
    return models


def run_memory(options) -> str:
    models = save_speed_models()
    lines = [
        "Each model saved, then loaded in a fresh process with `AutoModelForCausalLM` (fp32); a first load, deleted, "
        "takes the imports and caches out of the figures. Resident: RSS growth from a second load and one forward (the "
        "weights are memory-mapped; the forward touches them all). Forward: extra peak RSS of one no-grad forward at "
        f"batch 16 x {SEQ_LEN} over the RSS before it (VmHWM reset through `/proc/self/clear_refs`; glibc "
        "`MALLOC_MMAP_THRESHOLD_=65536`).",
        "",
        "| model | fp32 weight bytes (MiB) | resident after load + one forward (MiB, x dense) | forward peak, batch 16 (MiB, x dense) |",
        "|---|---:|---:|---:|",
    ]
    measured = {}
    for label, path in models.items():
        weight_mib = params(AutoModelForCausalLM.from_pretrained(path)) * 4 / 2**20
        measured[label] = (weight_mib, *memory_mib(path, 16))
    dense = measured["dense teacher"]
    for label, (weight_mib, resident, forward) in measured.items():
        lines.append(
            f"| {label} | {weight_mib:.2f} | {resident:.1f} ({resident / dense[1]:.2f}x) | "
            f"{forward:.1f} ({forward / dense[2]:.2f}x) |"
        )
    return "\n".join(lines)


def run_speed(options) -> str:
    models = save_speed_models(options.size)
    loaded = {label: AutoModelForCausalLM.from_pretrained(path).eval() for label, path in models.items()}
    rows = []
    dense_params = params(loaded["dense teacher"])
    dense_flops = flops(loaded["dense teacher"], 1)
    timings: dict[tuple, list[float]] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (1, 16):
            reps = options.reps if batch == 1 else max(2, options.reps // 4)
            for _ in range(options.rounds):  # interleaved rounds: every model sees the same machine load
                for label, model in loaded.items():
                    timings.setdefault((label, threads, batch), []).append(time_forward(model, batch, reps))
    torch.set_num_threads(1)
    lines = [
        "| model | config | params (x dense) | FLOPs/forward (x dense) | size on disk | goal speed-up 0.8/FLOP frac | "
        "1 thr b1 ms (speed-up) | 1 thr b16 tok/s (speed-up) | 2 thr b1 ms (speed-up) | 2 thr b16 tok/s (speed-up) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for label, model in loaded.items():
        c = model.config
        config_text = (
            f"L{c.num_hidden_layers} H{c.hidden_size} heads {c.num_attention_heads}/{c.num_key_value_heads} "
            f"MLP {c.intermediate_size}"
        )
        fraction_flops = flops(model, 1) / dense_flops
        cells = []
        for threads in (1, 2):
            for batch in (1, 16):
                mine = statistics.median(timings[(label, threads, batch)])
                dense = statistics.median(timings[("dense teacher", threads, batch)])
                speedup = dense / mine
                results[(label, threads, batch)] = speedup
                if batch == 1:
                    cells.append(f"{mine * 1000:.2f} ({speedup:.2f}x)")
                else:
                    cells.append(f"{batch * SEQ_LEN / mine:,.0f} ({speedup:.2f}x)")
        size = dir_size(models[label]) / 2**20
        lines.append(
            f"| {label} | {config_text} | {params(model):,} ({params(model) / dense_params:.3f}) | "
            f"{fraction_flops:.3f} | {size:.2f} MiB | {0.8 / fraction_flops:.2f}x | " + " | ".join(cells) + " |"
        )
        rows.append((label, fraction_flops))
    goal_lines = ["", "Goal check (speed-up >= 0.8 / FLOP fraction kept, every thread/batch setting):", ""]
    floor = {(t, b): results[(FLOOR_LABEL, t, b)] for t in (1, 2) for b in (1, 16)} if FLOOR_LABEL in loaded else {}
    for label, fraction in rows[1:]:
        if label == FLOOR_LABEL:
            continue
        worst = min(results[(label, t, b)] for t in (1, 2) for b in (1, 16))
        goal = 0.8 / fraction
        line = f"- {label}: worst speed-up {worst:.2f}x vs goal {goal:.2f}x: {'met' if worst >= goal else 'NOT met'}"
        if floor:  # latency = floor + fraction x (dense - floor), in units of the dense latency
            bounds = [1 / (1 / f + fraction * (1 - 1 / f)) for f in floor.values()]
            line += f"; the floor row allows {min(bounds):.2f}-{max(bounds):.2f}x at this FLOP fraction"
        goal_lines.append(line)
    if floor:
        goal_lines += [
            "",
            f"The floor row runs the same layers and calls with almost no arithmetic: {min(floor.values()):.2f}-"
            f"{max(floor.values()):.2f}x the dense speed is the most any shrinking of this depth can give. A student "
            "keeping FLOP fraction f then reaches at most 1 / (1/floor + f (1 - 1/floor)), the bound quoted above.",
        ]
    return "\n".join(lines + goal_lines)


def run_overhead(options) -> str:
    from pipelines import split_windows, training_args
    from transformers import Trainer, TrainerCallback

    from hf_compress import StructuredPruningCallback

    torch.set_num_threads(1)
    train_set, _ = split_windows()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.last = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.last = time.thread_time()  # CPU time of the training thread: wall time on the shared box is noise

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.thread_time() - self.last)

    def one(structured: bool, steps: int) -> list[float]:
        torch.manual_seed(0)
        model = LlamaForCausalLM(teacher_config())
        timer = StepTimer()
        callbacks = [timer]
        if structured:
            config = StructuredPruningConfig(
                shape={"num_key_value_heads": 2, "intermediate_size": 384, "num_hidden_layers": 3},
                mode="gradual",
                criterion=options.overhead_criterion,
                end_step=0.8,
                update_every=10,
                shrink_at_end=False,
            )
            callbacks.insert(0, StructuredPruningCallback(config))
        args = training_args(tempfile.mkdtemp(), steps, 3e-4, 8)
        Trainer(model=model, args=args, train_dataset=train_set, callbacks=callbacks).train()
        return timer.times[2:]  # drop warm-up steps

    plain, gradual = [], []
    for _ in range(options.overhead_rounds):
        plain += one(False, options.overhead_steps)
        gradual += one(True, options.overhead_steps)
    ratio = statistics.median(gradual) / statistics.median(plain)
    return (
        f"Median training-thread CPU time per step over {len(plain)} steps each ({options.overhead_rounds} interleaved rounds of "
        f"{options.overhead_steps} steps, batch 8 x 128 bytes, 1 thread): plain {statistics.median(plain) * 1000:.1f} "
        f"ms, gradual structured pruning ({options.overhead_criterion} criterion, update every 10 steps) "
        f"{statistics.median(gradual) * 1000:.1f} ms: **{ratio:.3f}x** (goal <= 1.05x: "
        f"{'met' if ratio <= 1.05 else 'NOT met'}). Wall time is not used: with load average 10+ on 2 cores an "
        "earlier wall-clock run gave 0.41x, which is noise."
    )


def write_section(name: str, title: str, body: str, command: str) -> None:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    sections = {}
    order = []
    preamble = []  # hand-written lines between the title and the first section
    if os.path.exists(RESULTS):
        current = None
        for line in open(RESULTS).read().split("\n")[1:]:
            if line.startswith("<!-- section "):
                current = line.split()[2]
                order.append(current)
                sections[current] = []
            elif current is not None:
                sections[current].append(line)
            else:
                preamble.append(line)
    header = (
        f"## {title}\n\nCommand: `{command}` ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f}).\n\n"
    )
    sections[name] = (header + body + "\n").split("\n")
    if name not in order:
        order.append(name)
    with open(RESULTS, "w") as handle:
        handle.write("# Structured compression: a physically smaller model\n\n")
        if "\n".join(preamble).strip():
            handle.write("\n".join(preamble).strip("\n") + "\n\n")
        for key in order:
            handle.write(f"<!-- section {key} -->\n" + "\n".join(sections[key]).strip("\n") + "\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", default="speed", help="speed, memory, overhead, quality or recovery-lr (comma-separated)"
    )
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--size",
        default="protocol",
        choices=sorted(SPEED_SIZES),
        help="speed: the protocol's teacher, a ~125M Llama, or the quality table's teacher and student shapes",
    )
    parser.add_argument("--overhead-steps", type=int, default=40)
    parser.add_argument("--overhead-rounds", type=int, default=2)
    parser.add_argument("--overhead-criterion", default="magnitude")
    options, rest = parser.parse_known_args()
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/structured_bench.py", *sys.argv[1:]])
    for what in options.only.split(","):
        began = time.perf_counter()
        if what == "speed":
            body = run_speed(options)
            name = "speed" if options.size == "protocol" else f"speed-{options.size}"
            write_section(name, SPEED_TITLES[options.size], body, command)
        elif what == "memory":
            body = run_memory(options)
            write_section("memory", "Memory of the saved shrunk model vs the dense teacher (CPU)", body, command)
        elif what == "overhead":
            body = run_overhead(options)
            write_section("overhead", "Gradual structured pruning: step overhead vs a plain Trainer", body, command)
        elif what == "quality":
            from structured_quality import run_quality

            name, title, body = run_quality(rest)
            write_section(name, title, body, command)
        elif what == "recovery-lr":
            from structured_quality import run_recovery_lr

            name, title, body = run_recovery_lr(rest)
            write_section(name, title, body, command)
        else:
            raise SystemExit(f"--only: unknown {what!r}; use speed, memory, overhead, quality, recovery-lr")
        print(body, flush=True)
        print(f"[{what}: {time.perf_counter() - began:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
