"""Device choice (tools/device.py) and the GPU check script on a machine without CUDA."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools import device as devices

REPO = Path(__file__).resolve().parents[1]


def test_the_device_follows_cuda_and_the_override(monkeypatch):
    monkeypatch.delenv("SLEUTH_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.device() == expected
    assert devices.device("cpu") == "cpu"
    monkeypatch.setenv("SLEUTH_DEVICE", "cuda:1")
    assert devices.device() == "cuda:1"
    assert devices.dtype() == torch.bfloat16
    assert devices.trainer_settings() == {"use_cpu": False, "bf16": True}
    monkeypatch.setenv("SLEUTH_DEVICE", "cpu")
    assert (devices.dtype(), devices.trainer_settings()) == (torch.float32,
                                                             {"use_cpu": True, "bf16": False})


def test_training_configs_take_the_device_settings(monkeypatch, tmp_path):
    from training.grpo import grpo_config

    monkeypatch.setenv("SLEUTH_DEVICE", "cpu")
    args = grpo_config(tmp_path)
    assert (args.use_cpu, args.bf16) == (True, False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU machine gets")
def test_the_gpu_check_exits_cleanly_without_cuda():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device is visible" in proc.stdout
    assert not (REPO / "benchmarks" / "results" / "gpu_check_cpu.json").exists()


@pytest.mark.slow
def test_the_gpu_check_runs_its_steps_on_the_cpu():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert '"grpo_trained_samples": 0' not in proc.stdout and '"eval_failed": 0' in proc.stdout
