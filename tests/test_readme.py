"""The README's Python examples run against the code as it is (budgets shrunk so that they take seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import small_config

from mtdqn.experiments import EXPERIMENTS
from mtdqn.train import Trainer

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_RUN = "steps_per_epoch=60, eval_steps=50, background_eval=False"


def python_block(containing: str) -> str:
    """The README's one ```python block that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"{len(found)} python blocks of README.md contain {containing!r}"
    return found[0]


def shrink(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, f"the README example no longer contains {old!r}"
    return code.replace(old, new)


def test_library_example_trains_the_seed_it_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = python_block('Trainer.create(config, "runs/example")')
    code = shrink(code, "RunConfig(epochs=10, seeds=[3])", f"RunConfig(epochs=1, seeds=[3], {TINY_RUN})")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    saved = json.loads((tmp_path / "runs/example/config.json").read_text())["config"]
    assert saved["run"]["seeds"] == [3]
    assert len(saved["tasks"]) == 5
    assert (tmp_path / "runs/example/metrics.csv").is_file()


def test_adding_an_experiment_sweeps_the_shared_feature_width():
    code = python_block("register(Experiment(")
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # registers, does not run
        experiment = EXPERIMENTS["widths"]
        assert experiment.baseline == "w80"
        for arm, width in zip(experiment.arms, (40, 80), strict=True):
            network = arm.factory().network
            assert network.feature_width == width
            assert network.width == 80  # the other hidden layers keep the paper's width
    finally:
        EXPERIMENTS.pop("widths", None)


def test_transfer_example_builds_and_trains_the_three_schedules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = small_config(epochs=1)
    source.tasks = [task for task in source.tasks if task.env_id != "Acrobot-v1"]
    Trainer.create(source, "runs/pretrained").run()
    code = python_block('make_transfer_config(base, "runs/pretrained"')
    code = shrink(
        code, "RunConfig(seeds=list(range(10)))", f"RunConfig(seeds=list(range(2)), epochs=1, {TINY_RUN})"
    )
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    for name, unfreeze in (("0", 0), ("10", 10), ("never", None)):
        saved = json.loads((tmp_path / f"runs/acrobot-unfreeze{name}/config.json").read_text())["config"]
        assert [task["env_id"] for task in saved["tasks"]] == ["Acrobot-v1"]
        assert saved["transfer"]["unfreeze_epoch"] == unfreeze
        assert saved["run"]["seeds"] == [0, 1]


def _headings(text: str) -> list[tuple[int, str]]:
    """(level, GitHub anchor) of the Markdown headings outside code blocks (the anchor: lower case,
    punctuation dropped, spaces to hyphens)."""
    found, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"(#{1,6}) (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
            found.append((len(m.group(1)), slug))
    return found


def test_links_and_figures_resolve_and_contents_lists_every_section():
    text = README.read_text()
    headings = _headings(text)
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert anchors and [a for a in anchors if a not in {slug for _, slug in headings}] == []
    local = [p for p in re.findall(r"\]\(([^)#][^)]*)\)", text) if "://" not in p]
    assert local and [p for p in local if not (README.parent / p).exists()] == []
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    assert listed == [slug for level, slug in headings if level in (2, 3) and slug != "contents"]
