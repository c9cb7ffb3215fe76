// Granary lineage page: lays out a lineage graph (Marquez shape) in columns and draws it as
// SVG. No external libraries, so it works offline inside the Airflow UI.
"use strict";

const COL_W = 290, ROW_H = 64, NODE_W = 210, NODE_H = 46, PAD = 30;

function shortName(node) {
  const d = node.data;
  if (node.type === "JOB") return d.name.split(".").slice(1).join(".") || d.name;
  const parts = d.name.split("/");
  const last = parts[parts.length - 1];
  // raw objects are <dataset>/<source>/<date>/<sha256>.<ext>: show source, date and hash
  if (parts.length === 4 && /^[0-9a-f]{64}\./.test(last)) {
    return `${parts[1]} · ${parts[2]} · ${last.slice(0, 6)}`;
  }
  return last.length > 34 ? last.slice(0, 14) + "…" + last.slice(-14) : last;
}

function kindOf(node, registryNs, rawNs) {
  if (node.type === "JOB") return "job";
  if (node.data.namespace === registryNs) return "published";
  if (node.data.namespace === rawNs) return "raw";
  return "work";
}

function layers(graph) {
  // longest path from the sources gives each node its column
  const byId = new Map(graph.map(n => [n.id, n]));
  const depth = new Map();
  const visit = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const ins = byId.get(id).inEdges.map(e => e.origin).filter(o => byId.has(o));
    const d = ins.length ? 1 + Math.max(...ins.map(o => visit(o, seen))) : 0;
    depth.set(id, d);
    return d;
  };
  graph.forEach(n => visit(n.id, new Set()));
  return depth;
}

function edgeLabel(target) {
  if (target.type !== "DATASET") return "";
  const versions = target.data.versions || [];
  const v = versions[versions.length - 1];
  return v && v.rowCount != null ? v.rowCount.toLocaleString() + " rows" : "";
}

function render(root, graph, opts) {
  const depth = layers(graph);
  const columns = new Map();
  graph.forEach(n => {
    const d = depth.get(n.id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(n);
  });
  const pos = new Map();
  const tallest = Math.max(...[...columns.values()].map(c => c.length));
  const height = PAD * 2 + tallest * ROW_H;
  [...columns.keys()].sort((a, b) => a - b).forEach(d => {
    const col = columns.get(d).sort((a, b) => a.id.localeCompare(b.id));
    const top = PAD + (tallest - col.length) * ROW_H / 2;  // centre short columns
    col.forEach((n, i) => pos.set(n.id, {x: PAD + d * COL_W, y: top + i * ROW_H}));
  });
  const width = PAD * 2 + columns.size * COL_W;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("id", "lineage-svg");
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text != null) e.textContent = text;
    return e;
  };
  const byId = new Map(graph.map(n => [n.id, n]));
  graph.forEach(n => n.outEdges.forEach(e => {
    const a = pos.get(e.origin), b = pos.get(e.destination);
    if (!a || !b) return;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const mx = (x1 + x2) / 2;
    svg.appendChild(el("path", {d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
      class: "edge", "data-origin": e.origin, "data-destination": e.destination}));
    const label = edgeLabel(byId.get(e.destination));
    if (label) svg.appendChild(el("text", {x: mx, y: (y1 + y2) / 2 - 6, class: "edge-label",
      "text-anchor": "middle"}, label));
  }));
  graph.forEach(n => {
    const p = pos.get(n.id);
    const kind = kindOf(n, opts.registryNs, opts.rawNs);
    const g = el("g", {class: `node ${kind}`, "data-id": n.id, transform: `translate(${p.x},${p.y})`});
    g.appendChild(el("rect", {width: NODE_W, height: NODE_H, rx: 8}));
    g.appendChild(el("text", {x: 10, y: 19, class: "title"}, shortName(n)));
    let sub = kind;
    if (kind === "published" && opts.version) sub = `v${opts.version.version} · ${opts.version.grade}`;
    if (n.type === "JOB") {
      const run = (n.data.runs || [])[0];
      const c = run && run.conservation;
      const fmt = x => x.toLocaleString();
      sub = c ? `${fmt(c.recordsIn)} → ${fmt(c.kept)}` + (c.merged ? ` · ${fmt(c.merged)} dup` : "")
                + (c.quarantined ? ` · ${fmt(c.quarantined)} q` : "") : (run ? run.state : "");
      if (c) g.appendChild(el("title", {}, `${n.id}\nin ${c.recordsIn}, kept ${c.kept}, ` +
        `merged ${c.merged}, quarantined ${c.quarantined}`));
    }
    g.appendChild(el("text", {x: 10, y: 36, class: "sub"}, sub));
    g.appendChild(el("title", {}, n.id));
    svg.appendChild(g);
  });
  root.replaceChildren(svg);
}

function applyFilter(text, hideWork) {
  const q = text.trim().toLowerCase();
  document.querySelectorAll("#lineage-svg .node").forEach(g => {
    const id = g.getAttribute("data-id").toLowerCase();
    const hidden = (hideWork && g.classList.contains("work")) || (q && !id.includes(q));
    g.classList.toggle("dim", Boolean(hidden));
  });
}

async function main() {
  const params = new URLSearchParams(location.search);
  const cfg = JSON.parse(document.getElementById("granary-config").textContent);
  const status = document.getElementById("status");
  const query = new URLSearchParams({nodeId: cfg.nodeId, depth: "50"});
  if (cfg.lineageVersion) query.set("version", cfg.lineageVersion);
  const resp = await fetch(`${cfg.base}/api/v1/lineage?${query}`);
  if (!resp.ok) { status.textContent = `lineage API answered ${resp.status}`; return; }
  const graph = (await resp.json()).graph;
  if (!graph.length) { status.textContent = "no lineage recorded for this version yet"; return; }
  status.textContent = `${graph.length} nodes`;
  render(document.getElementById("graph"), graph, cfg);
  const filter = document.getElementById("filter"), hide = document.getElementById("hide-work");
  const update = () => applyFilter(filter.value, hide.checked);
  filter.addEventListener("input", update);
  hide.addEventListener("change", update);
  if (params.get("filter")) { filter.value = params.get("filter"); update(); }
}

main();
