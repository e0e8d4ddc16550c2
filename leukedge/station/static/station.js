// The station page: talks to the JSON API only; every text from the station is set with
// textContent (never as HTML), and every request is same-origin JSON.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the slide shown
let stationCurrent = null; // the station's current slide, as last seen
let reasons = {}; // what each reason for an uncertain field means
let busy = false;

async function api(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(data.error || `${response.status} ${response.statusText}`);
  }
  return data;
}

function say(text, kind) {
  const box = $("message");
  box.textContent = text || "";
  box.className = `message ${kind || "info"}`;
  box.hidden = !text;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function percent(p) {
  return p === null || p === undefined ? "" : `${Math.round(p * 100)}%`;
}

// -- status and camera -------------------------------------------------------------------

async function refreshStatus() {
  let status;
  try {
    status = await api("GET", "/api/status");
  } catch (err) {
    $("camera-state").textContent = "station not reachable";
    $("camera-state").className = "badge bad";
    return;
  }
  reasons = status.reasons || reasons;
  const cam = status.camera;
  const badge = $("camera-state");
  if (cam.ok) {
    const t = cam.trigger || {};
    badge.textContent = `camera ok · focus ${Math.round(t.focus || 0)}${t.sharp ? "" : " (not sharp)"}`;
    badge.className = t.sharp ? "badge ok" : "badge warn";
  } else {
    badge.textContent = `camera: ${cam.error}`;
    badge.className = "badge bad";
  }
  $("live-note").textContent = cam.ok ? "" : `No picture from the camera: ${cam.error}`;
  $("live-note").hidden = cam.ok;
  $("auto").checked = cam.trigger && cam.trigger.mode === "auto";
  if (status.auto_note) $("capture-state").textContent = status.auto_note;
  if (!$("slide-id").value && status.new_slide) $("slide-id").value = status.new_slide;
  if (status.current !== stationCurrent) { // a slide started here, elsewhere, or before a restart
    stationCurrent = status.current;
    if (stationCurrent !== null && stationCurrent !== current) {
      current = stationCurrent;
      await refreshSlide();
    }
  }
  updateButtons();
}

function updateButtons(state) {
  const open = current !== null && (state || $("current-state").textContent) === "open";
  $("capture").disabled = busy || !open;
  $("end").disabled = busy || !open;
}

// -- the slide ---------------------------------------------------------------------------

let slideRequests = 0; // only the latest request's answer is shown (answers may cross)

async function refreshSlide() {
  if (current === null) return;
  const mine = ++slideRequests;
  let record;
  try {
    record = await api("GET", `/api/slides/${encodeURIComponent(current)}`);
  } catch (err) {
    if (mine === slideRequests) say(err.message, "error");
    return;
  }
  if (mine !== slideRequests) return;
  const info = record.slide;
  const tally = record.tally;
  $("current").hidden = false;
  $("current-id").textContent = info.id;
  $("current-state").textContent = info.state;
  $("current-state").className = `badge ${info.state === "open" ? "ok" : ""}`;
  $("current-operator").textContent = info.operator ? `operator ${info.operator}` : "";
  $("report").href = `/slides/${encodeURIComponent(info.id)}/report`;

  const body = $("tally").querySelector("tbody");
  body.replaceChildren();
  for (const label of Object.keys(tally.counts).sort()) {
    const row = el("tr");
    row.append(el("td", label), el("td", tally.counts[label]),
      el("td", (tally.confident_counts || {})[label] || 0));
    body.append(row);
  }
  $("counts").textContent =
    `${tally.fields} fields · ${tally.uncertain} uncertain · ${tally.errors} errors`;
  const call = $("call");
  if (info.call) {
    call.textContent = `Slide call: ${info.call.text}`;
    call.className = `call final ${info.call.refer ? "refer" : ""}`;
  } else {
    call.textContent = `Running call: ${tally.explanation}`;
    call.className = "call";
  }
  renderGallery(record.fields);
  updateButtons(info.state);
}

let shownFields = "";

function renderGallery(fields) {
  const key = JSON.stringify(fields);
  if (key === shownFields) return; // unchanged: keep the thumbnails as they are
  shownFields = key;
  const gallery = $("gallery");
  gallery.replaceChildren();
  $("field-count").textContent = fields.length ? `(${fields.length})` : "";
  for (const f of fields.slice().reverse()) {
    const card = el("li", null, `card ${f.error ? "error" : f.uncertain ? "uncertain" : ""}`);
    card.dataset.field = f.id;
    const button = el("button", null, "card-button");
    button.type = "button";
    button.title = "show what the model was given and why it decided";
    if (f.image) {
      const img = el("img");
      img.src = `/api/fields/${f.id}/thumb`;
      img.alt = `field ${f.id}`;
      img.loading = "lazy";
      button.append(img);
    }
    const label = f.error ? "not classified" : `${f.label} ${percent(f.confidence)}`;
    button.append(el("span", `#${f.id} ${label}`, "card-label"));
    if (f.error) {
      button.append(el("span", f.error, "card-reasons"));
    } else if (f.reasons && f.reasons.length) {
      const why = el("span", `uncertain: ${f.reasons.join(", ")}`, "card-reasons");
      why.title = f.reasons.map((r) => `${r}: ${reasons[r] || ""}`).join("\n");
      button.append(why);
    } else {
      button.append(el("span", `${f.cell_count} cell(s)`, "card-reasons"));
    }
    button.addEventListener("click", () => showField(f));
    card.append(button);
    gallery.append(card);
  }
}

function showField(f) {
  $("detail").hidden = false;
  $("detail-title").textContent = `#${f.id} ${f.source_id}`;
  const probs = Object.entries(f.probabilities || {})
    .map(([k, v]) => `${k} ${percent(v)}`).join(", ");
  const why = f.reasons && f.reasons.length
    ? `; uncertain: ${f.reasons.map((r) => (reasons[r] ? `${r} (${reasons[r]})` : r)).join("; ")}`
    : "";
  $("detail-text").textContent = f.error || `${f.label} (${probs})${why}`;
  if (!f.image) {
    $("detail-view").removeAttribute("src");
    $("detail-explain").removeAttribute("src");
    return;
  }
  $("explain-caption").textContent = "Explanation: computing (a few seconds)...";
  $("detail-view").src = `/api/fields/${f.id}/view`;
  $("detail-explain").src = `/api/fields/${f.id}/explain`;
  $("detail").scrollIntoView({ behavior: "smooth" });
}

let listRequests = 0;

async function refreshSlides() {
  const mine = ++listRequests;
  let data;
  try {
    data = await api("GET", "/api/slides");
  } catch (err) {
    return;
  }
  if (mine !== listRequests) return;
  const list = $("slides");
  list.replaceChildren();
  for (const s of data.slides.slice(0, 20)) {
    const item = el("li");
    const open = el("button", s.id, "link");
    open.type = "button";
    open.addEventListener("click", () => { current = s.id; refreshSlide(); });
    const call = s.call ? ` · ${s.call.label || "no call"}${s.call.refer ? ", refer" : ""}` : "";
    item.append(open, el("span", ` ${s.state} · ${s.fields} fields${call} `, "hint"));
    const report = el("a", "report");
    report.href = `/slides/${encodeURIComponent(s.id)}/report`;
    report.target = "_blank";
    report.rel = "noopener";
    item.append(report);
    list.append(item);
  }
}

// -- actions -----------------------------------------------------------------------------

async function act(work) {
  busy = true;
  updateButtons();
  try {
    await work();
  } catch (err) {
    say(err.message, "error");
  } finally {
    busy = false;
    updateButtons();
  }
}

async function newSlide(event) {
  event.preventDefault();
  await act(async () => {
    const info = await api("POST", "/api/slides",
      { slide: $("slide-id").value.trim(), operator: $("operator").value.trim() });
    current = info.id;
    $("slide-id").value = "";
    say(`Slide ${info.id} is open: focus on a field and capture.`, "info");
    await refreshSlide();
    await refreshSlides();
  });
}

async function capture() {
  await act(async () => {
    $("capture-state").textContent = "capturing...";
    try {
      const f = await api("POST", "/api/capture", { slide: current });
      const what = f.error ? `not classified: ${f.error}`
        : `${f.label} ${percent(f.confidence)}${f.uncertain ? ` (uncertain: ${f.reasons.join(", ")})` : ""}`;
      $("capture-state").textContent = `field #${f.id}: ${what}`;
      say("", "info");
    } catch (err) {
      $("capture-state").textContent = "capture failed";
      throw err;
    }
    await refreshSlide();
    await refreshSlides();
  });
}

async function endSlide() {
  if (current === null) return;
  await act(async () => {
    const call = await api("POST", `/api/slides/${encodeURIComponent(current)}/end`);
    say(`Slide ${call.slide} ended. ${call.text}`, call.refer ? "warn" : "info");
    await refreshSlide();
    await refreshSlides();
  });
}

async function setAuto() {
  try {
    const mode = $("auto").checked ? "auto" : "demand";
    await api("POST", "/api/capture-mode", { mode });
    $("capture-state").textContent = mode === "auto"
      ? "auto-capture: hold the stage still on a sharp field" : "capture on demand";
  } catch (err) {
    say(err.message, "error");
  }
}

window.addEventListener("load", () => {
  $("new-slide").addEventListener("submit", newSlide);
  $("capture").addEventListener("click", capture);
  $("end").addEventListener("click", endSlide);
  $("auto").addEventListener("change", setAuto);
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("detail-explain").addEventListener("load", () => {
    $("explain-caption").textContent =
      "Explanation: where covering the field lowers the predicted class most (red)";
  });
  $("detail-explain").addEventListener("error", () => {
    $("explain-caption").textContent = "Explanation not available for this field";
  });
  // The live view starts after the page has loaded: an endless stream never "loads".
  $("live").src = "/stream.mjpg";
  refreshStatus();
  refreshSlides();
  setInterval(refreshStatus, 2000);
  setInterval(() => { if (current !== null) refreshSlide(); }, 4000);
  setInterval(refreshSlides, 15000);
});
