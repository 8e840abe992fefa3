// punchcard's live page: a trainer's clients with what is left of each package, and this
// week's calendar, kept current by subscriptions (live.js). Plain JavaScript, no build.
//
// What is on screen is only ever what the server said: a button sends its mutation over
// HTTP and changes nothing itself; the subscriptions bring the new count to every tab,
// this one included. Each stream remembers its last cursor, so a reconnect resumes from
// it (the server sends exactly what was missed), and rows are kept by id, so nothing can
// appear twice.
"use strict";

const TOKEN_KEY = "punchcard.token";
const CLIENTS = `query($after: String) {
  clients(first: 100, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } }
}`;
const PURCHASE_FIELDS = "id sessionsTotal sessionsUsed sessionsRemaining status expiresAt revision";
const CLIENT_UPDATED = `subscription($id: ID!, $after: String) {
  clientUpdated(clientId: $id, after: $after) {
    cursor snapshot client { id name }
    purchases { ${PURCHASE_FIELDS} }
    entries { id delta sessionsUsedAfter source actor reason createdAt purchase { id } }
  }
}`;
const BOOKING_FIELDS = `id startsAt endsAt status charged unpaid lateCancel completedBy
  client { id name } purchase { id sessionsRemaining revision }`;
const BOOKINGS_CHANGED = `subscription($from: DateTime!, $to: DateTime!, $after: String) {
  bookingsChanged(from: $from, to: $to, after: $after) {
    cursor snapshot bookings { ${BOOKING_FIELDS} }
  }
}`;
const ACTIONS = {
  use: {
    label: "Use 1 Session",
    retry: true,
    query: `mutation($id: ID!, $key: String) {
      useSession(purchaseId: $id, idempotencyKey: $key) { ${PURCHASE_FIELDS} } }`,
  },
  reinstate: {
    label: "Reinstate",
    retry: true,
    query: `mutation($id: ID!, $key: String) {
      releaseSession(purchaseId: $id, idempotencyKey: $key) { ${PURCHASE_FIELDS} } }`,
  },
  complete: {
    label: "Complete",
    retry: true,
    query: `mutation($id: ID!, $key: String) {
      completeBooking(id: $id, idempotencyKey: $key) { id status } }`,
  },
  noshow: {
    label: "No-show",
    query: `mutation($id: ID!) { markNoShow(id: $id) { id status } }`,
  },
  cancel: {
    label: "Cancel",
    query: `mutation($id: ID!) { cancelBooking(id: $id) { id status } }`,
  },
  reopen: {
    label: "Reopen",
    query: `mutation($id: ID!) { reopenBooking(id: $id) { id status } }`,
  },
};
const REFUSALS = {
  NO_SESSIONS_REMAINING: "No sessions left in this package.",
  NOTHING_TO_RELEASE: "Nothing to reinstate: no session of this package is used.",
  PURCHASE_EXPIRED: "This package has expired.",
  PURCHASE_CANCELLED: "This package was cancelled.",
  INVALID_TRANSITION: "That cannot be done to this booking in its current state.",
  NOT_FOUND: "Not found (deleted, or not yours).",
  UNAUTHENTICATED: "The token was refused: log in again.",
  FORBIDDEN: "This token may only read.",
  SERVICE_UNAVAILABLE: "The server is busy: try again.",
};

const $ = (id) => document.getElementById(id);
const state = {
  token: null,
  live: null,
  clients: new Map(), // client id -> { name, cursor, purchases: Map(id -> purchase), stop }
  calendar: { cursor: null, range: null, day: null, bookings: new Map(), stop: null },
  seenEntries: new Set(),
};

// --- talking to the server ---------------------------------------------------------

class Refusal extends Error {
  constructor(error) {
    const code = (error.extensions && error.extensions.code) || "ERROR";
    super(REFUSALS[code] || error.message);
    this.code = code;
  }
}

async function graphql(query, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer " + state.token },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors && body.errors.length) throw new Refusal(body.errors[0]);
  return body.data;
}

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // works on plain http too
  return "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// One click, one mutation. A network failure is retried with the same idempotency key
// (a retry can never count twice); a refusal is shown as it is.
async function act(kind, id, button) {
  const action = ACTIONS[kind];
  const variables = { id, key: action.retry ? newKey() : undefined };
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await graphql(action.query, variables);
        clearNotice();
        return;
      } catch (error) {
        if (error instanceof Refusal || !action.retry || attempt >= 3) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
      }
    }
  } catch (error) {
    if (error instanceof Refusal) showNotice(`${error.message} (${error.code})`);
    else showNotice("Could not reach the server: nothing was changed. Try again when it is back.");
  } finally {
    button.removeAttribute("aria-busy");
    button.disabled = false;
  }
}

// --- live data ---------------------------------------------------------------------

function start(token) {
  state.token = token;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
  state.live = new LiveSocket({
    url,
    token,
    onState: showConnection,
    onFatal: (message) => logout(message),
  });
  graphql("{ me { id name } }").then(
    (data) => ($("trainer").textContent = data.me.name || data.me.id),
    (error) => error instanceof Refusal && error.code === "UNAUTHENTICATED" && logout(error.message)
  );
  watchCalendar();
  loadClients();
  setInterval(() => {
    if (weekRange().from !== state.calendar.range.from) watchCalendar(); // a new week
    else if (todayKey() !== state.calendar.day) {
      state.calendar.day = todayKey(); // a new day: "Today" moves on
      renderCalendar();
    }
  }, 60000);
}

// The client list is read over HTTP (again after every reconnect, to pick up new
// clients); each client's packages then come from its own clientUpdated stream.
async function loadClients() {
  let after = null;
  try {
    do {
      const page = (await graphql(CLIENTS, { after })).clients;
      page.nodes.forEach((node) => watchClient(node.id));
      after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
    } while (after);
  } catch (error) {
    if (error instanceof Refusal) showNotice(`${error.message} (${error.code})`);
  }
}

function watchClient(id) {
  if (state.clients.has(id)) return;
  const client = { id, name: "", cursor: null, purchases: new Map() };
  state.clients.set(id, client);
  client.stop = state.live.subscribe(
    CLIENT_UPDATED,
    () => ({ id, after: client.cursor }), // read at every (re)subscribe: resume from here
    {
      next: ({ clientUpdated: update }) => {
        if (update.snapshot) client.purchases.clear();
        client.name = update.client.name;
        update.purchases.forEach((p) => client.purchases.set(p.id, p));
        update.entries.forEach((entry) => addEntry(client, entry));
        client.cursor = update.cursor;
        renderClients();
        renderCalendar(); // the "n left" of this client's bookings
      },
      error: (errors) => showNotice(errorText(errors)),
    }
  );
}

function watchCalendar() {
  const calendar = state.calendar;
  if (calendar.stop) calendar.stop();
  calendar.range = weekRange();
  calendar.day = todayKey();
  calendar.cursor = null;
  calendar.bookings.clear();
  calendar.stop = state.live.subscribe(
    BOOKINGS_CHANGED,
    () => ({ ...calendar.range, after: calendar.cursor }),
    {
      next: ({ bookingsChanged: change }) => {
        if (change.snapshot) calendar.bookings.clear();
        change.bookings.forEach((b) => calendar.bookings.set(b.id, b));
        calendar.cursor = change.cursor;
        renderCalendar();
      },
      error: (errors) => showNotice(errorText(errors)),
    }
  );
}

function addEntry(client, entry) {
  if (state.seenEntries.has(entry.id)) return; // never shown twice
  state.seenEntries.add(entry.id);
  const item = document.createElement("li");
  item.dataset.entry = entry.id;
  item.dataset.testid = "entry";
  const what = entry.delta > 0 ? "used a session"
    : entry.delta < 0 ? "got a session back" : "a booking took or gave back a hold";
  const when = new Date(entry.createdAt).toLocaleTimeString([], { timeStyle: "short" });
  item.textContent = `${when} ${client.name} ${what} (${entry.source.toLowerCase()}, ` +
    `${entry.sessionsUsedAfter} used)`;
  const list = $("activity");
  list.prepend(item);
  while (list.children.length > 50) list.lastElementChild.remove();
}

// --- rendering (rows are kept by id and updated in place, so focus stays put) ---------

function renderClients() {
  const body = $("clients-body");
  const rows = [];
  const clients = [...state.clients.values()].filter((c) => c.name);
  clients.sort((a, b) => a.name.localeCompare(b.name));
  for (const client of clients) {
    for (const p of client.purchases.values()) rows.push(purchaseRow(client, p));
  }
  place(body, rows);
  $("clients-empty").hidden = rows.length > 0;
}

function purchaseRow(client, p) {
  const row = keyed("purchase-" + p.id, "tr", (tr) => {
    tr.innerHTML = `<th scope="row" class="name"></th><td class="count"></td>
      <td class="status"></td><td class="expires"></td><td class="actions"></td>`;
    const count = tr.querySelector(".count");
    count.innerHTML = `<span class="remaining"></span> of <span class="total"></span> left`;
    count.querySelector(".remaining").dataset.testid = "remaining-" + p.id;
    tr.querySelector(".actions").append(button("use", p.id), button("reinstate", p.id));
  });
  row.querySelector(".name").textContent = client.name;
  row.querySelector(".remaining").textContent = p.sessionsRemaining;
  row.querySelector(".total").textContent = p.sessionsTotal;
  row.querySelector(".status").textContent = p.status.replace("_", " ").toLowerCase();
  row.querySelector(".expires").textContent = p.expiresAt ? day(new Date(p.expiresAt)) : "never";
  row.classList.toggle("empty", p.sessionsRemaining === 0);
  for (const b of row.querySelectorAll("button")) {
    b.setAttribute("aria-label", `${ACTIONS[b.dataset.kind].label}: ${client.name}`);
  }
  return row;
}

function renderCalendar() {
  const today = state.calendar.day;
  const bookings = [...state.calendar.bookings.values()];
  bookings.sort((a, b) => a.startsAt.localeCompare(b.startsAt) || a.id.localeCompare(b.id));
  const todays = bookings.filter((b) => dayKey(new Date(b.startsAt)) === today);
  place($("today-body"), todays.map(bookingRow));
  $("today-empty").hidden = todays.length > 0;
  const week = $("week");
  const others = bookings.filter((b) => dayKey(new Date(b.startsAt)) !== today);
  const days = new Map();
  for (const b of others) {
    const key = dayKey(new Date(b.startsAt));
    if (!days.has(key)) days.set(key, []);
    days.get(key).push(b);
  }
  const sections = [...days].map(([key, list]) => {
    const section = keyed("day-" + key, "section", (s) => {
      s.innerHTML = `<h3></h3><table class="calendar"><tbody></tbody></table>`;
      s.querySelector("h3").textContent = day(new Date(list[0].startsAt), true);
    });
    place(section.querySelector("tbody"), list.map(bookingRow));
    return section;
  });
  place(week, sections);
  $("week-empty").hidden = others.length > 0;
}

function bookingRow(b) {
  const row = keyed("booking-" + b.id, "tr", (tr) => {
    tr.dataset.booking = b.id;
    tr.innerHTML = `<td class="time"></td><th scope="row" class="name"></th>
      <td><span class="state"></span> <span class="note"></span></td><td class="actions"></td>`;
    tr.querySelector(".state").dataset.testid = "state-" + b.id;
    const actions = tr.querySelector(".actions");
    for (const kind of ["complete", "noshow", "cancel", "reopen"]) actions.append(button(kind, b.id));
  });
  const starts = new Date(b.startsAt);
  const ends = new Date(b.endsAt);
  row.querySelector(".time").textContent = `${clock(starts)}–${clock(ends)}`;
  row.querySelector(".name").textContent = b.client.name;
  row.querySelector(".state").textContent = b.status.replace("_", "-").toLowerCase();
  row.querySelector(".state").className = "state " + b.status.toLowerCase();
  const notes = [];
  if (b.charged) notes.push("charged");
  if (b.unpaid) notes.push("unpaid");
  if (!b.purchase) notes.push("pay as you go");
  else notes.push(`${latest(b.purchase).sessionsRemaining} left`);
  row.querySelector(".note").textContent = notes.join(" · ");
  const confirmed = b.status === "CONFIRMED";
  for (const button of row.querySelectorAll("button")) {
    const busy = button.getAttribute("aria-busy") === "true";
    button.hidden = (button.dataset.kind === "reopen") === confirmed;
    button.disabled = busy;
    button.setAttribute("aria-label", `${ACTIONS[button.dataset.kind].label}: ${b.client.name} ` +
      `${day(starts)} ${clock(starts)}`);
  }
  return row;
}

// A booking's package as last heard of: its clientUpdated stream moves on with every
// session used, while the calendar hears of it only when the booking itself changes.
function latest(purchase) {
  for (const client of state.clients.values()) {
    const known = client.purchases.get(purchase.id);
    if (known && known.revision > purchase.revision) return known;
  }
  return purchase;
}

function button(kind, id) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = ACTIONS[kind].label;
  b.dataset.kind = kind;
  b.dataset.testid = `${kind}-${id}`;
  b.addEventListener("click", () => act(kind, id, b));
  return b;
}

const elements = new Map();
function keyed(key, tag, build) {
  let el = elements.get(key);
  if (!el) {
    el = document.createElement(tag);
    build(el);
    elements.set(key, el);
  }
  return el;
}

// Put `children` into `parent` in order, moving only what is out of place.
function place(parent, children) {
  children.forEach((child, i) => {
    if (parent.children[i] !== child) parent.insertBefore(child, parent.children[i] || null);
  });
  while (parent.children.length > children.length) parent.lastElementChild.remove();
}

// --- times: the browser's own time zone ----------------------------------------------

function weekRange() {
  const now = new Date();
  const monday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - ((now.getDay() + 6) % 7));
  const next = new Date(monday.getFullYear(), monday.getMonth(), monday.getDate() + 7);
  return { from: monday.toISOString(), to: next.toISOString() };
}
const pad = (n) => String(n).padStart(2, "0");
const dayKey = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const todayKey = () => dayKey(new Date());
const clock = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const day = (d, long) =>
  d.toLocaleDateString([], long ? { weekday: "long", day: "numeric", month: "long" }
    : { day: "numeric", month: "short" });

// --- login, notices, connection --------------------------------------------------------

function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = false;
}
function clearNotice() {
  $("notice").hidden = true;
  $("notice").textContent = "";
}
function errorText(errors) {
  const error = Array.isArray(errors) ? errors[0] : errors;
  const refusal = new Refusal(error || { message: "unknown error" });
  return `${refusal.message} (${refusal.code})`;
}

function showConnection(status, retryMs) {
  const el = $("connection");
  el.dataset.state = status;
  el.textContent = {
    connecting: "Connecting…",
    live: "Live",
    offline: `Offline: retrying in ${Math.ceil((retryMs || 0) / 1000)} s`,
    closed: "Signed out",
  }[status];
  if (status === "live" && state.clients.size) loadClients(); // clients added meanwhile
}

function logout(message) {
  try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
  location.hash = "";
  if (message) sessionStorage.setItem("punchcard.notice", message);
  location.reload();
}

function login(token) {
  token = token.trim().replace(/^Bearer\s+/i, "");
  if (!token) return;
  try { localStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode */ }
  start(token);
}

function boot() {
  const left = sessionStorage.getItem("punchcard.notice");
  if (left) {
    sessionStorage.removeItem("punchcard.notice");
    showNotice(left);
  }
  $("logout").addEventListener("click", () => logout());
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    login($("token-input").value);
  });
  // Another tab logged in or out: follow it.
  window.addEventListener("storage", (event) => {
    if (event.key === TOKEN_KEY && event.newValue !== state.token) location.reload();
  });
  fetch("/graphiql", { method: "HEAD" }).then((r) => ($("graphiql-link").hidden = !r.ok), () => {});
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    history.replaceState(null, "", location.pathname + location.search); // out of sight
    return login(decodeURIComponent(match[1]));
  }
  let saved = null;
  try { saved = localStorage.getItem(TOKEN_KEY); } catch (e) { /* private mode */ }
  if (saved) start(saved);
  else $("login").hidden = false;
}

boot();
