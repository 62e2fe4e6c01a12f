"""bench/gpu.py on a machine without a GPU: a note, a last-line JSON saying so, exit status 0 (make bench
runs every script everywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure it")
@pytest.mark.slow
def test_without_a_gpu_it_says_so_and_exits_0():
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["gpu"] is False and "nothing was measured" in result["note"]
    assert "no CUDA device" in lines[0]
