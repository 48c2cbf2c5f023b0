"""marl.checkpoint: typed keys round-trip, damaged or partial steps are skipped with a message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl.checkpoint import Checkpointer, CheckpointError


def _tree(seed: int) -> dict:
    return {
        "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) * seed,
        "n": jnp.int32(seed),
        "key": jax.random.key(seed),
        "keys": jax.random.split(jax.random.key(seed + 1), 3),
        "flags": {"done": jnp.array([True, False])},
    }


def _abstract() -> dict:
    return jax.eval_shape(lambda: _tree(0))


def _same(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_typed_keys_and_max_to_keep(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _tree(step), {"step": step})
    assert ckpt.steps() == [2, 3]
    step, tree, meta = ckpt.restore(_abstract())
    assert step == 3 and meta == {"step": 3}
    _same(tree, _tree(3))
    # the restored key draws the same numbers as the saved one
    assert float(jax.random.uniform(tree["key"])) == float(jax.random.uniform(_tree(3)["key"]))
    ckpt.close()


def test_partial_and_damaged_steps_fall_back(tmp_path):
    messages = []
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=5)
    ckpt.save(1, _tree(1))
    ckpt.save(2, _tree(2))
    ckpt.close()
    (tmp_path / "ck" / "3").mkdir()  # a step folder cut short (no manifest, no data)
    tmp = tmp_path / "ck" / "4.orbax-checkpoint-tmp-99"  # orbax's temporary folder of a cut save
    tmp.mkdir()
    (tmp / "junk").write_bytes(b"x")
    data = max(
        (
            p
            for p in (tmp_path / "ck" / "2").rglob("*")
            if p.is_file() and p.name != "integrity.json"
        ),
        key=lambda p: p.stat().st_size,
    )
    data.write_bytes(data.read_bytes()[:-7] + b"garbage")  # same size, other bytes
    ckpt = Checkpointer(tmp_path / "ck", max_to_keep=5, log=messages.append)
    assert not tmp.exists()  # orbax removed the temporary folder
    step, tree, _ = ckpt.restore(_abstract())
    assert step == 1
    _same(tree, _tree(1))
    text = "\n".join(messages)
    assert "step 3" in text and "no integrity manifest" in text
    assert "step 2" in text and "does not match its checksum" in text
    assert ckpt.discard_after(1, tmp_path / "bad") == [2, 3]
    ckpt.save(2, _tree(5))  # the step number is free again
    assert ckpt.restore(_abstract())[0] == 2
    ckpt.close()


def test_nothing_usable_is_an_error(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", log=lambda m: None)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        ckpt.restore(_abstract())
    ckpt.save(7, _tree(7))
    (tmp_path / "ck" / "7" / "integrity.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*tried steps 7"):
        ckpt.restore(_abstract())
    ckpt.close()
