"""Export a model's prediction log, each call with its request's folded feedback, to CSV or
Parquet: the file `coalmine analyze` (analysis/sources/export.py) reads.

Columns: every column of the `predictions` table (JSON ones as JSON text), then `label` and
`outcomes` (JSON text) folded from the request's feedback items in arrival order (last value
of each field wins). Rows are read in id order, in pages, so a large log is streamed: memory
stays bounded by the page size, not the log.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from coalmine.store.feedback import fold_feedback
from coalmine.store.schema import feedback, predictions

__all__ = ["EXPORT_COLUMNS", "ExportFormatError", "iter_export", "write_export"]

EXPORT_COLUMNS = (*(c.name for c in predictions.columns), "label", "outcomes")
PAGE = 5000


class ExportFormatError(ValueError):
    """The output file's suffix names no format we write."""


def iter_export(
    engine: Engine,
    model: str,
    *,
    since: float | None = None,
    rollout_id: int | None = None,
    page: int = PAGE,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of export rows of `model` (calls at or after `since`, of `rollout_id`)."""
    after = 0
    while True:
        query = select(predictions).where(
            (predictions.c.model == model) & (predictions.c.id > after)
        )
        if since is not None:
            query = query.where(predictions.c.ts >= since)
        if rollout_id is not None:
            query = query.where(predictions.c.rollout_id == rollout_id)
        with engine.connect() as conn:
            calls = conn.execute(query.order_by(predictions.c.id).limit(page)).all()
            if not calls:
                return
            ids = sorted({c.request_id for c in calls})
            items = conn.execute(select(feedback).where(feedback.c.request_id.in_(ids))).all()
        folds = fold_feedback(items)
        rows = []
        for call in calls:
            row = dict(call._mapping)
            fold = folds.get(call.request_id)
            row["label"] = None if fold is None or fold.label is None else json.dumps(fold.label)
            row["outcomes"] = json.dumps(fold.outcomes) if fold and fold.outcomes else None
            rows.append(row)
        yield rows
        after = calls[-1].id


def write_export(pages: Iterator[list[dict[str, Any]]], path: Path) -> int:
    """Write the pages to `path` (.csv or .parquet); returns the number of rows."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ExportFormatError(f"{path}: the output must end in .csv or .parquet")
    count = 0
    if suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            for rows in pages:
                writer.writerows(rows)
                count += len(rows)
        return count
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the parquet extra
        raise ExportFormatError(
            "writing Parquet needs pyarrow: pip install 'coalmine[parquet]'"
        ) from None
    schema = pa.schema([(name, _arrow_type(name, pa)) for name in EXPORT_COLUMNS])
    with pq.ParquetWriter(path, schema) as writer:
        for rows in pages:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            count += len(rows)
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def _arrow_type(name: str, pa: Any) -> Any:
    column = predictions.columns.get(name)
    if column is None:
        return pa.string()
    python_type = column.type.python_type
    return {int: pa.int64(), float: pa.float64()}.get(python_type, pa.string())
