"""Speed of the GPU-need classifier against plain `ast.parse` of the same cells.

    .venv/bin/python bench/classifier_speed.py [--cells 40] [--repeat 25]

Cells of 10, 50, 200 and 500 lines are built from the labelled corpus
(tests/jupyter/classifier_corpus: tutorial, training, inference and analysis cells),
concatenating shuffled corpus cells until the size is reached. Three kinds:

* `corpus`: plain-Python cells from the whole corpus, half of them GPU code (dense in the
  words the classifier looks at: its worst realistic case);
* `analysis`: plain-Python cells from plain_analysis.yaml (pandas, plotting: most cells of a
  notebook), where the classifier skips almost every statement;
* `function`: one function per cell, its body one-line statements of plain_analysis.yaml
  with three GPU lines of the corpus among them (a training step defined in one cell);
* `magics`: like `corpus` plus one `!`/`%` line (the classifier translates that line alone
  with IPython, see classifier/statements.py); its baseline is what the classifier used to
  do and what IPython does to run the cell: `transform_cell` of the whole cell, then
  `ast.parse`.

For each size and kind it times, with a fresh kernel per call, `first time` =
`KernelClassifier(strict=False).classify(cell)` (the live path: parses only the statements
that mention something GPU-related), `strict` = `KernelClassifier().classify(cell)` (parses
the whole cell, as the scan CLI does) and, in the same run, the baseline (`ast.parse` of the
same cell), each cell `--repeat` times, interleaved, and prints cells per second, p50 and
p99 per cell, and the ratio to the baseline. Target: p99 under 2 ms at 200 lines.
`first hit` is `first time` answering at the cell's first statement that needs a GPU
(`classify(cell, first_hit=True)`: a move without asking, the GPU pod's activity report),
and `settle` the walk of the rest of the cell that the server does once that answer is
sent (timed on its own: off the path the user waits on, but not free).
`first time` (fast mode) and `strict` classify from scratch (a fresh kernel, each cell text
new to it: no cached verdict); `previewed` is a cell's first run in a fresh kernel that
previewed it (`KernelClassifier.preview`, untimed: the frontend asks once the user has
paused 300 ms on a cell, see server_ext/src/cellPreview.ts); `repeated` is the fast mode
on the same cell run again in a kernel whose memory it was classified in before (the
verdict cache's lookup: a user re-running a cell, Run All after a restart). The last lines
print four ratios for the 200-line GPU-heavy cells beside issue 16's target (p99 <=
1.2x ast.parse): `first time` is what a cell pays that runs sooner than that pause after
it was typed or selected (Run All of a notebook just opened) where the run may ask (the
dialog lists every reason), `first hit` the same where it moves without asking or runs on
a GPU pod, `previewed` the others.
"""

from __future__ import annotations

import argparse
import ast
import functools
import gc
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from IPython.core.inputtransformer2 import TransformerManager

from gpushift_jupyter.classifier import KernelClassifier, classify_cell

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "jupyter" / "classifier_corpus"
SIZES = (10, 50, 200, 500)
MAGIC_LINES = ("!nvidia-smi", "%time total = sum(range(10))", "!ls -l data/", "%matplotlib inline")


def corpus_cells(pattern: str = "*.yaml") -> list[str]:
    """Every corpus cell that is plain Python, as written."""
    cells: list[str] = []
    for path in sorted(CORPUS.glob(pattern)):
        for item in yaml.safe_load(path.read_text()):
            for cell in item.get("sequence", [item]):
                code = cell["code"]
                try:
                    ast.parse(code)
                except SyntaxError:
                    continue
                if code.strip():
                    cells.append(code)
    return cells


def build_cells(pool: list[str], lines: int, count: int, rng: random.Random,
                magics: bool) -> list[str]:
    """`count` cells of exactly `lines` lines: whole corpus cells concatenated, cut after the
    last top-level statement that fits, padded with one-line statements from the corpus."""
    one_liners = [
        line for cell in pool for line in cell.splitlines()
        if line and not line[0].isspace() and _parses(line)
    ]
    built: list[str] = []
    body_lines = lines - 1 if magics else lines
    while len(built) < count:
        parts: list[str] = []
        while sum(part.count("\n") for part in parts) < body_lines:
            parts.append(rng.choice(pool))
        source = "".join(parts)
        fitting = [node.end_lineno or 0 for node in ast.parse(source).body
                   if (node.end_lineno or 0) <= body_lines]
        source_lines = source.splitlines()[: max(fitting, default=0)]
        while len(source_lines) < body_lines:
            source_lines.append(rng.choice(one_liners))
        if magics:  # one `!`/`%` line between two top-level statements
            starts = [_first_line(node) - 1 for node in ast.parse("\n".join(source_lines)).body]
            source_lines.insert(starts[len(starts) // 2], rng.choice(MAGIC_LINES))
        built.append("\n".join(source_lines) + "\n")
    return built


def build_function_cells(plain: list[str], everything: list[str], lines: int, count: int,
                         rng: random.Random) -> list[str]:
    """`count` cells of `lines` lines, each one function (a training step written in one
    cell): one-line statements of the analysis corpus as its body, three of them corpus
    one-liners that need a GPU on their own (`model.cuda()`)."""
    def one_liners(cells: list[str]) -> list[str]:
        return [line for cell in cells for line in cell.splitlines()
                if line and not line[0].isspace() and not line.startswith(("@", "def ", "class "))
                and not line.rstrip().endswith(":") and _parses(line)]
    plain_lines = one_liners(plain)
    gpu_lines = [line for line in one_liners(everything) if classify_cell(line).needs_gpu]
    built: list[str] = []
    while len(built) < count:
        body = [rng.choice(plain_lines) for _ in range(lines - 2)]
        for spot in rng.sample(range(len(body)), 3):
            body[spot] = rng.choice(gpu_lines)
        built.append("def step(model, batch, device):\n"
                     + "".join(f"    {line}\n" for line in body) + "    return model\n")
    return built


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None)
    return decorators[0].lineno if decorators else node.lineno


def _parses(line: str) -> bool:
    try:
        ast.parse(line)
    except SyntaxError:
        return False
    return True


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def time_calls(cells: list[str], repeat: int,
               functions: dict[str, Callable[[str], Callable[[], object]]]
               ) -> dict[str, list[float]]:
    """Per-call seconds for each function, calls interleaved so drift hits both alike. A
    function is given the cell untimed and hands back the call to time (a setup, such as a
    preview, stays out of the figure)."""
    timings: dict[str, list[float]] = {name: [] for name in functions}
    gc.disable()
    try:
        for _ in range(repeat):
            for cell in cells:
                for name, prepare in functions.items():
                    call = prepare(cell)
                    start = time.perf_counter()
                    call()
                    timings[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return timings


def timed(function: Callable[[str], object]) -> Callable[[str], Callable[[], object]]:
    """A function with nothing to set up: the whole call is timed."""
    return lambda code: functools.partial(function, code)


def previewed(code: str) -> Callable[[], object]:
    """A fresh kernel that previewed the cell (untimed: the user was reading or typing),
    then the cell's run (timed)."""
    classifier = KernelClassifier(strict=False)
    classifier.preview(code)
    return functools.partial(classifier.classify, code)


def settling(code: str) -> Callable[[], object]:
    """A fresh kernel that answered the cell at its first hit (untimed), then the walk of
    the rest (timed: the server does it once the answer is sent)."""
    classifier = KernelClassifier(strict=False)
    classifier.classify(code, first_hit=True)
    return classifier.settle


def classify_again(seen: dict[str, KernelClassifier], code: str) -> object:
    """The verdict of a cell its kernel's classifier has classified before (cached)."""
    return seen[code].classify(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=40, help="distinct cells per size")
    parser.add_argument("--repeat", type=int, default=25, help="timed runs of each cell")
    args = parser.parse_args()
    rng = random.Random(20240605)
    pool = corpus_cells()
    analysis_pool = corpus_cells("plain_analysis.yaml")
    transformer = TransformerManager()  # type: ignore[no-untyped-call]
    baselines: dict[bool, Callable[[str], object]] = {
        False: ast.parse,
        True: lambda code: ast.parse(transformer.transform_cell(code)),
    }
    print(f"corpus pool: {len(pool)} plain-Python cells; {args.cells} cells x "
          f"{args.repeat} runs per size")
    print(f"{'kind':8} {'lines':>5} {'what':11} {'cells/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'ratio p50':>9} {'ratio p99':>9}")
    ratios: dict[tuple[str, int, str], tuple[float, float]] = {}
    kinds = (("corpus", pool, False), ("analysis", analysis_pool, False), ("magics", pool, True),
             ("function", analysis_pool, False))
    for kind, kind_pool, magics in kinds:
        for lines in SIZES:
            cells = (build_function_cells(kind_pool, pool, lines, args.cells, rng)
                     if kind == "function" else
                     build_cells(kind_pool, lines, args.cells, rng, magics))
            seen: dict[str, KernelClassifier] = {}
            for cell in cells:  # twice: the memory after the cell is the one it ran in
                seen[cell] = KernelClassifier(strict=False)
                seen[cell].classify(cell)
                seen[cell].classify(cell)
            functions: dict[str, Callable[[str], Callable[[], object]]] = {
                "first time": timed(lambda code: KernelClassifier(strict=False).classify(code)),
                "first hit": timed(lambda code: KernelClassifier(strict=False).classify(
                    code, first_hit=True)),
                "settle": settling,
                "previewed": previewed,
                "repeated": timed(functools.partial(classify_again, seen)),
                "strict": timed(lambda code: KernelClassifier().classify(code)),
                "baseline": timed(baselines[magics]),
            }
            for cell in cells:  # warm caches (IPython's transformer, regexes)
                for prepare in functions.values():
                    prepare(cell)()
            timings = time_calls(cells, args.repeat, functions)
            base_p50 = percentile(timings["baseline"], 0.5)
            base_p99 = percentile(timings["baseline"], 0.99)
            for name, values in timings.items():
                p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
                rate = len(values) / sum(values)
                ratios[kind, lines, name] = (p50 / base_p50, p99 / base_p99)
                print(f"{kind:8} {lines:5} {name:11} {rate:9.0f} "
                      f"{p50 * 1e3:8.3f} {p99 * 1e3:8.3f} {p50 / base_p50:9.2f} "
                      f"{p99 / base_p99:9.2f}")
    verdicts = [KernelClassifier(strict=False).classify(cell)
                for cell in build_cells(pool, 200, 40, rng, False)]
    mean_ms = statistics.mean(verdict.elapsed_ms for verdict in verdicts)
    print(f"Verdict.elapsed_ms at 200 lines (fast, self-reported, mean): {mean_ms:.3f} ms")
    for name in ("first time", "first hit", "previewed", "repeated"):
        p50_ratio, p99_ratio = ratios["corpus", 200, name]
        print(f"corpus 200 lines, {name:10} vs ast.parse (baseline 1.00): "
              f"p50 {p50_ratio:.2f}x, p99 {p99_ratio:.2f}x (target p99 <= 1.20x)")


if __name__ == "__main__":
    main()
