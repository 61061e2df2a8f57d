"""A plugin criterion's scores are checked at first use: a tensor, finite, the weight's [out, in] shape."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

from conftest import LMDataset, tiny_gpt2, tiny_llama, training_args
from hf_compress import PruningCallback, PruningConfig
from hf_compress.pruning.criteria import PruningCriterion
from hf_compress.registry import get_registry


def train_with(criterion: str, model, tmp_path):
    callback = PruningCallback(PruningConfig(target_sparsity=0.5, criterion=criterion, start=0, end=4, frequency=2))
    Trainer(
        model=model, args=training_args(tmp_path, max_steps=4), train_dataset=LMDataset(), callbacks=[callback]
    ).train()
    return callback


def test_a_plugin_criterion_in_conv1d_storage_layout_is_refused_naming_plugin_and_distribution(tmp_path):
    model = tiny_gpt2(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"criterion 'layout_blind' from hf-compress-testplugin 0\.0\.1 .*Conv1D storage"
    ):
        train_with("layout_blind", model, tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # refused before any weight was pruned


class _Scores(PruningCriterion):
    kind = "nan"

    def scores(self, name, module):
        in_features, out_features = module.in_features, module.out_features
        if self.kind == "nan":
            return torch.full((out_features, in_features), float("nan"))
        if self.kind == "flat":
            return torch.rand(out_features * in_features)
        return [[1.0] * in_features] * out_features


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nan", r"non-finite \(NaN or inf\)"),
        ("flat", r"shape \[\d+\]; expected the weight's \[out, in\]"),
        ("list", "not a torch.Tensor"),
    ],
)
def test_bad_plugin_scores_are_refused_at_first_use(tmp_path, kind, message):
    criterion = type(f"Scores_{kind}", (_Scores,), {"kind": kind})
    name = f"test_scores_{kind}"
    get_registry().register("pruning_criterion", name, criterion, replace=True)
    with pytest.raises(ValueError, match=rf"criterion {name!r} from .*scores\(name='model\.layers\.0\..*{message}"):
        train_with(name, tiny_llama(), tmp_path)


def test_good_scores_pass_the_check(tmp_path):
    callback = train_with("magnitude", tiny_gpt2(0), tmp_path)
    assert callback.pruner._scores_checked == set(callback.masks)
