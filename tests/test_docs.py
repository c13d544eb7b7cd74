"""The README and docs/ pages: short README, pages found by name, links that resolve, every
flag documented, the set-up block CI runs, the benchmark table's section (fast)."""

import importlib
import os
import re
import sys

from absl import flags
import pytest

from helpers import ROOT

PAGES = ("cli", "library", "tensorboard", "results", "benchmarks", "architecture")


def read(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def test_readme_is_short_and_links_every_docs_page():
    readme = read("README.md")
    assert len(readme.splitlines()) < 150
    for page in PAGES:
        assert f"](docs/{page}.md)" in readme, page
    assert "Burda" in readme and "1509.00519" in readme  # the paper, cited
    for command in ("tfp-iwae-train", "tfp-iwae-evaluate", "tfp-iwae-sample",
                    "tfp-iwae-export"):
        assert command in readme, command
    assert 'python -m pytest -q -m "not slow"' in readme  # the fast lane


def test_readme_set_up_block_is_what_ci_runs():
    # .ci/run runs the lines of the first ```bash block after "## Set up" (comments and
    # blank lines dropped): an install, then the test suite.
    readme = read("README.md")
    block = readme.split("## Set up", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [re.sub(r"\s*#.*$", "", line) for line in block.splitlines()]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 2, lines
    assert "pip install -e '.[test]'" in lines[0] and "tfp-iwae-train" in lines[0]
    assert lines[1] == "python -m pytest -q -n 2 --dist loadscope"


@pytest.mark.parametrize("page", PAGES)
def test_each_page_says_what_it_is_for_and_its_links_resolve(page):
    text = read("docs", f"{page}.md")
    title, blank, first = text.split("\n", 3)[:3]
    assert title.startswith("# ") and blank == "" and first[:1].isupper(), (page, first)
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if "://" in target:
            continue
        assert os.path.exists(os.path.join(ROOT, "docs", target)), (page, target)


def test_results_tables_figure_links_resolve():
    # docs/results/<set>.md (written by experiments/results.py) link their figures from
    # docs/results/.
    import glob
    for path in glob.glob(os.path.join(ROOT, "docs", "results", "*.md")):
        with open(path) as f:
            for target in re.findall(r"\]\(([^)#\s]+)", f.read()):
                assert os.path.exists(os.path.join(os.path.dirname(path), target)), \
                    (path, target)


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)", read("README.md")):
        if "://" not in target:
            assert os.path.exists(os.path.join(ROOT, target)), target


def test_cli_page_documents_every_flag_of_every_command():
    page = read("docs", "cli.md")
    for command in ("train", "evaluate", "sample", "export"):
        section = page.split(f"### tfp-iwae-{command}\n", 1)[1].split("\n### ", 1)[0]
        fv = flags.FlagValues()
        importlib.import_module(f"tfp_iwae.cli.{command}").define_flags(fv)
        documented = set(re.findall(r"^\| `--(\w+)`", section, re.M))
        assert documented == set(fv), (command, set(fv) ^ documented)


def test_no_benchmark_figures_in_the_package():
    # Docstrings and flag help say what a choice does and link docs/benchmarks.md; the
    # figures live there. (The progress line's "ex/s" is a unit, not a figure.)
    figure = re.compile(r"\d[\d,.]*\s*(GFLOP|ex/s|x faster|% faster|x slower)|"
                        r"\d[\d.]*x (the rate|faster|slower)|GFLOP/s")
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "tfp_iwae")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    found += [(name, i, line.strip()) for i, line in enumerate(f, 1)
                              if figure.search(line)]
    assert not found, found


def test_bench_report_rewrites_only_its_table_section(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        report = importlib.import_module("report")
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# B\n\nbefore\n\n{report.TABLE_START}\nold\n{report.TABLE_END}\n\nafter\n")
    text = report.table_markdown("Measured with `x`:", [("a", "1 ex/s", "r", "50%")])
    report.write_table(str(page), text)
    assert page.read_text() == (f"# B\n\nbefore\n\n{report.TABLE_START}\n{text}"
                                f"{report.TABLE_END}\n\nafter\n")
    assert "| a | 1 ex/s | r | 50% |" in text
    fresh = tmp_path / "new.md"
    report.write_table(str(fresh), text)
    assert fresh.read_text() == f"{report.TABLE_START}\n{text}{report.TABLE_END}\n"
