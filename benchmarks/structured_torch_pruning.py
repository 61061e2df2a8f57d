"""Torch-Pruning 1.6.1 one-shot width pruning of a saved Llama, with its LLM recipe; run in its own venv.

    /tmp/tpvenv/bin/python benchmarks/structured_torch_pruning.py TEACHER_DIR OUT_DIR 0.5

Recipe (Torch-Pruning's examples/LLMs): ``GroupMagnitudeImportance(p=2)``, one uniform ratio over the hidden size,
the attention heads (``num_heads`` given per projection, ``prune_num_heads=True``) and the MLP, ``lm_head``
ignored; the config is then updated from the pruned modules and the model saved with ``save_pretrained``.
"""

from __future__ import annotations

import sys

import torch
import torch_pruning as tp
from transformers import LlamaForCausalLM


def main(teacher_dir: str, out_dir: str, ratio: float) -> None:
    model = LlamaForCausalLM.from_pretrained(teacher_dir).eval()
    config = model.config
    num_heads = {}
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[module.q_proj] = config.num_attention_heads
            num_heads[module.k_proj] = config.num_key_value_heads
            num_heads[module.v_proj] = config.num_key_value_heads
    example = torch.randint(0, config.vocab_size, (1, 64))
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=example,
        importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False,
        output_transform=lambda out: out.logits,
        pruning_ratio=ratio,
        ignored_layers=[model.lm_head],
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
    )
    pruner.step()
    config.hidden_size = model.lm_head.in_features
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            heads = module.q_proj.out_features // module.head_dim
            kv_heads = module.k_proj.out_features // module.head_dim
            module.num_key_value_groups = heads // kv_heads
            config.num_attention_heads, config.num_key_value_heads = heads, kv_heads
        elif name.endswith("mlp"):
            config.intermediate_size = module.gate_proj.out_features
    print(
        f"Torch-Pruning {tp.__version__}: {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"hidden {config.hidden_size}, heads {config.num_attention_heads}/{config.num_key_value_heads}, "
        f"MLP {config.intermediate_size}",
        flush=True,
    )
    model.save_pretrained(out_dir)
    reloaded = LlamaForCausalLM.from_pretrained(out_dir)
    assert torch.allclose(reloaded(example).logits, model(example).logits, atol=1e-5)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
