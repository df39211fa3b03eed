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
