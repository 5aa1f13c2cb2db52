"""lnbn_utils.repro: the base seed and seeding."""

import pytest
import torch

import lnbn_utils as lu


def test_seeds(monkeypatch):
    monkeypatch.delenv("LNBN_SEED", raising=False)
    assert lu.base_seed() == 0
    monkeypatch.setenv("LNBN_SEED", "7")
    assert lu.base_seed() == 7
    monkeypatch.setenv("LNBN_SEED", "seven")
    with pytest.raises(ValueError, match="LNBN_SEED to be an integer, got 'seven'"):
        lu.base_seed()
    g1, g2 = lu.seed_everything(3), lu.seed_everything(3)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    with pytest.raises(ValueError, match="int seed"):
        lu.seed_everything(1.5)


@pytest.mark.parametrize("seed", [True, "3", None])
def test_seed_everything_refuses_non_ints(seed):
    with pytest.raises(ValueError, match="int seed"):
        lu.seed_everything(seed)
