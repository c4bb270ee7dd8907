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
