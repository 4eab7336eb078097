// Shoal web UI: plain JavaScript, no build step, no downloads. It talks to the node's local
// HTTP API with the session cookie and sends the CSRF token (X-Shoal-CSRF) with every change.
"use strict";

const CSRF_HEADER = "X-Shoal-CSRF";
const UPLOADS_AT_ONCE = 2;
const NETWORK_REFRESH_MS = 3000;

const state = {
  csrf: null,
  nodeId: null,
  files: [],
  folder: "",            // the folder of names being browsed: "" or "a/b/"
  opened: [],            // a folder stored whole being browsed: [{label, ref}], outermost first
  listing: null,         // its listing (GET /v1/folders/...)
  folders: false,        // whether this node stores folders whole (PUT /v1/folders/...)
  uploads: [],           // {id, file, name, loaded, total, status, error, samples, el}
  running: new Map(),    // activity: id -> transfer
  finished: [],
  peers: [],
  networkTimer: null,
};

// -- small helpers -------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit += 1; }
  if (unit === 0) return `${bytes} B`;
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`;
}

function formatDuration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "";
  if (seconds < 1) return "under a second";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function formatDate(unix) {
  if (!unix) return "";
  return new Date(unix * 1000).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

function formatAge(unix) {
  if (!unix) return "never";
  const seconds = Math.max(0, Date.now() / 1000 - unix);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return formatDate(unix);
}

function shortId(id) { return id ? id.slice(0, 12) : ""; }

// A name goes into the path as one segment: "/" as %2F and "." as %2E (see docs/http-api.md).
function encodeName(name) {
  return encodeURIComponent(name).replace(/\./g, "%2E");
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 2600);
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text || "";
  banner.hidden = !text;
}

// -- talking to the node -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function errorFrom(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return new ApiError(response.status, body.error.message);
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, `the node answered ${response.status} ${response.statusText}`);
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers[CSRF_HEADER] = state.csrf || "";
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (_) {
    throw new ApiError(0, "the node does not answer: is it still running?");
  }
  if (response.status === 401) { showSignIn(); throw await errorFrom(response); }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// -- pages ---------------------------------------------------------------------------------

const PAGES = ["files", "network", "activity"];

function currentPage() {
  const name = location.hash.replace("#", "").split("/")[0];
  return PAGES.includes(name) ? name : "files";
}

function showPage() {
  if (!state.csrf) return;
  const page = currentPage();
  for (const name of PAGES) $(`page-${name}`).hidden = name !== page;
  $("page-signin").hidden = true;
  for (const link of document.querySelectorAll(".tabs a")) {
    link.classList.toggle("active", link.dataset.page === page);
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `Shoal · ${page[0].toUpperCase()}${page.slice(1)}`;
  $("toast").hidden = true;
  clearInterval(state.networkTimer);
  if (page === "network") {
    refreshNetwork();
    state.networkTimer = setInterval(refreshNetwork, NETWORK_REFRESH_MS);
  }
  if (page === "files") refreshFiles();
}

function showSignIn() {
  state.csrf = null;
  document.body.classList.add("signed-out");
  $("sign-out").hidden = true;
  for (const name of PAGES) $(`page-${name}`).hidden = true;
  $("page-signin").hidden = false;
  $("live").classList.remove("on");
  $("live-text").textContent = "Signed out";
  clearInterval(state.networkTimer);
  if (state.events) { state.events.close(); state.events = null; }
}

// -- files ---------------------------------------------------------------------------------

async function refreshFiles() {
  try {
    state.files = await api("GET", "/v1/files");
    if (state.opened.length) await loadOpenedFolder();
    renderFiles();
  } catch (error) {
    if (error.status !== 401) showBanner(`Could not list the files: ${error.message}`);
  }
}

const ICON_FILE = "M6 3h8l4 4v14H6z M14 3v4h4";
const ICON_FOLDER = "M3 6h6l2 2h10v11H3z";
const FOLDER_MEDIA_TYPE = "inode/directory";  // a folder stored whole (PUT /v1/folders/...)

function icon(path) {
  return svg("svg", { viewBox: "0 0 24 24", "aria-hidden": "true" }, svg("path", { d: path }));
}

function isFolderObject(entry) { return entry.media_type === FOLDER_MEDIA_TYPE; }

// Two kinds of folders: names with "/" in the catalog (files uploaded one by one) are grouped
// here, in the page; a folder stored whole is one catalog entry, opened with GET /v1/folders/.
function renderFiles() {
  renderCrumbs();
  if (state.opened.length) return renderOpenedFolder();
  const prefix = state.folder;
  const groups = new Map();  // name -> {size, count, created}
  const rows = [];
  for (const entry of state.files) {
    if (!entry.name.startsWith(prefix)) continue;
    const rest = entry.name.slice(prefix.length);
    const slash = rest.indexOf("/");
    if (slash > 0 && slash < rest.length - 1) {
      const name = rest.slice(0, slash);
      const group = groups.get(name) || { size: 0, count: 0, created: 0 };
      group.size += entry.size;
      group.count += 1;
      group.created = Math.max(group.created, entry.created);
      groups.set(name, group);
    } else {
      rows.push({ ...entry, shown: rest });
    }
  }
  if (prefix && groups.size === 0 && rows.length === 0 && state.files.length > 0) {
    state.folder = "";  // the folder is gone (its files were removed)
    return renderFiles();
  }
  const body = $("files-body");
  body.replaceChildren();
  for (const [name, group] of [...groups.entries()].sort()) {
    const open = () => { state.folder = `${prefix}${name}/`; renderFiles(); };
    body.append(el("tr", { class: "folder-row", "data-folder": `${prefix}${name}/` },
      el("td", {}, el("span", { class: "file-name folder" }, icon(ICON_FOLDER),
        el("a", { href: "#files", onclick: (e) => { e.preventDefault(); open(); }, text: `${name}/` }))),
      el("td", { class: "num", text: formatSize(group.size) }),
      el("td", { class: "when", text: `${group.count} file${group.count === 1 ? "" : "s"}` }),
      el("td", { class: "actions" },
        el("button", { class: "button small", type: "button", onclick: open, text: "Open" })),
    ));
  }
  rows.sort((a, b) => Number(isFolderObject(b)) - Number(isFolderObject(a)));  // folders first
  for (const entry of rows) body.append(isFolderObject(entry) ? folderObjectRow(entry) : fileRow(entry));
  const total = state.files.reduce((sum, f) => sum + f.size, 0);
  $("files-summary").textContent = state.files.length
    ? `${state.files.length} item${state.files.length === 1 ? "" : "s"}, ${formatSize(total)}` : "";
  showFilesTable(groups.size === 0 && rows.length === 0);
}

function showFilesTable(empty) {
  // A stored folder's entries carry their files' modification times, not when they were stored.
  $("files-when").textContent = state.opened.length ? "Modified" : "Stored";
  $("files-empty").hidden = !empty;
  $("files-table").hidden = empty;
}

function renderCrumbs() {
  const crumbs = $("crumbs");
  crumbs.replaceChildren();
  const parts = state.folder.split("/").filter(Boolean);
  const go = (index) => (event) => {
    event.preventDefault();
    state.opened = [];
    state.folder = index < 0 ? "" : `${parts.slice(0, index + 1).join("/")}/`;
    renderFiles();
  };
  const opened = state.opened;
  const last = parts.length + opened.length - 1;
  crumbs.append(last >= 0
    ? el("a", { href: "#files", onclick: go(-1), text: "My files" })
    : el("span", { text: "My files" }));
  parts.forEach((part, index) => {
    crumbs.append(el("span", { class: "sep", text: "/" }));
    crumbs.append(index === last
      ? el("span", { text: part })
      : el("a", { href: "#files", onclick: go(index), text: part }));
  });
  opened.forEach((level, index) => {
    crumbs.append(el("span", { class: "sep", text: "/" }));
    const here = parts.length + index === last;
    crumbs.append(here ? el("span", { text: level.label }) : el("a", {
      href: "#files", text: level.label,
      onclick: async (e) => { e.preventDefault(); state.opened = opened.slice(0, index + 1); await openFolderLevel(); },
    }));
  });
}

function removeButton(entry) {
  const href = `/v1/files/${encodeName(entry.name)}`;
  const remove = el("button", { class: "button small danger", type: "button", text: "Remove" });
  remove.addEventListener("click", async () => {
    if (!remove.classList.contains("confirm")) {
      remove.classList.add("confirm");
      remove.textContent = "Remove?";
      setTimeout(() => { remove.classList.remove("confirm"); remove.textContent = "Remove"; }, 4000);
      return;
    }
    remove.disabled = true;
    try {
      await api("DELETE", href);
      toast(`Removed ${entry.name}`);
      await refreshFiles();
    } catch (error) {
      remove.disabled = false;
      showBanner(`Could not remove ${entry.name}: ${error.message}`);
    }
  });
  return remove;
}

function copyButton(entry) {
  return el("button", {
    class: "button small", type: "button", title: "Copy the read cap: whoever has it can read it",
    onclick: () => copyCap(entry), text: "Copy cap",
  });
}

function fileRow(entry) {
  const href = `/v1/files/${encodeName(entry.name)}`;
  const download = entry.name.split("/").pop();
  return el("tr", { "data-name": entry.name },
    el("td", {}, el("span", { class: "file-name" }, icon(ICON_FILE),
      el("a", { href, download, title: `Download ${entry.name}`, text: entry.shown }))),
    el("td", { class: "num", text: formatSize(entry.size) }),
    el("td", { class: "when", title: entry.media_type, text: formatDate(entry.created) }),
    el("td", { class: "actions" },
      el("a", { class: "button small", href, download, text: "Download" }),
      copyButton(entry),
      removeButton(entry)),
  );
}

function folderObjectRow(entry) {
  const open = async () => {
    state.opened = [{ label: entry.shown, ref: entry.name }];
    await openFolderLevel();
  };
  const archive = `/v1/folders/${encodeName(entry.name)}/archive`;
  return el("tr", { "data-name": entry.name, class: "folder-row" },
    el("td", {}, el("span", { class: "file-name folder" }, icon(ICON_FOLDER),
      el("a", { href: "#files", onclick: (e) => { e.preventDefault(); open(); }, text: `${entry.shown}/` }))),
    el("td", { class: "num", text: formatSize(entry.size) }),
    el("td", { class: "when", text: formatDate(entry.created) }),
    el("td", { class: "actions" },
      el("button", { class: "button small", type: "button", onclick: open, text: "Open" }),
      el("a", { class: "button small", href: archive, download: `${entry.shown.split("/").pop()}.tar`, text: "Download .tar" }),
      copyButton(entry),
      removeButton(entry)),
  );
}

// A folder stored whole: its listing comes from the node, level by level (by name, then cap).
async function openFolderLevel() {
  try {
    await loadOpenedFolder();
    renderFiles();
  } catch (error) {
    state.opened = [];
    renderFiles();
    showBanner(`Could not open the folder: ${error.message}`);
  }
}

async function loadOpenedFolder() {
  const level = state.opened[state.opened.length - 1];
  const ref = level.ref.startsWith("shoal:") ? encodeURIComponent(level.ref) : encodeName(level.ref);
  state.listing = await api("GET", `/v1/folders/${ref}`);
}

function renderOpenedFolder() {
  const listing = state.listing;
  const body = $("files-body");
  body.replaceChildren();
  const entries = [...listing.entries].sort((a, b) =>
    (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
  for (const entry of entries) {
    if (entry.type === "dir") {
      const open = async () => {
        state.opened = [...state.opened, { label: entry.name, ref: entry.cap }];
        await openFolderLevel();
      };
      body.append(el("tr", { class: "folder-row", "data-entry": entry.name },
        el("td", {}, el("span", { class: "file-name folder" }, icon(ICON_FOLDER),
          el("a", { href: "#files", onclick: (e) => { e.preventDefault(); open(); }, text: `${entry.name}/` }))),
        el("td", { class: "num", text: formatSize(entry.size) }),
        el("td", { class: "when", text: formatDate(entry.mtime) }),
        el("td", { class: "actions" },
          el("button", { class: "button small", type: "button", onclick: open, text: "Open" }),
          copyButton(entry)),
      ));
    } else {
      const href = `/v1/caps/${encodeURIComponent(entry.cap)}?name=${encodeURIComponent(entry.name)}`;
      body.append(el("tr", { "data-entry": entry.name },
        el("td", {}, el("span", { class: "file-name" }, icon(ICON_FILE),
          el("a", { href, download: entry.name, text: entry.name }))),
        el("td", { class: "num", text: formatSize(entry.size) }),
        el("td", { class: "when", text: formatDate(entry.mtime) }),
        el("td", { class: "actions" },
          el("a", { class: "button small", href, download: entry.name, text: "Download" }),
          copyButton(entry)),
      ));
    }
  }
  $("files-summary").textContent = `${entries.length} entr${entries.length === 1 ? "y" : "ies"}, ${formatSize(listing.size)}`;
  showFilesTable(entries.length === 0);
}

async function copyCap(entry) {
  try {
    await navigator.clipboard.writeText(entry.cap);
  } catch (_) {
    // Older browsers: copy through a selected, off-screen text field.
    const field = el("textarea", { class: "sr" });
    field.value = entry.cap;
    document.body.append(field);
    field.select();
    document.execCommand("copy");
    field.remove();
  }
  toast(`Read cap of ${entry.name.split("/").pop()} copied: share it only with people who may read it`);
}

// -- uploads -------------------------------------------------------------------------------

let uploadIds = 0;

// What to upload: files ({file, name}) and folders ({folder, files: [{file, path}], dirs}).
// A folder is stored whole where the node can (PUT /v1/folders/...), else file by file with
// its relative paths as names.
function queueUploads(items) {
  for (const item of items) {
    if (item.folder !== undefined && !state.folders) {
      queueUploads(item.files.map(({ file, path }) => ({ file, name: `${item.folder}/${path}` })));
      continue;
    }
    const upload = item.folder !== undefined
      ? { kind: "folder", files: item.files, dirs: item.dirs || [], name: state.folder + item.folder,
          total: item.files.reduce((sum, f) => sum + f.file.size, 0) }
      : { kind: "file", file: item.file, name: state.folder + item.name, total: item.file.size };
    Object.assign(upload, { id: ++uploadIds, loaded: 0, status: "waiting", error: null, samples: [], started: 0 });
    upload.el = uploadElement(upload);
    $("uploads").prepend(upload.el);
    state.uploads.push(upload);
  }
  pumpUploads();
}

// Several picked or dropped paths ("photos/2024/a.jpg") become one folder item per top folder.
function groupByFolder(pairs) {
  const out = [];
  const folders = new Map();
  for (const { file, path } of pairs) {
    const slash = path.indexOf("/");
    if (slash <= 0) { out.push({ file, name: path }); continue; }
    const root = path.slice(0, slash);
    if (!folders.has(root)) {
      const item = { folder: root, files: [], dirs: [] };
      folders.set(root, item);
      out.push(item);
    }
    folders.get(root).files.push({ file, path: path.slice(slash + 1) });
  }
  return out;
}

function pumpUploads() {
  const active = state.uploads.filter((u) => u.status === "sending" || u.status === "finishing").length;
  const waiting = state.uploads.filter((u) => u.status === "waiting");
  for (const upload of waiting.slice(0, Math.max(0, UPLOADS_AT_ONCE - active))) startUpload(upload);
}

function uploadElement(upload) {
  const cancel = el("button", { class: "button small", type: "button", text: "Cancel" });
  cancel.addEventListener("click", () => {
    if (upload.xhr) upload.xhr.abort();
    else if (upload.status === "waiting") finishUpload(upload, "failed", "cancelled before it started");
    else dismissUpload(upload);
  });
  upload.cancel = cancel;
  upload.bar = el("span");
  upload.figures = el("div", { class: "figures" });
  const box = el("div", { class: "upload", "data-name": upload.name },
    el("div", { class: "name", title: upload.name, text: upload.kind === "folder" ? `${upload.name}/` : upload.name }), cancel,
    el("div", { class: "bar", role: "progressbar", "aria-label": `Upload of ${upload.name}` }, upload.bar),
    upload.figures);
  upload.el = box;
  upload.barBox = box.querySelector(".bar");
  renderUpload(upload);
  return box;
}

function renderUpload(upload) {
  const fraction = upload.total ? upload.loaded / upload.total : (upload.status === "done" ? 1 : 0);
  upload.bar.style.width = `${Math.round(fraction * 1000) / 10}%`;
  upload.barBox.setAttribute("aria-valuenow", String(upload.loaded));
  upload.barBox.setAttribute("aria-valuemax", String(upload.total));
  upload.el.className = `upload ${upload.status}`;
  upload.el.dataset.status = upload.status;
  let text;
  if (upload.status === "waiting") {
    text = `Waiting · ${formatSize(upload.total)}`;
  } else if (upload.status === "sending") {
    const left = upload.total - upload.loaded;
    const speed = uploadSpeed(upload);
    text = `${formatSize(upload.loaded)} of ${formatSize(upload.total)} · ${formatSize(left)} to go`;
    if (speed > 0) text += ` · ${formatSize(speed)}/s · ${formatDuration(left / speed)} left`;
  } else if (upload.status === "finishing") {
    text = `${formatSize(upload.total)} sent · placing the last blocks on the network…`;
  } else if (upload.status === "done") {
    const seconds = (upload.ended - upload.started) / 1000;
    const count = upload.kind === "folder" ? ` (${upload.files.length} file${upload.files.length === 1 ? "" : "s"})` : "";
    text = `Stored · ${formatSize(upload.total)}${count}` + (seconds > 0.05 ? ` in ${formatDuration(seconds)}` : "");
    if (upload.warning) text += ` · ${upload.warning}`;
  } else {
    text = `Failed: ${upload.error}`;
  }
  upload.figures.textContent = text;
  upload.cancel.textContent = upload.status === "done" || upload.status === "failed" ? "Dismiss" : "Cancel";
  renderUploadsSummary();
}

// Bytes per second over the last few seconds (a moving window, so it follows changes).
function uploadSpeed(upload) {
  const samples = upload.samples;
  if (samples.length < 2) return 0;
  const [t0, b0] = samples[0];
  const [t1, b1] = samples[samples.length - 1];
  return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
}

function startUpload(upload) {
  upload.status = "sending";
  upload.started = performance.now();
  upload.samples = [[upload.started, 0]];
  const xhr = new XMLHttpRequest();
  upload.xhr = xhr;
  // The File is the body: the browser streams it from disk and never reads it whole (a
  // FormData of Files too: each part is read from disk as it is sent).
  let body;
  if (upload.kind === "folder") {
    xhr.open("PUT", `/v1/folders/${encodeName(upload.name)}`);
    body = new FormData();
    for (const dir of upload.dirs) body.append("dir", dir);
    for (const { file, path } of upload.files) {
      if (file.lastModified) body.append("mtime", String(file.lastModified / 1000));
      body.append("file", file, path);
    }
  } else {
    xhr.open("PUT", `/v1/files/${encodeName(upload.name)}`);
    if (upload.file.type) xhr.setRequestHeader("Content-Type", upload.file.type);
    body = upload.file;
  }
  xhr.setRequestHeader(CSRF_HEADER, state.csrf || "");
  xhr.upload.addEventListener("progress", (event) => {
    const now = performance.now();
    // A folder's body is multipart: count its bytes in proportion, so that the figures are
    // the files' bytes.
    const scale = upload.kind === "folder" && event.lengthComputable && event.total
      ? upload.total / event.total : 1;
    upload.loaded = Math.min(upload.total, Math.round(event.loaded * scale));
    if (event.lengthComputable && upload.kind === "file") upload.total = event.total;
    upload.samples.push([now, upload.loaded]);
    while (upload.samples.length > 2 && now - upload.samples[0][0] > 3000) upload.samples.shift();
    renderUpload(upload);
  });
  xhr.upload.addEventListener("load", () => {
    upload.loaded = upload.total;
    upload.status = "finishing";
    renderUpload(upload);
  });
  xhr.addEventListener("load", () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 201) {
      if (body && body.replicas < body.replicas_wanted) {
        upload.warning = `only ${body.replicas} of ${body.replicas_wanted} copies could be placed`;
      }
      finishUpload(upload, "done");
    } else {
      if (xhr.status === 401) showSignIn();
      const message = body && body.error ? body.error.message : `the node answered ${xhr.status}`;
      finishUpload(upload, "failed", message);
    }
  });
  xhr.addEventListener("error", () => finishUpload(upload, "failed", "the connection to the node was lost"));
  xhr.addEventListener("abort", () => finishUpload(upload, "failed", "cancelled"));
  xhr.send(body);
  renderUpload(upload);
}

function finishUpload(upload, status, error) {
  if (upload.status === "done" || upload.status === "failed") return;
  upload.status = status;
  upload.error = error || null;
  upload.ended = performance.now();
  upload.xhr = null;
  if (status === "done") upload.loaded = upload.total;
  renderUpload(upload);
  pumpUploads();
  if (status === "done") scheduleFilesRefresh();
}

function dismissUpload(upload) {
  upload.el.remove();
  state.uploads = state.uploads.filter((u) => u !== upload);
  renderUploadsSummary();
}

function renderUploadsSummary() {
  const finished = state.uploads.filter((u) => u.status === "done" || u.status === "failed");
  const going = state.uploads.length - finished.length;
  const left = state.uploads
    .filter((u) => u.status === "waiting" || u.status === "sending")
    .reduce((sum, u) => sum + (u.total - u.loaded), 0);
  $("uploads-head").hidden = state.uploads.length < 2;
  $("uploads-summary").textContent = going
    ? `${going} upload${going === 1 ? "" : "s"} going · ${formatSize(left)} to go`
    : `${finished.length} uploads finished`;
  $("clear-uploads").hidden = finished.length === 0;
}

let filesRefresh = null;
function scheduleFilesRefresh() {
  clearTimeout(filesRefresh);
  filesRefresh = setTimeout(refreshFiles, 150);
}

// Dropped folders: walk them (webkitGetAsEntry) and upload each file under its relative path.
async function droppedItems(dataTransfer) {
  const entries = [];
  for (const item of dataTransfer.items || []) {
    const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    if (entry) entries.push(entry);
  }
  if (!entries.length) return [...dataTransfer.files].map((file) => ({ file, name: file.name }));
  const fileOf = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));
  async function walk(directory, path, folder) {
    const reader = directory.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) {
        if (child.isFile) {
          folder.files.push({ file: await fileOf(child), path: path + child.name });
        } else if (child.isDirectory) {
          folder.dirs.push(path + child.name);  // so that an empty one is kept too
          await walk(child, `${path}${child.name}/`, folder);
        }
      }
    }
  }
  const out = [];
  for (const entry of entries) {
    if (entry.isFile) {
      out.push({ file: await fileOf(entry), name: entry.name });
    } else if (entry.isDirectory) {
      const folder = { folder: entry.name, files: [], dirs: [] };
      await walk(entry, "", folder);
      out.push(folder);
    }
  }
  return out;
}

function setUpDropzone() {
  $("clear-uploads").addEventListener("click", () => {
    for (const upload of [...state.uploads]) {
      if (upload.status === "done" || upload.status === "failed") dismissUpload(upload);
    }
  });
  const zone = $("dropzone");
  let depth = 0;
  zone.addEventListener("dragenter", (e) => { e.preventDefault(); depth += 1; zone.classList.add("over"); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
  zone.addEventListener("dragleave", () => { depth -= 1; if (depth <= 0) { depth = 0; zone.classList.remove("over"); } });
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("over");
    try {
      queueUploads(await droppedItems(e.dataTransfer));
    } catch (error) {
      showBanner(`Could not read what was dropped: ${error.message || error}`);
    }
  });
  // A file dropped next to the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("pick-files").addEventListener("change", (e) => {
    queueUploads([...e.target.files].map((file) => ({ file, name: file.name })));
    e.target.value = "";
  });
  $("pick-folder").addEventListener("change", (e) => {
    queueUploads(groupByFolder([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))));
    e.target.value = "";
  });
}

// -- shared caps ---------------------------------------------------------------------------

function setUpCapForm() {
  const form = $("cap-form");
  const error = $("cap-error");
  const capValue = () => $("cap-input").value.trim();
  const fail = (text) => { error.textContent = text; error.hidden = !text; };
  const check = (cap) => {
    if (!cap.startsWith("shoal:r:")) {
      fail(cap.startsWith("shoal:v:")
        ? "This is a verify cap: it can check a file but not read it. Ask for the read cap (shoal:r:…)."
        : "A read cap starts with shoal:r: — paste the whole line you were given.");
      return false;
    }
    fail("");
    return true;
  };
  $("cap-download").addEventListener("click", () => {
    const cap = capValue();
    if (!check(cap)) return;
    const link = el("a", { href: `/v1/caps/${encodeURIComponent(cap)}`, download: $("cap-name").value.trim() || "" });
    document.body.append(link);
    link.click();
    link.remove();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const cap = capValue();
    if (!check(cap)) return;
    const name = $("cap-name").value.trim();
    if (!name) { fail("Give it a name to keep it under."); return; }
    const button = $("cap-keep");
    button.disabled = true;
    try {
      await api("POST", "/ui/api/keep", { cap, name: state.folder + name });
      toast(`Kept ${name} in your files`);
      form.reset();
      await refreshFiles();
    } catch (err) {
      fail(`Could not keep it: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });
}

// -- network -------------------------------------------------------------------------------

async function refreshNetwork() {
  try {
    const info = await api("GET", "/ui/api/network");
    state.peers = info.peers;
    renderNetwork(info);
  } catch (error) {
    if (error.status !== 401) showBanner(`Could not read the network: ${error.message}`);
  }
}

function stat(label, value, mono) {
  return el("div", { class: "stat" }, el("div", { class: "label", text: label }),
    el("div", { class: `value${mono ? " mono" : ""}`, title: String(value), text: String(value) }));
}

function renderNetwork(info) {
  const node = info.node;
  const storage = info.storage;
  $("peers-count").textContent = `${node.peers_up}`;
  $("stats").replaceChildren(
    stat("This node", shortId(node.node_id), true),
    stat("Peers up", `${node.peers_up} of ${node.peers_known}`),
    stat("Files", node.files),
    stat("Copies of each block", node.replicas),
  );
  renderMap(node, info.peers);
  const total = storage.used + storage.free;
  const share = total ? storage.used / total : 0;
  const meter = el("div", { class: "meter", role: "meter", "aria-label": "Storage used" }, el("span"));
  meter.firstChild.style.width = `${Math.max(share * 100, storage.used ? 1 : 0)}%`;
  $("storage").replaceChildren(
    meter,
    el("dl", { class: "storage-figures" },
      el("dt", { text: "Used" }), el("dd", { text: `${formatSize(storage.used)} in ${storage.blocks} blocks` }),
      el("dt", { text: "Free" }), el("dd", { text: formatSize(storage.free) }),
      el("dt", { text: "Limit" }), el("dd", { text: storage.max_storage === null ? "none (the disk, less a reserve)" : formatSize(storage.max_storage) }),
      el("dt", { text: "Network" }), el("dd", { class: "mono", text: node.network }),
      el("dt", { text: "Listening" }), el("dd", { class: "mono", text: node.listen }),
    ),
  );
  const body = $("peers-body");
  body.replaceChildren();
  for (const peer of info.peers) {
    body.append(el("tr", { "data-node": peer.node_id },
      el("td", { class: "mono", title: peer.node_id, text: shortId(peer.node_id) }),
      el("td", {}, el("span", { class: `state ${peer.state}` }, el("span", { class: "dot" }), peer.state === "up" ? "connected" : "not connected")),
      el("td", { class: "mono", "data-label": "Address", text: peer.address || "unknown" }),
      el("td", { "data-label": "Learnt from", text: peer.source || "unknown" }),
      el("td", { class: "when", "data-label": "Last seen", text: formatAge(peer.last_seen) }),
    ));
  }
  $("peers-empty").hidden = info.peers.length > 0;
  body.closest("table").hidden = info.peers.length === 0;
}

// This node in the middle, its peers on a circle; a line for each open connection.
function renderMap(node, peers) {
  const width = 480;
  const height = peers.length <= 2 ? 200 : 300;
  const cx = width / 2;
  const cy = height / 2;
  const radius = peers.length > 1 ? 110 : 95;
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `This node and ${peers.length} peers` });
  const links = svg("g");
  const nodes = svg("g");
  peers.forEach((peer, index) => {
    // One or two peers sit beside this node; more go round it from the top.
    const start = peers.length <= 2 ? 0 : -Math.PI / 2;
    const angle = start + (2 * Math.PI * index) / Math.max(peers.length, 1);
    const x = cx + radius * Math.cos(angle) * 1.45;
    const y = cy + radius * Math.sin(angle);
    if (peer.state === "up") links.append(svg("line", { class: "link", x1: cx, y1: cy, x2: x, y2: y }));
    const label = svg("text", { x, y: y + (Math.sin(angle) >= 0 ? 30 : -20), "text-anchor": "middle" });
    label.textContent = shortId(peer.node_id).slice(0, 8);
    const title = svg("title");
    title.textContent = `${peer.node_id} (${peer.state})`;
    nodes.append(svg("g", { class: `node ${peer.state}` }, title, svg("circle", { cx: x, cy: y, r: 13 }), label));
  });
  const self = svg("g", { class: "node self" }, svg("circle", { cx, cy, r: 20 }));
  const label = svg("text", { x: cx, y: cy + 38, "text-anchor": "middle" });
  label.textContent = "this node";
  self.append(label);
  nodes.append(self);
  picture.append(links, nodes);
  $("netmap").replaceChildren(picture);
}

// -- activity ------------------------------------------------------------------------------

function transferItem(transfer) {
  const size = transfer.size;
  let detail;
  if (transfer.state === "running") {
    detail = size !== null
      ? `${formatSize(transfer.done)} of ${formatSize(size)} · ${formatSize(Math.max(0, size - transfer.done))} to go`
      : `${formatSize(transfer.done)} so far`;
    const seconds = Date.now() / 1000 - transfer.started;
    if (transfer.done > 0 && seconds > 0.5) detail += ` · ${formatSize(transfer.done / seconds)}/s`;
  } else if (transfer.state === "done") {
    const seconds = transfer.finished - transfer.started;
    detail = `Done · ${formatSize(size)}` + (seconds > 0.05 ? ` in ${formatDuration(seconds)}` : "");
  } else {
    detail = `${transfer.state === "failed" ? "Failed" : "Stopped"}: ${transfer.error}`;
  }
  const item = el("li", { class: `transfer ${transfer.state}`, "data-id": transfer.id, "data-state": transfer.state },
    el("span", { class: `kind ${transfer.kind}`, text: transfer.kind === "upload" ? "Put" : "Get" }),
    el("span", { class: "name", title: transfer.name, text: transfer.name }),
    el("span", { class: "when", text: transfer.state === "running" ? "now" : formatAge(transfer.finished) }),
    el("span", { class: "detail", text: detail }));
  if (transfer.state === "running" && size) {
    const bar = el("span");
    bar.style.width = `${Math.min(100, (100 * transfer.done) / size)}%`;
    item.append(el("div", { class: "bar" }, bar));
  }
  return item;
}

function renderActivity() {
  const running = [...state.running.values()].sort((a, b) => b.id - a.id);
  $("running").replaceChildren(...running.map(transferItem));
  $("running-empty").hidden = running.length > 0;
  $("finished").replaceChildren(...state.finished.map(transferItem));
  $("finished-empty").hidden = state.finished.length > 0;
  const count = $("running-count");
  count.textContent = String(running.length);
  count.hidden = running.length === 0;
}

function applyTransfer(transfer) {
  if (transfer.state === "running") {
    state.running.set(transfer.id, transfer);
  } else {
    state.running.delete(transfer.id);
    state.finished = [transfer, ...state.finished.filter((t) => t.id !== transfer.id)].slice(0, 20);
    // A file stored by another program (the CLI) shows up without a reload.
    if (transfer.kind === "upload" && transfer.state === "done" && currentPage() === "files") scheduleFilesRefresh();
  }
}

function connectEvents() {
  if (state.events) state.events.close();
  const events = new EventSource("/ui/api/events");
  state.events = events;
  const live = $("live");
  events.addEventListener("open", () => { live.classList.add("on"); $("live-text").textContent = "Live"; });
  events.addEventListener("error", async () => {
    live.classList.remove("on");
    $("live-text").textContent = "Reconnecting";
    // A node that restarted forgot the session: find out, rather than retry forever.
    try { await api("GET", "/ui/api/session"); } catch (_) { /* showSignIn ran on 401 */ }
  });
  events.addEventListener("snapshot", (event) => {
    const snapshot = JSON.parse(event.data);
    state.running = new Map(snapshot.running.map((t) => [t.id, t]));
    state.finished = snapshot.finished;
    renderActivity();
  });
  events.addEventListener("transfer", (event) => {
    applyTransfer(JSON.parse(event.data).transfer);
    renderActivity();
  });
}

// -- start ---------------------------------------------------------------------------------

async function start() {
  setUpDropzone();
  setUpCapForm();
  window.addEventListener("hashchange", showPage);
  try {
    const session = await api("GET", "/ui/api/session");
    state.csrf = session.csrf;
    state.nodeId = session.node_id;
    state.folders = Boolean(session.folders);
  } catch (error) {
    if (error.status !== 401) showBanner(`Could not reach the node: ${error.message}`);
    showSignIn();
    return;
  }
  document.body.classList.remove("signed-out");
  $("sign-out").hidden = false;
  $("sign-out").addEventListener("click", async () => {
    try { await api("POST", "/ui/api/logout"); } catch (_) { /* signed out either way */ }
    showSignIn();
  });
  $("node-chip").textContent = shortId(state.nodeId);
  $("node-chip").title = `This node: ${state.nodeId}`;
  connectEvents();
  showPage();
  refreshNetwork();
}

document.addEventListener("DOMContentLoaded", start);
