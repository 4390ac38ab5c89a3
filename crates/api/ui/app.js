// The Planledger dashboard: a small single-page app over the HTTP API. It renders what the API
// answers (every figure is computed by the service); it holds no rule of the domain.

import * as api from "./api.js";
import { PALETTE, esc, lineChart } from "./chart.js";

const main = document.getElementById("main");

// ---------------------------------------------------------------------------------------------
// Formatting

const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(x * 100)}%`);
const num = (x, digits = 2) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits).replace(/\.?0+$/, ""));
const days = (x) => (x === null || x === undefined ? "—" : `${Number(x).toFixed(1)} d`);
const when = (t) => (t ? new Date(t).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—");
const SHAPES = { on_track: "●", at_risk: "▲", off_track: "■" };

function status(s) {
  if (!s) return `<span class="status none">—</span>`;
  return `<span class="status s-${esc(s)}"><span aria-hidden="true">${SHAPES[s] || ""}</span> ${esc(s.replace("_", " "))}</span>`;
}

function card(label, value, hint) {
  return `<div class="card"><div class="card-label">${esc(label)}</div><div class="card-value">${value}</div>${hint ? `<div class="card-hint">${esc(hint)}</div>` : ""}</div>`;
}

function problem(error) {
  const detail = error instanceof api.ApiError ? error.detail : String(error && error.message ? error.message : error);
  const code = error instanceof api.ApiError && error.status ? ` <span class="code">(${error.status} ${esc(error.code)})</span>` : "";
  return `<p class="problem" role="alert">${esc(detail)}${code}</p>`;
}

function table(headers, rows, cls = "") {
  return `<div class="table-wrap"><table class="${cls}"><thead><tr>${headers.map((h) => `<th scope="col">${h}</th>`).join("")}</tr></thead><tbody>${rows.join("") || `<tr><td colspan="${headers.length}" class="empty">Nothing yet.</td></tr>`}</tbody></table></div>`;
}

/** Runs a panel's loader; an expired token signs out, any other problem shows its detail. */
async function panel(element, load) {
  try {
    element.innerHTML = await load();
  } catch (error) {
    if (signedOut(error)) return;
    element.innerHTML = problem(error);
  }
}

function signedOut(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    api.signOut();
    leavePage();
    leavePage = () => {};
    signIn(error);
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Routing and sign-in

let leavePage = () => {};
/** Served by a cluster's writer node (`/ui/config.json`): positions are per partition. */
let cluster = false;

function route() {
  leavePage();
  leavePage = () => {};
  const who = document.getElementById("who");
  const out = document.getElementById("sign-out");
  if (!api.token()) {
    who.textContent = "";
    out.hidden = true;
    signIn();
    return;
  }
  const c = api.claims();
  who.textContent = c ? `${c.sub} · tenant ${c.tenant} · ${(c.roles || []).join(", ")}` : "";
  out.hidden = false;
  const m = (location.hash || "#/").match(/^#\/plans\/([^/?#]+)/);
  if (m) planPage(decodeURIComponent(m[1]));
  else plansList();
}

/** The sign-in form; `refused` is the API's answer to the token that was given before. */
function signIn(refused) {
  document.getElementById("who").textContent = "";
  document.getElementById("sign-out").hidden = true;
  main.innerHTML = `<section class="signin"><h1>Sign in</h1>
${refused ? problem(refused) : ""}
<p>Paste an API token (<code>planledger token issue</code> mints one). It is kept in this tab's session storage only.</p>
<form id="signin-form"><label for="token-input">Token</label>
<textarea id="token-input" rows="4" required autocomplete="off" spellcheck="false"></textarea>
<button type="submit">Sign in</button></form></section>`;
  document.getElementById("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.setToken(document.getElementById("token-input").value);
    route();
  });
  document.getElementById("token-input").focus();
}

// ---------------------------------------------------------------------------------------------
// Plans list

async function plansList() {
  const scope = cluster ? `<p class="note">Every partition's plans, from the cluster's progress read model.</p>` : "";
  main.innerHTML = `<h1>Plans</h1>${scope}<div id="plans"><p class="loading">Loading plans…</p></div>`;
  const box = document.getElementById("plans");
  const rows = [];
  let after = null;
  async function more() {
    const page = await api.get("/v1/plans", { after, limit: 100 });
    for (const p of page.plans) {
      rows.push(`<tr><td><a href="#/plans/${encodeURIComponent(p.plan_id)}">${esc(p.title || p.plan_id)}</a><div class="sub">${esc(p.plan_id)}</div></td>
<td>${esc(p.starts_on)} → ${esc(p.ends_on)}</td><td class="n">${p.goals}</td><td class="n">${p.steps}</td><td class="n">${p.version}</td>
<td>${when(p.updated_at)}</td><td>${p.archived_at ? "archived" : "active"}</td></tr>`);
    }
    after = page.next_after;
    return table(["Plan", "Horizon", "Goals", "Steps", "Version", "Last change", "State"], rows, "plans") +
      (after ? `<button id="more-plans" type="button">More plans</button>` : "");
  }
  const load = async () => {
    await panel(box, more);
    const button = document.getElementById("more-plans");
    if (button) button.addEventListener("click", load);
  };
  await load();
}

// ---------------------------------------------------------------------------------------------
// Plan page

const TABS = [
  ["goals", "Goals"],
  ["accountability", "Accountability"],
  ["agility", "Agility"],
  ["drift", "Drift"],
  ["audit", "Audit trail"],
];

function planPage(planId) {
  const page = {
    planId,
    path: `/v1/plans/${encodeURIComponent(planId)}`,
    asOf: null, // null: live
    minPosition: null, // single node: the position of the last event of this plan seen live
    bookmark: null, // cluster: the feed's cursor after the last event of this plan seen live
    tab: "goals",
    trail: null, // every event, when the caller may read them
    trailError: null,
    state: null,
    baseline: null,
    firstRender: true,
    seq: 0,
    stopFeed: null,
    refreshTimer: null,
  };
  main.innerHTML = `<section class="plan-head" id="plan-head"><h1>${esc(planId)}</h1></section>
<div class="timebar"><label for="time">Time</label>
<input type="range" id="time" min="0" max="100" value="100" step="1" aria-describedby="time-out">
<output id="time-out" for="time">live</output>
<button type="button" id="live" disabled>Back to live</button></div>
<p id="time-note" class="note"></p>
<div class="layout"><div class="content">
<div role="tablist" aria-label="Plan views" class="tabs">${TABS.map(([id, label], i) => `<button role="tab" type="button" id="tab-${id}" aria-controls="panel-${id}" aria-selected="${i === 0}" tabindex="${i === 0 ? 0 : -1}">${label}</button>`).join("")}</div>
${TABS.map(([id], i) => `<section role="tabpanel" id="panel-${id}" aria-labelledby="tab-${id}" ${i === 0 ? "" : "hidden"} tabindex="0"></section>`).join("")}
</div>
<aside class="feed" aria-labelledby="feed-title"><h2 id="feed-title">Live activity</h2><p id="feed-state" class="note">Connecting…</p><ol id="feed" aria-live="polite"></ol></aside></div>`;

  setupTabs(page);
  setupSlider(page);
  startFeed(page);
  leavePage = () => {
    page.left = true;
    if (page.stopFeed) page.stopFeed();
    clearTimeout(page.refreshTimer);
  };
  loadTrail(page).then(() => configureSlider(page));
  render(page);
}

function setupTabs(page) {
  const buttons = TABS.map(([id]) => document.getElementById(`tab-${id}`));
  const select = (index) => {
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === index));
      b.tabIndex = i === index ? 0 : -1;
      document.getElementById(`panel-${TABS[i][0]}`).hidden = i !== index;
    });
    page.tab = TABS[index][0];
    buttons[index].focus();
    renderTab(page);
  };
  buttons.forEach((button, index) => {
    button.addEventListener("click", () => select(index));
    button.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: 1, ArrowLeft: -1 };
      if (event.key in moves) {
        event.preventDefault();
        select((index + moves[event.key] + buttons.length) % buttons.length);
      } else if (event.key === "Home") {
        event.preventDefault();
        select(0);
      } else if (event.key === "End") {
        event.preventDefault();
        select(buttons.length - 1);
      }
    });
  });
}

/** Every event of the plan (auditor, admin); without them the slider moves by time. */
async function loadTrail(page) {
  try {
    page.trail = await api.planEvents(page.planId);
    page.trailError = null;
  } catch (error) {
    page.trail = null;
    page.trailError = error;
  }
}

/**
 * The slider's stops: one per plan version when the trail is readable (its recorded_at is the
 * as-of time), else 100 equal steps from the plan's creation to now.
 */
function configureSlider(page) {
  const slider = document.getElementById("time");
  const note = document.getElementById("time-note");
  if (!slider) return;
  const live = page.asOf === null;
  if (page.trail && page.trail.length) {
    slider.min = "1";
    slider.max = String(page.trail.length);
    if (live) slider.value = slider.max;
    note.textContent = "Each step of the slider is one version of the plan; the whole page shows the plan as recorded then.";
  } else {
    slider.min = "0";
    slider.max = "100";
    if (live) slider.value = "100";
    note.textContent = page.trailError
      ? `The slider moves by time in 100 steps (versions need the plan's events: ${page.trailError.detail}).`
      : "";
  }
}

function sliderTime(page, value) {
  const slider = document.getElementById("time");
  if (Number(value) >= Number(slider.max)) return null;
  if (page.trail && page.trail.length) return page.trail[Number(value) - 1].recorded_at;
  const created = page.state && page.state.created_at ? Date.parse(page.state.created_at) : Date.now();
  const now = Date.now();
  return new Date(created + ((now - created) * Number(value)) / 100).toISOString();
}

function setupSlider(page) {
  const slider = document.getElementById("time");
  const liveButton = document.getElementById("live");
  let timer = null;
  slider.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      page.asOf = sliderTime(page, slider.value);
      liveButton.disabled = page.asOf === null;
      render(page);
    }, 120);
  });
  liveButton.addEventListener("click", () => {
    slider.value = slider.max;
    page.asOf = null;
    liveButton.disabled = true;
    render(page);
    slider.focus();
  });
}

function readParams(page, extra = {}) {
  const live = page.asOf === null;
  return { as_of: page.asOf, min_position: live ? page.minPosition : null, bookmark: live ? page.bookmark : null, ...extra };
}

/** Loads and renders the plan head, the time readout and the open tab. */
async function render(page) {
  const head = document.getElementById("plan-head");
  const out = document.getElementById("time-out");
  const seq = ++page.seq;
  try {
    const body = await api.get(page.path, page.asOf ? { as_of: page.asOf } : {});
    if (seq !== page.seq) return; // a later render is under way
    page.state = body.state;
    page.version = body.version;
    const s = body.state;
    head.innerHTML = `<h1>${esc(s.title)}</h1><p class="sub">${esc(page.planId)}${s.outcome ? " · " + esc(s.outcome) : ""} · ${esc(s.starts_on)} → ${esc(s.ends_on)} · check-ins every ${s.checkin_cadence_days} d${s.archived_at ? " · archived" : ""}</p>`;
    out.innerHTML = page.asOf
      ? `as of <time>${esc(when(page.asOf))}</time> · <span id="as-of-version">version ${body.version}</span> · position ${body.as_of_position ?? "—"}${cluster ? " of its partition" : ""}`
      : `live · <span id="as-of-version">version ${body.version}</span>`;
  } catch (error) {
    if (seq !== page.seq || signedOut(error)) return;
    head.innerHTML = `<h1>${esc(page.planId)}</h1>${problem(error)}`;
    out.textContent = "";
  }
  await renderTab(page);
}

/**
 * Renders the open tab. Views draw into a detached copy of the panel, which replaces the panel
 * only if no later render started meanwhile (answers to an older slider position come late).
 */
async function renderTab(page) {
  const element = document.getElementById(`panel-${page.tab}`);
  if (!element) return;
  const seq = page.seq;
  const tab = page.tab;
  const views = { goals: goalsView, accountability: accountabilityView, agility: agilityView, drift: driftView, audit: auditView };
  const draft = document.createElement("div");
  await views[tab](page, draft);
  if (seq !== page.seq || tab !== page.tab) return;
  element.replaceChildren(...draft.childNodes);
  if (tab === "goals" && page.firstRender) {
    page.firstRender = false;
    performance.mark("planledger-plan-rendered");
  }
  if (tab === "audit") bindAudit(page);
  if (tab === "drift") bindDrift(page, element);
}

// ----- Goals: tree, progress bars, statuses, owners, staleness, a chart per goal

async function goalsView(page, element) {
  const [progress, accountability, history] = await Promise.allSettled([
    api.get(`${page.path}/progress`, readParams(page)),
    api.get(`${page.path}/accountability`, readParams(page)),
    api.get(`${page.path}/progress/history`, readParams(page)),
  ]);
  if (progress.status === "rejected") {
    if (signedOut(progress.reason)) return;
    element.innerHTML = problem(progress.reason);
    return;
  }
  const p = progress.value;
  const owners = new Map();
  if (accountability.status === "fulfilled") {
    for (const g of accountability.value.goals) owners.set(g.goal_id, g);
  }
  const rows = goalTree(p.goals).map(({ goal: g, depth }) => {
    const a = owners.get(g.goal_id) || {};
    const bar = `<div class="bar" role="img" aria-label="progress ${pct(g.progress)}, expected ${pct(g.expected_progress)}"><div class="fill" style="width:${Math.round((g.progress || 0) * 100)}%"></div><div class="expected" style="left:${Math.round(g.expected_progress * 100)}%"></div></div>`;
    const target = g.target === null || g.target === undefined ? "—" : `${num(g.current_value ?? null)} / <span class="target">${num(g.target)}</span>${g.baseline_target !== null && g.baseline_target !== undefined && g.baseline_target !== g.target ? `<div class="sub">baseline ${num(g.baseline_target)}</div>` : ""}`;
    return `<tr data-goal="${esc(g.goal_id)}"><th scope="row" style="padding-left:${0.5 + depth * 1.25}rem">${esc(g.title)}<div class="sub">${esc(g.goal_id)} · due ${esc(g.due)}${g.outcome ? " · " + esc(g.outcome) : ""}</div></th>
<td class="progress-cell">${bar}<div class="sub"><span class="progress-value">${pct(g.progress)}</span> of ${pct(g.expected_progress)} expected${g.goalpost_effect ? ` · goalpost ${pct(g.goalpost_effect)}` : ""}</div></td>
<td>${status(g.status)}</td><td>${status(g.reported_status)}${g.status_mismatch && g.status_mismatch !== "aligned" ? `<div class="sub">${esc(g.status_mismatch)}</div>` : ""}</td>
<td class="n">${pct(g.confidence)}</td><td>${esc(a.accountable || "—")}</td><td class="n">${days(a.staleness_days)}</td>
<td class="n goal-target">${target}</td><td class="goal-forecast">${forecastCell(g.forecast)}</td></tr>`;
  });
  const summary = `<div class="cards">${card("Plan progress", pct(p.progress), p.baseline_label ? `vs baseline ${p.baseline_label}: ${pct(p.progress_vs_baseline)}` : "")}${card("Expected", pct(p.expected_progress))}${card("Status", status(p.status))}${card("SPI", num(p.spi))}${card("Schedule slip", days(p.schedule_slip_days))}${backtestCard(p.forecast_backtest)}</div>`;
  const charts =
    history.status === "fulfilled"
      ? `<h2>Progress over time</h2><div class="charts">${history.value.goals.map(goalChart).join("")}</div>`
      : problem(history.reason);
  element.innerHTML = `${summary}${table(["Goal", "Progress vs expected", "Computed", "Reported", "Confidence", "Accountable", "Staleness", "Value / target", "Forecast"], rows, "goals")}
${accountability.status === "rejected" ? problem(accountability.reason) : ""}${charts}`;
}

/** A goal's completion forecast: P50 and P85 dates, the chance by the due date. */
function forecastCell(f) {
  if (!f) return "—";
  if (f.kind === "not_enough_data") return `<span class="sub">not enough data (${f.points} of ${f.needed} check-ins)</span>`;
  if (f.kind === "reached") return `reached <span class="forecast-reached">${esc(f.on)}</span>`;
  return `P50 <span class="forecast-p50">${esc(f.p50 || "never")}</span><div class="sub">P85 <span class="forecast-p85">${esc(f.p85 || "never")}</span> · ${pct(f.probability_by_due)} by due</div>`;
}

/** The plan's forecast back-test: how often the P85 date held for closed goals. */
function backtestCard(b) {
  if (!b) return "";
  return card("Forecast P85 coverage", pct(b.p85_coverage), `${b.p85_held} of ${b.p85_judged} dates held (closed goals)`);
}

/** Goals in tree order (parents before their children) with their depth. */
function goalTree(goals) {
  const ids = new Set(goals.map((g) => g.goal_id));
  const children = new Map();
  for (const g of goals) {
    const parent = g.parent_goal_id && ids.has(g.parent_goal_id) ? g.parent_goal_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(g);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const g of children.get(parent) || []) {
      out.push({ goal: g, depth });
      if (depth < 32) walk(g.goal_id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

function goalChart(g) {
  const first = g.points.length && g.points[0].date < g.start ? g.points[0].date : g.start;
  const last = g.points.length ? g.points[g.points.length - 1].date : g.start;
  const to = last > g.due ? last : g.due;
  const series = [
    {
      label: "progress (current target)",
      color: PALETTE.blue,
      points: g.points.map((p) => ({ date: p.date, y: p.progress, mark: p.check_ins.length ? `check-in ${p.date}: value ${num(p.value)}, progress ${pct(p.progress)}` : null })),
    },
    { label: "expected", color: PALETTE.orange, dash: "2 4", points: g.points.map((p) => ({ date: p.date, y: p.expected_progress })).concat([{ date: g.due, y: 1 }]) },
  ];
  if (g.points.some((p) => p.progress_vs_baseline !== null && p.progress_vs_baseline !== undefined)) {
    series.push({ label: "progress (baseline target)", color: PALETTE.vermillion, dash: "7 4", points: g.points.map((p) => ({ date: p.date, y: p.progress_vs_baseline })) });
  }
  const events = g.adjustments
    .filter((a) => a.target || a.due)
    .map((a) => ({
      date: a.date,
      label: [a.target ? `target ${num(a.target.before)} → ${num(a.target.after)}` : "", a.due ? `due ${a.due.before} → ${a.due.after}` : ""].filter(Boolean).join(", ") + ` (${a.reason})`,
    }));
  return `<div class="chart-box" data-goal="${esc(g.goal_id)}">${lineChart({
    title: `${g.title}: actual vs expected progress`,
    from: first,
    to,
    series,
    events,
    yLabel: "progress",
    markLegend: "check-in",
    eventLegend: "target or due changed",
  })}</div>`;
}

// ----- Accountability

async function accountabilityView(page, element) {
  await panel(element, async () => {
    const a = await api.get(`${page.path}/accountability`, readParams(page));
    const people = a.people.map(
      (p) => `<tr><th scope="row">${esc(p.person)}</th><td>${esc(p.roles.map((r) => r.role + (r.goal_id ? " " + r.goal_id : r.step_id ? " " + r.step_id : "")).join(", "))}</td>
<td class="n">${pct(p.punctuality)}<div class="sub">${p.slots_on_time}/${p.slots_due} slots</div></td><td class="n">${pct(p.say_do_ratio)}<div class="sub">${p.steps_done_on_time}/${p.steps_due} steps</div></td>
<td class="n">${p.overdue_steps}</td><td class="n">${p.open_blockers}</td><td class="n">${num(p.brier_score, 3)}<div class="sub">${p.brier_goals} closed goals</div></td><td class="n">${days(p.staleness_days)}</td></tr>`,
    );
    const blockers = a.blockers.map((b) => `<li><strong>${esc(b.goal_id)}</strong>: ${esc(b.blocker)}</li>`).join("");
    const overdue = a.overdue.map((o) => `<li><strong>${esc(o.step_id)}</strong> (${esc(o.goal_id)}): due ${esc(o.due)}, ${o.days_overdue} d overdue</li>`).join("");
    return `<div class="cards">${card("Punctuality", pct(a.punctuality), `${a.slots_on_time}/${a.slots_due} check-in slots on time`)}${card("Say/do", pct(a.say_do_ratio), `${a.steps_done_on_time}/${a.steps_due} steps done by their due date`)}${card("Overdue steps", a.overdue_steps)}${card("Ownership", pct(a.ownership_coverage), "goals with exactly one accountable")}${card("Open blockers", a.open_blockers)}${card("Brier score", num(a.brier_score, 3), "lower is better calibrated")}</div>
<h2>People</h2>${table(["Person", "Roles", "Punctuality", "Say/do", "Overdue", "Open blockers", "Brier score", "Staleness"], people, "people")}
<div class="two"><div><h2>Open blockers</h2>${blockers ? `<ul>${blockers}</ul>` : `<p class="empty">None.</p>`}</div><div><h2>Overdue steps</h2>${overdue ? `<ul>${overdue}</ul>` : `<p class="empty">None.</p>`}</div></div>`;
  });
}

// ----- Agility

async function agilityView(page, element) {
  await panel(element, async () => {
    const a = await api.get(`${page.path}/agility`, readParams(page));
    const adjustments = [];
    for (const goal of Object.values((page.state && page.state.goals) || {})) {
      for (const adj of goal.adjustments) adjustments.push({ goal, adj });
    }
    adjustments.sort((x, y) => (x.adj.at < y.adj.at ? -1 : 1));
    const change = (label, c) => (c ? `${label} ${esc(c.before)} → ${esc(c.after)}` : "");
    const timeline = adjustments
      .map(({ goal, adj }) => `<li><time>${esc(when(adj.at))}</time> <strong>${esc(goal.title)}</strong> <span class="kinds">${esc(adj.kinds.join(", "))}</span> ${[change("target", adj.target), change("due", adj.due), change("title", adj.title), change("weight", adj.weight)].filter(Boolean).join("; ")}<div class="reason">“${esc(adj.reason)}”${adj.in_response_to_checkin ? ` <span class="sub">answering check-in ${esc(adj.in_response_to_checkin)}</span>` : ""}</div></li>`)
      .join("");
    const goals = a.goals.map(
      (g) => `<tr><th scope="row">${esc(g.goal_id)}</th><td class="n">${g.adjustments.total}</td><td class="n">${num(g.volatility)}</td><td class="n">${num(g.volatility_per_week)}</td><td class="n">${days(g.course_correction_latency_days)}</td><td class="n">${g.signals}</td><td class="n">${g.signals_never_acted_on}</td></tr>`,
    );
    const unanswered = a.unanswered.map((u) => `<li><strong>${esc(u.goal_id)}</strong>: ${status(u.status)} since ${esc(when(u.since))} (${days(u.days_open)} open)</li>`).join("");
    const k = a.adjustments;
    return `<div class="cards">${card("Adjustments", k.total, `target ${k.target} · due ${k.due} · scope ${k.scope} · weight ${k.weight}`)}${card("Volatility", num(a.volatility), a.baseline_label ? `vs baseline ${a.baseline_label} (${a.baseline_size} items)` : "no baseline")}${card("Changes per week", num(a.volatility_per_week))}${card("Course-correction latency", days(a.course_correction_latency_days), "median, signal → correction")}${card("Signals never acted on", `${a.signals_never_acted_on} / ${a.signals}`)}${card("Re-baselines", a.re_baselines)}</div>
<h2>Adjustments timeline</h2>${timeline ? `<ol class="timeline">${timeline}</ol>` : `<p class="empty">No adjustments.</p>`}
<h2>Unanswered signals</h2>${unanswered ? `<ul>${unanswered}</ul>` : `<p class="empty">None.</p>`}
<h2>Per goal</h2>${table(["Goal", "Adjustments", "Volatility", "Per week", "Latency", "Signals", "Never acted on"], goals)}`;
  });
}

// ----- Drift against a chosen baseline

async function driftView(page, element) {
  const labels = Object.keys((page.state && page.state.baselines) || {});
  if (!labels.length) {
    element.innerHTML = `<p class="empty">This plan has no baseline yet; drift is measured against one (SetBaseline).</p>`;
    return;
  }
  if (!page.baseline || !labels.includes(page.baseline)) page.baseline = labels[0];
  await panel(element, async () => {
    const d = await api.get(`${page.path}/drift`, readParams(page, { baseline: page.baseline }));
    const goals = d.goals.map(
      (g) => `<tr><th scope="row">${esc(g.goal_id)}${g.dropped ? ' <span class="sub">dropped</span>' : ""}${g.in_baseline ? "" : ' <span class="sub">added</span>'}</th><td>${esc(g.baseline_due ?? "—")} → ${esc(g.due)}</td><td class="n">${g.deadline_slip_days ?? "—"}</td>
<td class="n">${num(g.baseline_target)} → ${num(g.target)}</td><td class="n">${pct(g.target_drift)}${g.bar_lowered ? ' <span class="sub">bar lowered</span>' : ""}</td></tr>`,
    );
    const gap = d.execution_gap;
    const chart = gap.length
      ? lineChart({
          title: "Execution gap: planned (baseline) vs actual plan progress",
          from: gap[0].date,
          to: gap[gap.length - 1].date,
          series: [
            { label: "planned (baseline)", color: PALETTE.orange, dash: "2 4", points: gap.map((p) => ({ date: p.date, y: p.planned })) },
            { label: "actual", color: PALETTE.blue, points: gap.map((p) => ({ date: p.date, y: p.actual })) },
          ],
          yLabel: "plan progress",
        })
      : "";
    const items = (s) => [...s.goals, ...s.steps].map(esc).join(", ") || "none";
    return `<label for="baseline">Baseline</label> <select id="baseline">${labels.map((l) => `<option ${l === page.baseline ? "selected" : ""}>${esc(l)}</option>`).join("")}</select>
<div class="cards">${card("Deadline slip", d.deadline_slip_days === null ? "—" : `${d.deadline_slip_days} d`)}${card("Target drift", pct(d.target_drift), "negative: the bar was lowered")}${card("Scope added", items(d.scope_added))}${card("Scope removed", items(d.scope_removed))}</div>
${table(["Goal", "Due (baseline → now)", "Slip (days)", "Target (baseline → now)", "Target drift"], goals)}${chart}`;
  });
}

function bindDrift(page) {
  const select = document.getElementById("baseline");
  if (!select) return;
  select.addEventListener("change", () => {
    page.baseline = select.value;
    renderTab(page).then(() => document.getElementById("baseline")?.focus());
  });
}

// ----- Audit trail with filters

async function auditView(page, element) {
  const [restated] = await Promise.all([restatementsSection(page), page.trail ? null : loadTrail(page)]);
  if (!page.trail) {
    if (signedOut(page.trailError)) return;
    element.innerHTML = problem(page.trailError) + restated;
    return;
  }
  const limit = page.asOf ? new Date(page.asOf) : null;
  const events = limit ? page.trail.filter((e) => new Date(e.recorded_at) <= limit) : page.trail;
  const actors = [...new Set(events.map((e) => e.actor))].sort();
  const types = [...new Set(events.map((e) => e.type))].sort();
  const filters = page.auditFilters || { actor: "", type: "", from: "", to: "" };
  const option = (v, sel) => `<option value="${esc(v)}" ${v === sel ? "selected" : ""}>${esc(v)}</option>`;
  element.innerHTML = `<form id="audit-filters" class="filters"><label>Actor <select name="actor"><option value="">any</option>${actors.map((a) => option(a, filters.actor)).join("")}</select></label>
<label>Type <select name="type"><option value="">any</option>${types.map((t) => option(t, filters.type)).join("")}</select></label>
<label>From <input type="datetime-local" name="from" step="1" value="${esc(filters.from)}"></label><label>To <input type="datetime-local" name="to" step="1" value="${esc(filters.to)}"></label>
<span class="note">(local time)</span></form><p id="audit-count" class="note" aria-live="polite"></p><div id="audit-rows"></div>${restated}`;
  page.auditEvents = events;
}

/** The plan's restatements: check-ins told after the day they describe, and what they changed. */
async function restatementsSection(page) {
  const head = `<h2>Restatements</h2><p class="note">Check-ins told after the day they describe: what a reader of those days was told vs what the check-in made true (each day measured with the targets, due dates and steps in force then).</p>`;
  try {
    const r = await api.get(`${page.path}/restatements`, readParams(page));
    const rows = r.restatements.flatMap((x) => {
      // The goal and its ancestors, then the plan's own figures.
      const lines = [
        ...x.changes.map((c) => ({ ...c, of: esc(c.goal_id) })),
        ...x.plan_changes.map((c) => ({ ...c, of: "<em>the plan</em>" })),
      ];
      return lines.map(
        (c, i) => `<tr data-checkin="${esc(x.checkin_id)}">${i === 0 ? `<th scope="row" rowspan="${lines.length}">${esc(x.checkin_id)}<div class="sub">${esc(x.goal_id)} · about ${esc(x.effective_on)}, told ${esc(when(x.recorded_at))}${x.reported_by ? " by " + esc(x.reported_by) : ""} · ${x.days_late} d late</div></th>` : ""}<td>${c.of}</td><td>${esc(c.from)}${c.to !== c.from ? " → " + esc(c.to) : ""}</td><td class="n">${pct(c.progress_before)} → ${pct(c.progress_after)}</td><td>${status(c.status_before)} → ${status(c.status_after)}</td></tr>`,
      );
    });
    return head + table(["Check-in", "Goal or plan", "Days", "Progress", "Status"], rows, "restatements");
  } catch (error) {
    if (signedOut(error)) return "";
    return head + problem(error);
  }
}

function bindAudit(page) {
  const form = document.getElementById("audit-filters");
  if (!form) return;
  const events = page.auditEvents;
  const draw = async () => {
    const data = new FormData(form);
    page.auditFilters = Object.fromEntries(data.entries());
    const shown = await api.auditTrail(page.planId, {
      actor: data.get("actor"),
      type: data.get("type"),
      from: data.get("from") ? new Date(data.get("from")) : null,
      to: data.get("to") ? new Date(data.get("to")) : null,
    }, events);
    document.getElementById("audit-count").textContent = `${shown.length} of ${events.length} events`;
    document.getElementById("audit-rows").innerHTML = table(
      ["Version", cluster ? "Position (of its partition)" : "Position", "Recorded", "Actor", "Type", "Hash"],
      shown.map((e) => `<tr><td class="n">${e.version}</td><td class="n">${e.position}</td><td>${esc(when(e.recorded_at))}</td><td class="actor">${esc(e.actor)}</td><td>${esc(e.type)}</td><td><code class="hash" title="previous ${esc(e.prev_hash)}">${esc(e.hash)}</code></td></tr>`),
      "audit",
    );
  };
  form.addEventListener("change", draw);
  form.addEventListener("submit", (event) => event.preventDefault());
  draw();
}

// ---------------------------------------------------------------------------------------------
// Live activity feed (the log's server-sent events)

async function startFeed(page) {
  const feed = document.getElementById("feed");
  const note = document.getElementById("feed-state");
  let start;
  try {
    start = await api.feedStart();
  } catch (error) {
    if (signedOut(error)) return;
    note.innerHTML = problem(error);
    return;
  }
  if (page.left) return;
  const stream = `${api.claims()?.tenant}/${page.planId}`;
  const show = (e) => {
    const item = document.createElement("li");
    item.className = e.stream === stream ? "this-plan" : "";
    const partition = e.partition === undefined ? "" : ` · partition ${e.partition}`;
    item.innerHTML = `<span class="feed-type">${esc(e.type)}</span> <span class="sub">${esc(e.stream.split("/").slice(1).join("/"))} · v${e.version}${partition} · ${esc(e.actor)} · ${esc(when(e.recorded_at).slice(11))}</span>`;
    feed.prepend(item);
    while (feed.children.length > 50) feed.lastChild.remove();
  };
  // A cluster's recent events come with the start (oldest first), already on the page.
  start.recent.forEach(show);
  page.stopFeed = api.tail(
    start,
    (e, id) => {
      show(e);
      // The recent events replayed at the start are already on the page.
      if (e.stream === stream && start.isNew(e)) planChanged(page, e, start.cluster ? id : null);
    },
    (error) => {
      if (signedOut(error)) return;
      note.innerHTML = problem(error);
    },
    () => {
      note.textContent = start.cluster
        ? "Connected: new events of every partition appear here as they are recorded."
        : "Connected: new events appear here as they are recorded.";
    },
  );
}

/**
 * A new event of this plan: extend the trail, and re-render when showing the live state, read
 * after the event (a single node's position, or a cluster feed's cursor as the bookmark).
 */
function planChanged(page, envelope, cursor) {
  if (page.trail && !page.trail.some((e) => e.version === envelope.version)) {
    page.trail.push(envelope);
    page.trail.sort((a, b) => a.version - b.version);
  }
  configureSlider(page);
  if (page.asOf !== null) return;
  if (cursor) page.bookmark = cursor;
  else page.minPosition = Math.max(page.minPosition || 0, envelope.position);
  clearTimeout(page.refreshTimer);
  page.refreshTimer = setTimeout(() => render(page), 150);
}

// ---------------------------------------------------------------------------------------------
// Start

function boot() {
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (m) {
    api.setToken(decodeURIComponent(m[1]));
    const plan = location.hash.match(/[#&]plan=([^&]+)/);
    // Drop the token from the address bar and the history.
    history.replaceState(null, "", location.pathname + (plan ? `#/plans/${plan[1]}` : "#/"));
  }
  document.getElementById("sign-out").addEventListener("click", () => {
    api.signOut();
    location.hash = "#/";
    route();
  });
  window.addEventListener("hashchange", route);
  api.deployment().then((d) => {
    cluster = d.mode === "cluster";
    route();
  });
}

boot();
