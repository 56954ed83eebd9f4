"""Exact erasure by sharded adapters (SISA, issue 15): placement, data commitments, and the key property:
erasing a person by retraining only the changed shards gives bit for bit the model that training from
scratch without that person gives."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from compliance.registry.artifacts import tree_sha256
from proofs import merkle
from proofs.datacommit import CommitmentError, SortedSet, record_commitment, verify_absence
from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model
from unlearning_worker.sharded.recipe import ShardRecipe
from unlearning_worker.sharded.train import (
    AdapterStore,
    Manifest,
    Record,
    RetrainPlan,
    ShardingError,
    layout,
    retrain_without,
    shard_data,
    train_sharded,
    write_model,
)

KEY_A = "a5" * 32
KEY_B = "3c" * 32
IDS = [f"R{i:04d}" for i in range(200)]

# --- recipe and placement ------------------------------------------------------------------------------


def test_placement_is_deterministic_keyed_and_covers_every_shard_and_slice() -> None:
    recipe = ShardRecipe(shards=8, slices=4, assignment_key=KEY_A)
    places = [recipe.place(i) for i in IDS]
    assert places == [ShardRecipe(shards=8, slices=4, assignment_key=KEY_A).place(i) for i in IDS]
    assert all(0 <= shard < 8 and 0 <= slice_ < 4 for shard, slice_ in places)
    assert {shard for shard, _ in places} == set(range(8))
    assert {slice_ for _, slice_ in places} == set(range(4))
    other = [recipe.replace(assignment_key=KEY_B).place(i) for i in IDS]
    assert sum(a != b for a, b in zip(places, other, strict=True)) > 100  # another key, another placement
    with pytest.raises(ValueError, match="no assignment key"):
        ShardRecipe().place("R0000")


def test_fresh_recipes_get_distinct_random_keys() -> None:
    a, b = ShardRecipe.fresh(), ShardRecipe.fresh()
    assert len(bytes.fromhex(a.assignment_key)) == 32
    assert a.assignment_key != b.assignment_key
    assert ShardRecipe.fresh(assignment_key=KEY_A).assignment_key == KEY_A


def test_recipe_round_trips_and_its_hash_names_every_field() -> None:
    recipe = ShardRecipe(shards=5, slices=3, seed=7, assignment_key=KEY_A, lora_target_modules=("c_attn", "c_fc"))
    again = ShardRecipe.from_dict(recipe.to_dict())
    assert again == recipe
    assert again.sha256() == recipe.sha256()
    assert recipe.replace(seed=8).sha256() != recipe.sha256()
    assert recipe.replace(assignment_key=KEY_B).sha256() != recipe.sha256()
    assert recipe.replace(epochs_per_slice=3).sha256() != recipe.sha256()


@pytest.mark.parametrize(
    "values",
    [
        {"shards": 0},
        {"slices": 0},
        {"assignment_key": "zz" * 32},  # not hex
        {"assignment_key": "ab" * 8},  # 8 bytes: too short
        {"lr": 0.0},
        {"lora_rank": 0},
        {"combine": "max"},
    ],
)
def test_bad_recipes_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ShardRecipe(**values)  # type: ignore[arg-type]


def test_unknown_recipe_field_is_refused() -> None:
    data = ShardRecipe(assignment_key=KEY_A).to_dict()
    with pytest.raises(ValueError, match="unknown recipe field"):
        ShardRecipe.from_dict({**data, "learning_rate": 0.1})


# --- data commitments ----------------------------------------------------------------------------------


def _c(byte: int) -> bytes:
    """A commitment that sorts by its first byte (lets a test place items between given leaves)."""
    return bytes([byte]) + b"\x07" * 31


LEAVES = SortedSet.of(_c(b) for b in (10, 20, 30, 40, 50, 60, 70))  # 7 leaves: not a power of two


def test_record_commitment_names_id_and_exact_text() -> None:
    texts = {f"R{i}": f"record number {i}\n" for i in range(9)}
    root = SortedSet.of(record_commitment(k, v) for k, v in texts.items()).root()
    changed = dict(texts, R4="record number 4 \n")  # one character more
    assert SortedSet.of(record_commitment(k, v) for k, v in changed.items()).root() != root
    assert SortedSet.of(record_commitment(k, v) for k, v in reversed(list(texts.items()))).root() == root
    assert record_commitment("R1", "x") != record_commitment("R2", "x")
    with pytest.raises(ValueError):
        record_commitment("", "x")
    with pytest.raises(ValueError):
        SortedSet.of([b"short"])


@pytest.mark.parametrize("byte", [5, 25, 45, 65, 75], ids=["below-all", "between-1-2", "between-3-4",
                                                           "between-5-6", "above-all"])
def test_absence_proof_verifies_for_an_absent_commitment(byte: int) -> None:
    proof = LEAVES.absence_proof(_c(byte))
    assert len(proof["neighbours"]) == (1 if byte in (5, 75) else 2)
    assert verify_absence(proof, size=LEAVES.size, root_hex=LEAVES.root().hex()) == _c(byte)


def test_absence_proof_in_the_empty_tree() -> None:
    empty = SortedSet.of([])
    proof = empty.absence_proof(_c(1))
    assert proof["neighbours"] == []
    assert empty.root() == merkle.EMPTY_ROOT
    assert verify_absence(proof, size=0, root_hex=merkle.EMPTY_ROOT.hex()) == _c(1)
    with pytest.raises(CommitmentError):
        verify_absence(proof, size=0, root_hex=LEAVES.root().hex())
    with pytest.raises(CommitmentError):  # an empty proof claims nothing about a non-empty tree
        verify_absence(proof, size=LEAVES.size, root_hex=LEAVES.root().hex())


def test_no_absence_proof_for_a_member() -> None:
    assert _c(30) in LEAVES
    with pytest.raises(ValueError, match="in the set"):
        LEAVES.absence_proof(_c(30))


def test_forged_neighbour_is_refused() -> None:
    proof = LEAVES.absence_proof(_c(35))
    proof["neighbours"][1]["leaf"] = _c(39).hex()  # still brackets 35, but is not the tree's leaf
    with pytest.raises(CommitmentError, match="not a leaf"):
        verify_absence(proof, size=LEAVES.size, root_hex=LEAVES.root().hex())


def test_hiding_a_member_between_non_adjacent_leaves_is_refused() -> None:
    # real leaves 20 (index 1) and 40 (index 3), each with a valid inclusion proof, "bracketing" 30
    low = LEAVES.absence_proof(_c(25))["neighbours"][0]
    high = LEAVES.absence_proof(_c(45))["neighbours"][0]
    assert (low["index"], high["index"]) == (1, 3)
    proof = {"commitment": _c(30).hex(), "neighbours": [low, high]}
    with pytest.raises(CommitmentError, match="adjacent"):
        verify_absence(proof, size=LEAVES.size, root_hex=LEAVES.root().hex())


def test_single_neighbour_must_be_an_end_of_the_tree() -> None:
    middle = LEAVES.absence_proof(_c(35))["neighbours"][1]  # leaf 40 at index 3, a valid leaf
    with pytest.raises(CommitmentError, match="single neighbour"):
        verify_absence({"commitment": _c(35).hex(), "neighbours": [middle]}, size=LEAVES.size,
                       root_hex=LEAVES.root().hex())
    first = LEAVES.absence_proof(_c(5))["neighbours"][0]
    with pytest.raises(CommitmentError, match="single neighbour"):  # 15 does not sort before leaf 10
        verify_absence({"commitment": _c(15).hex(), "neighbours": [first]}, size=LEAVES.size,
                       root_hex=LEAVES.root().hex())


def test_wrong_tree_head_is_refused() -> None:
    proof = LEAVES.absence_proof(_c(45))
    other = SortedSet.of(_c(b) for b in (10, 20, 30, 40, 50, 60, 71))
    with pytest.raises(CommitmentError):
        verify_absence(proof, size=LEAVES.size, root_hex=other.root().hex())
    # A wrong size. (An RFC 6962 inclusion proof of a leaf in the left complete subtree reads the same for
    # several tree sizes, so the size is checked where it shapes the proof: at the ends and on the right.)
    with pytest.raises(CommitmentError):
        verify_absence(proof, size=LEAVES.size - 1, root_hex=LEAVES.root().hex())
    above = LEAVES.absence_proof(_c(75))
    for size in (LEAVES.size - 1, LEAVES.size + 1):
        with pytest.raises(CommitmentError):
            verify_absence(above, size=size, root_hex=LEAVES.root().hex())
    with pytest.raises(CommitmentError, match="malformed"):
        verify_absence({"commitment": "xyz", "neighbours": []}, size=LEAVES.size, root_hex=LEAVES.root().hex())


# --- exact erasure on a tiny demo model ----------------------------------------------------------------

# The shape of the base model: trained on a corpus of *other* people (seed 101), so it knows the record
# formats but none of the people that the shards are fine-tuned on (the corpus of seed 0).
BASE_SHAPE = dict(n_people=6, n_holdout=3, n_layer=2, n_head=2, n_embd=64, vocab_size=1024, n_positions=256,
                  steps=400, batch_size=16, warmup_steps=20)
RECIPE = ShardRecipe(shards=4, slices=2, epochs_per_slice=2, seed=1, assignment_key=KEY_A)


@dataclass(frozen=True)
class Erasure:
    base_dir: Path
    base_sha: str
    store: AdapterStore
    before: Manifest
    after: Manifest  # retrain_without
    plan: RetrainPlan
    scratch: Manifest  # train_sharded on the corpus without the person, in its own store
    scratch_store: AdapterStore
    erased: list[Record]
    remaining: list[Record]
    after_dir: Path
    scratch_dir: Path


@pytest.fixture(scope="module")
def erasure(tmp_path_factory: pytest.TempPathFactory) -> Erasure:
    # The base model is cached in the temp folder under its content hash (train_demo_model's cache), so
    # later runs skip its ~15 s of training.
    cache = Path(tempfile.gettempdir()) / "sharded-test-base"
    base_dir = train_demo_model(DemoModelConfig(**BASE_SHAPE, seed=101), cache_dir=cache)  # type: ignore[arg-type]
    base_sha = tree_sha256(base_dir)
    corpus = DemoModelConfig(**BASE_SHAPE).corpus()  # type: ignore[arg-type]
    records = [Record(r.record_id, r.text) for r in corpus.records]

    # The person whose records touch the fewest shards (with this fixed key: fewer than all of them).
    def shards_of(person_id: str) -> set[int]:
        return {RECIPE.place(r.record_id)[0] for r in corpus.records_of([person_id])}

    person = min(corpus.people, key=lambda p: (len(shards_of(p.person_id)), p.person_id))
    assert len(shards_of(person.person_id)) < RECIPE.shards
    gone = {r.record_id for r in corpus.records_of([person.person_id])}
    erased = [r for r in records if r.record_id in gone]
    remaining = [r for r in records if r.record_id not in gone]

    root = tmp_path_factory.mktemp("sharded")
    store = AdapterStore(root / "store")
    before = train_sharded(base_dir, records, RECIPE, store, base_sha256=base_sha)
    after, plan, _seconds = retrain_without(base_dir, before, remaining, store, base_sha256=base_sha)
    scratch_store = AdapterStore(root / "scratch-store")
    scratch = train_sharded(base_dir, remaining, RECIPE, scratch_store, base_sha256=base_sha)
    after_dir = write_model(base_dir, after, store, root / "models" / "erased")
    scratch_dir = write_model(base_dir, scratch, scratch_store, root / "models" / "scratch")
    return Erasure(base_dir, base_sha, store, before, after, plan, scratch, scratch_store, erased, remaining,
                   after_dir, scratch_dir)


def test_erasure_equals_training_from_scratch_without_the_person(erasure: Erasure) -> None:
    assert erasure.after.adapters() == erasure.scratch.adapters()
    assert [s["checkpoints"] for s in erasure.after.shards] == [s["checkpoints"] for s in erasure.scratch.shards]
    assert erasure.after.to_dict() == erasure.scratch.to_dict()
    assert tree_sha256(erasure.after_dir) == tree_sha256(erasure.scratch_dir)
    # the shards are the model: routed (the default), each adapter sits beside the base weights
    adapters = sorted((erasure.after_dir / "adapters").iterdir(), key=lambda p: int(p.stem))
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in adapters] == erasure.after.adapters()


def test_merged_combines_change_the_base_weights(erasure: Erasure, tmp_path: Path) -> None:
    for combine in ("mean", "sum"):
        merged = Manifest(recipe=erasure.after.recipe.replace(combine=combine), base_sha256=erasure.base_sha,
                          shards=erasure.after.shards)
        out = write_model(erasure.base_dir, merged, erasure.store, tmp_path / combine)
        assert not (out / "adapters").exists()
        assert tree_sha256(out / "model.safetensors") != tree_sha256(erasure.base_dir / "model.safetensors")


def test_erasure_reuses_the_shards_the_person_was_never_in(erasure: Erasure) -> None:
    plan = erasure.plan
    assert None in plan.first_changed
    assert plan.affected
    held = {RECIPE.place(r.record_id) for r in erasure.erased}
    for shard, first in enumerate(plan.first_changed):
        slices = {s for sh, s in held if sh == shard}
        assert first == (min(slices) if slices else None)
        old, new = erasure.before.shards[shard], erasure.after.shards[shard]
        if first is None:
            assert new == old
        else:
            assert new["adapter"] != old["adapter"]
            assert new["checkpoints"][:first] == old["checkpoints"][:first]  # resumed, not retrained


def test_new_data_trees_prove_the_person_absent(erasure: Erasure) -> None:
    grid_after = layout(RECIPE, erasure.remaining)
    grid_before = layout(RECIPE, [*erasure.remaining, *erasure.erased])
    for entry, slices, old_slices, old_entry in zip(erasure.after.shards, grid_after, grid_before,
                                                    erasure.before.shards, strict=True):
        data = shard_data(slices)
        assert (data.size, data.root().hex()) == (entry["records"], entry["data_root"])
        for record in erasure.erased:
            proof = data.absence_proof(record.commitment)
            assert verify_absence(proof, size=entry["records"], root_hex=entry["data_root"]) == record.commitment
            if RECIPE.place(record.record_id)[0] == entry["index"]:  # the old tree did hold it: no proof there
                with pytest.raises(ValueError):
                    shard_data(old_slices).absence_proof(record.commitment)
                with pytest.raises(CommitmentError):
                    verify_absence(proof, size=old_entry["records"], root_hex=old_entry["data_root"])


def test_manifest_is_written_with_the_model(erasure: Erasure) -> None:
    read = Manifest.read(erasure.after_dir)
    assert read is not None
    assert read.to_dict() == erasure.after.to_dict()
    assert Manifest.read(erasure.base_dir) is None


def test_tampered_adapter_is_refused(erasure: Erasure, tmp_path: Path) -> None:
    copy = AdapterStore(tmp_path / "store")
    shutil.copytree(erasure.store.root, copy.root)
    sha = erasure.after.adapters()[0]
    path = copy.path(sha)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(ShardingError, match="does not match its hash"):
        copy.get(sha)
    with pytest.raises(ShardingError, match="does not match its hash"):
        write_model(erasure.base_dir, erasure.after, copy, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no half-written model left
    path.unlink()
    with pytest.raises(ShardingError, match="not in the store"):
        copy.get(sha)
    with pytest.raises(ShardingError):
        copy.get("../" + sha[3:])


def test_existing_model_directory_is_never_overwritten(erasure: Erasure) -> None:
    before = tree_sha256(erasure.after_dir)
    with pytest.raises(ShardingError, match="never overwritten"):
        write_model(erasure.base_dir, erasure.before, erasure.store, erasure.after_dir)
    assert tree_sha256(erasure.after_dir) == before


def test_retraining_on_another_base_is_refused(erasure: Erasure) -> None:
    with pytest.raises(ShardingError, match="base model"):
        retrain_without(erasure.base_dir, erasure.before, erasure.remaining, erasure.store, base_sha256="0" * 64)
    with pytest.raises(ShardingError, match="no records"):
        retrain_without(erasure.base_dir, erasure.before, [], erasure.store, base_sha256=erasure.base_sha)
