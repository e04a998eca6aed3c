// The operations page: reads the endpoint's live feed (server-sent events) and steers
// bindings through POST /bindings/NAME. Plain script, no library: it must work offline.
"use strict";

(() => {
  const TOKEN_KEY = "binder-management-token";
  const SVG = "http://www.w3.org/2000/svg";
  const ACTIONS = [
    ["pause", "PAUSED", (s) => s === "RUNNING"],
    ["resume", "RESUMED", (s) => s === "PAUSED"],
    ["stop", "STOPPED", (s) => s !== "STOPPED"],
    ["start", "STARTED", (s) => s === "STOPPED"],
  ];

  let history = 300;
  let series = new Map(); // binding -> [[in, out] | null, ...], oldest first
  let samples = 0;
  let feed = null;
  let retry = null;

  const $ = (selector) => document.querySelector(selector);
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const bearer = () => (token() ? { Authorization: "Bearer " + token() } : {});

  function setStatus(status, text) {
    const el = $("#status");
    el.dataset.status = status;
    el.textContent = text;
  }

  function later(fn, ms) {
    clearTimeout(retry);
    retry = setTimeout(fn, ms);
  }

  // A cookie for the feed (EventSource cannot send a header): POST /ops/session with the
  // token as a bearer header, then open the feed.
  async function connect() {
    setStatus("connecting", "connecting…");
    let answer;
    try {
      answer = await fetch("session", { method: "POST", headers: bearer(), credentials: "same-origin" });
    } catch (e) {
      setStatus("offline", "cannot reach the app; trying again");
      later(connect, 2000);
      return;
    }
    if (answer.status === 401) {
      const refused = token() !== "";
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(refused ? "That token was refused." : "");
      return;
    }
    if (!answer.ok) {
      setStatus("offline", "the app answered " + answer.status + "; trying again");
      later(connect, 2000);
      return;
    }
    $("#token-form").hidden = true;
    openFeed();
  }

  function askToken(message) {
    if (feed) feed.close();
    feed = null;
    setStatus("token", "token needed");
    $("#token-error").textContent = message;
    $("#token-form").hidden = false;
    $("#token").focus();
  }

  function openFeed() {
    if (feed) feed.close();
    feed = new EventSource("events");
    feed.onopen = () => setStatus("live", "live");
    feed.onmessage = (event) => update(JSON.parse(event.data));
    feed.onerror = () => {
      if (feed && feed.readyState === EventSource.CLOSED) {
        // Refused (the app restarted, so its cookie is no longer valid) or gone: start over.
        feed = null;
        setStatus("offline", "disconnected; trying again");
        later(connect, 2000);
      } else {
        setStatus("offline", "reconnecting…");
      }
    };
  }

  function update(data) {
    history = data.history || history;
    if (data.reset) series = new Map();
    for (const sample of data.samples) {
      samples += 1;
      const seen = new Set();
      for (const [name, rates] of Object.entries(sample.rates)) {
        push(name, rates);
        seen.add(name);
      }
      for (const [name, points] of series) if (!seen.has(name)) push(name, null, points);
      $("#updated").textContent = "last " + new Date(sample.time * 1000).toLocaleTimeString();
    }
    document.body.dataset.samples = String(samples);
    showBinders(data.binders);
    const body = $("#bindings tbody");
    const names = new Set();
    for (const binding of data.bindings) {
      names.add(binding.bindingName);
      showBinding(body, binding);
    }
    for (const row of [...body.rows]) if (!names.has(row.dataset.binding)) row.remove();
  }

  function push(name, rates, points) {
    const list = points || series.get(name) || [];
    list.push(rates);
    while (list.length > history) list.shift();
    series.set(name, list);
  }

  function showBinders(binders) {
    const list = $("#binders");
    list.replaceChildren();
    for (const [name, health] of Object.entries(binders || {})) {
      const item = document.createElement("li");
      item.dataset.status = health.status;
      item.textContent = name + " " + health.status;
      item.title = health.detail || "";
      list.append(item);
    }
  }

  function cell(row, cls, numeric) {
    const td = document.createElement("td");
    td.className = cls + (numeric ? " num" : "");
    row.append(td);
    return td;
  }

  function makeRow(binding) {
    const row = document.createElement("tr");
    row.dataset.binding = binding.bindingName;
    cell(row, "name").textContent = binding.bindingName;
    cell(row, "destination");
    cell(row, "group");
    cell(row, "binder");
    cell(row, "state");
    cell(row, "in-rate", true);
    cell(row, "out-rate", true);
    const spark = cell(row, "spark");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 100");
    svg.setAttribute("preserveAspectRatio", "none");
    for (const which of ["in", "out"]) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", which);
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(line);
    }
    spark.append(svg);
    cell(row, "backlog", true);
    cell(row, "dlq", true);
    cell(row, "received", true);
    cell(row, "sent", true);
    const controls = cell(row, "controls");
    if (binding.input) {
      for (const [label, state] of ACTIONS) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = label;
        button.dataset.action = state;
        button.addEventListener("click", () => steer(binding.bindingName, state));
        controls.append(button);
      }
    }
    return row;
  }

  function showBinding(body, binding) {
    let row = body.querySelector(`tr[data-binding="${CSS.escape(binding.bindingName)}"]`);
    if (!row) {
      row = makeRow(binding);
      body.append(row);
    }
    const set = (cls, text, title) => {
      const td = row.querySelector("." + cls);
      td.textContent = text;
      if (title !== undefined) td.title = title;
    };
    set("destination", binding.name || "");
    set("group", binding.group || "(anonymous)");
    set("binder", binding.binder || "");
    set("state", binding.state || "");
    row.dataset.state = binding.state || "";
    const points = series.get(binding.bindingName) || [];
    const last = points.length ? points[points.length - 1] : null;
    set("in-rate", binding.input ? rate(last && last[0]) : "");
    set("out-rate", rate(last && last[1]));
    draw(row.querySelector("svg"), points, binding.input);
    const backlog = binding.lag || binding.queueDepth;
    if (backlog) {
      const parts = Object.entries(backlog);
      set(
        "backlog",
        String(parts.reduce((sum, [, n]) => sum + n, 0)),
        (binding.lag ? "lag per partition: " : "depth per queue: ") +
          parts.map(([k, n]) => k + " " + n).join(", "),
      );
    } else {
      set("backlog", binding.input ? "–" : "", binding.input ? "not sampled yet" : "");
    }
    set("dlq", binding.input ? String(binding.deadLettered) : "");
    set("received", binding.input ? String(binding.received) : "");
    set("sent", binding.sent === undefined ? "" : String(binding.sent));
    for (const button of row.querySelectorAll("button")) {
      const allowed = ACTIONS.find(([, state]) => state === button.dataset.action)[2];
      button.hidden = !allowed(binding.state);
    }
  }

  function rate(value) {
    if (value === null || value === undefined) return "–";
    return value >= 100 ? value.toFixed(0) : value.toFixed(1);
  }

  // The line spans the width once it has a minute of samples (before that it grows
  // from the left) and scrolls once it has the whole history.
  function draw(svg, points, input) {
    let top = 1;
    for (const p of points) if (p) top = Math.max(top, input ? p[0] : 0, p[1]);
    const span = Math.max(Math.min(history, Math.max(points.length, 60)) - 1, 1);
    const lines = svg.querySelectorAll("polyline");
    [0, 1].forEach((which) => {
      const coords = [];
      points.forEach((p, i) => {
        if (!p || (which === 0 && !input)) return;
        const x = (i / span) * 100;
        const y = 98 - (p[which] / top) * 94;
        coords.push(x.toFixed(2) + "," + y.toFixed(2));
      });
      lines[which].setAttribute("points", coords.join(" "));
    });
  }

  async function steer(name, state) {
    const error = $("#control-error");
    error.textContent = "";
    let answer;
    try {
      answer = await fetch("../bindings/" + encodeURIComponent(name), {
        method: "POST",
        headers: { ...bearer(), "Content-Type": "application/json" },
        body: JSON.stringify({ state }),
        credentials: "same-origin",
      });
    } catch (e) {
      error.textContent = "cannot reach the app";
      return;
    }
    if (answer.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      askToken("The token is needed again.");
      return;
    }
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      error.textContent = name + ": " + (body.error || "the app answered " + answer.status);
      return;
    }
    showBinding($("#bindings tbody"), body);
  }

  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    connect();
  });

  connect();
})();
