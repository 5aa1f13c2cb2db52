"""lnbn_utils.parallel_experiment: a real 2-process gloo run against one process."""

import pytest

import lnbn_utils as lu

C = 6


def test_run_data_parallel_rejects_bad_arguments():
    with pytest.raises(ValueError, match="expected norms"):
        lu.run_data_parallel(("group",))
    with pytest.raises(ValueError, match="world_size"):
        lu.run_data_parallel(world_size=2, batch_size=7)
    with pytest.raises(ValueError, match="warmup"):
        lu.run_data_parallel(steps=2, warmup=2)


def test_two_gloo_processes_sync_bn_matches_one_process_and_per_device_bn_does_not():
    res = lu.run_data_parallel(
        ("batch", "sync_batch", "layer"),
        world_size=2,
        steps=3,
        warmup=1,
        batch_size=4,
        seq_len=6,
        n_embd=C,
        seed=0,
        latency_reps=3,
    )
    local, sync, ln = res["batch"], res["sync_batch"], res["layer"]
    assert [r["rank"] for r in sync["per_rank"]] == [0, 1]
    # far above float noise (1e-7); small since GPT-2 init (weights N(0, 0.02))
    assert local["max_abs_diff_shard_mean"] > 1e-4
    assert local["max_abs_err_output"] > 1e-3 and local["max_abs_err_grad"] > 1e-5
    for r in (sync, ln):
        assert r["max_abs_err_output"] < 1e-5 and r["max_abs_err_grad"] < 1e-5, r
    assert sync["norm_calls_per_layer_per_step"] == 2.0
    # (W, 2C + 1) float32 numbers exchanged, forward and backward
    assert sync["norm_bytes_per_layer_per_step"] == 2 * 2 * (2 * C + 1) * 4
    assert ln["norm_calls_per_layer_per_step"] == 0.0
    assert local["norm_calls_per_layer_per_step"] == 0.0
    grad_bytes = {r["bytes_per_step"]["grad"] for r in (local, sync, ln)}
    assert len(grad_bytes) == 1 and sync["calls_per_step"]["grad"] == 1.0  # one bucket
    assert len(sync["step_s"]) == 2 and all(s > 0 for s in sync["step_s"])
    assert len(res["allreduce_s"]) == 3 and min(res["allreduce_s"]) > 0
