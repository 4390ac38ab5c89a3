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

/** The last position of the log (the tenant's view of it). */
export async function lastPosition() {
  const page = await get("/v1/events", { from_position: Number.MAX_SAFE_INTEGER, limit: 1 });
  return page.last_position;
}

/**
 * Tails the log from `from` with server-sent events read through fetch (EventSource cannot send
 * the Authorization header). Calls onEvent(envelope) per event and onError(ApiError) when the
 * stream fails; reconnects after a dropped connection from the last position seen. Returns a
 * function that stops it.
 */
export function tail(from, onEvent, onError, onOpen) {
  const stop = new AbortController();
  let next = from;
  async function run() {
    while (!stop.signal.aborted) {
      try {
        const response = await fetch("/v1/events" + query({ from_position: next }), {
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
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = frame
              .split("\n")
              .filter((line) => line.startsWith("data:"))
              .map((line) => line.slice(5).replace(/^ /, ""))
              .join("\n");
            if (!data) continue;
            const envelope = JSON.parse(data);
            next = envelope.position + 1;
            onEvent(envelope);
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
