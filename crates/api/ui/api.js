// Talking to the Planledger API: the bearer token, problem+json errors, the plan's audit trail
// and the live tail of the log. Same origin only; the token never goes into a URL.

const TOKEN_KEY = "planledger.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The token's claims (sub, tenant, roles, exp), for display only; the server decides. */
export function claims() {
  const raw = token();
  if (!raw) return null;
  try {
    const part = raw.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

/** An API error carrying the problem's status, code and detail. */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: described below from the status alone.
  }
  const detail =
    (body && (body.detail || body.title)) ||
    `the service answered ${response.status} ${response.statusText}`;
  return new ApiError(response.status, (body && body.code) || "http_" + response.status, detail);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

/** Query string from an object, leaving out null and undefined values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

/** GET a JSON resource; rejects with an ApiError holding the problem's detail. */
export async function get(path, params) {
  let response;
  try {
    response = await fetch(path + query(params), { headers: headers() });
  } catch (e) {
    throw new ApiError(0, "network", `the service did not answer (${e.message}); is it running?`);
  }
  if (!response.ok) throw await problemOf(response);
  return response.json();
}

/** POST a command to a plan. */
export async function command(planId, type, data) {
  const response = await fetch(`/v1/plans/${encodeURIComponent(planId)}/commands`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ type, data }),
  });
  if (!response.ok) throw await problemOf(response);
  return response.json();
}

/** Every event of a plan, oldest first (pages of 1000, at most 20 pages). */
export async function planEvents(planId) {
  const events = [];
  let from = 1;
  for (let page = 0; page < 20 && from; page++) {
    const body = await get(`/v1/plans/${encodeURIComponent(planId)}/events`, {
      from_version: from,
      limit: 1000,
    });
    events.push(...body.events);
    from = body.next_from_version;
  }
  return events;
}

/**
 * The audit trail under filters {actor, type, from, to} (times as Date or null).
 *
 * The filters are applied here, over the fetched trail; this is the one function to change
 * when the server filters the trail itself.
 */
export async function auditTrail(planId, filters, fetched) {
  const events = fetched || (await planEvents(planId));
  return events.filter((e) => {
    if (filters.actor && e.actor !== filters.actor) return false;
    if (filters.type && e.type !== filters.type) return false;
    const at = new Date(e.recorded_at);
    if (filters.from && at < filters.from) return false;
    if (filters.to && at > filters.to) return false;
    return true;
  });
}

let settings = null;

/**
 * What the process serving the page says of its deployment (`/ui/config.json`, no token):
 * `{mode: "single"}`, or `{mode: "cluster", partitions}` on a cluster's writer node.
 */
export function deployment() {
  if (!settings) {
    settings = fetch("/ui/config.json", { headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : { mode: "single" }))
      .catch(() => ({ mode: "single" }));
  }
  return settings;
}

/**
 * Where the live feed starts and how it resumes.
 *
 * One log: 20 positions before its end, so the recent activity is shown too (`isNew` tells the
 * events recorded after the page asked). A cluster: the tenant-wide feed's newest 20 events
 * across partitions (`?recent=20`: each partition's last 20 positions, merged by time), shown
 * at once as `recent`, then live from that page's `next_cursor`, resumed with the cursor each
 * event carries as its id.
 */
export async function feedStart() {
  if ((await deployment()).mode === "cluster") {
    const page = await get("/v1/events", { recent: 20 });
    return {
      cluster: true,
      recent: page.events,
      resume: { cursor: page.next_cursor },
      after: (envelope, id) => ({ cursor: id }),
      isNew: () => true,
    };
  }
  const page = await get("/v1/events", { from_position: Number.MAX_SAFE_INTEGER, limit: 1 });
  const last = page.last_position;
  return {
    cluster: false,
    recent: [],
    resume: { from_position: Math.max(1, last - 19) },
    after: (envelope) => ({ from_position: envelope.position + 1 }),
    isNew: (envelope) => envelope.position > last,
  };
}

/**
 * Tails the log from `start` (see feedStart) with server-sent events read through fetch
 * (EventSource cannot send the Authorization header). Calls onEvent(envelope, id) per event and
 * onError(ApiError) when the stream fails; reconnects after a dropped connection after the last
 * event seen. Returns a function that stops it.
 */
export function tail(start, onEvent, onError, onOpen) {
  const stop = new AbortController();
  let next = start.resume;
  async function run() {
    while (!stop.signal.aborted) {
      try {
        const response = await fetch("/v1/events" + query(next), {
          headers: headers({ Accept: "text/event-stream" }),
          signal: stop.signal,
        });
        if (!response.ok) {
          onError(await problemOf(response));
          return;
        }
        if (onOpen) onOpen();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, end).split("\n");
            buffer = buffer.slice(end + 2);
            const field = (name) =>
              frame
                .filter((line) => line.startsWith(name + ":"))
                .map((line) => line.slice(name.length + 1).replace(/^ /, ""))
                .join("\n");
            const data = field("data");
            if (!data) continue;
            const envelope = JSON.parse(data);
            const id = field("id");
            next = start.after(envelope, id);
            onEvent(envelope, id);
          }
        }
      } catch (e) {
        if (stop.signal.aborted) return;
        onError(new ApiError(0, "network", `the live feed was cut (${e.message}); reconnecting`));
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  run();
  return () => stop.abort();
}
