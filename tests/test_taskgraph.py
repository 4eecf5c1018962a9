"""The doorway to dask: hand-built graphs are made by daskramp.taskgraph and nowhere else."""

import ast
from pathlib import Path

import dask
import dask.array as da
import numpy as np

import daskramp
from daskramp.taskgraph import Tasks


def _pair(a, b):
    return {"sum": a + b, "product": a * b}


def test_calls_become_blocks_and_take_other_results_by_key():
    scale = dask.delayed(np.float64(10.0), pure=True)
    tasks = Tasks(scale)
    for i in range(3):
        tasks.call(("pair", i), _pair, np.full((2, 2), i, np.float64), scale.key)
    sums = tasks.copy()
    for i in range(3):
        sums.item(("sum", i, 0), ("pair", i), "sum")
        tasks.item(("product", i, 0), ("pair", i), "product")
    s = sums.array("sum", ((2, 2, 2), (2,)), np.float64)
    p = tasks.array("product", ((2, 2, 2), (2,)), np.float64)
    got_s, got_p = dask.compute(s, p, scheduler="sync")
    want = np.repeat(np.arange(3.0), 2)[:, None] * np.ones((1, 2))
    np.testing.assert_array_equal(got_s, want + 10.0)
    np.testing.assert_array_equal(got_p, want * 10.0)
    # a copy does not see calls added to the original afterwards
    assert ("product", 0, 0) not in dict(s.__dask_graph__())


def test_a_dependency_array_is_read_by_key():
    x = da.arange(6, chunks=3)
    tasks = Tasks(x)
    for i in range(2):
        tasks.call(("twice", i), np.multiply, (x.name, i), 2)
    out = tasks.array("twice", ((3, 3),), x.dtype)
    np.testing.assert_array_equal(out.compute(scheduler="sync"), np.arange(6) * 2)


def test_no_other_module_builds_a_graph_by_hand():
    """``da.Array(...)`` calls and ``HighLevelGraph`` appear only in daskramp/taskgraph.py."""
    root = Path(daskramp.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "taskgraph.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr == "Array" and \
                    isinstance(f.value, ast.Name) and f.value.id == "da":
                offenders.append(f"{path.relative_to(root)}:{node.lineno} da.Array(...)")
            if isinstance(node, (ast.Name, ast.alias)) and \
                    getattr(node, "id", getattr(node, "name", None)) == "HighLevelGraph":
                offenders.append(f"{path.relative_to(root)}:{node.lineno} HighLevelGraph")
    assert offenders == []
