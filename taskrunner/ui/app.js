// taskrunner dashboard. Reads and changes everything through the native JSON API (/api/...);
// /ui/events (server-sent events fed by Redis pub/sub) says what changed, and the page
// re-fetches only that, debounced. Every piece of data is put in the DOM as text
// (textContent / Text nodes), never parsed as HTML.
(() => {
  "use strict";

  const STATES = ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled", "dead"];
  const LIVE = new Set(["queued", "scheduled", "running", "retrying"]);
  const DEBOUNCE_MS = 200;
  const JOBS_SHOWN = 100;
  const DEAD_LIMIT = 500;
  const LETTERS_LIMIT = 100;
  const RECONNECT_MS = 5000;
  const TOKEN_KEY = "taskrunner.token";

  // -- token: `?token=` on the page URL, kept for this tab, sent as a Bearer header ----------
  const query = new URLSearchParams(window.location.search);
  if (query.has("token")) sessionStorage.setItem(TOKEN_KEY, query.get("token"));
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  // URLs relative to the page's folder, so the page also works behind a proxy under a prefix.
  const ROOT = new URL("./", window.location.href);
  const at = (path) => new URL(path.replace(/^\//, ""), ROOT).href;
  const $ = (id) => document.getElementById(id);
  const view = {
    channels: [], stats: null, running: [], jobs: [], dead: [], deadTotal: 0,
    letters: [], lettersTotal: 0, detailId: null, detail: null,
    filter: { channel: "", state: "", command: "" },
    // The Jobs list's pages: the cursor of each page shown so far (null: the newest), and
    // the next (older) page's; only the newest page follows new jobs as they come.
    pages: [null], older: null,
  };
  let clockSkewMs = 0;

  // -- API ----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(at(path), init);
    noteServerClock(response);
    if (response.status === 401) showBanner("This runner needs its token: open /ui?token=<token>.");
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message;
      throw new ApiError(response.status, message || `${response.status} ${response.statusText}`);
    }
    return data;
  }

  const enc = encodeURIComponent;

  function noteServerClock(response) {
    const date = Date.parse(response.headers.get("Date") || "");
    if (Number.isNaN(date)) return;
    const skew = date - Date.now();
    clockSkewMs = Math.abs(skew) > 1500 ? skew : 0;  // Date has 1 s resolution
  }
  const nowS = () => (Date.now() + clockSkewMs) / 1000;

  // -- DOM helpers: text only ---------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "data") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const td = (text, cls, title) => el("td", { class: cls, title: title || null, text: text ?? "" });
  const badge = (state) => el("span", { class: `badge ${STATES.includes(state) ? state : ""}`, text: state || "?" });
  const shortId = (id) => (id && id.length > 12 ? id.slice(0, 8) + "…" : id || "");
  const numCell = (n) => el("td", { class: n ? "num" : "num zero", text: n ?? 0 });

  function fmtTime(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const d = new Date(seconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    const s = Math.floor(seconds);
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }

  function fmtAge(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    return fmtDuration(s);
  }

  // How a shell would need the argument written (for reading only: nothing runs it).
  function shellQuote(arg) {
    const text = String(arg);
    return /^[A-Za-z0-9_@%+=:,.\/-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
  }

  function commandText(job) {
    if (job.kind === "rpc") return `${job.method || "POST"} ${job.url || job.task || ""}`;
    const args = Array.isArray(job.args) ? job.args.map(shellQuote).join(" ") : "";
    return args ? `${job.task} ${args}` : job.task || "";
  }

  let toastTimer = null;
  function toast(message, isError) {
    const node = $("toast");
    node.textContent = message;
    node.className = isError ? "toast error" : "toast";
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, isError ? 6000 : 2500);
  }

  function showBanner(message) {
    const node = $("banner");
    node.textContent = message;
    node.hidden = !message;
  }

  // A button that runs an API action, disabled while it runs; errors become a toast.
  function actionButton(label, run, cls) {
    const button = el("button", { type: "button", class: cls || null, text: label });
    button.addEventListener("click", async (event) => {
      event.stopPropagation();
      button.disabled = true;
      try {
        await run();
      } catch (error) {
        toast(error.message, true);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  // Drop needs a second click within 3 s (no blocking confirm() dialog).
  function dropButton(run) {
    const button = el("button", { type: "button", class: "danger", text: "Drop" });
    let armed = null;
    button.addEventListener("click", async (event) => {
      event.stopPropagation();
      if (!armed) {
        button.textContent = "Confirm drop";
        button.classList.add("confirm");
        armed = setTimeout(() => {
          armed = null;
          button.textContent = "Drop";
          button.classList.remove("confirm");
        }, 3000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.disabled = true;
      try {
        await run();
      } catch (error) {
        toast(error.message, true);
        button.disabled = false;
      }
    });
    return button;
  }

  // -- loading, debounced by topic -------------------------------------------------------------
  const loaders = {
    channels: async () => {
      view.channels = (await api("GET", "/api/channels")).channels;
      renderChannels();
      renderChannelChoices();
    },
    stats: async () => {
      view.stats = await api("GET", "/api/stats");
      renderTotals();
    },
    running: async () => {
      view.running = (await api("GET", "/api/jobs?state=running&limit=500")).jobs;
      renderRunning();
    },
    jobs: async () => {
      view.jobs = await loadJobs();
      renderJobs();
    },
    dead: async () => {
      const data = await api("GET", `/api/dead-jobs?limit=${DEAD_LIMIT}`);
      view.dead = data.jobs;
      view.deadTotal = data.total;
      renderDead();
      renderChannels();
    },
    letters: async () => {
      const data = await api("GET", `/api/dead-letters?limit=${LETTERS_LIMIT}`);
      view.letters = data.dead_letters;
      view.lettersTotal = data.total;
      renderLetters();
    },
    detail: async () => {
      if (!view.detailId) return;
      const id = view.detailId;
      try {
        const job = await api("GET", `/api/jobs/${enc(id)}`);
        if (view.detailId === id) view.detail = job;
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 404) throw error;
        if (view.detailId === id) view.detail = { id, missing: error.message };
      }
      renderDetail();
    },
  };
  const ALL = Object.keys(loaders);
  const dirty = new Set();
  let timer = null;
  let busy = false;
  let lastFlushMs = 0;
  // Wait at least DEBOUNCE_MS, and twice as long as the last refresh took: a busy runner is
  // not asked more often than it can answer.
  const gap = () => Math.max(DEBOUNCE_MS, 2 * lastFlushMs);

  function refresh(...topics) {
    topics.forEach((t) => dirty.add(t));
    if (!timer && !busy) timer = setTimeout(flush, gap());
  }

  async function flush() {
    timer = null;
    busy = true;
    const began = performance.now();
    const topics = [...dirty];
    dirty.clear();
    const results = [];
    if (topics.includes("channels")) {  // first: the filters' channel choices come from it
      results.push(...(await Promise.allSettled([loaders.channels()])));
    }
    const rest = topics.filter((t) => t !== "channels");
    results.push(...(await Promise.allSettled(rest.map((t) => loaders[t]()))));
    busy = false;
    lastFlushMs = performance.now() - began;
    const failed = results.find((r) => r.status === "rejected");
    if (failed && !(failed.reason instanceof ApiError && failed.reason.status === 401)) {
      toast(`refresh failed: ${failed.reason.message}`, true);
    }
    if (!failed) showBanner("");
    $("updated").textContent = `updated ${fmtTime(Date.now() / 1000)}`;
    if (dirty.size) timer = setTimeout(flush, gap());
  }

  async function loadJobs() {
    const { channel, state, command } = view.filter;
    const params = new URLSearchParams({ limit: JOBS_SHOWN });
    Object.entries({ channel, state, command, cursor: view.pages.at(-1) })
      .forEach(([name, value]) => { if (value) params.set(name, value); });
    const page = await api("GET", `/api/jobs?${params}`);
    view.older = page.next_cursor;
    const number = view.pages.length;
    $("jobs-note").textContent = page.jobs.length || !view.older
      ? (number > 1 || view.older ? `page ${number}, newest first` : "")
      : `page ${number}: no match among these jobs, look further with "older"`;
    $("jobs-newer").disabled = number === 1;
    $("jobs-older").disabled = !view.older;
    return page.jobs;
  }

  function turnJobsPage(cursors) {
    view.pages = cursors;
    refresh("jobs");
  }

  // -- rendering ---------------------------------------------------------------------------------
  function renderTotals() {
    const stats = view.stats;
    if (!stats) return;
    const today = stats.today || {};
    $("t-succeeded").textContent = today.succeeded || 0;
    $("t-failed").textContent = today.failed || 0;
    $("t-cancelled").textContent = today.cancelled || 0;
    const running = Object.values(stats.channels || {}).reduce((sum, c) => sum + (c.running || 0), 0);
    $("t-running").textContent = running;
    $("t-dead").textContent = stats.dead_jobs;
    $("t-letters").textContent = stats.dead_letters;
    $("t-runners").textContent = (stats.runners || []).length;
  }

  function deadByChannel() {
    const counts = new Map();
    for (const job of view.dead) counts.set(job.channel, (counts.get(job.channel) || 0) + 1);
    return counts;
  }

  function renderChannels() {
    const body = $("channels").tBodies[0];
    const focused = document.activeElement;
    const dead = deadByChannel();
    const partial = view.deadTotal > view.dead.length;
    const rows = view.channels.map((ch) => {
      const keep = focused && focused.dataset && focused.dataset.workersFor === ch.name ? focused : null;
      const deadCount = dead.get(ch.name) || 0;
      return el(
        "tr",
        { class: ch.paused ? "paused" : null, data: { channel: ch.name } },
        td(ch.name, "chan"),
        el("td", {}, el("span", { class: `badge ${ch.paused ? "paused" : "active"}`, text: ch.paused ? "paused" : "active" })),
        numCell(ch.queued),
        numCell(ch.scheduled),
        numCell(ch.running),
        el("td", { class: deadCount ? "num" : "num zero", text: partial && deadCount ? `${deadCount}+` : deadCount }),
        el("td", {}, workersEditor(ch, keep)),
        td(ch.distinct ? "yes" : "no"),
        td(ch.timeout ? fmtDuration(ch.timeout) : "–"),
        td(ch.retries ? `${ch.retries}${ch.retry_intervals && ch.retry_intervals.length ? ` (${ch.retry_intervals.join(" ")} s)` : ""}` : "–"),
        el("td", { class: "actions" }, ch.paused
          ? actionButton("Resume", () => channelAction(ch.name, "resume"))
          : actionButton("Pause", () => channelAction(ch.name, "pause"))),
      );
    });
    body.replaceChildren(...rows);
    if (focused && focused.isConnected === false) focused.blur();
  }

  function workersEditor(ch, keep) {
    const input = keep || el("input", {
      class: "workers", type: "number", min: 1, max: 1000, step: 1, value: ch.worker_count,
      "aria-label": `workers of ${ch.name}`, data: { workersFor: ch.name },
    });
    const apply = async () => {
      const count = Number(input.value);
      if (!Number.isInteger(count) || count < 1) {
        toast("workers: a whole number from 1 to 1000", true);
        return;
      }
      await api("PATCH", `/api/channels/${enc(ch.name)}`, { worker_count: count });
      input.blur();
      toast(`${ch.name}: ${count} workers per runner`);
      refresh("channels");
    };
    if (!keep) {
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") apply().catch((error) => toast(error.message, true));
      });
    }
    const button = actionButton("Set", apply);
    button.dataset.setWorkers = ch.name;
    return el("div", { class: "workers-cell" }, input, button);
  }

  async function channelAction(name, action) {
    await api("POST", `/api/channels/${enc(name)}/${action}`);
    toast(`${name} ${action === "pause" ? "paused" : "resumed"}`);
    refresh("channels", "stats");
  }

  function renderChannelChoices() {
    const names = view.channels.map((c) => c.name);
    const push = $("push-channel");
    const first = push.options.length === 0;
    fillSelect(push, names, null);
    if (first && names.includes("default")) push.value = "default";
    fillSelect($("filter-channel"), names, "all");
    if (view.filter.channel && !names.includes(view.filter.channel)) {
      view.filter.channel = "";
      refresh("jobs");
    }
  }

  function fillSelect(select, names, allLabel) {
    const current = select.value;
    const options = names.map((n) => el("option", { value: n, text: n }));
    if (allLabel) options.unshift(el("option", { value: "", text: allLabel }));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }

  function jobRow(job, cells) {
    return el(
      "tr",
      {
        class: `open${job.id === view.detailId ? " selected" : ""}`,
        data: { job: job.id, state: job.state || "" },
        title: "open the job",
        onclick: () => openJob(job.id),
      },
      cells,
    );
  }

  function renderRunning() {
    const rows = view.running
      .slice()
      .sort((a, b) => (a.started_at || 0) - (b.started_at || 0))
      .map((job) => jobRow(job, [
        el("td", { class: "id", text: shortId(job.id), title: job.id }),
        td(job.channel, "chan"),
        td(commandText(job), "cmd", commandText(job)),
        td(job.attempt, "num"),
        td(job.runner || "", "id"),
        td(fmtTime(job.started_at)),
        el("td", { class: "num age", data: { started: job.started_at || "" } }),
        el("td", { class: "actions" }, actionButton("Cancel", () => cancelJob(job.id))),
      ]));
    $("running").tBodies[0].replaceChildren(...rows);
    $("running-count").textContent = view.running.length ? String(view.running.length) : "";
    $("running-empty").hidden = rows.length > 0;
    tickAges();
  }

  function tickAges() {
    for (const cell of document.querySelectorAll("td.age")) {
      const started = Number(cell.dataset.started);
      cell.textContent = started ? fmtAge(nowS() - started) : "";
    }
  }

  function renderJobs() {
    const rows = view.jobs.map((job) => jobRow(job, [
      el("td", {}, badge(job.state)),
      el("td", { class: "id", text: shortId(job.id), title: job.id }),
      td(job.channel, "chan"),
      td(commandText(job), "cmd", commandText(job)),
      td(job.attempt ?? "", "num"),
      td(job.exit_code ?? (job.signal_name || (job.signal ? `signal ${job.signal}` : "")), "num"),
      td(fmtDuration(job.duration), "num"),
      td(fmtTime(job.created_at)),
      td(job.due_at && (job.state === "scheduled" || job.state === "retrying")
        ? `due ${fmtTime(job.due_at)}` : fmtTime(job.finished_at)),
      td(job.error || "", "err", job.error || null),
    ]));
    $("jobs").tBodies[0].replaceChildren(...rows);
    $("jobs-empty").hidden = rows.length > 0;
  }

  function renderDead() {
    const rows = view.dead.map((job) => jobRow(job, [
      el("td", { class: "id", text: shortId(job.id), title: job.id }),
      td(job.channel, "chan"),
      td(commandText(job), "cmd", commandText(job)),
      td(job.attempt, "num"),
      td(job.error || (job.exit_code !== null && job.exit_code !== undefined ? `exit ${job.exit_code}` : ""), "err", job.error || null),
      td(fmtTime(job.finished_at)),
      el("td", { class: "actions" },
        actionButton("Retry", () => retryDead(job.id)),
        dropButton(() => dropDead(job.id))),
    ]));
    $("dead").tBodies[0].replaceChildren(...rows);
    $("dead-count").textContent = view.deadTotal ? String(view.deadTotal) : "";
    $("dead-empty").hidden = rows.length > 0;
  }

  // A truncated letter kept only the first bytes of its message: say so (it cannot be retried).
  function letterText(letter) {
    if (!letter.truncated) return letter.raw || "";
    return `${letter.raw || ""}… (first bytes of ${letter.size} bytes: cannot be retried)`;
  }

  function renderLetters() {
    const rows = view.letters.map((letter) => el(
      "tr",
      { data: { letter: letter.id } },
      td(fmtTime(letter.at)),
      td(letter.source || ""),
      td(letter.reason || "", "reason"),
      td(letterText(letter), "raw", letter.raw || null),
      el("td", { class: "actions" },
        letter.truncated ? null : actionButton("Retry", () => letterAction(letter.id, "retry")),
        dropButton(() => letterAction(letter.id, "drop"))),
    ));
    $("letters").tBodies[0].replaceChildren(...rows);
    $("letters-count").textContent = view.lettersTotal ? String(view.lettersTotal) : "";
    $("letters-empty").hidden = rows.length > 0;
  }

  // -- actions -------------------------------------------------------------------------------
  async function cancelJob(id) {
    const result = await api("POST", `/api/jobs/${enc(id)}/cancel`);
    toast(result.state === "running" ? "cancelling: its runner is stopping it" : "cancelled");
    refresh("running", "jobs", "channels", "stats", "detail");
  }

  async function retryDead(id) {
    await api("POST", `/api/dead-jobs/${enc(id)}/retry`);
    toast("queued again");
    refresh("dead", "jobs", "channels", "stats", "detail");
  }

  async function dropDead(id) {
    await api("DELETE", `/api/dead-jobs/${enc(id)}`);
    toast("dropped");
    refresh("dead", "jobs", "stats", "detail");
  }

  async function letterAction(id, action) {
    if (action === "retry") await api("POST", `/api/dead-letters/${enc(id)}/retry`);
    else await api("DELETE", `/api/dead-letters/${enc(id)}`);
    toast(action === "retry" ? "pushed back onto the prepare queue" : "dropped");
    refresh("letters", "stats");
  }

  $("push-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = $("push-result");
    const body = { task: $("push-task").value, channel: $("push-channel").value };
    const delay = $("push-delay").value.trim();
    const retries = $("push-retries").value.trim();
    if (delay) body.delay = Number(delay);
    if (retries) body.retries = Number(retries);
    $("push-submit").disabled = true;
    try {
      const job = await api("POST", "/api/jobs", body);
      result.className = "note";
      result.replaceChildren(
        "pushed ",
        el("button", { type: "button", class: "linkish", text: shortId(job.id), title: job.id, onclick: () => openJob(job.id) }),
        ` (${job.state})`,
      );
      $("push-task").value = "";
      refresh("jobs", "channels", "stats");
    } catch (error) {
      result.className = "note error";
      result.textContent = error.message;
    } finally {
      $("push-submit").disabled = false;
    }
  });

  for (const name of STATES) $("filter-state").append(el("option", { value: name, text: name }));
  for (const [name, event] of [["channel", "change"], ["state", "change"], ["command", "input"]]) {
    $(`filter-${name}`).addEventListener(event, (e) => {
      view.filter[name] = e.target.value.trim();
      turnJobsPage([null]);
    });
  }
  $("jobs-newer").addEventListener("click", () => turnJobsPage(view.pages.slice(0, -1)));
  $("jobs-older").addEventListener("click", () => {
    if (view.older) turnJobsPage([...view.pages, view.older]);
  });

  // -- job drawer (#job=<id> keeps it open across reloads) ----------------------------------------
  const DETAIL_ORDER = [
    "id", "state", "channel", "kind", "task", "args", "method", "url", "attempt", "retries",
    "retry_intervals", "exit_code", "signal_name", "http_status", "duration", "runner", "pid",
    "created_at", "run_at", "due_at", "started_at", "finished_at", "timeout", "dedup_key", "ts",
  ];
  const TIMES = new Set(["created_at", "run_at", "due_at", "started_at", "finished_at", "ts"]);
  const HIDDEN = new Set(["stdout", "stderr", "error", "final", "stdout_truncated", "stderr_truncated", "body", "signal"]);
  const MONO = new Set(["id", "task", "args", "url", "runner", "dedup_key"]);

  function openJob(id) {
    window.history.replaceState(null, "", `${window.location.pathname}${window.location.search}#job=${enc(id)}`);
    showJob(id);
  }

  function showJob(id) {
    view.detailId = id;
    view.detail = null;
    $("detail").hidden = false;
    $("detail-h").textContent = `Job ${id}`;
    renderDetail();
    refresh("detail");
    markSelected();
  }

  function closeJob() {
    view.detailId = null;
    view.detail = null;
    $("detail").hidden = true;
    window.history.replaceState(null, "", `${window.location.pathname}${window.location.search}`);
    markSelected();
  }

  function markSelected() {
    for (const row of document.querySelectorAll("tr[data-job]")) {
      row.classList.toggle("selected", row.dataset.job === view.detailId);
    }
  }

  function renderDetail() {
    const job = view.detail;
    const body = $("detail-body");
    const actions = [];
    if (!job) {
      $("detail-state").replaceChildren();
      $("detail-actions").replaceChildren();
      body.replaceChildren(el("p", { class: "note", text: "loading…" }));
      return;
    }
    if (job.missing) {
      $("detail-state").replaceChildren();
      $("detail-actions").replaceChildren();
      body.replaceChildren(el("p", { class: "note", text: job.missing }));
      return;
    }
    $("detail-state").replaceChildren(badge(job.state));
    if (LIVE.has(job.state)) actions.push(actionButton("Cancel", () => cancelJob(job.id)));
    if (job.state === "dead") {
      actions.push(actionButton("Retry", () => retryDead(job.id)), dropButton(() => dropDead(job.id)));
    }
    $("detail-actions").replaceChildren(...actions);

    const keys = [
      ...DETAIL_ORDER.filter((k) => k in job),
      ...Object.keys(job).filter((k) => !DETAIL_ORDER.includes(k) && !HIDDEN.has(k)).sort(),
    ];
    const rows = keys
      .filter((k) => job[k] !== null && job[k] !== undefined && job[k] !== "")
      .map((k) => el("tr", {}, el("th", { text: k.replace(/_/g, " ") }), el("td", { class: MONO.has(k) ? "mono" : null, text: detailValue(k, job[k]) })));
    const parts = [];
    if (job.error) parts.push(el("div", { class: "error-box", text: job.error }));
    parts.push(el("table", { class: "kv" }, el("tbody", {}, rows)));
    parts.push(outputBlock("stdout", job.stdout, job.stdout_truncated));
    parts.push(outputBlock("stderr", job.stderr, job.stderr_truncated));
    if (job.body) parts.push(outputBlock("request body", job.body, false));
    body.replaceChildren(...parts);
  }

  function detailValue(key, value) {
    if (TIMES.has(key) && typeof value === "number") return `${fmtTime(value)}  (${value})`;
    if (key === "duration" || key === "timeout") return fmtDuration(value);
    if (Array.isArray(value)) return key === "args" ? JSON.stringify(value) : value.join(" ");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function outputBlock(title, text, truncated) {
    const empty = text === undefined || text === null || text === "";
    return el("div", { class: "out" },
      el("div", { class: "out-head" },
        el("h3", { text: title }),
        truncated ? el("span", { class: "note", text: "truncated: first and last bytes kept" }) : null),
      el("pre", { class: `output ${title}${empty ? " none" : ""}`, data: { output: title }, text: empty ? "(empty)" : text }));
  }

  $("detail-close").addEventListener("click", closeJob);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && view.detailId) closeJob();
  });
  function jobFromHash() {
    const match = /^#job=(.+)$/.exec(window.location.hash);
    if (match) showJob(decodeURIComponent(match[1]));
  }
  window.addEventListener("hashchange", jobFromHash);

  // -- live updates -----------------------------------------------------------------------------
  function onChange(change) {
    const topics = new Set();
    const states = Object.values(change.jobs || {});
    if (states.length || change.more_jobs || (change.queues || []).length) {
      ["channels", "stats", "running", "jobs"].forEach((t) => topics.add(t));
    }
    if (change.more_jobs || states.some((s) => s === "dead" || s === "dropped" || s === "queued")) {
      topics.add("dead");
    }
    if (view.detailId && (change.more_jobs || view.detailId in (change.jobs || {}))) topics.add("detail");
    if ((change.channels || []).length) ["channels", "stats", "jobs"].forEach((t) => topics.add(t));
    if (change.dead_letters) ["letters", "stats"].forEach((t) => topics.add(t));
    if (topics.size) refresh(...topics);
  }

  function setLive(state, text) {
    const node = $("live");
    node.className = `live ${state}`;
    node.textContent = text;
  }

  let source = null;
  function connect() {
    const url = at("/ui/events") + (token() ? `?token=${enc(token())}` : "");
    source = new EventSource(url);
    source.addEventListener("hello", () => {
      setLive("on", "live");
      refresh(...ALL);  // whatever changed while we were not listening
    });
    source.addEventListener("change", (event) => {
      try {
        onChange(JSON.parse(event.data));
      } catch (error) {
        toast(`bad event: ${error.message}`, true);
      }
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setLive("off", "disconnected");
        source.close();
        setTimeout(connect, RECONNECT_MS);  // the browser gives up after an HTTP error
      } else {
        setLive("connecting", "reconnecting");
      }
    });
  }

  jobFromHash();
  refresh(...ALL);
  connect();
  setInterval(tickAges, 1000);
})();
