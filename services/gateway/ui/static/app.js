// shoal's dashboard: one EventSource on /ui/stream; "snapshot" messages redraw the tables, "events" messages
// prepend to the feed. Every value from the cluster goes into the page as text (textContent), never as HTML.
"use strict";

const MAX_EVENTS = 200;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  for (const c of cells) {
    if (c instanceof Node) {
      const td = document.createElement("td");
      td.appendChild(c);
      tr.appendChild(td);
    } else if (Array.isArray(c)) {
      tr.appendChild(el("td", c[0], c[1]));
    } else {
      tr.appendChild(el("td", c));
    }
  }
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function bytes(n) {
  if (!n) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}

function renderServices(services) {
  document.getElementById("services-empty").hidden = services.length > 0;
  fill("services", services.map((s) => {
    const ok = s.running >= s.desired;
    const replicas = el("span", `${s.running}/${s.desired}`, ok ? "replicas ok" : "replicas short");
    replicas.dataset.running = s.running;
    replicas.dataset.desired = s.desired;
    const update = s.update ? el("span", s.update.state, `update ${s.update.state}`) : el("span", "");
    if (s.update && s.update.message) update.title = s.update.message;
    const errors = el("ul", null, "errors");
    for (const e of s.errors) {
      const why = [...new Set([e.err, e.message].filter(Boolean))].join(" — ") || `exit ${e.exit_code}`;
      const li = el("li", `${e.name} ${e.state}: ${why}`);
      li.title = `${e.id} on ${e.node} at ${clock(e.time)}`;
      errors.appendChild(li);
    }
    return row([[s.name, "name"], s.mode, replicas, update, errors], {"data-service": s.name});
  }));
}

function renderNodes(nodes) {
  fill("nodes", nodes.map((n) => row([
    [n.hostname, "name"], n.role, [n.state, `state ${n.state}`], [n.availability, `avail ${n.availability}`],
    n.cpus || "", bytes(n.memory_bytes), `${n.tasks_running}/${n.tasks}`,
  ], {"data-node": n.hostname})));
}

function renderTasks(tasks) {
  const chips = document.getElementById("task-states");
  chips.replaceChildren(...Object.entries(tasks.by_state).map(([state, n]) => {
    const c = el("span", `${state} ${n}`, `chip state ${state}`);
    c.dataset.state = state;
    c.dataset.count = n;
    return c;
  }));
  document.getElementById("not-running-total").textContent =
    tasks.not_running_total ? `(${tasks.not_running_total})` : "";
  fill("not-running", tasks.not_running.map((t) => row([
    [t.name, "name"], [t.state, `state ${t.state}`], t.node, t.err || t.message,
  ], {"data-task": t.id})));
}

function renderRaft(raft) {
  document.getElementById("raft-summary").textContent =
    raft.leader ? `leader ${raft.leader}, term ${raft.term}, commit ${raft.commit_index}` : "no leader";
  fill("raft", raft.members.map((m) => row([
    [m.id || m.url, "name"], [m.role || "", `role ${m.role}`], m.term ?? "", m.commit_index ?? "",
    m.applied_index ?? "", m.lag ?? (m.error || ""),
  ], {"data-member": m.id || m.url})));
}

function renderInstances(instances) {
  fill("instances", instances.map((i) => row([
    i.role, [i.instance, "name"], [i.state, `instance ${i.state}`], i.term ?? "",
    i.host ? `${i.host}:${i.port ?? ""}` : "",
  ], {"data-instance": `${i.role}/${i.instance}`})));
}

function render(snap) {
  document.getElementById("summary").textContent =
    `${snap.nodes.length} nodes · ${snap.services.length} services · ${snap.tasks.total} tasks · ` +
    `revision ${snap.revision}`;
  const banner = document.getElementById("store-error");
  banner.hidden = !snap.store_error;
  banner.textContent = snap.store_error ? `store unavailable: ${snap.store_error}` : "";
  renderServices(snap.services);
  renderNodes(snap.nodes);
  renderTasks(snap.tasks);
  renderRaft(snap.raft);
  renderInstances(snap.instances);
}

function addEvents(events) {
  const list = document.getElementById("events");
  for (const e of events) {
    const li = el("li", null, `event ${e.kind} ${e.action}`);
    li.appendChild(el("time", clock(e.time)));
    li.appendChild(el("span", `${e.kind} ${e.action}`, "what"));
    li.appendChild(el("span", e.name, "name"));
    if (e.detail) li.appendChild(el("span", e.detail, "detail"));
    li.title = `revision ${e.rev}, ${e.id}${e.actor ? ", by " + e.actor : ""}`;
    list.prepend(li);
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function setConnection(state) {
  const c = document.getElementById("connection");
  c.textContent = state;
  c.className = `connection ${state}`;
}

function connect() {
  const source = new EventSource("/ui/stream");
  source.addEventListener("open", () => setConnection("live"));
  source.addEventListener("error", () => setConnection("reconnecting"));
  source.addEventListener("snapshot", (m) => { render(JSON.parse(m.data)); setConnection("live"); });
  source.addEventListener("events", (m) => addEvents(JSON.parse(m.data)));
}

document.addEventListener("DOMContentLoaded", connect);
