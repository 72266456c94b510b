import pytest

from dhlib.config import Profile, load_profile, parse_override, project_root


def test_quick_is_default(monkeypatch):
    monkeypatch.delenv("DHLIB_PROFILE", raising=False)
    assert load_profile().name == "quick"
    assert load_profile().use_synthcity


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("DHLIB_PROFILE", "paper")
    profile = load_profile()
    assert profile.name == "paper" and not profile.use_synthcity
    assert profile.flow_sample_max_side == 216  # the released joint-flow code's sample sides: 16-216 px


@pytest.mark.parametrize("name", ["paper", "paper-eccv"])
def test_paper_profiles_follow_the_released_code(name, monkeypatch):
    monkeypatch.setenv("DHLIB_PROFILE", name)
    p = load_profile()
    assert p.name == name
    # dlv3_cityscapes.py: batch 12, lr 1e-6 = lr_min, Adam eps 1e-7, beta 0.03, 512 px crops
    assert (p.batch_size, p.lr, p.lr_schedule, p.optimizer_eps, p.beta, p.crop_size) == \
        (12, 1e-6, "constant", 1e-7, 0.03, 512)
    assert p.class_uniform == 0 and p.ood_void_as_inlier and p.likelihood_floor is None
    assert (p.negative_resize, p.negative_crop, p.negative_scale_range, p.negative_rect_prob,
            p.negative_class_draws) == (384, 192, (0.5, 2.0), 0.5, 2)
    assert p.negative_exclude_classes == ()  # its class-union masks may draw every present id
    assert p.ood_focal_gamma == 0 and not p.ood_class_balance  # its L_cla: plain cross-entropy
    assert (p.aspp_dim, p.fine_dim, p.aspp_rates) == (256, 48, (12, 24, 36))


def test_the_two_papers_differ_in_the_flow():
    eccv, tpami = load_profile("paper-eccv"), load_profile("paper")
    assert eccv.synthetic_prob == 0
    assert tpami.synthetic_prob > 0 and tpami.flow_update == "joint" and tpami.flow_joint_lr == 1e-5


def test_overrides_and_unknown_fields():
    assert load_profile("quick", batch_size=3).batch_size == 3
    with pytest.raises(ValueError, match="unknown profile field"):
        load_profile("quick", bach_size=3)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        load_profile("fast")


@pytest.mark.parametrize("text, expected", [
    ("batch_size=4", ("batch_size", 4)),
    ("scale_range=0.75,1.5", ("scale_range", (0.75, 1.5))),
    ("use_synthcity=false", ("use_synthcity", False)),
    ("negative_scale_range=0.5,2", ("negative_scale_range", (0.5, 2.0))),
    ("flow_update=joint", ("flow_update", "joint")),
    ("likelihood_floor=-3", ("likelihood_floor", -3.0)),
    ("likelihood_floor=None", ("likelihood_floor", None)),
    ("pretrain_restarts=20000,", ("pretrain_restarts", (20000,))),
    ("pretrain_restarts=20000", ("pretrain_restarts", (20000,))),
    ("pretrain_restarts=(20000, 30000)", ("pretrain_restarts", (20000, 30000))),
    ("pretrain_restarts=()", ("pretrain_restarts", ())),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text, message", [
    ("batch_size", "key=value"),
    ("batch=4", "unknown profile field"),
    ("batch_size=four", "cannot read 'four'"),
    ("scale_range=1", "cannot read '1'"),
    ("use_synthcity=maybe", "cannot read 'maybe'"),
    ("likelihood_floor=low", "cannot read 'low'"),
    ("pretrain_restarts=1.5,", "cannot read '1.5,'"),
])
def test_parse_override_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_override(text)


def test_relative_paths_resolve_against_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DHLIB_ROOT", str(tmp_path))
    assert project_root() == tmp_path
    assert Profile().path("cityscapes_root") == tmp_path / "data/synthcity/cityscapes"
    assert Profile(cityscapes_root=str(tmp_path / "x")).path("cityscapes_root") == tmp_path / "x"


@pytest.mark.parametrize("overrides, message", [
    (dict(flow_update="both"), "flow_update='both'"),
    (dict(lr_schedule="cosine"), "lr_schedule='cosine'"),
    (dict(negative_rect_prob=1.5), "negative_rect_prob=1.5"),
    (dict(negative_crop=300), "negative_crop=300 exceeds crop_size"),
    (dict(negative_crop=16), "negative_crop=16"),
    (dict(negative_resize=100), "negative_resize=100"),
    (dict(negative_exclude_classes=(1, 151)), "negative_exclude_classes=(1, 151): ADE20K ids in 0-150"),
    (dict(negative_overhang=1.0), "negative_overhang=1.0: a share"),
    (dict(negative_overhang=0.5, flow_update="joint"), "negative_overhang=0.5 with flow_update='joint'"),
    (dict(fishyscapes_split="Dynamic"), "fishyscapes_split='Dynamic'"),
    (dict(ood_focal_gamma=-1.0), "ood_focal_gamma=-1.0: a focusing exponent"),
    (dict(flow_sample_min_side=50, flow_sample_max_side=20), "flow_sample_min_side <= flow_sample_max_side"),
    (dict(flow_sample_max_side=300), "exceeds crop_size"),
    (dict(scale_range=(2.0, 0.5)), "scale_range"),
    (dict(synthcity_height=8), "synthcity_height=8"),
    (dict(pretrain_restarts=20000), "pretrain_restarts=20000: a tuple"),
    (dict(pretrain_restarts=(0,)), "pretrain_restarts=(0,)"),
])
def test_invalid_settings_are_rejected_with_the_field_named(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_profile("quick", **overrides)
