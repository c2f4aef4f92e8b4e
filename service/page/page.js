"use strict";
(() => {
  const form = document.getElementById("try");
  const result = document.getElementById("result");
  const live = document.getElementById("live-counts");
  const keyInput = document.getElementById("api-key");

  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  };
  const fmt = (x) => (Math.abs(x) >= 1e-4 || x === 0 ? x.toFixed(4) : x.toExponential(2));

  // One CSV row with a header: the service parses it as it parses any CSV body, so what is
  // typed here is typed as a file's cell would be (a blank cell is a blank).
  const cell = (text) => '"' + text.replace(/"/g, '""') + '"';
  const csvBody = () => {
    const inputs = [...form.querySelectorAll("input[name]")];
    return inputs.map((i) => cell(i.name)).join(",") + "\n" +
      inputs.map((i) => cell(i.value.trim())).join(",") + "\n";
  };

  const call = async (url) => {
    const headers = { "Content-Type": "text/csv", Accept: "application/json" };
    if (keyInput && keyInput.value) headers.Authorization = "Bearer " + keyInput.value.trim();
    const started = performance.now();
    const response = await fetch(url, { method: "POST", headers, body: csvBody() });
    const ms = performance.now() - started;
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return { response, body, ms };
  };

  const bars = (entries, scale) => {
    const list = el("ul", { class: "bars" });
    for (const [name, value] of entries) {
      const bar = el("div", { class: value < 0 ? "bar negative" : "bar" });
      bar.style.width = Math.min(100, (100 * Math.abs(value)) / (scale || 1)) + "%";
      list.append(el("li", { "data-name": name },
        el("span", { class: "name", title: name }, name),
        el("span", { class: "track" }, bar),
        el("span", { class: "value" }, fmt(value))));
    }
    return list;
  };

  const showError = (response, body) => {
    const message = body && body.error ? body.error : response.statusText || "request failed";
    result.replaceChildren(el("p", { id: "result-error", class: "error" },
      `${response.status}: ${message}`));
  };

  const predict = async () => {
    const { response, body, ms } = await call(form.dataset.predict);
    if (!response.ok || !body || !body.predictions) return showError(response, body || {});
    const p = body.predictions[0];
    const probabilities = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);
    const parts = [
      el("p", {}, el("span", { id: "result-label" }, String(p.label)),
        el("small", {}, ` version ${body.version} · ${ms.toFixed(1)} ms`)),
      el("div", { id: "result-probabilities" }, bars(probabilities, 1)),
    ];
    if (p.warnings && p.warnings.length) {
      parts.push(el("ul", { id: "result-warnings", class: "warnings" },
        ...p.warnings.map((w) => el("li", {}, w))));
    }
    result.replaceChildren(...parts);
  };

  const explain = async () => {
    const { response, body } = await call(form.dataset.explain);
    if (!response.ok || !body || !body.explanations) return showError(response, body || {});
    const e = body.explanations[0];
    const entries = Object.entries(e.attributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const scale = Math.max(...entries.map(([, v]) => Math.abs(v)), 1e-12);
    const parts = [
      el("p", {}, el("span", { id: "result-label" }, String(e.label)),
        el("small", {}, ` probability ${fmt(e.probability)} = base ${fmt(e.base_value)} + the features' shares`)),
      el("div", { id: "result-attributions" }, bars(entries, scale)),
      el("p", { class: "note" }, `Shapley values (${body.method}, ${body.background_rows} background rows` +
        (e.error_bound !== undefined ? `, error bound ${fmt(e.error_bound)})` : ")")),
    ];
    if (e.warnings && e.warnings.length) {
      parts.push(el("ul", { class: "warnings" }, ...e.warnings.map((w) => el("li", {}, w))));
    }
    result.replaceChildren(...parts);
  };

  const run = (work, button) => async (event) => {
    if (event) event.preventDefault();
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    result.setAttribute("aria-busy", "true");
    try {
      await work();
    } catch (error) {
      result.replaceChildren(el("p", { id: "result-error", class: "error" },
        "the service did not answer: " + error.message));
    } finally {
      for (const b of form.querySelectorAll("button")) b.disabled = false;
      result.removeAttribute("aria-busy");
      if (button) button.focus();
    }
  };

  if (form) {
    form.addEventListener("submit", run(predict));
    document.getElementById("explain").addEventListener("click",
      run(explain, document.getElementById("explain")));
  }

  // Live counts from the Prometheus text of /metrics, for this model.
  const parseLabels = (text) => {
    const labels = {};
    for (const m of text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    return labels;
  };
  const refresh = async () => {
    if (!live || document.hidden) return;
    let text;
    try {
      const response = await fetch("metrics", { headers: { Accept: "text/plain" } });
      if (!response.ok) return;
      text = await response.text();
    } catch (_) { return; }
    const model = live.dataset.model;
    const version = live.dataset.version;
    let requests = 0;
    const statuses = {};
    const labels = {};
    for (const line of text.split("\n")) {
      const m = /^(inference_requests_total|model_predictions_total)\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\}\s+(\S+)/.exec(line);
      if (!m) continue;
      const l = parseLabels(m[2]);
      if (l.model !== model) continue;
      const value = Number(m[3]);
      if (m[1] === "inference_requests_total") {
        requests += value;
        statuses[l.status] = (statuses[l.status] || 0) + value;
      } else if (l.version === version) {
        labels[l.label] = (labels[l.label] || 0) + value;
      }
    }
    document.getElementById("live-requests").textContent = String(requests);
    document.getElementById("live-statuses").textContent = Object.keys(statuses).length
      ? "(" + Object.entries(statuses).sort().map(([s, n]) => `${n} × ${s}`).join(", ") + ")" : "";
    document.getElementById("live-labels").replaceChildren(
      ...Object.entries(labels).map(([label, n]) =>
        el("li", { "data-label": label }, `${label}: `, el("b", {}, String(n)))));
  };
  refresh();
  setInterval(refresh, 2000);
})();
