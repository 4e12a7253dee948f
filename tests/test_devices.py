"""Device selection: cpu works and is recorded; anything unusable is one clear error."""

import json

import pytest
import torch

from fmprune.devices import resolve_device, rng_state, set_rng_state
from fmprune.errors import FmpruneError
from fmprune.run.loop import PruneConfig, run_pruning
from support.entry_point import assert_user_error, fmprune

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_cpu_is_the_default():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, fragment", [("banana", "unknown device"), ("meta", "unsupported device")])
def test_bad_device_names(name, fragment):
    with pytest.raises(FmpruneError, match=fragment):
        resolve_device(name)


@no_cuda
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(FmpruneError, match="sees no CUDA GPU"):
        resolve_device("cuda")


@no_cuda
def test_cli_refuses_cuda_before_reading_data(tmp_path):
    proc = fmprune("prune", "--device", "cuda", "--data-dir", tmp_path / "missing", check=False)
    assert_user_error(proc, "no CUDA GPU")
    proc = fmprune("sweep", "experiments/01-per-layer-no-retrain.toml", "--device", "banana", check=False)
    assert_user_error(proc, "unknown device")


def test_rng_state_round_trip_and_old_resume_states():
    state = rng_state(torch.device("cpu"))
    first = torch.rand(3)
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), first)
    set_rng_state(state["cpu"], torch.device("cpu"))   # the bare tensor older states hold
    assert torch.equal(torch.rand(3), first)


def test_a_run_records_where_it_ran(small_ckpt, splits, tmp_path):
    config = PruneConfig(criterion="min_weight", normalize="none", scope="conv2", steps=2, eval_size=200)
    run_pruning(small_ckpt, splits, config, tmp_path / "run", device="cpu")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cpu"
