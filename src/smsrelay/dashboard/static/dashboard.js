// The dashboard's small scripts: key/value rows, type switches, copy buttons, confirmations,
// the connector form's preview and test send, and live refreshes.
// Server-rendered fragments (autoescaped by Jinja) are inserted as they are; anything built
// here goes in through textContent only.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "X-Requested-With": "fetch" },
    });
  }

  // ---- key/value rows -------------------------------------------------------------------
  let rowSerial = 1000;
  function wireRows(fieldset) {
    const list = fieldset.querySelector(".row-list");
    const template = fieldset.querySelector("template");
    fieldset.addEventListener("click", (event) => {
      const target = event.target;
      if (target.classList.contains("add-row")) {
        const row = template.content.firstElementChild.cloneNode(true);
        rowSerial += 1;
        for (const label of row.querySelectorAll("label[data-for]")) {
          const input = label.nextElementSibling;
          input.id = "row-" + rowSerial + "-" + label.dataset.for;
          label.htmlFor = input.id;
          label.textContent += " " + (list.children.length + 1);
        }
        list.append(row);
        row.querySelector("input").focus();
      } else if (target.classList.contains("remove-row")) {
        const row = target.closest("li");
        const next = row.nextElementSibling || row.previousElementSibling;
        if (list.children.length === 1) {
          for (const input of row.querySelectorAll("input")) input.value = "";
          row.querySelector("input").focus();
          return;
        }
        row.remove();
        (next ? next.querySelector("input") : fieldset.querySelector(".add-row")).focus();
      }
    });
  }
  document.querySelectorAll("fieldset[data-rows]").forEach(wireRows);

  // ---- a select shows the panel of its value; a checkbox shows its panel ----------------
  function wireSwitch(select) {
    const name = select.dataset.switch;
    const panels = document.querySelectorAll('.switch-panel[data-panel="' + name + '"]');
    const update = () => {
      for (const panel of panels) {
        panel.hidden = !panel.dataset.when.split(" ").includes(select.value);
      }
    };
    select.addEventListener("change", update);
    update();
  }
  document.querySelectorAll("select[data-switch]").forEach(wireSwitch);

  function wireToggle(box) {
    const panels = document.querySelectorAll('.toggle-panel[data-panel="' + box.dataset.toggle + '"]');
    const update = () => { for (const panel of panels) panel.hidden = !box.checked; };
    box.addEventListener("change", update);
    update();
  }
  document.querySelectorAll("input[data-toggle]").forEach(wireToggle);

  // A panel holding an error stays visible, whatever its switch says.
  document.querySelectorAll(".switch-panel .invalid, .toggle-panel .invalid").forEach((field) => {
    const panel = field.closest(".switch-panel, .toggle-panel");
    if (panel) panel.hidden = false;
  });

  // ---- copy buttons, confirmations, error summaries -------------------------------------
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const input = document.getElementById(button.dataset.copy);
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(input.value);
      button.textContent = "Copied";
    } catch (err) {
      input.select();
      button.textContent = "Press Ctrl+C";
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();

  // ---- connector form: preview and test send --------------------------------------------
  const connectorForm = document.getElementById("connector-form");
  const result = document.getElementById("try-result");

  function sampleFields(body) {
    for (const name of ["sample_region", "sample_number", "sample_body", "sample_sender"]) {
      const input = document.querySelector('[name="' + name + '"]');
      if (input) body.set(name, input.value);
    }
    return body;
  }

  function showMessage(text) {
    const p = document.createElement("p");
    p.className = "bad";
    p.textContent = text;
    result.replaceChildren(p);
  }

  async function run(button, body, after) {
    button.disabled = true;
    const label = button.textContent;
    button.textContent = label + "…";
    try {
      const response = await post(button.dataset.url, body);
      if (response.status === 401 || response.status === 403) {
        showMessage("Your session ended. Reload the page and sign in again.");
        return;
      }
      result.innerHTML = await response.text();
      if (after) after();
    } catch (err) {
      showMessage("The server did not answer: " + err);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  const previewButton = document.getElementById("preview-button");
  if (previewButton && connectorForm) {
    previewButton.addEventListener("click", () => {
      const body = sampleFields(new URLSearchParams(new FormData(connectorForm)));
      run(previewButton, body);
    });
  }

  const testButton = document.getElementById("test-button");
  if (testButton) {
    testButton.addEventListener("click", () => {
      const body = sampleFields(new URLSearchParams());
      run(testButton, body, () => followStatus(testButton.dataset.statusUrl));
    });
  }

  // Follow a test message until it settles (delivered, undelivered...) or a minute passes.
  function followStatus(base) {
    const badge = document.getElementById("test-status");
    if (!badge) return;
    const note = document.getElementById("test-status-note");
    const started = Date.now();
    const tick = async () => {
      let state;
      try {
        const response = await fetch(base + badge.dataset.message + "/status", {
          credentials: "same-origin",
          headers: { "X-Requested-With": "fetch" },
        });
        if (!response.ok) return;
        state = await response.json();
      } catch (err) {
        return;
      }
      if (!document.body.contains(badge)) return;
      badge.textContent = state.status;
      badge.className = "badge status-" + state.status;
      if (state.final) {
        note.textContent = state.failure_reason ? "(" + state.failure_reason + ")" : "";
        return;
      }
      if (state.status === "sent" && badge.dataset.tracked === "no") {
        note.textContent = "waiting: without a delivery mapping the report is stored but not read";
      } else {
        note.textContent = "waiting for the delivery report…";
      }
      if (Date.now() - started < 60000) setTimeout(tick, 700);
    };
    setTimeout(tick, 300);
  }

  // ---- delivery tracking: refresh the list of callbacks while the page is open ----------
  const callbackList = document.getElementById("callback-list");
  if (callbackList) {
    const refresh = async () => {
      const busy = callbackList.querySelector("details[open]") || callbackList.contains(document.activeElement);
      if (!document.hidden && !busy) {
        try {
          const response = await fetch(callbackList.dataset.refresh, {
            credentials: "same-origin",
            headers: { "X-Requested-With": "fetch" },
          });
          if (response.ok) {
            const html = await response.text();
            if (html !== callbackList.dataset.last) {
              callbackList.dataset.last = html;
              callbackList.innerHTML = html;
            }
          }
        } catch (err) {
          // offline for a moment: try again at the next tick
        }
      }
      setTimeout(refresh, 2500);
    };
    setTimeout(refresh, 2500);
  }
})();
