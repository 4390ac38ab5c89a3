// Line charts drawn as inline SVG markup (parsed by the HTML parser, so no namespace URL is
// needed). Colours are the Okabe-Ito palette, safe for the common colour-vision deficiencies;
// each series also differs in dash pattern or markers, so colour is never the only cue.

export const PALETTE = {
  blue: "#0072B2",
  orange: "#E69F00",
  vermillion: "#D55E00",
  green: "#009E73",
  sky: "#56B4E9",
  purple: "#CC79A7",
  grey: "#555555",
};

export function esc(value) {
  return String(value ?? "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

const DAY = 86_400_000;

function dayValue(date) {
  return Date.parse(date + "T00:00:00Z");
}

function shortDate(ms) {
  return new Date(ms).toISOString().slice(5, 10);
}

/**
 * A date/percent chart.
 * spec: {title, from, to (YYYY-MM-DD), series: [{label, color, dash, points: [{date, y}], marks}],
 *        events: [{date, label}] (vertical annotations), yLabel}
 * Values y are ratios in [0, 1]; null values break the line.
 */
export function lineChart(spec) {
  const W = 560;
  const H = 260;
  const m = { left: 64, right: 14, top: 20, bottom: 50 };
  const x0 = dayValue(spec.from);
  const x1 = Math.max(dayValue(spec.to), x0 + DAY);
  const sx = (d) => m.left + ((dayValue(d) - x0) / (x1 - x0)) * (W - m.left - m.right);
  const sy = (y) => m.top + (1 - y) * (H - m.top - m.bottom);
  const parts = [];
  // Grid and y axis.
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    const y = sy(tick).toFixed(1);
    parts.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${y}" y2="${y}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${y}" class="tick" text-anchor="end" dominant-baseline="middle">${tick * 100}%</text>`);
  }
  // X axis ticks: about six, on whole days.
  const span = Math.max(1, Math.round((x1 - x0) / DAY));
  const step = Math.max(1, Math.ceil(span / 5));
  for (let d = 0; d <= span; d += step) {
    const ms = x0 + d * DAY;
    const x = (m.left + ((ms - x0) / (x1 - x0)) * (W - m.left - m.right)).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${H - m.bottom}" y2="${H - m.bottom + 4}" class="axis"/>`);
    parts.push(`<text x="${x}" y="${H - m.bottom + 18}" class="tick" text-anchor="middle">${shortDate(ms)}</text>`);
  }
  parts.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${H - m.bottom}" y2="${H - m.bottom}" class="axis"/>`);
  parts.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${H - m.bottom}" class="axis"/>`);
  parts.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 6}" class="label" text-anchor="middle">date (UTC, month-day)</text>`);
  parts.push(`<text x="13" y="${(m.top + H - m.bottom) / 2}" class="label" text-anchor="middle" transform="rotate(-90 13 ${(m.top + H - m.bottom) / 2})">${esc(spec.yLabel || "progress")}</text>`);
  // Annotations (e.g. target changes): a vertical rule with a label.
  // Labels go on the roomier side of the rule, cut to fit (the full text is the tooltip).
  for (const [i, ev] of (spec.events || []).entries()) {
    const x = sx(ev.date);
    const left = x > W / 2;
    const room = Math.max(8, Math.floor((left ? x - m.left : W - m.right - x) / 7) - 1);
    const text = ev.label.length > room ? ev.label.slice(0, room - 1) + "…" : ev.label;
    parts.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${m.top}" y2="${H - m.bottom}" class="annotation"><title>${esc(ev.label)}</title></line>`);
    parts.push(`<text x="${(left ? x - 4 : x + 4).toFixed(1)}" y="${m.top + 12 + i * 15}" text-anchor="${left ? "end" : "start"}" class="annotation-text">${esc(text)}<title>${esc(ev.label)}</title></text>`);
  }
  for (const s of spec.series) {
    let path = "";
    let pen = false;
    for (const p of s.points) {
      if (p.y === null || p.y === undefined) {
        pen = false;
        continue;
      }
      path += `${pen ? "L" : "M"}${sx(p.date).toFixed(1)},${sy(p.y).toFixed(1)}`;
      pen = true;
    }
    if (path) {
      parts.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2.5" stroke-dasharray="${s.dash || "none"}"><title>${esc(s.label)}</title></path>`);
    }
    for (const p of s.points) {
      if (!p.mark || p.y === null || p.y === undefined) continue;
      parts.push(`<circle cx="${sx(p.date).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="5" fill="#fff" stroke="${s.color}" stroke-width="2.5" class="mark"><title>${esc(p.mark)}</title></circle>`);
    }
  }
  const legend = spec.series
    .map(
      (s) =>
        `<span class="legend-item"><svg width="28" height="10" aria-hidden="true"><line x1="0" x2="28" y1="5" y2="5" stroke="${s.color}" stroke-width="3" stroke-dasharray="${s.dash || "none"}"/></svg>${esc(s.label)}</span>`,
    )
    .join("");
  const marks = spec.markLegend ? `<span class="legend-item"><svg width="14" height="14" aria-hidden="true"><circle cx="7" cy="7" r="5" fill="#fff" stroke="${PALETTE.blue}" stroke-width="2.5"/></svg>${esc(spec.markLegend)}</span>` : "";
  const annotations = (spec.events || []).length
    ? `<span class="legend-item"><svg width="14" height="14" aria-hidden="true"><line x1="7" x2="7" y1="0" y2="14" class="annotation"/></svg>${esc(spec.eventLegend || "change")}</span>`
    : "";
  return `<figure class="chart"><figcaption>${esc(spec.title)}</figcaption>
<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(spec.title)}" preserveAspectRatio="xMidYMid meet">${parts.join("")}</svg>
<div class="legend">${legend}${marks}${annotations}</div></figure>`;
}
