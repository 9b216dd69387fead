"""The dashboard's pages and data routes inside the real control API, over real HTTP."""

from pathlib import Path

import httpx

from coalmine.store.engine import open_engine
from tests.ui.conftest import TOKEN, control_api
from tests.ui.seed import seed_rollout

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_pages_are_public_data_needs_the_token(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    seeded = seed_rollout(engine, end_phase="canary")
    with control_api(engine) as api, httpx.Client(base_url=api, timeout=30) as http:
        # the pages and assets carry no data: a browser navigation cannot send a bearer token
        index = http.get("/ui/")
        assert index.status_code == 200 and 'id="token-form"' in index.text
        assert http.get("/ui", follow_redirects=True).status_code == 200
        page = http.get(f"/ui/rollouts/{seeded.rollout_id}")
        assert page.status_code == 200 and "accuracy" not in page.text  # no data in the shell
        js = http.get("/ui/static/plotly.min.js")
        assert js.status_code == 200 and len(js.content) > 1_000_000
        assert http.get("/ui/static/../app.py").status_code == 404
        assert http.get("/ui/static/nope.js").status_code == 404

        path = f"/api/v1/ui/rollouts/{seeded.rollout_id}"
        assert http.get(path).status_code == 401
        assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert http.get("/api/v1/ui/overview").status_code == 401

        data = http.get(path, headers=AUTH).json()
        assert data["rollout"]["phase"] == "canary" and data["rollout"]["ended"] is False
        assert set(data["figures"]) == {"traffic", "criteria", "latency", "shadow", "resources"}
        assert "region=north" in data["sections"]["criteria"]
        assert data["sections"]["failure"].strip() == ""  # still running: no post-mortem
        assert http.get("/api/v1/ui/rollouts/999", headers=AUTH).status_code == 404

        overview = http.get("/api/v1/ui/overview", headers=AUTH).json()
        assert [m["model"] for m in overview["models"]] == ["digits"]
        assert f"/ui/rollouts/{seeded.rollout_id}" in overview["sections"]["rollouts"]

        report = http.get(f"{path}/report", headers=AUTH)
        assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]
        assert "Plotly" in report.text
    engine.dispose()
