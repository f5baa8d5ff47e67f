// weldmon console: live updates of the overview over server-sent events.
// The server renders every fragment with the same templates as the page; this script only
// swaps them in by element id, so there is one rendering implementation and no build step.
// (EventSource and outerHTML are all it takes; htmx would add ~50 KB for the same.)
"use strict";

(function () {
  const state = document.getElementById("live-state");
  function say(text, cls) {
    const el = document.getElementById("live-state");
    if (el) { el.textContent = "live updates: " + text; el.className = "live " + cls; }
  }

  function swap(fragment) {
    const old = document.getElementById(fragment.target);
    if (old) {
      old.outerHTML = fragment.html;
      return;
    }
    const parent = fragment.parent && document.getElementById(fragment.parent);
    if (parent) {
      const empty = parent.querySelector(":scope > .empty");
      if (empty) empty.remove();
      parent.insertAdjacentHTML("beforeend", fragment.html);
    }
  }

  const groups = document.getElementById("groups");
  if (groups && window.EventSource) {
    const source = new EventSource(groups.dataset.live);
    source.addEventListener("open", () => say("on", "live-on"));
    source.addEventListener("error", () => say("reconnecting…", "live-off"));
    source.addEventListener("swap", (event) => {
      swap(JSON.parse(event.data));
      say("on", "live-on");
    });
  } else if (state) {
    state.remove();
  }

  // A thumbnail whose clip the console cannot serve (refused or deleted since) is hidden
  // rather than drawn as a broken image; error events do not bubble, hence the capture.
  document.addEventListener("error", (event) => {
    const img = event.target;
    if (img instanceof HTMLImageElement && img.classList.contains("thumbnail")) {
      img.style.visibility = "hidden";
    }
  }, true);

  // The reviewer's name is remembered in this browser only.
  const reviewer = document.getElementById("reviewer");
  if (reviewer && window.localStorage) {
    reviewer.value = localStorage.getItem("weldmon-reviewer") || "";
    reviewer.form.addEventListener("submit", () => {
      localStorage.setItem("weldmon-reviewer", reviewer.value);
    });
  }
})();
