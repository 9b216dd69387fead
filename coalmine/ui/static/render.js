// Draws the figures of a rollout into #fig-<group> containers. Shared by the live
// dashboard (redrawn on every poll with Plotly.react, so charts update in place) and the
// self-contained report (drawn once).
window.Coalmine = (function () {
  "use strict";
  var config = { displaylogo: false, responsive: true };

  function drawFigures(groups) {
    Object.keys(groups).forEach(function (group) {
      var container = document.getElementById("fig-" + group);
      if (!container) return;
      var figures = groups[group];
      var ids = Object.keys(figures);
      Array.prototype.slice.call(container.children).forEach(function (child) {
        if (ids.indexOf(child.getAttribute("data-fig")) < 0) {
          if (child.classList.contains("js-plotly-plot")) Plotly.purge(child);
          container.removeChild(child);
        }
      });
      if (!ids.length) {
        var empty = document.createElement("p");
        empty.className = "muted";
        empty.textContent = "No data yet.";
        container.appendChild(empty);
        return;
      }
      ids.forEach(function (id) {
        var div = null;
        for (var i = 0; i < container.children.length; i++) {
          if (container.children[i].getAttribute("data-fig") === id) div = container.children[i];
        }
        if (!div) {
          div = document.createElement("div");
          div.className = "fig";
          div.setAttribute("data-fig", id);
          container.appendChild(div);
        }
        Plotly.react(div, figures[id].data, figures[id].layout, config);
      });
    });
  }

  function fillSections(sections) {
    Object.keys(sections).forEach(function (name) {
      var el = document.getElementById("sec-" + name);
      if (el) el.innerHTML = sections[name];
    });
  }

  return { drawFigures: drawFigures, fillSections: fillSections };
})();
