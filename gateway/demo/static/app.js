// FaceVal demo page: plain browser JavaScript, no build step, nothing loaded from elsewhere.
// It talks to the same gateway that serves it, with the key the person gives it.
"use strict";

const API = new URL("../", window.location.href); // the page lives at <gateway>/demo/
const STAGES = [
  ["face_detector", "Face detection"],
  ["accessory", "Accessories"],
  ["quality", "Image quality"],
  ["identity", "Identity"],
  ["pad", "Presentation attack"],
];
const SIDES = ["near", "far"];
const POLL_MS = 400; // short polls, so each stage shows up as soon as it is recorded
const POLL_LIMIT_MS = 180000;
const HISTORY_KEY = "faceval.demo.history";
const KEY_KEY = "faceval.demo.key";
const HISTORY_SIZE = 20;

const photos = { near: null, far: null }; // { blob, name }
const streams = { near: null, far: null };
let current = null; // transaction id whose photos are on screen
let pollToken = 0; // a newer submission or history view stops an older poll

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function ms(value) {
  return typeof value === "number" ? value.toFixed(1) : "–";
}

// --- the API key --------------------------------------------------------------------------

function keyFromFragment() {
  const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  const fromUrl = fragment.get("key");
  if (!fromUrl) return false;
  $("api-key").value = fromUrl;
  saveKey();
  // Out of the address bar, the history and any screenshot of the page.
  history.replaceState(null, "", window.location.pathname + window.location.search);
  return true;
}

function initKey() {
  const input = $("api-key");
  const remember = $("key-remember");
  const stored = localStorage.getItem(KEY_KEY);
  if (stored) {
    input.value = stored;
    remember.checked = true;
  }
  keyFromFragment();
  // A #key= link opened in a tab that already shows the page changes only the fragment.
  window.addEventListener("hashchange", keyFromFragment);
  remember.addEventListener("change", saveKey);
  input.addEventListener("change", saveKey);
  $("key-toggle").addEventListener("click", () => {
    const show = input.type === "password";
    input.type = show ? "text" : "password";
    $("key-toggle").textContent = show ? "Hide" : "Show";
    $("key-toggle").setAttribute("aria-pressed", String(show));
  });
}

function saveKey() {
  if ($("key-remember").checked && $("api-key").value.trim()) {
    localStorage.setItem(KEY_KEY, $("api-key").value.trim());
  } else {
    localStorage.removeItem(KEY_KEY);
  }
}

function apiKey() {
  return $("api-key").value.trim();
}

// --- photos: file or camera ---------------------------------------------------------------

function setPhoto(side, blob, name) {
  photos[side] = { blob, name };
  const img = $(`${side}-img`);
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  const url = URL.createObjectURL(blob);
  img.dataset.url = url;
  clearOverlay(side);
  const caption = $(`${side}-caption`);
  caption.textContent = `${name} · ${(blob.size / 1024).toFixed(0)} KB`;
  const frame = img.parentElement;
  img.onload = () => {
    frame.hidden = false;
    caption.textContent = `${name} · ${img.naturalWidth}×${img.naturalHeight} · ${(blob.size / 1024).toFixed(0)} KB`;
  };
  img.onerror = () => {
    frame.hidden = true;
    caption.textContent = `${name}: this browser cannot show it as an image; FaceVal will probably refuse it too.`;
  };
  img.src = url;
  $(`${side}-preview`).hidden = false;
}

function initPhotos() {
  for (const side of SIDES) {
    $(`${side}-file`).addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) setPhoto(side, file, file.name);
    });
  }
  const canCamera = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  for (const button of document.querySelectorAll(".camera-open")) {
    if (!canCamera) {
      button.disabled = true;
      button.title = "This browser gives no camera here (it needs https or localhost).";
      continue;
    }
    button.addEventListener("click", () => openCamera(button.dataset.side));
  }
  for (const button of document.querySelectorAll(".camera-shoot")) {
    button.addEventListener("click", () => takePhoto(button.dataset.side));
  }
  for (const button of document.querySelectorAll(".camera-close")) {
    button.addEventListener("click", () => closeCamera(button.dataset.side));
  }
}

// The near/far panels show one photo each; the identity panels take theirs their own way.
const cameraTakers = {};

function errorBoxOf(side) {
  return SIDES.includes(side) ? "error" : "identity-error";
}

function cameraButtons(side, open) {
  const panel = $(`panel-${side}`);
  panel.querySelector(".camera-open").hidden = open;
  panel.querySelector(".camera-shoot").hidden = !open;
  panel.querySelector(".camera-close").hidden = !open;
  $(`${side}-video`).hidden = !open;
}

async function openCamera(side) {
  hideError(errorBoxOf(side));
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 960 } },
      audio: false,
    });
    streams[side] = stream;
    const video = $(`${side}-video`);
    video.srcObject = stream;
    await video.play();
    cameraButtons(side, true);
  } catch (err) {
    showMessage("The camera could not be opened.", `${err.name}: ${err.message}. Choose a file instead.`,
      "camera", errorBoxOf(side));
  }
}

function closeCamera(side) {
  const stream = streams[side];
  if (stream) stream.getTracks().forEach((track) => track.stop());
  streams[side] = null;
  $(`${side}-video`).srcObject = null;
  cameraButtons(side, false);
}

function takePhoto(side) {
  const video = $(`${side}-video`);
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob(
    (blob) => {
      if (!blob) {
        showMessage("The camera gave no picture.", "Try again, or choose a file.", "camera", errorBoxOf(side));
        return;
      }
      if (cameraTakers[side]) {
        cameraTakers[side](blob);
      } else {
        setPhoto(side, blob, `camera-${side}.jpg`);
        $(`${side}-file`).value = "";
      }
      closeCamera(side);
    },
    "image/jpeg",
    0.92,
  );
}

// --- face boxes ----------------------------------------------------------------------------

function clearOverlay(side) {
  const canvas = $(`${side}-overlay`);
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.faces = "0";
}

function drawFaces(result) {
  for (const side of SIDES) {
    const img = $(`${side}-img`);
    const canvas = $(`${side}-overlay`);
    const detected = ((result.stages || {}).face_detector || {})[side];
    const face = detected && detected.face;
    if (!img.naturalWidth) continue;
    // The canvas has the image's own pixel size; CSS scales both alike.
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.faces = "0";
    if (!face) continue;
    const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 200));
    const ok = detected.verdict === "pass";
    ctx.lineWidth = line;
    ctx.strokeStyle = ok ? "#19c37d" : "#e5484d";
    ctx.strokeRect(face.x, face.y, face.width, face.height);
    ctx.fillStyle = ctx.strokeStyle;
    for (const [x, y] of face.landmarks || []) {
      ctx.beginPath();
      ctx.arc(x, y, line * 1.5, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (typeof face.score === "number") {
      const size = Math.max(12, line * 7);
      ctx.font = `${size}px sans-serif`;
      const label = `face ${(face.score * 100).toFixed(0)}%`;
      const top = Math.max(0, face.y - size - line * 2);
      ctx.fillRect(face.x - line / 2, top, ctx.measureText(label).width + line * 4, size + line * 2);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, face.x + line * 1.5, top + size);
    }
    canvas.dataset.faces = "1";
  }
}

// --- errors in words -----------------------------------------------------------------------

const ERROR_WORDS = {
  unauthorized: "The API key was not accepted. Check it, or create one with faceval client create NAME.",
  file_too_large: "A photo is too large for this gateway.",
  image_too_large: "A photo has too many pixels.",
  image_too_small: "A photo is too small: the face cannot be analysed.",
  unsupported_format: "A file is not an image FaceVal accepts (JPEG, PNG or WebP).",
  image_undecodable: "A photo is damaged or cut short and cannot be read.",
  empty_file: "A file is empty.",
  missing_field: "Something the form needs is missing.",
  invalid_field: "A form field has a value FaceVal does not accept.",
  not_found: "No such validation for this API key.",
  service_unavailable: "FaceVal is busy or one of its services is down. Try again shortly.",
  overloaded: "FaceVal has too much work queued right now. Try again shortly.",
  invalid_request: "FaceVal could not understand the request.",
  unusable_image: "FaceVal found no usable face in the photo.",
  needs_reenrollment: "This subject was enrolled with another face model: enrol the person again.",
};

//: Why a photo was unusable (detail.reason of 422 unusable_image), in words.
const REASON_WORDS = {
  no_face: "no face was found",
  multiple_faces: "there is more than one face",
  face_too_small: "the face is too small",
  face_cut_off: "the face is cut off by the border",
  head_pose: "the head is turned too far from the camera",
  face_mask: "a face mask covers the nose or mouth",
  sunglasses: "sunglasses cover the eyes",
  hat: "a hat or head covering hides the brows",
  glasses: "glasses are not allowed by this key's policy",
  accessory_detected: "an accessory covers the face",
  low_quality: "the image quality is too low",
};

function errorWords(status, body, response) {
  if (status === 429 || (body && body.code === "rate_limited")) {
    const wait = response && response.headers.get("Retry-After");
    return `Too many requests: the rate limit for this key was reached.${wait ? ` Try again in ${wait} s.` : ""}`;
  }
  if (body && body.code === "unusable_image") {
    const detail = body.detail || {};
    const why = REASON_WORDS[detail.reason] || (detail.reason ? `it was rejected: ${detail.reason}` : "");
    const which = detail.image && detail.image !== "image" ? ` (${detail.image})` : "";
    return `FaceVal found no usable face in the photo${which}${why ? `: ${why}` : ""}.`;
  }
  if (body && ERROR_WORDS[body.code]) return ERROR_WORDS[body.code];
  if (status === 413) return ERROR_WORDS.file_too_large;
  if (status === 401) return ERROR_WORDS.unauthorized;
  if (status >= 500) return "The gateway had a problem. Try again shortly.";
  return "FaceVal refused the request.";
}

function showMessage(words, detail, code, boxId = "error") {
  const box = $(boxId);
  box.replaceChildren(el("strong", words));
  if (detail) box.append(" ", el("span", detail, "detail"));
  box.dataset.code = code || "";
  box.hidden = false;
}

function showApiError(status, body, response, boxId = "error", words = null) {
  const code = (body && body.code) || `http_${status}`;
  const message = (body && body.message) || (response ? response.statusText : "");
  showMessage(words || errorWords(status, body, response), `(${code}: ${message})`, code, boxId);
}

function hideError(boxId = "error") {
  $(boxId).hidden = true;
  $(boxId).replaceChildren();
}

class ApiFailure extends Error {
  constructor(status, body, response) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.response = response;
  }
}

async function call(path, options) {
  let response;
  try {
    response = await fetch(new URL(path, API), {
      ...options,
      headers: { "X-API-Key": apiKey(), Accept: "application/json" },
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiFailure(0, { code: "network_error", message: `Cannot reach the gateway at ${API.origin}.` });
  }
  let body = null;
  if (response.status === 204) return null;
  try {
    body = await response.json();
  } catch (err) {
    body = { code: `http_${response.status}`, message: response.statusText };
  }
  if (!response.ok) throw new ApiFailure(response.status, body, response);
  return body;
}

function reportFailure(err, boxId = "error", words = null) {
  if (err instanceof ApiFailure) {
    if (err.status === 0) showMessage("Cannot reach FaceVal.", err.body.message, "network_error", boxId);
    else showApiError(err.status, err.body, err.response, boxId, words);
  } else {
    showMessage("Something went wrong in this page.", String(err), "page_error", boxId);
  }
}

// --- submitting and watching ---------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  hideError();
  if (!apiKey()) {
    showMessage("An API key is needed.", "Create one with faceval client create NAME and paste it above.", "no_key");
    $("api-key").focus();
    return;
  }
  const missing = SIDES.filter((side) => !photos[side]);
  if (missing.length) {
    showMessage(`Add the ${missing.join(" and ")} photo first.`, "", "no_photo");
    return;
  }
  if (!$("user-id").value.trim()) {
    showMessage("A user ID is needed.", "Any identifier of the person, e.g. a document number.", "no_user");
    $("user-id").focus();
    return;
  }
  const form = new FormData();
  for (const side of SIDES) form.append(side, photos[side].blob, photos[side].name);
  form.append("user_id", $("user-id").value.trim());
  for (const [id, name] of [["process-guid", "process_guid"], ["client-reference", "client_reference"]]) {
    if ($(id).value.trim()) form.append(name, $(id).value.trim());
  }
  const token = ++pollToken;
  setBusy("Uploading…");
  SIDES.forEach(clearOverlay);
  $("decision").hidden = true;
  $("progress").hidden = true; // until the new transaction is accepted
  try {
    const accepted = await call("v1/validations", { method: "POST", body: form });
    current = accepted.transaction_id;
    remember({ transaction_id: current, status: "pending", user_id: $("user-id").value.trim() });
    await watch(current, token, accepted);
  } catch (err) {
    reportFailure(err);
  } finally {
    if (token === pollToken) setBusy("");
  }
}

function setBusy(text) {
  $("busy").textContent = text;
  $("submit").disabled = Boolean(text);
}

async function watch(transactionId, token, first) {
  const started = Date.now();
  let result = first;
  $("progress").hidden = false;
  $("transaction").textContent = `Transaction ${transactionId}`;
  for (;;) {
    if (token !== pollToken) return;
    renderStages(result);
    if (result.status === "completed") break;
    if (Date.now() - started > POLL_LIMIT_MS) {
      showMessage("Still running after 3 minutes.", "It is kept in the history below; look again later.", "still_pending");
      return;
    }
    setBusy(`Validating… ${((Date.now() - started) / 1000).toFixed(0)} s`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    result = await call(`v1/validations/${encodeURIComponent(transactionId)}?wait=0`);
  }
  renderDecision(result);
  if (transactionId === current) drawFaces(result);
  remember(result);
}

function stageState(result, index) {
  const stage = STAGES[index][0];
  const data = (result.stages || {})[stage];
  const sides = data ? SIDES.filter((side) => data[side]) : [];
  if (sides.length === SIDES.length) {
    const verdicts = sides.map((side) => data[side].verdict);
    if (verdicts.includes("error")) return "error";
    return verdicts.includes("reject") ? "rejected" : "passed";
  }
  if (result.status === "completed") return sides.length ? "incomplete" : "skipped";
  if (sides.length) return "running";
  // Pending and nothing recorded yet: running if every earlier stage has passed.
  for (let i = 0; i < index; i += 1) {
    if (stageState(result, i) !== "passed") return "waiting";
  }
  return "running";
}

const STATE_WORDS = {
  passed: "passed",
  rejected: "rejected",
  error: "error",
  running: "running…",
  waiting: "waiting",
  skipped: "not run (decided earlier)",
  incomplete: "incomplete",
};

function renderStages(result) {
  const rows = STAGES.map(([stage, label], index) => {
    const state = stageState(result, index);
    const row = el("tr", undefined, `state-${state}`);
    row.dataset.stage = stage;
    row.dataset.state = state;
    const head = el("th", label);
    head.scope = "row";
    row.append(head, el("td", STATE_WORDS[state], "state"));
    const data = (result.stages || {})[stage] || {};
    for (const side of SIDES) {
      const image = data[side];
      const cell = el("td", image ? `${ms(image.time_ms)} / ${ms(image.queue_time_ms)} ms` : "–", "times");
      cell.dataset.side = side;
      cell.dataset.label = side === "near" ? "Near run / queue" : "Far run / queue";
      if (image) cell.title = `${side}: ${image.verdict}`;
      row.append(cell);
    }
    return row;
  });
  $("stage-rows").replaceChildren(...rows);
}

function renderDecision(result) {
  const status = result.summary_status || "error";
  const verdict = $("verdict");
  verdict.textContent = { accepted: "Accepted", rejected: "Rejected", error: "Error" }[status] || status;
  verdict.className = `verdict verdict-${status}`;
  verdict.dataset.status = status;
  const facts = [
    ["Summary code", result.summary_code],
    ["Status", result.summary_status],
    ["Reason", result.summary_reason],
    ["Description", result.summary_desc],
    ["Decided by", result.decided_by || "all stages passed"],
    ["Total time", result.total_time_ms != null ? `${ms(result.total_time_ms)} ms` : "–"],
    ["Transaction", result.transaction_id],
  ];
  $("summary").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", name), el("dd", value ?? "–")]));
  const reasons = (result.reasons || []).map((reason) => {
    const where = [reason.stage, reason.image, reason.subject].filter(Boolean).join(", ");
    return el("li", `${reason.code}: ${reason.detail}${where ? ` (${where})` : ""}`);
  });
  $("reasons").replaceChildren(...(reasons.length ? reasons : [el("li", "None: every check passed.", "muted")]));
  $("scores").replaceChildren(...scoreTables(result));
  $("raw").textContent = JSON.stringify(result, null, 2);
  $("decision").hidden = false;
}

const SCORE_COLUMNS = ["Model", "Image", "Status", "Time ms", "Values"];

function scoreTables(result) {
  const tables = [];
  for (const [stage, label] of STAGES) {
    const data = (result.stages || {})[stage];
    if (!data) continue;
    const table = el("table", undefined, "scores");
    table.append(el("caption", label));
    const head = el("tr");
    for (const name of SCORE_COLUMNS) {
      const th = el("th", name);
      th.scope = "col";
      head.append(th);
    }
    table.append(head);
    for (const side of SIDES) {
      const notRun = [];
      for (const [model, scores] of Object.entries((data[side] || {}).scores || {})) {
        if (scores.status === "not_run") {
          notRun.push(model);
          continue;
        }
        const values = Object.entries(scores.values || {})
          .map(([k, v]) => `${k} = ${typeof v === "number" ? Number(v.toFixed(4)) : "–"}`)
          .join(", ");
        const row = el("tr");
        const cells = [
          el("td", `${model} ${scores.version || ""}`.trim()),
          el("td", side),
          el("td", scores.error ? `${scores.status}: ${scores.error}` : scores.status),
          el("td", ms(scores.time_ms)),
          el("td", values || "–", "values"),
        ];
        cells.forEach((cell, i) => { cell.dataset.label = SCORE_COLUMNS[i]; });
        row.append(...cells);
        table.append(row);
      }
      if (notRun.length) {
        // Models that are not installed: one line per image, not a row each.
        const row = el("tr", undefined, "not-run");
        row.dataset.side = side;
        const cell = el("td", `${side}: not run (not installed): ${notRun.join(", ")}`);
        cell.colSpan = SCORE_COLUMNS.length;
        row.append(cell);
        table.append(row);
      }
    }
    tables.push(table);
  }
  return tables;
}

// --- history -------------------------------------------------------------------------------

function loadHistory() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch (err) {
    return [];
  }
}

function remember(result) {
  const items = loadHistory();
  const old = items.find((item) => item.transaction_id === result.transaction_id) || {};
  const entry = {
    ...old,
    transaction_id: result.transaction_id,
    at: old.at || new Date().toISOString(),
    status: result.status,
    user_id: result.user_id || old.user_id,
    summary_status: result.summary_status || null,
    summary_reason: result.summary_reason || null,
    summary_code: result.summary_code ?? null,
    total_time_ms: result.total_time_ms ?? null,
  };
  const rest = items.filter((item) => item.transaction_id !== result.transaction_id);
  localStorage.setItem(HISTORY_KEY, JSON.stringify([entry, ...rest].slice(0, HISTORY_SIZE)));
  renderHistory();
}

function renderHistory() {
  const items = loadHistory();
  $("history-empty").hidden = items.length > 0;
  $("history-clear").hidden = items.length === 0;
  $("history").replaceChildren(
    ...items.map((item) => {
      const li = el("li");
      li.dataset.transaction = item.transaction_id;
      const when = new Date(item.at).toLocaleString();
      const outcome = item.status === "completed"
        ? `${item.summary_reason} (code ${item.summary_code}, ${ms(item.total_time_ms)} ms)`
        : "pending";
      const button = el("button", "Show");
      button.type = "button";
      button.setAttribute("aria-label", `Show validation ${item.transaction_id}`);
      button.addEventListener("click", () => showFromHistory(item.transaction_id));
      li.append(el("span", outcome, `outcome outcome-${item.summary_status || "pending"}`), " ",
        el("span", `${when} · ${item.user_id || ""} · ${item.transaction_id.slice(0, 12)}…`, "muted"), " ", button);
      return li;
    }),
  );
}

async function showFromHistory(transactionId) {
  hideError();
  const token = ++pollToken;
  if (transactionId !== current) SIDES.forEach(clearOverlay);
  try {
    const result = await call(`v1/validations/${encodeURIComponent(transactionId)}?wait=0`);
    await watch(transactionId, token, result);
  } catch (err) {
    reportFailure(err);
  }
}

function initHistory() {
  $("history-clear").addEventListener("click", () => {
    localStorage.removeItem(HISTORY_KEY);
    renderHistory();
  });
  renderHistory();
}

// --- identity: subjects, 1:1 verify and 1:N search ----------------------------------------

const MAX_ENROLL = 3;
const enrollPhotos = []; // [{ blob, name, url }]
let probePhoto = null; // { blob, name }
let identityBusy = false;

function setIdentityBusy(text) {
  identityBusy = Boolean(text);
  $("identity-busy").textContent = text;
  for (const id of ["enroll-submit", "verify-submit", "search-submit"]) $(id).disabled = identityBusy;
}

function similarity(value) {
  return typeof value === "number" ? value.toFixed(4) : "–";
}

function renderEnrollThumbs() {
  const items = enrollPhotos.map((photo, index) => {
    const li = el("li");
    const img = el("img");
    img.src = photo.url;
    img.alt = `Photo ${index + 1} to enrol: ${photo.name}`;
    const remove = el("button", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${photo.name}`);
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(photo.url);
      enrollPhotos.splice(index, 1);
      $("enroll-file").value = "";
      renderEnrollThumbs();
    });
    li.append(img, el("span", photo.name, "muted"), remove);
    return li;
  });
  $("enroll-thumbs").replaceChildren(...items);
  $("panel-enroll").querySelector(".camera-open").disabled =
    enrollPhotos.length >= MAX_ENROLL || !canUseCamera();
}

function addEnrollPhoto(blob, name) {
  if (enrollPhotos.length >= MAX_ENROLL) {
    showMessage(`At most ${MAX_ENROLL} photos per enrolment.`, "Remove one first.", "too_many_photos", "identity-error");
    return;
  }
  enrollPhotos.push({ blob, name, url: URL.createObjectURL(blob) });
  renderEnrollThumbs();
}

function setProbePhoto(blob, name) {
  probePhoto = { blob, name };
  const img = $("probe-img");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  $("probe-caption").textContent = `${name} · ${(blob.size / 1024).toFixed(0)} KB`;
  img.src = img.dataset.url;
  $("probe-preview").hidden = false;
}

function canUseCamera() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function needKey() {
  if (apiKey()) return false;
  showMessage("An API key is needed.", "Paste it in section 1 above.", "no_key", "identity-error");
  $("api-key").focus();
  return true;
}

function showIdentityResult(title, verdict, facts) {
  $("identity-result-title").textContent = title;
  const box = $("identity-verdict");
  box.hidden = !verdict;
  if (verdict) {
    box.textContent = verdict.text;
    box.className = `verdict verdict-${verdict.status}`;
    box.dataset.status = verdict.status;
  }
  $("identity-facts").replaceChildren(
    ...facts.flatMap(([name, value]) => [el("dt", name), el("dd", value ?? "–")]),
  );
  $("search-matches").hidden = true;
  $("identity-result").hidden = false;
}

async function enroll(event) {
  event.preventDefault();
  hideError("identity-error");
  if (needKey()) return;
  const externalId = $("enroll-external-id").value.trim();
  if (!externalId) {
    showMessage("An external ID is needed.", "Your own id for the person, e.g. a document number.", "no_external_id", "identity-error");
    $("enroll-external-id").focus();
    return;
  }
  if (!enrollPhotos.length) {
    showMessage("Add 1 to 3 photos of the person first.", "", "no_photo", "identity-error");
    return;
  }
  const form = new FormData();
  form.append("external_id", externalId);
  for (const photo of enrollPhotos) form.append("images", photo.blob, photo.name);
  setIdentityBusy(`Enrolling ${externalId}…`);
  try {
    const created = await call("v1/subjects", { method: "POST", body: form });
    showIdentityResult(`Enrolled ${created.external_id}`, { text: created.replaced ? "Replaced" : "Enrolled", status: "accepted" }, [
      ["Subject ID", created.subject_id],
      ["External ID", created.external_id],
      ["Photos used", created.images_used],
      ["Model", `${created.model} ${created.model_version || ""}`.trim()],
      ["Template", created.replaced ? "replaced the earlier enrolment of this external ID" : "new subject"],
    ]);
    await loadSubjects(created.subject_id);
  } catch (err) {
    reportFailure(err, "identity-error");
  } finally {
    setIdentityBusy("");
  }
}

function probeForm() {
  hideError("identity-error");
  if (needKey()) return null;
  if (!probePhoto) {
    showMessage("Add the photo to check first.", "", "no_photo", "identity-error");
    return null;
  }
  const form = new FormData();
  form.append("image", probePhoto.blob, probePhoto.name);
  return form;
}

async function verify() {
  const subjectId = $("verify-subject").value;
  const form = probeForm();
  if (!form) return;
  if (!subjectId) {
    showMessage("Choose a subject to verify against.", "Enrol one, or refresh the list below.", "no_subject", "identity-error");
    return;
  }
  const label = $("verify-subject").selectedOptions[0].textContent;
  setIdentityBusy("Verifying…");
  try {
    const result = await call(`v1/subjects/${encodeURIComponent(subjectId)}/verify`, { method: "POST", body: form });
    showIdentityResult(`Verify against ${label}`, result.match
      ? { text: "Match", status: "accepted" } : { text: "No match", status: "rejected" }, [
      ["Same person", result.match ? "yes" : "no"],
      ["Similarity", similarity(result.similarity)],
      ["Threshold", similarity(result.threshold)],
      ["Model", `${result.model} ${result.model_version || ""}`.trim()],
      ["Subject ID", result.subject_id],
    ]);
  } catch (err) {
    const gone = err instanceof ApiFailure && err.status === 404;
    reportFailure(err, "identity-error", gone ? "No such subject for this API key (it may have been deleted)." : null);
    if (gone) loadSubjects();
  } finally {
    setIdentityBusy("");
  }
}

async function search() {
  const form = probeForm();
  if (!form) return;
  setIdentityBusy("Searching…");
  try {
    const result = await call("v1/search?k=5", { method: "POST", body: form });
    const matches = result.matches || [];
    showIdentityResult("Search all subjects", null, [
      ["Matches", matches.length ? `${matches.length} at or above the floor` : "none at or above the floor"],
      ["Threshold", similarity(result.threshold)],
      ["Floor", similarity(result.floor)],
      ["Model", `${result.model} ${result.model_version || ""}`.trim()],
    ]);
    $("search-matches").replaceChildren(...matches.map((match) => {
      const li = el("li", undefined, match.match ? "match" : "near-miss");
      li.dataset.subject = match.subject_id;
      li.append(el("strong", match.external_id), " ",
        el("span", `similarity ${similarity(match.similarity)}`, "similarity"), " ",
        el("span", match.match ? "match" : "below the threshold", match.match ? "outcome outcome-accepted" : "muted"));
      return li;
    }));
    $("search-matches").hidden = matches.length === 0;
  } catch (err) {
    reportFailure(err, "identity-error");
  } finally {
    setIdentityBusy("");
  }
}

async function loadSubjects(select) {
  if (!apiKey()) return;
  const limit = $("subjects-limit").value;
  try {
    const page = await call(`v1/subjects?limit=${encodeURIComponent(limit)}`);
    renderSubjects(page.items || [], Boolean(page.next_after), select);
  } catch (err) {
    reportFailure(err, "identity-error");
  }
}

function renderSubjects(items, more, select) {
  const chosen = select || $("verify-subject").value;
  $("subjects-empty").hidden = items.length > 0;
  $("subjects-empty").textContent = "No subjects enrolled with this key.";
  $("subjects").replaceChildren(...items.map((subject) => {
    const li = el("li");
    li.dataset.subject = subject.subject_id;
    const when = subject.updated_at ? new Date(subject.updated_at).toLocaleString() : "";
    const remove = el("button", "Delete");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete subject ${subject.external_id}`);
    remove.addEventListener("click", () => deleteSubject(subject));
    li.append(el("strong", subject.external_id), " ",
      el("span", `${subject.images_used} photo${subject.images_used === 1 ? "" : "s"} · ${subject.model} ${subject.model_version || ""} · ${when}`, "muted"),
      el("code", subject.subject_id, "subject-id"), remove);
    return li;
  }));
  if (more) $("subjects").append(el("li", "More subjects exist: show more to see them.", "muted"));
  const options = items.map((subject) => {
    const option = el("option", `${subject.external_id} (${subject.subject_id.slice(0, 8)}…)`);
    option.value = subject.subject_id;
    return option;
  });
  if (!options.length) options.push(el("option", "(no subjects yet: enrol one)"));
  $("verify-subject").replaceChildren(...options);
  if (items.some((subject) => subject.subject_id === chosen)) $("verify-subject").value = chosen;
}

async function deleteSubject(subject) {
  hideError("identity-error");
  if (!window.confirm(`Delete subject ${subject.external_id}? Its template is erased for good.`)) return;
  setIdentityBusy(`Deleting ${subject.external_id}…`);
  try {
    await call(`v1/subjects/${encodeURIComponent(subject.subject_id)}`, { method: "DELETE" });
  } catch (err) {
    // Already gone is what was asked for: the refreshed list shows it.
    if (!(err instanceof ApiFailure && err.status === 404)) reportFailure(err, "identity-error");
  } finally {
    setIdentityBusy("");
  }
  await loadSubjects();
}

function initIdentity() {
  $("enroll-file").addEventListener("change", (event) => {
    const files = Array.from(event.target.files);
    if (enrollPhotos.length + files.length > MAX_ENROLL) {
      showMessage(`At most ${MAX_ENROLL} photos per enrolment.`, `The first ${MAX_ENROLL - enrollPhotos.length} were kept.`, "too_many_photos", "identity-error");
    } else {
      hideError("identity-error");
    }
    for (const file of files.slice(0, MAX_ENROLL - enrollPhotos.length)) addEnrollPhoto(file, file.name);
  });
  $("probe-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) setProbePhoto(file, file.name);
  });
  cameraTakers.enroll = (blob) => addEnrollPhoto(blob, `camera-${enrollPhotos.length + 1}.jpg`);
  cameraTakers.probe = (blob) => {
    setProbePhoto(blob, "camera-probe.jpg");
    $("probe-file").value = "";
  };
  $("enroll-form").addEventListener("submit", enroll);
  $("probe-form").addEventListener("submit", (event) => { event.preventDefault(); verify(); });
  $("verify-submit").addEventListener("click", verify);
  $("search-submit").addEventListener("click", search);
  $("subjects-refresh").addEventListener("click", () => {
    hideError("identity-error");
    if (!needKey()) loadSubjects();
  });
  $("subjects-limit").addEventListener("change", () => loadSubjects());
  $("api-key").addEventListener("change", () => loadSubjects());
  window.addEventListener("hashchange", () => loadSubjects());
  loadSubjects();
}

document.addEventListener("DOMContentLoaded", () => {
  initKey();
  initPhotos();
  initHistory();
  initIdentity();
  $("submit-form").addEventListener("submit", submit);
  document.body.dataset.ready = "true";
});
