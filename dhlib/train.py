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

import dataclasses
import json
import time

import torch
from tqdm.auto import tqdm

from .checkpointing import atomic_save
from .data.cityscapes import CityscapesSegmentation
from .data.labels import OOD_ANOMALY, OOD_INLIER, OOD_VOID
from .evaluation import closed_set_confusion, closed_set_miou
from .losses import densehybrid_loss, jsd_to_uniform, segmentation_loss
from .negatives import NegativeRecipe, paste_negatives
from .train_setup import TrainingSetup, describe_keys, save_training_checkpoint, setup_training


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
    """The step's inputs and targets on the loss grid: ``negatives_per_image`` negatives pasted
    into each image, one after the other (none in the closed-set stage).

    Returns ``(inputs, seg_t, ood_t, flow_boxes, synthetic_t)``: ``flow_boxes`` lists
    ``(image index, Box)`` of every flow sample, ``synthetic_t`` marks the pixels that show one
    (on the loss grid; a later paste may cover part of an earlier one)."""
    p = setup.profile
    if setup.closed_set:
        return images, loss_grid(targets, p.input_scale), None, [], None
    recipe = NegativeRecipe.from_profile(p)
    inputs, seg_t, ood_t, flow_boxes = images, targets, None, []
    synthetic_px = torch.zeros_like(targets, dtype=torch.bool)
    for _ in range(p.negatives_per_image):
        inputs, seg_t, ood_new, boxes, synthetic = paste_negatives(inputs, seg_t, setup.negatives, recipe,
                                                                   setup.generator, flow=setup.flow,
                                                                   flow_grad=flow_grad)
        pasted = ood_new == OOD_ANOMALY
        rows = torch.tensor(synthetic, device=pasted.device)[:, None, None]
        # Pixels pasted earlier are void to this paste (their seg target is 255): keep them negative.
        ood_t = ood_new if ood_t is None else ood_new.masked_fill(ood_t == OOD_ANOMALY, OOD_ANOMALY)
        synthetic_px = (synthetic_px & ~pasted) | (pasted & rows)
        flow_boxes += [(i, b) for i, (b, s) in enumerate(zip(boxes, synthetic)) if s]
    if p.ood_void_as_inlier:  # the released code's L_cla: void pixels are inliers
        ood_t = ood_t.masked_fill(ood_t == OOD_VOID, OOD_INLIER)
    synthetic_t = loss_grid(synthetic_px.long(), p.input_scale).bool()
    return inputs, loss_grid(seg_t, p.input_scale), loss_grid(ood_t, p.input_scale), flow_boxes, synthetic_t


def covered_bits_per_dim(setup: TrainingSetup, images, boxes) -> torch.Tensor:
    """L_mle: bits/dim of the inlier patches that flow samples covered, averaged over the patches.

    With ``flow_shape_per_step`` the patches of one size go through the flow as one batch (all
    of a paste's patches share a size); otherwise each goes alone, in the order of the boxes."""
    crops = [images[i:i + 1, :, b.top:b.top + b.height, b.left:b.left + b.width] for i, b in boxes]
    noise = setup.generator  # seeded on every device (flows.layers.draw_noise)
    if not setup.profile.flow_shape_per_step:
        return torch.stack([setup.flow.bits_per_dim(crop, noise) for crop in crops]).mean()
    by_size = {}
    for crop in crops:
        by_size.setdefault(tuple(crop.shape[-2:]), []).append(crop)
    # bits_per_dim averages over its batch; weighted by batch size, every patch counts once
    return sum(setup.flow.bits_per_dim(torch.cat(group), noise) * len(group) for group in by_size.values()) / len(boxes)


def joint_flow_terms(setup: TrainingSetup, images, seg, flow_boxes, synthetic_t) -> dict:
    """The flow's share of a joint step: L_jsd on the synthetic pixels and L_mle of what they covered.

    The segmenter loss itself reaches the flow through the pasted samples."""
    if not flow_boxes:
        return {}
    return {"L_jsd": jsd_to_uniform(seg.float(), synthetic_t),
            "L_mle": covered_bits_per_dim(setup, images, flow_boxes)}


def segmenter_step(setup: TrainingSetup, images, targets) -> dict:
    """One update of the segmenter: ``L = L_d + β·L_x + 10β·L_cla`` on the images with their pasted
    negatives, or L_d alone in the closed-set stage. With ``flow_update='joint'`` the flow
    samples keep their gradient and the flow steps too, on ``L + λ·L_jsd + L_mle``."""
    p = setup.profile
    setup.model.train()
    joint = setup.flow is not None and p.flow_update == "joint"
    inputs, seg_t, ood_t, flow_boxes, synthetic_t = training_inputs(setup, images, targets, flow_grad=joint)
    with torch.autocast(setup.device.type, dtype=setup.amp_dtype, enabled=setup.amp_dtype is not None):
        seg, ood = setup.train_model(inputs, size=seg_t.shape[-2:])
    if setup.closed_set:
        terms = {"L_d": segmentation_loss(seg.float(), seg_t, setup.class_weights)}
        terms["loss"] = terms["L_d"]
    else:
        terms = densehybrid_loss(seg.float(), ood.float(), seg_t, ood_t, p.beta, setup.class_weights,
                                 p.likelihood_floor, setup.class_weights if p.ood_class_balance else None,
                                 ood_focal_gamma=p.ood_focal_gamma)
    flow_terms = joint_flow_terms(setup, images, seg, flow_boxes, synthetic_t) if joint else {}
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
    # Wholly inside the image, whatever negative_overhang: L_mle reads the whole patch a sample covers.
    recipe = dataclasses.replace(NegativeRecipe.from_profile(p), overhang=0.0)
    mixed, _, ood_f, boxes_f, _ = paste_negatives(images, targets, setup.negatives, recipe,
                                                  setup.generator, flow=flow, synthetic_prob=1.0, flow_grad=True)
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


def flow_step_due(setup: TrainingSetup) -> bool:
    """Whether the current iteration ends with a flow step: with ``flow_update='alternate'``,
    after every ``flow_every``-th segmenter step (the joint update steps the flow in every
    segmenter step instead)."""
    p = setup.profile
    return (setup.flow is not None and p.flow_update == "alternate" and bool(p.flow_every)
            and (setup.step + 1) % p.flow_every == 0)


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
        dropped = describe_keys(s.init["dropped"])
        print(f"{'pretraining' if closed_set else 'fine-tuning'} from {s.init['path']} ({s.init['layout']}); started fresh: "
              f"{describe_keys(s.init['fresh']) or 'nothing'}"
              + (f"; dropped, not in this model: {dropped}" if dropped else ""))
    bar = tqdm(total=s.total_steps, initial=s.step, disable=not progress or s.rank != 0,
               desc="closed-set pretraining" if closed_set else "DenseHybrid training")
    start = time.perf_counter()
    log = open(s.run_dir / "train_log.jsonl", "a") if s.rank == 0 else None
    while s.step < s.total_steps:
        images, targets = next_batch(s)
        record = {"step": s.step + 1} | segmenter_step(s, images, targets)
        if flow_step_due(s):
            record |= flow_step(s, images, targets)
        flow_skipped += record.get("flow_skipped", 0)
        s.step += 1
        if s.flow_sched is not None and s.step % s.batches_per_epoch == 0:
            s.flow_sched.step()
        if closed_set and p.val_every and (s.step % p.val_every == 0 or s.step == s.total_steps) and log:
            record["val_mIoU"] = validation_miou(s.model, p)
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
    """Stage 1: the closed-set segmenter, trained on the inlier classes (L_d only), from scratch
    or from ``pretrain_init``.

    The quick tier's counterpart of NVIDIA's Cityscapes checkpoint, which the papers fine-tune.
    Runs in ``profile.pretrain_dir`` for ``pretrain_steps`` at ``pretrain_lr``; the trainer's
    checkpoints and ``--resume`` apply, and val mIoU is logged every ``val_every`` steps.
    """
    import dataclasses
    # fresh_lr_mult = 1: a warm start's reshaped layer learns at the pretraining rate, as the rest
    stage1 = dataclasses.replace(profile, runs_dir=profile.pretrain_dir, train_steps=profile.pretrain_steps,
                                 lr=profile.pretrain_lr, synthetic_prob=0.0, beta=0.0, fresh_lr_mult=1.0)
    return train(stage1, resume=resume, progress=progress, closed_set=True)


def validation_confusion(model, profile):
    """Closed-set confusion matrix of ``model`` on the profile's Cityscapes val split (full images)."""
    val = CityscapesSegmentation(profile.path("cityscapes_root"), "val")
    return closed_set_confusion(model, val, profile.num_classes)


def validation_miou(model, profile) -> float:
    """Closed-set mIoU of ``model`` on the profile's Cityscapes val split (full images); NaN if empty."""
    val = CityscapesSegmentation(profile.path("cityscapes_root"), "val")
    return closed_set_miou(model, val, profile.num_classes)
