"""``fmprune sweep``, ``report``, ``tune`` and ``rank-quality``: many runs and what they show."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import DataRequest
from ..devices import resolve_device
from ..errors import FmpruneError
from ..progress import progress, write_line
from ..run.base_model import file_checkpoint, file_checkpoint_shape
from ..run.checkpoint import load_checkpoint, load_checkpoint_for
from ..run.tensorboard import require_tensorboard
from ..study import rank_quality
from ..study.experiments import load_experiment
from ..study.methods import METHODS
from ..study.ray_runner import check_device, require_ray, run_sweep_ray
from ..study.report import write_report
from ..study.sweep import RunOutcome, run_sweep
from ..study.tune import (TrialContext, best_trial_text, default_storage, objective_text, require_optuna, run_tune,
                          trial_text, write_study_report)
from ..study.tune_spec import load_tune_file
from . import options


@click.command("sweep")
@click.argument("experiment_file", type=click.Path(path_type=Path))
@options.out_dir("Runs go to OUT_DIR/<experiment name>/<run label>/.", default=Path("runs"))
@click.option("--workers", type=int, default=None, help="Parallel runs (default: as many as CPU cores).")
@click.option("--quick", is_flag=True,
              help="Shrink every run (few steps, small evaluation set) into OUT_DIR/<name>-quick/, e.g. for CI; "
                   "not the experiment's results (default: full-size runs).")
@options.FILE_CHECKPOINT
@options.ray("Run every run as a Ray task: alone, on a local Ray started for the sweep; 'auto' or "
                   "ray://HOST:PORT for a cluster whose nodes share the output, checkpoint and data paths; "
                   "per-run CPUs/GPUs from the file's [resources] (default: local worker processes, no Ray).")
@options.tensorboard("Also write TensorBoard event files of every pruning run (accuracy, params, MACs per "
                   "step) to DIR/<experiment name>/<run label>/, as the runs go (default: none).")
@options.DEVICE
@options.DATA_DIR
def sweep_cmd(experiment_file: Path, out_dir: Path, workers: int | None, quick: bool,
              checkpoint: Path | None, ray_address: str | None, tensorboard_dir: Path | None,
              device: str, data: DataRequest) -> None:
    """Run every combination of an experiment file; rerun to resume (finished runs are skipped)."""
    resolve_device(device)
    experiment = load_experiment(experiment_file, quick)
    if tensorboard_dir is not None:
        require_tensorboard()   # before any run starts
        if METHODS[experiment.kind].step_hook is None:   # no per-step records to log
            raise FmpruneError(f"--tensorboard logs pruning runs; {experiment_file} is a {experiment.kind!r} "
                               "experiment (its runs write steps.csv and the report's figures instead)")
    if ray_address is not None:   # before the data load: a missing Ray or a bad device fails at once
        require_ray()
        check_device(device, experiment.resources)
    request = data.at(file_checkpoint_shape(experiment_file, experiment.checkpoint, checkpoint))
    splits = request.load()
    ckpt_path = file_checkpoint(experiment_file, experiment.checkpoint, checkpoint, splits, experiment.train, quick)
    runs = len(experiment.runs) + bool(experiment.then and experiment.then_base)   # steps on the base model
    click.echo(f"{experiment.title}: {runs} runs -> {out_dir / experiment.name}")
    if experiment.quick:
        click.echo(f"warning: {experiment.quick_warning}; the runs are shrunk to check that they work")
    with progress(total=runs, desc="sweep", unit="run") as bar:
        def on_outcome(o: RunOutcome) -> None:
            bar.update(1)
            write_line(f"{o.status:<8}{o.label}: {o.message}" + (f" ({o.seconds:.0f} s)" if o.seconds else ""))
        if ray_address is not None:
            outcomes = run_sweep_ray(experiment, str(ckpt_path), out_dir, request,
                                     ray_address, workers, quick, on_outcome, device, tensorboard_dir)
        else:
            outcomes = run_sweep(experiment, str(ckpt_path), out_dir, request,
                                 workers, quick, on_outcome, device, tensorboard_dir)
    failed = [o for o in outcomes if o.status == "failed"]
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished; report: "
               f"fmprune report {out_dir / experiment.name}")
    if failed:
        raise FmpruneError(f"{len(failed)} run(s) failed: {', '.join(o.label for o in failed)}")


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@options.out_dir("Where report.md and figures/ go.", default=Path("report"))
def report_cmd(run_dirs: tuple[Path, ...], out_dir: Path) -> None:
    """Figures (PNG, SVG) and report.md from run directories (runs, experiments, or sweep roots)."""
    report = write_report(list(run_dirs), out_dir)
    click.echo(f"report: {report}")


@click.command("tune")
@click.argument("tune_file", type=click.Path(path_type=Path))
@options.out_dir("Trials go to OUT_DIR/<study name>/trials/trial-NNNN/ (normal run directories), the report to "
                 "OUT_DIR/<study name>/report/.", default=Path("runs"))
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage of the study; rerun with the same one to resume a killed search "
                   "(default: sqlite:///OUT_DIR/<study name>/study.db).")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Finished (complete or pruned) trials wanted (default: the file's study.trials).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials in parallel: local processes, or Ray tasks with --ray.")
@options.ray("Run the parallel trials as Ray tasks: alone, on a local Ray; 'auto' or ray://HOST:PORT for "
                   "a cluster sharing the output, storage, checkpoint and data paths (default: no Ray).")
@options.FILE_CHECKPOINT
@options.DEVICE
@options.DATA_DIR
def tune_cmd(tune_file: Path, out_dir: Path, storage: str | None, trials: int | None, workers: int,
             ray_address: str | None, checkpoint: Path | None, device: str, data: DataRequest) -> None:
    """Search a pruning recipe with Optuna: the file names the parameters, ranges and objective."""
    require_optuna()
    resolve_device(device)
    spec = load_tune_file(tune_file)
    if ray_address is not None:
        require_ray()
        check_device(device, spec.resources)
    request = data.at(file_checkpoint_shape(tune_file, spec.checkpoint, checkpoint))
    splits = request.load()
    ckpt_path = file_checkpoint(tune_file, spec.checkpoint, checkpoint, splits)
    directory = out_dir / spec.name
    storage = storage or default_storage(out_dir, spec)
    click.echo(f"{spec.title}: {spec.trials_text(trials)}, {objective_text(spec)} -> {directory} "
               f"(study: {storage})")
    ctx = TrialContext(spec, str(ckpt_path), str(directory), request, device, announce=True)
    study = run_tune(ctx, storage, trials, workers, ray_address, lambda t: click.echo(trial_text(t, spec)))
    report = write_study_report(study, spec, directory)
    click.echo(best_trial_text(study, spec))
    click.echo(f"report: {report}")


@click.command("rank-quality")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--layers", default="all", show_default=True,
              help="Groups whose maps are ranked: all, or names separated by commas (e.g. conv1,conv2).")
@click.option("--criteria", "criteria", default=None, metavar="LIST",
              help="Criteria compared with the oracle, separated by commas; NAME+l2 (or +l1) normalises per "
                   "layer, which matters for the whole-network ranking (default: "
                   "taylor,taylor+l2,weight_grad,obd,mean_activation,activation_std,apoz,min_weight,taylor_bn,random).")
@click.option("--batches", type=click.IntRange(min=1), default=3, show_default=True,
              help="Disjoint calibration batches: the table gives mean and S.d. over them.")
@click.option("--batch-size", type=click.IntRange(min=2), default=500, show_default=True,
              help="Training images per calibration batch (the oracle's cost grows with it).")
@options.seed("Seed of the batches and of the random criterion.")
@options.out_dir("Where the CSV, markdown and figure go (default: rank-quality/<checkpoint name>).")
@options.DATA_DIR
def rank_quality_cmd(checkpoint: Path, layers: str, criteria: str | None, batches: int, batch_size: int,
                     seed: int, out_dir: Path | None, data: DataRequest) -> None:
    """Spearman rank correlation of each criterion's ranking with the oracle's (the true loss
    change of removing each map alone), per layer and over the whole network (Molchanov et al.
    2017, Table 2); writes spearman.csv, spearman-summary.csv, spearman.md and a figure."""
    entries = [c.strip() for c in criteria.split(",") if c.strip()] if criteria is not None else None
    for entry in entries or ():
        rank_quality.parse_entry(entry)   # a wrong name fails before any work
    splits = data.at(load_checkpoint(checkpoint).input_shape).load()
    ckpt = load_checkpoint_for(checkpoint, splits)
    _, graph = ckpt.build_traced()
    scope = graph.scope(layers)
    out_dir = out_dir or Path("rank-quality") / checkpoint.stem
    result = rank_quality.measure(graph, splits.train, scope, entries, batches, batch_size, seed, str(checkpoint),
                                  on_progress=lambda line: click.echo(line, err=True))
    paths = rank_quality.write(result, out_dir)
    click.echo(rank_quality.markdown(result))
    click.echo(f"written: {', '.join(str(p) for p in paths.values())}")
