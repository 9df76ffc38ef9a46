// resnet-serve page: classify dropped images, and a live view of the server.
// Plain JavaScript, no library, no build step. Every call goes to this server's own API, with
// the bearer token when the server wants one; the token lives in `token` below and nowhere else.
"use strict";
(() => {
  let token = null; // Authorization: Bearer <token>; this tab's memory only, never stored
  let models = []; // GET /v1/models
  let view = "classify";
  let statusTimer = null;
  let statusIntervalMs = 2000;
  let lastReport = null;
  const objectUrls = [];

  const PHASE_ORDER = ["decode", "queue", "infer", "post", "total"];
  const PHASE_NAMES = {
    decode: "decode",
    queue: "queue",
    infer: "inference",
    post: "postprocess",
    total: "total",
  };
  const REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
  };
  const MAX_PARALLEL = 4; // requests in flight from this page at once

  const $ = (selector) => document.querySelector(selector);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ------------------------------------------------------------------ the API
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const started = performance.now();
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store" });
    } catch (err) {
      return {
        ok: false, status: 0, body: null, headers: new Headers(),
        ms: performance.now() - started,
        error: `could not reach the server (${err.message || err})`,
      };
    }
    const text = await response.text();
    const ms = performance.now() - started;
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    const result = { ok: response.ok, status: response.status, body, headers: response.headers, ms };
    if (!response.ok) {
      result.error = body && typeof body.error === "string"
        ? body.error
        : (text.trim().slice(0, 300) || "no message");
      result.reason = response.statusText || REASONS[response.status] || "";
      if (response.status === 401) askForToken(result);
    }
    return result;
  }

  function describeError(result) {
    if (result.status === 0) return result.error;
    return `${result.status}${result.reason ? " " + result.reason : ""}: ${result.error}`;
  }

  function showBanner(message) {
    const banner = $("#banner");
    banner.textContent = message || "";
    banner.hidden = !message;
  }

  // ------------------------------------------------------------------ the token
  function askForToken(result) {
    const section = $("#auth");
    const wasHidden = section.hidden;
    section.hidden = false;
    $("#auth-error").textContent = token ? describeError(result) : "";
    if (wasHidden || token) $("#token").focus();
  }

  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#token");
    const given = input.value.trim();
    input.value = ""; // the DOM keeps no copy
    if (!given) {
      $("#auth-error").textContent = "Enter the server's token (RESNET_SERVE_AUTH_TOKEN).";
      input.focus();
      return;
    }
    token = given;
    $("#auth-error").textContent = "";
    loadModels().then((ok) => {
      if (ok) {
        $("#auth").hidden = true;
        $("#token-button").hidden = false;
        if (view === "status") pollStatus();
      }
    });
  });

  $("#token-button").addEventListener("click", () => {
    $("#auth").hidden = false;
    $("#auth-error").textContent = "";
    $("#token").focus();
  });

  // ------------------------------------------------------------------ models
  async function loadModels() {
    const result = await api("/v1/models");
    if (!result.ok) {
      if (result.status !== 401) showBanner(`Could not list the models: ${describeError(result)}`);
      return false;
    }
    showBanner("");
    models = (result.body && result.body.models) || [];
    fillModelSelect();
    renderModelsTable();
    return true;
  }

  function modelNames() {
    const names = [];
    for (const m of models) if (!names.includes(m.name)) names.push(m.name);
    return names;
  }

  function versionsOf(name) {
    return models.filter((m) => m.name === name);
  }

  function fillModelSelect() {
    const select = $("#model");
    const previous = select.value;
    const names = modelNames();
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    if (!names.length) select.append(el("option", { value: "", text: "(no model served)" }));
    if (names.includes(previous)) select.value = previous;
    fillVersionSelect();
  }

  function fillVersionSelect() {
    const select = $("#version");
    const previous = select.value;
    const versions = versionsOf($("#model").value).map((m) => m.version);
    const latest = versions.length ? versions[versions.length - 1] : null;
    const options = [el("option", { value: "", text: latest ? `default (${latest})` : "default" })];
    if (versions.length > 1) {
      for (const v of versions) options.push(el("option", { value: v, text: `version ${v}` }));
    }
    select.replaceChildren(...options);
    select.disabled = versions.length <= 1;
    if (versions.includes(previous)) select.value = previous;
    showModelInfo();
  }

  function selectedModel() {
    const versions = versionsOf($("#model").value);
    const wanted = $("#version").value;
    return versions.find((m) => m.version === wanted) || versions[versions.length - 1] || null;
  }

  function showModelInfo() {
    const info = $("#model-info");
    const m = selectedModel();
    if (!m) {
      info.textContent = "No model is served: add one to the model repository.";
      return;
    }
    const providers = (m.providers || []).join(", ") || "-";
    const parts = [`${m.backend} on ${m.device}, ${m.precision}, providers ${providers}.`];
    info.replaceChildren(parts[0], " ");
    if (m.ready) info.append("Ready.");
    else info.append(el("span", { class: "bad", text: `Not ready: ${m.state}${m.reason ? ": " + m.reason : ""}.` }));
    if (m.weights_fallback || String(m.weights || "").startsWith("random")) {
      info.append(" ", el("span", { class: "bad", text: "Random weights: its labels mean nothing." }));
    }
  }

  $("#classify-form").addEventListener("submit", (event) => event.preventDefault()); // Enter
  $("#model").addEventListener("change", fillVersionSelect);
  $("#version").addEventListener("change", showModelInfo);

  // ------------------------------------------------------------------ classify
  const pending = [];
  let active = 0;

  function pump() {
    while (active < MAX_PARALLEL && pending.length) {
      const job = pending.shift();
      active += 1;
      job().finally(() => {
        active -= 1;
        pump();
      });
    }
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    const name = $("#model").value;
    if (!name) {
      showBanner("No model is served: there is nothing to classify with.");
      return;
    }
    const request = { name, version: $("#version").value, topK: $("#topk").value.trim() || "5" };
    for (const file of files) {
      const card = makeCard(file);
      $("#results").append(card);
      pending.push(() => classify(file, card, request));
    }
    pump();
  }

  function kilobytes(bytes) {
    return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`;
  }

  function makeCard(file) {
    let thumb;
    if ((file.type || "").startsWith("image/")) {
      const url = URL.createObjectURL(file);
      objectUrls.push(url);
      thumb = el("img", { class: "thumb", src: url, alt: "" });
    } else {
      thumb = el("div", { class: "thumb", "aria-hidden": "true", text: "no preview" });
    }
    return el(
      "article",
      { class: "card", "data-state": "pending", "data-file": file.name, "aria-busy": "true" },
      thumb,
      el("div", null,
        el("h3", { text: file.name || "pasted image" }),
        el("p", { class: "sub", text: `${kilobytes(file.size)}, ${file.type || "unknown type"}` }),
        el("p", { class: "sub status", text: "Sending..." })),
      el("div", { class: "body" }),
    );
  }

  function readDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function classify(file, card, request) {
    const name = encodeURIComponent(request.name);
    let path;
    let result;
    if (!request.version) {
      // one raw image body, as `curl --data-binary @file` sends it
      path = `/v1/models/${name}/classify?top_k=${encodeURIComponent(request.topK)}`;
      result = await api(path, {
        method: "POST",
        headers: { "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
    } else {
      // a given version: the V2 route that names it, with the file as image_bytes and the
      // classification extension's top-k
      path = `/v2/models/${name}/versions/${encodeURIComponent(request.version)}/infer`;
      let dataUrl;
      try {
        dataUrl = await readDataUrl(file);
      } catch (err) {
        finishCard(card, { ok: false, status: 0, error: `could not read the file (${err})` }, path, null);
        return;
      }
      const k = Number.parseInt(request.topK, 10);
      result = await api(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          inputs: [{ name: "image_bytes", datatype: "BYTES", shape: [1], data: [dataUrl] }],
          outputs: [{ name: "probabilities", parameters: { classification: Number.isNaN(k) ? request.topK : k } }],
        }),
      });
    }
    finishCard(card, result, path, request.version ? v2Predictions(result) : v1Predictions(result));
  }

  function v1Predictions(result) {
    if (!result.ok || !result.body || !Array.isArray(result.body.predictions)) return null;
    return result.body.predictions[0] || [];
  }

  function v2Predictions(result) {
    if (!result.ok || !result.body || !Array.isArray(result.body.outputs)) return null;
    const output = result.body.outputs[0];
    return (output.data || []).map((entry) => {
      const text = String(entry);
      const first = text.indexOf(":");
      const second = text.indexOf(":", first + 1);
      return {
        probability: Number.parseFloat(text.slice(0, first)),
        index: Number.parseInt(second < 0 ? text.slice(first + 1) : text.slice(first + 1, second), 10),
        label: second < 0 ? "" : text.slice(second + 1),
      };
    });
  }

  function finishCard(card, result, path, predictions) {
    card.removeAttribute("aria-busy");
    card.dataset.status = String(result.status);
    const status = card.querySelector(".status");
    const body = card.querySelector(".body");
    const requestId = result.headers && result.headers.get("X-Request-ID");
    status.textContent = `POST ${path.split("?")[0]}: ${result.status || "no answer"}` +
      (requestId ? `, request ${requestId}` : "");
    if (!result.ok) {
      card.dataset.state = "error";
      body.replaceChildren(el("p", { class: "error", role: "alert", text: describeError(result) }));
      return;
    }
    card.dataset.state = "done";
    const list = el("ol", { class: "preds", "aria-label": "Predictions, best first" });
    for (const p of predictions || []) {
      const percent = (p.probability * 100);
      const bar = el("span");
      bar.style.width = `${Math.max(0, Math.min(100, percent)).toFixed(1)}%`;
      list.append(el("li", { "data-index": p.index, "data-probability": p.probability },
        el("span", { class: "label", text: p.label || `class ${p.index}` }),
        el("span", { class: "prob", text: `${percent.toFixed(1)}%` }),
        el("span", { class: "bar", "aria-hidden": "true" }, bar)));
    }
    body.replaceChildren(list, timingOf(result));
  }

  // ------------------------------------------------------------------ Server-Timing
  function splitOutside(text, separator) {
    const parts = [];
    let current = "";
    let quoted = false;
    for (let i = 0; i < text.length; i += 1) {
      const c = text[i];
      if (c === "\\" && quoted && i + 1 < text.length) {
        current += c + text[i + 1];
        i += 1;
      } else if (c === '"') {
        quoted = !quoted;
        current += c;
      } else if (c === separator && !quoted) {
        parts.push(current);
        current = "";
      } else {
        current += c;
      }
    }
    parts.push(current);
    return parts;
  }

  function unquote(value) {
    return value.startsWith('"') && value.endsWith('"') && value.length >= 2
      ? value.slice(1, -1).replace(/\\(.)/g, "$1")
      : value;
  }

  // Any Server-Timing header: `name;dur=1.2;desc="..." , ...` -> [{name, dur, desc}].
  function parseServerTiming(header) {
    const entries = [];
    if (!header) return entries;
    for (const part of splitOutside(header, ",")) {
      const [rawName, ...params] = splitOutside(part, ";").map((s) => s.trim());
      if (!rawName) continue;
      const entry = { name: rawName, dur: null, desc: null };
      for (const param of params) {
        const eq = param.indexOf("=");
        const key = (eq < 0 ? param : param.slice(0, eq)).trim().toLowerCase();
        const value = eq < 0 ? "" : unquote(param.slice(eq + 1).trim());
        if (key === "dur" && entry.dur === null) {
          const dur = Number.parseFloat(value);
          if (Number.isFinite(dur)) entry.dur = dur;
        } else if (key === "desc" && entry.desc === null) {
          entry.desc = value;
        }
      }
      entries.push(entry);
    }
    return entries;
  }

  function ms(value) {
    return value >= 100 ? `${value.toFixed(0)} ms` : `${value.toFixed(1)} ms`;
  }

  function timingOf(result) {
    const box = el("div", { class: "timing" });
    const entries = parseServerTiming(result.headers.get("Server-Timing"))
      .filter((e) => e.dur !== null);
    const browser = el("p", { class: "note", "data-browser-ms": result.ms.toFixed(1) },
      `Round trip measured in the browser: ${ms(result.ms)}.`);
    if (!entries.length) {
      box.append(
        el("dl", null, el("div", null, el("dt", { text: "total, measured in the browser:" }),
          el("dd", { "data-phase": "browser-total", "data-ms": result.ms.toFixed(3), text: ms(result.ms) }))),
        el("p", { class: "note phases-unavailable" },
          "Server phases (decode, queue, inference, postprocess) unavailable: this server " +
          "sent no Server-Timing header."));
      return box;
    }
    entries.sort((a, b) => rank(a.name) - rank(b.name));
    const total = entries.find((e) => e.name === "total");
    const parts = entries.filter((e) => e.name !== "total");
    const whole = total ? total.dur : parts.reduce((sum, e) => sum + e.dur, 0);
    const bar = el("div", { class: "phases", "aria-hidden": "true" });
    const list = el("dl", { "aria-label": "Time of each phase on the server" });
    parts.forEach((e, i) => {
      const span = el("span", { class: `p${i % 6}`, title: `${label(e)} ${ms(e.dur)}` });
      span.style.width = `${whole > 0 ? Math.min(100, (100 * e.dur) / whole).toFixed(2) : 0}%`;
      bar.append(span);
      list.append(el("div", null, el("span", { class: `swatch p${i % 6}`, "aria-hidden": "true" }),
        el("dt", { text: label(e) }),
        el("dd", { "data-phase": e.name, "data-ms": e.dur, text: ms(e.dur) })));
    });
    if (total) {
      list.append(el("div", null, el("dt", { text: "total" }),
        el("dd", { "data-phase": "total", "data-ms": total.dur, text: ms(total.dur) })));
    }
    box.append(el("p", { class: "note", text: "Time on the server (Server-Timing):" }), bar, list, browser);
    return box;
  }

  function rank(name) {
    const i = PHASE_ORDER.indexOf(name);
    return i < 0 ? PHASE_ORDER.length - 1 : i; // unknown names before total, in their order
  }

  function label(entry) {
    return PHASE_NAMES[entry.name] || entry.desc || entry.name;
  }

  // ------------------------------------------------------------------ choosing, dropping, pasting
  $("#files").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = ""; // the same file can be chosen again
  });

  const drop = $("#drop");
  window.addEventListener("dragover", (event) => {
    event.preventDefault(); // a file dropped anywhere is classified, never opened by the browser
    if (view === "classify") drop.classList.add("over");
  });
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("over");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (view === "classify" && event.dataTransfer) addFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    if (view !== "classify" || !event.clipboardData) return;
    const files = Array.from(event.clipboardData.files || []);
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
  $("#clear").addEventListener("click", () => {
    $("#results").replaceChildren();
    while (objectUrls.length) URL.revokeObjectURL(objectUrls.pop());
  });

  // ------------------------------------------------------------------ views
  function showView(name) {
    view = name;
    for (const v of ["classify", "status"]) {
      $(`#view-${v}`).hidden = v !== name;
      const tab = $(`#tab-${v}`);
      if (v === name) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    document.title = name === "status" ? "Status - resnet-serve" : "Classify - resnet-serve";
    if (name === "status") pollStatus();
    else stopPolling();
  }

  for (const tab of document.querySelectorAll("nav a[data-view]")) {
    tab.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      if (tab.dataset.view !== view) history.pushState({}, "", tab.getAttribute("href"));
      showView(tab.dataset.view);
    });
  }
  window.addEventListener("popstate", () => showView(viewOfPath()));

  function viewOfPath() {
    return location.pathname.replace(/\/+$/, "") === "/status" ? "status" : "classify";
  }

  // ------------------------------------------------------------------ status
  function stopPolling() {
    if (statusTimer !== null) clearTimeout(statusTimer);
    statusTimer = null;
  }

  async function pollStatus() {
    stopPolling();
    if (view !== "status" || document.hidden) return;
    const [report] = await Promise.all([api("/v1/status"), loadModels()]);
    if (report.ok) {
      statusIntervalMs = Math.max(500, (report.body.interval_s || 2) * 1000);
      lastReport = report.body;
      renderStatus();
    } else if (report.status !== 401) {
      $("#status-meta").textContent = `Could not read the figures: ${describeError(report)}`;
    }
    if (view === "status" && !document.hidden && report.status !== 401) {
      stopPolling();
      statusTimer = setTimeout(pollStatus, statusIntervalMs);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopPolling();
    else if (view === "status") pollStatus();
  });
  $("#status-model").addEventListener("change", renderStatus);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderStatus, 150);
  });

  function renderModelsTable() {
    const rows = models.map((m) => {
      const state = m.ready ? "ready" : `${m.state}${m.reason ? ": " + m.reason : ""}`;
      return el("tr", { "data-model": m.name, "data-version": m.version },
        el("th", { scope: "row", text: m.name }),
        el("td", { "data-label": "version", text: m.version }),
        el("td", { "data-label": "state", class: m.ready ? "ready" : "not-ready", text: state }),
        el("td", { "data-label": "backend", text: m.backend }),
        el("td", { "data-label": "device", text: m.device }),
        el("td", { "data-label": "precision", text: m.precision }),
        el("td", { "data-label": "providers", text: (m.providers || []).join(", ") || "-" }));
    });
    if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 7, text: "No model is served." })));
    $("#models-table tbody").replaceChildren(...rows);
  }

  function duration(seconds) {
    if (seconds < 90) return `${Math.round(seconds)} s`;
    const minutes = Math.floor(seconds / 60);
    const rest = Math.round(seconds - minutes * 60);
    return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
  }

  function number(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "-";
    if (Math.abs(value) >= 100) return value.toFixed(0);
    return value.toFixed(digits);
  }

  function figure(key, value) {
    if (value === null || value === undefined) return "-";
    if (key.endsWith("_ms")) return `${number(value, 1)} ms`;
    if (key === "requests" || key === "errors" || key === "images" || key === "batches") {
      return String(Math.round(value));
    }
    if (key === "queue_depth" || key === "in_flight") return number(value, 0);
    return number(value, key === "mean_batch" ? 2 : 1);
  }

  function setFigure(node, key, value) {
    node.textContent = figure(key, value);
    if (value === null || value === undefined) node.removeAttribute("data-value");
    else node.dataset.value = String(value);
  }

  function renderStatus() {
    const report = lastReport;
    if (!report) return;
    const select = $("#status-model");
    const chosen = select.value || "*";
    select.replaceChildren(el("option", { value: "*", text: "all models" }),
      ...report.models.map((n) => el("option", { value: n, text: n })));
    select.value = report.models.includes(chosen) ? chosen : "*";
    const key = select.value;
    const series = report.series[key] || {};
    const window = report.window[key] || {};

    const meta = $("#status-meta");
    meta.dataset.sampleTime = String(report.now);
    meta.dataset.samples = String(report.t.length);
    const when = new Date(report.now * 1000).toLocaleTimeString();
    meta.textContent = `Figures of ${report.source} (read from the server's own metrics; ` +
      `answered by process ${report.pid}), one point every ${report.interval_s} s over the ` +
      `last ${duration(report.window_s)}. Last sample ${when}.`;

    for (const node of document.querySelectorAll("#now dd")) {
      const values = series[node.dataset.now] || [];
      setFigure(node, node.dataset.now, values.length ? values[values.length - 1] : null);
    }
    for (const node of document.querySelectorAll("#window dd")) {
      setFigure(node, node.dataset.window, window[node.dataset.window]);
    }
    $("#window-title").textContent = `Over the last ${duration(report.span_s || 0)}`;

    const t = report.t;
    // the x axis: what has been sampled, at least a minute, at most the window
    const first = t.length ? t[0] - report.interval_s : report.now;
    const x = [Math.max(report.now - report.window_s, Math.min(first, report.now - 60)), report.now];
    lineChart($("#chart-rate"), "Requests per second", t, x,
      [series.requests_per_s, series.images_per_s, series.errors_per_s], "/s");
    lineChart($("#chart-latency"), "Latency", t, x, [series.p50_ms, series.p99_ms], " ms");
    lineChart($("#chart-queue"), "Queue depth and in flight", t, x,
      [series.queue_depth, series.in_flight], "");
    lineChart($("#chart-batch"), "Mean batch size", t, x, [series.mean_batch], "");
    barChart($("#chart-batch-sizes"), window.batch_sizes || {});
  }

  // ------------------------------------------------------------------ SVG charts
  const SVG = "http://www.w3.org/2000/svg";

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    return node;
  }

  function niceCeil(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function size(svg) {
    const box = svg.getBoundingClientRect();
    const w = Math.max(200, Math.round(box.width || 520));
    const h = Math.max(100, Math.round(box.height || 170));
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    return { w, h, left: 46, right: 10, top: 10, bottom: 22 };
  }

  function axes(svg, g, ymax, xLabels) {
    const plotH = g.h - g.top - g.bottom;
    for (const fraction of [0, 0.5, 1]) {
      const y = g.top + plotH * (1 - fraction);
      svg.append(svgEl("line", { class: fraction === 0 ? "axis" : "grid", x1: g.left, x2: g.w - g.right, y1: y, y2: y }));
      const value = ymax * fraction;
      svg.append(svgEl("text", {
        x: g.left - 6, y: y + 4, "text-anchor": "end",
        text: value >= 10 || value === 0 ? String(Math.round(value)) : value.toFixed(1),
      }));
    }
    xLabels.forEach(([fraction, text]) => {
      const xpos = g.left + (g.w - g.left - g.right) * fraction;
      const anchor = fraction === 0 ? "start" : fraction === 1 ? "end" : "middle";
      svg.append(svgEl("text", { x: xpos, y: g.h - 6, "text-anchor": anchor, text }));
    });
  }

  function lineChart(svg, title, t, range, seriesList, unit) {
    svg.replaceChildren();
    const g = size(svg);
    const all = seriesList.flatMap((s) => (s || []).filter((v) => v !== null && v !== undefined));
    const ymax = niceCeil(Math.max(1, ...all));
    const span = range[1] - range[0];
    axes(svg, g, ymax, [[0, `-${duration(span)}`], [0.5, `-${duration(span / 2)}`], [1, "now"]]);
    const plotW = g.w - g.left - g.right;
    const plotH = g.h - g.top - g.bottom;
    seriesList.forEach((values, i) => {
      let d = "";
      let pen = false;
      (values || []).forEach((v, j) => {
        if (v === null || v === undefined || t[j] < range[0]) {
          pen = false;
          return;
        }
        const xpos = (g.left + ((t[j] - range[0]) / span) * plotW).toFixed(1);
        const ypos = (g.top + plotH * (1 - v / ymax)).toFixed(1);
        d += pen ? ` L${xpos} ${ypos}` : ` M${xpos} ${ypos} l0.01 0`;
        pen = true;
      });
      if (d) svg.append(svgEl("path", { class: `s${i}`, d: d.trim(), "stroke-linecap": "round" }));
    });
    const latest = seriesList.map((s) => (s && s.length ? s[s.length - 1] : null));
    svg.setAttribute("aria-label", `${title}: latest ${latest.map((v) => number(v, 1)).join(" / ")}${unit}, ` +
      `highest ${number(all.length ? Math.max(...all) : null, 1)}${unit} over the window`);
  }

  function barChart(svg, counts) {
    svg.replaceChildren();
    const g = size(svg);
    let labels = Object.keys(counts);
    let last = 0;
    labels.forEach((l, i) => { if (counts[l] > 0) last = i; });
    labels = labels.slice(0, Math.max(last + 1, 4));
    const values = labels.map((l) => counts[l] || 0);
    const ymax = niceCeil(Math.max(1, ...values));
    axes(svg, g, ymax, []);
    const plotW = g.w - g.left - g.right;
    const plotH = g.h - g.top - g.bottom;
    const slot = plotW / labels.length;
    labels.forEach((l, i) => {
      const h = (plotH * values[i]) / ymax;
      const xpos = g.left + slot * i + slot * 0.15;
      svg.append(svgEl("rect", { class: "s0", x: xpos.toFixed(1), y: (g.top + plotH - h).toFixed(1), width: (slot * 0.7).toFixed(1), height: h.toFixed(1) }));
      svg.append(svgEl("text", { x: (g.left + slot * (i + 0.5)).toFixed(1), y: g.h - 6, "text-anchor": "middle", text: l }));
    });
    svg.setAttribute("aria-label", "Batches of each size over the window: " +
      labels.map((l, i) => `${l}: ${Math.round(values[i])}`).join(", "));
  }

  // ------------------------------------------------------------------ start
  showView(viewOfPath());
  if (view === "classify") loadModels();
})();
