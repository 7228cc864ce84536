// The task page's log view. The server renders the log's tail into the
// page; this module pages through the rest of the log by line range
// (`…/log?from=&to=`, `?line=`), jumps to `#L{n}` links, searches on the
// server (`…/log/search`), folds steps and follows a running task. The
// page never holds more than MAX_LINES lines: a window added at one end
// drops lines at the other, so a 1 GB log costs the browser what a small
// one does. Ctrl+F still finds text in the lines held.
const MAX_LINES = 3000;
const FOLLOW_EVERY_MS = 1000;

const view = document.getElementById("log-view");
const box = view && view.querySelector(".log");

if (view && box) {
  start();
}

function start() {
  const base = view.dataset.window;
  const state = {
    total: Number(view.dataset.total),
    live: view.dataset.live === "1",
    unfinished: view.dataset.unfinished === "1",
    folded: new Set(),
    match: null,
    busy: false,
  };
  for (const element of view.querySelectorAll("[hidden]")) {
    element.hidden = false;
  }
  const range = document.getElementById("log-range");
  const found = document.getElementById("log-found");
  const follow = document.getElementById("log-follow");

  const lines = () => box.querySelectorAll(":scope > .l");
  const number = (line) => Number(line.id.slice(1));
  const first = () => {
    const line = box.querySelector(":scope > .l");
    return line ? number(line) : 0;
  };
  const last = () => {
    const all = lines();
    return all.length ? number(all[all.length - 1]) : 0;
  };
  const atBottom = () =>
    window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;

  function describe() {
    const a = first();
    const b = last();
    if (!a) {
      range.textContent = "The log is empty.";
    } else if (a === 1 && b === state.total) {
      range.textContent = `The whole log: ${state.total} lines.`;
    } else {
      range.textContent = `Lines ${a}–${b} of ${state.total}, numbered as in the whole log.`;
    }
    document.getElementById("log-older").disabled = a <= 1;
    document.getElementById("log-newer").disabled = b >= state.total;
  }

  async function fetchWindow(query) {
    const response = await fetch(`${base}?${query}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!response.ok) {
      throw new Error(`the log window answered ${response.status}`);
    }
    const answer = await response.json();
    state.total = answer.total;
    state.live = answer.live;
    state.unfinished = answer.unfinished;
    heads(answer);
    const template = document.createElement("template");
    template.innerHTML = answer.html;
    return { answer, fragment: template.content };
  }

  // Steps' heads and the task's status say what the server says now.
  function heads(answer) {
    for (const section of answer.sections || []) {
      const head = box.querySelector(`.l.sh[data-s="${section.number}"] .sm`);
      if (head) {
        const status = head.querySelector(".status");
        status.className = `status s-${section.status}`;
        status.textContent = section.status.replace("_", " ");
        head.querySelector(".dur").textContent = section.duration || "";
      }
    }
    const task = document.querySelector("#task-status .status");
    if (task && answer.status) {
      task.className = `status s-${answer.status}`;
      task.textContent = answer.status.replace("_", " ");
    }
  }

  function fold(line) {
    const step = line.dataset.s;
    line.hidden = step !== undefined && !line.classList.contains("sh") && state.folded.has(step);
  }

  function prepared(fragment) {
    for (const line of fragment.querySelectorAll(".l")) {
      fold(line);
      for (const button of line.querySelectorAll("[hidden]")) {
        button.hidden = false;
      }
      const toggle = line.querySelector("button.fold");
      if (toggle && state.folded.has(toggle.dataset.fold)) {
        toggle.setAttribute("aria-expanded", "false");
        toggle.textContent = "Unfold";
      }
    }
    return fragment;
  }

  // Keeps at most MAX_LINES lines, dropping them from the end `from`.
  function trim(from) {
    const all = lines();
    const extra = all.length - MAX_LINES;
    for (let k = 0; k < extra; k++) {
      (from === "start" ? all[k] : all[all.length - 1 - k]).remove();
    }
  }

  function replace(fragment) {
    box.replaceChildren(prepared(fragment));
    describe();
  }

  // Runs one window change at a time: clicks during a fetch wait for it.
  async function once(work) {
    if (state.busy) {
      return;
    }
    state.busy = true;
    try {
      await work();
    } catch (error) {
      found.textContent = `The log could not be read: ${error.message}`;
    } finally {
      state.busy = false;
    }
  }

  function mark(line, className) {
    for (const old of box.querySelectorAll(`.${className}`)) {
      old.classList.remove(className);
    }
    const element = document.getElementById(`L${line}`);
    if (element) {
      element.classList.add(className);
      element.hidden = false;
      element.scrollIntoView({ block: "center" });
    }
    return element;
  }

  // Shows line `line`, fetching the window around it when it is not held.
  async function show(line, className) {
    if (!document.getElementById(`L${line}`)) {
      const { fragment } = await fetchWindow(`line=${line}`);
      replace(fragment);
    }
    return mark(line, className);
  }

  function fromHash() {
    const match = /^#L(\d+)$/.exec(location.hash);
    if (match) {
      once(() => show(Number(match[1]), "target"));
    }
  }

  document.getElementById("log-older").addEventListener("click", () =>
    once(async () => {
      const top = first();
      if (top <= 1) {
        return;
      }
      const anchor = document.getElementById(`L${top}`);
      const before = anchor.getBoundingClientRect().top;
      const { fragment } = await fetchWindow(`to=${top - 1}`);
      box.prepend(prepared(fragment));
      trim("end");
      // The lines that were there stay where they were on the screen.
      window.scrollBy(0, anchor.getBoundingClientRect().top - before);
      describe();
    }),
  );

  document.getElementById("log-newer").addEventListener("click", () =>
    once(async () => {
      const bottom = last();
      const anchor = document.getElementById(`L${bottom}`);
      const before = anchor ? anchor.getBoundingClientRect().top : 0;
      const { fragment } = await fetchWindow(`from=${bottom + 1}`);
      box.append(prepared(fragment));
      trim("start");
      if (anchor && anchor.isConnected) {
        window.scrollBy(0, anchor.getBoundingClientRect().top - before);
      }
      describe();
    }),
  );

  document.getElementById("log-end").addEventListener("click", () =>
    once(async () => {
      const { fragment } = await fetchWindow("");
      replace(fragment);
      const all = lines();
      if (all.length) {
        all[all.length - 1].scrollIntoView({ block: "end" });
      }
    }),
  );

  async function search(back) {
    const text = document.getElementById("log-q").value;
    if (!text) {
      return;
    }
    await once(async () => {
      const from = state.match ?? (back ? last() + 1 : first() - 1);
      const query = new URLSearchParams({ q: text, line: String(Math.max(from, 1)) });
      if (!back && from < 1) {
        query.delete("line");
      }
      if (back) {
        query.set("back", "1");
      }
      const response = await fetch(`${base}/search?${query}`, { credentials: "same-origin" });
      if (!response.ok) {
        throw new Error(`the search answered ${response.status}`);
      }
      const { line } = await response.json();
      if (line === null) {
        found.textContent = back ? "No match before this one." : "No more matches.";
        return;
      }
      state.match = line;
      await show(line, "hit");
      found.textContent = `Line ${line}`;
    });
  }

  const query = document.getElementById("log-q");
  query.addEventListener("input", () => {
    state.match = null;
  });
  // Enter finds the next match (the form's submit); Shift+Enter the one before.
  query.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.shiftKey) {
      event.preventDefault();
      search(true);
    }
  });
  document.getElementById("log-search").addEventListener("submit", (event) => {
    event.preventDefault();
    search(false);
  });
  document.getElementById("log-prev").addEventListener("click", () => search(true));

  box.addEventListener("click", (event) => {
    const toggle = event.target.closest("button.fold");
    if (!toggle) {
      return;
    }
    const step = toggle.dataset.fold;
    const open = toggle.getAttribute("aria-expanded") === "true";
    if (open) {
      state.folded.add(step);
    } else {
      state.folded.delete(step);
    }
    toggle.setAttribute("aria-expanded", String(!open));
    toggle.textContent = open ? "Unfold" : "Fold";
    for (const line of box.querySelectorAll(`.l[data-s="${step}"]`)) {
      fold(line);
    }
  });

  // A running task: new lines are asked for from the last one held (again
  // when it was unfinished) and appended; the page scrolls with them only
  // while the viewer is at its bottom.
  async function followOnce() {
    if (!state.live || state.busy) {
      return;
    }
    const bottom = last();
    if (bottom < state.total) {
      follow.textContent = `The log goes on to line ${state.total}: “Last lines” shows its end.`;
    }
    const from = state.unfinished || !bottom ? Math.max(bottom, 1) : bottom + 1;
    const holdsEnd = bottom >= state.total;
    const stay = atBottom();
    await once(async () => {
      const { answer, fragment } = await fetchWindow(holdsEnd ? `from=${from}` : `from=${state.total}`);
      if (holdsEnd && answer.first !== null) {
        for (let n = answer.first; n <= bottom; n++) {
          const old = document.getElementById(`L${n}`);
          if (old) {
            old.remove();
          }
        }
        box.append(prepared(fragment));
        trim("start");
        if (stay) {
          window.scrollTo(0, document.documentElement.scrollHeight);
        }
      }
      describe();
      if (!state.live) {
        follow.textContent = "The task has ended.";
      }
    });
  }

  if (state.live) {
    follow.textContent = "Following the running task.";
    const timer = setInterval(() => {
      if (!state.live) {
        clearInterval(timer);
        return;
      }
      followOnce();
    }, FOLLOW_EVERY_MS);
  }

  window.addEventListener("hashchange", fromHash);
  describe();
  fromHash();
}
