"""A PEFT run's saved output carries its compression: TRL SFTTrainer + peft_config, save, reload in a new process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent.parent / "scripts"

RELOAD = textwrap.dedent(
    """
    import sys, torch
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file
    import hf_compress
    from hf_compress.targets import find_target_modules

    workdir = sys.argv[1]
    model = AutoPeftModelForCausalLM.from_pretrained(f"{workdir}/out")  # the usual PEFT path: dense base + adapter
    print("restored", hf_compress.restore_compression(model, f"{workdir}/out"))
    merged = hf_compress.merge_and_unload(model)
    modules = find_target_modules(merged)
    zeros = sum(int((m.weight == 0).sum()) for m in modules.values())
    total = sum(m.weight.numel() for m in modules.values())
    print(f"sparsity {zeros / total:.4f}")
    expected = load_file(f"{workdir}/expected.safetensors")
    for key, value in merged.state_dict().items():
        assert torch.equal(value, expected[key]), key
    print("identical to the merged model of the training process")
    """
)


def run(*command, timeout=400):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.mark.parametrize("qat", [False, True])
def test_an_sft_lora_run_reloads_compressed_in_a_new_process(tmp_path, qat):
    pytest.importorskip("trl")
    run(sys.executable, str(SCRIPTS / "peft_sft_save.py"), str(tmp_path), *(["--qat"] if qat else []))
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").exists() and (out / "hf_compress_peft_pruning.safetensors").exists()
    assert (out / "hf_compress_peft_qat.json").exists() == qat
    result = run(sys.executable, "-c", RELOAD, str(tmp_path))
    sparsity = float(result.stdout.split("sparsity ")[1].split()[0])
    # QAT's 4-bit grid rounds a few more weights to zero
    assert sparsity == 0.5 if not qat else 0.5 <= sparsity < 0.56, result.stdout
    assert "identical to the merged model of the training process" in result.stdout


def test_restore_compression_refuses_a_folder_without_hf_compress_files(tmp_path):
    from peft import LoraConfig, get_peft_model

    import hf_compress
    from conftest import tiny_llama

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="holds no hf_compress_peft_"):
        hf_compress.restore_compression(model, tmp_path)
