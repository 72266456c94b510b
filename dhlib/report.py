"""``python -m dhlib report``: measurement history as Markdown, written from ``results.json`` files.

The README keeps only the current numbers; every measurement ever made goes to
``docs/RESULTS.md``, one entry per run, so that an old number can always be traced to the
command, commit and machine that produced it. An entry is rendered from the run's files, not
typed by hand, which keeps the history and the runs in step:

* ``results.json`` (written by ``demo``; an ablation variant's ``result.json`` has the same
  metrics) gives the val mIoU and the AP / AUROC / FPR95 of every anomaly score;
* ``run_info.json`` beside it (``dhlib.provenance``) gives the command, commit, machine
  architecture, thread count and versions. Neither file records a date, so the date is the
  results file's modification time (when the run wrote it), unless the results carry a ``date``.

Each entry carries a marker with the sha256 of the results file's bytes. The same results,
wherever they are copied, give the same marker, so reporting twice appends nothing; a new run
writes new numbers and so gets a new entry.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from .checkpointing import atomic_write_text

MARKER = "<!-- dhlib-report {key} -->"
# what docs/RESULTS.md starts with when the first report creates it
HEADER = ("# Measurement history\n\n"
          "Entries are appended by `python -m dhlib report` from the `results.json` files of runs, "
          "oldest first.\n")
METRICS = ("AP", "AUROC", "FPR95")


class ReportError(ValueError):
    """A results file that cannot be reported: missing, not JSON, or without the metrics."""


def read_json(path: Path, what: str) -> dict:
    """The JSON object in ``path``; a missing or unreadable file is a ReportError naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not a readable JSON {what} file ({err})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object in the {what} file, got {type(data).__name__}")
    return data


def load_results(path) -> dict:
    """``results.json`` checked for what an entry needs: ``mIoU`` and per-score metrics."""
    path = Path(path)
    results = read_json(path, "results")
    missing = [field for field in ("mIoU", "scores") if field not in results]
    if missing:
        raise ReportError(f"{path}: lacks the field(s) {', '.join(missing)} "
                          "(a results.json written by `python -m dhlib demo` has them)")
    scores = results["scores"]
    if not isinstance(scores, dict) or not scores or not all(
            isinstance(m, dict) and any(k in m for k in METRICS) for m in scores.values()):
        raise ReportError(f"{path}: 'scores' must map each score name to its {'/'.join(METRICS)}")
    return results


def provenance(path: Path, results: dict) -> dict:
    """What the run folder says about where the results came from.

    ``run_info.json`` beside a demo's results; an ablation variant has only ``recipe.json``
    (its whole profile), which still names the profile. Fields in the results win.
    """
    info = {}
    for name in ("recipe.json", "run_info.json"):  # run_info last: it is the richer record
        side = path.parent / name
        if side.exists():
            info.update(read_json(side, name))
    info.setdefault("profile", info.get("name"))  # recipe.json calls the profile 'name'
    return {**info, **{k: v for k, v in results.items() if v is not None}}


def entry_key(path) -> str:
    """The entry's identity: the results file's content, so copies and re-runs of report agree."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_date(path: Path, info: dict) -> str:
    """When the run wrote its results (UTC): the file's modification time, as no file records it."""
    if info.get("date"):
        return str(info["date"])
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def heading(path: Path, info: dict) -> str:
    """``## date · commit · machine``: the three things that tell two measurements apart."""
    commit = str(info.get("commit") or "unknown")
    head, dirty = commit.partition("+")[::2]  # provenance appends '+dirty' to an edited checkout
    short = head[:7] + (f"+{dirty}" if dirty else "") if head != "unknown" else "unknown"
    machine = [str(info[k]) for k in ("host", "machine") if info.get(k)]
    if info.get("threads"):
        machine.append(f"{info['threads']} thread" + ("s" if info["threads"] != 1 else ""))
    return f"## {run_date(path, info)} · commit {short} · {', '.join(machine) or 'machine unknown'}"


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def shown(path: Path) -> str:
    """``path`` relative to the project root when it lies inside, so entries name no one's home folder."""
    from .config import project_root
    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def facts(path: Path, info: dict) -> list[str]:
    """The bullet list under the heading: source, how it was run, and its scalar results."""
    lines = [f"- results: `{shown(path)}`"]
    if info.get("command"):
        lines.append(f"- command: `{info['command']}`")
    if info.get("variant"):  # an ablation variant: its change to the profile
        change = ", ".join(f"{k}={v}" for k, v in (info.get("change") or {}).items()) or "none"
        lines.append(f"- ablation variant: {info['variant']} ({change})")
    versions = ", ".join(f"{k} {info[k]}" for k in ("torch", "python") if info.get(k))
    lines.append(f"- profile: {info.get('profile') or 'unknown'}" + (f"; {versions}" if versions else ""))
    run = [f"{info['train_steps']} training steps" if info.get("train_steps") is not None else None,
           f"wall time {info['wall_time_s']} s" if info.get("wall_time_s") is not None else None,
           f"peak memory {info['peak_memory_mb']} MB" if info.get("peak_memory_mb") is not None else None]
    if any(run):
        lines.append("- " + ", ".join(r for r in run if r))
    miou = f"- val mIoU {percent(info['mIoU'])} %"
    if info.get("mIoU_init") is not None:  # the cost of fine-tuning, as the papers report it
        miou += f" (before fine-tuning {percent(info['mIoU_init'])} %)"
    if info.get("open_mIoU") is not None:
        miou += f"; open-mIoU {percent(info['open_mIoU'])} %"
    return lines + [miou]


def score_table(scores: dict) -> list[str]:
    """AP / AUROC / FPR95 in percent, best AP first as the evaluation prints it; only the
    metrics the results have get a column."""
    columns = [m for m in METRICS if any(m in s for s in scores.values())]
    order = sorted(scores, key=lambda name: -(scores[name].get("AP") if scores[name].get("AP") is not None
                                              else float("-inf")))
    lines = ["| score | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(percent(scores[name].get(m)) for m in columns) + " |"
              for name in order]
    return lines


def render_entry(path) -> str:
    """One results file as a Markdown entry of docs/RESULTS.md (percent, two decimals)."""
    path = Path(path)
    results = load_results(path)
    info = provenance(path, results)
    lines = [heading(path, info), "", MARKER.format(key=entry_key(path)), "", *facts(path, info), "",
             "Anomaly scores on the profile's Fishyscapes split, percent:", "", *score_table(results["scores"])]
    return "\n".join(lines) + "\n"


def append_report(result_paths, results_md="docs/RESULTS.md") -> list[Path]:
    """Append an entry per results file to ``results_md``; returns the files appended.

    All files are rendered before anything is written, so a broken one leaves ``results_md``
    as it was; the write is atomic. A file whose marker is already there is skipped.
    """
    results_md = Path(results_md)
    text = results_md.read_text() if results_md.exists() else HEADER
    appended, entries = [], []
    for path in map(Path, result_paths):
        entry = render_entry(path)
        marker = MARKER.format(key=entry_key(path))
        if marker in text or any(marker in e for e in entries):
            continue
        entries.append(entry)
        appended.append(path)
    if entries:
        atomic_write_text(text.rstrip("\n") + "\n\n" + "\n".join(entries), results_md)
    return appended


def default_results(root: Path) -> list[Path]:
    """Every run folder's results: ``runs/*/results.json`` under the project root."""
    found = sorted((root / "runs").glob("*/results.json"))
    if not found:
        raise ReportError(f"no runs/*/results.json under {root}; run `python -m dhlib demo` "
                          "or name the results files")
    return found


def report(paths: list[str] | None = None, results_md: str | None = None) -> list[Path]:
    """The CLI's ``report``: append entries for ``paths`` (default: every ``runs/*/results.json``)
    to ``results_md`` (default: the project's ``docs/RESULTS.md``); prints what it did."""
    from .config import project_root
    root = project_root()
    sources = list(dict.fromkeys(Path(p) for p in paths)) if paths else default_results(root)
    out = Path(results_md) if results_md else root / "docs" / "RESULTS.md"
    appended = append_report(sources, out)
    for path in sources:
        print(f"{shown(path)}: {'appended to' if path in appended else 'already in'} {shown(out)}")
    return appended
