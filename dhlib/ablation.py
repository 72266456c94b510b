"""The ablation: what the synthetic share b and the attention block each contribute.

Five trainings of the profile's recipe, four of which differ from it in one field:

====================  ==========================================================
variant               change to the profile
====================  ==========================================================
``default``           none: the profile as it is (the reference row)
``b=0``               ``synthetic_prob=0``: real ADE20K negatives only (DenseHybrid ECCV'22)
``b=0.5``             ``synthetic_prob=0.5``: an even mixture (TPAMI'24 mixes both kinds)
``b=1``               ``synthetic_prob=1``: flow samples only
``no attention``      ``attention=False`` with the profile's b
====================  ==========================================================

Every variant starts from the same pre-trained flow (the profile's ``flow_init``, or without
one ``<runs_dir>/flow.pt``, trained first when missing), trains in ``<runs_dir>/ablation/<variant>/`` and is evaluated on the
profile's anomaly tree (all six scores) and on the inlier val split (mIoU). A variant whose
``result.json`` exists is not trained again, and an interrupted training resumes from its
checkpoint, so ``python -m dhlib ablate`` can be run again after a kill and finishes the table.
Each folder keeps the variant's whole profile in ``recipe.json``; when the profile has changed
since (a new recipe, an override), the folder's checkpoint and result are discarded and the
variant is trained again.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from .checkpointing import atomic_write, atomic_write_text

VARIANTS = {
    "default": {},
    "b=0": {"synthetic_prob": 0.0},
    "b=0.5": {"synthetic_prob": 0.5},
    "b=1": {"synthetic_prob": 1.0},
    "no attention": {"attention": False},
}


def variant_profile(profile, name: str):
    """The profile of one ablation variant, training in its own run folder."""
    folder = name.replace("=", "").replace(" ", "_").replace(".", "")
    return dataclasses.replace(profile, **VARIANTS[name],
                               runs_dir=str(profile.path("runs_dir") / "ablation" / folder))


def run_variant(profile, name: str, progress: bool = True) -> dict:
    """Train (or resume) one variant, then measure val mIoU and the six anomaly scores."""
    from .data import Fishyscapes
    from .devices import select_device
    from .evaluation import evaluate_checkpoint, summary
    from .models import build_model
    from .train import train, validation_miou

    variant = variant_profile(profile, name)
    run_dir = variant.path("runs_dir")
    result_path = run_dir / "result.json"
    prepare_variant_folder(variant, name, profile.path("runs_dir") / "flow.pt")
    if result_path.exists():
        return json.loads(result_path.read_text())
    start = time.perf_counter()
    train(variant, resume=True, progress=progress)
    model = build_model(variant).to(select_device(variant.device))
    evaluation = evaluate_checkpoint(model, run_dir / "model.pt", components=False, progress=progress,
                                     dataset=Fishyscapes(variant.path("fishyscapes_root"), variant.fishyscapes_split))
    result = {"variant": name, "change": VARIANTS[name], "mIoU": validation_miou(model, variant),
              "scores": summary(evaluation.results)["scores"], "time_s": round(time.perf_counter() - start, 1)}
    atomic_write_text(json.dumps(result, indent=2), result_path)
    return result


def prepare_variant_folder(variant, name: str, shared_flow: Path) -> None:
    """Make the variant's folder hold its current recipe and, when it samples, the shared flow.

    A folder written under another recipe (the profile changed since) loses its checkpoint
    and result, so the variant trains again; files the ablation did not write stay.
    """
    run_dir = variant.path("runs_dir")
    recipe_path = run_dir / "recipe.json"
    recipe = json.loads(json.dumps(dataclasses.asdict(variant)))
    if recipe_path.exists() and json.loads(recipe_path.read_text()) != recipe:
        print(f"ablation {name}: the recipe changed since {run_dir} was written; training it again")
        for stale in ("result.json", "checkpoint.pt", "model.pt", "flow_joint.pt", "train_log.jsonl"):
            (run_dir / stale).unlink(missing_ok=True)
    atomic_write_text(json.dumps(recipe, indent=2), recipe_path)
    if variant.synthetic_prob > 0 and variant.flow_init is None and not (run_dir / "flow.pt").exists():
        atomic_write(run_dir / "flow.pt", lambda tmp: shutil.copyfile(shared_flow, tmp))


def format_ablation(results: list[dict]) -> str:
    """Markdown table: mIoU, then AP / AUROC / FPR95 of the hybrid score, the AP of its two
    components and max-logit's AP / FPR95 (the strongest baseline so far), in percent."""
    head = ("| variant | val mIoU | hybrid AP | hybrid AUROC | hybrid FPR95 | energy AP | discriminative AP "
            "| max-logit AP / FPR95 |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for r in results:
        h, s = r["scores"]["hybrid"], r["scores"]
        rows.append(f"| {r['variant']} | {100 * r['mIoU']:.2f} | {100 * h['AP']:.2f} | {100 * h['AUROC']:.2f} | "
                    f"{100 * h['FPR95']:.2f} | {100 * s['energy']['AP']:.2f} | {100 * s['discriminative']['AP']:.2f} | "
                    f"{100 * s['max_logit']['AP']:.2f} / {100 * s['max_logit']['FPR95']:.2f} |")
    return "\n".join([head, *rows])


def ablate(profile, variants=None, progress: bool = True) -> list[dict]:
    """Run the variants (default: all five) and write ``ablation.json`` and ``ablation.md``."""
    from .data import synthcity
    from .flows.pretrain import pretrain_flow

    variants = list(variants or VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; choose from {list(VARIANTS)}")
    synthcity.ensure(profile, progress)
    if profile.flow_init is None and not (profile.path("runs_dir") / "flow.pt").exists():
        pretrain_flow(profile, resume=True, progress=progress)
    results = [run_variant(profile, name, progress) for name in variants]
    out = profile.path("runs_dir") / "ablation"
    atomic_write_text(json.dumps(results, indent=2) + "\n", out / "ablation.json")
    atomic_write_text(format_ablation(results) + "\n", out / "ablation.md")
    return results
