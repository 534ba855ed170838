"""The quickstart trains for a step budget (reproducible) unless --minutes asks for wall-clock."""

import json

from scenetok.quickstart import run_quickstart
from scenetok.recipe import load_recipe

# The quickstart recipe shrunk to seconds: a few scenes, a tiny batch, one scored scene.
SMALL = ["train.batch_size=2", "train.num_workers=0", "train.checkpoint_every=100", "dataset.num_scenes=8",
         "dataset.cache_frames=0", "eval.max_scenes=1", "eval.grid_scenes=1", "render.frames=2"]


def test_the_shipped_budget_is_a_step_count():
    train = load_recipe("quickstart").sections["train"]
    assert train.steps == 2000 and train.minutes == 0


def test_quickstart_stops_at_train_steps_and_reports_steps_and_wall_time(tmp_path):
    summary = run_quickstart(out_dir=tmp_path / "qs", overrides=[*SMALL, "train.steps=3"], progress=False)
    numbers = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    assert numbers["steps"] == 3 and numbers["stop_reason"] == "finished"
    assert numbers["budget"] == {"steps": 3, "minutes": 0.0}
    assert summary.startswith("scenetok quickstart: 3 training steps (budget: 3 steps; stopped: finished), wall time: train ")
