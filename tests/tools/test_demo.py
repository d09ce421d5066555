"""``make demo`` end to end on the tiny preset with a minimal schedule (slow: ~1-2 min)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_writes_every_promised_file_and_numeric_metrics(tmp_path):
    work = tmp_path / "demo"
    cmd = [sys.executable, str(REPO / "tools/demo.py"), "--work-dir", str(work), "--preset", "tiny",
           "--max-iters", "4", "--val-interval", "2", "--num-mosaics", "2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((work / "demo_summary.json").read_text())
    nds = summary["metrics"]["NuScenes metric/pred_instances_3d_NuScenes/NDS"]
    assert isinstance(nds, float) and 0.0 <= nds <= 1.0
    assert Path(summary["checkpoint"]).is_file() and Path(summary["curves"]).is_file()
    assert len(summary["mosaics"]) >= 2 and all(Path(m).is_file() for m in summary["mosaics"])
    assert (work / "data" / "nuscenes-synth-tiny" / "nuscenes_infos_val.pkl").is_file()
    assert "training curves:" in proc.stdout and "NDS" in proc.stdout

    # a second run reuses the data and does not train again
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and "1/4 data" not in again.stdout
