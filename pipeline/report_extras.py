"""The report's presentation sections beside its measured content (``pipeline.stages.report``): the photo
strip, the training curves as images, and where every figure came from (git commit, MLflow run ids).

    sections = presentation_sections(Path("reports"), training)   # Markdown, appended to the report

Paths in the Markdown are relative to ``reports/`` (where report.md lies).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pipeline import curves, tracking

PHOTO_STRIP = "photos_strip.png"
CURVES_DIR = "curves"
NO_PHOTOS_NOTE = Path("photos") / "NO_PHOTOS.txt"  # written by the photos stage when photos.dir is missing
# generated records: a changed one does not make the checkout differ from its commit in what matters
GENERATED = ("dvc.lock", "metrics/", "plots/", "reports/", "models/", "data/", "mlflow.db")


def changed_sources(cwd: str | Path = ".") -> list[str]:
    """Tracked files that differ from the commit, generated records left out (`git status --porcelain`)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    paths = [line[3:].strip() for line in out.splitlines() if len(line) > 3]
    return sorted(path for path in paths if not path.startswith(GENERATED))


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def photos_section(reports: Path) -> list[str]:
    note = reports / NO_PHOTOS_NOTE
    parts = ["## Real photos", ""]
    if note.is_file():
        return parts + [note.read_text().strip() + ": the `photos` stage colorized nothing.", ""]
    return parts + ["The demo U-Net (`models/sdc_paper.pt` with `models/gridnet_gray.pt`) on real photos (stage "
                    "`photos`, params `photos`); top: the photos in gray, bottom: colorized. The demo models know "
                    "only the synthetic world's classes, so real photos get that world's palette.", "",
                    f"![before/after: the demo U-Net on real photos]({PHOTO_STRIP})", ""]


def curves_section(charts: list[Path], reports: Path) -> list[str]:
    if not charts:
        return []
    parts = ["## Training curves", "", "Every logged quantity per step, the variants of a family overlaid "
             "(`plots/train/*.csv`; interactive, offline too: `dvc plots show`).", ""]
    for chart in charts:
        parts += [f"![{chart.stem} training curves]({chart.relative_to(reports).as_posix()})", ""]
    return parts


def provenance_section(training: dict[str, dict[str, Any]], evaluate_run: str | None) -> list[str]:
    commit = tracking.git_commit()
    changed = changed_sources()
    state = (f" plus uncommitted changes to {', '.join(f'`{p}`' for p in changed)}" if changed
             else " (no uncommitted changes to the sources)")
    parts = ["## Provenance", "", f"Git commit `{commit}`{state}. MLflow runs (`mlflow ui`, experiment "
             f"`{tracking.EXPERIMENT}`): the evaluation "
             + (f"`{evaluate_run}`" if evaluate_run else "(run id not recorded)") + "; training:", ""]
    rows = [[name, f"`{summary.get('run_id', '')}`", f"`{summary.get('registered_model', '')}`"]
            for name, summary in sorted(training.items())]
    return parts + [_table(rows, ["model", "training run", "registered version"]), ""]


def presentation_sections(reports: Path, training: dict[str, dict[str, Any]],
                          plots_dir: Path = Path("plots/train")) -> str:
    """The Markdown of the photo strip, the curve charts (written to ``reports/curves/``) and provenance."""
    charts = curves.render_all(plots_dir, reports / CURVES_DIR) if plots_dir.is_dir() else []
    columns = reports / "figures" / "columns.json"
    evaluate_run = json.loads(columns.read_text()).get("run_id") if columns.is_file() else None
    parts = photos_section(reports) + curves_section(charts, reports) + provenance_section(training, evaluate_run)
    return "\n".join(parts) + "\n"
