"""A recipe is hashed and carried in signed certificates, whose canonical JSON has no floats: free-form
`extra` must be plain JSON without floats, or the exact erasure could never be certified."""

from __future__ import annotations

import pytest

from unlearning_worker.sharded.recipe import ShardRecipe


@pytest.mark.parametrize("extra", [{"ratio": 0.5}, {"nested": {"x": [1, 2.0]}}, {1: "non-string key"}, {"s": {1, 2}}])
def test_extra_with_floats_or_non_json_values_is_refused(extra: dict[object, object]) -> None:
    with pytest.raises(ValueError, match="extra holds"):
        ShardRecipe.fresh(extra=extra)


def test_plain_extra_is_kept_and_hashed() -> None:
    a = ShardRecipe.fresh(extra={"label": "big", "layers": [1, 2], "on": True, "none": None})
    b = a.replace(extra={"label": "small", "layers": [1, 2], "on": True, "none": None})
    assert a.sha256() != b.sha256()
