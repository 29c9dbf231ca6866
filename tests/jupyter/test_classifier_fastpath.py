"""The classifier's fast paths (statements.py: parse only the statements worth walking,
translate magic lines one by one) against the reference: IPython's transformation of the
whole cell, then `ast.parse` of all of it."""

from __future__ import annotations

import ast
import inspect
import random

import pytest
from test_classifier_corpus import load_corpus

from gpushift_jupyter.classifier import KernelClassifier, Verdict, calls, classify_cell, rules
from gpushift_jupyter.classifier.statements import layout, reduce_cell

MAGICS = (
    "!nvidia-smi", "!ls -l data/", "%matplotlib inline", "%time total = sum(range(10))",
    "gpus = !nvidia-smi -L", "!echo don't panic", "%time y = model.cuda()", "!pip install cupy",
    "files = %sx ls", "!python train.py \\\n    --device cuda:0", "%load_ext cudf.pandas",
)


class ReferenceClassifier(KernelClassifier):
    """The classifier with its fast paths off: always the whole cell through IPython."""

    def _reduced_walk(self, code: str, lowered: str, trigger_lines: list[int]) -> None:
        return None


def summary(verdict: Verdict) -> tuple[bool, list[tuple[int, str, str]]]:
    return verdict.needs_gpu, [(r.line, r.rule, r.text) for r in verdict.reasons]


def check_runs(runs: list[list[str]], strict: bool) -> int:
    """Classify each run of cells with one kernel on both paths; the number compared."""
    compared = 0
    for cells in runs:
        fast, reference = KernelClassifier(strict=strict), ReferenceClassifier()
        for code in cells:
            expected = summary(reference.classify(code))
            if not strict and any(r[1] == "no_parse" for r in expected[1]):
                continue  # not strict: a syntax error in a skipped statement goes unseen
            assert summary(fast.classify(code)) == expected, code
            compared += 1
    return compared


def corpus_runs() -> list[list[str]]:
    return [[cell.code for cell in run] for run in load_corpus()]


def with_magic(code: str, magic: str, rng: random.Random) -> str:
    """`code` with `magic` between two top-level statements or inside a block."""
    lines = code.splitlines()
    tree = ast.parse(code)
    starts = [getattr(node, "decorator_list", None) or [node] for node in tree.body]
    spots = [(first[0].lineno - 1, "") for first in starts]
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.With | ast.If) and node.body:
            spots.append((node.body[0].lineno - 1, " " * node.body[0].col_offset))
    where, indent = rng.choice(spots)
    return "\n".join([*lines[:where], indent + magic, *lines[where:]]) + "\n"


def plain_cells() -> list[str]:
    cells = []
    for run in corpus_runs():
        for code in run:
            try:
                ast.parse(code)
            except SyntaxError:
                continue
            if code.strip():
                cells.append(code)
    return cells


@pytest.mark.parametrize("strict", [True, False])
def test_corpus_verdicts_match_the_reference(strict: bool) -> None:
    assert check_runs(corpus_runs(), strict) > 330


@pytest.mark.parametrize("strict", [True, False])
def test_corpus_cells_with_magics_match_the_reference(strict: bool) -> None:
    rng = random.Random(5)
    cells = [with_magic(code, rng.choice(MAGICS), rng) for code in plain_cells()]
    assert check_runs([[code] for code in cells], strict) > 250


def long_runs(seed: int, count: int) -> list[list[str]]:
    """`count` runs of three cells like the bench's: twelve corpus cells end to end, half
    of them with a magic."""
    rng = random.Random(seed)
    pool = plain_cells()
    runs = []
    for _ in range(count):
        run = []
        for _ in range(3):
            code = "".join(rng.choice(pool) for _ in range(12))
            run.append(with_magic(code, rng.choice(MAGICS), rng) if rng.random() < 0.5 else code)
        runs.append(run)
    return runs


@pytest.mark.parametrize("strict", [True, False])
def test_long_concatenated_cells_match_the_reference(strict: bool) -> None:
    """Cells like the bench's: many corpus cells end to end, some with magics."""
    assert check_runs(long_runs(7, 12), strict) == 36


def test_fast_path_is_taken_for_plain_and_magic_cells() -> None:
    """The comparison above is not vacuous: the cheap split handles these cells itself."""
    rng = random.Random(5)
    cells = plain_cells()
    cells += [with_magic(code, rng.choice(MAGICS), rng) for code in cells]
    for code in cells:
        reduced = reduce_cell(code, lambda first, last: True)
        assert reduced is not None, code
        ast.parse(reduced[0])


def test_reduced_cell_keeps_line_numbers_and_translates_magics() -> None:
    code = "import os\n\nx = 1\n!nvidia-smi\nfor f in files:\n    !ls $f\ny = x.cuda()\n"
    reduced = reduce_cell(code, lambda first, last: first != 3)
    assert reduced is not None
    text, magics = reduced
    assert text.split("\n") == [
        "import os", "", "", "get_ipython().system('nvidia-smi')", "for f in files:",
        "    get_ipython().system('ls $f')", "y = x.cuda()", "",
    ]
    assert magics == [4, 6]


def test_reduced_cell_stands_pass_for_simple_statements_without_triggers() -> None:
    """Inside a kept statement, a simple statement without a trigger becomes `pass` on
    its first line (its other lines blank); headers, clauses, decorators, `raise` and the
    exits stay, because the walker reads them without a trigger word, and so does a
    one-line `if` whose `else` follows (the `else` needs it)."""
    code = (
        "class Trainer:\n"                      # 1
        "    @staticmethod\n"                   # 2
        "    def train(model):\n"               # 3
        '        """Train it."""\n'             # 4
        "        total = f(1,\n"                # 5
        "                  2)\n"                # 6
        "        for batch in loader:\n"        # 7
        "            x = batch.cuda()\n"        # 8
        "            total += 1  # counted\n"   # 9
        "        try:\n"                        # 10
        "            import cupy\n"             # 11
        "        except ImportError: raise\n"   # 12
        "        if not ok: sys.exit(1)\n"      # 13
        "        if ready: total = 0\n"         # 14
        "        # the else of that if\n"        # 15
        "        else: total = 1\n"             # 16
        "        return total\n"                # 17
    )
    triggers = {8, 11}
    reduced = reduce_cell(code, lambda first, last: any(first <= n <= last for n in triggers))
    assert reduced is not None
    assert reduced[0].split("\n") == [
        "class Trainer:", "    @staticmethod", "    def train(model):", "        pass",
        "        pass", "", "        for batch in loader:", "            x = batch.cuda()",
        "            pass", "        try:", "            import cupy",
        "        except ImportError: raise", "        if not ok: sys.exit(1)",
        "        if ready: total = 0", "        # the else of that if",
        "        else: total = 1", "        pass", "",
    ]
    ast.parse(reduced[0])


@pytest.mark.parametrize(
    "code",
    [
        # Five statements in the try: no probe (is_probe counts them), so the init needs
        # a GPU; with the three plain lines gone it would look like a probe.
        "try:\n    import pynvml\n    pynvml.nvmlInit()\n    a = 1\n    b = 2\n    c = 3\n"
        "except Exception:\n    use_gpu = False\n",
        # The `raise` under the check has no trigger word of its own.
        "def check():\n    if not torch.cuda.is_available():\n        message = 'no'\n"
        "        raise RuntimeError(message)\n    return 1\n",
        "def check():\n    if not torch.cuda.is_available():\n        sys.exit(1)\n",
        "def run(x):\n    y = x + 1\n    match y:\n        case 1: z = 2\n"
        "        case _: z = x.cuda()\n",
    ],
)
def test_pass_for_plain_statements_keeps_the_verdict(code: str) -> None:
    expected = summary(ReferenceClassifier().classify(code))
    assert expected[1], "the reference finds nothing: the case tests nothing"
    assert summary(KernelClassifier(strict=False).classify(code)) == expected


@pytest.mark.parametrize(
    "code",
    [
        'q = """\nimport cupy\n!nvidia-smi\n"""\n',
        "x = (1,\n2)\nif x:\n    pass\nelse:\n    y = 3\n",
        "@decorator\n@other(\n  1)\ndef f():\n    pass\ng = 1\n",
        "x = 1 + \\\n2\ntry:\n    pass\nexcept E:\n    pass\nfinally:\n    pass\n",
        "s = 'a # not a comment'  # a (comment\nt = f'{x!r}'\n",
    ],
)
def test_layout_starts_only_at_real_statements(code: str) -> None:
    cell = layout(code)
    assert cell is not None
    tree = ast.parse(code)
    expected = [
        (getattr(node, "decorator_list", None) or [node])[0].lineno - 1 for node in tree.body
    ]
    assert list(cell.starts) == expected


@pytest.mark.parametrize(
    "code",
    [
        "  x = 1\n  y = 2\n",  # a leading indent (IPython strips it)
        "%%time\nx.cuda()\n",  # a cell magic
        "x = 'unterminated\n",
        "x = (1,\n%time y\n)\n",  # `%` at the start of a line inside brackets
        "x = (1,\n",
        "x = 1)\n",
    ],
)
def test_layout_gives_up_where_unsure(code: str) -> None:
    assert layout(code) is None


def test_not_strict_skips_statements_without_triggers() -> None:
    broken_elsewhere = "def f(a b):\n  pass\ny = x.cuda()\n"
    assert classify_cell(broken_elsewhere).reasons[0].rule == "no_parse"
    assert KernelClassifier(strict=False).classify(broken_elsewhere).needs_gpu
    broken_here = "x = model.cuda(\n"
    verdict = KernelClassifier(strict=False).classify(broken_here)
    assert [reason.rule for reason in verdict.reasons] == ["no_parse"]
    assert KernelClassifier(strict=False).classify("def f(a b):\n  pass\n").reasons == ()
    # An unbalanced bracket makes the cheap split unsure: the whole cell is parsed.
    unbalanced = KernelClassifier(strict=False).classify("def f(:\n  pass\ny = x.cuda()\n")
    assert [reason.rule for reason in unbalanced.reasons] == ["no_parse"]


def test_not_strict_still_unbinds_a_remembered_name() -> None:
    kernel = KernelClassifier(strict=False)
    kernel.classify('device = "cuda"')
    assert kernel.classify("import pandas as pd\nm.to(device)").needs_gpu
    assert not kernel.classify("x = 1\ndevice = 'cpu'\nz = 2\n").needs_gpu
    assert not kernel.classify("m.to(device)").needs_gpu


def test_the_keyword_shortcut_lists_every_keyword_a_rule_reads() -> None:
    """`calls._KEYWORDS` lets `_keyword_hits` skip keywords no rule reads: every keyword
    that function (and the helpers it hands `key` to) compares `key` with must be in it,
    or that rule would silently stop firing."""
    read: set[str] = set()
    for function in (calls._keyword_hits, calls._is_xgboost_gpu):
        tree = ast.parse(inspect.getsource(function))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
                    and node.left.id == "key"):
                for side in node.comparators:
                    read |= {c.value for c in ast.walk(side)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    assert read, "found no keyword comparisons: the test no longer reads the rules"
    assert read <= calls._KEYWORDS, sorted(read - calls._KEYWORDS)


def test_the_name_shortcut_covers_every_name_a_rule_reads() -> None:
    """`calls._NAMED_ROOTS` lets `call_hits` skip `_named_call_hits` for callees whose
    first part no rule names: every name that function compares the callee with (==,
    in, startswith) and every TF_GPU_CONFIG name must start with one of them. os.* and
    subprocess.* only return "no hit" there (the analyzer reads shell commands)."""
    names: set[str] = set(rules.TF_GPU_CONFIG)
    tree = ast.parse(inspect.getsource(calls._named_call_hits))
    for node in ast.walk(tree):
        compared = None
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
                and node.left.id == "name"):
            compared = node.comparators
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "startswith" and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "name"):
            compared = node.args
        for side in compared or ():
            names |= {c.value for c in ast.walk(side)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    roots = {name.split(".", 1)[0] for name in names} - {"os", "subprocess"}
    assert len(roots) >= 3, "found too few names: the test no longer reads the rules"
    assert roots <= calls._NAMED_ROOTS, sorted(roots - calls._NAMED_ROOTS)
