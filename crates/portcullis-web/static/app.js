// Countdowns for elements with data-deadline (RFC 3339, UTC). When the server also gives
// data-seconds (time left when the page was made), count from that instead, so a wrong clock on
// this computer does not show a wrong time left.
(function () {
  "use strict";
  var loaded = Date.now();
  function text(secs) {
    if (secs <= 0) { return "ended"; }
    var h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (s < 10 ? "0" : "") + s;
    if (h > 0) { return h + "h " + mm + "m left"; }
    if (m > 0) { return m + "m " + ss + "s left"; }
    return s + "s left";
  }
  function tick() {
    var els = document.querySelectorAll("[data-deadline]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i], secs;
      var given = el.getAttribute("data-seconds");
      if (given !== null && given !== "" && !isNaN(Number(given))) {
        secs = Number(given) - Math.floor((Date.now() - loaded) / 1000);
      } else {
        var end = Date.parse(el.getAttribute("data-deadline"));
        if (isNaN(end)) { continue; }
        secs = Math.floor((end - Date.now()) / 1000);
      }
      el.textContent = text(Math.max(0, secs));
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
  });
})();

// Live sessions (Grants page, request page): every 2 s, fetch the section's fragment
// (data-live-src) and merge it in. Rows of sessions already shown only get their numbers
// replaced (the data-live cells), so a reason being typed in an "End session" form is kept;
// rows of new sessions are added, rows of ended ones removed. Without this script a reload
// shows the same numbers.
(function () {
  "use strict";
  var PERIOD = 2000;
  function rows(section) {
    var body = section.querySelector("[data-live-rows]");
    return body ? body.querySelectorAll("tr[data-session]") : [];
  }
  function find(section, id) {
    var all = rows(section);
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-session") === id) { return all[i]; }
    }
    return null;
  }
  function merge(section, fresh) {
    var body = section.querySelector("[data-live-rows]");
    if (!body) { return; }
    var seen = {};
    var incoming = rows(fresh);
    for (var i = 0; i < incoming.length; i++) {
      var row = incoming[i], id = row.getAttribute("data-session");
      seen[id] = true;
      var mine = find(section, id);
      if (mine === null) {
        body.appendChild(document.importNode(row, true));
        continue;
      }
      var cells = row.querySelectorAll("[data-live]");
      for (var j = 0; j < cells.length; j++) {
        var name = cells[j].getAttribute("data-live");
        var target = mine.querySelector("[data-live=\"" + name + "\"]");
        if (target !== null && target.innerHTML !== cells[j].innerHTML) {
          target.innerHTML = cells[j].innerHTML;
        }
      }
    }
    var current = rows(section);
    for (var k = 0; k < current.length; k++) {
      if (!seen[current[k].getAttribute("data-session")]) {
        current[k].parentNode.removeChild(current[k]);
      }
    }
    var any = rows(section).length > 0;
    var empty = section.querySelector("[data-live-empty]");
    var table = body.closest("table");
    if (empty) { empty.hidden = any; }
    if (table) { table.hidden = !any; }
  }
  function refresh() {
    var sections = document.querySelectorAll("[data-live-src]");
    Array.prototype.forEach.call(sections, function (section) {
      fetch(section.getAttribute("data-live-src"), {
        credentials: "same-origin",
        headers: { "Accept": "text/html" },
        cache: "no-store"
      }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (text) {
        if (text === null) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.querySelector("[data-live-src]");
        if (fresh) { merge(section, fresh); }
      }).catch(function () { /* the next period tries again */ });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("[data-live-src]")) {
      setInterval(refresh, PERIOD);
    }
  });
})();

// The queue, the grants and the request lists keep up by themselves (issue 15): every
// data-refresh seconds the page is fetched again, and reloaded only when its data-refresh-key
// (the requests listed, with their states) has changed, and nobody has typed into one of its
// forms (a half-written reason is never thrown away), and the tab is visible. The reload drops a
// flash message's `done` so it is not shown again.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.querySelector("[data-refresh]");
    if (!el || !window.fetch || !window.DOMParser) { return; }
    var secs = Number(el.getAttribute("data-refresh"));
    if (!(secs > 0)) { return; }
    var key = el.getAttribute("data-refresh-key");
    var typed = false;
    document.addEventListener("input", function () { typed = true; });
    function busy() {
      var a = document.activeElement;
      return typed || document.visibilityState === "hidden" ||
        (a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT"));
    }
    setInterval(function () {
      if (busy()) { return; }
      var url = new URL(window.location.href);
      url.searchParams.delete("done");
      fetch(url.toString(), { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html === null || busy()) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
        if (fresh && fresh.getAttribute("data-refresh-key") !== key) {
          window.location.replace(url.toString());
        }
      }).catch(function () {});
    }, secs * 1000);
  });
})();
