"""Predictions collected where Coalmine is not the proxy.

The gateway logs what it forwards; services that route in their own code, KServe's
inference logger and nginx's access log report the same calls through this package, which
writes the same prediction-log rows, so one rollout is judged the same way whichever path
the traffic took.

- `items`: one reported call, validated, turned into a `PredictionRecord` (pure);
- `store`: the idempotent insert (a retried report does not count twice);
- `api`: the batch ingest endpoint of the control API (`POST /api/v1/predictions`).
"""
