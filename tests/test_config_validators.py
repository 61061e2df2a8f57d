"""The shared validators in config_base: every config refuses NaN and inf, one regex-list check, one bool check."""

from __future__ import annotations

import dataclasses

import pytest

from hf_compress import DistillationConfig, L1RegularizationConfig, PruningConfig, QATConfig
from hf_compress.metrics.config import HallucinationConfig

MINIMAL = {
    PruningConfig: dict(target_sparsity=0.5),
    L1RegularizationConfig: dict(l1_lambda=1e-4),
    DistillationConfig: {},
    QATConfig: {},
    HallucinationConfig: {},
}
FLOAT_FIELDS = [
    (cls, field.name)
    for cls in MINIMAL
    for field in dataclasses.fields(cls)
    if "float" in str(field.type) and not str(field.type).startswith("dict")
]


def test_every_config_has_float_fields_under_test():
    assert {cls for cls, _ in FLOAT_FIELDS} == set(MINIMAL)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cls, name", FLOAT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FLOAT_FIELDS])
def test_non_finite_numbers_are_refused_naming_the_field(cls, name, bad):
    with pytest.raises(ValueError, match=name):
        cls(**{**MINIMAL[cls], name: bad})


# l1_lambda acts as l1_lambda * lr per step, so no fixed number is too large for it
BOUNDED_FIELDS = [(cls, name) for cls, name in FLOAT_FIELDS if name != "l1_lambda"]


@pytest.mark.parametrize("cls, name", BOUNDED_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in BOUNDED_FIELDS])
def test_every_float_field_has_an_upper_bound(cls, name):
    with pytest.raises(ValueError, match=rf"^{name} must be .*in [\[(][^;]*, [0-9.]+[\])].*; got"):
        cls(**{**MINIMAL[cls], name: 1e12})


def test_per_layer_sparsity_must_be_finite():
    with pytest.raises(ValueError, match="per_layer"):
        PruningConfig(target_sparsity=0.5, per_layer={"mlp": float("nan")})


@pytest.mark.parametrize("cls", [PruningConfig, L1RegularizationConfig, QATConfig])
def test_one_regex_list_check_for_every_config(cls):
    for field in ("targets", "exclude"):
        with pytest.raises(ValueError, match=f"{field} must be a list of regex strings.*wrap a single regex"):
            cls(**{**MINIMAL[cls], field: "mlp"})
        with pytest.raises(ValueError, match=rf"{field}: '\(' is not a valid regex"):
            cls(**{**MINIMAL[cls], field: ["("]})
        assert getattr(cls(**{**MINIMAL[cls], field: ("mlp",)}), field) == ["mlp"]


@pytest.mark.parametrize(
    "cls, field", [(PruningConfig, "mask_gradients"), (QATConfig, "symmetric"), (DistillationConfig, "causal_shift")]
)
def test_one_bool_check(cls, field):
    with pytest.raises(ValueError, match=f"{field} must be True"):
        cls(**{**MINIMAL[cls], field: 1})
