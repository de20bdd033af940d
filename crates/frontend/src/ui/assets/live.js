// Keeps the part of a page marked data-live current: every few seconds it fetches the page
// again and swaps that part in. It pauses while the tab is hidden or someone is typing in a
// form. Without JavaScript the page is whole; reloading it refreshes it.
(function () {
  "use strict";
  var EVERY_MS = 3000;
  function typing() {
    var a = document.activeElement;
    return a && a.closest && a.closest("form") && a.tagName !== "BUTTON";
  }
  async function refresh() {
    var live = document.querySelector("[data-live]");
    if (!live || document.hidden || typing()) return;
    try {
      var r = await fetch(location.href, { credentials: "same-origin", redirect: "manual" });
      if (r.status !== 200) return;
      var doc = new DOMParser().parseFromString(await r.text(), "text/html");
      var fresh = doc.querySelector("[data-live]");
      if (fresh) live.replaceWith(document.adoptNode(fresh));
    } catch (e) {
      // The broker is away for a moment (restart, network): try again at the next tick.
    }
  }
  setInterval(refresh, EVERY_MS);
})();
