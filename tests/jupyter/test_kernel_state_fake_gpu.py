"""A torch tensor saved on a GPU comes back on the CPU in a kernel without one.

This machine has neither a GPU nor torch (PyPI's Linux torch wheel needs several GB of
CUDA libraries), so a stand-in `torch` package is written to tmp_path: it pickles a
tensor exactly as torch does (`Tensor.__reduce_ex__` -> `torch._utils._rebuild_tensor_v2`
over a storage whose `__reduce__` is `torch.storage._load_from_bytes(torch.save bytes)`,
the bytes recording the storage's location such as 'cuda:0'), and its `torch.load`
fails like torch's for a CUDA location without a GPU unless `map_location` is given.
The kernels, kishu, dill and the driver are real; the "GPU" is the fake (FAKE_GPU=1).
"""

from __future__ import annotations

from pathlib import Path

from conftest import KishuHome, StartKernel

from gpushift_jupyter.kernel_state import checkpoint, database_path, restore

FAKE_TORCH = {
    "__init__.py": '''
import io, os, pickle
from collections import OrderedDict
from torch import _utils, cuda, storage

class Tensor:
    def __init__(self, storage):
        self._storage = storage
    @property
    def device(self):
        return self._storage.device
    def tolist(self):
        return list(self._storage.values)
    def to(self, device):
        if str(device).startswith("cuda") and not cuda.is_available():
            raise RuntimeError("Torch not compiled with CUDA enabled")
        name = "cuda:0" if str(device) == "cuda" else str(device)
        return Tensor(storage.TypedStorage(self._storage.values, name))
    def __reduce_ex__(self, protocol):
        return (_utils._rebuild_tensor_v2,
                (self._storage, 0, (len(self._storage.values),), (1,), False, OrderedDict()))

def tensor(values):
    return Tensor(storage.TypedStorage(list(values), "cpu"))

def save(obj, f, _use_new_zipfile_serialization=True):
    pickle.dump({"location": obj.device, "values": obj.values}, f)

def load(f, map_location=None, weights_only=True):
    record = pickle.load(f)
    cpu = storage.TypedStorage(record["values"], "cpu")
    if callable(map_location):
        return map_location(cpu, record["location"])
    if map_location is not None:
        return storage.TypedStorage(record["values"], str(map_location))
    if record["location"].startswith("cuda") and not cuda.is_available():
        raise RuntimeError(
            "Attempting to deserialize object on a CUDA device but "
            "torch.cuda.is_available() is False. If you are running on a CPU-only "
            "machine, please use torch.load with map_location=torch.device('cpu') "
            "to map your storages to the CPU.")
    return storage.TypedStorage(record["values"], record["location"])
''',
    "cuda.py": '''
import os
def is_available():
    return os.environ.get("FAKE_GPU") == "1"
''',
    "storage.py": '''
import io
import torch

class TypedStorage:
    def __init__(self, values, device):
        self.values, self.device = values, device
    def __reduce__(self):
        b = io.BytesIO()
        torch.save(self, b, _use_new_zipfile_serialization=False)
        return (_load_from_bytes, (b.getvalue(),))

def _load_from_bytes(b):
    return torch.load(io.BytesIO(b), weights_only=False)
''',
    "_utils.py": '''
def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, metadata=None):
    import torch
    return torch.Tensor(storage)
''',
}


def write_fake_torch(folder: Path) -> Path:
    package = folder / "torch"
    package.mkdir(parents=True)
    for name, source in FAKE_TORCH.items():
        (package / name).write_text(source.lstrip())
    return folder


async def test_restore_fake_gpu_tensor_lands_on_the_cpu(
        kishu_home: KishuHome, kishu_kernels: StartKernel, tmp_path: Path) -> None:
    path = str(write_fake_torch(tmp_path / "fake-torch"))
    gpu = await kishu_kernels({"PYTHONPATH": path, "FAKE_GPU": "1"})
    await gpu.cell("import torch\nweights = torch.tensor([1.5, 2.5]).to('cuda')\n"
                   "steps = 10")
    assert await gpu.value("weights.device") == "cuda:0"
    saved = await checkpoint(gpu.code, kishu_home.notebook, workspace=kishu_home.workspace)
    assert {"weights", "steps"} <= set(saved.saved)

    cpu = await kishu_kernels({"PYTHONPATH": path})  # the CPU pod: no GPU
    # What plain kishu/dill does with these bytes here: the whole load fails.
    db = database_path(kishu_home.notebook, kishu_home.workspace)
    failure = await cpu.cell(
        "import sqlite3, dill\n"
        f"_con = sqlite3.connect('file:' + {str(db)!r} + '?mode=ro', uri=True)\n"
        "_blob = b''.join(r[0] for r in _con.execute(\"select data from variable_snapshot "
        "where versioned_name like '%weights%'\"))\n"
        "try:\n    dill.loads(_blob)\nexcept RuntimeError as e:\n    print(e)\n"
        "_con.close()\ndel _con, _blob")
    assert "Attempting to deserialize object on a CUDA device" in failure

    outcome = await restore(cpu.code, kishu_home.notebook, saved.commit_id,
                            workspace=kishu_home.workspace)
    assert outcome.ok and outcome.not_restored == ()
    assert "weights" in outcome.restored and outcome.moved_to_cpu == ("weights",)
    assert "now on the CPU: weights" in outcome.detail
    assert await cpu.value("[weights.device, weights.tolist(), steps]") == [
        "cpu", [1.5, 2.5], 10]
