"""DVC's views of the project after a tiny `make demo`, as a researcher reads them: `dvc plots show` offline,
`dvc dag` narrow per target, `dvc exp show` with the README's column patterns."""

from __future__ import annotations

import re

import pytest

from tests.browser import ensure_chromium, launch
from tests.project_repo import PROJECT_ROOT, run_dvc, run_git

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_dvc_plots_show_draws_every_chart_without_the_internet(demo_project):
    from playwright.sync_api import sync_playwright

    out = run_dvc(demo_project, "plots", "show").stdout.strip()
    page_path = demo_project / "dvc_plots" / "index.html"
    assert out.endswith("dvc_plots/index.html") and page_path.is_file()
    html = page_path.read_text()
    assert not re.search(r"<script[^>]+src=", html)  # Vega inlined by .dvc/plots/offline.html, no CDN
    charts = html.count("vegaEmbed(")
    assert charts >= 11  # one per training curve
    assert run_git(demo_project, "check-ignore", "-q", "dvc_plots/index.html", check=False).returncode == 0
    ensure_chromium()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(offline=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route("http*://**", lambda route: route.abort())
        page.goto(page_path.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= {charts}")
        assert errors == []
        browser.close()


def test_dvc_dag_of_one_model_is_narrow_and_the_whole_one_is_mermaid():
    chain = run_dvc(PROJECT_ROOT, "dag", "train_sdc@paper").stdout
    assert max(len(line) for line in chain.splitlines()) <= 80
    for stage in ("check", "download@synthetic", "shards@synthetic-128", "train_gridnet@gray", "train_sdc@paper"):
        assert stage in chain
    assert "evaluate" not in chain
    chart = run_dvc(PROJECT_ROOT, "dag", "--md").stdout
    assert chart.startswith("```mermaid") and "flowchart TD" in chart


def test_dvc_exp_show_with_the_readme_columns(demo_project):
    from tests.test_readme import README

    pattern = re.search(r"dvc exp show --drop '\.\*' --keep '([^']+)'", README.read_text())
    assert pattern, "README shows a `dvc exp show --drop '.*' --keep '...'` command"
    table = run_dvc(demo_project, "exp", "show", "--csv", "--drop", ".*", "--keep", pattern[1]).stdout
    header = table.splitlines()[0].split(",")
    assert 4 <= len(header) <= 12, header
    assert {"palette.sdc_paper", "palette.psc_full"} <= set(header), header  # the headline's figures
