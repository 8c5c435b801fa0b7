"""Run-directory files after a crash or from an older version: a torn trial-log line does not
swallow the next record, and a trials table without the ``retries`` column still takes upserts."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from hpo.rundir import TRIALS_SCHEMA, RunDir, append_jsonl, read_jsonl


def test_a_record_after_a_torn_line_is_kept(tmp_path):
    path = tmp_path / "trial_log.jsonl"
    append_jsonl(path, {"trial_number": 0})
    with open(path, "a") as handle:
        handle.write('{"trial_number": 1, "sta')  # the driver was killed mid-write
    append_jsonl(path, {"trial_number": 1, "state": "COMPLETE"})
    assert read_jsonl(path) == [{"trial_number": 0}, {"trial_number": 1, "state": "COMPLETE"}]


def test_a_trials_table_of_an_older_version_takes_new_rows(tmp_path):
    run = RunDir(tmp_path)
    old_schema = pa.schema([field for field in TRIALS_SCHEMA if field.name != "retries"])
    row = {"task": "t", "variant": "ltc", "fold": 0, "seed": 0, "trial_number": 0, "state": "COMPLETE", "val_rmse_curve": [1.0]}
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), run.trials_file)
    run.upsert_trials([{**row, "fold": 1, "retries": 2}], [("t", "ltc", 1, 0)])
    table = run.read_trials().sort_values("fold")
    assert list(table["fold"]) == [0, 1]
    assert table["retries"].isna().tolist() == [True, False] and table["retries"].iloc[1] == 2
