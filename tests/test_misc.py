import pytest
import torch
import torch.nn as nn

import lnbn_utils as lu


def test_saved_tensor_bytes_matches_checked_facts():
    x = torch.randn(8, 64, 128, requires_grad=True)
    assert lu.saved_tensor_bytes(nn.LayerNorm(128), x) == 267_264
    # nn.BatchNorm1d wants channels second: (B, T, C) -> (B, C, T)
    assert lu.saved_tensor_bytes(nn.BatchNorm1d(128), x.transpose(1, 2)) == 264_704
    assert lu.saved_tensor_bytes(lu.TokenBatchNorm(128), x) == 264_704
    assert (
        lu.saved_tensor_bytes(nn.RMSNorm(128), x) == 526_848
    )  # unfused on CPU (torch 2.13): ~2x the input


def test_saved_tensor_bytes_counts_a_storage_once():
    x = torch.randn(100, requires_grad=True)
    assert (
        lu.saved_tensor_bytes(lambda t: (t * t).sum(), x) == 400
    )  # x saved twice, counted once
    assert lu.saved_tensor_bytes(lambda t: t + 1, x) == 0
    with pytest.raises(ValueError, match="callable"):
        lu.saved_tensor_bytes(3, x)


def test_device_and_style():
    assert lu.get_device().type in ("cpu", "cuda")
    lu.set_style()
    import matplotlib as mpl

    assert mpl.rcParams["figure.facecolor"] == "white"


def test_glue_returns_none_and_validates_name():
    assert lu.glue("ok_name", 3.0) is None  # a cell ending in glue prints nothing
    with pytest.raises(ValueError, match="identifier"):
        lu.glue("not a name", 1)
