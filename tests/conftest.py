"""Shared set-up: an isolated environment for every test, the CLI helpers and the job types."""

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

# Tiny models on a small shared machine: with 2 intra-op threads and any other busy process,
# OpenMP oversubscription made a 2-step SDXL run ~70x slower. One thread is fast and steady.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


def _builtin_job_types() -> list[str]:
    """The built-in job types, as ourvidz.presets lists them (a user's OURVIDZ_PRESETS left out)."""
    from ourvidz.presets import job_types

    saved = os.environ.pop("OURVIDZ_PRESETS", None)
    try:
        return job_types()
    finally:
        if saved is not None:
            os.environ["OURVIDZ_PRESETS"] = saved


# The ten job types of ../shared/spec/job-types.md (test_presets checks there are ten and their values).
JOB_TYPES: list[str] = _builtin_job_types()

runner = CliRunner()


def run(*args):
    """`ourvidz ARGS...` in process; every argument is passed as a string."""
    from ourvidz.cli import app

    return runner.invoke(app, [str(a) for a in args])


def ok(*args):
    """`ourvidz ARGS...`, which must exit 0."""
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_error_line(result, code: int) -> str:
    """The run exited with `code` and printed exactly one `error:` line, no traceback: that line."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def fail(code: int, *args) -> str:
    """`ourvidz ARGS...`, which must exit with `code` and one error line: that line."""
    return one_error_line(run(*args), code)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # No user config leaks in; the demo-model cache is shared across the session (built once).
    cache = tmp_path_factory.getbasetemp() / "ourvidz-cache"
    monkeypatch.setenv("OURVIDZ_CACHE", os.environ.get("OURVIDZ_TEST_CACHE", str(cache)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OURVIDZ_MODELS", raising=False)
    monkeypatch.delenv("OURVIDZ_PRESETS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.getbasetemp() / "home"))
