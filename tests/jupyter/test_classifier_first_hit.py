"""`KernelClassifier.classify(code, first_hit=True)`: the answer at the cell's first
statement that needs a GPU, the rest walked by `settle()` (after the answer, or first thing
in the next call). The verdict is the whole walk's, the kernel's memory afterwards is the
whole cell's, and the remembered verdict carries every reason."""

from __future__ import annotations

import pytest
from test_classifier_cache import sequences
from test_classifier_fastpath import long_runs

from gpushift_jupyter.classifier import KernelClassifier
from gpushift_jupyter.classifier import kernel as kernel_module


@pytest.mark.parametrize("strict", [False, True])
def test_first_hit_keeps_the_verdict_the_memory_and_the_remembered_reasons(strict):
    """Every corpus notebook, and long cells, run three times in one kernel answering at
    the first hit and in one walking every cell whole: the same `needs_gpu` cell for cell,
    the first-hit reasons among the whole walk's, the same memory after each cell, and a
    rerun's remembered verdict with every reason. Half the cells are settled explicitly
    (the server's way), the others by the next call."""
    stopped = 0
    for cells in [*sequences(), *long_runs(11, 10)]:
        fast = KernelClassifier(strict=strict)
        whole = KernelClassifier(strict=strict)
        for number, code in enumerate(cells * 3):
            answer, expected = fast.classify(code, first_hit=True), whole.classify(code)
            assert answer.needs_gpu == expected.needs_gpu, code
            assert set(answer.reasons) <= set(expected.reasons), code
            if answer.cached or not answer.needs_gpu:
                assert answer.reasons == expected.reasons, code
            else:
                assert answer.reasons, code
                stopped += len(answer.reasons) < len(expected.reasons)
            if number % 2 == 0:
                fast.settle()
                assert fast.settled
                assert fast._state.fingerprint() == whole._state.fingerprint(), code
        fast.settle()
        assert fast._state.fingerprint() == whole._state.fingerprint(), cells[:2]
        assert fast.cache_hits == whole.cache_hits
    assert stopped > 30  # the corpus has many cells with GPU work after a first hit


def test_a_long_gpu_cell_answers_with_its_first_statement_and_remembers_them_all():
    k = KernelClassifier(strict=False)
    k.classify("import torch")
    cell = "".join(f"x{n} = torch.ones({n}).cuda()\n" for n in range(50))
    answer = k.classify(cell, first_hit=True)
    assert answer.needs_gpu and [r.line for r in answer.reasons] == [1]
    assert not k.settled
    k.settle()
    assert k.settled
    # Back in the memory the cell ran in (a fresh kernel importing torch), its rerun is a
    # lookup with every reason.
    again = KernelClassifier(strict=False)
    again.classify("import torch")
    again._verdicts = k._verdicts
    rerun = again.classify(cell)
    assert rerun.cached and [r.line for r in rerun.reasons] == list(range(1, 51))


def test_nothing_is_left_to_walk_without_a_hit_or_a_parse():
    k = KernelClassifier(strict=False)
    for code in ("x = 1\ny = x + 1", "if torch.cuda.is_available():\n    x = x.cuda()",
                 "x = (", "%%bash\nls"):
        assert not k.classify(code, first_hit=True).needs_gpu
        assert k.settled, code


def test_a_rest_that_trips_the_classifier_leaves_the_memory_as_it_was(monkeypatch):
    k = KernelClassifier(strict=False)
    k.classify("import cupy as cp")
    before = k._state.fingerprint()

    def broken(self):
        raise RuntimeError("bug")
    monkeypatch.setattr(kernel_module._RestOfCell, "finish", broken)
    assert k.classify("a = cp.ones(3)\ndevice = torch.device('cuda')",
                      first_hit=True).needs_gpu
    k.settle()
    assert k.settled and k._state.fingerprint() == before
    assert not k.classify("model.to(device)").needs_gpu  # `device` was never bound
