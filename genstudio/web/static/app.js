// genstudio web UI: progressive enhancement of the server-rendered pages. Plain JavaScript,
// no build step. Live updates come from the job events stream (Server-Sent Events); nothing
// here polls the server.
"use strict";

const FINAL = new Set(["completed", "failed", "cancelled"]);
const EVENT_KINDS = ["created", "status", "progress", "completed", "failed", "cancelled", "visibility", "deleted"];

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// A same-origin request signed in by the session cookie; unsafe methods carry the CSRF token.
async function api(url, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("X-CSRF-Token", csrfToken());
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(url, { ...options, headers, credentials: "same-origin" });
  let body = null;
  if ((response.headers.get("content-type") || "").includes("json")) body = await response.json();
  return { ok: response.ok, status: response.status, body };
}

function announce(text) {
  const region = document.getElementById("announcer");
  if (region) { region.textContent = ""; setTimeout(() => { region.textContent = text; }, 50); }
}

function parseHTML(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  return template.content;
}

// One event message's data: the event's fields (`type`, `job_id`, `kind`, `changes`,
// `created_at`) and `job`, the job as the API returns it (null once gone or not visible).
function eventJob(data) {
  return { event: data, job: data.job || null, type: data.type, id: data.job_id };
}

// One EventSource that resumes where it stopped: the browser resends Last-Event-ID on its own
// reconnects; when the server ended the stream for good (an error status), we reconnect
// ourselves with the last id we saw as a query parameter.
function liveStream(url, onEvent, { onOpen, onState } = {}) {
  let lastId = null;
  let source = null;
  let retry = 1000;
  const connect = () => {
    const full = lastId === null ? url : url + (url.includes("?") ? "&" : "?") + "last_event_id=" + encodeURIComponent(lastId);
    source = new EventSource(full, { withCredentials: true });
    // On (re)connecting, whether the server replays what was missed (it does after an event id).
    source.addEventListener("open", () => { retry = 1000; onState && onState("live"); onOpen && onOpen(lastId !== null); });
    const handle = (message) => {
      if (message.lastEventId) lastId = message.lastEventId;
      let data = {};
      try { data = JSON.parse(message.data); } catch (e) { return; }
      onEvent(message.type, data, message.lastEventId);
    };
    for (const kind of [...EVENT_KINDS, "message", "reset"]) source.addEventListener(kind, handle);
    source.addEventListener("error", async () => {
      if (source.readyState === EventSource.CLOSED) {
        onState && onState("offline");
        const probe = await fetch("/api/feed?limit=1", { credentials: "same-origin" }).catch(() => null);
        if (probe && probe.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); return; }
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      } else {
        onState && onState("reconnecting");
      }
    });
  };
  connect();
  return { close: () => source && source.close() };
}

// A progress event that only moves the bar (anything else it carries needs a fresh rendering).
function onlyProgress(kind, event) {
  return kind === "progress" && event.changes && Object.keys(event.changes).every((k) => k === "progress");
}

function setProgress(bar, value) {
  if (!bar || value === undefined || value === null) return;
  const pct = Math.max(0, Math.min(100, Number(value)));
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  const fill = bar.querySelector("span");
  if (fill) fill.style.width = pct + "%";
}

// "5 min ago", kept current without asking the server.
function relativeAge(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
  return Math.floor(seconds / 86400) + " days ago";
}
function refreshAges(root = document) {
  root.querySelectorAll(".card-meta time[datetime]").forEach((t) => { t.textContent = relativeAge(t.getAttribute("datetime")); });
}

/* ---------------------------------------------------------------- feed */

function setupFeed() {
  const feed = document.getElementById("feed");
  if (!feed) return;
  const filters = feed.dataset;
  const form = document.querySelector("form.filters");
  const status = document.getElementById("live-status");
  const empty = document.getElementById("feed-empty");

  // Filters apply as soon as they change.
  form.querySelectorAll('input[type="radio"], select').forEach((el) => el.addEventListener("change", () => form.requestSubmit()));
  form.querySelector("#filter-workflow").addEventListener("change", () => form.requestSubmit());
  // Show Mine / Show All: remembered in a cookie (the server sets it too), for a year.
  document.querySelectorAll(".scope-toggle a").forEach((a) => a.addEventListener("click", () => {
    document.cookie = "genstudio_scope=" + a.dataset.scope + "; path=/; max-age=31536000; samesite=lax";
  }));

  const cardQuery = filters.query ? filters.query + "&" : "";
  const matchesFilters = (card) =>
    (!filters.workflow || card.dataset.workflow === filters.workflow) &&
    (!filters.status || card.dataset.status === filters.status);
  const updateEmpty = () => { empty.hidden = feed.querySelector(".card") !== null; };

  // Put a freshly rendered card where it belongs: in place, or by creation time (newest first).
  function place(card, highlight) {
    const existing = document.getElementById(card.id);
    if (!matchesFilters(card)) { if (existing) existing.remove(); updateEmpty(); return; }
    if (existing) {
      // Keep a playing video playing: only replace the card when it changed.
      if (existing.outerHTML !== card.outerHTML) existing.replaceWith(card);
    } else {
      const created = card.dataset.created;
      const later = [...feed.querySelectorAll(".card")].find((c) => c.dataset.created < created);
      const more = feed.querySelector(".more");
      if (later) feed.insertBefore(card, later);
      else if (more) return;  // older than everything shown: infinite scroll will bring it
      else feed.appendChild(card);
      if (highlight) { card.classList.add("fresh"); announce("New job: " + card.dataset.workflow); }
    }
    updateEmpty();
  }

  async function refreshCard(type, id, highlight) {
    const response = await fetch(`/feed/card/${type}/${id}`, { credentials: "same-origin" });
    if (response.status === 404) { const gone = document.getElementById(`job-${type}-${id}`); if (gone) gone.remove(); updateEmpty(); return; }
    if (!response.ok) return;
    const card = parseHTML(await response.text()).querySelector(".card");
    if (card) { refreshAges(card.parentNode || card); place(card, highlight); }
  }

  // Infinite scroll on the keyset cursor.
  let loading = false;
  async function loadMore(sentinel) {
    if (loading) return;
    loading = true;
    feed.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(`/feed/cards?${cardQuery}cursor=${encodeURIComponent(sentinel.dataset.cursor)}`, { credentials: "same-origin" });
      if (!response.ok) return;
      const fragment = parseHTML(await response.text());
      fragment.querySelectorAll(".card").forEach((c) => { if (document.getElementById(c.id)) c.remove(); });
      sentinel.replaceWith(fragment);
      observeSentinel();
    } finally {
      loading = false;
      feed.setAttribute("aria-busy", "false");
    }
  }
  const observer = new IntersectionObserver((entries) => {
    entries.forEach((e) => { if (e.isIntersecting) loadMore(e.target); });
  }, { rootMargin: "600px" });
  function observeSentinel() {
    const sentinel = feed.querySelector(".more");
    if (!sentinel) return;
    observer.observe(sentinel);
    sentinel.querySelector("a").addEventListener("click", (e) => { e.preventDefault(); loadMore(sentinel); });
  }
  observeSentinel();

  // Live updates. Whenever the stream opens without an event id to resume from (the first
  // time), re-read the first page, so that nothing that changed between rendering this page and
  // subscribing is missed; reconnects after an event resume from its id and the server replays.
  const types = filters.type && filters.type !== "all" ? filters.type : "video,image,text";
  const labels = { live: "Live", reconnecting: "Connection lost; reconnecting…", offline: "Offline; retrying…" };
  liveStream(`/api/feed/events?scope=${filters.scope}&types=${types}`, (kind, data) => {
    const { event, job, type, id } = eventJob(data);
    if (kind === "reset") { resync(); return; }
    if (!type || !id) return;
    const card = document.getElementById(`job-${type}-${id}`);
    if (kind === "deleted") { if (card) card.remove(); updateEmpty(); return; }
    if (card && onlyProgress(kind, event)) { setProgress(card.querySelector(".bar"), event.changes.progress); return; }
    refreshCard(type, id, kind === "created");
  }, {
    onOpen: (resumed) => { if (!resumed) resync(); },
    onState: (state) => { status.textContent = labels[state]; status.dataset.state = state; },
  });

  async function resync() {
    const response = await fetch(`/feed/cards?${cardQuery}`, { credentials: "same-origin" });
    if (!response.ok) return;
    parseHTML(await response.text()).querySelectorAll(".card").forEach((c) => place(c, false));
  }

  setInterval(() => refreshAges(feed), 30000);
}

/* ---------------------------------------------------------------- run */

function setupRun() {
  const form = document.getElementById("run-form");
  if (!form) return;
  const formError = document.getElementById("form-error");
  const submit = document.getElementById("run-submit");
  const resultCard = document.getElementById("run-card");
  const dispatch = document.getElementById("run-dispatch");
  let stream = null;

  const fieldOf = (name) => form.querySelector(`.field[data-name="${CSS.escape(name)}"]`);
  function setFieldError(name, message) {
    const field = fieldOf(name);
    if (!field) return false;
    const input = field.querySelector("input, select, textarea");
    const slot = field.querySelector(".field-error");
    slot.textContent = message; slot.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    return true;
  }
  function clearErrors() {
    form.querySelectorAll(".field").forEach((f) => setFieldError(f.dataset.name, ""));
    formError.hidden = true; formError.textContent = "";
  }

  // File previews, and the size limit checked before uploading.
  form.querySelectorAll('input[type="file"]').forEach((input) => input.addEventListener("change", () => {
    const preview = document.getElementById("preview-" + input.name);
    preview.replaceChildren();
    const file = input.files[0];
    setFieldError(input.name, "");
    if (!file) { preview.hidden = true; return; }
    const max = Number(input.dataset.maxBytes || 0);
    if (max && file.size > max) setFieldError(input.name, `This file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(max / 1048576).toFixed(1)} MB.`);
    let media;
    if (file.type.startsWith("image/")) { media = document.createElement("img"); media.alt = "Preview of " + file.name; }
    else if (file.type.startsWith("video/")) { media = document.createElement("video"); media.controls = true; media.setAttribute("aria-label", "Preview of " + file.name); }
    else if (file.type.startsWith("audio/")) { media = document.createElement("audio"); media.controls = true; media.setAttribute("aria-label", "Preview of " + file.name); }
    if (media) { media.src = URL.createObjectURL(file); preview.appendChild(media); }
    const caption = document.createElement("p");
    caption.className = "hint";
    caption.textContent = `${file.name} · ${(file.size / 1024).toFixed(0)} KB`;
    preview.appendChild(caption);
    preview.hidden = false;
  }));

  function collect() {
    const data = new FormData();
    const parameters = {};
    let firstInvalid = null;
    form.querySelectorAll(".field").forEach((field) => {
      const input = field.querySelector("input, select, textarea");
      const name = field.dataset.name;
      if (!input.checkValidity()) { setFieldError(name, input.validationMessage); firstInvalid = firstInvalid || input; return; }
      if (field.querySelector(".field-error:not([hidden])")) { firstInvalid = firstInvalid || input; return; }
      if (field.dataset.kind === "file") { if (input.files[0]) data.append(name, input.files[0]); return; }
      if (field.dataset.kind === "checkbox") { parameters[name] = input.checked; return; }
      if (input.value === "") return;
      const type = field.dataset.jsonType;
      parameters[name] = type === "integer" ? parseInt(input.value, 10) : type === "number" ? Number(input.value)
        : type === "boolean" ? input.value === "true" : input.value;
    });
    data.append("parameters", JSON.stringify(parameters));
    return { data, firstInvalid };
  }

  // The API names the field it refuses; show its message next to that field.
  function showServerError(body, status) {
    const message = (body && body.error) || `The run was refused (HTTP ${status}).`;
    const detailed = (body && (body.errors || body.field_errors)) || null;
    let placed = false;
    if (Array.isArray(detailed)) detailed.forEach((e) => { placed = setFieldError(e.field || e.name || e.parameter, e.message || e.error) || placed; });
    else if (detailed) Object.entries(detailed).forEach(([k, v]) => { placed = setFieldError(k, String(v)) || placed; });
    if (!placed) {
      // "parameters.strength: 1.5 is greater than the maximum of 1; parameters.prompt: is required",
      // "input file image: the content is not an image…"
      message.split(/;\s+/).forEach((part) => {
        const named = part.match(/^(?:parameters\.|input file\s+)?([A-Za-z][\w]*)\s*:\s*(.*)$/);
        const quoted = part.match(/['"`]([A-Za-z][\w]*)['"`]/);
        const name = (named && fieldOf(named[1]) && named[1]) || (quoted && fieldOf(quoted[1]) && quoted[1]);
        if (name) placed = setFieldError(name, named && named[1] === name ? named[2] : part) || placed;
      });
    }
    formError.textContent = placed ? "Please correct the marked field." : message;
    formError.hidden = false;
    const invalid = form.querySelector('[aria-invalid="true"]');
    if (invalid) invalid.focus(); else { formError.tabIndex = -1; formError.focus(); }
  }

  function showDispatch(job) {
    const d = job && job.parameters && job.parameters.dispatch;
    if (job && job.status === "pending" && d && d.state === "waiting") {
      dispatch.textContent = "Waiting for a ComfyUI server: " + (d.reason || "none is available") + ". The run starts as soon as one is.";
      dispatch.hidden = false;
    } else {
      dispatch.hidden = true;
    }
  }

  async function showCard(type, id) {
    const response = await fetch(`/feed/card/${type}/${id}`, { credentials: "same-origin" });
    if (!response.ok) return;
    const card = parseHTML(await response.text()).querySelector(".card");
    if (!card) return;
    refreshAges(card.parentNode || card);
    const existing = resultCard.querySelector(".card");
    if (!existing || existing.outerHTML !== card.outerHTML) resultCard.replaceChildren(card);
    const link = document.createElement("p");
    link.innerHTML = `<a href="/jobs/${type}/${id}">Open the job page</a>`;
    resultCard.appendChild(link);
    if (FINAL.has(card.dataset.status)) announce("The run is " + card.dataset.status + ".");
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    const { data, firstInvalid } = collect();
    if (firstInvalid) { formError.textContent = "Please correct the marked field."; formError.hidden = false; firstInvalid.focus(); return; }
    submit.disabled = true;
    try {
      const r = await api(`/api/workflows/${encodeURIComponent(form.dataset.workflow)}/runs`, { method: "POST", body: data });
      if (!r.ok) { showServerError(r.body, r.status); return; }
      const job = Object.values(r.body || {}).find((v) => v && typeof v === "object" && v.id);
      if (!job) return;
      const type = job.type || form.dataset.outputType;
      announce("Run started.");
      showDispatch(job);
      await showCard(type, job.id);
      if (stream) stream.close();
      stream = liveStream(`/api/${type}-jobs/${job.id}/events`, (kind, payload) => {
        const { event, job: latest } = eventJob(payload);
        if (latest) showDispatch(latest);
        const card = resultCard.querySelector(".card");
        if (card && onlyProgress(kind, event)) {
          setProgress(card.querySelector(".bar"), event.changes.progress);
        } else {
          showCard(type, job.id);
        }
        if (FINAL.has(kind)) { stream.close(); }
      });
    } catch (err) {
      formError.textContent = "Could not reach genstudio: " + err.message; formError.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
}

/* ---------------------------------------------------------------- job */

function setupJob() {
  const article = document.getElementById("job");
  if (!article) return;
  const { type, id } = article.dataset;
  const base = `/api/${type}-jobs/${id}`;
  const error = document.getElementById("action-error");
  const showError = (r) => { if (!error) return; error.textContent = (r.body && r.body.error) || `HTTP ${r.status}`; error.hidden = false; };

  // Re-render the parts of the page that a change affects, from the page itself.
  let deleting = false;  // this page is deleting the job: it goes to the feed, not to the 404 page

  async function refresh() {
    if (deleting) return;
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (response.status === 404) { if (!deleting) location.reload(); return; }
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const selector of [".job-head", "#outputs", "dl.timings"]) {
      const now = document.querySelector(selector);
      const next = fresh.querySelector(selector);
      if (now && next && now.outerHTML !== next.outerHTML) now.replaceWith(next);
    }
    const cancel = document.getElementById("cancel-job");
    const status = fresh.getElementById("job").dataset.status;
    article.dataset.status = status;
    if (cancel && FINAL.has(status)) cancel.remove();
  }

  const timeline = document.getElementById("timeline");
  const timelineEmpty = document.getElementById("timeline-empty");
  function addToTimeline(kind, event, eventId) {
    const item = document.createElement("li");
    const at = event.created_at || event.at || new Date().toISOString();
    const time = document.createElement("time");
    time.dateTime = at;
    time.textContent = new Date(at).toLocaleString();
    // What changed, briefly: timestamps are in Timings, files in Outputs, long values are cut.
    const elsewhere = (k) => ["updated_at", "started_at", "completed_at"].includes(k) || /_urls?$/.test(k) || k.startsWith("comfyui_output");
    const shown = Object.entries(event.changes || {}).filter(([k]) => !elsewhere(k));
    const changes = shown.map(([k, v]) => {
      const text = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
      return `${k}: ${text.length > 80 ? text.slice(0, 79) + "…" : text}`;
    }).join(", ");
    const what = document.createElement("strong");
    what.textContent = kind;
    item.append(time, what, document.createTextNode(changes ? ` (${changes})` : ""));
    item.dataset.kind = kind;
    if (eventId) item.dataset.eventId = eventId;
    timeline.appendChild(item);
    timelineEmpty.hidden = true;
  }

  // Without a Last-Event-ID this stream starts with every event of the job the log still holds.
  liveStream(`${base}/events`, (kind, data, eventId) => {
    const { event } = eventJob(data);
    if (eventId && timeline.querySelector(`li[data-event-id="${CSS.escape(eventId)}"]`)) return;  // replayed again
    if (kind === "reset") {
      if (data.reason === "expired") { timelineEmpty.textContent = "Older events are past the retention period."; timelineEmpty.hidden = false; }
      return;
    }
    addToTimeline(kind, event, eventId);
    if (onlyProgress(kind, event)) setProgress(document.getElementById("job-progress"), event.changes.progress);
    else if (kind === "deleted") { if (!deleting) location.reload(); }  // shows the 404 page
    else refresh();
  }, { onOpen: () => { if (!timeline.children.length) timelineEmpty.textContent = "No events recorded."; } });

  const cancel = document.getElementById("cancel-job");
  if (cancel) cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    const r = await api(`${base}/cancel`, { method: "POST" });
    if (!r.ok) { showError(r); cancel.disabled = false; return; }
    announce("The job is cancelled.");
    await refresh();
  });

  const share = document.getElementById("share-job");
  if (share) share.addEventListener("change", async () => {
    const r = await api(base, { method: "PUT", json: { visibility: share.checked ? "shared" : "private" } });
    if (!r.ok) { showError(r); share.checked = !share.checked; return; }
    announce(share.checked ? "The job is shared." : "The job is private.");
    await refresh();
  });

  const del = document.getElementById("delete-job");
  const dialog = document.getElementById("delete-dialog");
  if (del && dialog) {
    del.addEventListener("click", () => dialog.showModal());
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "delete") { del.focus(); return; }
      deleting = true;
      const r = await api(base, { method: "DELETE" });
      if (!r.ok) { deleting = false; showError(r); return; }
      location.href = "/";
    });
  }
}

// Videos in cards show their poster frame and play, in place, when clicked.
document.addEventListener("click", (e) => {
  const link = e.target.closest && e.target.closest("a.play[data-video]");
  if (!link) return;
  e.preventDefault();
  const video = document.createElement("video");
  video.src = link.dataset.video;
  if (link.dataset.poster) video.poster = link.dataset.poster;
  video.controls = true; video.autoplay = true; video.playsInline = true;
  video.setAttribute("aria-label", link.getAttribute("aria-label").replace(/^Play /, ""));
  link.replaceWith(video);
  video.focus();
});

document.addEventListener("DOMContentLoaded", () => {
  refreshAges();
  setupFeed();
  setupRun();
  setupJob();
});
