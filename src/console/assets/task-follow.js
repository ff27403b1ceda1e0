// omnigate console: the task page follows its task through the task's status stream
// (server-sent events) and redraws its live part on each change, without reloading.
// Without this script the page still works: "Refresh now" reloads it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("task-live");
  if (!live || !live.dataset.follow || !window.EventSource) return;
  const stream = new EventSource(live.dataset.follow);
  let drawing = Promise.resolve();
  const redraw = async () => {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("task-live");
    if (!fresh) return;
    live.replaceChildren(...fresh.childNodes);
    if (!fresh.dataset.follow) {
      delete live.dataset.follow;
      stream.close();
    }
  };
  const changed = () => {
    drawing = drawing.then(redraw).catch(() => {});
  };
  for (const status of ["queued", "in_progress", "completed", "failed", "cancelled"]) {
    stream.addEventListener(`video.generation.${status}`, changed);
  }
});
