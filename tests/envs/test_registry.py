import pytest

import envs


def test_registered_contains_matrix_games():
    names = envs.registered()
    for game in [
        "stag_hunt",
        "prisoners_dilemma",
        "chicken",
        "battle_of_the_sexes",
        "matching_pennies",
        "rock_paper_scissors",
        "high_risk",
        "intersection",
    ]:
        assert f"matrix/{game}" in names
    assert names == sorted(names)


def test_unknown_env_lists_known_ones():
    with pytest.raises(envs.UnknownEnvError) as err:
        envs.make("matrix/stag_hnt")
    msg = str(err.value)
    assert "matrix/stag_hnt" in msg and "matrix/stag_hunt" in msg and "matrix/chicken" in msg


def test_overrides_go_to_params_and_bad_ones_are_named():
    env, params = envs.make("matrix/stag_hunt", max_steps=7, reward_noise=0.5)
    assert params.max_steps == 7 and params.reward_noise == 0.5
    with pytest.raises(ValueError, match="no setting 'max_step'.*allowed settings"):
        envs.make("matrix/stag_hunt", max_step=7)
    with pytest.raises(ValueError, match="'reward_noise' must be a float"):
        envs.make("matrix/stag_hunt", reward_noise="lots")
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        envs.make("matrix/stag_hunt", max_steps=0)


def test_bad_registrations():
    with pytest.raises(ValueError, match="non-empty string"):
        envs.register("", lambda: None)
    with pytest.raises(TypeError, match="must be callable"):
        envs.register("test/not_callable", 3)
