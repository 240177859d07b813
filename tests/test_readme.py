"""The README's quickstart runs (with fewer epochs and attack steps, in a scratch folder)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

#: settings of the quickstart shrunk for the test (the code path is the same)
SHRINK = {"epochs=4": "epochs=1", "steps=40": "steps=2", "steps=10": "steps=1",
          "max_examples_per_set=100": "max_examples_per_set=8", "pool_size=2500": "pool_size=400",
          "mined_size=1344": "mined_size=200"}


def quickstart_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Quickstart section has one python block"
    return blocks[0]


def test_quickstart_runs(tmp_path):
    code = quickstart_code()
    for a, b in SHRINK.items():
        assert a in code, f"{a!r} is no longer in the quickstart: update SHRINK"
        code = code.replace(a, b)
    script = tmp_path / "quickstart.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| **mean** |" in res.stdout and " -> " in res.stdout
    for f in ("table.md", "report.json", "metrics.csv", "roc.png"):
        assert (tmp_path / "runs" / "atom_report" / f).is_file(), f
    assert (tmp_path / "runs" / "atom" / "last.pt").is_file()
