"""Command line: ``python -m dhlib <command> --profile quick|paper [--set key=value ...]``.

Commands available now:

* ``make-data``  write the SynthCity trees (quick tier) in the real dataset formats;
* ``figures``    draw the data figures (scenes, labels, anomalies, negatives, pasting) and,
                 when the run folder has logs, the training curves;
* ``pretrain``   stage 1: the closed-set segmenter, L_d only (``--resume`` continues);
* ``train-flow`` pre-train the normalizing flow on inlier crops (``--resume`` continues);
* ``train``      stage 2: fine-tune DenseHybrid from ``init_checkpoint`` with mixed negatives and
                 the flow (``--resume``; multi-GPU: ``torchrun --nproc_per_node=G -m dhlib train``);
* ``ship-weights`` ``NAME``: store a finished run as ``weights/NAME.pt`` with its model card;
* ``evaluate``   ``--checkpoint PATH [--dataset DIR [--kind K]]``: all six anomaly scores, metrics table,
                 figures and ``eval_results.json`` in ``figures_dir``; DIR: any Fishyscapes / SegmentMeIfYouCan / Road Anomaly tree or images/ +
                 labels/; ``--track anomaly|obstacle``: SegmentMeIfYouCan's component size limits;
* ``demo``       the main job: ``make-data``, ``train`` from the shipped closed-set weights and flow
                 (``train-flow`` first when ``flow_init`` is none), evaluation of all six scores, figures; writes ``runs/<profile>/model.pt``
                 and ``results.json``;
* ``ablate``     train and evaluate the profile as it is, b = 0 / 0.5 / 1 and attention off (``--variant`` picks
                 some); writes ``runs/<profile>/ablation/ablation.md`` (re-run to resume);
* ``score``      ``PATH... [--checkpoint FILE] [--threshold T] [--out DIR]``: the shipped DenseHybrid
                 model on your own images (files or folders); a heatmap and a binary mask per image;
* ``report``     ``[RESULTS_JSON ...] [--out FILE]``: append runs' results (default: every
                 ``runs/*/results.json``) to ``docs/RESULTS.md`` with date, commit and machine;
* ``paper-figures`` ``[--out DIR] [--checkpoint FILE]``: the papers' kind of figures (2-D toy, cue maps,
                 score distributions, cue ablation, negatives table from an ``ablate`` run), each PNG with
                 a caption file, of the shipped quick-densehybrid model or FILE; default DIR figures/paper.


"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import time
from pathlib import Path

from .config import PROFILES, Profile, load_profile, parse_override


def _profile_from_args(args) -> Profile:
    overrides = dict(parse_override(text) for text in args.set)
    return load_profile(args.profile, **overrides)


def make_data(profile: Profile) -> None:
    if not profile.use_synthcity:
        from .data import cityscapes, ade20k, fishyscapes
        raise SystemExit(
            f"The '{profile.name}' profile reads the real datasets; there is nothing to generate.\n"
            "Put them here (see data/README.md):\n"
            f"{cityscapes.EXPECTED_TREE}\n{ade20k.EXPECTED_TREE}\n{fishyscapes.EXPECTED_TREE}")
    from .data.synthcity import export
    start = time.perf_counter()
    root = export(profile=profile)
    print(f"SynthCity trees ready in {root} ({time.perf_counter() - start:.1f} s)")


def figures(profile: Profile) -> list:
    """Data figures of the profile's datasets (and its last runs' curves) in ``figures_dir``."""
    import matplotlib
    matplotlib.use("Agg")
    from . import viz
    from .data import datasets_from_profile
    from .negatives import NegativeRecipe
    written = viz.data_figures(datasets_from_profile(profile, train_augment=False), NegativeRecipe.from_profile(profile),
                               profile.seed, profile.path("runs_dir"), profile.path("figures_dir"), profile.name)
    for path in written:
        print(f"wrote {path}")
    return written


def train_flow(profile: Profile, resume: bool = False, command: str | None = None) -> dict:
    """Pre-train the normalizing flow on inlier crops (L_mle); prints held-out bits/dim."""
    from .flows.pretrain import pretrain_flow
    from .provenance import record_run_info
    run_dir = profile.path("runs_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run_info(run_dir, profile, command, resume, name="flow_run_info.json", checkpoint="flow_checkpoint.pt",
                    precision="float32")  # the flow never trains under autocast
    summary = pretrain_flow(profile, resume=resume)
    print(f"flow: {summary['val_bits_per_dim']:.3f} bits/dim on held-out {profile.flow_crop}×"
          f"{profile.flow_crop} val crops (uniform model: 8.000) after {summary['steps']} steps, "
          f"{summary['train_time_s']:.0f} s; weights in {profile.path('runs_dir') / 'flow.pt'}")
    return summary


def pretrain(profile: Profile, resume: bool = False, command: str | None = None) -> dict:
    """Stage 1: train the closed-set segmenter (L_d only); prints its val mIoU."""
    from .provenance import record_run_info
    from .train import pretrain as run_pretrain
    record_run_info(profile.path("pretrain_dir"), profile, command, resume)
    summary = run_pretrain(profile, resume=resume)
    if summary["rank"] == 0:
        print(f"pre-trained {summary['steps']} steps in {summary['train_time_s']:.0f} s; "
              f"weights in {profile.path('pretrain_dir') / 'model.pt'}")
    return summary


def train_segmenter(profile: Profile, resume: bool = False, command: str | None = None) -> dict:
    """Train DenseHybrid (segmenter + flow fine-tuning); prints the summary and val mIoU."""
    from .provenance import record_run_info
    from .train import train
    record_run_info(profile.path("runs_dir"), profile, command, resume)
    summary = train(profile, resume=resume)
    if summary["rank"] == 0:
        print(f"trained {summary['steps']} steps in {summary['train_time_s']:.0f} s "
              f"({summary['flow_steps_skipped']} non-finite flow steps skipped); "
              f"weights in {profile.path('runs_dir') / 'model.pt'}")
    return summary


def evaluate(profile: Profile, checkpoint: str | None = None, dataset: str | None = None, *,
             track: str | None = None, kind: str | None = None) -> dict:
    """Evaluate a checkpoint of the profile's model on an anomaly dataset; print the table and
    write the figures and ``eval_results.json`` to the profile's ``figures_dir``.

    ``dataset``: 'fishyscapes' (the profile's Fishyscapes split; default) or the folder of any
    benchmark :func:`~dhlib.data.load_anomaly_dataset` reads, of ``kind`` (None: recognised).
    ``track``: 'anomaly' or 'obstacle', the SegmentMeIfYouCan track whose size limits the
    component metrics use (default: the track of a SegmentMeIfYouCan dataset).
    """
    from .devices import select_device
    from .evaluation import evaluate_checkpoint
    from .models import build_model, load_checkpoint
    if not checkpoint:
        raise SystemExit("evaluate needs --checkpoint PATH: a DenseHybrid / NVIDIA checkpoint or "
                         "a model.pt written by this package")
    model = build_model(profile).to(select_device(profile.device))
    loaded = load_checkpoint(model, checkpoint)  # a bad file stops here, before any data is written
    data, track, root = evaluation_dataset(profile, dataset, kind, track)
    evaluation = evaluate_checkpoint(model, checkpoint, data, track=track, loaded=loaded)
    print(f"{checkpoint} ({evaluation.layout}) on {len(data)} images:")
    print(evaluation.format_table())
    for path in evaluation.figures(profile.path("figures_dir")):
        print(f"wrote {path}")
    print(f"wrote {write_evaluation(profile.path('figures_dir'), checkpoint, evaluation, root, len(data))}")
    return evaluation.results


def write_evaluation(out_dir, checkpoint, evaluation, dataset_root, images: int) -> Path:
    """``eval_results.json`` beside the evaluation figures: the table, open-set and component
    metrics, with the checkpoint's hash and the dataset they were measured on."""
    import json

    from .checkpointing import atomic_write_text
    from .evaluation import summary
    from .models.weights import sha256
    record = {"checkpoint": {"path": str(checkpoint), "sha256": sha256(checkpoint), "layout": evaluation.layout},
              "dataset": {"root": str(dataset_root), "images": images},
              **summary(evaluation.results)}
    return atomic_write_text(json.dumps(record, indent=2), Path(out_dir) / "eval_results.json")


def evaluation_dataset(profile: Profile, dataset: str | None, kind: str | None, track: str | None):
    """The dataset ``evaluate`` reads, the component track it implies (see there) and its root."""
    if dataset in (None, "fishyscapes"):
        from .data import Fishyscapes, synthcity
        synthcity.ensure(profile, rewrite=False)  # evaluation reads data, never replaces it
        root = profile.path("fishyscapes_root")
        return Fishyscapes(root, profile.fishyscapes_split), track, root
    data = benchmark_dataset(dataset, kind)
    # a SegmentMeIfYouCan track's own size limits, unless --track says otherwise
    return data, track or {"smiyc-anomaly": "anomaly", "smiyc-obstacle": "obstacle"}.get(data.kind), dataset


def benchmark_dataset(root: str, kind: str | None = None):
    """``load_anomaly_dataset(root, kind)``, saying what it found; a wrong tree is a message."""
    from .data import load_anomaly_dataset
    try:
        data = load_anomaly_dataset(root, kind)
    except (FileNotFoundError, ValueError) as err:  # no such tree, an ambiguous one, an unpaired file
        raise SystemExit(f"error: {err}") from None
    print(f"{root}: {data.kind} ({data.layout}), {len(data)} images")
    return data


def ship_weights(profile: Profile, name: str) -> dict:
    """Store a finished run as the shipped file ``weights/<name>.pt`` with its model card."""
    from .models import weights
    from .shipping import SHIP
    if name not in SHIP:
        raise SystemExit(f"ship-weights: unknown name {name!r}; choose one of {', '.join(SHIP)}")
    try:
        card = SHIP[name](profile)
    except FileNotFoundError as err:  # no finished run to ship: say which, without a traceback
        raise SystemExit(f"ship-weights: {err}") from None
    m = card["metrics"]
    measured = (f"val {m['val_bits_per_dim']:.3f} bits/dim" if "val_bits_per_dim" in m
                else f"val mIoU {100 * m['val_mIoU']:.2f}")
    print(f"wrote {weights.get(name).path} ({card['size_bytes'] / 1e6:.1f} MB, sha256 {card['sha256'][:12]}…) and "
          f"its card; {measured}")
    return card


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB (Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def demo(profile: Profile, command: str | None = None) -> dict:
    """The main job: data, flow pre-training, DenseHybrid training, evaluation, figures.

    Leaves ``model.pt`` and ``results.json`` in the profile's run folder.
    """
    import json

    from .checkpointing import atomic_write_text
    from .data import Fishyscapes, synthcity
    from .devices import select_device
    from .evaluation import evaluate_checkpoint, format_results, summary
    from .models import build_model
    from .provenance import record_run_info, training_precision
    from .train import train, validation_miou
    from .train_setup import resolve_flow_init, resolve_init_checkpoint
    start = time.perf_counter()
    run_dir = profile.path("runs_dir")
    if synthcity.uses_synthcity(profile):  # roots pointed elsewhere are read as they are
        make_data(profile)
    init_path, init_sha = resolve_init_checkpoint(profile)
    miou_init = initial_miou(profile, init_path)
    flow_path, flow_sha = resolve_flow_init(profile) if profile.synthetic_prob > 0 else (None, None)
    if profile.synthetic_prob > 0 and flow_path is None:  # no pre-trained flow named: train one here
        train_flow(profile)
    record_run_info(run_dir, profile, command)
    trained = train(profile)
    model = build_model(profile).to(select_device(profile.device))
    evaluation = evaluate_checkpoint(model, run_dir / "model.pt",
                                     Fishyscapes(profile.path("fishyscapes_root"), profile.fishyscapes_split))
    miou = validation_miou(model, profile)
    evaluation.figures(profile.path("figures_dir"))
    figures(profile)
    wall = time.perf_counter() - start
    results = {"profile": profile.name, "wall_time_s": round(wall, 1), "peak_memory_mb": round(peak_memory_mb()),
               "init_checkpoint": {"path": str(init_path) if init_path else None, "sha256": init_sha},
               "flow_init": {"path": str(flow_path) if flow_path else None, "sha256": flow_sha},
               "mIoU_init": miou_init, "mIoU": miou, **summary(evaluation.results),
               "train_steps": trained["steps"], "train_time_s": trained["train_time_s"],
               "precision": training_precision(profile), "flow_steps_skipped": trained["flow_steps_skipped"]}
    atomic_write_text(json.dumps(results, indent=2), run_dir / "results.json")
    before = f" (before fine-tuning {100 * miou_init:.2f})" if miou_init is not None else " (from random weights)"
    print(f"\nDenseHybrid Lab demo ({profile.name}): {trained['steps']} training steps in {results['precision']} "
          f"({trained['flow_steps_skipped']} non-finite flow steps skipped), val mIoU {100 * miou:.2f}{before}")
    print(format_results(evaluation.results))
    print(f"wall time {wall:.0f} s, peak memory {peak_memory_mb():.0f} MB; "
          f"{run_dir / 'model.pt'} and {run_dir / 'results.json'} written")
    return results


def initial_miou(profile: Profile, init_path) -> float | None:
    """Val mIoU of the checkpoint fine-tuning starts from (None from random weights): the cost
    of fine-tuning in closed-set mIoU, as the papers report it."""
    from .models import build_model, load_checkpoint
    from .train import validation_miou
    if init_path is None:
        return None
    initial = build_model(profile)
    print(f"fine-tuning from {init_path} ({load_checkpoint(initial, init_path).layout})")
    return validation_miou(initial, profile)


def ablate(profile: Profile, variants=None) -> list:
    """The ablation table over b in {0, 0.5, 1} and the attention block off."""
    from .ablation import ablate as run_ablation, format_ablation
    start = time.perf_counter()
    results = run_ablation(profile, variants)
    print(f"\nablation ({profile.name}; percent):")
    print(format_ablation(results))
    print(f"{time.perf_counter() - start:.0f} s; table in {profile.path('runs_dir') / 'ablation' / 'ablation.md'}")
    return results


def score(paths, checkpoint=None, threshold=None, out=None) -> tuple[int, int]:
    """Heatmap and mask per image in ``out``; exits with status 1 if any input failed."""
    from .config import project_root
    from .scoring import ScoringError, score_paths
    try:
        scored, failed = score_paths(paths, out or project_root() / "runs" / "score", checkpoint, threshold)
    except ScoringError as err:  # the run cannot start: a message, not a traceback
        raise SystemExit(f"error: {err}") from None
    if failed:
        raise SystemExit(1)
    return scored, failed


class UsageError(Exception):
    """A command line that cannot run as given: shown with the usage, like argparse's own errors."""


def _ship_weights(args, profile):
    if len(args.names) != 1:
        raise UsageError("ship-weights needs one NAME: quick-closed-set or quick-densehybrid")
    return ship_weights(profile, args.names[0])


def _evaluate(args, profile):
    if args.kind and args.dataset in (None, "fishyscapes"):
        raise UsageError("--kind goes with --dataset DIR: the kind of the tree in DIR")
    return evaluate(profile, args.checkpoint, args.dataset, track=args.track, kind=args.kind)


def _score(args, profile):
    if not args.names:
        raise UsageError("score needs at least one PATH: an image file or a folder of images")
    return score(args.names, args.checkpoint, args.threshold, args.out)


def _report(args, profile):
    from .report import report
    return report(args.names or None, args.out)


def _paper_figures(args, profile):
    from .paper_figures import paper_figures
    written = paper_figures(profile, out=args.out, checkpoint=args.checkpoint, command=args.command_line)
    for path in written:
        print(f"wrote {path}")
    return written


def _ablate(args, profile):
    try:
        return ablate(profile, args.variant)
    except ValueError as err:  # an unknown --variant
        raise UsageError(str(err)) from None


# Every command: its name on the command line -> a function of (parsed arguments, profile).
COMMANDS = {
    "make-data": lambda args, profile: make_data(profile),
    "figures": lambda args, profile: figures(profile),
    "train-flow": lambda args, profile: train_flow(profile, resume=args.resume, command=args.command_line),
    "pretrain": lambda args, profile: pretrain(profile, resume=args.resume, command=args.command_line),
    "train": lambda args, profile: train_segmenter(profile, resume=args.resume, command=args.command_line),
    "ship-weights": _ship_weights,
    "evaluate": _evaluate,
    "demo": lambda args, profile: demo(profile, command=args.command_line),
    "ablate": _ablate,
    "score": _score,
    "report": _report,
    "paper-figures": _paper_figures,
}
TAKES_NAMES = ("ship-weights", "score", "report")  # the commands with positional arguments


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dhlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="ship-weights: the shipped name (quick-closed-set, quick-flow, quick-densehybrid); "
                             "score: image files and/or folders of images (PATH...); report: results.json files")
    parser.add_argument("--profile", choices=PROFILES, default=os.environ.get("DHLIB_PROFILE", "quick"),
                        help="quick (CPU, SynthCity; default) or paper (GPU, real data)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set synthcity_train=200 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="pretrain, train, train-flow: continue from the last checkpoint in the run folder")
    parser.add_argument("--checkpoint", help="evaluate: the model weights to load; score: your file, loaded into "
                        "the shipped quick-densehybrid architecture instead of the shipped weights (the "
                        "threshold still comes from the shipped model card unless --threshold is given); "
                        "paper-figures: the model to draw instead of the shipped quick-densehybrid")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="score: flag pixels with hybrid score >= T instead of the model card's threshold")
    parser.add_argument("--out", metavar="DIR",
                        help="score: output folder (created if missing; default runs/score in the project root); "
                             "report: the Markdown file to append to (default docs/RESULTS.md in the project root); "
                             "paper-figures: the folder for the figures and captions (default figures/paper)")
    parser.add_argument("--dataset", help="evaluate: 'fishyscapes' (the profile's tree; default) or the folder "
                        "of an anomaly benchmark (Fishyscapes, SegmentMeIfYouCan, Road Anomaly, images/ + labels/)")
    parser.add_argument("--kind", help="evaluate: the kind of --dataset DIR when its tree cannot tell: "
                        "fishyscapes-static, fishyscapes-laf, smiyc-anomaly, smiyc-obstacle, road-anomaly or folder")
    parser.add_argument("--track", choices=("anomaly", "obstacle"),
                        help="evaluate: SegmentMeIfYouCan track whose size limits the component metrics use "
                             "(anomaly: predicted blobs < 500 px dropped, objects < 100 px void; obstacle: 50 / 10)")
    parser.add_argument("--variant", action="append", metavar="NAME",
                        help="ablate: run only this variant ('default', 'b=0', 'b=0.5', 'b=1', 'no attention'; repeatable)")
    args = parser.parse_args(argv)
    try:
        profile = _profile_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    if args.names and args.command not in TAKES_NAMES:
        parser.error(f"{args.command} takes no positional arguments (got {' '.join(args.names)})")
    from .data.io import CorruptFileError, DatasetNotFoundError, LabelValueError
    from .data.synthcity import SynthCityConflict
    from .models.checkpoints import CheckpointError
    from .models.weights import WeightsError
    from .report import ReportError
    from .train_setup import InitCheckpointError
    args.command_line = "python -m dhlib " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        COMMANDS[args.command](args, profile)
    except UsageError as err:
        parser.error(str(err))
    except (WeightsError, InitCheckpointError, CheckpointError, DatasetNotFoundError, CorruptFileError,
            LabelValueError, SynthCityConflict, ReportError) as err:
        # a file to fetch or fix, not a bug: the message without a traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
