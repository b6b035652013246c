"""A plain `pip install .` carries the built-in profiles and tasks."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_profiles_and_tasks_and_finds_them(tmp_path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("muse_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "muse_eval/_builtin/tasks/mmlu.toml" in names
    assert "muse_eval/_builtin/providers/local.toml" in names
    assert "muse_eval/_builtin/providers/vllm.toml" in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import muse_eval.catalog as c, muse_eval.config as cfg;"
        "from muse_eval.task import load_task;"
        "print(c.definition_dirs('tasks')[0]);"
        "items = list(load_task('mmlu').iter_items());"
        "print(len(items), cfg.load_profile('vllm').kind)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    first, second = result.stdout.splitlines()
    assert first == str(target / "muse_eval" / "_builtin" / "tasks")
    assert second == "14042 openai-compatible"
