// Live pages: the dashboard, a job's page and a run's page follow the
// change feed (GET /api/v1/events, server-sent events) and refresh the
// parts of the page that change, without reloading it.
//
// The server renders every part marked `data-live` (by id); its
// `data-live` value is the feed to follow, starting after the last change
// the page was rendered with, so nothing between rendering and subscribing
// is lost. When changes come, the page fetches its own address again (so
// filters and paging hold: the server decides what the page shows), at
// most once per GAP, and merges each marked part into the page: nodes that
// did not change are kept, so focus, selection, scroll position and open
// <details> stay where they were. Without this script, or with the feed
// down, the page is what the server rendered, and a reload refreshes it.

const GAP = 300; // ms between two refreshes at most
const BACKOFF_FIRST = 1000;
const BACKOFF_MOST = 30000;

const regions = Array.from(document.querySelectorAll("[id][data-live]"));
// The feed; closed when the page says it will change no more (a run that
// ended renders no `data-live`).
let source = null;
let stopped = false;

// Durations of what still runs count on between refreshes, as the server
// writes them (`4s`, `2m 05s`, `1h 02m`), on the server's clock: each
// live part says when it was rendered (`data-now`).
function duration(seconds) {
  seconds = Math.max(0, seconds);
  const two = (n) => String(n).padStart(2, "0");
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${two(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${two(Math.floor((seconds % 3600) / 60))}m`;
}

let skew = 0;
function measureSkew() {
  const rendered = Date.parse(regions[0]?.dataset.now ?? "");
  if (!Number.isNaN(rendered)) skew = rendered - Date.now();
}

function tick() {
  const now = Date.now() + skew;
  for (const element of document.querySelectorAll("[data-since]")) {
    const since = Date.parse(element.dataset.since);
    if (Number.isNaN(since)) continue;
    const text = duration(Math.floor((now - since) / 1000));
    if (element.textContent !== text) element.textContent = text;
  }
}

if (regions.length > 0) {
  measureSkew();
  setInterval(tick, 1000);
}

// The key that matches an old node with its new self when rows are added
// or moved: its id, or its `data-key`.
function keyOf(node) {
  if (node.nodeType !== Node.ELEMENT_NODE) return null;
  return node.id || node.getAttribute("data-key") || null;
}

function sameKind(a, b) {
  return a.nodeType === b.nodeType && a.nodeName === b.nodeName && keyOf(a) === keyOf(b);
}

// Attributes the page sets itself, which the server's copy never has.
function ours(element, name) {
  // A <details> the reader opened or closed stays so.
  return (name === "open" && element.nodeName === "DETAILS") || name === "data-arrived";
}

function syncAttributes(from, to) {
  for (const { name } of Array.from(from.attributes)) {
    if (ours(from, name)) continue;
    if (!to.hasAttribute(name)) from.removeAttribute(name);
  }
  for (const { name, value } of Array.from(to.attributes)) {
    if (ours(from, name)) continue;
    if (from.getAttribute(name) !== value) from.setAttribute(name, value);
  }
}

// Makes `from` (in the page) look like `to` (freshly fetched), changing
// only what differs.
function morph(from, to) {
  if (from.nodeType === Node.TEXT_NODE || from.nodeType === Node.COMMENT_NODE) {
    if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
    return;
  }
  syncAttributes(from, to);
  const keyed = new Map();
  for (const child of from.childNodes) {
    const key = keyOf(child);
    if (key) keyed.set(key, child);
  }
  const kept = new Set();
  for (const child of to.childNodes) {
    const key = keyOf(child);
    if (key) kept.add(key);
  }
  let cursor = from.firstChild;
  for (const want of Array.from(to.childNodes)) {
    // Nodes that are gone are removed first, so the ones after them are
    // matched where they stand: moving a node would take its focus away.
    while (cursor && keyOf(cursor) && !kept.has(keyOf(cursor))) {
      const gone = cursor;
      cursor = cursor.nextSibling;
      from.removeChild(gone);
    }
    const key = keyOf(want);
    let match = null;
    if (key) {
      match = keyed.get(key) || null;
      if (match && !sameKind(match, want)) match = null;
      if (match) keyed.delete(key);
    } else if (cursor && sameKind(cursor, want)) {
      match = cursor;
    }
    if (match === null) {
      const added = document.importNode(want, true);
      // A row that just arrived is marked for a moment (kiln.css).
      if (added.nodeName === "TR") added.setAttribute("data-arrived", "");
      from.insertBefore(added, cursor);
      continue;
    }
    if (match === cursor) {
      cursor = cursor.nextSibling;
    } else {
      from.insertBefore(match, cursor);
    }
    morph(match, want);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    from.removeChild(cursor);
    cursor = next;
  }
}

let fetching = false;
let wanted = false;
let lastFetch = 0;
let timer = null;

// Asks for a refresh; refreshes come at most once per GAP, and changes
// that arrive during one are taken by the next.
function refreshSoon() {
  wanted = true;
  // A page in a background tab catches up once, when it is looked at.
  if (document.hidden || fetching || timer !== null) return;
  const wait = Math.max(0, lastFetch + GAP - Date.now());
  timer = setTimeout(refresh, wait);
}

async function refresh() {
  timer = null;
  if (!wanted) return;
  wanted = false;
  fetching = true;
  lastFetch = Date.now();
  try {
    const response = await fetch(location.href, {
      headers: { Accept: "text/html" },
      credentials: "same-origin",
      cache: "no-store",
    });
    // Signed out, or the page is gone: keep what is shown; a reload
    // tells the reader why.
    if (response.ok && !response.redirected) {
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of regions) {
        const next = fresh.getElementById(region.id);
        if (next) morph(region, next);
      }
      measureSkew();
      if (!regions.some((region) => region.hasAttribute("data-live"))) {
        stopped = true;
        if (source) source.close();
      }
      const title = fresh.querySelector("title");
      if (title && title.textContent !== document.title) document.title = title.textContent;
      document.dispatchEvent(new CustomEvent("kiln:refreshed"));
    }
  } catch (_) {
    // The server is away: the feed's reconnection will ask again.
  } finally {
    fetching = false;
    if (wanted) refreshSoon();
  }
}

// A background tab lets go of its feed: a browser opens at most six
// HTTP/1.1 connections to one server, and a feed holds one for as long
// as it is open, so tabs left open would keep other pages from loading.
// Shown again, it resumes after the last change it saw (which refreshes
// it if anything changed meanwhile).
const HIDDEN_GRACE = 10000; // ms before a hidden tab closes its feed
let hiddenTimer = null;
let resume = null;
document.addEventListener("visibilitychange", () => {
  clearTimeout(hiddenTimer);
  if (document.hidden) {
    hiddenTimer = setTimeout(() => {
      if (source && !stopped) {
        source.close();
        source = null;
      }
    }, HIDDEN_GRACE);
    return;
  }
  if (source === null && resume) resume();
  if (wanted) refreshSoon();
});

// Whether a change concerns this page: a paged job page (`?before=N`)
// shows runs older than run N only, so newer runs do not touch it. (The
// dashboard's `before` is a run's id, not a number: it takes them all.)
function concerns(change) {
  if (!location.pathname.startsWith("/jobs/")) return true;
  const before = Number(new URLSearchParams(location.search).get("before"));
  if (before > 0 && change.job !== undefined) {
    const number = change.kind === "run" ? change.number : change.run;
    if (number >= before) return false;
  }
  return true;
}

function follow(feed) {
  let lastId = feed.searchParams.get("after");
  let backoff = BACKOFF_FIRST;

  const open = () => {
    if (stopped) return;
    if (lastId !== null) feed.searchParams.set("after", lastId);
    const mine = new EventSource(feed.href, { withCredentials: true });
    source = mine;
    mine.addEventListener("open", () => {
      backoff = BACKOFF_FIRST;
    });
    mine.addEventListener("changes", (message) => {
      lastId = message.lastEventId || lastId;
      let changes;
      try {
        changes = JSON.parse(message.data);
      } catch (_) {
        changes = null;
      }
      if (!Array.isArray(changes) || changes.some(concerns)) refreshSoon();
    });
    // Changes were missed (the server restarted, or this page fell too
    // far behind): read the page again.
    mine.addEventListener("reset", (message) => {
      lastId = message.lastEventId || lastId;
      refreshSoon();
    });
    mine.addEventListener("error", () => {
      // The browser retries by itself (with Last-Event-ID) while the
      // source is CONNECTING; once it gave up (an error status, a proxy
      // that answered something else), try again later, backing off.
      // What changed meanwhile is replayed from `after` if the server
      // still keeps it, else the feed says reset.
      if (mine.readyState !== EventSource.CLOSED || source !== mine) return;
      const wait = backoff;
      backoff = Math.min(backoff * 2, BACKOFF_MOST);
      setTimeout(() => {
        if (source === mine) open();
      }, wait);
    });
  };
  resume = open;
  open();
}

if (regions.length > 0 && "EventSource" in window) {
  follow(new URL(regions[0].dataset.live, location.href));
  // Opened in a background tab: it need not hold a connection until shown.
  if (document.hidden) document.dispatchEvent(new Event("visibilitychange"));
}
