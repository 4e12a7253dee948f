"""torchvision's ViT-B/16 and Swin-T pruned end to end from the command line at their smallest
input (32 x 32: ViT through ``--model-arg image_size=32``), on a few random images of a data
factory: train one minibatch, prune (heads of one ViT block, MLP units of every Swin block), the
pruned checkpoint rebuilds at its new size and runs. About a minute each on two shared cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmprune.models.torchvision_models import torchvision_installed
from fmprune.run.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torchvision_installed(), reason="torchvision not installed")]

DATA = '''
import torch
from torch.utils.data import TensorDataset

def tiny():
    g = torch.Generator().manual_seed(0)
    make = lambda n: TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % 10)
    return make(32), make(16), make(16)
'''


def fmprune(*args, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "fmprune", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("name, model_args, scope, group", [
    ("vit_b_16", ["--model-arg", "image_size=32"], "net.encoder.layers.encoder_layer_3.self_attention",
     "net.encoder.layers.encoder_layer_3.self_attention"),
    ("swin_t", [], "all", "net.features.7.1.mlp.0"),
])
def test_prune_a_torchvision_transformer_from_the_cli(tmp_path, name, model_args, scope, group):
    (tmp_path / "tiny_data.py").write_text(DATA)
    data = ["--data", "tiny_data.py:tiny"]
    fmprune("train", "--model", f"torchvision:{name}", *model_args, *data, "--max-iters", 1, "--batch-size", 8,
            "--out", "base.pt", "--quiet", cwd=tmp_path)
    out = fmprune("prune", "--checkpoint", "base.pt", *data, "--criterion", "l1_filter", "--scope", scope,
                  "--maps-per-step", 0.1 if scope == "all" else 1, "--steps", 2, "--calibration", 16,
                  "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert "2 steps" in out and "MACs" in out
    pruned = load_checkpoint(tmp_path / "run" / "model.pt")
    assert group in pruned.alive
    model = pruned.build()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    if name == "vit_b_16":   # two heads of twelve gone, the module runs with ten
        assert len(pruned.alive[group]) == 10
        assert model.net.encoder.layers[3].self_attention.num_heads == 10
