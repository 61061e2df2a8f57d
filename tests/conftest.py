"""Tiny real models built from configs, and data made on the spot. No downloads."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB = 64


def tiny_gpt2(seed: int = 0, **overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, **overrides)
    return GPT2LMHeadModel(config)


def tiny_llama(seed: int = 0, family: str = "llama", **overrides):
    """A 2-layer decoder with grouped-query attention; ``family="qwen2"`` or ``"mistral"`` builds that family in the
    same shape."""
    import transformers

    prefix = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[family]
    model_class, config_class = getattr(transformers, f"{prefix}ForCausalLM"), getattr(transformers, f"{prefix}Config")
    torch.manual_seed(seed)
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    values.update(overrides)
    return model_class(config_class(**values))


def tiny_bert(seed: int = 0, num_labels: int = 2, **overrides):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    values.update(overrides)
    return BertForSequenceClassification(BertConfig(**values))


MODEL_FACTORIES = {"gpt2": tiny_gpt2, "llama": tiny_llama, "bert": tiny_bert}


class LMDataset(torch.utils.data.Dataset):
    """Random-but-learnable token sequences: each sequence counts upward modulo the vocabulary."""

    def __init__(self, n: int = 64, length: int = 16, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, VOCAB, (n, 1), generator=generator)
        steps = torch.randint(1, 3, (n, 1), generator=generator)
        self.ids = (starts + steps * torch.arange(length)) % VOCAB

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


class ClassificationDataset(torch.utils.data.Dataset):
    """Label = whether token 1 appears more often than token 2."""

    def __init__(self, n: int = 64, length: int = 12, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 8, (n, length), generator=generator)
        self.labels = ((self.ids == 1).sum(1) > (self.ids == 2).sum(1)).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def dataset_for(family: str, n: int = 64, seed: int = 0):
    return ClassificationDataset(n=n, seed=seed) if family == "bert" else LMDataset(n=n, seed=seed)


def training_args(output_dir, **overrides):
    from transformers import TrainingArguments

    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=20,
        learning_rate=1e-3,
        logging_steps=5,
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


@pytest.fixture
def make_model():
    return lambda family, seed=0, **kw: MODEL_FACTORIES[family](seed=seed, **kw)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def end_launched_process() -> None:
    """Last call of a script run by ``accelerate launch`` or ``torchrun``: tear gloo down, then exit at once.

    With gloo (and DeepSpeed's CPU backend) loaded, interpreter finalization can still abort with "terminate called
    without an active exception" after ``destroy_process_group``; ``os._exit`` skips finalization. Results must be
    written before this call.
    """
    import sys

    from hf_compress import distributed

    distributed.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch_two_processes(script, *script_args, timeout: int = 300):
    """Run ``script`` on 2 CPU processes (gloo) with ``accelerate launch --multi_gpu``; fail the test on error."""
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(script), *map(str, script_args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result


def on_grid(module) -> bool:
    """Whether a QAT-baked module's weight lies exactly on its quantization grid."""
    from hf_compress.quantization.grid import dequantize, quantize
    from hf_compress.targets import weight_out_in

    params = module.hf_compress_qparams
    weight = weight_out_in(module.weight.detach(), module)
    codes = quantize(weight, params.spec, params.scale, params.zero_point)
    return torch.equal(weight, dequantize(codes, params.spec, params.scale, params.zero_point))
