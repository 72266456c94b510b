"""Setting up a training run: distributed ranks, the segmenter to start from, the flow,
the optimisers, and the checkpoint that makes a run resumable bit for bit.

:func:`setup_training` gathers all of it in one :class:`TrainingSetup`, which the steps of
:mod:`dhlib.train` share.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpointing import atomic_save, restore_rng_state, rng_state
from .config import project_root
from .devices import mixed_precision_dtype, select_device
from .flows import build_flow
from .models import build_model
from .train_data import SeededCrops, training_data, training_loader


def _distributed() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class InitCheckpointError(FileNotFoundError):
    """The profile's ``init_checkpoint`` cannot be found: the message says where to get it."""


def _checkpoint_path(name) -> Path | None:
    """A checkpoint field's value as an absolute path (relative to the checkout); None for 'none'."""
    if name is None or str(name).lower() == "none":
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else project_root() / path


def _resolve_file(value, missing) -> tuple[Path | None, str | None]:
    """A file field's value as ``(path, sha256)``; ``(None, None)`` for 'none'. A registered name
    (``dhlib.models.weights``) is hash-checked against its card; a path must exist, or
    ``missing(path)`` says what to do instead."""
    from .models import weights
    if value in weights.REGISTRY:
        return weights.resolve(value)
    path = _checkpoint_path(value)
    if path is None:
        return None, None
    if not path.is_file():
        raise InitCheckpointError(missing(path))
    return path, weights.sha256(path)


def resolve_init_checkpoint(profile) -> tuple[Path | None, str | None]:
    """``init_checkpoint`` as ``(path, sha256)``; ``(None, None)`` for random weights."""
    from .models import weights

    def missing(path):
        hint = NVIDIA_HINT if path.name == NVIDIA_CHECKPOINT else f"shipped names: {', '.join(weights.REGISTRY)}"
        return (f"init_checkpoint {path} does not exist. DenseHybrid fine-tunes a segmenter trained on the "
                f"inlier classes: {hint}. To train from random weights instead, pass --set init_checkpoint=none.")
    return _resolve_file(profile.init_checkpoint, missing)


def resolve_pretrain_init(profile) -> tuple[Path | None, str | None]:
    """``pretrain_init`` as ``(path, sha256)``; ``(None, None)`` for a pretraining from scratch."""
    return _resolve_file(profile.pretrain_init, lambda path: (
        f"pretrain_init {path} does not exist. This pretraining continues the closed-set run that "
        "writes it: `make pretrain` trains that run first (see the Makefile). To pretrain from random "
        "weights instead, pass --set pretrain_init=none."))


NVIDIA_CHECKPOINT = "cityscapes_cv0_wideresnet38_nosdcaug.pth"


NVIDIA_HINT = (f"download NVIDIA's Cityscapes WideResNet38 checkpoint {NVIDIA_CHECKPOINT} (linked from "
               "NVIDIA's semantic-segmentation repository and the DenseHybrid README) and put it in "
               "data/weights/, or set init_checkpoint to where it is")


@dataclass
class TrainingSetup:
    """Everything the steps of one training share: data, models, optimisers, random state."""

    profile: object
    device: torch.device
    rank: int
    world: int
    run_dir: Path
    total_steps: int
    closed_set: bool
    crops: SeededCrops
    negatives: object
    class_weights: torch.Tensor | None
    model: torch.nn.Module          # the segmenter itself (checkpoints, evaluation)
    train_model: torch.nn.Module    # what the segmenter step calls: DDP- and/or compile-wrapped
    flow: torch.nn.Module | None
    seg_opt: torch.optim.Optimizer
    seg_sched: object
    flow_opt: torch.optim.Optimizer | None
    flow_sched: object
    generator: torch.Generator
    batches_per_epoch: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    init: dict = field(default_factory=dict)  # what init_checkpoint loaded
    step: int = 0
    loader: torch.utils.data.DataLoader | None = None  # batches from StepBatches
    batch_iter: object = None       # the loader's iterator and the step it serves next
    batch_iter_step: int = -1


def initial_segmenter(profile, device, init_path: Path | None, init_sha256: str | None = None,
                      reshaped_fresh: bool = False):
    """The segmenter to train: random (stage 1 from scratch, or ``init_checkpoint=none``) or
    loaded from ``init_path`` (stage 2; stage 1's warm start, where ``reshaped_fresh`` lets
    tensors of a changed shape start fresh). Returns it with a record of what was loaded and
    left fresh."""
    from .models import load_checkpoint
    torch.manual_seed(profile.seed)
    model = build_model(profile)
    init = {"path": None, "sha256": None, "fresh": []}
    if init_path is not None:
        report = load_checkpoint(model, init_path, reshaped_fresh=reshaped_fresh)
        init = {"path": str(init_path), "sha256": init_sha256, "layout": report.layout, "fresh": report.fresh,
                "dropped": report.dropped}
    return model.to(device), init


def describe_keys(keys) -> str:
    """``'logits_ood (4 tensors), attention (6 tensors)'``: state_dict keys grouped by module."""
    counts = {}
    for key in keys:
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
    return ", ".join(f"{module} ({n} tensors)" for module, n in counts.items())


def optimiser_groups(model, fresh: list, lr: float, fresh_lr_mult: float) -> list[dict]:
    """Adam parameter groups: what the init checkpoint provided at ``lr``; what it left fresh
    (the OOD head from a one-head or closed-set file) at ``fresh_lr_mult × lr``, since a head
    learning from nothing needs larger steps than weights that only need adjusting."""
    fresh = set(fresh)
    groups = [{"params": [p for n, p in model.named_parameters() if n not in fresh], "lr": lr},
              {"params": [p for n, p in model.named_parameters() if n in fresh], "lr": lr * fresh_lr_mult}]
    return [g for g in groups if g["params"]]


def resolve_flow_init(profile) -> tuple[Path | None, str | None]:
    """``flow_init`` as ``(path, sha256)``; ``(None, None)`` when the run pre-trains its own flow
    (``runs_dir/flow.pt``)."""
    from .models import weights
    return _resolve_file(profile.flow_init, lambda path: (
        f"flow_init {path} does not exist. Name a shipped flow ({', '.join(weights.REGISTRY)}), a flow "
        "state_dict written by `python -m dhlib train-flow` (its run folder's flow.pt), or pass "
        "--set flow_init=none to use this run's own flow.pt (run train-flow first)."))


def initial_flow(profile, crops, pretrained: Path, device, rank: int):
    """The flow of the joint phase: the ``pretrained`` state_dict when it exists, else fresh."""
    flow = build_flow(profile).to(device)
    if pretrained.exists():
        state = torch.load(pretrained, map_location=device, weights_only=True)
        # a shipped flow is stored in float16; the flow trains in float32
        flow.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return flow
    if rank == 0:
        print(f"note: {pretrained} not found; the flow starts untrained (run train-flow first)")
    # ActNorm initialises itself on the first batch it sees. Show it the same inlier crops
    # on every rank (the seeded crops and the CPU generator's noise are identical everywhere),
    # or DDP ranks would start from different flows and drift apart.
    factor = 2 ** profile.flow_levels
    scenes = [crops[i][0] for i in range(min(8, len(crops)))]
    side = min(profile.flow_crop, *scenes[0].shape[-2:]) // factor * factor
    first = torch.stack([x[:, :side, :side] for x in scenes])
    noise = torch.Generator().manual_seed(profile.seed)
    with torch.no_grad():
        flow.bits_per_dim(first.to(device), noise)
    return flow


def setup_training(profile, resume: bool = False, steps: int | None = None, progress: bool = True,
                   closed_set: bool = False) -> TrainingSetup:
    """Data, segmenter (from ``init_checkpoint`` unless ``closed_set``), flow, optimisers; resumed
    from ``runs_dir/checkpoint.pt`` when ``resume`` and it exists."""
    rank, world = _distributed()
    device = select_device(profile.device, rank)
    run_dir = Path(profile.path("runs_dir"))
    run_dir.mkdir(parents=True, exist_ok=True)
    total_steps = steps or profile.train_steps
    # fail early, before any data is read
    init_path, init_sha256 = (resolve_pretrain_init if closed_set else resolve_init_checkpoint)(profile)
    uses_flow = profile.synthetic_prob > 0 and not closed_set
    flow_path = (resolve_flow_init(profile)[0] or run_dir / "flow.pt") if uses_flow else None
    crops, negatives, class_weights = training_data(profile, closed_set, device, rank, world, progress)
    model, init = initial_segmenter(profile, device, init_path, init_sha256, reshaped_fresh=closed_set)
    flow = initial_flow(profile, crops, flow_path, device, rank) if uses_flow else None
    seg_opt = torch.optim.Adam(optimiser_groups(model, init["fresh"], profile.lr, profile.fresh_lr_mult),
                               lr=profile.lr, weight_decay=profile.weight_decay, eps=profile.optimizer_eps)
    restarts = profile.pretrain_restarts if closed_set else ()
    seg_sched = torch.optim.lr_scheduler.LambdaLR(seg_opt, lr_factor(profile.lr_schedule, total_steps, restarts))
    loader = training_loader(crops, profile, device, rank, world)
    batches_per_epoch = loader.batch_sampler.per_epoch
    if batches_per_epoch == 0:
        raise ValueError(f"batch_size {profile.batch_size} × {world} ranks exceeds the {len(crops)} training images")
    flow_opt = flow_sched = None
    if flow is not None:
        flow_opt = torch.optim.Adamax(flow.parameters(), lr=profile.flow_joint_lr, eps=profile.optimizer_eps)
        flow_sched = torch.optim.lr_scheduler.ExponentialLR(flow_opt, gamma=0.9)  # per epoch
    amp_dtype = mixed_precision_dtype(device) if profile.amp else None
    setup = TrainingSetup(profile, device, rank, world, run_dir, total_steps, closed_set, crops, negatives,
                          class_weights, model, model, flow, seg_opt, seg_sched, flow_opt, flow_sched,
                          torch.Generator().manual_seed(profile.seed * 31 + rank), batches_per_epoch, amp_dtype,
                          torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16), init, loader=loader)
    if resume and (run_dir / "checkpoint.pt").exists():
        load_training_checkpoint(setup, run_dir / "checkpoint.pt")
    elif rank == 0:
        (run_dir / "train_log.jsonl").unlink(missing_ok=True)
    setup.train_model = wrap_for_training(model, device, world, profile.compile)
    return setup


def lr_factor(schedule: str, total_steps: int, restarts=()):
    """The learning-rate multiplier at step s: poly (as DeepLab) or 1.

    Poly decays as ``(1 − s/T)^0.9`` towards the end T of the current cycle: the first of
    ``restarts`` (then ``total_steps``) at or after s. After a restart the rate jumps back up to
    where a schedule ending at the next T stands, and decays to zero again: a run that ended,
    extended by more steps from its checkpoint, follows exactly this schedule.
    """
    if schedule == "constant":
        return lambda s: 1.0
    ends = sorted(e for e in restarts if 0 < e < total_steps) + [total_steps]

    def poly(s):
        end = next((e for e in ends if s <= e), total_steps)
        # min(): the step at an end still takes the last rate of its cycle, as a resumed run does
        return (1 - min(s, end - 1) / end) ** 0.9
    return poly


def wrap_for_training(model, device, world: int, compile_model: bool):
    """DDP across ranks (SyncBatchNorm on GPUs) and optionally ``torch.compile``."""
    train_model = model
    if world > 1:
        if device.type == "cuda":  # small per-GPU batches: normalise over the whole batch
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(train_model) if compile_model else train_model


def save_training_checkpoint(setup: TrainingSetup) -> None:
    """Everything a bit-exact resume needs, written atomically by rank 0."""
    if setup.rank != 0:
        return
    state = {"model": setup.model.state_dict(), "seg_opt": setup.seg_opt.state_dict(),
             "seg_sched": setup.seg_sched.state_dict(), "step": setup.step, "rng": rng_state(setup.generator)}
    if setup.flow is not None:
        state |= {"flow": setup.flow.state_dict(), "flow_opt": setup.flow_opt.state_dict(),
                  "flow_sched": setup.flow_sched.state_dict()}
    atomic_save(state, setup.run_dir / "checkpoint.pt")


def load_training_checkpoint(setup: TrainingSetup, path: Path) -> None:
    state = torch.load(path, map_location=setup.device, weights_only=True)
    setup.model.load_state_dict(state["model"])
    setup.seg_opt.load_state_dict(state["seg_opt"])
    setup.seg_sched.load_state_dict(state["seg_sched"])
    if setup.flow is not None:
        setup.flow.load_state_dict(state["flow"])
        setup.flow_opt.load_state_dict(state["flow_opt"])
        setup.flow_sched.load_state_dict(state["flow_sched"])
    setup.step = state["step"]
    restore_rng_state(state["rng"], setup.generator)
