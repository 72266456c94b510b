"""The joint trainer: DenseHybrid's segmenter with real and synthetic negatives (TPAMI recipe).

Each iteration:

1. **Segmenter step.** A batch of augmented inlier crops gets one negative per image: a flow
   sample (probability b) or an ADE20K patch. The segmenter minimises
   ``L = L_d + β·L_x + 10β·L_cla`` with Adam (on the labels subsampled to the model's
   ``input_scale``, see :func:`loss_grid`; full resolution in the paper profiles).
2. **The flow learns**, when b > 0, in one of two ways (``flow_update``):

   * ``'alternate'``: every ``flow_every`` iterations a flow step samples *with* gradient,
     pastes into the same crops and passes them through the segmenter, whose weights this
     step does not update; the flow minimises ``L_mle + λ·L_jsd``;
   * ``'joint'`` (the released joint-flow code): the segmenter step's flow samples keep
     their gradient, and ``L + λ·L_jsd + L_mle`` back-propagates into the segmenter and the
     flow at once; both optimisers step.

   L_mle is the bits/dim of the inlier patches the samples covered, L_jsd the JSD between
   the segmenter's posterior on the samples and the uniform distribution. The flow uses
   Adamax with a per-epoch exponential decay.

Everything random is drawn from generators whose state is checkpointed: the crops are
augmented with a seed derived from (seed, epoch, index), the batch order is a seeded
permutation per epoch, and negatives and flow samples come from one ``torch.Generator``.
A run killed at any point and resumed with ``--resume`` therefore ends with exactly the
weights of an uninterrupted run (on the CPU).

Distributed data parallel: launch with ``torchrun --nproc_per_node=G -m dhlib train``;
each rank takes its shard of every epoch's permutation, gradients are averaged by DDP, and
rank 0 alone writes checkpoints and logs.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpointing import atomic_save, restore_rng_state, rng_state
from .config import project_root
from .data.ade20k import ADE20KNegatives
from .data.cityscapes import CityscapesSegmentation
from .data.transforms import train_transforms
from .flows import build_flow
from .losses import class_balance_weights, densehybrid_loss, jsd_to_uniform, segmentation_loss
from .models import build_model
from .data.labels import OOD_ANOMALY, OOD_INLIER, OOD_VOID
from .negatives import paste_negatives


class SeededCrops(torch.utils.data.Dataset):
    """Training crops whose random augmentation is a function of (seed, epoch, index).

    That makes the data independent of worker processes and of where a run was resumed.
    An item is asked for as ``(epoch, index)`` (what :class:`StepBatches` yields, so that
    worker processes need no shared state) or as a plain index in ``self.epoch``.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + epoch * len(self.dataset) + index)
            return self.dataset[index]


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """This rank's batches of one epoch: a seeded permutation, cut into full batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    per_rank = n // world
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    return [mine[k:k + batch].tolist() for k in range(0, len(mine) - batch + 1, batch)]


class StepBatches(torch.utils.data.Sampler):
    """The batch sampler of the trainer's DataLoader: from step ``start`` on, the batch of each
    step as ``[(epoch, index), ...]``, endlessly. It runs in the main process, so moving
    ``start`` (a resume) needs no new workers."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, 0
        self.per_epoch = len(epoch_batches(n, batch, seed, 0, rank, world))

    def __iter__(self):
        step = self.start
        while True:
            epoch, position = divmod(step, self.per_epoch)
            batches = epoch_batches(self.n, self.batch, self.seed, epoch, self.rank, self.world)
            for indices in batches[position:]:
                yield [(epoch, i) for i in indices]
            step = (epoch + 1) * self.per_epoch


def train_pixel_counts(dataset: CityscapesSegmentation, num_classes: int):
    """Pixels per train id over the label maps of a Cityscapes-format split (no images read)."""
    import numpy as np
    from .data.io import read_label
    from .data.labels import LABEL_TO_TRAIN, VALID_LABEL_IDS
    counts = np.zeros(num_classes, np.int64)
    for path in dataset.listing.targets:
        train_ids = LABEL_TO_TRAIN[read_label(path[0], VALID_LABEL_IDS, "Cityscapes label-id")].ravel()
        counts += np.bincount(train_ids[train_ids < num_classes], minlength=num_classes)
    return counts


def loss_grid(targets: torch.Tensor, scale: float) -> torch.Tensor:
    """Label maps on the grid the losses are computed on: ``scale`` × their size, nearest.

    A model that looks at the scene at ``input_scale`` < 1 cannot resolve finer detail than
    its input, so the quick trainer scores its logits against labels subsampled to that
    grid (as DeepLab v1/v2 trained against subsampled ground truth) instead of upsampling
    19 logit maps to full resolution: the same loss, a quarter of the pixels at scale 0.5.
    Evaluation always scores full-resolution predictions.
    """
    if scale == 1:
        return targets
    size = [max(1, round(side * scale)) for side in targets.shape[-2:]]
    return torch.nn.functional.interpolate(targets[:, None].float(), size=size,
                                           mode="nearest-exact")[:, 0].long()


def _distributed() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _device(profile, rank: int) -> torch.device:
    if profile.device not in ("auto", "cuda") or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", rank % torch.cuda.device_count())


class InitCheckpointError(FileNotFoundError):
    """The profile's ``init_checkpoint`` cannot be found: the message says where to get it."""


def resolve_init_checkpoint(profile) -> tuple[Path | None, str | None]:
    """``init_checkpoint`` as ``(path, sha256 or None)``; ``(None, None)`` for random weights.

    A registered name (``dhlib.models.weights``) is hash-checked; a path is taken as it is.
    """
    from .models import weights
    name = profile.init_checkpoint
    if name is None or str(name).lower() == "none":
        return None, None
    if name in weights.REGISTRY:
        return weights.resolve(name)
    path = Path(name).expanduser()
    path = path if path.is_absolute() else project_root() / path
    if not path.is_file():
        hint = NVIDIA_HINT if path.name == NVIDIA_CHECKPOINT else (
            f"shipped names: {', '.join(weights.REGISTRY)}")
        raise InitCheckpointError(
            f"init_checkpoint {path} does not exist. DenseHybrid fine-tunes a segmenter trained on the "
            f"inlier classes: {hint}. To train from random weights instead, pass --set init_checkpoint=none.")
    return path, weights.sha256(path)


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


def training_data(profile, closed_set: bool, device, rank: int, world: int, progress: bool):
    """The seeded training crops, the negatives (None in the closed-set stage) and L_d's class weights."""
    if rank == 0:
        from .data import synthcity
        synthcity.ensure(profile, progress)
    if world > 1:
        torch.distributed.barrier()
    crops = SeededCrops(CityscapesSegmentation(profile.path("cityscapes_root"), "train",
                                               train_transforms(profile.crop_size, profile.scale_range,
                                                                class_uniform=profile.class_uniform)),
                        profile.seed)
    negatives = None if closed_set else ADE20KNegatives(profile.path("ade20k_root"))
    class_weights = None
    if profile.class_balance > 0:
        class_weights = class_balance_weights(train_pixel_counts(crops.dataset, profile.num_classes),
                                              profile.class_balance).to(device)
    return crops, negatives, class_weights


def initial_segmenter(profile, device, init_path: Path | None, init_sha256: str | None = None):
    """The segmenter to train: random (stage 1, or ``init_checkpoint=none``) or loaded from
    ``init_path`` (stage 2). Returns it with a record of what was loaded and left fresh."""
    from .models import load_checkpoint
    torch.manual_seed(profile.seed)
    model = build_model(profile)
    init = {"path": None, "sha256": None, "fresh": []}
    if init_path is not None:
        report = load_checkpoint(model, init_path)
        init = {"path": str(init_path), "sha256": init_sha256, "layout": report.layout, "fresh": report.fresh}
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


def initial_flow(profile, crops, run_dir: Path, device, rank: int):
    """The flow of the joint phase: pre-trained (``run_dir/flow.pt``) or fresh."""
    flow = build_flow(profile).to(device)
    pretrained = run_dir / "flow.pt"
    if pretrained.exists():
        flow.load_state_dict(torch.load(pretrained, map_location=device, weights_only=True))
        return flow
    if rank == 0:
        print(f"note: {pretrained} not found; the flow starts untrained (run train-flow first)")
    # ActNorm initialises itself on the first batch it sees. Show it the same inlier crops
    # on every rank (the seeded crops are identical everywhere), or DDP ranks would start
    # from different flows and drift apart.
    factor = 2 ** profile.flow_levels
    scenes = [crops[i][0] for i in range(min(8, len(crops)))]
    side = min(profile.flow_crop, *scenes[0].shape[-2:]) // factor * factor
    first = torch.stack([x[:, :side, :side] for x in scenes])
    noise = torch.Generator().manual_seed(profile.seed) if device.type == "cpu" else None
    with torch.no_grad():
        flow.bits_per_dim(first.to(device), noise)
    return flow


def setup_training(profile, resume: bool = False, steps: int | None = None, progress: bool = True,
                   closed_set: bool = False) -> TrainingSetup:
    """Data, segmenter (from ``init_checkpoint`` unless ``closed_set``), flow, optimisers; resumed
    from ``runs_dir/checkpoint.pt`` when ``resume`` and it exists."""
    rank, world = _distributed()
    device = _device(profile, rank)
    # Weight decay shrinks the weights of channels that ReLU has switched off towards zero, and
    # as float32 subnormals they make CPU convolutions several times slower in long runs;
    # flushing them to zero changes nothing a model can use.
    torch.set_flush_denormal(True)
    run_dir = Path(profile.path("runs_dir"))
    run_dir.mkdir(parents=True, exist_ok=True)
    total_steps = steps or profile.train_steps
    init_path, init_sha256 = (None, None) if closed_set else resolve_init_checkpoint(profile)  # fail early
    crops, negatives, class_weights = training_data(profile, closed_set, device, rank, world, progress)
    model, init = initial_segmenter(profile, device, init_path, init_sha256)
    flow = initial_flow(profile, crops, run_dir, device, rank) if profile.synthetic_prob > 0 and not closed_set else None
    seg_opt = torch.optim.Adam(optimiser_groups(model, init["fresh"], profile.lr, profile.fresh_lr_mult),
                               lr=profile.lr, weight_decay=profile.weight_decay, eps=profile.optimizer_eps)
    seg_sched = torch.optim.lr_scheduler.LambdaLR(seg_opt, lr_factor(profile.lr_schedule, total_steps))
    loader = training_loader(crops, profile, device, rank, world)
    batches_per_epoch = loader.batch_sampler.per_epoch
    if batches_per_epoch == 0:
        raise ValueError(f"batch_size {profile.batch_size} × {world} ranks exceeds the {len(crops)} training images")
    flow_opt = flow_sched = None
    if flow is not None:
        flow_opt = torch.optim.Adamax(flow.parameters(), lr=profile.flow_joint_lr, eps=profile.optimizer_eps)
        flow_sched = torch.optim.lr_scheduler.ExponentialLR(flow_opt, gamma=0.9)  # per epoch
    amp_dtype = None
    if profile.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
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


def training_loader(crops: SeededCrops, profile, device, rank: int, world: int):
    """A DataLoader over the seeded crops in the trainer's batch order: ``num_workers``
    processes decode and augment ahead of the step (pinned memory and persistent workers on
    CUDA), and the batches are those of the single-process order, wherever a run resumes."""
    workers = profile.num_workers
    return torch.utils.data.DataLoader(crops, batch_sampler=StepBatches(len(crops), profile.batch_size, profile.seed,
                                                                        rank, world),
                                       num_workers=workers, pin_memory=device.type == "cuda",
                                       persistent_workers=workers > 0, prefetch_factor=2 if workers else None)


def lr_factor(schedule: str, total_steps: int):
    """The learning-rate multiplier at step s: ``(1 − s/steps)^0.9`` (poly, as DeepLab) or 1."""
    if schedule == "constant":
        return lambda s: 1.0
    return lambda s: (1 - min(s, total_steps - 1) / total_steps) ** 0.9


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


def next_batch(setup: TrainingSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step ``setup.step``: this rank's slice of a seeded per-epoch permutation.

    Consecutive steps read ahead through the DataLoader; when ``setup.step`` moved otherwise
    (a resume, a notebook repeating a step), the loader restarts at that step."""
    if setup.batch_iter is None or setup.batch_iter_step != setup.step:
        setup.loader.batch_sampler.start = setup.step
        setup.batch_iter = iter(setup.loader)
    images, targets = next(setup.batch_iter)
    setup.batch_iter_step = setup.step + 1
    images = images.to(setup.device, non_blocking=True)
    targets = targets.to(setup.device, non_blocking=True)
    if setup.profile.model != "wrn38" and setup.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def training_inputs(setup: TrainingSetup, images, targets, flow_grad: bool = False):
    """The step's inputs and targets on the loss grid: one negative pasted per image (none in
    the closed-set stage). Returns ``(inputs, seg_t, ood_t, boxes, synthetic)``."""
    p = setup.profile
    if setup.closed_set:
        return images, loss_grid(targets, p.input_scale), None, [], []
    inputs, seg_t, ood_t, boxes, synthetic = paste_negatives(images, targets, setup.negatives, p, setup.generator,
                                                             flow=setup.flow, flow_grad=flow_grad)
    if p.ood_void_as_inlier:  # the released code's L_cla: void pixels are inliers
        ood_t = ood_t.masked_fill(ood_t == OOD_VOID, OOD_INLIER)
    return inputs, loss_grid(seg_t, p.input_scale), loss_grid(ood_t, p.input_scale), boxes, synthetic


def covered_bits_per_dim(setup: TrainingSetup, images, boxes) -> torch.Tensor:
    """L_mle: bits/dim of the inlier patches that flow samples covered (one by one: sizes differ)."""
    noise = setup.generator if setup.device.type == "cpu" else None
    return torch.stack([setup.flow.bits_per_dim(images[i:i + 1, :, b.top:b.top + b.height, b.left:b.left + b.width],
                                                noise) for i, b in boxes]).mean()


def joint_flow_terms(setup: TrainingSetup, images, seg, ood_t, boxes, synthetic) -> dict:
    """The flow's share of a joint step: L_jsd on the synthetic pixels and L_mle of what they covered.

    The segmenter loss itself reaches the flow through the pasted samples."""
    if not any(synthetic):
        return {}
    rows = torch.tensor(synthetic, device=ood_t.device)[:, None, None]
    l_jsd = jsd_to_uniform(seg.float(), (ood_t == OOD_ANOMALY) & rows)
    l_mle = covered_bits_per_dim(setup, images, [(i, b) for i, (b, s) in enumerate(zip(boxes, synthetic)) if s])
    return {"L_jsd": l_jsd, "L_mle": l_mle}


def segmenter_step(setup: TrainingSetup, images, targets) -> dict:
    """One update of the segmenter: ``L = L_d + β·L_x + 10β·L_cla`` on the images with one pasted
    negative each, or L_d alone in the closed-set stage. With ``flow_update='joint'`` the flow
    samples keep their gradient and the flow steps too, on ``L + λ·L_jsd + L_mle``."""
    p = setup.profile
    setup.model.train()
    joint = setup.flow is not None and p.flow_update == "joint"
    inputs, seg_t, ood_t, boxes, synthetic = training_inputs(setup, images, targets, flow_grad=joint)
    with torch.autocast(setup.device.type, dtype=setup.amp_dtype, enabled=setup.amp_dtype is not None):
        seg, ood = setup.train_model(inputs, size=seg_t.shape[-2:])
    if setup.closed_set:
        terms = {"L_d": segmentation_loss(seg.float(), seg_t, setup.class_weights)}
        terms["loss"] = terms["L_d"]
    else:
        terms = densehybrid_loss(seg.float(), ood.float(), seg_t, ood_t, p.beta, setup.class_weights,
                                 p.likelihood_floor)
    flow_terms = joint_flow_terms(setup, images, seg, ood_t, boxes, synthetic) if joint else {}
    total = terms["loss"] + (p.flow_jsd_weight * flow_terms["L_jsd"] + flow_terms["L_mle"] if flow_terms else 0)
    if not torch.isfinite(total):
        raise FloatingPointError(f"the segmenter loss is not finite at step {setup.step + 1} "
                                 f"({ {k: v.item() for k, v in (terms | flow_terms).items()} }); lower lr or check the data")
    setup.seg_opt.zero_grad(set_to_none=True)
    if flow_terms:
        setup.flow_opt.zero_grad(set_to_none=True)
    setup.scaler.scale(total).backward()
    record = {k: v.item() for k, v in (terms | flow_terms).items()}
    if flow_terms:
        record["flow_skipped"] = int(not apply_flow_gradients(setup, True, scaled=True))
    setup.scaler.step(setup.seg_opt)
    setup.scaler.update()
    setup.seg_sched.step()
    return record


def apply_flow_gradients(setup: TrainingSetup, finite: bool, scaled: bool = False) -> bool:
    """Average the flow's gradients over ranks, clip them and step, unless the loss or the
    gradients are not finite: an overflowing sample must not poison the flow. Returns
    whether the step was applied."""
    flow = setup.flow
    if scaled:  # the joint step's gradients went through the AMP loss scaler
        setup.scaler.unscale_(setup.flow_opt)
    finite = torch.tensor(float(finite), device=setup.device)
    if setup.world > 1:  # the flow is not wrapped in DDP: average its gradients by hand
        for param in flow.parameters():  # every rank reduces every tensor, or gloo/NCCL hang
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            torch.distributed.all_reduce(param.grad)
            param.grad /= setup.world
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)  # skip on all ranks
    grad_norm = torch.nn.utils.clip_grad_norm_(flow.parameters(), 100.0)
    applied = bool(finite) and bool(torch.isfinite(grad_norm))
    if applied:
        setup.flow_opt.step()
    return applied


def flow_step(setup: TrainingSetup, images, targets) -> dict:
    """One update of the flow (``flow_update='alternate'``): ``L_mle + λ·L_jsd``. Its samples,
    drawn *with* gradient, are pasted into the same images and passed through the segmenter,
    which this step does not update."""
    p, model, flow = setup.profile, setup.model, setup.flow
    model.eval()  # BatchNorm statistics stay those of the segmenter step
    model.requires_grad_(False)
    mixed, _, ood_f, boxes_f, _ = paste_negatives(images, targets, setup.negatives, p, setup.generator,
                                                  flow=flow, synthetic_prob=1.0, flow_grad=True)
    ood_f = loss_grid(ood_f, p.input_scale)
    seg_f, _ = model(mixed, size=ood_f.shape[-2:])
    l_jsd = jsd_to_uniform(seg_f, ood_f == OOD_ANOMALY)
    l_mle = covered_bits_per_dim(setup, images, list(enumerate(boxes_f)))
    flow_loss = l_mle + p.flow_jsd_weight * l_jsd
    setup.flow_opt.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(flow_loss.detach()))
    if finite:  # a non-finite flow step is skipped, not applied
        flow_loss.backward()
    applied = apply_flow_gradients(setup, finite)
    model.requires_grad_(True)
    return {"L_mle": l_mle.item(), "L_jsd": l_jsd.item(), "flow_skipped": int(not applied)}


def train(profile, resume: bool = False, steps: int | None = None, progress: bool = True,
          return_models: bool = False, closed_set: bool = False) -> dict:
    """Train the profile's segmenter (and fine-tune its flow); returns a summary dict.

    Writes to ``profile.runs_dir``: ``checkpoint.pt`` (resume state), ``model.pt`` (final
    segmenter state_dict), ``flow_joint.pt`` (final flow), ``train_log.jsonl``.
    ``closed_set``: stage 1, the inlier classes only (L_d; no negatives, no flow).
    """
    s = setup_training(profile, resume, steps, progress, closed_set)
    p, flow_skipped = s.profile, 0
    if s.init["path"] and s.rank == 0:
        print(f"fine-tuning from {s.init['path']} ({s.init['layout']}); started fresh: "
              f"{describe_keys(s.init['fresh']) or 'nothing'}")
    bar = tqdm(total=s.total_steps, initial=s.step, disable=not progress or s.rank != 0,
               desc="closed-set pretraining" if closed_set else "DenseHybrid training")
    start = time.perf_counter()
    log = open(s.run_dir / "train_log.jsonl", "a") if s.rank == 0 else None
    while s.step < s.total_steps:
        images, targets = next_batch(s)
        record = {"step": s.step + 1} | segmenter_step(s, images, targets)
        if s.flow is not None and p.flow_update == "alternate" and p.flow_every and (s.step + 1) % p.flow_every == 0:
            record |= flow_step(s, images, targets)
        flow_skipped += record.get("flow_skipped", 0)
        s.step += 1
        if s.flow_sched is not None and s.step % s.batches_per_epoch == 0:
            s.flow_sched.step()
        if closed_set and p.val_every and (s.step % p.val_every == 0 or s.step == s.total_steps) and log:
            record["val_mIoU"] = validation_miou(s.model, p, s.device)
            bar.write(f"step {s.step}: val mIoU {100 * record['val_mIoU']:.2f}")
        if log:  # logged before the checkpoint, so a resumed run never misses a step's line
            bar.update()
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "step"})
            log.write(json.dumps(record | {"time_s": round(time.perf_counter() - start, 3)}) + "\n")
            log.flush()
        if s.step % p.checkpoint_every == 0 or s.step == s.total_steps:
            save_training_checkpoint(s)
    bar.close()
    if log:
        log.close()
        atomic_save(s.model.state_dict(), s.run_dir / "model.pt")
        if s.flow is not None:
            atomic_save(s.flow.state_dict(), s.run_dir / "flow_joint.pt")
    summary = {"steps": s.step, "train_time_s": round(time.perf_counter() - start, 1), "rank": s.rank,
               "world": s.world, "flow_steps_skipped": flow_skipped,  # of this process (not since resume)
               "init_checkpoint": s.init}
    if return_models:
        summary |= {"model": s.model, "flow": s.flow}
    return summary


def pretrain(profile, resume: bool = False, progress: bool = True) -> dict:
    """Stage 1: the closed-set segmenter, trained from scratch on the inlier classes (L_d only).

    The quick tier's counterpart of NVIDIA's Cityscapes checkpoint, which the papers fine-tune.
    Runs in ``profile.pretrain_dir`` for ``pretrain_steps`` at ``pretrain_lr``; the trainer's
    checkpoints and ``--resume`` apply, and val mIoU is logged every ``val_every`` steps.
    """
    import dataclasses
    stage1 = dataclasses.replace(profile, runs_dir=profile.pretrain_dir, train_steps=profile.pretrain_steps,
                                 lr=profile.pretrain_lr, synthetic_prob=0.0, beta=0.0)
    return train(stage1, resume=resume, progress=progress, closed_set=True)


@torch.no_grad()
def validation_confusion(model, profile, device=None):
    """Closed-set confusion matrix of ``model`` on the profile's Cityscapes val split (full images)."""
    from .metrics import confusion_matrix
    device = device or next(model.parameters()).device
    val = CityscapesSegmentation(profile.path("cityscapes_root"), "val")
    model.eval()
    total = 0
    for i in range(len(val)):
        image, target = val[i]
        seg, _ = model(image[None].to(device))
        total = total + confusion_matrix(seg[0].argmax(0).cpu(), target, profile.num_classes)
    return total


def validation_miou(model, profile, device=None) -> float:
    """Closed-set mIoU of ``model`` on the profile's Cityscapes val split (full images)."""
    from .metrics import mean_iou
    total = validation_confusion(model, profile, device)
    return mean_iou(total) if not isinstance(total, int) else math.nan
