"""The /docs page: a static HTML page that renders /openapi.json in the browser.

No framework, no CDN, nothing fetched but /openapi.json from the node itself. The page's
script builds the DOM with ``textContent`` only (never ``innerHTML``), so nothing in the
document can inject markup.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DOCS_HTML"]

DOCS_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shoal HTTP API</title>
<style>
  :root { --fg: #1d2430; --muted: #5b6677; --line: #dde3ea; --bg: #f7f9fb; --accent: #0b6bcb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: var(--bg); }
  main { max-width: 960px; margin: 0 auto; padding: 24px 16px 64px; }
  h1 { font-size: 1.6rem; margin: 0 0 4px; }
  p.lead { color: var(--muted); margin: 0 0 24px; }
  section.op { background: #fff; border: 1px solid var(--line); border-radius: 8px;
               padding: 14px 16px; margin: 0 0 12px; }
  .head { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
  .method { font: 600 12px/1 ui-monospace, monospace; padding: 5px 8px; border-radius: 4px;
            color: #fff; text-transform: uppercase; min-width: 58px; text-align: center; }
  .get { background: #1f7a44; } .put { background: #a35b00; } .delete { background: #b42318; }
  .post { background: #0b6bcb; }
  code, .path { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
  .path { font-weight: 600; word-break: break-all; }
  .summary { color: var(--muted); }
  .desc { margin: 8px 0 0; }
  table { border-collapse: collapse; width: 100%; margin-top: 8px; font-size: 14px; }
  th, td { text-align: left; padding: 4px 8px; border-top: 1px solid var(--line);
           vertical-align: top; }
  th { color: var(--muted); font-weight: 600; }
  #error { color: #b42318; }
</style>
</head>
<body>
<main>
  <h1 id="title">Shoal HTTP API</h1>
  <p class="lead" id="lead">Loading /openapi.json&hellip;</p>
  <div id="ops"></div>
  <p id="error"></p>
</main>
<script>
"use strict";
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function table(headers, rows) {
  const t = el("table");
  const head = el("tr");
  headers.forEach(h => head.appendChild(el("th", "", h)));
  t.appendChild(head);
  rows.forEach(r => {
    const tr = el("tr");
    r.forEach(c => tr.appendChild(el("td", "", c)));
    t.appendChild(tr);
  });
  return t;
}
fetch("/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.getElementById("lead").textContent = doc.info.description;
  const ops = document.getElementById("ops");
  Object.entries(doc.paths).forEach(([path, item]) => {
    ["get", "put", "post", "delete"].forEach(method => {
      const op = item[method];
      if (!op) return;
      const section = el("section", "op");
      const head = el("div", "head");
      head.appendChild(el("span", "method " + method, method));
      head.appendChild(el("span", "path", path));
      head.appendChild(el("span", "summary", op.summary || ""));
      section.appendChild(head);
      if (op.description) section.appendChild(el("p", "desc", op.description));
      const params = [...(item.parameters || []), ...(op.parameters || [])];
      if (params.length) {
        section.appendChild(table(["parameter", "in", "description"],
          params.map(p => [p.name, p.in, p.description || ""])));
      }
      const responses = Object.entries(op.responses || {}).map(([code, r]) => {
        const ref = r.$ref ? r.$ref.split("/").pop() : "";
        return [code, r.description || ref];
      });
      section.appendChild(table(["status", "meaning"], responses));
      ops.appendChild(section);
    });
  });
}).catch(err => {
  document.getElementById("error").textContent = "Could not load /openapi.json: " + err;
});
</script>
</body>
</html>
"""
