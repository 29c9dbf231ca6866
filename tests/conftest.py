import sys
from pathlib import Path

# Test helpers (tests/kubeflow_pods.py) import as plain modules; the test harness
# (testing/gpushift_testing) is importable from every test folder.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testing"))
