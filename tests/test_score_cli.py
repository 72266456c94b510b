"""``python -m dhlib score``: the shipped model on the user's own images.

The shipped file is replaced by a randomly initialised quick model written into a temporary
``DHLIB_WEIGHTS_DIR``; its card's threshold is chosen from scores computed here by hand, in a
wide gap between two pixel scores so float rounding cannot move a pixel across it.
"""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dhlib.__main__ import main
from dhlib.config import load_profile
from dhlib.models import build_model, weights

SPLIT = "SynthCity Fishyscapes-Static-format test split (held out)"
LINE = re.compile(r"^(.+) (\d+)×(\d+): ([\d.]+) % of pixels flagged anomalous \(hybrid ≥ (\S+)\)", re.M)


def scene(height=64, width=128, seed=0) -> np.ndarray:
    """A street-like uint8 RGB picture: sky, road, and a few coloured blocks."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2] = (110, 150, 200)
    image[height // 2:] = (80, 80, 85)
    bh, bw = max(1, height // 5), max(1, width // 8)
    for _ in range(4):
        y, x = rng.integers(0, height - bh + 1), rng.integers(0, width - bw + 1)
        image[y:y + bh, x:x + bw] = rng.integers(0, 256, 3)
    return np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)


def hybrid_by_hand(model, rgb: np.ndarray) -> np.ndarray:
    """ln softmax(ood)[:, 1] − logsumexp(seg), written out (not dhlib.scores)."""
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        seg, ood = (t.double() for t in model(x))
    ood_max, seg_max = ood.amax(1, keepdim=True), seg.amax(1, keepdim=True)
    log_p_out = ood[:, 1] - (ood_max[:, 0] + (ood - ood_max).exp().sum(1).log())
    log_p_hat = seg_max[:, 0] + (seg - seg_max).exp().sum(1).log()
    return (log_p_out - log_p_hat)[0].numpy()


def threshold_in_a_gap(scores) -> float:
    """The midpoint of the widest gap between neighbouring scores in their middle 60 %."""
    values = np.sort(np.concatenate([s.ravel() for s in scores]))
    lo, hi = int(0.2 * len(values)), int(0.8 * len(values))
    k = lo + int(np.argmax(np.diff(values[lo:hi + 1])))
    return float(values[k] + values[k + 1]) / 2


def set_card_threshold(value: float) -> None:
    path = weights.get("quick-densehybrid").card_path
    card = json.loads(path.read_text())
    card["threshold"]["value"] = value
    path.write_text(json.dumps(card))


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A random quick model stored as the shipped quick-densehybrid file, with a card."""
    monkeypatch.setenv("DHLIB_WEIGHTS_DIR", str(tmp_path / "weights"))
    torch.manual_seed(0)
    state = build_model(load_profile("quick")).state_dict()
    card = {"threshold": {"score": "hybrid", "tpr": 0.95, "value": 0.0, "split": SPLIT}}
    weights.write_file_and_card(weights.get("quick-densehybrid"), state, card)
    return weights.load_model("quick-densehybrid")


def write_good_images(folder):
    """RGB png, grayscale png, RGBA png, jpg; returns {file name: the RGB pixels a viewer shows}."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb, other = scene(seed=1), scene(seed=2)
    Image.fromarray(rgb).save(folder / "street.png")
    Image.fromarray(other[..., 0]).save(folder / "grey.png")
    alpha = np.full(other.shape[:2] + (1,), 200, np.uint8)
    Image.fromarray(np.concatenate([other, alpha], 2), "RGBA").save(folder / "rgba.png")
    Image.fromarray(scene(seed=3)).save(folder / "photo.jpg", quality=90)
    return {name: np.asarray(Image.open(folder / name).convert("RGB"))
            for name in ("street.png", "grey.png", "rgba.png", "photo.jpg")}


def run_main(args):
    """main(args) -> exit status (0 when it returns)."""
    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_good_images_get_a_heatmap_and_a_mask_matching_the_printed_fraction(shipped, tmp_path, capsys):
    pictures = write_good_images(tmp_path / "in")
    by_hand = {name: hybrid_by_hand(shipped, rgb) for name, rgb in pictures.items()}
    threshold = threshold_in_a_gap(by_hand.values())
    set_card_threshold(threshold)
    out = tmp_path / "out"
    status = run_main(["score", str(tmp_path / "in"), "--out", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    header = printed.out.splitlines()[0]
    assert "quick-densehybrid" in header and SPLIT in header and "95 % TPR" in header
    assert f"{threshold:.4g}" in header and "never on your images" in header
    assert "note:" in printed.out and "grayscale image converted to RGB" in printed.out
    assert "RGBA image converted to RGB (alpha channel ignored)" in printed.out
    lines = {m.group(1).split("/")[-1]: m for m in LINE.finditer(printed.out)}
    assert sorted(lines) == sorted(pictures)
    flagged_somewhere = False
    for name, rgb in pictures.items():
        stem = name.rsplit(".", 1)[0]
        mask_file = Image.open(out / f"{stem}_mask.png")
        assert mask_file.mode == "L" and mask_file.size == (rgb.shape[1], rgb.shape[0])
        mask = np.asarray(mask_file)
        assert set(np.unique(mask)) <= {0, 255}
        heatmap = Image.open(out / f"{stem}_hybrid.png")
        assert heatmap.format == "PNG" and heatmap.size[0] > 300
        line = lines[name]
        assert (int(line.group(2)), int(line.group(3))) == (rgb.shape[1], rgb.shape[0])
        percent = float(line.group(4))
        from_mask = 100 * np.count_nonzero(mask == 255) / mask.size
        expected = by_hand[name] >= threshold
        assert abs(percent - from_mask) <= 0.005 + 1e-9
        assert abs(percent - 100 * expected.mean()) <= 0.005 + 1e-9
        np.testing.assert_array_equal(mask == 255, expected)
        flagged_somewhere |= 0 < from_mask < 100
    assert flagged_somewhere, "the threshold should split some image's pixels"
    assert printed.out.splitlines()[-1].startswith("4 scored, 0 failed")
    assert not list(out.glob("*.tmp*")), "temporary files are renamed into place"


def test_bad_inputs_are_named_and_the_good_images_still_scored(shipped, tmp_path, capsys):
    folder = tmp_path / "mixed"
    write_good_images(folder)
    (folder / "notes.png").write_text("this is not an image\n")
    Image.fromarray(scene(seed=4)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(scene(8, 8)).save(folder / "tiny.png")
    (tmp_path / "empty").mkdir()
    missing_file, missing_folder = tmp_path / "nowhere.png", tmp_path / "no_such_folder"
    out = tmp_path / "out"
    status = run_main(["score", str(folder), str(missing_file), str(missing_folder), str(tmp_path / "empty"),
                       "--out", str(out)])
    printed = capsys.readouterr()
    assert status == 1
    errors = [line for line in printed.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 6, printed.err
    expectations = {folder / "notes.png": "not an image", folder / "truncated.png": "corrupt or truncated",
                    folder / "tiny.png": "8×8 is too small", missing_file: "does not exist",
                    missing_folder: "does not exist", tmp_path / "empty": "no image files"}
    for path, what in expectations.items():
        assert any(f"{path}:" in line and what in line for line in errors), (path, errors)
    for stem in ("street", "grey", "rgba", "photo"):
        assert (out / f"{stem}_mask.png").is_file() and (out / f"{stem}_hybrid.png").is_file()
    assert not (out / "notes_mask.png").exists() and not (out / "tiny_mask.png").exists()
    assert printed.out.splitlines()[-1].startswith("4 scored, 6 failed")
    assert "Traceback" not in printed.out + printed.err


def test_same_stem_in_two_folders_does_not_overwrite(shipped, tmp_path, capsys):
    Image.fromarray(scene(64, 128, seed=5)).save((tmp_path / "a").mkdir() or tmp_path / "a" / "street.png")
    Image.fromarray(scene(48, 96, seed=6)).save((tmp_path / "b").mkdir() or tmp_path / "b" / "street.png")
    out = tmp_path / "out"
    assert run_main(["score", str(tmp_path / "a"), str(tmp_path / "b" / "street.png"), "--out", str(out)]) == 0
    assert Image.open(out / "street_mask.png").size == (128, 64)
    assert Image.open(out / "street-2_mask.png").size == (96, 48)
    assert (out / "street-2_hybrid.png").is_file()
    assert "written as street-2_*.png" in capsys.readouterr().out


def test_outputs_never_overwrite_an_input_when_out_is_the_input_folder(shipped, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(scene(seed=7)).save(folder / "a.png")
    Image.fromarray(scene(seed=8)).save(folder / "a_mask.png")  # the user's own file of that name
    before = (folder / "a_mask.png").read_bytes()
    assert run_main(["score", str(folder), "--out", str(folder)]) == 0
    assert (folder / "a_mask.png").read_bytes() == before
    assert (folder / "a-2_mask.png").is_file() and (folder / "a_mask_mask.png").is_file()


def test_exif_rotation_and_16_bit_grey_are_read_as_a_viewer_shows_them(tmp_path):
    from dhlib.scoring import read_rgb
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(scene(40, 80)).save(tmp_path / "phone.jpg", exif=exif)
    image, note = read_rgb(tmp_path / "phone.jpg")
    assert tuple(image.shape) == (3, 80, 40) and "EXIF" in note
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (40, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image, note = read_rgb(tmp_path / "deep.png")
    assert "16-bit" in note and float(image.min()) == 0.0 and float(image.max()) == 1.0
    assert 0.45 < float(image.mean()) < 0.55  # not clipped to white


def test_checkpoint_keeps_the_card_threshold_and_threshold_overrides_it(shipped, tmp_path, capsys):
    write_good_images(tmp_path / "in")
    set_card_threshold(-3.5)
    torch.manual_seed(1)
    own = build_model(load_profile("quick"))
    torch.save(own.state_dict(), tmp_path / "mine.pt")
    status = run_main(["score", str(tmp_path / "in" / "street.png"), "--checkpoint", str(tmp_path / "mine.pt"),
                       "--out", str(tmp_path / "out")])
    header = capsys.readouterr().out.splitlines()[0]
    assert status == 0 and "mine.pt in the quick-densehybrid architecture" in header
    assert "hybrid ≥ -3.5" in header and "calibrated for the shipped weights, not for" in header
    status = run_main(["score", str(tmp_path / "in" / "street.png"), "--threshold", "1e9",
                       "--out", str(tmp_path / "out2")])
    printed = capsys.readouterr().out
    assert status == 0 and "given with --threshold" in printed.splitlines()[0]
    assert "0.00 % of pixels flagged" in printed
    assert not np.asarray(Image.open(tmp_path / "out2" / "street_mask.png")).any()
    with pytest.raises(SystemExit) as err:
        main(["score", str(tmp_path / "in"), "--checkpoint", str(tmp_path / "absent.pt"), "--out", str(tmp_path)])
    assert "absent.pt" in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(SystemExit) as err:
        main(["score", str(tmp_path / "in"), "--checkpoint", str(tmp_path / "in" / "street.png"),
              "--out", str(tmp_path)])
    assert "street.png" in str(err.value) and "truncated, corrupt or not a PyTorch file" in str(err.value)


def test_missing_shipped_weights_is_a_clear_error_without_traceback(shipped, tmp_path):
    weights.get("quick-densehybrid").path.unlink()
    Image.fromarray(scene()).save(tmp_path / "street.png")
    result = subprocess.run([sys.executable, "-m", "dhlib", "score", str(tmp_path / "street.png"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "quick-densehybrid.pt are missing" in result.stderr and "make finetune" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_score_without_paths_is_a_usage_error(shipped):
    with pytest.raises(SystemExit) as err:
        main(["score"])
    assert err.value.code == 2
