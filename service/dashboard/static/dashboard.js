// lowbit dashboard: live refresh for regions marked data-refresh (progressive enhancement; the pages
// work without this script). A region re-fetches its own page and swaps in the fresh copy of itself
// until the server marks it data-live="off" (nothing left that can change).
(function () {
  "use strict";
  function start(region) {
    var delay = parseInt(region.getAttribute("data-refresh"), 10) || 3000;
    if (region.getAttribute("data-live") !== "on") return; // nothing on this page can change any more
    var toggle = document.createElement("label");
    toggle.className = "refresh-toggle";
    var box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.id = region.id + "-auto";
    toggle.appendChild(box);
    toggle.appendChild(document.createTextNode(" Auto-refresh"));
    region.parentNode.insertBefore(toggle, region);
    var timer = null;
    function schedule() {
      clearTimeout(timer);
      if (box.checked && region.getAttribute("data-live") === "on") timer = setTimeout(tick, delay);
    }
    function tick() {
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.redirected || !r.ok) throw new Error("refresh stopped: " + r.status);
          return r.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
          if (!fresh) return;
          // Keep keyboard focus if the focused control survives the swap (same id or same form action).
          var active = document.activeElement;
          var key = active && region.contains(active) && active.form ? active.form.getAttribute("action") : null;
          region.innerHTML = fresh.innerHTML;
          region.setAttribute("data-live", fresh.getAttribute("data-live") || "off");
          if (key) {
            var again = region.querySelector('form[action="' + key + '"] button');
            if (again) again.focus();
          }
          document.dispatchEvent(new CustomEvent("lowbit:refreshed", { detail: region.id }));
          schedule();
        })
        .catch(function () { region.setAttribute("data-live", "off"); });
    }
    box.addEventListener("change", schedule);
    schedule();
  }
  // Forms marked data-confirm (cancel) ask first; delegated, so forms swapped in by a refresh ask too.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", function () {
    var regions = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < regions.length; i++) start(regions[i]);
  });
})();
