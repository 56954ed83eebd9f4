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


def test_grouped_records_share_one_shard_and_slice_and_the_rest_are_placed_by_id() -> None:
    from unlearning_worker.sharded.train import Record, layout

    recipe = ShardRecipe.fresh(shards=8, slices=4, group_field="person_id")
    person = [Record(f"P7-{kind}", f"text {kind}", group="P7") for kind in ("bio", "qa-phone", "qa-email", "qa-ssn")]
    loose = [Record(f"general-{i}", f"general {i}") for i in range(64)]
    grid = layout(recipe, [*person, *loose])
    cells = {(s, t) for s, shard in enumerate(grid) for t, part in enumerate(shard) for r in part if r.group == "P7"}
    assert cells == {recipe.place("P7")}
    loose_cells = {(s, t) for s, shard in enumerate(grid) for t, part in enumerate(shard) for r in part if not r.group}
    assert len(loose_cells) > 8  # by id: spread over the grid


def test_group_field_must_be_a_field_name() -> None:
    with pytest.raises(ValueError, match="group_field"):
        ShardRecipe.fresh(group_field="x" * 65)
