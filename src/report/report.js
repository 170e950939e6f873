/* dsv3 report: draws every chart of the page as inline SVG from the JSON data
 * block (id "dsv3-data"); no network access.  With "#verify" in the address,
 * each plotted line also carries its raw values (data-x, data-y) for tests. */
(function () {
"use strict";
window.addEventListener("error", function (e) {
  document.body.setAttribute("data-error", String(e.message));
  var d = document.createElement("div");
  d.className = "err";
  d.textContent = "report script error: " + e.message;
  document.body.insertBefore(d, document.body.firstChild);
});
var D = JSON.parse(document.getElementById("dsv3-data").textContent);
var VERIFY = location.hash.indexOf("verify") >= 0;
var NS = "http://www.w3.org/2000/svg";
var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
var state = { x: "step", smooth: 0.6, logy: false, run: 0 };
var nCharts = 0;

function el(tag, attrs, parent, text) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function sv(tag, attrs, parent, text) {
  var e = document.createElementNS(NS, tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function isnum(v) { return typeof v === "number" && isFinite(v); }
function fmt(v, digits) {
  if (!isnum(v)) return "–";
  var a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(parseFloat(v.toPrecision(digits || 4)));
}
function fmtTokens(v) {
  if (!isnum(v)) return "–";
  var a = Math.abs(v);
  if (a >= 1e9) return fmt(v / 1e9, 3) + "B";
  if (a >= 1e6) return fmt(v / 1e6, 3) + "M";
  if (a >= 1e3) return fmt(v / 1e3, 3) + "K";
  return fmt(v, 3);
}

/* ---- the runs ------------------------------------------------------------- */
D.runs.forEach(function (r, i) {
  r.color = COLORS[i % COLORS.length];
  r.train = r.records.filter(function (x) { return isnum(x.step) && isnum(x.loss); });
  r.val = r.records.filter(function (x) { return isnum(x.step) && isnum(x.val_loss); });
  r.resumes = r.records.filter(function (x) { return x.resume_step !== undefined; });
  r.skippedSteps = r.records.filter(function (x) { return x.skipped !== undefined; });
  r.tokensAt = {};
  r.train.forEach(function (x) { if (isnum(x.tokens)) r.tokensAt[x.step] = x.tokens; });
  r.info = r.info || {};
  r.opts = r.info.options || {};
  r.model = r.info.model_config || r.config || {};
  r.files = r.files || [];
});
var allFiles = (D.files || []).slice();
D.runs.forEach(function (r) { r.files.forEach(function (f) { f.run = r.label; allFiles.push(f); }); });

/* the BF16 run the FP8 gap is measured against: --baseline, else the one bf16 run beside fp8 runs */
var baseline = D.baseline;
if (baseline < 0) {
  var bf = [], f8 = 0;
  D.runs.forEach(function (r, i) { if (r.opts.precision === "bf16") bf.push(i); if (r.opts.precision === "fp8") f8++; });
  if (bf.length === 1 && f8 > 0) baseline = bf[0];
}

/* ---- smoothing, axes ------------------------------------------------------ */
function ema(ys, w) { /* TensorBoard's debiased exponential moving average */
  if (!(w > 0)) return ys.slice();
  var out = [], acc = 0, n = 0;
  for (var i = 0; i < ys.length; i++) {
    if (!isnum(ys[i])) { out.push(ys[i]); continue; }
    acc = acc * w + (1 - w) * ys[i]; n++;
    out.push(acc / (1 - Math.pow(w, n)));
  }
  return out;
}
function niceTicks(lo, hi, n) {
  if (!isFinite(lo) || !isFinite(hi)) return [];
  if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
  var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  var err = (hi - lo) / n / step;
  if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
  var t = [], v = Math.ceil(lo / step) * step;
  for (var k = 0; v <= hi + step * 1e-9 && k < 50; v += step, k++) t.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return t;
}
function logTicks(lo, hi) {
  var t = [], a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
  for (var e = a; e <= b; e++) [1, 2, 5].forEach(function (m) {
    var v = m * Math.pow(10, e);
    if (v >= lo && v <= hi) t.push(v);
  });
  if (t.length < 2) t = [lo, hi];
  return t;
}

/* A line chart.  spec: {title, series: [{label, color, x, y, raw, run, metric, dash, width}],
 * logy, xlabel, hlines: [{y, label, color}], vlines: [{x, color, title}], legend, yfmt} */
function chart(parent, spec) {
  var card = el("div", { "class": "card", "data-chart": spec.id || spec.title }, parent);
  el("div", { "class": "t" }, card, spec.title);
  var W = 460, H = 250, L = 56, R = 12, T = 8, B = 32;
  var xs = [], ys = [];
  spec.series.forEach(function (s) {
    for (var i = 0; i < s.x.length; i++)
      if (isnum(s.x[i]) && isnum(s.y[i]) && (!spec.logy || s.y[i] > 0)) { xs.push(s.x[i]); ys.push(s.y[i]); }
  });
  (spec.hlines || []).forEach(function (h) { if (!spec.logy || h.y > 0) ys.push(h.y); });
  if (!xs.length) {
    el("div", { "class": "none" }, card, spec.empty || "not logged by these runs");
    return card;
  }
  function lo(a) { var m = Infinity; for (var i = 0; i < a.length; i++) if (a[i] < m) m = a[i]; return m; }
  function hi(a) { var m = -Infinity; for (var i = 0; i < a.length; i++) if (a[i] > m) m = a[i]; return m; }
  var x0 = lo(xs), x1 = hi(xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  var y0 = lo(ys), y1 = hi(ys);
  if (spec.logy) { y0 = Math.log10(y0); y1 = Math.log10(y1); }
  var mag = Math.max(Math.abs(y0), Math.abs(y1));
  if (y1 - y0 <= mag * 1e-9) { /* flat (up to rounding, e.g. a smoothed constant): a band around it */
    var mid = (y0 + y1) / 2, half = mag > 0 ? mag * 0.05 : 0.5;
    y0 = mid - half; y1 = mid + half;
  }
  var pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  function px(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
  function py(v) { return T + (1 - ((spec.logy ? Math.log10(v) : v) - y0) / (y1 - y0)) * (H - T - B); }
  var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, card);
  sv("title", {}, svg, spec.title);
  var ax = sv("g", { "class": "axis" }, svg);
  var yt = spec.logy ? logTicks(Math.pow(10, y0), Math.pow(10, y1)) : niceTicks(y0, y1, 5);
  yt.forEach(function (v) {
    var y = py(v);
    sv("line", { x1: L, x2: W - R, y1: y, y2: y, "class": "gridl" }, ax);
    sv("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, ax, (spec.yfmt || fmt)(v));
  });
  niceTicks(x0, x1, 5).forEach(function (v) {
    var x = px(v);
    sv("line", { x1: x, x2: x, y1: H - B, y2: H - B + 4 }, ax);
    sv("text", { x: x, y: H - B + 15, "text-anchor": x > W - R - 16 ? "end" : "middle" }, ax, state.x === "tokens" ? fmtTokens(v) : fmt(v));
  });
  sv("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }, ax);
  sv("line", { x1: L, x2: L, y1: T, y2: H - B }, ax);
  sv("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle" }, ax, spec.xlabel || (state.x === "tokens" ? "tokens" : "step"));
  sv("clipPath", { id: "c" + nCharts }, svg).appendChild(sv("rect", { x: L, y: T, width: W - L - R, height: H - T - B }));
  var plot = sv("g", { "clip-path": "url(#c" + nCharts + ")" }, svg);
  (spec.vlines || []).forEach(function (v) {
    if (!isnum(v.x)) return;
    var l = sv("line", { x1: px(v.x), x2: px(v.x), y1: T, y2: H - B, stroke: v.color || "#c62828", "stroke-width": 1,
      "stroke-dasharray": v.dash || "", "class": v.cls || "vline", opacity: 0.55 }, plot);
    if (v.title) sv("title", {}, l, v.title);
  });
  (spec.hlines || []).forEach(function (h) {
    if (spec.logy && !(h.y > 0)) return;
    sv("line", { x1: L, x2: W - R, y1: py(h.y), y2: py(h.y), stroke: h.color || "#555", "stroke-dasharray": "5 4", "stroke-width": 1.2, "class": "hline" }, plot);
    if (h.label) sv("text", { x: W - R - 4, y: py(h.y) - 4, "text-anchor": "end", "font-size": 10, fill: h.color || "#555" }, plot, h.label);
  });
  spec.series.forEach(function (s) {
    var d = "", pen = false, stride = Math.max(1, Math.ceil(s.x.length / 3000)); /* long runs: every k-th point drawn */
    for (var i = 0; i < s.x.length; i += (stride > 1 && i + stride >= s.x.length && i !== s.x.length - 1) ? s.x.length - 1 - i : stride) {
      var ok = isnum(s.x[i]) && isnum(s.y[i]) && (!spec.logy || s.y[i] > 0);
      if (!ok) { pen = false; continue; }
      d += (pen ? "L" : "M") + px(s.x[i]).toFixed(1) + " " + py(s.y[i]).toFixed(1);
      pen = true;
    }
    var a = { d: d || "M0 0", fill: "none", stroke: s.color, "stroke-width": s.width || 1.6, "stroke-linejoin": "round",
      "data-run": s.run === undefined ? "" : s.run, "data-metric": s.metric || "", "data-n": s.x.length };
    if (s.dash) a["stroke-dasharray"] = s.dash;
    var p = sv("path", a, plot);
    if (VERIFY) { p.setAttribute("data-x", s.x.join(",")); p.setAttribute("data-y", (s.raw || s.y).join(",")); }
    if (s.points || s.x.length <= 3)
      for (var j = 0; j < s.x.length; j++)
        if (isnum(s.x[j]) && isnum(s.y[j]) && (!spec.logy || s.y[j] > 0))
          sv("circle", { cx: px(s.x[j]), cy: py(s.y[j]), r: 2.6, fill: s.color }, plot);
  });
  if (spec.legend !== false) {
    var lg = el("div", { "class": "legend" }, card);
    spec.series.forEach(function (s) {
      if (s.nolegend) return;
      var it = el("span", s.x.length ? {} : { "class": "na" }, lg);
      el("span", { "class": "sw", style: "background:" + s.color }, it);
      it.appendChild(document.createTextNode(s.label + (s.x.length ? "" : s.zero ? " (0 throughout)" : " (not logged)")));
    });
    (spec.notes || []).forEach(function (n) { el("span", { "class": "na" }, lg, n); });
  }
  nCharts++;
  return card;
}

/* x of a record: its step or the tokens seen at it */
function xOf(r, rec) { return state.x === "tokens" ? (isnum(rec.tokens) ? rec.tokens : r.tokensAt[rec.step]) : rec.step; }

/* a metric of every run; "absent" when the run never logged it (or only zeros, for optional terms) */
function metricSeries(key, opt) {
  opt = opt || {};
  return D.runs.map(function (r, i) {
    var recs = opt.val ? r.val : r.train;
    var xs = [], ys = [];
    recs.forEach(function (x) {
      if (!(key in x)) return;
      xs.push(xOf(r, x)); ys.push(opt.scale ? x[key] * opt.scale : x[key]);
    });
    var zero = false;
    if (opt.zeroIsAbsent && xs.length && ys.every(function (v) { return v === 0; })) { xs = []; ys = []; zero = true; }
    var sm = opt.val || opt.nosmooth ? ys : ema(ys, state.smooth);
    return { label: r.label, color: r.color, x: xs, y: sm, raw: ys, run: i, metric: key, points: opt.val, zero: zero };
  });
}

function collapseLines(r) {
  var v = [], last = -1e18;
  r.train.forEach(function (x) {
    if (x.collapsed && x.step - last > 0) { v.push({ x: xOf(r, x), color: "#c62828", title: "collapsed at step " + x.step, cls: "collapse" }); last = x.step; }
  });
  return v.slice(0, 400);
}

/* ---- sections ------------------------------------------------------------- */
function header(app) {
  el("h1", {}, app, D.title);
  el("div", { "class": "sub" }, app, "generated " + D.generated + " by dsv3 " + D.dsv3_version + " · " + D.runs.length +
    " run" + (D.runs.length > 1 ? "s" : "") + " · self-contained: no network access");
  var warns = [];
  D.runs.forEach(function (r) {
    if (r.skipped_total) {
      var lines = r.skipped.slice(0, 8).map(function (s) { return s.why; }).join("; ");
      warns.push(r.label + ": " + r.skipped_total + " line" + (r.skipped_total > 1 ? "s" : "") + " of train_log.jsonl skipped (" + lines +
        (r.skipped_total > 8 ? "; ..." : "") + "); the charts use the valid lines");
    }
    if (!r.train.length) warns.push(r.label + ": no training records in train_log.jsonl");
    if (r.skippedSteps.length) warns.push(r.label + ": " + r.skippedSteps.length + " step(s) skipped by the trainer (non-finite loss)");
  });
  if (warns.length) {
    var w = el("div", { "class": "warn", id: "warnings" }, app);
    warns.forEach(function (t) { el("div", {}, w, t); });
  }
}

function controls(app) {
  var bar = el("div", { "class": "bar" });
  document.body.insertBefore(bar, app);
  var lx = el("label", {}, bar, "x axis ");
  var sx = el("select", { id: "xaxis" }, lx);
  ["step", "tokens"].forEach(function (v) { var o = el("option", { value: v }, sx, v === "step" ? "steps" : "tokens"); if (v === state.x) o.selected = true; });
  sx.onchange = function () { state.x = sx.value; render(); };
  var ls = el("label", {}, bar, "smoothing ");
  var rs = el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: state.smooth, id: "smooth" }, ls);
  var sval = el("span", { "class": "mono" }, ls, " " + state.smooth.toFixed(2));
  rs.oninput = function () { state.smooth = parseFloat(rs.value); sval.textContent = " " + state.smooth.toFixed(2); render(); };
  var ll = el("label", {}, bar);
  var cb = el("input", { type: "checkbox", id: "logy" }, ll);
  ll.appendChild(document.createTextNode(" log scale (loss, grad norm, lr)"));
  cb.onchange = function () { state.logy = cb.checked; render(); };
  if (D.runs.length > 1) {
    var lr = el("label", {}, bar, "routing of run ");
    var sr = el("select", { id: "routing-run" }, lr);
    D.runs.forEach(function (r, i) { el("option", { value: i }, sr, r.label); });
    sr.onchange = function () { state.run = parseInt(sr.value, 10); render(); };
  }
}

function ablation(app) {
  var A = D.ablation;
  if (!A) return;
  el("h2", {}, app, "Ablation: " + (A.title || A.what));
  if (A.setup) el("div", { "class": "sub" }, app, A.setup);
  var v = A.variants || [];
  if (v.length) {
    var cols = A.columns || Object.keys(v[0]).filter(function (k) { return k !== "run"; });
    var t = el("table", { id: "ablation" }, app), tr = el("tr", {}, t);
    cols.forEach(function (c) { el("th", {}, tr, c.replace(/_/g, " ")); });
    v.forEach(function (row, i) {
      var r = el("tr", {}, t);
      cols.forEach(function (c, j) {
        var val = row[c], txt = typeof val === "number" ? (c === "tokens" ? fmtTokens(val) : c === "steps" ? String(val) : fmt(val, 5)) : val === null || val === undefined ? "–" : String(val);
        var td = el("td", { "class": typeof val === "number" ? "n" : "" }, r, txt);
        if (j === 0) td.style.borderLeft = "4px solid " + COLORS[i % COLORS.length];
      });
    });
  }
  (A.notes || []).forEach(function (n) { el("div", { "class": "sub" }, app, n); });
}

function last(a) { return a.length ? a[a.length - 1] : undefined; }

function runsTable(app) {
  el("h2", {}, app, "Runs");
  var t = el("table", { id: "runs" }, app), h = el("tr", {}, t);
  ["run", "steps", "tokens", "final loss", "final val loss", "val bpb", "precision", "balance", "MTP λ", "seed", "git", "machine"].forEach(function (c) { el("th", {}, h, c); });
  D.runs.forEach(function (r) {
    var tr = el("tr", {}, t), lt = last(r.train) || {}, lv = last(r.val) || {};
    var c = el("td", {}, tr, r.label); c.style.borderLeft = "4px solid " + r.color;
    el("td", { "class": "n" }, tr, lt.step === undefined ? "–" : lt.step);
    el("td", { "class": "n" }, tr, fmtTokens(lt.tokens));
    el("td", { "class": "n" }, tr, fmt(lt.loss, 5));
    el("td", { "class": "n" }, tr, fmt(lv.val_loss, 5));
    el("td", { "class": "n" }, tr, fmt(lv.val_bpb, 5));
    el("td", {}, tr, r.opts.precision || "–");
    el("td", {}, tr, r.opts.balance || "–");
    el("td", { "class": "n" }, tr, r.opts.mtp_lambda === undefined ? "–" : fmt(r.opts.mtp_lambda));
    el("td", { "class": "n" }, tr, r.opts.seed === undefined ? "–" : r.opts.seed);
    var g = r.info.git || {};
    el("td", { "class": "mono" }, tr, g.rev ? g.rev.slice(0, 10) + (g.dirty ? "+dirty" : "") : "–");
    var m = r.info.machine || {};
    el("td", {}, tr, m.hostname ? m.hostname + " · " + (m.cpu || "") + " · " + m.threads + " threads" : "–");
  });
}

function flatten(o, pre, out) {
  for (var k in o) {
    var v = o[k];
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, pre + k + ".", out);
    else out[pre + k] = Array.isArray(v) ? JSON.stringify(v) : v;
  }
  return out;
}

function configDiff(app) {
  el("h2", {}, app, D.runs.length > 1 ? "Configuration: what differs" : "Configuration");
  var flat = D.runs.map(function (r) {
    var f = flatten(r.opts, "train.", {});
    flatten(r.model, "model.", f);
    if (r.info.data) f["train.data"] = r.info.data;
    return f;
  });
  var keys = {};
  flat.forEach(function (f) { for (var k in f) keys[k] = 1; });
  keys = Object.keys(keys).sort();
  var diff = keys.filter(function (k) {
    var v0 = JSON.stringify(flat[0][k]);
    return flat.some(function (f) { return JSON.stringify(f[k]) !== v0; });
  });
  function table(parent, ks, id) {
    var t = el("table", { id: id }, parent), h = el("tr", {}, t);
    el("th", {}, h, "key");
    D.runs.forEach(function (r) { var c = el("th", {}, h, r.label); c.style.borderTop = "3px solid " + r.color; });
    ks.forEach(function (k) {
      var tr = el("tr", diff.indexOf(k) >= 0 && D.runs.length > 1 ? { "class": "diff" } : {}, t);
      el("td", { "class": "mono" }, tr, k);
      flat.forEach(function (f) { el("td", { "class": "mono" }, tr, f[k] === undefined ? "–" : String(f[k])); });
    });
  }
  if (!keys.length) { el("div", { "class": "none" }, app, "no run.json or config.json in these run folders"); return; }
  if (D.runs.length > 1) {
    if (diff.length) table(app, diff, "config-diff");
    else el("div", { "class": "sub" }, app, "the runs have the same options and model config");
  }
  var det = el("details", D.runs.length > 1 ? {} : { open: "" }, app);
  el("summary", {}, det, "all " + keys.length + " options and model config values");
  table(det, keys, "config-all");
}

function training(app) {
  el("h2", {}, app, "Training");
  var g = el("div", { "class": "grid" }, app);
  var lg = state.logy;
  var tokens = state.x === "tokens";
  chart(g, { title: "training loss: next-token cross-entropy", id: "loss", series: metricSeries("loss"), logy: lg,
    vlines: [].concat.apply([], D.runs.map(function (r) { return r.resumes.map(function (x) { return { x: tokens ? r.tokensAt[x.resume_step] : x.resume_step, color: "#888", dash: "2 3", title: "resumed after step " + x.resume_step }; }); })) });
  chart(g, { title: "MTP loss (cross-entropy, mean over depths)", id: "mtp_loss", series: metricSeries("mtp_loss", { zeroIsAbsent: true }), logy: lg });
  chart(g, { title: "validation loss", id: "val_loss", series: metricSeries("val_loss", { val: true }), logy: lg });
  chart(g, { title: "validation bits per byte", id: "val_bpb", series: metricSeries("val_bpb", { val: true }), logy: lg });
  chart(g, { title: "objective: loss + λ·MTP + balance loss", id: "total_loss", series: metricSeries("total_loss"), logy: lg });
  chart(g, { title: "balance loss (auxiliary)", id: "balance_loss", series: metricSeries("balance_loss", { zeroIsAbsent: true }), logy: lg, empty: "no auxiliary balance loss in these runs" });
  chart(g, { title: "learning rate", id: "lr", series: metricSeries("lr", { nosmooth: true }), logy: lg });
  chart(g, { title: "gradient norm (before clipping)", id: "grad_norm", series: metricSeries("grad_norm"), logy: lg });
  chart(g, { title: "tokens per second", id: "tokens_per_s", series: metricSeries("tokens_per_s") });
  chart(g, { title: "MFU (% of the FP32 peak)", id: "mfu", series: metricSeries("mfu", { scale: 100 }) });
  var mv = metricSeries("maxvio");
  chart(g, { title: "MaxVio of the worst MoE layer (collapse marked red)", id: "maxvio", series: mv,
    vlines: [].concat.apply([], D.runs.map(collapseLines)) });
  chart(g, { title: "MaxVio over the validation set", id: "val_maxvio", series: metricSeries("val_maxvio", { val: true }) });
}

/* per MoE layer: loads [step][expert] of one run */
function layerLoads(r) {
  var layers = [];
  r.train.forEach(function (x) {
    (x.load || []).forEach(function (l, i) { (layers[i] = layers[i] || []).push({ rec: x, load: l }); });
  });
  return layers;
}

function heatmap(parent, r, li, rows, title) {
  var E = rows[0].load.length, n = rows.length;
  if (!E) return;
  var card = el("div", { "class": "card", "data-chart": "heatmap-" + li }, parent);
  el("div", { "class": "t" }, card, (title || "MoE layer " + li) + ": expert load over " + (state.x === "tokens" ? "tokens" : "steps") + " (share ÷ fair share)");
  var cols = Math.min(n, E > 64 ? 120 : 200), W = 460, H = 250, L = 36, R = 52, T = 6, B = 32;
  var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "shape-rendering": "crispEdges" }, card);
  var cw = (W - L - R) / cols, ch = (H - T - B) / E;
  function color(ratio) { /* blue under the fair share, white at it, red over (log2 in [-2, 2]) */
    var t = Math.max(-1, Math.min(1, Math.log2(Math.max(ratio, 1e-6)) / 2));
    var a = [255, 255, 255], b = t < 0 ? [33, 102, 172] : [178, 24, 43], u = Math.abs(t);
    return "rgb(" + a.map(function (v, k) { return Math.round(v + (b[k] - v) * u); }).join(",") + ")";
  }
  for (var c = 0; c < cols; c++) {
    var lo = Math.floor(c * n / cols), hi = Math.max(lo + 1, Math.floor((c + 1) * n / cols));
    var sums = new Array(E).fill(0), tot = 0;
    for (var s = lo; s < hi; s++) for (var e = 0; e < E; e++) { sums[e] += rows[s].load[e]; tot += rows[s].load[e]; }
    for (e = 0; e < E; e++)
      sv("rect", { x: (L + c * cw).toFixed(2), y: (T + e * ch).toFixed(2), width: (cw + 0.3).toFixed(2), height: (ch + 0.3).toFixed(2),
        fill: color(tot > 0 ? sums[e] / tot * E : 1) }, svg);
  }
  var ax = sv("g", { "class": "axis" }, svg);
  var step = Math.max(1, Math.ceil(E / 8));
  for (e = 0; e < E; e += step) sv("text", { x: L - 4, y: T + (e + 0.5) * ch + 3, "text-anchor": "end" }, ax, e);
  sv("text", { x: 10, y: T + (H - T - B) / 2, transform: "rotate(-90 10 " + (T + (H - T - B) / 2) + ")", "text-anchor": "middle" }, ax, "expert");
  var xa = xOf(r, rows[0].rec), xb = xOf(r, rows[n - 1].rec);
  [0, 0.5, 1].forEach(function (f) {
    var x = L + f * (W - L - R);
    sv("text", { x: x, y: H - B + 14, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" }, ax,
      state.x === "tokens" ? fmtTokens(xa + f * (xb - xa)) : fmt(Math.round(xa + f * (xb - xa))));
  });
  sv("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle" }, ax, state.x === "tokens" ? "tokens" : "step");
  [[4, "4x"], [2, "2x"], [1, "1x"], [0.5, "½"], [0.25, "¼"]].forEach(function (p, k) {
    var y = T + k * (H - T - B) / 5;
    sv("rect", { x: W - R + 8, y: y, width: 12, height: (H - T - B) / 5, fill: color(p[0]) }, svg);
    sv("text", { x: W - R + 24, y: y + (H - T - B) / 10 + 3 }, ax, p[1]);
  });
  r.train.forEach(function (x, k) { /* collapse ticks under the map */
    if (!x.collapsed) return;
    var idx = rows.findIndex(function (q) { return q.rec === x; });
    if (idx >= 0) sv("rect", { x: L + idx / n * (W - L - R), y: H - B + 1, width: Math.max(1, cw), height: 3, fill: "#c62828", "class": "collapse" }, svg);
  });
  nCharts++;
}

function routing(app) {
  var withLoads = D.runs.filter(function (q) { return layerLoads(q).length > 0; });
  if (withLoads.length > 1) { /* the runs side by side: the last MoE layer of each */
    el("h2", {}, app, "Routing: the runs side by side");
    var gg = el("div", { "class": "grid" }, app);
    withLoads.forEach(function (q) {
      var ls = layerLoads(q), li = ls.length - 1;
      heatmap(gg, q, li, ls[li], q.label + ", MoE layer " + li);
    });
  }
  var r = D.runs[state.run] || D.runs[0];
  el("h2", {}, app, "Routing" + (D.runs.length > 1 ? ": " + r.label : ""));
  var layers = layerLoads(r);
  if (!layers.length) { el("div", { "class": "none" }, app, "no expert loads in this run's log (a dense model?)"); return; }
  el("div", { "class": "sub" }, app, "Per MoE layer (in layer order, the dense layers left out): each cell is an expert's share of the routed tokens divided by the fair share 1/E, over bins of steps. MaxVio = max load ÷ mean load − 1 (DeepSeek's balance measure). Red ticks and lines: steps where the trainer warned that a layer looks collapsed.");
  var g = el("div", { "class": "grid" }, app);
  layers.forEach(function (rows, li) { heatmap(g, r, li, rows); });
  var mv = [], bs = [];
  layers.forEach(function (rows, li) {
    var xs = [], m = [], b = [];
    rows.forEach(function (q) {
      var s = 0, mx = 0;
      q.load.forEach(function (v) { s += v; if (v > mx) mx = v; });
      xs.push(xOf(r, q.rec));
      m.push(s > 0 ? mx / (s / q.load.length) - 1 : NaN);
      b.push(s > 0 ? mx / s : NaN);
    });
    var col = COLORS[li % COLORS.length];
    mv.push({ label: "MoE layer " + li, color: col, x: xs, y: ema(m, state.smooth), raw: m, metric: "maxvio_layer" + li, run: state.run });
    bs.push({ label: "MoE layer " + li, color: col, x: xs, y: ema(b, state.smooth), raw: b, metric: "busiest_share_layer" + li, run: state.run });
  });
  var E = layers[0][0].load.length;
  chart(g, { title: "MaxVio per MoE layer", id: "maxvio_layers", series: mv, vlines: collapseLines(r) });
  chart(g, { title: "share of the busiest expert (fair share 1/" + E + " dashed)", id: "busiest_share", series: bs,
    hlines: [{ y: 1 / E, label: "1/" + E, color: "#555" }], vlines: collapseLines(r) });
  var hasBias = r.train.some(function (x) { return Array.isArray(x.bias); });
  if (!hasBias) {
    el("div", { "class": "sub" }, app, "router bias: not in this run's log (aux-loss-free balancing off, or a log of an older dsv3)");
    return;
  }
  var nl = 0;
  r.train.forEach(function (x) { if (x.bias) nl = Math.max(nl, x.bias.length); });
  for (var li = 0; li < nl; li++) {
    var ser = [];
    for (var e = 0; e < E; e++) {
      var xs = [], ys = [];
      r.train.forEach(function (x) { if (x.bias && x.bias[li]) { xs.push(xOf(r, x)); ys.push(x.bias[li][e]); } });
      ser.push({ label: "expert " + e, color: COLORS[e % COLORS.length], x: xs, y: ys, metric: "bias_layer" + li + "_e" + e, run: state.run, width: 1.1, nolegend: E > 10 });
    }
    chart(g, { title: "router bias per expert, MoE layer " + li + " (aux-loss-free)", id: "bias" + li, series: ser, notes: E > 10 ? [E + " experts"] : [] });
  }
}

function precision(app) {
  var fp8files = allFiles.filter(function (f) { return f.kind === "fp8"; });
  if (baseline < 0 && !fp8files.length) return;
  el("h2", {}, app, "Precision");
  if (baseline >= 0 && D.runs.length > 1) {
    var b = D.runs[baseline];
    el("div", { "class": "sub" }, app, "Relative loss gap to the " + (b.opts.precision || "baseline") + " run " + b.label +
      ": (loss − baseline loss) ÷ baseline loss at the same step, of the smoothed training loss; DeepSeek-V3 reports FP8 training within 0.25% of BF16.");
    var bsm = ema(b.train.map(function (x) { return x.loss; }), state.smooth), bAt = {};
    b.train.forEach(function (x, i) { bAt[x.step] = bsm[i]; });
    var bv = {};
    b.val.forEach(function (x) { bv[x.step] = x.val_loss; });
    var ser = [], rows = [];
    D.runs.forEach(function (r, i) {
      if (i === baseline) return;
      var sm = ema(r.train.map(function (x) { return x.loss; }), state.smooth), xs = [], ys = [];
      r.train.forEach(function (x, k) { if (bAt[x.step] !== undefined) { xs.push(xOf(r, x)); ys.push((sm[k] - bAt[x.step]) / bAt[x.step] * 100); } });
      ser.push({ label: r.label + " vs " + b.label, color: r.color, x: xs, y: ys, metric: "gap", run: i });
      var lv = null;
      for (var k = r.val.length - 1; k >= 0; k--) if (bv[r.val[k].step] !== undefined) { lv = r.val[k]; break; }
      var tail = ys.slice(Math.floor(ys.length * 0.8));
      var mean = tail.length ? tail.reduce(function (a, v) { return a + v; }, 0) / tail.length : NaN;
      rows.push([r, lv ? lv.step : null, lv ? lv.val_loss : null, lv ? bv[lv.step] : null, lv ? (lv.val_loss - bv[lv.step]) / bv[lv.step] * 100 : NaN, mean]);
    });
    var g = el("div", { "class": "grid" }, app);
    chart(g, { title: "training loss gap to " + b.label + " (%)", id: "fp8_gap", series: ser,
      hlines: [{ y: D.fp8_gap_line, label: "+0.25% (DeepSeek-V3)", color: "#c62828" }, { y: -D.fp8_gap_line, label: "−0.25%", color: "#c62828" }, { y: 0, color: "#999" }],
      yfmt: function (v) { return fmt(v, 3) + "%"; } });
    var t = el("table", { id: "fp8-gap" }, app), h = el("tr", {}, t);
    ["run", "precision", "val step", "val loss", b.label + " val loss", "val gap", "train gap, last 20% mean", "within 0.25%"].forEach(function (c) { el("th", {}, h, c); });
    rows.forEach(function (q) {
      var tr = el("tr", {}, t);
      el("td", {}, tr, q[0].label); el("td", {}, tr, q[0].opts.precision || "–");
      el("td", { "class": "n" }, tr, q[1] === null ? "–" : q[1]);
      el("td", { "class": "n" }, tr, fmt(q[2], 6)); el("td", { "class": "n" }, tr, fmt(q[3], 6));
      el("td", { "class": "n" }, tr, isnum(q[4]) ? q[4].toFixed(3) + "%" : "–");
      el("td", { "class": "n" }, tr, isnum(q[5]) ? q[5].toFixed(3) + "%" : "–");
      var gap = isnum(q[4]) ? q[4] : q[5];
      el("td", { "class": isnum(gap) ? (Math.abs(gap) <= D.fp8_gap_line ? "ok" : "bad") : "" }, tr, isnum(gap) ? (Math.abs(gap) <= D.fp8_gap_line ? "yes" : "no") : "–");
    });
  }
  fp8files.forEach(function (f) { fp8Analyze(app, f); });
}

function barChart(parent, title, groups, names, id) { /* groups: [{label, values[]}] , one bar per name */
  var card = el("div", { "class": "card", "data-chart": id }, parent);
  el("div", { "class": "t" }, card, title);
  var W = 460, H = 250, L = 56, R = 8, T = 8, B = 46, max = 0;
  groups.forEach(function (g) { g.values.forEach(function (v) { if (isnum(v) && v > max) max = v; }); });
  if (!(max > 0)) max = 1;
  var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, card), ax = sv("g", { "class": "axis" }, svg);
  niceTicks(0, max * 1.05, 5).forEach(function (v) {
    var y = T + (1 - v / (max * 1.05)) * (H - T - B);
    sv("line", { x1: L, x2: W - R, y1: y, y2: y, "class": "gridl" }, ax);
    sv("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, ax, fmt(v, 3));
  });
  var gw = (W - L - R) / groups.length, bw = gw * 0.8 / names.length;
  groups.forEach(function (g, i) {
    g.values.forEach(function (v, j) {
      if (!isnum(v)) return;
      var h = v / (max * 1.05) * (H - T - B);
      var rect = sv("rect", { x: L + i * gw + gw * 0.1 + j * bw, y: H - B - h, width: bw * 0.92, height: h, fill: COLORS[j % COLORS.length] }, svg);
      sv("title", {}, rect, g.label + " " + names[j] + ": " + fmt(v, 4));
    });
    sv("text", { x: L + (i + 0.5) * gw, y: H - B + 13, "text-anchor": "end", "font-size": 9,
      transform: "rotate(-35 " + (L + (i + 0.5) * gw) + " " + (H - B + 13) + ")" }, ax, g.label);
  });
  var lg = el("div", { "class": "legend" }, card);
  names.forEach(function (n, j) { var it = el("span", {}, lg); el("span", { "class": "sw", style: "background:" + COLORS[j % COLORS.length] }, it); it.appendChild(document.createTextNode(n)); });
  nCharts++;
}

function fp8Analyze(app, f) {
  var d = f.data || {};
  el("h3", {}, app, "FP8 quantization error: " + f.file + (f.run ? " (" + f.run + ")" : "") + (d.model ? " — model " + d.model : ""));
  var g = el("div", { "class": "grid" }, app);
  [["summary", "weights"], ["activation_summary", "activations"], ["gradient_summary", "output gradients"]].forEach(function (p) {
    var s = d[p[0]];
    if (!s || !Object.keys(s).length) return;
    var kinds = Object.keys(s), fmts = Object.keys(s[kinds[0]].error || {});
    fmts.forEach(function (fm) {
      var scal = Object.keys(s[kinds[0]].error[fm]);
      var wrap = el("div", {}, g);
      var t = el("table", { "class": "fp8-table" }, wrap), h = el("tr", {}, t);
      el("th", {}, h, p[1] + " " + fm + ": relative RMS error");
      el("th", {}, h, "tensors");
      scal.forEach(function (sc) { el("th", {}, h, sc); });
      kinds.forEach(function (k) {
        var tr = el("tr", {}, t);
        el("td", {}, tr, k); el("td", { "class": "n" }, tr, s[k].tensors);
        scal.forEach(function (sc) { var e = (s[k].error[fm] || {})[sc] || {}; el("td", { "class": "n" }, tr, fmt(e.rel_rms, 3)); });
      });
      barChart(wrap, p[1] + " " + fm + ": relative RMS error by scaling", kinds.map(function (k) {
        return { label: k, values: scal.map(function (sc) { return ((s[k].error[fm] || {})[sc] || {}).rel_rms; }) };
      }), scal, "fp8-" + p[0] + "-" + fm);
    });
  });
  var top = d.top_outliers || [];
  if (top.length) {
    var det = el("details", {}, app);
    el("summary", {}, det, top.length + " largest weight outliers (|w| ÷ mean |w| of the 128x128 block)");
    var t = el("table", {}, det), h = el("tr", {}, t);
    ["tensor", "row", "col", "value", "ratio"].forEach(function (c) { el("th", {}, h, c); });
    top.forEach(function (o) {
      var tr = el("tr", {}, t);
      el("td", { "class": "mono" }, tr, o.name || o.weight || "");
      el("td", { "class": "n" }, tr, o.row); el("td", { "class": "n" }, tr, o.col);
      el("td", { "class": "n" }, tr, fmt(o.value, 4)); el("td", { "class": "n" }, tr, fmt(o.ratio, 4));
    });
  }
}

function evaluation(app) {
  var ev = allFiles.filter(function (f) { return f.kind === "eval"; });
  if (!ev.length) return;
  el("h2", {}, app, "Evaluation");
  var cols = ev.map(function (f) { return f.run ? f.run + " · " + f.file.replace(/^.*\//, "") : f.file; });
  var rows = {}, order = [];
  ev.forEach(function (f, i) {
    var res = (f.data || {}).results || {};
    Object.keys(res).forEach(function (task) {
      var m = res[task].metrics || {};
      Object.keys(m).forEach(function (name) {
        var k = task + "\u0000" + name;
        if (!rows[k]) { rows[k] = { task: task, metric: name, n: res[task].n, v: [] }; order.push(k); }
        rows[k].v[i] = m[name];
      });
    });
  });
  var t = el("table", { id: "eval" }, app), h = el("tr", {}, t);
  ["task", "metric", "n"].concat(cols).forEach(function (c) { el("th", {}, h, c); });
  order.forEach(function (k) {
    var r = rows[k], tr = el("tr", {}, t);
    el("td", {}, tr, r.task); el("td", {}, tr, r.metric); el("td", { "class": "n" }, tr, r.n === undefined ? "–" : r.n);
    cols.forEach(function (c, i) {
      var m = r.v[i];
      el("td", { "class": "n" }, tr, m ? fmt(m.value, 4) + (isnum(m.stderr) ? " ± " + fmt(m.stderr, 2) : "") : "–");
    });
  });
  ev.forEach(function (f) {
    var errs = (f.data || {}).errors;
    if (errs) Object.keys(errs).forEach(function (k) { el("div", { "class": "warn" }, app, f.file + ": " + k + " failed: " + errs[k]); });
  });
}

function shellQuote(a) { return /^[A-Za-z0-9_\/.,:=+@%-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'"; }

function provenance(app) {
  el("h2", {}, app, "Provenance");
  D.runs.forEach(function (r) {
    var det = el("details", { open: "" }, app);
    var s = el("summary", {}, det, r.label + " — " + r.path);
    s.style.borderLeft = "4px solid " + r.color; s.style.paddingLeft = "6px";
    var i = r.info, t = el("table", {}, det);
    function row(k, v) { var tr = el("tr", {}, t); el("th", {}, tr, k); el("td", { "class": "mono" }, tr, v === undefined || v === null || v === "" ? "–" : String(v)); }
    if (!r.info.dsv3_version) { row("run.json", "absent: a run of an older dsv3, or not from `dsv3 train`"); }
    row("command", Array.isArray(i.command) ? i.command.map(shellQuote).join(" ") : i.command);
    row("working directory", i.cwd);
    row("dsv3 version", i.dsv3_version);
    var g = i.git || {};
    row("git revision", g.rev ? g.rev + (g.dirty ? " (uncommitted changes)" : "") : g.error);
    var m = i.machine || {};
    row("machine", m.hostname ? m.hostname + " · " + m.os : undefined);
    row("CPU", m.cpu ? m.cpu + " · " + m.cores + " cores · " + m.threads + " threads" : undefined);
    row("started", i.started);
    row("data", i.data);
    row("records", r.records.length + " valid lines (" + r.train.length + " steps, " + r.val.length + " validations" +
      (r.resumes.length ? ", " + r.resumes.length + " resumes" : "") + ")" + (r.skipped_total ? "; " + r.skipped_total + " skipped" : ""));
  });
}

function render() {
  var app = document.getElementById("app");
  var y = window.scrollY;
  app.textContent = "";
  nCharts = 0;
  header(app);
  ablation(app);
  runsTable(app);
  training(app);
  routing(app);
  precision(app);
  evaluation(app);
  configDiff(app);
  provenance(app);
  document.body.setAttribute("data-charts", nCharts);
  document.body.setAttribute("data-rendered", "1");
  window.scrollTo(0, y);
}

controls(document.getElementById("app"));
render();
})();
