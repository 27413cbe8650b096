// histoxai dashboard, browser side: display controls, the viewer and tile clicks.
// The URL fragment holds how tiles look and which one is open (see dashboard/state.py);
// nothing here asks the server for a grid.
(function () {
  "use strict";
  var DEFAULTS = {alpha: "0.8", cmap: "viridis", norm: "image", sign: "abs", clip: "99", fa: "1", tile: "128"};
  var ORDER = ["alpha", "cmap", "norm", "sign", "clip", "fa", "tile", "mask", "open"];

  function hashParams(hash) {
    var out = {};
    (hash || "").replace(/^#/, "").split("&").forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf("=");
      var k = decodeURIComponent(i < 0 ? kv : kv.slice(0, i));
      out[k] = decodeURIComponent(i < 0 ? "" : kv.slice(i + 1).replace(/\+/g, " "));
    });
    return out;
  }

  function enc(v) { return encodeURIComponent(v).replace(/%7C/gi, "|").replace(/%2C/gi, ",").replace(/%3A/gi, ":"); }

  // Same string as state.view_hash: non-default keys in a fixed order.
  function viewHash(p) {
    var parts = [];
    ORDER.forEach(function (k) {
      var v = p[k];
      if (v === undefined || v === null || v === "" || DEFAULTS[k] === String(v)) return;
      parts.push(k + "=" + enc(String(v)));
    });
    return parts.length ? "#" + parts.join("&") : "";
  }

  // Same string as state.display_query.
  function displayQuery(p) {
    var g = function (k) { return p[k] !== undefined ? p[k] : DEFAULTS[k]; };
    return "cmap=" + g("cmap") + "&norm=" + g("norm") + "&sign=" + g("sign") + "&clip=" + g("clip") + "&fa=" + g("fa");
  }

  // Point Dash's dcc.Location at the current address without reloading anything.
  function setHash(hash, push, state) {
    if (hash === location.hash || (hash === "" && (location.hash === "" || location.hash === "#"))) return;
    var url = location.pathname + location.search + hash;
    if (push) { history.pushState(state || {}, "", url); } else { history.replaceState(history.state, "", url); }
    window.dispatchEvent(new CustomEvent("_dashprivate_pushstate"));
  }

  function rewriteImages(q) {
    document.querySelectorAll("img[data-base]").forEach(function (img) {
      var b = img.getAttribute("data-base");
      var src = b + (b.indexOf("?") < 0 ? "?" : "&") + q;
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    });
  }

  // Ring the open patch's voxel on the voxel maps (trace 1 of each).
  function ringVoxel(key) {
    if (!window.Plotly) return;
    document.querySelectorAll(".voxel-map .js-plotly-plot").forEach(function (gd) {
      var keys = gd.data && gd.data[0] && gd.data[0].customdata;
      var x = [], y = [];
      (keys || []).forEach(function (line, i) {
        var j = line.indexOf(key);
        if (key && j >= 0) { x = [j]; y = [i]; }
      });
      window.Plotly.restyle(gd, {x: [x], y: [y]}, [1]);
    });
  }

  function rewriteMasks(cls) {
    document.querySelectorAll("img[data-mask]").forEach(function (img) {
      var b = img.getAttribute("data-mask");
      var src = cls ? b + (b.indexOf("?") < 0 ? "?" : "&") + "cls=" + cls : null;
      if (src === null) img.removeAttribute("src");
      else if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    });
  }

  function openTile(key, push) {
    var p = hashParams(location.hash);
    p.open = key;
    setHash(viewHash(p), push, push ? {viewer: 1} : history.state);
  }

  function closeViewer() {
    var p = hashParams(location.hash);
    if (!p.open) return;
    if (history.state && history.state.viewer) { history.back(); return; }
    delete p.open;
    setHash(viewHash(p), false);
  }

  function viewerOpen() {
    var v = document.getElementById("viewer");
    return v && !v.classList.contains("hidden");
  }

  document.addEventListener("click", function (e) {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    var t = e.target;
    var o = t.closest && t.closest("[data-open]");
    if (o) { e.preventDefault(); openTile(o.getAttribute("data-open"), false); return; }
    var tile = t.closest && t.closest("#page-content .tile[data-key]");
    if (tile) { openTile(tile.getAttribute("data-key"), true); return; }
    if (t.id === "viewer" || (t.closest && t.closest("#viewer-close"))) { closeViewer(); }
  });

  document.addEventListener("keydown", function (e) {
    if (!viewerOpen()) return;
    var tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    if (e.key === "Escape") { closeViewer(); e.preventDefault(); return; }
    var id = e.key === "ArrowLeft" ? "viewer-prev" : e.key === "ArrowRight" ? "viewer-next" : null;
    var b = id && document.getElementById(id);
    if (b && b.getAttribute("data-open")) { e.preventDefault(); openTile(b.getAttribute("data-open"), false); }
  });

  // A grid page's HTML text -> #page-grid with the current display query (once per text).
  function putGrid(text) {
    var host = document.getElementById("page-grid");
    if (!host || host.histoxaiText === text) return;
    host.histoxaiText = text;
    host.innerHTML = text || "";
    var p = hashParams(location.hash);
    rewriteImages(displayQuery(p));
    rewriteMasks(p.mask || "");
  }

  // A lost session (expired, revoked, server restarted) answers callbacks with 401:
  // go to the login form and come back here afterwards, instead of a frozen page.
  // A new grid is put in place as soon as its callback answer arrives: Dash applies the
  // answer's other outputs and runs the clientside callbacks first (60-100 ms on a page
  // turn), and the grid's images are only asked for once it is in place.
  var plainFetch = window.fetch;
  window.fetch = function (input, init) {
    return plainFetch.apply(this, arguments).then(function (resp) {
      var url = typeof input === "string" ? input : (input && input.url) || "";
      if (resp.status === 401 && url.indexOf("_dash-") >= 0) {
        var here = location.pathname + location.search + location.hash;
        location.assign("/login?next=" + encodeURIComponent(here));
      } else if (resp.ok && url.indexOf("_dash-update-component") >= 0) {
        resp.clone().json().then(function (body) {
          var grid = body && body.response && body.response["grid-html"];
          if (grid && typeof grid.data === "string" && grid.data) putGrid(grid.data);
        }).catch(function () {});
      }
      return resp;
    });
  };

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    histoxai: {
      // Display controls -> fragment, overlay/legend URLs and CSS variables of #content.
      display: function (alpha, follow, cmap, sign, norm, clip, tile, mask) {
        var p = hashParams(location.hash);
        var a = Math.round(Number(alpha) * 100) / 100;
        p.alpha = String(a); p.cmap = cmap; p.sign = sign; p.norm = norm; p.clip = String(clip);
        p.fa = follow && follow.length ? "1" : "0"; p.tile = String(tile); p.mask = mask || "";
        setHash(viewHash(p), false);
        rewriteImages(displayQuery(p));
        rewriteMasks(p.mask);
        return {"--tile": tile + "px", "--alpha": String(a)};
      },
      // A grid page's HTML text -> #page-grid, with the current display query.
      grid: function (text) {
        putGrid(text || "");
        return text ? "page-grid" : "page-grid empty";
      },
      // Histogram bars (HTML text per field) -> their boxes.
      hists: function (bars) {
        Object.keys(bars || {}).forEach(function (name) {
          var box = document.getElementById("hist-" + name);
          if (box) box.innerHTML = bars[name];
        });
        return "hist";
      },
      // A click on a voxel map opens that voxel's patch.
      voxelClick: function (clicks) {
        var ctx = window.dash_clientside.callback_context;
        var t = ctx.triggered && ctx.triggered[0];
        var pt = t && t.value && t.value.points && t.value.points[0];
        if (pt && pt.customdata) openTile(String(pt.customdata), true);
        return window.dash_clientside.no_update;
      },
      // Fragment -> the open tile's key and the viewer's visibility.
      openKey: function (hash, current) {
        var key = hashParams(hash).open || "";
        var cls = key ? "viewer" : "viewer hidden";
        ringVoxel(key);
        if (key === (current || "")) return [window.dash_clientside.no_update, cls];
        return [key, cls];
      },
      // Page links keep the query and fragment; the current page's link is marked.
      nav: function (paths, pathname, search, hash) {
        var h = hashParams(hash); delete h.open;
        var tail = (search || "") + viewHash(h);
        var q = (search || "?").replace(/^\?/, "");
        var display = viewHash(h).replace(/^#/, "");
        var both = "?" + q + (q && display ? "&" : "") + display;
        var page = {"/single": "single", "/targets": "targets", "/methods": "methods", "/linked": "single"}[pathname];
        return paths.map(function (p) { return p + tail; }).concat(
          paths.map(function (p) { return p === pathname ? "nav-link active" : "nav-link"; }),
          ["/export/table.csv" + (search || ""), "/export/" + (page || "single") + ".png" + both,
           "/export/" + (page || "single") + ".pdf" + both, page ? "exports" : "exports hidden",
           pathname === "/" ? "sidebar on-main" : "sidebar"]);
      },
    },
  });
})();
