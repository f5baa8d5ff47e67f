"""ModelContract: the four facts every artifact carries, read and checked in one place."""

from __future__ import annotations

import pytest

from deploy.contract import MAX_CHUNK_SAMPLES, ModelContract
from deploy.errors import ArtifactError

GOOD = {"chunk_samples": 16000, "defect_idx": 1, "eval_pool_ratio": 0.25, "threshold": 0.5}


def test_read_returns_the_typed_contract_and_ignores_other_keys() -> None:
    contract = ModelContract.read("a.onnx", {**GOOD, "sample_rate": 16000}, "lacks")
    assert contract == ModelContract(16000, 1, 0.25, 0.5)
    assert contract.as_dict() == GOOD


def test_read_names_every_absent_field_after_the_callers_words() -> None:
    values = {"defect_idx": 1, "threshold": 0.5}
    with pytest.raises(ArtifactError) as err:
        ModelContract.read("a.onnx", values, "metadata lacks the contract field(s)")
    assert str(err.value) == (
        "a.onnx: metadata lacks the contract field(s) ['chunk_samples', 'eval_pool_ratio']"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chunk_samples", 0),
        ("chunk_samples", MAX_CHUNK_SAMPLES + 1),
        ("chunk_samples", 16000.0),
        ("defect_idx", -1),
        ("eval_pool_ratio", 0.0),
        ("eval_pool_ratio", 1),
        ("threshold", 1.5),
        ("threshold", "0.5"),
    ],
)
def test_read_refuses_a_value_of_the_wrong_type_or_range(field: str, value: object) -> None:
    with pytest.raises(ArtifactError, match=f"invalid attribute value.*'{field}': {value!r}"):
        ModelContract.read("a.pt", {**GOOD, field: value}, "missing")


def test_read_names_all_bad_values_at_once() -> None:
    values = {**GOOD, "defect_idx": -1, "threshold": 2.0}
    with pytest.raises(ArtifactError) as err:
        ModelContract.read("a.pt", values, "missing")
    assert str(err.value) == "a.pt: invalid attribute value(s) {'defect_idx': -1, 'threshold': 2.0}"


def test_mismatched_lists_the_fields_stated_differently_and_lets_absent_ones_agree() -> None:
    contract = ModelContract(**GOOD)
    assert contract.mismatched({"threshold": 0.5, "chunk_samples": 8000}) == ["chunk_samples"]
    assert contract.mismatched({}) == []
