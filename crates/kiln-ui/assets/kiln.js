// Kiln's one script: a small module that keeps relative times ("3 min
// ago") true while a page stays open. Pages work without it; the exact
// time is always in the element's title.
const units = [
  [86400, (n) => (n === 1 ? "yesterday" : `${n} days ago`)],
  [3600, (n) => `${n} h ago`],
  [60, (n) => `${n} min ago`],
  [10, (n) => `${n} s ago`],
];

function relative(seconds) {
  for (const [size, say] of units) {
    if (seconds >= size) {
      return size === 10 ? say(seconds) : say(Math.floor(seconds / size));
    }
  }
  return "just now";
}

function refresh() {
  const now = Date.now();
  for (const element of document.querySelectorAll("time[data-relative]")) {
    const at = Date.parse(element.getAttribute("datetime"));
    if (!Number.isNaN(at)) {
      element.textContent = relative(Math.max(0, Math.floor((now - at) / 1000)));
    }
  }
}

setInterval(refresh, 15000);
