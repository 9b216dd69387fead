// The live dashboard. Reading and acting both go to the control API with the bearer token
// the user typed; it lives in sessionStorage only (gone when the tab closes).
(function () {
  "use strict";
  var KEY = "coalmine.token";
  var body = document.body;
  var api = body.getAttribute("data-api");
  var page = body.getAttribute("data-page");
  var rolloutId = body.getAttribute("data-rollout");
  var timer = null;
  var ACTIVE = ["pending", "shadow", "canary", "paused", "promoting", "rolling_back"];

  function token() { return sessionStorage.getItem(KEY) || ""; }

  function headers(extra) {
    var h = extra || {};
    if (token()) h["Authorization"] = "Bearer " + token();
    return h;
  }

  function banner(text) {
    var el = document.getElementById("banner");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  function refusal(response, payload) {
    var detail = payload && (payload.detail || payload.message || payload.error);
    if (detail && typeof detail !== "string") detail = JSON.stringify(detail);
    var word = response.status === 401 || response.status === 403 ? "Refused" : "Error";
    return word + " (" + response.status + (detail ? "): " + detail : ")");
  }

  function readJson(response) {
    return response.text().then(function (text) {
      try { return text ? JSON.parse(text) : null; } catch (e) { return { detail: text }; }
    });
  }

  function showTokenState() {
    var el = document.getElementById("token-state");
    if (el) el.textContent = token() ? "token set" : "no token";
  }

  function poll(path, onData, minMs) {
    if (timer) clearTimeout(timer);
    if (!token()) {
      banner("Enter the API token (the control API's bearer token) to see live data.");
      return;
    }
    var everyMs = minMs;
    fetch(api + path, { headers: headers() }).then(function (response) {
      return readJson(response).then(function (payload) {
        if (!response.ok) {
          banner(refusal(response, payload) + (response.status === 401 || response.status === 403
            ? ". Check the API token." : ""));
          return false;
        }
        banner("");
        // never spend more than about a quarter of the server's time drawing this page
        everyMs = Math.max(minMs, 4000 * ((payload && payload.compute_s) || 0));
        return onData(payload);
      });
    }).catch(function (err) {
      banner("Cannot reach the control API: " + err);
      return true;
    }).then(function (again) {
      if (again) timer = setTimeout(function () { poll(path, onData, minMs); }, everyMs);
    });
  }

  function setButtons(rollout) {
    var active = ACTIVE.indexOf(rollout.phase) >= 0;
    document.querySelectorAll("button[data-action]").forEach(function (b) {
      var a = b.getAttribute("data-action");
      var on = active && (a === "resume" ? rollout.phase === "paused"
        : a === "pause" ? rollout.phase !== "paused" && rollout.phase !== "rolling_back"
        : a === "approve" ? rollout.awaiting_approval !== null && rollout.awaiting_approval !== undefined
        : rollout.phase !== "rolling_back");
      b.disabled = !on;
    });
  }

  function refresh() {
    if (page === "index") {
      poll("/ui/overview", function (data) {
        Coalmine.fillSections(data.sections);
        return true;
      }, 3000);
    } else if (page === "rollout") {
      poll("/ui/rollouts/" + rolloutId, function (data) {
        Coalmine.fillSections(data.sections);
        var failure = document.getElementById("failure-section");
        if (failure) failure.hidden = !data.sections.failure.trim();
        Coalmine.drawFigures(data.figures);
        setButtons(data.rollout);
        return !data.rollout.ended;  // an ended rollout no longer changes
      }, 2000);
    }
  }

  function act(button) {
    var action = button.getAttribute("data-action");
    var out = document.getElementById("action-result");
    if (action === "abort" && button.getAttribute("data-armed") !== "1") {
      // two clicks for the one irreversible action, without a modal dialog
      button.setAttribute("data-armed", "1");
      button.textContent = "Confirm abort";
      setTimeout(function () { button.removeAttribute("data-armed"); button.textContent = "Abort"; }, 5000);
      return;
    }
    out.className = "";
    out.textContent = action + "…";
    fetch(api + "/rollouts/" + rolloutId + "/" + action, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: "{}",
    }).then(function (response) {
      return readJson(response).then(function (payload) {
        if (response.ok) {
          out.className = "good";
          out.textContent = action + ": done" + (payload && payload.phase ? " (now " + payload.phase + ")" : "");
          refresh();
        } else {
          out.className = "bad";
          out.textContent = action + ": " + refusal(response, payload);
        }
      });
    }).catch(function (err) {
      out.className = "bad";
      out.textContent = action + ": cannot reach the control API: " + err;
    });
  }

  function download() {
    var out = document.getElementById("action-result");
    fetch(api + "/ui/rollouts/" + rolloutId + "/report", { headers: headers() }).then(function (response) {
      if (!response.ok) {
        return readJson(response).then(function (payload) {
          out.className = "bad";
          out.textContent = "report: " + refusal(response, payload);
        });
      }
      return response.blob().then(function (blob) {
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = "coalmine-rollout-" + rolloutId + ".html";
        document.body.appendChild(a);
        a.click();
        a.remove();
      });
    });
  }

  var form = document.getElementById("token-form");
  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var input = document.getElementById("token-input");
      if (input.value) sessionStorage.setItem(KEY, input.value);
      input.value = "";
      showTokenState();
      refresh();
    });
    document.getElementById("token-forget").addEventListener("click", function () {
      sessionStorage.removeItem(KEY);
      showTokenState();
      refresh();
    });
  }
  document.querySelectorAll("button[data-action]").forEach(function (b) {
    b.addEventListener("click", function () { act(b); });
  });
  var dl = document.querySelector("button[data-download]");
  if (dl) dl.addEventListener("click", download);
  showTokenState();
  refresh();
})();
