"""The shared helpers: one device rule, one atomic write, one evaluation entry point."""
from __future__ import annotations

import json

import pytest
import torch

from dhlib.checkpointing import atomic_save, atomic_write, atomic_write_text
from dhlib.devices import select_device


def test_select_device_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu", rank=3) == torch.device("cpu")
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device(asked)


def test_select_device_with_gpus_gives_each_rank_its_own(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [select_device("auto", rank) for rank in range(6)] == [torch.device("cuda", r % 4) for r in range(6)]
    assert select_device("cuda", 2) == torch.device("cuda", 2)
    assert select_device("cuda:1", 0) == torch.device("cuda", 1)   # an explicit GPU is that GPU
    assert select_device("cpu", 2) == torch.device("cpu")


def test_a_bad_device_setting_is_a_profile_error():
    from dhlib.config import load_profile
    with pytest.raises(ValueError, match=r"device='gpu': use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        load_profile("quick", device="gpu")
    assert load_profile("quick", device="cuda:1").device == "cuda:1"


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_text("old", path)
    assert path.read_text() == "old"

    def crash(tmp):
        tmp.write_text("half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_text() == "old"                       # the old file survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]
    atomic_save({"x": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))


def test_atomic_write_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    from PIL import Image
    seen = []
    atomic_write(tmp_path / "a.png", lambda tmp: (seen.append(tmp.suffix), Image.new("L", (2, 2)).save(tmp)))
    assert seen == [".png"] and Image.open(tmp_path / "a.png").size == (2, 2)


def test_evaluate_checkpoint_is_the_one_entry_point(tiny_profile, tmp_path, monkeypatch):
    """The command line, the demo and the ablation all evaluate through evaluate_checkpoint."""
    import dhlib.evaluation as evaluation
    from dhlib.data import Fishyscapes
    from dhlib.models import build_model
    calls = []
    real = evaluation.evaluate_checkpoint
    monkeypatch.setattr(evaluation, "evaluate_checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    model = build_model(tiny_profile)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    from dhlib import __main__ as cli
    from dhlib.models import checkpoints
    reads = []
    real_read = checkpoints.read_tensors
    monkeypatch.setattr(checkpoints, "read_tensors", lambda path: reads.append(path) or real_read(path))
    cli.evaluate(tiny_profile, str(tmp_path / "m.pt"))
    assert len(calls) == 1
    assert len(reads) == 1   # checked before any data is written, and not read again to evaluate
    result = real(build_model(tiny_profile), tmp_path / "m.pt",
                  Fishyscapes(tiny_profile.path("fishyscapes_root")), components=False, progress=False)
    summary = evaluation.summary(result.results)
    assert result.layout and set(summary["scores"]) == {"msp", "max_logit", "entropy", "energy",
                                                        "discriminative", "hybrid"}
    assert summary["components_hybrid"] is None
    json.dumps(summary)  # ready for results.json


def test_no_caller_builds_its_own_evaluation():
    import inspect

    from dhlib import __main__ as cli, ablation
    for fn in (cli.evaluate, cli.demo, ablation.run_variant):
        assert "evaluate_checkpoint(" in inspect.getsource(fn), fn.__name__
    assert "THKLOODEvaluation(" not in inspect.getsource(cli) + inspect.getsource(ablation)


FLUSH_PROBE = """
import sys, torch
torch.set_num_threads(2)
import dhlib
tiny = torch.full((1 << 22,), 1e-38)   # normal float32; a thousandth of it is subnormal
products = tiny * 1e-3                 # split across the worker threads
print(int((products != 0).sum()))
"""


def test_importing_dhlib_flushes_subnormals_in_every_worker_thread():
    import subprocess
    import sys
    # the reference without dhlib: the product is a float32 subnormal, not zero
    plain = subprocess.run([sys.executable, "-c", FLUSH_PROBE.replace("import dhlib", "")],
                           capture_output=True, text=True, check=True)
    assert int(plain.stdout) == 1 << 22
    flushed = subprocess.run([sys.executable, "-c", FLUSH_PROBE], capture_output=True, text=True, check=True)
    assert int(flushed.stdout) == 0
