// The sandbox inbox: polls api/messages and api/phones every second and redraws.
// URLs are relative so the page works both standalone and mounted (e.g. under /sandbox/).
// Text goes in through textContent only (no HTML parsing), so message bodies cannot inject markup.
"use strict";

(function () {
  const main = document.getElementById("messages");
  const list = document.getElementById("message-list");
  const phoneList = document.getElementById("phone-list");
  const total = document.getElementById("total");
  const connection = document.getElementById("connection");
  const announce = document.getElementById("announce");
  const selected = main.dataset.selected || "";
  const openDetails = new Set();
  let lastMessages = "";
  let lastPhones = "";
  let lastTotal = Number(total.textContent);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) {
      node.append(child);
    }
    return node;
  }

  function localTime(iso) {
    const when = new Date(iso);
    return isNaN(when) ? iso : when.toLocaleString();
  }

  function timeEl(iso) {
    const node = el("time", { textContent: localTime(iso) });
    node.setAttribute("datetime", iso);
    return node;
  }

  function requestText(request) {
    const head = request.method + " " + request.path + (request.query ? "?" + request.query : "");
    const headers = Object.entries(request.headers).map(([k, v]) => k + ": " + v).join("\n");
    return head + "\n" + headers + "\n\n" + request.body;
  }

  function bubble(m) {
    const details = el("details", {}, [
      el("summary", { textContent: "Details of " + m.id }),
      el("dl", {}, [
        el("dt", { textContent: "API" }),
        el("dd", {
          textContent: m.api + ", answered HTTP " + (m.http_status ?? "none (connection reset)"),
        }),
        el("dt", { textContent: "Client reference" }),
        el("dd", { textContent: m.client_ref || "none" }),
        el("dt", { textContent: "Callback URL" }),
        el("dd", { textContent: m.callback_url || "none" }),
        el("dt", { textContent: "Outcome" }),
        el("dd", { textContent: m.outcome }),
      ]),
      el("h3", { textContent: "Request received" }),
      el("pre", { textContent: requestText(m.request) }),
      el("h3", { textContent: "Status history" }),
      el("ol", {}, m.history.map((h) => el("li", {}, [h.status + " at ", timeEl(h.at)]))),
      el("h3", { textContent: "Callbacks" }),
      m.callbacks.length
        ? el("ol", {}, m.callbacks.map((c) => el("li", {
            textContent: c.status + " to " + c.url + ", attempt " + c.attempt + ": " +
              (c.http_status ?? c.error),
          })))
        : el("p", { textContent: "None yet." }),
    ]);
    details.open = openDetails.has(m.id);
    details.addEventListener("toggle", () => {
      if (details.open) openDetails.add(m.id); else openDetails.delete(m.id);
    });
    const segments = m.segments + (m.segments === 1 ? " segment" : " segments") + ", " + m.encoding;
    const item = el("li", { className: "bubble status-" + m.status }, [
      el("p", { className: "body", textContent: m.body }),
      el("p", { className: "meta" }, [
        el("span", {}, ["From ", el("strong", { textContent: m.from || "(no sender)" }), " to " + m.to]),
        timeEl(m.received_at),
        el("span", {
          className: "status",
          textContent: m.status + (m.reason ? " (" + m.reason + ")" : ""),
        }),
        el("span", { textContent: segments }),
      ]),
      details,
    ]);
    item.dataset.id = m.id;
    return item;
  }

  function phoneLink(label, href, current, count) {
    const link = el("a", { href: href }, [el("span", { className: "number", textContent: label })]);
    if (count !== undefined) {
      const badge = el("span", { className: "count", textContent: String(count) });
      badge.setAttribute("aria-label", count + (count === 1 ? " message" : " messages"));
      link.append(badge);
    }
    if (current) link.setAttribute("aria-current", "page");
    return el("li", {}, [link]);
  }

  function renderMessages(doc) {
    // Announce arrivals briefly instead of making the whole list a live region.
    if (doc.total > lastTotal) {
      const added = doc.total - lastTotal;
      announce.textContent = added + (added === 1 ? " new message" : " new messages");
    }
    lastTotal = doc.total;
    total.textContent = String(doc.total);
    if (!doc.messages.length) {
      list.replaceChildren(el("li", {
        className: "empty",
        textContent: "No messages yet. Send one with POST api/messages.",
      }));
      return;
    }
    list.replaceChildren(...doc.messages.map(bubble));
  }

  function renderPhones(doc) {
    const items = [phoneLink("All numbers", "./", !selected)];
    for (const p of doc.phones) {
      items.push(phoneLink(p.number, "?to=" + encodeURIComponent(p.number), p.number === selected,
        p.messages));
    }
    // Keep keyboard focus on the same link across redraws.
    const focused = document.activeElement && phoneList.contains(document.activeElement)
      ? document.activeElement.getAttribute("href") : null;
    phoneList.replaceChildren(...items);
    if (focused) {
      const again = Array.from(phoneList.querySelectorAll("a"))
        .find((a) => a.getAttribute("href") === focused);
      if (again) again.focus();
    }
  }

  async function getJson(url) {
    const answer = await fetch(url, { headers: { Accept: "application/json" } });
    if (!answer.ok) throw new Error(url + " answered " + answer.status);
    return answer.text();
  }

  async function poll() {
    try {
      const query = new URLSearchParams({ limit: "200" });
      if (selected) query.set("to", selected);
      const [messages, phones] = await Promise.all([
        getJson("api/messages?" + query), getJson("api/phones"),
      ]);
      // Redraw only on change, so open details and focus inside the list survive.
      if (messages !== lastMessages && !list.contains(document.activeElement)) {
        lastMessages = messages;
        renderMessages(JSON.parse(messages));
      }
      if (phones !== lastPhones) {
        lastPhones = phones;
        renderPhones(JSON.parse(phones));
      }
      connection.textContent = "";
    } catch (error) {
      connection.textContent = "Not connected to the sandbox; retrying.";
    } finally {
      setTimeout(poll, 1000);
    }
  }

  document.getElementById("clear").addEventListener("click", async () => {
    if (!window.confirm("Delete all messages kept by the sandbox?")) return;
    await fetch("api/messages", { method: "DELETE" });
    lastMessages = "";
  });

  const chaosForm = document.getElementById("chaos-form");
  const chaosResult = document.getElementById("chaos-result");
  chaosForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const doc = {};
    for (const input of chaosForm.querySelectorAll("input")) {
      if (input.value === "") continue;
      doc[input.name] = input.name === "seed" ? parseInt(input.value, 10) : parseFloat(input.value);
    }
    const answer = await fetch("api/chaos", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(doc),
    });
    const result = await answer.json();
    chaosResult.textContent = answer.ok ? "Saved." : "Not saved: " + result.error;
  });

  poll();
})();
