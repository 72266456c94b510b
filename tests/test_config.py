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
    assert profile.negative_max_side == 216  # the paper's patch sides: 16-216 px


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
    ("negative_mask_kind=rectangle", ("negative_mask_kind", "rectangle")),
    ("likelihood_floor=-3", ("likelihood_floor", -3.0)),
    ("likelihood_floor=None", ("likelihood_floor", None)),
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
    (dict(negative_mask_kind="circle"), "negative_mask_kind='circle'"),
    (dict(fishyscapes_split="Dynamic"), "fishyscapes_split='Dynamic'"),
    (dict(negative_min_side=50, negative_max_side=20), "negative_min_side <= negative_max_side"),
    (dict(negative_max_side=300), "exceeds crop_size"),
    (dict(scale_range=(2.0, 0.5)), "scale_range"),
    (dict(synthcity_height=8), "synthcity_height=8"),
])
def test_invalid_settings_are_rejected_with_the_field_named(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_profile("quick", **overrides)
