// omnigate console: a little progressive enhancement. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Destructive forms ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // The playground's live quote.
  const playground = document.querySelector("form[data-quote]");
  if (playground) {
    const text = document.getElementById("quote-text");
    const body = document.getElementById("request-json");
    let timer = null;
    let asked = 0;
    const quote = async () => {
      const mine = ++asked;
      const response = await fetch(playground.dataset.quote, {
        method: "POST",
        body: new URLSearchParams(new FormData(playground)),
        credentials: "same-origin",
      });
      const answer = await response.json().catch(() => ({}));
      if (mine !== asked) return; // a later edit already asked again
      if (response.ok) {
        const q = answer.quote;
        text.textContent = `${q.provider} would take it for $${q.estimated_usd.toFixed(4)} ` +
          `(${q.billed_seconds} s billed): ${q.reason}.`;
        text.dataset.provider = q.provider;
        body.textContent = JSON.stringify(answer.request, null, 2);
      } else {
        const e = answer.error || {};
        text.textContent = `Not accepted: ${e.message || response.statusText}` +
          (e.param ? ` (field ${e.param})` : "");
        delete text.dataset.provider;
      }
    };
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(quote, 250);
    };
    playground.addEventListener("input", soon);
    playground.addEventListener("change", soon);
    quote();
  }
});
