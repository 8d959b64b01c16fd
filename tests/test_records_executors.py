"""Result records (schema, round trip, one-line errors) and executors (graph order, same results)."""

from __future__ import annotations

import pytest

from uadbench.errors import UadbenchError
from uadbench.executors import LocalPoolExecutor, SerialExecutor, Task, check_graph, create_executor
from uadbench.executors.base import priority_order
from uadbench.records import RECORD_SCHEMA, ResultRecord, component_versions, read_records, records_text, shift_label, versions


def _record(**kw) -> ResultRecord:
    base = dict(
        grid="g", spec_hash="h", method="ae", label="ae", preset="cpu", config_hash="c", fit_key="f", eval_key="e",
        train_dataset="t", dataset="d", split="test", val_split="val", shift="gamma", severity=1.5, seed=0,
        image_grid={"name": "cpu"}, metrics={"auprc": 0.5}, thresholds={}, versions=versions(),
        per_volume={"s1": {"auprc": 0.4}, "s2": {"auprc": 0.6}, "h1": {"fp_volume_ml@val-bisection": 0.0}},
        cost={"num_parameters": 1, "train_seconds": 1.0, "seconds_per_volume": 0.1},
    )
    return ResultRecord(**{**base, **kw})


def test_record_round_trips_and_knows_its_cell(tmp_path):
    rec = _record()
    assert ResultRecord.from_json(rec.to_json()) == rec
    assert rec.schema == RECORD_SCHEMA and rec.shift_label == "gamma@1.5" and rec.cell == ("d", "gamma@1.5", 0)
    assert rec.subject_values("auprc") == {"s1": 0.4, "s2": 0.6}
    path = tmp_path / "results.jsonl"
    path.write_text(records_text([rec, _record(seed=1)]))
    assert [r.seed for r in read_records(path)] == [0, 1]
    assert set(component_versions()) == {"pipeline", "protocol", "metrics", "shifts", "record"}
    assert shift_label("none", None) == "none" and shift_label("noise", 0.05) == "noise@0.05"


@pytest.mark.parametrize("content, message", [
    ("", "no result records"),
    ('{"schema": 2, "method": "ae"', "results.jsonl:1: not valid JSON"),
    ("[1, 2]\n", "results.jsonl:1: expected a JSON object"),
    ('{"schema": 99}\n', "results.jsonl:1: unknown record schema 99"),
    ('{"schema": 2, "method": "ae"}\n', "results.jsonl:1: record lacks"),
])
def test_bad_results_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "results.jsonl"
    path.write_text(content)
    with pytest.raises(UadbenchError, match=message.replace("[", r"\[")):
        read_records(path)


def test_schema_1_records_still_read(tmp_path):
    old = {k: v for k, v in _record().to_dict().items() if k not in ("device",)}
    old["schema"] = 1
    assert ResultRecord.from_dict(old).method == "ae"


# -- executors -------------------------------------------------------------------------------------
def _square(x: int) -> int:
    return x * x


def _graph() -> list[Task]:
    # c depends on a and b; d on c: a valid finishing order puts a, b before c before d
    return [
        Task("d", _square, (4,), ("c",)),
        Task("c", _square, (3,), ("a", "b")),
        Task("a", _square, (1,)),
        Task("b", _square, (2,)),
    ]


@pytest.mark.parametrize("executor", [SerialExecutor(1), LocalPoolExecutor(2)], ids=["serial", "pool"])
def test_executors_respect_dependencies_and_agree(executor):
    order, results = [], {}
    for task, result in executor.run(_graph()):
        order.append(task.key)
        results[task.key] = result
    assert results == {"a": 1, "b": 4, "c": 9, "d": 16}
    assert order.index("c") > max(order.index("a"), order.index("b")) and order.index("d") > order.index("c")


def test_bad_graphs_and_settings_are_refused():
    with pytest.raises(UadbenchError, match="cycle"):
        check_graph([Task("a", _square, (1,), ("b",)), Task("b", _square, (1,), ("a",))])
    with pytest.raises(UadbenchError, match="unknown tasks"):
        check_graph([Task("a", _square, (1,), ("zzz",))])
    with pytest.raises(UadbenchError, match="duplicate"):
        check_graph([Task("a", _square, (1,)), Task("a", _square, (2,))])
    with pytest.raises(UadbenchError, match="workers must be >= 1"):
        create_executor(0)
    with pytest.raises(UadbenchError, match="threads per worker must be >= 1"):
        create_executor(1, 0)


def test_serial_executor_honours_the_thread_count_and_restores_it():
    import torch

    before = torch.get_num_threads()
    seen = []
    graph = [Task("t", torch.get_num_threads)]
    for _, result in SerialExecutor(1).run(graph):
        seen.append(result)
    assert seen == [1] and torch.get_num_threads() == before


def test_the_pool_starts_what_others_wait_for_first():
    # c is listed last but d waits for it: with one worker, c runs first, then a, b, d
    graph = [Task("a", _square, (1,)), Task("b", _square, (2,)), Task("c", _square, (3,)), Task("d", _square, (4,), ("c",))]
    order = [task.key for task, _ in LocalPoolExecutor(1).run(graph)]
    assert order[0] == "c" and order.index("d") > order.index("c")
    assert sorted(graph, key=priority_order(graph))[0].key == "c"
