// Keeps the part of a page marked data-live current: a few seconds after each refresh ends, it
// fetches the page again (saying so, so that the server can skip what is not live) and swaps
// that part in. It waits while the tab is hidden or the pointer or focus is in that part, and
// reloads the whole page when the message's state changed (its actions change with it) or the
// session ended. Without JavaScript the page is whole; reloading it refreshes it.
(function () {
  "use strict";
  var EVERY_MS = 3000;
  var GIVE_UP_MS = 10000;
  function busy(live) {
    var a = document.activeElement;
    var typing = a && a.closest && a.closest("form") && a.tagName !== "BUTTON";
    return typing || live.contains(a) || live.matches(":hover");
  }
  function state(doc) {
    var s = doc.getElementById("state");
    return s ? s.textContent : null;
  }
  async function refresh() {
    var live = document.querySelector("[data-live]");
    if (!live || document.hidden || busy(live)) return;
    var stop = new AbortController();
    var timer = setTimeout(function () { stop.abort(); }, GIVE_UP_MS);
    try {
      var r = await fetch(location.href, {
        credentials: "same-origin",
        redirect: "manual",
        headers: { "x-syncbrok-live": "1" },
        signal: stop.signal,
      });
      if (r.type === "opaqueredirect") { location.reload(); return; }
      if (r.status !== 200) return;
      var doc = new DOMParser().parseFromString(await r.text(), "text/html");
      if (state(doc) !== state(document)) { location.reload(); return; }
      var fresh = doc.querySelector("[data-live]");
      if (fresh) live.replaceWith(document.adoptNode(fresh));
    } catch (e) {
      // The broker is away for a moment (restart, network): try again at the next tick.
    } finally {
      clearTimeout(timer);
    }
  }
  function tick() {
    refresh().finally(function () { setTimeout(tick, EVERY_MS); });
  }
  setTimeout(tick, EVERY_MS);
})();
