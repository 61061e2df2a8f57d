"""Masks are held and checkpointed bit-packed (1 bit per weight), and a checkpoint from before that still resumes."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

from conftest import dataset_for, tiny_gpt2, training_args
from hf_compress import PruningCallback, PruningConfig
from hf_compress.pruning.gradual import GradualPruner
from hf_compress.pruning.masks import KeepMasks, module_sparsity, pack_bits, unpack_bits


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5), (96, 32)])
def test_bits_round_trip(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_conv1d_masks_are_stored_in_its_layout_and_read_back_as_out_in():
    model = tiny_gpt2(0)
    module = model.transformer.h[0].mlp.c_fc  # Conv1D stores its weight [in, out]
    out_features, in_features = module.weight.shape[1], module.weight.shape[0]
    mask = torch.rand(out_features, in_features, generator=torch.Generator().manual_seed(1)) > 0.3
    masks = KeepMasks({"fc": module})
    masks.set("fc", mask)
    masks.apply_()
    assert torch.equal(masks.full("fc"), mask)
    assert torch.equal(module.weight.detach().t() != 0, mask)
    assert masks.stored_bytes() == mask.numel() // 8
    assert module_sparsity(module) == pytest.approx(1 - mask.float().mean().item())


def test_pruning_state_is_bit_packed_and_resumes(tmp_path):
    callback = PruningCallback(PruningConfig(target_sparsity=0.5, schedule="cubic", start=0, end=4, frequency=2))
    args = training_args(tmp_path / "run", max_steps=6, save_strategy="steps", save_steps=3)
    trainer = Trainer(model=tiny_gpt2(0), args=args, train_dataset=dataset_for("gpt2"), callbacks=[callback])
    trainer.train()
    tensors, meta = callback.pruner.state()
    masks = callback.masks
    assert {key.split(".", 1)[0] for key in tensors if key.startswith("mask")} == {"mask_bits"}
    for name, mask in masks.items():
        assert tensors[f"mask_bits.{name}"].numel() == -(-mask.numel() // 8)
        assert meta["mask_shapes"][name] == list(mask.shape)
    held = callback.pruner.keep_masks.stored_bytes()
    assert held == sum(-(-mask.numel() // 8) for mask in masks.values())

    config = callback.config
    restored = GradualPruner(tiny_gpt2(0), config, total_steps=6, step=6, saved=(tensors, meta))
    assert all(torch.equal(restored.masks[name], mask) for name, mask in masks.items())

    old_format = {f"mask.{name}": mask for name, mask in masks.items()}  # checkpoints written before packing
    old_meta = {key: value for key, value in meta.items() if key != "mask_shapes"}
    from_old = GradualPruner(tiny_gpt2(0), config, total_steps=6, step=6, saved=(old_format, old_meta))
    assert all(torch.equal(from_old.masks[name], mask) for name, mask in masks.items())
