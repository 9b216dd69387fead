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
      // Every cell first, then the charts: a chart drawn while it was alone in its grid
      // would take the whole row's width and keep it once its neighbours arrive.
      var divs = ids.map(function (id) {
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
        return div;
      });
      divs.forEach(function (div, k) {
        var layout = Object.assign({}, figures[ids[k]].layout, { autosize: true });
        delete layout.width;
        Plotly.react(div, figures[ids[k]].data, layout, config);
        watchSize(div);
      });
    });
  }

  // Plotly's `responsive` follows the window only; a cell can change size without it (a
  // neighbour added to the grid, a scrollbar appearing), so each chart follows its cell.
  var observer = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(function (entries) {
    entries.forEach(function (entry) {
      var div = entry.target;
      var svg = div.querySelector(".main-svg");
      if (svg && Math.abs(svg.getBoundingClientRect().width - div.clientWidth) > 1) {
        Plotly.Plots.resize(div);
      }
    });
  });

  function watchSize(div) {
    if (observer && !div.getAttribute("data-watched")) {
      div.setAttribute("data-watched", "1");
      observer.observe(div);
    }
  }

  function fillSections(sections) {
    Object.keys(sections).forEach(function (name) {
      var el = document.getElementById("sec-" + name);
      if (el) el.innerHTML = sections[name];
    });
  }

  return { drawFigures: drawFigures, fillSections: fillSections };
})();
