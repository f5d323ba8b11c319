"use strict";
// charlm viz page: reads the JSON in #data (written by charlm/viz/page.py), colours the text by
// one unit, shows the predictions under the pointer, lists the feature-tracking units and
// draws the gates' saturation. No network: everything is in this file.
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const chars = Array.from(D.text); // code points, as Python counts them
  const n = chars.length;

  function bytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function uints(b64, width) { // little-endian unsigned integers of 1 or 2 bytes
    const raw = bytes(b64);
    if (width === 1) return raw;
    const out = new Uint16Array(raw.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = raw[2 * i] | (raw[2 * i + 1] << 8);
    return out;
  }
  const acts = new Int8Array(bytes(D.acts).buffer);
  const topIds = uints(D.topIds, D.idBytes);
  const topProbs = bytes(D.topProbs);
  const nextIds = uints(D.nextIds, D.idBytes);
  const nextBits = uints(D.nextBits, 2);
  const key = (layer, state, index) => layer + "/" + state + "/" + index;
  const kept = new Map(D.units.map((u, row) => [key(u[0], u[1], u[2]), row]));
  const label = (layer, state, index) => "L" + layer + " " + state + "[" + index + "]";
  let current = null; // row of D.units shown

  function value(row, j) { return acts[row * n + j] * D.units[row][3]; }
  function colour(v, range) {
    const t = Math.max(-1, Math.min(1, v / range));
    const a = Math.abs(t);
    const [r, g, b] = t >= 0 ? [220, 50, 30] : [40, 90, 220];
    const mix = (c) => Math.round(255 + (c - 255) * a);
    return "rgb(" + mix(r) + "," + mix(g) + "," + mix(b) + ")";
  }

  // the text, one span per character; a newline shows as a faint arrow, then breaks the line
  const spans = new Array(n);
  const box = $("text");
  const frag = document.createDocumentFragment();
  for (let j = 0; j < n; j++) {
    const s = document.createElement("span");
    s.dataset.j = j;
    if (chars[j] === "\n") { s.textContent = "\u21b5"; s.className = "eol"; }
    else s.textContent = chars[j];
    frag.appendChild(s);
    if (chars[j] === "\n") frag.appendChild(document.createTextNode("\n"));
    spans[j] = s;
  }
  box.appendChild(frag);

  $("source").textContent = D.source;
  $("note").textContent = D.note;

  // controls: layer, state, a list of the kept units, a number
  function option(select, val, text) {
    const o = document.createElement("option");
    o.value = val; o.textContent = text; select.appendChild(o);
  }
  for (let l = 0; l < D.layers; l++) option($("layer"), l, String(l));
  const stateNames = { h: "h (hidden)", c: "c (cell)" };
  for (const s of D.states) option($("state"), s, stateNames[s] || s);
  $("unit").max = D.hidden - 1;

  function fillList(layer, state) {
    const list = $("unitlist");
    list.textContent = "";
    for (const u of D.units) if (u[0] === layer && u[1] === state) option(list, u[2], String(u[2]));
  }

  function show(layer, state, index) {
    $("layer").value = layer; $("state").value = state; $("unit").value = index;
    fillList(layer, state);
    const row = kept.get(key(layer, state, index));
    if (row === undefined) {
      $("status").textContent = label(layer, state, index) +
        " is not kept on this page (see the note above)";
      return;
    }
    $("unitlist").value = index;
    current = row;
    const range = D.units[row][4];
    for (let j = 0; j < n; j++) spans[j].style.background = colour(value(row, j), range);
    $("status").textContent = "";
    $("legend").innerHTML = "";
    const parts = ["\u2212" + range.toFixed(2), null, "+" + range.toFixed(2)];
    for (const p of parts) {
      const e = document.createElement("span");
      if (p === null) e.className = "bar"; else e.textContent = p;
      $("legend").appendChild(e);
    }
    const what = document.createElement("span");
    what.textContent = "layer " + layer + ", " + (stateNames[state] || state) + ", unit " + index;
    $("legend").appendChild(what);
    for (const b of document.querySelectorAll("#features button")) {
      b.classList.toggle("current", b.dataset.key === key(layer, state, index));
    }
  }
  const picked = () => [Number($("layer").value), $("state").value];
  $("layer").addEventListener("change", () => {
    const [l, s] = picked(); show(l, s, Number($("unit").value));
  });
  $("state").addEventListener("change", () => {
    const [l, s] = picked(); show(l, s, Number($("unit").value));
  });
  $("unitlist").addEventListener("change", () => {
    const [l, s] = picked(); show(l, s, Number($("unitlist").value));
  });
  $("unit").addEventListener("change", () => {
    const [l, s] = picked();
    const i = Math.round(Number($("unit").value));
    if (i >= 0 && i < D.hidden) show(l, s, i);
  });
  $("controls").addEventListener("submit", (e) => e.preventDefault());

  // the units that track each feature
  for (const f of D.features) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = f.name; th.title = f.about;
    const td = document.createElement("td");
    if (f.matches.length === 0) {
      td.className = "note"; td.textContent = "not in this text";
    }
    for (const [layer, state, index, r] of f.matches.slice(0, 5)) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.key = key(layer, state, index);
      b.textContent = label(layer, state, index) + " r=" + (r >= 0 ? "+" : "") + r.toFixed(2);
      b.addEventListener("click", () => show(layer, state, index));
      td.appendChild(b);
    }
    tr.append(th, td);
    $("features").appendChild(tr);
  }

  // the next-character predictions under the pointer
  const tip = $("tip");
  const token = (id) => (id < D.tokens.length ? D.tokens[id] : "");
  const visible = (c) => (c === "\n" ? "\u21b5" : c === " " ? "\u2423" : c);
  function tipFor(j) {
    const rows = [];
    for (let r = 0; r < D.k; r++) {
      const p = topProbs[j * D.k + r] / 255;
      rows.push("<tr><td>" + escape(token(topIds[j * D.k + r])) + "</td><td>" +
        (100 * p).toFixed(1) + "%</td><td><span class=\"pbar\" style=\"width:" +
        Math.round(60 * p) + "px\"></span></td></tr>");
    }
    let came = "end of the text: nothing came next";
    if (nextBits[j] !== 65535) {
      const bits = nextBits[j] / 100;
      came = "came: " + escape(token(nextIds[j])) + " (p " + Math.pow(2, -bits).toFixed(3) +
        ", " + bits.toFixed(2) + " bits)";
    }
    const act = current === null ? "" : "<br>" + label(...D.units[current].slice(0, 3)) +
      " = " + value(current, j).toFixed(3);
    return "<b>" + escape(visible(chars[j])) + "</b> at " + j + act +
      "<br>next character:<table>" + rows.join("") + "</table>" + came;
  }
  function escape(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  box.addEventListener("mouseover", (e) => {
    const j = e.target.dataset ? e.target.dataset.j : undefined;
    if (j === undefined) return;
    tip.innerHTML = tipFor(Number(j));
    tip.hidden = false;
  });
  box.addEventListener("mousemove", (e) => {
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - w - 4) + "px";
    tip.style.top = (e.clientY + 18 + h > window.innerHeight ? e.clientY - h - 10 : e.clientY + 18) + "px";
  });
  box.addEventListener("mouseleave", () => { tip.hidden = true; });

  // gate saturation: one scatter per gate, a dot per unit and layer (the paper's figure 3)
  const gates = D.saturation.gates;
  const edges = D.saturation.edges;
  $("satnote").textContent = gates.length === 0
    ? "A vanilla RNN has no gates."
    : "Each dot is one unit's gate: the fraction of characters where it was left-saturated " +
      "(below " + edges[0] + ") against right-saturated (above " + edges[1] + "). " +
      "Click a dot to colour the text by its unit's h.";
  const layerColours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const a in attrs) e.setAttribute(a, attrs[a]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function scatter(gate) {
    const size = 150, pad = 30;
    const svg = el("svg", { width: size + pad + 8, height: size + pad + 24 });
    const at = (x, y) => [pad + x * size, 16 + (1 - y) * size];
    const title = el("text", { x: pad + size / 2, y: 12, "text-anchor": "middle",
      "font-size": 12, "font-weight": 600 }, svg);
    title.textContent = gate + " gate";
    el("rect", { x: pad, y: 16, width: size, height: size, fill: "none", stroke: "#999" }, svg);
    const [x0, y0] = at(0, 1), [x1, y1] = at(1, 0);
    el("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: "#ddd" }, svg); // x + y = 1
    const xl = el("text", { x: pad + size / 2, y: size + 16 + 22, "text-anchor": "middle",
      "font-size": 11 }, svg);
    xl.textContent = "fraction left-saturated";
    const yl = el("text", { x: 10, y: 16 + size / 2, "text-anchor": "middle", "font-size": 11,
      transform: "rotate(-90 10 " + (16 + size / 2) + ")" }, svg);
    yl.textContent = "fraction right-saturated";
    for (const [v, x, y] of [["0", 0, 0], ["1", 1, 0]]) {
      const [px, py] = at(x, y);
      el("text", { x: px, y: py + 12, "text-anchor": "middle", "font-size": 10 }, svg)
        .textContent = v;
    }
    const [tx, ty] = at(0, 1);
    el("text", { x: tx - 4, y: ty + 8, "text-anchor": "end", "font-size": 10 }, svg)
      .textContent = "1";
    D.saturation.layers.forEach((sat, layer) => {
      const [left, right] = sat[gate];
      for (let i = 0; i < left.length; i++) {
        const [cx, cy] = at(left[i], right[i]);
        const dot = el("circle", { cx: cx, cy: cy, r: 2.6, fill: layerColours[layer % 6],
          "fill-opacity": 0.55 }, svg);
        el("title", {}, dot).textContent = "layer " + layer + " unit " + i + ": " +
          (100 * left[i]).toFixed(1) + "% left, " + (100 * right[i]).toFixed(1) + "% right";
        dot.addEventListener("click", () => show(layer, "h", i));
      }
    });
    return svg;
  }
  for (const gate of gates) $("plots").appendChild(scatter(gate));
  if (gates.length) {
    const legend = document.createElement("div");
    legend.className = "note";
    legend.innerHTML = D.saturation.layers.map((_, l) => "<span style=\"color:" +
      layerColours[l % 6] + "\">\u25cf</span> layer " + l).join(" &nbsp; ");
    $("plots").after(legend);
  }

  show(D.initial[0], D.initial[1], D.initial[2]);
  document.body.dataset.ready = "1";
})();
