"""The joint trainer: DenseHybrid's segmenter with real and synthetic negatives (TPAMI recipe).

Each iteration:

1. **Segmenter step.** A batch of augmented inlier crops gets one negative per image: a flow
   sample (probability b, drawn without gradient) or an ADE20K patch. The segmenter
   minimises ``L = L_d + β·L_x + 10β·L_cla`` with Adam (on the labels subsampled to the
   model's ``input_scale``, see :func:`loss_grid`; full resolution in the paper profile).
2. **Flow step** (every ``flow_every`` iterations, when b > 0). The flow samples *with*
   gradient; the samples are pasted into the same crops and passed through the segmenter,
   whose weights this step does not update. The flow minimises
   ``L_mle + λ·L_jsd``: bits/dim of the inlier patches its samples covered, plus the JSD
   between the segmenter's posterior on the samples and the uniform distribution. Adamax,
   with a per-epoch exponential decay.

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
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpointing import atomic_save, restore_rng_state, rng_state
from .data.ade20k import ADE20KNegatives
from .data.cityscapes import CityscapesSegmentation
from .data.transforms import train_transforms
from .flows import build_flow
from .losses import class_balance_weights, densehybrid_loss, jsd_to_uniform, segmentation_loss
from .models import build_model
from .negatives import paste_negatives


class SeededCrops(torch.utils.data.Dataset):
    """Training crops whose random augmentation is a function of (seed, epoch, index).

    That makes the data independent of worker processes and of where a run was resumed.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + self.epoch * len(self.dataset) + index)
            return self.dataset[index]


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """This rank's batches of one epoch: a seeded permutation, cut into full batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    per_rank = n // world
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    return [mine[k:k + batch].tolist() for k in range(0, len(mine) - batch + 1, batch)]


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


def train(profile, resume: bool = False, steps: int | None = None, progress: bool = True,
          return_models: bool = False, closed_set: bool = False) -> dict:
    """Train the profile's segmenter (and fine-tune its flow); returns a summary dict.

    Writes to ``profile.runs_dir``: ``checkpoint.pt`` (resume state), ``model.pt`` (final
    segmenter state_dict), ``flow_joint.pt`` (final flow), ``train_log.jsonl``.
    ``closed_set``: stage 1, the inlier classes only (L_d; no negatives, no flow).
    """
    rank, world = _distributed()
    device = _device(profile, rank)
    run_dir = Path(profile.path("runs_dir"))
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, log_path = run_dir / "checkpoint.pt", run_dir / "train_log.jsonl"
    total_steps = steps or profile.train_steps

    if profile.use_synthcity and rank == 0:
        from .data.synthcity import export
        export(profile=profile, progress=progress)
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

    torch.manual_seed(profile.seed)
    model = build_model(profile).to(device)
    loss_scale = profile.input_scale  # losses on the grid the model sees (see loss_grid); 1 for wrn38
    flow = None
    if profile.synthetic_prob > 0 and not closed_set:
        flow = build_flow(profile).to(device)
        pretrained = run_dir / "flow.pt"
        if pretrained.exists():
            flow.load_state_dict(torch.load(pretrained, map_location=device, weights_only=True))
        else:
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
    seg_opt = torch.optim.Adam(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    seg_sched = torch.optim.lr_scheduler.LambdaLR(      # polynomial decay, as DeepLab
        seg_opt, lambda s: (1 - min(s, total_steps - 1) / total_steps) ** 0.9)
    batches_per_epoch = len(epoch_batches(len(crops), profile.batch_size, profile.seed, 0, rank, world))
    if batches_per_epoch == 0:
        raise ValueError(f"batch_size {profile.batch_size} × {world} ranks exceeds the {len(crops)} training images")
    flow_opt = flow_sched = None
    if flow is not None:
        flow_opt = torch.optim.Adamax(flow.parameters(), lr=profile.flow_joint_lr)
        flow_sched = torch.optim.lr_scheduler.ExponentialLR(flow_opt, gamma=0.9)  # per epoch
    generator = torch.Generator().manual_seed(profile.seed * 31 + rank)

    step = flow_skipped = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        seg_opt.load_state_dict(state["seg_opt"])
        seg_sched.load_state_dict(state["seg_sched"])
        if flow is not None:
            flow.load_state_dict(state["flow"])
            flow_opt.load_state_dict(state["flow_opt"])
            flow_sched.load_state_dict(state["flow_sched"])
        step = state["step"]
        restore_rng_state(state["rng"], generator)
    elif rank == 0:
        log_path.unlink(missing_ok=True)

    train_model = model
    if world > 1:
        if device.type == "cuda":  # small per-GPU batches: normalise over the whole batch
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if profile.compile:
        train_model = torch.compile(train_model)
    amp_dtype = None
    if profile.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def save_checkpoint():
        if rank != 0:
            return
        state = {"model": model.state_dict(), "seg_opt": seg_opt.state_dict(),
                 "seg_sched": seg_sched.state_dict(), "step": step, "rng": rng_state(generator)}
        if flow is not None:
            state |= {"flow": flow.state_dict(), "flow_opt": flow_opt.state_dict(),
                      "flow_sched": flow_sched.state_dict()}
        atomic_save(state, checkpoint_path)

    bar = tqdm(total=total_steps, initial=step, desc="closed-set pretraining" if closed_set else "DenseHybrid training", disable=not progress or rank != 0)
    start = time.perf_counter()
    log = open(log_path, "a") if rank == 0 else None
    while step < total_steps:
        epoch, position = divmod(step, batches_per_epoch)
        crops.epoch = epoch
        batch_indices = epoch_batches(len(crops), profile.batch_size, profile.seed, epoch, rank, world)[position]
        images, targets = map(torch.stack, zip(*(crops[i] for i in batch_indices)))
        images, targets = images.to(device), targets.to(device)
        if profile.model != "wrn38" and device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)

        # 1. segmenter step: negatives pasted without gradient into the flow
        model.train()
        if closed_set:
            seg_t = loss_grid(targets, loss_scale)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                seg, _ = train_model(images, size=seg_t.shape[-2:])
            l_d = segmentation_loss(seg.float(), seg_t, class_weights)
            terms = {"L_d": l_d, "loss": l_d}
        else:
            mixed, seg_t, ood_t, boxes, synthetic = paste_negatives(images, targets, negatives, profile,
                                                                    generator, flow=flow)
            seg_t, ood_t = loss_grid(seg_t, loss_scale), loss_grid(ood_t, loss_scale)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                seg, ood = train_model(mixed, size=seg_t.shape[-2:])
            terms = densehybrid_loss(seg.float(), ood.float(), seg_t, ood_t, profile.beta, class_weights,
                                     profile.likelihood_floor)
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(f"the segmenter loss is not finite at step {step + 1} "
                                     f"({ {k: v.item() for k, v in terms.items()} }); lower lr or check the data")
        seg_opt.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(seg_opt)
        scaler.update()
        seg_sched.step()
        record = {"step": step + 1, **{k: v.item() for k, v in terms.items()}}

        # 2. flow step: samples with gradient, through the segmenter without updating it
        if flow is not None and profile.flow_every and (step + 1) % profile.flow_every == 0:
            model.eval()  # BatchNorm statistics stay those of the segmenter step
            model.requires_grad_(False)
            mixed, _, ood_f, boxes_f, synth_f = paste_negatives(
                images, targets, negatives, profile, generator, flow=flow, synthetic_prob=1.0, flow_grad=True)
            ood_f = loss_grid(ood_f, loss_scale)
            seg_f, _ = model(mixed, size=ood_f.shape[-2:])
            l_jsd = jsd_to_uniform(seg_f, ood_f == 1)
            # L_mle on the inlier patches the samples covered (they differ in size: one by one)
            noise = generator if device.type == "cpu" else None
            l_mle = torch.stack([flow.bits_per_dim(images[i:i + 1, :, b.top:b.top + b.height, b.left:b.left + b.width],
                                                   noise) for i, b in enumerate(boxes_f)]).mean()
            flow_loss = l_mle + profile.flow_jsd_weight * l_jsd
            flow_opt.zero_grad(set_to_none=True)
            finite = torch.isfinite(flow_loss.detach()).float()
            if finite:  # a non-finite flow step is skipped, not applied
                flow_loss.backward()
            if world > 1:  # the flow is not wrapped in DDP: average its gradients by hand
                for p in flow.parameters():  # every rank reduces every tensor, or gloo/NCCL hang
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)  # skip on all ranks
            grad_norm = torch.nn.utils.clip_grad_norm_(flow.parameters(), 100.0)
            applied = bool(finite) and bool(torch.isfinite(grad_norm))
            if applied:  # an overflowing sample must not poison the flow
                flow_opt.step()
            else:
                flow_skipped += 1
            model.requires_grad_(True)
            record |= {"L_mle": l_mle.item(), "L_jsd": l_jsd.item(), "flow_skipped": int(not applied)}
        step += 1
        if flow_sched is not None and step % batches_per_epoch == 0:
            flow_sched.step()
        if rank == 0:
            bar.update()
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "step"})
            log.write(json.dumps(record | {"time_s": round(time.perf_counter() - start, 3)}) + "\n")
            log.flush()
        if step % profile.checkpoint_every == 0 or step == total_steps:
            save_checkpoint()
        if closed_set and rank == 0 and profile.val_every and (step % profile.val_every == 0 or step == total_steps):
            miou = validation_miou(model, profile, device)
            log.write(json.dumps({"step": step, "val_mIoU": miou, "time_s": round(time.perf_counter() - start, 3)}) + "\n")
            log.flush()
            bar.write(f"step {step}: val mIoU {100 * miou:.2f}")
    bar.close()
    if log:
        log.close()
    if rank == 0:
        atomic_save(model.state_dict(), run_dir / "model.pt")
        if flow is not None:
            atomic_save(flow.state_dict(), run_dir / "flow_joint.pt")
    summary = {"steps": step, "train_time_s": round(time.perf_counter() - start, 1), "rank": rank, "world": world,
               "flow_steps_skipped": flow_skipped}  # non-finite flow steps of this process (not since resume)
    if return_models:
        summary |= {"model": model, "flow": flow}
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
def validation_miou(model, profile, device=None) -> float:
    """Closed-set mIoU of ``model`` on the profile's Cityscapes val split (full images)."""
    from .metrics import confusion_matrix, mean_iou
    device = device or next(model.parameters()).device
    val = CityscapesSegmentation(profile.path("cityscapes_root"), "val")
    model.eval()
    total = 0
    for i in range(len(val)):
        image, target = val[i]
        seg, _ = model(image[None].to(device))
        total = total + confusion_matrix(seg[0].argmax(0).cpu(), target, profile.num_classes)
    return mean_iou(total) if not isinstance(total, int) else math.nan
