"""Readable names for runs shown together (figure legends, report tables): criteria as the
Molchanov et al. paper and the thesis name them ("Taylor + L2"), other settings in words, and only
the settings that differ between those runs, so a legend says what the comparison is about."""

from __future__ import annotations

from typing import Any

CRITERIA = {"taylor": "Taylor", "min_weight": "Minimum weight", "mean_activation": "Mean activation",
            "random": "Random", "oracle": "Oracle", "oracle_abs": "Oracle-abs", "apoz": "APoZ",
            "activation_std": "Activation S.d.", "obd": "OBD", "weight_grad": "Weight gradient",
            "taylor_bn": "Taylor BN", "obd_hutchinson": "OBD (Hutchinson)"}
NORMALISATIONS = {"none": "", "l1": "L1", "l2": "L2", "rms": "RMS", "mean": "mean", "lamp": "LAMP"}
METHOD_KEYS = ("criterion", "normalize")   # named together: "Taylor + L2"
# recorded in config.json but not a setting a legend should name (the panel shows the scope)
NOT_SETTINGS = {"scope", "base_checkpoint", "base_checkpoint_sha256", "data_fingerprint", "fmprune_version",
                "torch_version", "device", "save_every"}


def criterion_name(criterion: str, normalize: str = "none") -> str:
    """"Taylor + L2", "Random", or a registered criterion's name made readable."""
    name = CRITERIA.get(criterion, criterion.replace("_", " ").capitalize())
    norm = NORMALISATIONS.get(normalize, normalize.upper())
    return f"{name} + {norm}" if norm else name


def setting_phrase(key: str, value: Any) -> str:
    """One setting in words; booleans that are off give "" (left out unless needed to tell runs apart)."""
    if key == "flops_lambda":
        return f"FLOPs λ = {value:g}" if value else "no FLOPs term"
    if key == "retrain":
        return f"retraining {value} it./step" if value else "no retraining"
    if key == "maps_per_step":
        if value < 1:
            return f"{value:.0%} of maps per step"
        return f"{int(value)} map{'s' if value != 1 else ''} per step"
    if key == "retrain_only_pruned_layer":
        return "pruned layer only retrained" if value else ""
    if key == "rank_once":
        return "ranked once" if value else ""
    if key == "min_accuracy" and value is not None:
        return f"floor {value:.1%}"
    return f"{key.replace('_', ' ')} {value}"


def _off_phrase(key: str) -> str:
    return {"retrain_only_pruned_layer": "whole network retrained", "rank_once": "re-ranked every step"}.get(key, "")


def _differing(configs: list[dict]) -> list[str]:
    keys = dict.fromkeys(k for c in configs for k in c if k not in NOT_SETTINGS)
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def varying_keys(configs: list[dict]) -> list[str]:
    """The settings whose values differ between ``configs`` (the criterion and normalisation as one)."""
    varying = _differing(configs)
    if any(k in varying for k in METHOD_KEYS):
        varying = ["method"] + [k for k in varying if k not in METHOD_KEYS]
    return varying


def _phrases(config: dict, keys: list[str], with_off: bool) -> list[str]:
    out = []
    for key in keys:
        if key == "method":
            out.append(criterion_name(str(config.get("criterion", "")), str(config.get("normalize", "none"))))
            continue
        phrase = setting_phrase(key, config.get(key))
        out.append(phrase or (_off_phrase(key) if with_off else ""))
    return [p for p in out if p]


def run_names(configs: list[dict], fallbacks: list[str]) -> list[str]:
    """A short, distinct name per run; ``fallbacks`` (e.g. directory names) where settings alone
    cannot tell runs apart. A single run is named by its method."""
    keys = varying_keys(configs) or (["method"] if all("criterion" in c for c in configs) else [])
    for with_off in (False, True):
        names = [", ".join(_phrases(c, keys, with_off)) for c in configs]
        if all(names) and len(set(names)) == len(names):
            return names
    return [f"{n} ({f})" if n else f for n, f in zip(names, fallbacks)]


def style_keys(configs: list[dict]) -> list[str]:
    """"head, tail" per run for :func:`fmprune.study.report.line_styles`: colour by the criterion
    (or the first differing setting), line style by the other differing settings."""
    differing = _differing(configs)
    if not differing:
        return ["" for _ in configs]
    head = "criterion" if "criterion" in differing else differing[0]
    rest = [k for k in differing if k != head]
    return [f"{c.get(head)}, {'/'.join(repr(c.get(k)) for k in rest)}" for c in configs]
