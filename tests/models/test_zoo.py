"""The model zoo, model specs and every way of naming a model (zoo, torchvision, file, module)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch import nn

from fmprune.errors import FmpruneError
from fmprune.models import (LeNet, ModelRequest, ModelSpec, Normalize, available_models, build_model,
                            check_output, create_model, default_input_shape, parse_input_shape,
                            parse_model_args)
from fmprune.models import torchvision_models
from fmprune.models.mobilenetv2 import CIFAR_SETTINGS, make_divisible
from fmprune.models.vgg import CONFIGS
from support.user_model import USER_MODEL

params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
bn = lambda c: 2 * c  # noqa: E731  - BatchNorm's weight and bias


def cifar_resnet_formula(depth: int, shortcut: str, classes: int = 10) -> int:
    """Parameters of He et al.'s CIFAR ResNet counted from the paper's description."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + bn(16)
    c_in = 16
    for c in (16, 32, 64):
        for i in range(n):
            total += c_in * c * 9 + bn(c) + c * c * 9 + bn(c)
            if c_in != c and shortcut == "B":
                total += c_in * c + bn(c)
            c_in = c
    return total + 64 * classes + classes


def resnet18_formula(classes: int = 10) -> int:
    total, c_in = 3 * 64 * 9 + bn(64), 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for i in range(2):
            total += c_in * c * 9 + bn(c) + c * c * 9 + bn(c)
            if c_in != c:
                total += c_in * c + bn(c)
            c_in = c
    return total + 512 * classes + classes


def vgg_formula(config: str, classes: int = 10) -> int:
    total, c_in = 0, 3
    for item in CONFIGS[config]:
        if item != "M":
            total += c_in * item * 9 + bn(item)
            c_in = item
    return total + c_in * classes + classes


def mobilenetv2_formula(classes: int = 10) -> int:
    total, c_in = 3 * 32 * 9 + bn(32), 32
    for t, c, n, _ in CIFAR_SETTINGS:
        for _ in range(n):
            hidden = c_in * t
            if t != 1:
                total += c_in * hidden + bn(hidden)
            total += hidden * 9 + bn(hidden) + hidden * c + bn(c)
            c_in = c
    return total + c_in * 1280 + bn(1280) + 1280 * classes + classes


@pytest.mark.parametrize("name, expected", [
    ("lenet", 3_274_634),
    ("fc", 784 * 1000 + 1000 * 1000 + 1000 * 500 + 500 * 200 + 200 * 10),
    ("resnet20", 272_474),
    ("resnet56", 855_770),
    ("resnet18", 11_173_962),
    ("vgg11_bn", vgg_formula("vgg11")),
    ("vgg16_bn", vgg_formula("vgg16")),
    ("mobilenetv2", mobilenetv2_formula()),
])
def test_zoo_parameter_counts_are_exact(name, expected):
    assert params(create_model(name)) == expected


def test_published_counts_agree_with_the_formulas():
    assert cifar_resnet_formula(20, "B") == 272_474 and cifar_resnet_formula(56, "B") == 855_770
    assert cifar_resnet_formula(20, "A") == 269_722 and cifar_resnet_formula(56, "A") == 853_018
    assert resnet18_formula() == 11_173_962
    assert make_divisible(32 * 0.5) == 16 and make_divisible(1280 * 1.0) == 1280


@pytest.mark.parametrize("depth, shortcut, classes", [(20, "A", 10), (56, "A", 100), (20, "B", 100), (32, "B", 7)])
def test_cifar_resnet_shortcut_options_and_depths(depth, shortcut, classes):
    spec = ModelSpec(f"resnet{depth}" if depth in (20, 56) else "resnet20", {"shortcut": shortcut}, classes, (3, 32, 32))
    if depth not in (20, 56):
        from fmprune.models import CifarResNet
        model = CifarResNet(classes, 3, depth=depth, shortcut=shortcut)
    else:
        model = build_model(spec)
    assert params(model) == cifar_resnet_formula(depth, shortcut, classes)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, classes)


@pytest.mark.parametrize("name", sorted(set(available_models())))
def test_every_zoo_model_runs_at_its_input_and_at_other_class_counts(name):
    shape = default_input_shape(name)
    for classes in (10, 100):
        spec = ModelSpec(name, {}, classes, shape)
        model = build_model(spec).eval()
        check_output(model, spec)
        assert model(torch.zeros(3, *shape)).shape == (3, classes)


def test_models_take_other_input_channels_and_sizes():
    assert build_model(ModelSpec("resnet20", {}, 10, (1, 28, 28)))(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    lenet = build_model(ModelSpec("lenet", {}, 10, (3, 32, 32)))
    assert lenet.conv1.in_channels == 3 and lenet.fc1.in_features == 64 * 8 * 8
    mlp = build_model(ModelSpec("fc", {"hidden": (30, 20), "bias": True}, 5, (3, 32, 32)))
    assert params(mlp) == 3072 * 30 + 30 + 30 * 20 + 20 + 20 * 5 + 5
    assert [n for n, _ in mlp.named_children()] == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]
    assert all(m.bias is None for m in create_model("fc").modules() if isinstance(m, nn.Linear))


def test_lenet_keeps_its_architecture_names_and_keywords():
    model = LeNet(widths=(3, 4, 8))
    assert [n for n, _ in model.named_parameters()] == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert model.fc1.in_features == 4 * 7 * 7
    torch.manual_seed(0)
    a = create_model("lenet", (1, 28, 28), 10).state_dict()
    torch.manual_seed(0)
    b = LeNet(num_classes=10, in_channels=1, input_size=28).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_zoo_arguments_fail_in_one_line():
    with pytest.raises(FmpruneError, match="unknown model 'vgg99'"):
        create_model("vgg99")
    with pytest.raises(FmpruneError, match="resnet20 cannot be built: .*unknown shortcut 'C'"):
        build_model(ModelSpec("resnet20", {"shortcut": "C"}, 10, (3, 32, 32)))
    with pytest.raises(FmpruneError, match="resnet20 cannot be built: TypeError: .*unexpected keyword argument 'colour'"):
        build_model(ModelSpec("resnet20", {"colour": "red"}, 10, (3, 32, 32)))
    with pytest.raises(FmpruneError, match="give num_classes through --num-classes"):
        build_model(ModelSpec("resnet20", {"num_classes": 3}, 10, (3, 32, 32)))
    with pytest.raises(FmpruneError, match="does not accept input 1x8x8"):
        spec = ModelSpec("lenet", {}, 10, (1, 8, 8))
        check_output(build_model(ModelSpec("lenet")), spec)


# ---------------------------------------------------------------------------- specs
def test_spec_round_trips_through_a_weights_only_file():
    spec = ModelSpec("fc", {"hidden": (30, 20), "bias": True, "tag": "x", "scale": 0.5, "none": None}, 7,
                     (1, 28, 28)).with_normalization([0.1], [0.3])
    d = spec.to_dict()
    buf = io.BytesIO()
    torch.save({"model_spec": d}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["model_spec"]
    assert loaded == d and d["in_channels"] == 1 and d["kwargs"]["hidden"] == [30, 20]
    back = ModelSpec.from_dict(loaded)
    assert back == spec and back.kwargs["hidden"] == (30, 20)
    with pytest.raises(FmpruneError, match="malformed model spec"):
        ModelSpec.from_dict({"name": "lenet"})
    with pytest.raises(FmpruneError, match="in_channels 3 but input shape"):
        ModelSpec.from_dict({**d, "in_channels": 3})
    with pytest.raises(FmpruneError, match="cannot be stored"):
        ModelSpec("fc", {"hidden": object()})


def test_model_args_and_input_shapes_parse_to_plain_values():
    args = parse_model_args(["depth=20", "lr=0.5", "bias=true", "pre=False", "hidden=1000,500", "one=(7,)",
                             "empty=()", "name=wide", "nothing=none", "dims=[1, 2]"])
    assert args == {"depth": 20, "lr": 0.5, "bias": True, "pre": False, "hidden": (1000, 500), "one": (7,),
                    "empty": (), "name": "wide", "nothing": None, "dims": (1, 2)}
    for bad in (["noequals"], ["1x=3"], ["a=1", "a=2"]):
        with pytest.raises(FmpruneError, match="--model-arg"):
            parse_model_args(bad)
    assert parse_input_shape("3,32,32") == (3, 32, 32) == parse_input_shape("3x32x32")
    for bad in ("3,32", "a,b,c", "0,32,32"):
        with pytest.raises(FmpruneError, match="--input-shape"):
            parse_input_shape(bad)


def test_requests_take_shape_and_classes_from_flags_then_data_then_zoo():
    assert ModelRequest("resnet20").spec().input_shape == (3, 32, 32)
    assert ModelRequest("resnet20").spec((1, 28, 28), 100) == ModelSpec("resnet20", {}, 100, (1, 28, 28))
    assert ModelRequest("resnet20", num_classes=12).spec((3, 32, 32), 10).num_classes == 12
    with pytest.raises(FmpruneError, match="does not match the data"):
        ModelRequest("resnet20", input_shape=(3, 64, 64)).spec((3, 32, 32), 10)
    with pytest.raises(FmpruneError, match="fewer than the data's 10 classes"):
        ModelRequest("resnet20", num_classes=5).spec((3, 32, 32), 10)
    with pytest.raises(FmpruneError, match="no default input shape: give --input-shape"):
        ModelRequest("mypkg.nets:build").spec()


def test_normalisation_is_the_models_first_layer():
    torch.manual_seed(0)
    spec = ModelSpec("resnet20", {}, 10, (3, 32, 32)).with_normalization([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    model = build_model(spec).eval()
    assert isinstance(next(iter(model.children())), Normalize)
    assert "normalize.mean" in model.state_dict() and "net.conv1.weight" in model.state_dict()
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), model.net((x - mean) / std), atol=1e-6)
    with pytest.raises(FmpruneError, match="std must be positive"):
        build_model(ModelSpec("lenet", normalize={"mean": [0.0], "std": [0.0]}))


# ---------------------------------------------------------------------------- user factories
@pytest.fixture
def user_model(tmp_path):
    path = tmp_path / "mymodel.py"
    path.write_text(USER_MODEL)
    return path


def test_file_and_module_factories_build_with_arguments(user_model, monkeypatch):
    model = build_model(ModelSpec(f"{user_model}:build", {"width": 6}, 5, (1, 16, 16)))
    assert model.conv.in_channels == 1 and model.conv.out_channels == 6 and model.fc.out_features == 5
    monkeypatch.syspath_prepend(str(user_model.parent))
    try:
        model = build_model(ModelSpec("mymodel:build", {}, 3, (3, 8, 8)))
    finally:
        sys.modules.pop("mymodel", None)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    # a factory that names neither num_classes nor in_channels is called without them
    spec = ModelSpec(f"{user_model}:ten_classes_always", {}, 4, (3, 8, 8))
    with pytest.raises(FmpruneError, match=r"outputs \(2, 10\) .* expected \(2, 4\)"):
        check_output(build_model(spec), spec)


@pytest.mark.parametrize("name, message", [
    ("{dir}/absent.py:build", "absent.py: missing file"),
    ("{file}:nothere", "has no factory 'nothere' (callables defined there: Tiny, broken, build, not_a_model, "
                       "ten_classes_always)"),
    ("{file}:broken", "cannot be built: ValueError: no such width"),
    ("{file}:not_a_model", "returned int, not a torch.nn.Module"),
    ("no_such_pkg.nets:build", "model module no_such_pkg.nets: no module named 'no_such_pkg'"),
    ("{dir}/syntax.py:build", "cannot be imported: SyntaxError"),
])
def test_models_that_cannot_be_built_say_why_in_one_line(user_model, name, message):
    (user_model.parent / "syntax.py").write_text("def build(:\n")
    with pytest.raises(FmpruneError) as e:
        build_model(ModelSpec(name.format(dir=user_model.parent, file=user_model), {}, 10, (3, 8, 8)))
    assert message in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------- torchvision
def _torchvision_usable() -> str | None:
    try:
        torchvision_models.import_torchvision()
    except FmpruneError as e:
        return str(e)
    return None


@pytest.mark.skipif(_torchvision_usable() is not None, reason=f"torchvision unusable: {_torchvision_usable()}")
@pytest.mark.parametrize("name, expected_params", [
    ("resnet18", 11_181_642), ("vgg11_bn", 128_812_810), ("mobilenet_v2", 2_236_682), ("densenet121", 6_964_106)])
def test_torchvision_classifiers_build_with_random_weights(name, expected_params):
    spec = ModelSpec(f"torchvision:{name}", {}, 10, (3, 32, 32))
    model = build_model(spec)
    assert params(model) == expected_params
    check_output(model, spec)


@pytest.mark.skipif(_torchvision_usable() is not None, reason=f"torchvision unusable: {_torchvision_usable()}")
def test_torchvision_errors_and_listing():
    assert {"resnet18", "densenet121", "mobilenet_v2"} <= set(torchvision_models.torchvision_classifiers())
    assert "fasterrcnn_resnet50_fpn" not in torchvision_models.torchvision_classifiers()
    with pytest.raises(FmpruneError, match="no classification model 'resnet7'"):
        build_model(ModelSpec("torchvision:resnet7", {}, 10, (3, 32, 32)))
    with pytest.raises(FmpruneError, match="takes 3 input channels, the input has 1"):
        build_model(ModelSpec("torchvision:resnet18", {}, 10, (1, 28, 28)))
    with pytest.raises(FmpruneError, match="cannot be downloaded"):
        build_model(ModelSpec("torchvision:resnet18", {"weights": "DEFAULT"}, 10, (3, 32, 32)))
    assert default_input_shape("torchvision:resnet18") == (3, 224, 224)


def test_missing_torchvision_says_what_to_install(monkeypatch):
    monkeypatch.setattr(torchvision_models, "torchvision_installed", lambda: False)
    with pytest.raises(FmpruneError, match=r"torchvision is not installed: pip install 'fmprune\[torchvision\]'"):
        build_model(ModelSpec("torchvision:resnet18", {}, 10, (3, 32, 32)))


# ---------------------------------------------------------------------------- command line
def test_models_command_lists_the_zoo_and_builds_user_models(user_model, monkeypatch):
    from click.testing import CliRunner
    from fmprune.cli import cli

    run = lambda *args: CliRunner().invoke(cli, ["models", *map(str, args)], catch_exceptions=False)  # noqa: E731
    out = run().output
    for name in available_models():
        assert name in out
    assert "272,474" in out and "11,173,962" in out
    out = run("--model", f"{user_model}:build", "--input-shape", "3,16,16", "--model-arg", "width=5",
              "--num-classes", "4").output
    assert "3x16x16" in out and "(1, 4)" in out and f"{3 * 5 * 9 + 5 + 5 * 4 + 4:,}" in out
    monkeypatch.chdir(user_model.parent)           # package.module:factory imports from the current directory
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(user_model.parent))])
    try:
        assert "(1, 10)" in run("--model", "mymodel:build", "--input-shape", "3,8,8").output
    finally:
        sys.modules.pop("mymodel", None)
    # the real entry point: a model that cannot be built is one line on stderr, exit status 2
    proc = subprocess.run([sys.executable, "-m", "fmprune", "models", "--model", f"{user_model}:broken",
                           "--input-shape", "3,8,8"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"fmprune: error: {user_model}:broken cannot be built: ValueError: no such width"]
