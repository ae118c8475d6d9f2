"""Paper figures against ours: each module at its paper's placement on the
paper's backbone. The figures and their sources live in
tests/test_paper_figures.py, which asserts the tolerances.

    python benchmarks/paper_figures.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_paper_figures import FIGURES  # noqa: E402

import nas  # noqa: E402

print("| model | parameters (paper) | ours | MACs (paper) | ours |")
print("|---|---:|---:|---:|---:|")
for attention, backbone, params, macs, source in FIGURES:
    cost = nas.profile(nas.build_model(nas.paper_config(backbone, attention)), 224)
    print(f"| {backbone} + {attention} | {params / 1e6:.2f}M | {cost['params'] / 1e6:.3f}M "
          f"({(cost['params'] - params) / params:+.2%}) | {macs / 1e9:.3f}G | {cost['macs'] / 1e9:.3f}G "
          f"({(cost['macs'] - macs) / macs:+.2%}) |")
