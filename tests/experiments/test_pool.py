"""experiments.pool: several compare runs (master seeds) pooled, every run reported."""

import json

import numpy as np
import pytest

from experiments import pool


def _run(tmp_path, name, seed, rae, nash, spec_name="g"):
    folder = tmp_path / name
    folder.mkdir()
    per_seed = {
        "rae": [{"heldout/event/crashed/player_0": x, "heldout/event/crashed/player_1": 2 * x}
                for x in rae],
        "nash": [{"heldout/event/crashed/player_0": x, "heldout/event/crashed/player_1": 2 * x}
                 for x in nash],
    }  # fmt: skip
    data = {"spec": {"name": spec_name, "seed": seed}, "seeds": len(rae),
            "variants": ["rae", "nash"], "per_seed": per_seed}  # fmt: skip
    (folder / "compare.json").write_text(json.dumps(data))
    return folder


def test_pool_reports_every_run_and_the_pooled_seeds(tmp_path):
    a = _run(tmp_path, "a", 0, [0.0, 0.1], [0.2, 0.3])
    b = _run(tmp_path, "b", 100, [0.4, 0.0], [0.1, 0.5])
    rep = pool.pool([a, b], ["heldout/event/crashed"], ("rae", "nash"))
    assert [e["seed"] for e in rep["runs"]] == [0, 100]
    assert rep["runs"][1]["seeds"] == [100, 101]
    assert rep["runs"][0]["pair"]["heldout/event/crashed"] == 2  # 0 < .2, .1 < .3
    assert rep["runs"][1]["pair"]["heldout/event/crashed"] == 1  # .4 > .1, 0 < .5
    pooled = rep["pair_pooled"]["heldout/event/crashed"]
    assert (pooled["a_below_b"], pooled["seeds"]) == (3, 4)
    assert pooled["nash/rae"]["ratio"] == pytest.approx(1.1 / 0.5)
    lo, hi = pooled["nash/rae"]["ci95"]
    assert lo <= pooled["nash/rae"]["ratio"] <= hi
    assert rep["pooled"]["rae"]["heldout/event/crashed"][0] == pytest.approx(0.125)
    every = pool.pool([a, b], ["heldout/event/crashed"], ("rae", "nash"), agents="all")
    assert every["pooled"]["rae"]["heldout/event/crashed"][0] == pytest.approx(0.1875)
    text = pool.markdown(rep)
    assert "| 100 (seeds 100-101) | rae |" in text and "3/4" in text


def test_pool_bad_inputs_name_what_is_wrong(tmp_path):
    a = _run(tmp_path, "a", 0, [0.0, 0.1], [0.2, 0.3])
    other = _run(tmp_path, "o", 1, [0.0], [0.1], spec_name="h")
    with pytest.raises(pool.PoolError, match="different specs"):
        pool.pool([a, other], ["heldout/event/crashed"])
    with pytest.raises(pool.PoolError, match="'return_var' is not in run"):
        pool.pool([a], ["return_var"])
    with pytest.raises(pool.PoolError, match="no compare.json"):
        pool.pool([tmp_path], ["return_var"])
    with pytest.raises(pool.PoolError, match="--pair rae,x"):
        pool.pool([a], ["heldout/event/crashed"], ("rae", "x"))
    out = tmp_path / "r.md"
    pool.main(
        [str(a), "--metrics", "heldout/event/crashed", "--pair", "rae,nash", "--out", str(out)]
    )
    assert (
        out.read_text().startswith("Every run pooled")
        and json.loads(out.with_suffix(".json").read_text())["total_seeds"] == 2
    )
    assert np.isfinite(
        json.loads(out.with_suffix(".json").read_text())["pooled"]["rae"]["heldout/event/crashed"][
            0
        ]
    )
