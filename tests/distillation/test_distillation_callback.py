"""DistillationCallback inside a real transformers.Trainer (and subclasses) on tiny GPT-2 and Llama models."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import Trainer
from transformers.modeling_outputs import CausalLMOutput
from transformers.trainer_callback import PrinterCallback

from conftest import VOCAB, LMDataset, launch_two_processes, tiny_gpt2, tiny_llama, training_args
from hf_compress import DistillationCallback, DistillationConfig, PruningCallback, PruningConfig, add_callbacks
from hf_compress.distillation.projections import LayerProjections
from hf_compress.targets import find_target_modules

torch.set_num_threads(1)
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_KEYS = {"distill_loss", "task_loss", "distill_weight", "task_weight"}


class MaskedLMDataset(torch.utils.data.Dataset):
    """Counting sequences over tokens 0..59 where sample i starts with ``2 * (i % 4)`` prompt tokens (62, labels -100)
    and ends with ``2 * (i % 5)`` padding tokens (``pad_token``, attention 0, labels -100)."""

    PROMPT_TOKEN = 62

    def __init__(self, n: int = 8, length: int = 16, seed: int = 0, pad_token: int = 63):
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, 60, (n, 1), generator=generator)
        self.ids = (starts + torch.arange(length)) % 60
        self.pad_token = pad_token

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i].clone()
        mask, labels = torch.ones_like(ids), ids.clone()
        prompt, padded = 2 * (i % 4), 2 * (i % 5)
        ids[:prompt], labels[:prompt] = self.PROMPT_TOKEN, -100
        if padded:
            ids[-padded:], mask[-padded:], labels[-padded:] = self.pad_token, 0, -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LogRecorder(PrinterCallback):
    """Stands in for a reporter (a log printer): records the logs dict its on_log receives."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


class NoHiddenStatesLM(nn.Module):
    """A teacher that returns logits only, whatever it is asked for."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return CausalLMOutput(logits=self.inner(input_ids=input_ids, attention_mask=attention_mask).logits)


def train(student, teacher, config, tmp_path, *, dataset=None, trainer_cls=Trainer, callbacks=(), **arg_overrides):
    values = dict(max_steps=4, logging_steps=2)
    values.update(arg_overrides)
    callback = DistillationCallback(teacher, config)
    trainer = trainer_cls(
        model=student,
        args=training_args(tmp_path / "out", **values),
        train_dataset=dataset if dataset is not None else LMDataset(n=32),
        callbacks=list(callbacks),
    )
    add_callbacks(trainer, callback)
    trainer.train()
    return trainer, callback


def logged(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def hook_count(model):
    return len(model._forward_hooks) + len(model._forward_pre_hooks)


def mean_teacher_kl(student, teacher, dataset):
    """Token-averaged KL(teacher || student) on held-out batches, both in eval mode."""
    student.eval()
    ids = dataset.ids
    with torch.no_grad():
        log_s = F.log_softmax(student(input_ids=ids).logits[:, :-1], -1)
        log_t = F.log_softmax(teacher(input_ids=ids).logits[:, :-1], -1)
    return float((log_t.exp() * (log_t - log_s)).sum(-1).mean())


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_vanilla_trainer_mixes_losses_logs_them_and_removes_hooks(factory, tmp_path):
    student, teacher = factory(seed=0), factory(seed=1)
    recorder = LogRecorder()
    trainer, callback = train(
        student, teacher, DistillationConfig(alpha=0.3, temperature=2.0), tmp_path, callbacks=[recorder]
    )
    entries = logged(trainer)
    assert len(entries) == 2
    for entry in entries:
        assert LOG_KEYS <= set(entry)
        assert entry["distill_weight"] == 0.3 and entry["task_weight"] == pytest.approx(0.7)
        assert entry["loss"] == pytest.approx(0.3 * entry["distill_loss"] + 0.7 * entry["task_loss"], rel=1e-4)
        assert entry["distill_loss"] > 0
    # a callback listed before ours (like the reporters) still receives the keys
    assert LOG_KEYS <= set(recorder.seen[0])
    # the model handed back is a normal model: no hooks, its loss is the plain cross-entropy
    assert hook_count(student) == 0
    student.train()  # the hooks only ever acted in training mode with gradients on
    batch = LMDataset(n=4, seed=3)[0]
    out = student(input_ids=batch["input_ids"][None], labels=batch["labels"][None])
    expected = F.cross_entropy(out.logits[0, :-1], batch["labels"][1:])
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
    # the teacher: eval mode, frozen, on the student's device, not wrapped
    assert callback.teacher is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).device == next(student.parameters()).device


def test_identical_student_and_teacher_give_zero_distillation_loss(tmp_path):
    teacher = tiny_llama(seed=0)
    student = copy.deepcopy(teacher)
    config = DistillationConfig(alpha=1.0, layer_map={1: 1, 2: 2})
    trainer, _ = train(student, teacher, config, tmp_path, optim="sgd")
    for entry in logged(trainer):
        assert entry["distill_loss"] < 1e-6 and entry["hidden_loss"] < 1e-6
        assert entry["task_loss"] > 1.0  # the task loss is real, just not mixed in at alpha = 1


class Unlabelled(torch.utils.data.Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return {key: value for key, value in self.base[i].items() if key != "labels"}


def test_pure_distillation_on_unlabelled_data(tmp_path):
    student, teacher = tiny_llama(seed=0), tiny_llama(seed=1)
    trainer, _ = train(student, teacher, DistillationConfig(alpha=1.0), tmp_path, dataset=Unlabelled(LMDataset(n=32)))
    for entry in logged(trainer):
        assert entry["loss"] == pytest.approx(entry["distill_loss"], rel=1e-5) and "task_loss" not in entry
    with pytest.raises(ValueError, match="no labels reached the student"):
        train(
            tiny_llama(seed=0),
            teacher,
            DistillationConfig(alpha=0.5),
            tmp_path / "b",
            dataset=Unlabelled(LMDataset(n=32)),
        )


def test_distillation_term_really_trains_the_student(tmp_path):
    teacher = tiny_llama(seed=1)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(8.0)  # a confident teacher with its own (random) opinions
    held_out = LMDataset(n=16, seed=7)
    start = mean_teacher_kl(tiny_llama(seed=0), teacher, held_out)

    distilled = tiny_llama(seed=0)
    train(distilled, teacher, DistillationConfig(alpha=1.0), tmp_path / "kd", max_steps=30, learning_rate=1e-2)
    plain = tiny_llama(seed=0)
    Trainer(
        model=plain,
        args=training_args(tmp_path / "plain", max_steps=30, learning_rate=1e-2),
        train_dataset=LMDataset(n=32),
    ).train()

    kd_kl, plain_kl = mean_teacher_kl(distilled, teacher, held_out), mean_teacher_kl(plain, teacher, held_out)
    assert kd_kl < 0.5 * start, (kd_kl, start)
    assert kd_kl < 0.3 * plain_kl, (kd_kl, plain_kl, start)


def test_masked_and_padded_positions_do_not_contribute(tmp_path):
    teacher, student = tiny_llama(seed=1), tiny_llama(seed=0)
    with torch.no_grad():  # the teacher goes wild on prompt and padding inputs: counting them would show
        teacher.model.embed_tokens.weight[[MaskedLMDataset.PROMPT_TOKEN, 63]] *= 300.0
        teacher.lm_head.weight.mul_(4.0)
    dataset = MaskedLMDataset(n=8)
    trainer, _ = train(
        student,
        teacher,
        DistillationConfig(alpha=1.0),
        tmp_path / "a",
        dataset=dataset,
        max_steps=1,
        logging_steps=1,
        learning_rate=0.0,
    )
    reported = logged(trainer)[0]["distill_loss"]

    batch = {
        key: torch.stack([dataset[i][key] for i in range(len(dataset))])
        for key in ("input_ids", "attention_mask", "labels")
    }
    with torch.no_grad():
        student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    log_s, log_t = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    per_position = (log_t.exp() * (log_t - log_s)).sum(-1)
    counted = (batch["labels"][:, 1:] != -100) & batch["attention_mask"][:, 1:].bool()
    expected = float(per_position[counted].sum() / counted.sum())
    everywhere = float(per_position.mean())
    assert reported == pytest.approx(expected, rel=1e-4)
    assert abs(everywhere - expected) > 0.05 * expected  # the check can tell the difference

    # whatever sits in the padding does not change the loss
    trainer, _ = train(
        tiny_llama(seed=0),
        teacher,
        DistillationConfig(alpha=1.0),
        tmp_path / "b",
        dataset=MaskedLMDataset(n=8, pad_token=61),
        max_steps=1,
        logging_steps=1,
        learning_rate=0.0,
    )
    assert logged(trainer)[0]["distill_loss"] == pytest.approx(reported, rel=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_gradient_accumulation_matches_one_big_batch(alpha, tmp_path):
    """Micro-batches with different numbers of counted tokens: normalising by num_items_in_batch makes the
    accumulated gradient equal the full batch's (a per-micro-batch mean would not)."""
    teacher = tiny_llama(seed=1)
    config = DistillationConfig(alpha=alpha, temperature=2.0, layer_map={2: 2})
    results = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        student = tiny_llama(seed=0)
        trainer = Trainer(
            model=student,
            args=training_args(
                tmp_path / f"ga{accumulation}",
                per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=accumulation,
                max_steps=1,
                optim="sgd",
                learning_rate=1.0,
                max_grad_norm=0.0,
                logging_steps=1,
            ),
            train_dataset=MaskedLMDataset(n=8),
            callbacks=[DistillationCallback(teacher, config)],
        )
        if accumulation == 2:
            micro = list(trainer.get_train_dataloader())
            counts = [int((b["labels"][:, 1:] != -100).sum()) for b in micro]
            assert counts[0] != counts[1], counts
        trainer.train()
        results.append({name: p.detach().clone() for name, p in student.named_parameters()})
    moved = sum(float((results[0][n] - tiny_llama(seed=0).state_dict()[n]).abs().sum()) for n in results[0])
    assert moved > 1e-3
    for name, value in results[0].items():
        assert torch.allclose(value, results[1][name], atol=1e-6, rtol=1e-5), name


def test_checkpoint_resume_restores_projections_that_never_reach_the_model(tmp_path):
    config = DistillationConfig(alpha=0.5, layer_map={1: 2, 2: 4})
    wide_teacher = tiny_llama(seed=1, hidden_size=64, intermediate_size=128, num_hidden_layers=4)
    run_args = dict(max_steps=6, save_strategy="steps", save_steps=3, logging_steps=3, learning_rate=3e-3)

    student = tiny_llama(seed=0)
    full, full_callback = train(student, wide_teacher, config, tmp_path / "full", **run_args)
    assert sorted(full_callback.projections.layers) == [1, 2]
    assert full_callback.projections.maps["1"].weight.shape == (64, 32)
    initial = LayerProjections({1: (32, 64), 2: (32, 64)}, seed=0)
    assert not torch.allclose(full_callback.projections.maps["1"].weight, initial.maps["1"].weight)  # trained

    checkpoint = tmp_path / "full" / "out" / "checkpoint-3"
    model_keys = set(tiny_llama(seed=0).state_dict())
    assert set(load_file(checkpoint / "model.safetensors")) == model_keys  # no projection weights in the model
    projection_state = load_file(checkpoint / "distillation_projections.safetensors")
    assert {"param::maps.1.weight", "param::maps.2.weight"} <= set(projection_state)
    assert any(key.startswith("optimizer::maps.1.weight::exp_avg") for key in projection_state)
    optimizer_groups = torch.load(checkpoint / "optimizer.pt", weights_only=True)["param_groups"]
    assert len(optimizer_groups) == 2  # the Trainer's own decay / no-decay groups only

    # resume from step 3 with a fresh callback: same end state as the uninterrupted run
    resumed_student = tiny_llama(seed=0)
    resumed_callback = DistillationCallback(wide_teacher, config)
    resumed = Trainer(
        model=resumed_student,
        args=training_args(tmp_path / "full" / "out", **run_args),
        train_dataset=LMDataset(n=32),
        callbacks=[resumed_callback],
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name in ("1", "2"):
        assert torch.allclose(
            resumed_callback.projections.maps[name].weight, full_callback.projections.maps[name].weight, atol=1e-5
        ), name
    for (name, value), other in zip(resumed_student.state_dict().items(), student.state_dict().values()):
        assert torch.allclose(value, other, atol=1e-5), name

    # the final model has no trace of them
    resumed.save_model(str(tmp_path / "final"))
    assert set(load_file(tmp_path / "final" / "model.safetensors")) == model_keys
    assert sum(p.numel() for p in resumed_student.parameters()) == sum(p.numel() for p in tiny_llama().parameters())


def _snapshot(model):
    return {name: value.clone() for name, value in model.state_dict().items()}


def _unchanged(model, snapshot):
    return all(torch.equal(value, snapshot[name]) for name, value in model.state_dict().items())


@pytest.mark.parametrize(
    "case, message",
    [
        ("vocab", "teacher and student vocabularies differ"),
        ("student_layer", "layer_map: student layer 5 is out of range"),
        ("teacher_layer", "layer_map: teacher layer 9 is out of range"),
        ("no_hidden_states", "needs hidden states, but the teacher"),
        ("label_smoothing", "label_smoothing_factor"),
        ("compute_loss_func_alpha_1", "never reached backward"),
        ("compute_loss_func_alpha_half", "no labels reached the student"),
    ],
)
def test_bad_input_raises_before_the_first_step(case, message, tmp_path):
    student, teacher = tiny_llama(seed=0), tiny_llama(seed=1)
    config, trainer_kwargs, arg_overrides = DistillationConfig(), {}, {}
    if case == "vocab":
        teacher = tiny_llama(seed=1, vocab_size=VOCAB + 16)
    elif case == "student_layer":
        config = DistillationConfig(layer_map={5: 1})
    elif case == "teacher_layer":
        config = DistillationConfig(layer_map={1: 9})
    elif case == "no_hidden_states":
        teacher, config = NoHiddenStatesLM(teacher), DistillationConfig(layer_map={1: 1})
    elif case == "label_smoothing":
        arg_overrides["label_smoothing_factor"] = 0.1
    else:
        config = DistillationConfig(alpha=1.0 if case.endswith("alpha_1") else 0.5)
        trainer_kwargs["compute_loss_func"] = lambda outputs, labels, num_items_in_batch=None: F.cross_entropy(
            outputs.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
        )
    snapshot = _snapshot(student)
    trainer = Trainer(
        model=student,
        args=training_args(tmp_path, max_steps=2, **arg_overrides),
        train_dataset=LMDataset(n=16),
        callbacks=[DistillationCallback(teacher, config)],
        **trainer_kwargs,
    )
    with pytest.raises(ValueError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0 and _unchanged(student, snapshot)
    assert hook_count(student) == 0  # errors raised after the hooks were added remove them


def test_trainer_subclass_overriding_compute_loss(tmp_path):
    class CountingTrainer(Trainer):
        calls = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            CountingTrainer.calls += 1
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    trainer, _ = train(
        tiny_gpt2(seed=0), tiny_gpt2(seed=1), DistillationConfig(alpha=0.5), tmp_path, trainer_cls=CountingTrainer
    )
    assert CountingTrainer.calls == 4
    for entry in logged(trainer):
        assert entry["loss"] == pytest.approx(0.5 * entry["distill_loss"] + 0.5 * entry["task_loss"], rel=1e-4)


def test_trl_sft_trainer_with_its_fused_lm_head(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
        pad_token="t0",
        eos_token="t1",
        unk_token="t0",
    )
    data = Dataset.from_dict({"input_ids": [row.tolist() for row in LMDataset(n=16).ids]})
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        logging_steps=2,
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
    )
    callback = DistillationCallback(tiny_llama(seed=1), DistillationConfig(alpha=0.5, temperature=2.0))
    trainer = trl.SFTTrainer(
        model=tiny_llama(seed=0), args=args, train_dataset=data, processing_class=tokenizer, callbacks=[callback]
    )
    trainer.train()
    entries = logged(trainer)
    assert entries and all(LOG_KEYS <= set(entry) for entry in entries)
    for entry in entries:
        assert entry["loss"] == pytest.approx(0.5 * entry["distill_loss"] + 0.5 * entry["task_loss"], rel=1e-3)


def test_teacher_loaded_from_a_path_in_bfloat16(tmp_path):
    teacher = tiny_llama(seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    reference, _ = train(tiny_llama(seed=0), teacher, DistillationConfig(alpha=1.0), tmp_path / "fp32", max_steps=2)
    trainer, callback = train(
        tiny_llama(seed=0),
        str(tmp_path / "teacher"),
        DistillationConfig(alpha=1.0, teacher_dtype="bfloat16"),
        tmp_path / "bf16",
        max_steps=2,
    )
    assert next(callback.teacher.parameters()).dtype == torch.bfloat16
    assert next(trainer.model.parameters()).dtype == torch.float32
    assert logged(trainer)[0]["distill_loss"] == pytest.approx(logged(reference)[0]["distill_loss"], rel=0.1)


def test_composes_with_pruning_callback(tmp_path):
    student, teacher = tiny_llama(seed=0), tiny_llama(seed=1)
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="cubic", start=0, end=0.5, frequency=2))
    trainer, _ = train(
        student, teacher, DistillationConfig(alpha=0.5, layer_map={2: 2}), tmp_path, callbacks=[pruning], max_steps=8
    )
    for entry in logged(trainer):
        assert entry["loss"] == pytest.approx(0.5 * entry["distill_loss"] + 0.5 * entry["task_loss"], rel=1e-4)
    weights = [module.weight for module in find_target_modules(student).values()]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.02)
    assert not any((w == 0).float().mean() > 0.01 for w in teacher.parameters() if w.dim() == 2)


@pytest.mark.multiprocess
def test_two_process_ddp(tmp_path):
    result_path = tmp_path / "ranks.json"
    launch_two_processes(os.path.join(TESTS_DIR, "scripts", "ddp_distillation.py"), result_path, tmp_path / "out")
    ranks = json.loads(result_path.read_text())
    assert [seen["rank"] for seen in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    for seen in ranks:
        assert seen["model_wrapped"] == "DistributedDataParallel"
        assert seen["teacher_type"] == "LlamaForCausalLM" and not seen["teacher_is_ddp"]
        assert not seen["teacher_training"] and not seen["teacher_requires_grad"]
        assert seen["teacher_device"] == seen["student_device"]
        assert seen["student_hooks"] == 0 and seen["projection_trained"] > 0
        assert len(seen["logs"]) == 2
        for entry in seen["logs"]:
            assert entry["loss"] == pytest.approx(0.5 * entry["distill_loss"] + 0.5 * entry["task_loss"], rel=1e-4)
    # the projections live outside DDP: their gradients are averaged by the callback, so ranks stay identical
    assert ranks[0]["projection_sum"] == ranks[1]["projection_sum"]
    assert ranks[0]["student_sum"] == ranks[1]["student_sum"]
