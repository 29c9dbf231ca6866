"""The classifier's verdict cache (per kernel, keyed by the cell's text and the kernel
memory's fingerprint): a cell run again in the same memory is answered by a lookup, and
the cache never changes a verdict nor what the kernel remembers afterwards."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from gpushift_jupyter.classifier import KernelClassifier
from gpushift_jupyter.classifier import kernel as kernel_module
from gpushift_jupyter.classifier.rules import DeviceKind
from gpushift_jupyter.classifier.state import KernelState

CORPUS = Path(__file__).parent / "classifier_corpus"


def sequences() -> list[list[str]]:
    """Every corpus sequence, and the single cells as notebooks of 100 cells (within the
    cache's 256 entries: a notebook longer than the cache, run again and again, evicts
    each verdict before its cell comes back)."""
    found: list[list[str]] = []
    singles: list[str] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for item in yaml.safe_load(path.read_text()):
            if "sequence" in item:
                found.append([cell["code"] for cell in item["sequence"]])
            else:
                singles.append(item["code"])
    return [*found, *(singles[i:i + 100] for i in range(0, len(singles), 100))]


def verdicts(classifier: KernelClassifier, cells: list[str]) -> list[tuple[bool, tuple]]:
    return [(v.needs_gpu, v.reasons) for v in map(classifier.classify, cells)]


@pytest.mark.parametrize("strict", [False, True])
def test_the_cache_never_changes_a_verdict_over_the_corpus_run_three_times(strict):
    """Each notebook run three times over in one kernel (Run All, twice more) with and
    without the cache: the same verdicts, cell for cell, and the cache answered most of
    the reruns."""
    hits = total = 0
    for cells in sequences():
        run = cells * 3
        cached = KernelClassifier(strict=strict)
        reference = KernelClassifier(strict=strict, cache_entries=0)
        assert verdicts(cached, run) == verdicts(reference, run), cells[:2]
        assert reference.cache_hits == 0
        hits, total = hits + cached.cache_hits, total + len(cells)
    assert hits >= total  # at least the third run: every cell in a memory seen before


def test_a_cell_run_again_in_the_same_memory_is_a_lookup_with_the_same_verdict():
    k = KernelClassifier(strict=False)
    cell = "import torch\nx = torch.zeros(3).cuda()"
    first = k.classify(cell)  # remembers `torch`: the memory changed
    k.classify(cell)  # in the new memory: walked, the memory stays as it is
    third = k.classify(cell)  # the same memory again: a lookup
    assert first.needs_gpu and (third.needs_gpu, third.reasons) == (True, first.reasons)
    assert k.cache_hits == 1


def test_what_the_kernel_remembers_decides_and_comes_back_with_a_hit():
    k = KernelClassifier(strict=False)
    use, to_cupy, to_numpy = "a = xp.zeros(3)", "import cupy as xp", "import numpy as xp"
    assert not k.classify(use).needs_gpu  # `xp` means nothing yet
    assert k.classify(to_cupy).needs_gpu
    assert k.classify(use).needs_gpu  # other memory: not the cached "no"
    assert not k.classify(to_numpy).needs_gpu
    assert not k.classify(use).needs_gpu
    assert k.cache_hits == 0
    assert k.classify(to_cupy).needs_gpu  # from the numpy memory: not seen, walked
    # Back in memories seen before: lookups, each bringing back the memory after it.
    assert k.classify(use).needs_gpu
    assert not k.classify(to_numpy).needs_gpu
    assert not k.classify(use).needs_gpu
    assert k.cache_hits == 3


def test_the_cache_is_bounded_and_long_cells_are_not_kept(monkeypatch):
    k = KernelClassifier(strict=False, cache_entries=3)
    for i in range(10):
        k.classify(f"import torch\nx{i} = torch.ones(1).cuda()")
    assert len(k._verdicts) == 3
    monkeypatch.setattr(kernel_module, "_CACHED_TEXT", 100)
    long_cell = "import torch\n" + "y = torch.ones(1).cuda()\n" * 10
    k.classify(long_cell)
    k.classify(long_cell)
    assert k.cache_hits == 0


def test_the_fingerprint_covers_everything_the_kernel_remembers():
    """The cache's key is the memory's fingerprint: every field a walk carries from cell to
    cell must change it, or a cell would be served a verdict from another memory. A field
    added to KernelState without being fingerprinted fails here."""
    transient = {"availability_lines", "walked_text", "_walked_lines", "_scanner"}  # scratch
    samples = {
        "aliases": {"xp": "cupy"}, "shadowed": {"cp"}, "devices": {"device": DeviceKind.CUDA},
        "guards": {"use_gpu"}, "forced": {"use_cuda"}, "gpu_functions": {"train"},
    }
    persistent = {f.name for f in fields(KernelState)} - transient
    assert persistent == set(samples)
    empty = KernelState().fingerprint()
    for name, value in samples.items():
        assert KernelState(**{name: value}).fingerprint() != empty, name


def test_a_rebound_device_is_not_served_the_verdict_of_the_old_binding():
    k = KernelClassifier(strict=False)
    to_cuda = "import torch\ndevice = torch.device('cuda')"
    to_cpu = "device = torch.device('cpu')"
    use = "model = model.to(device)"
    assert k.classify(to_cuda).needs_gpu
    assert k.classify(use).needs_gpu
    assert not k.classify(to_cpu).needs_gpu
    assert not k.classify(use).needs_gpu  # same text, other memory: walked, not the "yes"
    assert k.classify(to_cuda).needs_gpu
    assert k.classify(use).needs_gpu
    uncached = KernelClassifier(strict=False, cache_entries=0)
    sequence = [to_cuda, use, to_cpu, use, to_cuda, use, to_cpu, use]
    assert verdicts(KernelClassifier(strict=False), sequence) == verdicts(uncached, sequence)


def test_the_cache_evicts_the_least_recently_used_verdict():
    k = KernelClassifier(strict=False, cache_entries=2)
    a, b, c = (f"x{i} = torch.ones(1).cuda()" for i in range(3))  # memory stays empty
    for cell in (a, b):
        assert k.classify(cell).needs_gpu
    assert k.cache_hits == 0
    k.classify(a)  # a lookup: `a` is now the most recently used
    assert k.cache_hits == 1
    k.classify(c)  # a third entry evicts `b`, the least recently used
    assert len(k._verdicts) == 2
    k.classify(a)
    assert k.cache_hits == 2
    assert k.classify(b).needs_gpu  # walked again, same verdict
    assert k.cache_hits == 2


def test_a_preview_gives_the_run_verdict_and_leaves_the_memory_as_it_was():
    k = KernelClassifier(strict=False)
    imports, use = "import cupy as xp", "a = xp.zeros(3)"
    ahead = k.preview(imports)
    assert ahead.needs_gpu and not ahead.cached
    # The preview bound nothing: `xp` still means nothing to the kernel.
    assert not k.classify(use).needs_gpu
    assert k._state.fingerprint() == KernelState().fingerprint()


def test_a_previewed_cell_runs_as_a_lookup_with_the_memory_after_it():
    k, reference = KernelClassifier(strict=False), KernelClassifier(strict=False)
    cells = ["import torch\ndevice = torch.device('cuda')", "model = model.to(device)",
             "device = torch.device('cpu')", "model = model.to(device)"]
    for cell in cells:  # each cell previewed in the memory it then runs in
        ahead = k.preview(cell)
        ran, expected = k.classify(cell), reference.classify(cell)
        assert ran.cached and not ahead.cached
        assert (ran.needs_gpu, ran.reasons) == (ahead.needs_gpu, ahead.reasons)
        assert (ran.needs_gpu, ran.reasons) == (expected.needs_gpu, expected.reasons)
        assert k._state.fingerprint() == reference._state.fingerprint()
    assert k.cache_hits == len(cells) and not k._previews
    assert len(k._verdicts) == len(cells)


def test_a_preview_in_another_memory_is_not_used():
    k = KernelClassifier(strict=False)
    use = "model = model.to(device)"
    assert not k.preview(use).needs_gpu  # `device` unknown yet
    k.classify("import torch\ndevice = torch.device('cuda')")
    ran = k.classify(use)
    assert ran.needs_gpu and not ran.cached and k.cache_hits == 0


def test_previews_are_bounded_and_do_not_push_out_the_verdicts_of_cells_that_ran():
    k = KernelClassifier(strict=False, cache_entries=2)
    ran = "x = torch.ones(1).cuda()"
    k.classify(ran)
    typed = [f"y{i} = torch.ones({i}).cuda()" for i in range(kernel_module.PREVIEW_ENTRIES + 5)]
    for text in typed:  # a user typing a long cell, pausing after each line
        assert k.preview(text).needs_gpu
    assert len(k._previews) == kernel_module.PREVIEW_ENTRIES and len(k._verdicts) == 1
    assert k.classify(ran).cached
    assert not k.classify(typed[0]).cached  # the oldest preview went first
    assert k.classify(typed[-1]).cached


def test_a_preview_without_a_cache_still_answers():
    k = KernelClassifier(strict=False, cache_entries=0)
    assert k.preview("x = torch.ones(1).cuda()").needs_gpu
    assert not k.classify("x = torch.ones(1).cuda()").cached and not k._previews


def test_a_preview_that_trips_the_classifier_answers_like_classify(monkeypatch):
    k = KernelClassifier(strict=False)

    def broken(self, code, first_hit):
        raise RuntimeError("bug")
    monkeypatch.setattr(KernelClassifier, "_classify_walk", broken)
    ahead = k.preview("x = torch.ones(1).cuda()")
    assert not ahead.needs_gpu and ahead.reasons[0].rule == "classifier_error"
    assert not k._previews
