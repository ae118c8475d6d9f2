"""benchmarks/gpu_check.py (issue 35 item 3) runs end to end on the CPU in
its --quick form, so the script a GPU machine will run is known to work."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_gpu_check_quick_on_cpu_runs_every_step(tmp_path, cifar10_root):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--data", str(cifar10_root), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["cuda_tests"]["returncode"] == 0 and "skipped" in report["cuda_tests"]["summary"]
    assert report["throughput"]["eager"]["images_per_second"] > 0
    assert report["time_to_accuracy"]["epochs"] > 0 and 0 <= report["time_to_accuracy"]["last_test_accuracy"] <= 1
    assert report["workers"]["2"]["trials"] >= 1 and report["workers"]["2"]["total"] > 0
    assert report["search_sk"]["returncode"] == 0 and report["search_sk"]["trials"] >= 1
    assert "Pareto front" in report["search_sk"]["front"]
