// sparkwing dashboard: progressive enhancement only. Every page works
// without this script; with it, times show in local time, in-progress pages
// refresh their main part in place, and job logs tail live over
// server-sent events. The server escapes every value it sends; this script
// only inserts HTML the server rendered.
"use strict";

function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.title = t.textContent;
      t.textContent = d.toLocaleString();
    }
  }
}

function refreshLoop(main) {
  const url = main.dataset.refresh;
  if (!url) return;
  // Run pages stop once nothing on them is running or waiting; the sync
  // page keeps refreshing.
  const untilDone = !url.startsWith("/sync");
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || document.hidden) return;
    // Never replace a form the reader is typing into.
    const a = document.activeElement;
    if (a && main.contains(a) && a.matches("input, select, textarea")) return;
    busy = true;
    try {
      const r = await fetch(url, { headers: { "Accept": "text/html" } });
      if (r.ok) {
        const html = await r.text();
        const open = [...main.querySelectorAll("details[open]")].map((d) => d.closest("section")?.id);
        main.innerHTML = html;
        for (const id of open) {
          const d = id && document.getElementById(id)?.querySelector("details");
          if (d) d.open = true;
        }
        localTimes(main);
        if (untilDone && !main.querySelector(".st-run, .st-wait")) clearInterval(timer);
      }
    } catch (_) {
      // Offline or server restarting: try again next tick.
    } finally {
      busy = false;
    }
  }, 2000);
}

function liveLog(pre) {
  const url = pre.dataset.stream;
  if (!url || !window.EventSource) return;
  const state = document.getElementById("log-state");
  const say = (text) => { if (state) state.textContent = text; };
  let lastId = null;
  let ended = false;
  let wait = 10;
  function open() {
    // Resume after the last event delivered (the page's cursor at first).
    const u = new URL(url, location.href);
    if (lastId) u.searchParams.set("from", lastId);
    const es = new EventSource(u.pathname + u.search);
    es.addEventListener("log", (ev) => {
      const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      if (ev.lastEventId) lastId = ev.lastEventId;
      const msg = JSON.parse(ev.data);
      pre.insertAdjacentHTML("beforeend", msg.html);
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    });
    es.addEventListener("end", (ev) => {
      ended = true;
      es.close();
      const msg = JSON.parse(ev.data);
      if (state) {
        state.textContent = "■ the job ended" + (msg.status ? ": " + msg.status : "");
        state.className = "ended";
      }
    });
    es.addEventListener("error", () => {
      if (ended) return;
      if (es.readyState !== EventSource.CLOSED) {
        // A dropped connection: the browser reconnects by itself.
        say("○ reconnecting…");
        return;
      }
      // Refused (503 when the dashboard serves its most live streams):
      // the browser gives up, so try again after a pause, longer each time.
      say("○ live tail paused: the dashboard is busy; retrying in " + wait + " s (reload to see the latest)");
      setTimeout(open, wait * 1000);
      wait = Math.min(wait * 2, 60);
    });
    es.addEventListener("open", () => {
      wait = 10;
      say("● live: new output appears here as the job writes it");
    });
  }
  open();
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const main = document.getElementById("main");
  if (main) refreshLoop(main);
  const pre = document.getElementById("log");
  if (pre) liveLog(pre);
});
