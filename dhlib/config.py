"""Profiles: the two tiers of DenseHybrid Lab as plain dataclasses.

A *profile* holds every knob of a run: where the data lives, how big the scenes and crops
are, how negatives are pasted. There are three, in two tiers:

* ``quick`` (default): a laptop CPU, the procedural SynthCity world written to disk in the
  real dataset formats, small sizes, minutes of run time.
* ``paper`` (TPAMI 2024: real and flow negatives) and ``paper-eccv`` (ECCV 2022: ADE20K
  negatives only): CUDA GPUs, the real Cityscapes / ADE20K / Fishyscapes trees and the
  hyper-parameters of the authors' released code, each with its source beside it.

Both tiers run the *same* code; only these numbers differ. Pick one with
``DHLIB_PROFILE=quick|paper|paper-eccv`` or ``--profile``, and change single fields with
``load_profile('quick', batch_size=4)`` or ``--set batch_size=4`` on the command line.
Relative paths are resolved against the project root (``DHLIB_ROOT`` overrides it).
"""
from __future__ import annotations

import ast
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .profile_checks import validate

PROFILES = ("quick", "paper", "paper-eccv")


def project_root() -> Path:
    """The folder holding ``data/``, ``figures/`` and ``runs/``.

    ``DHLIB_ROOT`` wins; otherwise the checkout that contains this package (editable
    install), otherwise the current working directory.
    """
    if os.environ.get("DHLIB_ROOT"):
        return Path(os.environ["DHLIB_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.cwd().resolve()


@dataclass
class Profile:
    """Every setting of a run. Paths may be relative to :func:`project_root`."""

    name: str = "quick"
    seed: int = 0
    device: str = "auto"  # 'auto' (a GPU when CUDA is available), 'cpu', 'cuda' or 'cuda:N'

    # --- datasets (the real formats; SynthCity writes the same trees) -------------------
    use_synthcity: bool = True  # quick: generate the trees; paper: read the downloaded ones
    # Where SynthCity writes its three trees. It writes nowhere else, and never into a folder it
    # did not make; `{synthcity_root}` in a root below stands for this folder. A root pointed
    # elsewhere (your own Cityscapes, say) is read as it is, and SynthCity leaves it alone.
    synthcity_root: str = "data/synthcity"
    cityscapes_root: str = "{synthcity_root}/cityscapes"
    ade20k_root: str = "{synthcity_root}/ade20k/ADEChallengeData2016"
    fishyscapes_root: str = "{synthcity_root}/fishyscapes"
    fishyscapes_split: str = "Static"  # 'Static' or 'LostAndFound'
    num_classes: int = 19  # Cityscapes train ids; SynthCity uses a subset of them

    # --- SynthCity sizes (quick tier only) ----------------------------------------------
    # The world's own seed, apart from `seed` (initialisation, data order, pasting): runs
    # with other training seeds then see the same scenes and the same test set.
    synthcity_seed: int = 0
    synthcity_height: int = 256
    synthcity_width: int = 512
    synthcity_train: int = 600
    synthcity_val: int = 100
    synthcity_negatives: int = 300
    synthcity_anomaly_test: int = 100

    # --- training-time augmentation (DenseHybrid: random scale 0.5-2, crop, flip) -------
    # crop_size: a side (square crops) or (height, width). quick: the whole 256×512 scene at
    # its own scale, seen by the half-resolution model (input_scale): in a CPU budget, whole
    # scenes at low resolution teach the street's layout better than small rescaled crops.
    crop_size: int | tuple[int, int] = (256, 512)
    scale_range: tuple[float, float] = (1.0, 1.0)
    batch_size: int = 4
    # Processes that decode and augment batches ahead of the training step (torch DataLoader);
    # 0 = in the main process.
    num_workers: int = 0
    # Probability that a crop is centred on a pixel of a class drawn uniformly from those
    # present (class-uniform sampling of NVIDIA's Cityscapes code, class_uniform_pct = 0.5),
    # so that poles, lights and signs are seen often enough. quick: 0 (whole scenes).
    class_uniform: float = 0.0

    # --- stage 1: the closed-set segmenter (python -m dhlib pretrain) --------------------
    # The papers fine-tune NVIDIA's Cityscapes model; the quick tier trains its own once, with
    # L_d only, and ships it in weights/ (the paper tier never runs this stage itself). quick:
    # `make pretrain` trains it in two runs. The first is from scratch at skip_stride 4 (30 000
    # steps at 1.5e-3, a restart at 20 000: the Makefile names its settings); these defaults are
    # the second, which continues it at skip_stride 2, where the decoder resolves thin classes.
    pretrain_steps: int = 6000
    pretrain_lr: float = 5e-4     # Adam with polynomial decay
    # Warm restarts of that decay: at each of these steps (those the run reaches) the rate, having
    # decayed to zero, jumps back to where a poly schedule ending at the next one stands. A
    # finished run extended from its checkpoint (--resume with a larger pretrain_steps) follows
    # this schedule, so naming the old end here makes the extension reproducible from scratch.
    pretrain_restarts: tuple[int, ...] = ()
    # A closed-set run's model.pt that stage 1 starts from ('none': random weights). Tensors of a
    # shape the profile's model does not share start fresh, so a model can be warm-started across
    # a change of its layout (skip_stride changes one 1×1 projection).
    pretrain_init: str | None = "runs/quick-pretrain-ext/model.pt"
    pretrain_dir: str = "runs/quick-pretrain-s2"
    val_every: int = 1000         # log val mIoU every k pretraining steps (0: only at the end)

    # --- stage 2: DenseHybrid fine-tuning (python -m dhlib train) -------------------------
    # The segmenter to start from: a shipped name (dhlib.models.weights, hash-checked), a path
    # (NVIDIA's one-head file, the official two-head file or one of ours), or None for random
    # weights (--set init_checkpoint=none). Parameters the file lacks (the OOD head of a
    # closed-set or NVIDIA file, the attention block) start fresh, at fresh_lr_mult × lr.
    init_checkpoint: str | None = "quick-closed-set"
    fresh_lr_mult: float = 10.0
    # The pre-trained flow the joint phase starts from, as the TPAMI recipe pre-trains DenseFlow
    # on inlier crops before training it jointly: a shipped name (hash-checked), a path to a flow
    # state_dict, or None for this run's own runs_dir/flow.pt, written by `train-flow`
    # (--set flow_init=none). quick: the shipped flow, so the demo spends its time on stage 2.
    flow_init: str | None = "quick-flow"

    # --- segmenter training ------------------------------------------------------------
    # quick: sized so that `make demo` fits its time budget on a 2-core laptop.
    train_steps: int = 1300
    lr: float = 5e-4              # Adam, fine-tuning the closed-set segmenter
    # 'poly': lr·(1 − step/steps)^0.9, as DeepLab; 'constant': the released DenseHybrid
    # script, whose lr_min equals its lr so that its cosine schedule never moves.
    lr_schedule: str = "poly"
    optimizer_eps: float = 1e-7   # Adam (segmenter) and Adamax (flow): the released scripts' eps
    weight_decay: float = 1e-4
    # L_d weights classes by (median frequency / frequency)^class_balance: 0 = plain
    # cross-entropy as in the papers; the quick tier's CPU budget needs the rare classes pushed.
    class_balance: float = 0.5
    beta: float = 0.03            # L = L_d + β·L_x + 10β·L_cla; β = 0.03 with ADE20K negatives (DenseHybrid ECCV'22)
    # L_x = mean ln p̂(x) on negatives is unbounded below. The papers fine-tune at lr 1e-6 and
    # never get far; the quick tier's learning rates are orders of magnitude larger, where the
    # plain term runs away and drags L_d up (docs/RESULTS.md). A float m floors it with the
    # smooth hinge softplus(ln p̂ − m) (losses.likelihood_loss, our addition); None = the papers' plain term.
    likelihood_floor: float | None = -5.0
    flow_jsd_weight: float = 0.03 # flow loss L_mle + 0.03·L_jsd (TPAMI'24)
    # How the flow learns during fine-tuning. 'alternate': a flow step (L_mle + λ·L_jsd through
    # the frozen segmenter) after every flow_every segmenter steps. 'joint': the released
    # joint-flow code (Open-set-M2F joint_trainer.py): the samples are pasted with gradient,
    # the segmenter loss plus λ·L_jsd and L_mle back-propagate in one pass, and both step.
    flow_update: str = "alternate"
    flow_every: int = 12          # 'alternate' only: a flow step after every k segmenter steps (0: never)
    # L_cla on void pixels (ego vehicle, out of ROI): the released code trains the OOD head to
    # call them inliers (no ignore index); False leaves them out of L_cla, as L_d does.
    ood_void_as_inlier: bool = False
    # L_cla counts an inlier pixel with L_d's weight of its class (losses.ood_head_loss; our
    # addition, for the same reason as class_balance): a head that learns "in" from road and
    # building flags the rare inlier classes (wall, fence, sign) as "out". False: the papers' L_cla.
    ood_class_balance: bool = False
    # γ of a focal L_cla (losses.ood_head_loss; our addition): the head's loss fades on the pixels
    # it already gets right and stays on the inlier pixels it takes for anomalies, the false
    # alarms that set FPR95. 0: the papers' cross-entropy.
    ood_focal_gamma: float = 0.0
    checkpoint_every: int = 250
    # Mixed precision in training steps: bf16 on GPUs that support it (else fp16 with a
    # GradScaler) and on CPUs with bf16 in hardware (devices.mixed_precision_dtype); float32
    # elsewhere. Evaluation always computes in float32.
    amp: bool = True
    compile: bool = False         # torch.compile the segmenter

    # --- negative pasting (negatives.py follows the released code's cut) -----------------
    # A real negative is a negative_crop² window of an ADE20K image whose shorter side was
    # resized to negative_resize, then rescaled by s ~ U(negative_scale_range); it is pasted
    # as it is, under a rectangle (probability negative_rect_prob) or the union of
    # negative_class_draws labels drawn with replacement. Paper: 384 px, 0.5-2, 192 px, ½, 2
    # (DenseHybrid dlv3_cityscapes.py neg_transforms; semseg_negatives_joint_th.py). quick:
    # the same fractions of its 256 px scene height as 192 px of the 512 px crops.
    negative_resize: int = 192
    negative_scale_range: tuple[float, float] = (0.5, 2.0)
    negative_crop: int = 96
    negative_rect_prob: float = 0.5
    negative_class_draws: int = 2
    # ADE20K ids a class-union mask never draws while the window holds another class: negatives
    # that are scenery of the inlier world (a room's wall is a wall, its floor is ground) teach
    # the OOD head that inlier classes are "out". () = every id, as the released code draws.
    # quick: wall (1) and floor (4), the backdrop of every SynthCity room and most of its pixels,
    # where real ADE20K images spread over many classes.
    negative_exclude_classes: tuple[int, ...] = (1, 4)
    # Negatives pasted into each training image, one after the other. The papers paste one; more
    # give the OOD head more negative pixels per step (a lever for the quick tier's short budget).
    negatives_per_image: int = 1
    # Share of a negative's side that may lie beyond the image edge, so that some negatives are
    # cut by the frame, as objects in photographs are. 0 = wholly inside, as the released code
    # pastes; the joint flow update needs 0 (its L_mle reads the whole covered box).
    negative_overhang: float = 0.0
    # Sides of a flow sample, drawn uniformly per side in multiples of the flow's squeeze
    # factor. Paper: 16-216 px (Open-set-M2F joint_trainer.py sample_shape); quick: scaled.
    flow_sample_min_side: int = 16
    flow_sample_max_side: int = 96
    # True: the flow samples of a batch share one shape, drawn once per paste, and come from one
    # batched pass of the flow, as in the released joint trainer (Open-set-M2F joint_trainer.py:
    # sample_shape draws one (h, w) per iteration, flow.sample draws the whole batch). False: a
    # shape per sample, each its own pass (the quick tier's shipped runs were made so).
    flow_shape_per_step: bool = False

    # --- model ---------------------------------------------------------------------------
    model: str = "small"                   # 'small' (CPU) or 'wrn38' (DeepWV3PlusTH)
    attention: bool = True                 # the residual CBAM block on the decoder feature
    small_widths: tuple[int, int, int, int, int] = (32, 48, 64, 96, 128)
    aspp_dim: int = 64
    fine_dim: int = 16
    aspp_rates: tuple[int, int, int] = (4, 8, 12)  # at stride 8 on 256 px crops
    # The small model's decoder reads its skip feature at stride 4 (mod2) or 2 (mod1, as the
    # WRN38 model reads mod2 at stride 2): 2 resolves 3-px poles, at a higher decoder cost.
    skip_stride: int = 2
    # The small model resizes its input by this factor before the backbone (logits still come
    # out at the input size). quick: 0.5, the scene at 128×256 (see models/small.py).
    input_scale: float = 0.5

    # Probability b that an image's negative is a flow sample instead of an ADE20K patch:
    # 0 = real negatives only (DenseHybrid ECCV), 1 = synthetic only, between = the TPAMI mixture.
    # quick: 0.2; the small quick flow samples inlier-like texture, so its samples are a
    # minority of the negatives (`python -m dhlib ablate` measures b = 0 / 0.5 / 1).
    synthetic_prob: float = 0.2
    flow_temperature: float = 0.8  # sampling temperature of synthetic negatives (our choice)

    # --- normalizing flow (TPAMI: synthetic negatives) ------------------------------------
    flow_levels: int = 3          # squeeze factor 2^3 = 8: sample sides are multiples of 8
    flow_steps: int = 4           # flow steps per level
    flow_hidden: int = 48         # width of each coupling network
    flow_crop: int = 32           # side of the inlier crops the flow is pre-trained on
    flow_batch: int = 32
    flow_lr: float = 1e-3         # Adamax, as DenseFlow's pre-training
    flow_joint_lr: float = 1e-4   # Adamax in the joint phase (our choice: 1e-3 diverged there)
    flow_pretrain_steps: int = 3000  # quick: the shipped quick-flow (`make flow`)
    flow_checkpoint_every: int = 250
    flow_val_crops: int = 256     # held-out val crops for bits/dim

    # --- outputs -----------------------------------------------------------------------
    figures_dir: str = "figures"
    runs_dir: str = "runs/quick"

    def path(self, name: str) -> Path:
        """Resolve the path field ``name`` (e.g. ``'cityscapes_root'``) to an absolute path;
        ``{synthcity_root}`` in it stands for that field."""
        p = Path(str(getattr(self, name)).replace("{synthcity_root}", self.synthcity_root)).expanduser()
        return p if p.is_absolute() else project_root() / p


def _quick() -> Profile:
    return Profile()


# Sources of the paper values: DenseHybrid's released Cityscapes script (dlv3_cityscapes.py) and
# experiment (experiments/semseg_negatives_joint_th.py), its model (models/deeplabv3/deeplabv3.py),
# and the authors' released joint-flow trainer (Open-set-M2F, mask2former/trainers/joint_trainer.py).
def _paper_eccv() -> Profile:
    """DenseHybrid, ECCV 2022: NVIDIA's checkpoint fine-tuned with ADE20K negatives only."""
    return Profile(
        name="paper-eccv",
        use_synthcity=False,
        cityscapes_root="data/cityscapes",
        ade20k_root="data/ade20k/ADEChallengeData2016",
        fishyscapes_root="data/fishyscapes",
        crop_size=512,                # dlv3_cityscapes.py CROP_SIZE
        scale_range=(0.5, 2.0),       # its JitterRandomCrop scale
        class_uniform=0.0,            # its Cityscapes loader samples images uniformly
        batch_size=12,                # its --batch_size (per process under torchrun)
        num_workers=8,
        init_checkpoint="data/weights/cityscapes_cv0_wideresnet38_nosdcaug.pth",
        flow_init=None,               # the run's own pre-trained flow (train-flow)
        fresh_lr_mult=1.0,            # one learning rate for every parameter
        train_steps=10 * 2975 // 12,  # its 10 epochs of Cityscapes train
        lr=1e-6,                      # its --lr, equal to --lr_min: the lr never changes
        lr_schedule="constant",
        optimizer_eps=1e-7,           # its Adam eps
        weight_decay=0.0,
        beta=0.03,                    # its --beta
        likelihood_floor=None,        # its plain L_x
        class_balance=0.0,            # plain cross-entropy
        ood_void_as_inlier=True,      # its L_cla has no ignore index
        synthetic_prob=0.0,           # ADE20K negatives only
        checkpoint_every=500,
        negative_resize=384,          # its neg_transforms: JointResize(384), 192 px window
        negative_crop=192,
        negative_exclude_classes=(),  # its class-union masks draw every present id
        flow_sample_max_side=216,
        runs_dir="runs/paper-eccv",
        pretrain_dir="runs/paper-pretrain",
        pretrain_init=None,
        model="wrn38",
        attention=False,  # the papers' model has none; switch it on to study the addition
        input_scale=1.0,
        aspp_dim=256,                 # DeepWV3PlusTH: ASPP 256 channels, bot_fine 48,
        fine_dim=48,
        aspp_rates=(12, 24, 36),      # rates (6, 12, 18) doubled at output stride 8
    )


def _paper() -> Profile:
    """The TPAMI 2024 extension: the ECCV recipe plus negatives from a jointly trained flow."""
    return dataclasses.replace(
        _paper_eccv(),
        name="paper",
        # Our choice: the paper mixes both kinds of negatives; its b is not in the released
        # code. Measure it with `ablate`.
        synthetic_prob=0.5,
        flow_update="joint",          # joint_trainer.py: one pass, both optimisers step
        flow_joint_lr=1e-5,           # joint_trainer.py: Adamax lr 1e-5, eps 1e-7
        flow_jsd_weight=0.03,         # Open-set-M2F mask2former/config.py MASK_FORMER.JSD_WEIGHT
        flow_shape_per_step=True,     # joint_trainer.py sample_shape: one shape per iteration
        runs_dir="runs/paper",
        # Flow pre-trained on 64×64 inlier crops as in the TPAMI paper; a wider, deeper flow.
        flow_crop=64,
        flow_steps=8,
        flow_hidden=256,
        flow_batch=64,
        flow_pretrain_steps=20000,
        flow_checkpoint_every=1000,
        flow_val_crops=2048,
    )


_BUILDERS = {"quick": _quick, "paper": _paper, "paper-eccv": _paper_eccv}


def load_profile(name: str | None = None, **overrides) -> Profile:
    """Return the named profile (default: ``$DHLIB_PROFILE`` or ``'quick'``) with overrides.

    >>> load_profile('quick', batch_size=4).batch_size
    4
    """
    name = name or os.environ.get("DHLIB_PROFILE", "quick")
    if name not in _BUILDERS:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    profile = _BUILDERS[name]()
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown profile field(s) {unknown}; known fields: {sorted(known)}")
    return validate(dataclasses.replace(profile, **overrides))


def parse_override(text: str) -> tuple[str, object]:
    """Parse one ``key=value`` command-line override, typed after the profile field.

    >>> parse_override('batch_size=4')
    ('batch_size', 4)
    >>> parse_override('scale_range=0.75,1.5')
    ('scale_range', (0.75, 1.5))
    >>> parse_override('crop_size=256,512')
    ('crop_size', (256, 512))
    >>> parse_override('crop_size=192')
    ('crop_size', 192)
    >>> parse_override('likelihood_floor=none')
    ('likelihood_floor', None)
    >>> parse_override('attention=false'), parse_override('device=cuda:1')
    (('attention', False), ('device', 'cuda:1'))
    """
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value, e.g. batch_size=4")
    key, raw = text.split("=", 1)
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    if key not in fields:
        raise ValueError(f"unknown profile field {key!r}; known fields: {sorted(fields)}")
    default = getattr(Profile(), key)
    try:
        return key, _typed_value(raw.strip(), default, str(fields[key].type))
    except (ValueError, SyntaxError, TypeError, KeyError):
        raise ValueError(f"cannot read {raw!r} as a value of {key} (like {default!r})") from None


def _typed_value(raw: str, default, annotation: str):
    """``raw`` as a value of the field whose default is ``default``: Python literals through
    ``ast.literal_eval``, so ``0.75,1.5`` is a tuple; plain words for strings and booleans."""
    if raw.lower() in ("none", "null") and "None" in annotation:
        return None
    if isinstance(default, bool):
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[raw.lower()]
    if isinstance(default, str):
        return raw
    value = ast.literal_eval(raw)
    if not isinstance(default, tuple):
        return _number(value, default)
    if isinstance(value, int) and annotation.startswith("int |"):  # one side for a (height, width) field
        return _number(value, 0)
    if "..." in annotation:  # a tuple of any length, e.g. pretrain_restarts: 20000, or (20000, 30000)
        return tuple(_number(v, 0) for v in (value if isinstance(value, tuple) else (value,)))
    if not isinstance(value, tuple) or len(value) != len(default):
        raise ValueError(raw)
    return tuple(_number(v, d) for v, d in zip(value, default))


def _number(value, default):
    """``value`` as the numeric type of ``default``: ints stay whole, floats accept ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    if isinstance(default, int) and not float(value).is_integer():
        raise ValueError(value)
    return type(default)(value)
