"""Coalmine as the judge for rollout tools that drive the traffic themselves.

Argo Rollouts (a `web` metric) and Flagger (webhook gates, a Prometheus metric template)
move the weights; Coalmine reads the prediction log that reaches it (its gateway, the
collectors or the batch ingest) and answers "is the candidate good enough so far?" with
the same analysis and the same step rule its own controller uses.

    query.py     what is asked: model, candidate, baseline, mode, weight, spec (pure)
    decision.py  Evidence -> PASS / FAIL / INCONCLUSIVE and the JSON answer (pure)
    service.py   the judge-only evaluators over the prediction log (I/O)
    argo.py      the web metric endpoint
    flagger.py   Flagger's webhook gates
    metrics.py   the judgement as a Prometheus gauge (Flagger's metric template)
    app.py       the mounted sub-application and its read-only token
"""
