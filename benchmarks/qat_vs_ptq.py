"""QAT vs post-training quantization (PTQ) on a small byte-level causal LM trained here on ``pydoc_data.topics``.

1. Pre-train a float Llama (byte vocabulary 256) for ``--pretrain-steps``.
2. From those weights, fine-tune ``--finetune-steps`` more with identical settings, once per variant:
   float (the reference), and QAT at int8 per-channel and int4 per-group (``int`` quantizer; optionally ``lsq``).
3. PTQ = round-to-nearest quantization of the fine-tuned float model (same grid as QAT; min/max scales, and MSE
   clipping as a stronger PTQ baseline).
4. Eval loss (mean cross-entropy per byte, nats) on held-out text. Recovery at int4 =
   ``(loss_PTQ - loss_QAT) / (loss_PTQ - loss_float)``; goal >= 50%.

Float and QAT get the same total number of steps, so QAT is not credited for extra training. Writes the "QAT vs PTQ"
section of ``benchmarks/results/qat.md``.

    python benchmarks/qat_vs_ptq.py
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pydoc_data.topics
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qat_results import reproducing_arguments, write_section  # noqa: E402

from hf_compress import QATCallback, QATConfig  # noqa: E402
from hf_compress.quantization.grid import QuantSpec, bake_weight, compute_qparams  # noqa: E402
from hf_compress.targets import find_target_modules, weight_out_in  # noqa: E402


def corpus() -> torch.Tensor:
    topics = pydoc_data.topics.topics
    text = "\n\n".join(topics[key] for key in sorted(topics))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


class RandomWindows(torch.utils.data.Dataset):
    """``n`` byte windows at seeded random offsets of ``data``."""

    def __init__(self, data: torch.Tensor, n: int, length: int, seed: int):
        self.data, self.length = data, length
        self.starts = torch.randint(0, len(data) - length, (n,), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        ids = self.data[self.starts[i] : self.starts[i] + self.length]
        return {"input_ids": ids, "labels": ids}


def build_model(args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 32,
        num_key_value_heads=args.hidden // 32,
        max_position_embeddings=args.seq_len,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def train(model, args, data, steps: int, lr: float, seed: int, output_dir: str, callbacks=()):
    training_args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=min(50, steps // 10),
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    dataset = RandomWindows(data, steps * args.batch_size, args.seq_len, seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset)
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train()
    return model


@torch.no_grad()
def eval_loss(model, eval_data: torch.Tensor, args) -> float:
    model.eval()
    device = next(model.parameters()).device
    n_windows = min(args.eval_windows, len(eval_data) // args.seq_len)
    windows = eval_data[: n_windows * args.seq_len].view(n_windows, args.seq_len)
    total, count = 0.0, 0
    for batch in windows.split(32):
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=batch).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, 256), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += batch[:, 1:].numel()
    return total / count


@torch.no_grad()
def post_training_quantize(model, spec: QuantSpec, method: str):
    for module in find_target_modules(model).values():
        weight = weight_out_in(module.weight, module)
        weight.copy_(bake_weight(weight, spec, *compute_qparams(weight, spec, method)))
    return model


def copy_of(model, state_dict):
    model.load_state_dict(state_dict)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--eval-windows", type=int, default=256)
    parser.add_argument("--lsq", action="store_true", help="also run QAT int4 with learned scales")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "qat.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.time()

    data = corpus()
    split = int(0.9 * len(data))
    train_data, eval_data = data[:split], data[split:]
    device = torch.device(args.device)
    int8 = QuantSpec(8, True, "per_channel")
    int4 = {group: QuantSpec(4, True, "per_group", group) for group in args.group_sizes}

    with tempfile.TemporaryDirectory() as tmp:
        pretrained = train(
            build_model(args).to(device), args, train_data, args.pretrain_steps, args.pretrain_lr, 1, tmp
        )
        start = {k: v.detach().clone() for k, v in pretrained.state_dict().items()}
        losses = {"float, pre-trained only": eval_loss(pretrained, eval_data, args)}
        print(losses)

        def finetune(callbacks=()):
            model = copy_of(build_model(args).to(device), start)
            return train(model, args, train_data, args.finetune_steps, args.finetune_lr, 2, tmp, callbacks)

        float_model = finetune()
        float_state = {k: v.detach().clone() for k, v in float_model.state_dict().items()}
        losses["float"] = eval_loss(float_model, eval_data, args)
        ptq_runs = [("PTQ int8 per-channel (minmax)", int8, "minmax")]
        qat_runs = [("QAT int8 per-channel (minmax)", QATConfig(weight_bits=8, granularity="per_channel"))]
        for group, spec in int4.items():
            ptq_runs += [(f"PTQ int4 g{group} (minmax)", spec, "minmax"), (f"PTQ int4 g{group} (mse)", spec, "mse")]
            qat_runs.append(
                (f"QAT int4 g{group} (minmax)", QATConfig(weight_bits=4, granularity="per_group", group_size=group))
            )
            if args.lsq:
                config = QATConfig(weight_bits=4, granularity="per_group", group_size=group, quantizer="lsq")
                qat_runs.append((f"QAT int4 g{group} (lsq)", config))
        for label, spec, method in ptq_runs:
            model = post_training_quantize(copy_of(build_model(args).to(device), float_state), spec, method)
            losses[label] = eval_loss(model, eval_data, args)
            print(label, losses[label])
        for label, config in qat_runs:
            model = finetune([QATCallback(config)])  # weights are baked on the grid at train end
            losses[label] = eval_loss(model, eval_data, args)
            print(label, losses[label])

    def recovery(ptq: str, qat: str) -> float:
        degradation = losses[ptq] - losses["float"]
        return (losses[ptq] - losses[qat]) / degradation if degradation > 0 else math.nan

    recoveries = {group: recovery(f"PTQ int4 g{group} (minmax)", f"QAT int4 g{group} (minmax)") for group in int4}
    rows = [f"| {label} | {loss:.4f} | {loss - losses['float']:+.4f} |" for label, loss in losses.items()]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    command = "python benchmarks/qat_vs_ptq.py " + " ".join(reproducing_arguments(sys.argv[1:]))
    lines = [
        f"Date: {datetime.date.today().isoformat()}. Command: `{command.strip()}`. Device: {device_name}"
        f"{', bf16 autocast' if args.bf16 else ', fp32'}. Wall time {time.time() - began:.0f} s.",
        "",
        f"Byte-level Llama ({args.layers} layers, hidden {args.hidden}, vocab 256) on `pydoc_data.topics` "
        f"({len(train_data):,} train / {len(eval_data):,} eval bytes; eval on "
        f"{min(args.eval_windows, len(eval_data) // args.seq_len)} windows of {args.seq_len}). Pre-trained "
        f"{args.pretrain_steps} steps, then every variant fine-tuned {args.finetune_steps} steps from the same "
        f"weights (batch {args.batch_size}, lr {args.finetune_lr}, cosine); PTQ quantizes the fine-tuned float model "
        "(round to nearest). int4 = symmetric per-group (gN = group size N); int8 = symmetric per-channel. "
        "Recovery = (PTQ - QAT) / (PTQ - float).",
        "",
        "| model | eval loss (nats/byte) | vs float |",
        "|---|---:|---:|",
        *rows,
        "",
    ]
    for group, value in recoveries.items():
        lines.append(
            f"int4 g{group}: QAT recovers **{value:.0%}** of the PTQ degradation (min/max scales both; goal >= 50%: "
            f"{'reached' if value >= 0.5 else 'NOT reached'}); against the MSE-clipped PTQ: "
            f"{recovery(f'PTQ int4 g{group} (mse)', f'QAT int4 g{group} (minmax)'):.0%}"
            + (
                f"; LSQ: {recovery(f'PTQ int4 g{group} (minmax)', f'QAT int4 g{group} (lsq)'):.0%}."
                if args.lsq
                else "."
            )
        )
    int8_ptq = losses["PTQ int8 per-channel (minmax)"] - losses["float"]
    int8_qat = losses["QAT int8 per-channel (minmax)"] - losses["float"]
    int8_text = f"int8: PTQ changes the loss by {int8_ptq:+.4f} nats, QAT by {int8_qat:+.4f}"
    if int8_ptq > 0.002:
        int8_text += (
            f"; QAT recovers {recovery('PTQ int8 per-channel (minmax)', 'QAT int8 per-channel (minmax)'):.0%}."
        )
    else:
        int8_text += " (below 0.002 nats: nothing measurable to recover at int8)."
    lines.append(int8_text)
    if any(losses[label] < losses["float"] for label in losses if label.startswith("QAT int4")):
        lines.append(
            "Recoveries above 100% mean the QAT model beat the float model fine-tuned for the same steps: the "
            "quantization noise also acts as a regulariser on this small corpus."
        )
    if losses["float"] > losses["float, pre-trained only"]:
        lines.append(
            "Note: fine-tuning raised the float model's eval loss (the model starts to overfit this small corpus), "
            "so part of QAT's gain can be regularisation; compare QAT with the float row, not with pre-training."
        )
    write_section(args.results, f"QAT vs PTQ ({args.device})", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
