// The explorer page: plain DOM and SVG, no library, no network beyond this server's API.
// Every value from the API reaches the page through textContent or setAttribute on a
// non-URL attribute, never parsed as markup. The CSP of /ui forbids inline scripts anyway.
"use strict";

(function () {
  const KEY_STORAGE = "identity-explorer.api-key";
  const EDGE_LABEL_LIMIT = 60; // more edges than this: labels on hover only
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    role: null, // "admin" | "read" | "open" | null (unknown)
    guards: undefined, // undefined: not fetched; null: not available on this server
    results: null, // the last search's persons
    personId: null,
    graph: null,
    picked: [],
    pending: null, // the erasure waiting for confirmation
    lastErasure: null, // shown once on the person page after a confirmed erasure
  };

  // ---- DOM helpers -------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** An element with attributes and children; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function sv(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  function personLink(id) {
    return el("a", { href: "#/person/" + Number(id), class: "person-link", text: "#" + id });
  }

  function setStatus(text) {
    $("status").textContent = text || "";
  }

  // ---- The API -----------------------------------------------------------------------

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers.Authorization = "Bearer " + key;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      // Relative to the page (/ui/): the API is its parent, also when the app is mounted
      // below a prefix.
      response = await fetch(new URL(".." + path, location.href), init);
    } catch (e) {
      return { status: 0, ok: false, data: { error: "the server did not answer" } };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (response.status === 401) {
      showKeyPanel(key ? "This key was refused: enter another one." : "This server needs an API key.");
    }
    return { status: response.status, ok: response.ok, data };
  }

  function errorText(result) {
    if (result.data && typeof result.data.error === "string") return result.data.error;
    return "the server answered " + result.status;
  }

  // ---- Access ------------------------------------------------------------------------

  function showKeyPanel(reason) {
    $("key-reason").textContent = reason;
    $("key-panel").hidden = false;
    $("key-input").focus();
  }

  async function refreshRole() {
    const result = await api("GET", "/whoami");
    if (result.ok && result.data && typeof result.data.role === "string") {
      state.role = result.data.role;
    } else if (result.status === 401) {
      state.role = null;
    } else {
      state.role = "unknown"; // an older server without /whoami: no admin controls
    }
    const labels = {
      admin: "access: admin key",
      read: "access: read key",
      open: "access: open (development mode, no key needed)",
      unknown: "access: unknown",
    };
    $("role").textContent = state.role ? labels[state.role] || "access: " + state.role : "access: no key";
    const hasKey = Boolean(storedKey());
    $("forget-key").hidden = !hasKey;
    $("change-key").hidden = state.role === "open";
    if (state.role && state.role !== "unknown") $("key-panel").hidden = true;
    document.body.dataset.role = state.role || "none";
    return state.role;
  }

  async function useKey(event) {
    event.preventDefault();
    const input = $("key-input");
    const key = input.value.trim();
    input.value = ""; // the key lives in sessionStorage only, not in the DOM
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    state.guards = undefined;
    const role = await refreshRole();
    if (!role) return; // refused: the panel says so
    route();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORAGE);
    state.role = null;
    state.guards = undefined;
    refreshRole().then(route);
  }

  // ---- Guards ------------------------------------------------------------------------

  async function loadGuards() {
    if (state.guards !== undefined) return state.guards;
    const result = await api("GET", "/guards");
    if (result.ok && result.data) {
      const blocked = { email: [], phoneNumber: [] };
      for (const field of ["email", "phoneNumber"]) {
        for (const pattern of (result.data.blocked && result.data.blocked[field]) || []) {
          try {
            // Full-match patterns, as the server applies them.
            blocked[field].push({ pattern, re: new RegExp("^(?:" + pattern + ")$", "u") });
          } catch (e) {
            blocked[field].push({ pattern, re: null }); // listed, not checked here
          }
        }
      }
      state.guards = { raw: result.data, blocked };
    } else {
      state.guards = null; // not on this server yet, or no access: the page works without
    }
    return state.guards;
  }

  /** "generic" / "blocked" / null for a value of a field. */
  function guardOf(field, value) {
    const guards = state.guards;
    if (!guards || value === null || value === undefined) return null;
    for (const g of guards.raw.generic || []) {
      if (g.field === field && g.value === value) return "generic";
    }
    for (const b of guards.blocked[field] || []) {
      if (b.re && b.re.test(value)) return "blocked";
    }
    return null;
  }

  function valueCell(field, value) {
    if (value === null || value === undefined) return el("span", { class: "none", text: "—" });
    const flag = guardOf(field, value);
    return el(
      "span",
      { class: "value" + (flag ? " flagged" : "") },
      el("span", { class: "text", text: value }),
      flag ? " " : null,
      flag ? el("span", { class: "badge " + flag, text: flag, title: "ignored by the " + flag + " guard" }) : null
    );
  }

  async function showGuards() {
    showView("guards-view");
    const box = clear($("guards"));
    box.append(el("p", { text: "Loading…" }));
    state.guards = undefined;
    const guards = await loadGuards();
    clear(box);
    if (!guards) {
      box.append(el("p", { class: "note", text: "This server does not list guards yet (GET /guards is not available)." }));
      return;
    }
    const raw = guards.raw;
    box.append(el("h2", { text: "Generic values" }));
    if (typeof raw.genericThreshold === "number") {
      box.append(el("p", { class: "hint", text: "A value becomes generic when it would be used with more than " + raw.genericThreshold + " different values of the other kind." }));
    }
    if (typeof raw.note === "string") box.append(el("p", { class: "hint", text: raw.note }));
    const generic = raw.generic || [];
    if (!generic.length) {
      box.append(el("p", { text: "No value is marked generic." }));
    } else {
      box.append(
        table(
          ["Guard", "Field", "Value", "Distinct partners", "Marked at"],
          generic.map((g) => [
            String(g.id),
            g.field === "phoneNumber" ? "phone" : g.field,
            valueCell(g.field, g.value),
            String(g.partners),
            el("time", { datetime: g.markedAt || "", text: shortTime(g.markedAt) }),
          ]),
          "generic-table"
        )
      );
    }
    box.append(el("h2", { text: "Blocked patterns" }));
    for (const field of ["email", "phoneNumber"]) {
      const patterns = (raw.blocked && raw.blocked[field]) || [];
      box.append(
        el("h3", { text: field === "email" ? "Emails" : "Phones" }),
        patterns.length
          ? el("ul", { class: "patterns" }, patterns.map((p) => el("li", {}, el("code", { text: p }))))
          : el("p", { text: "none" })
      );
    }
    box.append(el("p", { text: "Suppressed values (kept as keyed hashes only): " + (raw.suppressed || 0) }));
  }

  // ---- Search ------------------------------------------------------------------------

  function table(headers, rows, className) {
    return el(
      "table",
      { class: className || "" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c)))))
    );
  }

  function valueList(field, values) {
    if (!values || !values.length) return el("span", { class: "none", text: "—" });
    const cls = "values" + (values.length > 6 ? " many" : "");
    return el("ul", { class: cls }, values.map((v) => el("li", {}, valueCell(field, v))));
  }

  function personsTable(persons, className) {
    return table(
      ["Person (primary id)", "Emails", "Phones", "Contacts"],
      persons.map((p) => [
        personLink(p.primaryContactId),
        valueList("email", p.emails),
        valueList("phoneNumber", p.phoneNumbers),
        String(1 + (p.secondaryContactIds || []).length),
      ]),
      className
    );
  }

  function renderResults() {
    const box = clear($("search-results"));
    if (state.results === null) return;
    if (!state.results.length) {
      box.append(el("p", { class: "empty", text: "No person holds this email or phone." }));
      return;
    }
    box.append(
      el("p", { text: state.results.length === 1 ? "One person:" : state.results.length + " persons:" }),
      personsTable(state.results, "results")
    );
  }

  async function search(event) {
    event.preventDefault();
    const email = $("search-email").value.trim();
    const phone = $("search-phone").value.trim();
    const errorBox = $("search-error");
    errorBox.textContent = "";
    if (!email && !phone) {
      errorBox.textContent = "Type an email or a phone number.";
      return;
    }
    const body = {};
    if (email) body.email = email;
    if (phone) body.phoneNumber = phone;
    setStatus("Searching…");
    await loadGuards();
    const result = await api("POST", "/lookup", body);
    setStatus("");
    if (!result.ok) {
      const field = result.data && result.data.field;
      errorBox.textContent = (field ? (field === "phoneNumber" ? "Phone: " : "Email: ") : "") + errorText(result);
      state.results = null;
      renderResults();
      return;
    }
    state.results = result.data.persons || [];
    renderResults();
  }

  // ---- Views and routing -------------------------------------------------------------

  function showView(id) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
  }

  function route() {
    const hash = location.hash || "#/";
    const match = /^#\/person\/(\d+)$/.exec(hash);
    if (match) {
      showPerson(Number(match[1]));
    } else if (hash === "#/guards") {
      showGuards();
    } else {
      showView("search-view");
      renderResults();
    }
  }

  // ---- A person ----------------------------------------------------------------------

  async function showPerson(id) {
    const started = performance.now();
    showView("person-view");
    state.personId = id;
    state.picked = [];
    document.body.dataset.renderedPerson = "";
    $("person-title").textContent = "Person of contact #" + id;
    clear($("person-summary")).append(el("p", { text: "Loading…" }));
    for (const box of ["graph", "contacts", "why-answer", "why-picked", "history", "person-erase"]) clear($(box));
    $("graph-note").hidden = true;
    $("person-erase").hidden = true;
    const erasure = state.lastErasure;
    state.lastErasure = null;
    renderErasureResult(erasure);

    const enc = encodeURIComponent(id);
    const [person, graph, history] = await Promise.all([
      api("GET", "/persons/" + enc),
      api("GET", "/persons/" + enc + "/graph"),
      api("GET", "/persons/" + enc + "/history"),
      loadGuards(),
    ]);
    if (state.personId !== id) return; // the person navigated on meanwhile
    const summary = clear($("person-summary"));
    if (!person.ok) {
      $("person-title").textContent = "Contact #" + id;
      summary.append(
        el("p", { class: "error", text: person.status === 404 ? "No live contact has id " + id + " (never existed, or erased)." : errorText(person) })
      );
      return;
    }
    const contact = person.data.contact;
    $("person-title").textContent = "Person #" + contact.primaryContactId;
    const size = 1 + contact.secondaryContactIds.length;
    summary.append(
      el(
        "dl",
        { class: "summary" },
        el("dt", { text: "Primary contact" }),
        el("dd", { text: "#" + contact.primaryContactId + (id !== contact.primaryContactId ? " (you asked for contact #" + id + ")" : "") }),
        el("dt", { text: "Contacts" }),
        el("dd", { text: String(size) }),
        el("dt", { text: "Emails" }),
        el("dd", {}, erasableValues("email", contact.emails)),
        el("dt", { text: "Phones" }),
        el("dd", {}, erasableValues("phoneNumber", contact.phoneNumbers))
      )
    );
    renderEraseControls(contact);
    if (graph.ok) {
      state.graph = graph.data;
      renderGraph(graph.data);
      renderContacts(graph.data);
    } else {
      state.graph = null;
      $("graph").append(el("p", { class: "error", text: "The graph is not available: " + errorText(graph) }));
    }
    renderPicked();
    renderHistory(history);
    const ms = performance.now() - started;
    document.body.dataset.renderMs = ms.toFixed(1); // from the route (API calls included)
    document.body.dataset.renderedAt = performance.now().toFixed(1); // since navigation start
    document.body.dataset.renderedPerson = String(id);
  }

  function renderContacts(graph) {
    const rows = graph.contacts.map((c) => [
      el("span", { class: "cid", text: "#" + c.id }),
      valueCell("email", c.email),
      valueCell("phoneNumber", c.phoneNumber),
      c.linkPrecedence === "primary" ? el("strong", { text: "primary" }) : "secondary",
      el("time", { datetime: c.createdAt, text: shortTime(c.createdAt) }),
      el("button", {
        type: "button",
        class: "pick",
        "data-contact": c.id,
        "aria-pressed": "false",
        "aria-label": "Pick contact " + c.id,
        text: "Pick",
        onclick: () => pick(c.id),
      }),
    ]);
    clear($("contacts")).append(table(["Id", "Email", "Phone", "Role", "Created", "Why"], rows, "contacts"));
  }

  function shortTime(iso) {
    if (!iso) return "";
    // 2026-11-30T13:45:12.123456+00:00 -> 2026-11-30 13:45:12 UTC (the stored zone is UTC)
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(iso);
    return m ? m[1] + " " + m[2] + (/(Z|\+00:00)$/.test(iso) ? " UTC" : "") : iso;
  }

  // ---- The graph, drawn in SVG -------------------------------------------------------

  function edgeKey(a, b) {
    return a < b ? a + "-" + b : b + "-" + a;
  }

  function edgeText(edge) {
    if (edge.via === "email") return "email " + edge.value;
    if (edge.via === "phoneNumber") return "phone " + edge.value;
    const link = edge.link || {};
    return "link " + [link.email, link.phoneNumber].filter(Boolean).join(" + ");
  }

  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  /**
   * Positions for the contacts: a force-directed layout (Fruchterman-Reingold) started
   * from rings around the primary by edge distance, so it is deterministic and the
   * primary sits near the middle. O(n^2) per step; n is at most the graph's limit.
   */
  function layout(contacts, pairs, primaryId) {
    const n = contacts.length;
    const index = new Map(contacts.map((c, i) => [c.id, i]));
    const adjacency = contacts.map(() => []);
    const springs = [];
    for (const [a, b] of pairs) {
      const i = index.get(a);
      const j = index.get(b);
      if (i === undefined || j === undefined || i === j) continue;
      adjacency[i].push(j);
      adjacency[j].push(i);
      springs.push([i, j]);
    }
    // Rings by BFS distance from the primary; unreachable contacts on an outer ring.
    const depth = new Array(n).fill(-1);
    const root = index.has(primaryId) ? index.get(primaryId) : 0;
    const queue = n ? [root] : [];
    if (n) depth[root] = 0;
    for (let q = 0; q < queue.length; q++) {
      for (const j of adjacency[queue[q]]) {
        if (depth[j] < 0) {
          depth[j] = depth[queue[q]] + 1;
          queue.push(j);
        }
      }
    }
    const maxDepth = Math.max(0, ...depth);
    for (let i = 0; i < n; i++) if (depth[i] < 0) depth[i] = maxDepth + 1;
    const rings = new Map();
    for (let i = 0; i < n; i++) {
      if (!rings.has(depth[i])) rings.set(depth[i], []);
      rings.get(depth[i]).push(i);
    }
    // Ideal edge length, in SVG units: room for a label on each line of a small person.
    const k = n <= 12 ? 140 : n <= 40 ? 100 : 70;
    const reach2 = (3 * k) * (3 * k);
    const x = new Float64Array(n);
    const y = new Float64Array(n);
    for (const [d, members] of rings) {
      const radius = d * k;
      members.forEach((i, m) => {
        const angle = (2 * Math.PI * m) / members.length + (d - 1) * 0.5; // 2 contacts: a row
        x[i] = radius * Math.cos(angle);
        y[i] = radius * Math.sin(angle);
      });
    }
    const steps = n <= 2 ? 0 : n <= 60 ? 220 : 120;
    let temperature = k * 2;
    const dx = new Float64Array(n);
    const dy = new Float64Array(n);
    for (let step = 0; step < steps; step++) {
      dx.fill(0);
      dy.fill(0);
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          let ex = x[i] - x[j];
          let ey = y[i] - y[j];
          let d2 = ex * ex + ey * ey;
          if (d2 < 0.01) {
            ex = 0.1 * (i - j);
            ey = 0.1;
            d2 = ex * ex + ey * ey;
          }
          if (d2 > reach2) continue; // far contacts do not push: a large person stays compact
          const f = (k * k) / d2; // repulsion k^2/d, along the unit vector (e/d)
          dx[i] += ex * f;
          dy[i] += ey * f;
          dx[j] -= ex * f;
          dy[j] -= ey * f;
        }
      }
      for (const [i, j] of springs) {
        const ex = x[i] - x[j];
        const ey = y[i] - y[j];
        const d = Math.sqrt(ex * ex + ey * ey) || 0.01;
        const f = d / k; // attraction d^2/k, along the unit vector
        dx[i] -= ex * f;
        dy[i] -= ey * f;
        dx[j] += ex * f;
        dy[j] += ey * f;
      }
      for (let i = 0; i < n; i++) {
        // a weak pull to the middle keeps separate pieces (a cut graph) on the page
        dx[i] -= x[i] * 0.01;
        dy[i] -= y[i] * 0.01;
        const d = Math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]) || 1;
        const move = Math.min(d, temperature);
        x[i] += (dx[i] / d) * move;
        y[i] += (dy[i] / d) * move;
      }
      temperature = Math.max(1, temperature * 0.975);
    }
    const positions = new Map();
    contacts.forEach((c, i) => positions.set(c.id, { x: x[i], y: y[i] }));
    return positions;
  }

  function renderGraph(graph) {
    const box = clear($("graph"));
    const contacts = graph.contacts || [];
    const edges = graph.edges || [];
    const note = $("graph-note");
    const notes = [];
    if (graph.truncated) {
      notes.push(
        "This person has " + graph.totalContacts + " contacts: the picture shows the " +
          contacts.length + " nearest the primary (limit " + graph.limit + ")."
      );
    }
    // Parallel reasons between one pair are drawn as one line with every reason.
    const byPair = new Map();
    for (const edge of edges) {
      const key = edgeKey(edge.a, edge.b);
      if (!byPair.has(key)) byPair.set(key, { a: Math.min(edge.a, edge.b), b: Math.max(edge.a, edge.b), reasons: [] });
      byPair.get(key).reasons.push(edge);
    }
    const lines = [...byPair.values()];
    const labelled = lines.length <= EDGE_LABEL_LIMIT;
    if (!labelled) notes.push("Edge labels are hidden at this size: hover or focus a line, or read the contacts table.");
    note.textContent = notes.join(" ");
    note.hidden = !notes.length;

    const positions = layout(contacts, lines.map((l) => [l.a, l.b]), graph.primaryContactId);
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (const p of positions.values()) {
      minX = Math.min(minX, p.x);
      minY = Math.min(minY, p.y);
      maxX = Math.max(maxX, p.x);
      maxY = Math.max(maxY, p.y);
    }
    if (!positions.size) minX = minY = maxX = maxY = 0;
    const margin = 70;
    const width = maxX - minX + 2 * margin;
    const height = maxY - minY + 2 * margin;
    const svgEl = sv("svg", {
      viewBox: [minX - margin, minY - margin, width, height].map((v) => v.toFixed(1)).join(" "),
      role: "group",
      "aria-label": "Graph of " + contacts.length + " contacts and " + lines.length + " connections",
      class: labelled ? "labelled" : "unlabelled",
    });
    const edgeLayer = sv("g", { class: "edges" });
    const labelLayer = sv("g", { class: "edge-labels" });
    const nodeLayer = sv("g", { class: "nodes" });
    for (const line of lines) {
      const p = positions.get(line.a);
      const q = positions.get(line.b);
      if (!p || !q) continue;
      const via = line.reasons.length === 1 ? line.reasons[0].via : "many";
      const text = line.reasons.map(edgeText).join(" · ");
      const group = sv(
        "g",
        { class: "edge " + via, "data-edge": edgeKey(line.a, line.b), "data-a": line.a, "data-b": line.b },
        sv("line", { x1: p.x.toFixed(1), y1: p.y.toFixed(1), x2: q.x.toFixed(1), y2: q.y.toFixed(1) }),
        sv("title", { text: "#" + line.a + " — #" + line.b + ": " + text })
      );
      edgeLayer.append(group);
      if (labelled) {
        labelLayer.append(
          sv("text", {
            class: "edge-label " + via,
            "data-edge": edgeKey(line.a, line.b),
            x: ((p.x + q.x) / 2).toFixed(1),
            y: ((p.y + q.y) / 2 - 4).toFixed(1),
            "text-anchor": "middle",
            text: shorten(line.reasons.map((r) => (r.via === "link" ? "link" : r.value)).join(" · "), 28),
          })
        );
      }
    }
    for (const c of contacts) {
      const p = positions.get(c.id);
      const primary = c.id === graph.primaryContactId;
      const describe = [c.email, c.phoneNumber].filter(Boolean).join(", ") || "no value";
      const node = sv(
        "g",
        {
          class: "node" + (primary ? " primary" : ""),
          "data-contact": c.id,
          transform: "translate(" + p.x.toFixed(1) + " " + p.y.toFixed(1) + ")",
          tabindex: "0",
          role: "button",
          "aria-pressed": "false",
          "aria-label": "Contact " + c.id + (primary ? ", primary" : "") + ": " + describe + ". Pick.",
        },
        sv("circle", { r: primary ? 17 : 12 }),
        sv("text", { class: "node-label", y: primary ? 32 : 26, "text-anchor": "middle", text: "#" + c.id + (primary ? " primary" : "") }),
        sv("title", { text: "#" + c.id + (primary ? " (primary)" : "") + ": " + describe })
      );
      node.addEventListener("click", () => pick(c.id));
      node.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          pick(c.id);
        }
      });
      nodeLayer.append(node);
    }
    svgEl.append(edgeLayer, labelLayer, nodeLayer);
    box.append(svgEl);
    // Fit the frame's width when that keeps labels readable (scale >= 0.6); a larger
    // person keeps that scale and the frame scrolls, centred on the primary.
    const available = Math.max(320, box.clientWidth - 4);
    const scale = Math.min(1.25, Math.max(0.6, available / width));
    svgEl.setAttribute("width", Math.round(width * scale));
    svgEl.setAttribute("height", Math.round(height * scale));
    const centre = positions.get(graph.primaryContactId);
    if (centre) {
      box.scrollLeft = (centre.x - minX + margin) * scale - box.clientWidth / 2;
      box.scrollTop = (centre.y - minY + margin) * scale - box.clientHeight / 2;
    }
  }

  // ---- Why are these two one person --------------------------------------------------

  function pick(id) {
    const at = state.picked.indexOf(id);
    if (at >= 0) state.picked.splice(at, 1);
    else {
      if (state.picked.length === 2) state.picked = [];
      state.picked.push(id);
    }
    renderPicked();
    if (state.picked.length === 2) explain(state.picked[0], state.picked[1]);
  }

  function renderPicked() {
    const picked = new Set(state.picked);
    for (const node of document.querySelectorAll("[data-contact]")) {
      const on = picked.has(Number(node.getAttribute("data-contact")));
      node.classList.toggle("picked", on);
      node.setAttribute("aria-pressed", on ? "true" : "false");
    }
    const line = clear($("why-picked"));
    if (!state.picked.length) {
      line.append("No contact picked.");
    } else {
      line.append(
        "Picked: " + state.picked.map((id) => "#" + id).join(" and ") + " ",
        el("button", { type: "button", id: "why-clear", text: "Clear", onclick: () => { state.picked = []; renderPicked(); } })
      );
    }
    if (state.picked.length < 2) {
      clear($("why-answer"));
      highlightPath(null);
    }
  }

  async function explain(a, b) {
    const answer = clear($("why-answer"));
    answer.append(el("p", { text: "Looking for the chain…" }));
    const result = await api("GET", "/persons/" + encodeURIComponent(state.personId) + "/why?a=" + encodeURIComponent(a) + "&b=" + encodeURIComponent(b));
    if (state.picked.length !== 2 || state.picked[0] !== a || state.picked[1] !== b) return;
    clear(answer);
    if (!result.ok) {
      answer.append(el("p", { class: "error", text: result.status === 404 ? "#" + a + " and #" + b + " are not one person." : errorText(result) }));
      highlightPath(null);
      return;
    }
    const path = result.data;
    highlightPath(path);
    const steps = path.edges.map((edge, i) => {
      const from = path.contactIds[i];
      const to = path.contactIds[i + 1];
      let reason;
      if (edge.via === "email") reason = ["share the email ", el("strong", { text: edge.value })];
      else if (edge.via === "phoneNumber") reason = ["share the phone ", el("strong", { text: edge.value })];
      else {
        const link = edge.link || {};
        reason = [
          "were asserted together: a request gave ",
          el("strong", { text: link.email || "?" }),
          " with ",
          el("strong", { text: link.phoneNumber || "?" }),
          link.createdAt ? " (" + shortTime(link.createdAt) + (link.cause ? ", cause " + link.cause : "") + ")" : "",
        ];
      }
      return el("li", {}, "#" + from + " and #" + to + " ", reason);
    });
    answer.append(
      el(
        "p",
        { class: "why-summary" },
        path.edges.length === 0
          ? "#" + a + " and #" + b + " are the same contact."
          : "#" + a + " and #" + b + " are one person through " + path.edges.length + (path.edges.length === 1 ? " step:" : " steps:")
      ),
      el("ol", { class: "chain" }, steps)
    );
  }

  function highlightPath(path) {
    const svgEl = document.querySelector("#graph svg");
    if (!svgEl) return;
    for (const extra of svgEl.querySelectorAll(".path-extra")) extra.remove();
    svgEl.classList.toggle("has-path", Boolean(path));
    for (const node of svgEl.querySelectorAll(".on-path")) node.classList.remove("on-path");
    if (!path) return;
    const ids = path.contactIds || [];
    for (const id of ids) {
      const node = svgEl.querySelector('.node[data-contact="' + Number(id) + '"]');
      if (node) node.classList.add("on-path");
    }
    const edgeLayer = svgEl.querySelector(".edges");
    for (let i = 0; i + 1 < ids.length; i++) {
      const key = edgeKey(Number(ids[i]), Number(ids[i + 1]));
      const drawn = svgEl.querySelectorAll('[data-edge="' + key + '"]');
      if (drawn.length) {
        for (const part of drawn) part.classList.add("on-path");
        continue;
      }
      // The chain may use an edge the picture did not need: draw it for the highlight.
      const p = nodePosition(svgEl, ids[i]);
      const q = nodePosition(svgEl, ids[i + 1]);
      if (p && q) {
        edgeLayer.append(
          sv("g", { class: "edge path-extra on-path", "data-edge": key },
            sv("line", { x1: p.x, y1: p.y, x2: q.x, y2: q.y }))
        );
      }
    }
  }

  function nodePosition(svgEl, id) {
    const node = svgEl.querySelector('.node[data-contact="' + Number(id) + '"]');
    if (!node) return null;
    const m = /translate\(([-\d.]+) ([-\d.]+)\)/.exec(node.getAttribute("transform") || "");
    return m ? { x: m[1], y: m[2] } : null;
  }

  // ---- History -----------------------------------------------------------------------

  function ids(list) {
    return (list || []).map((id) => "#" + id).join(", ") || "none";
  }

  function describeChange(change) {
    const p = change.payload || {};
    switch (change.kind) {
      case "person.created":
        return "Person #" + p.primaryContactId + " created with contact #" + p.contactId + ".";
      case "contact.added":
        return "Contact #" + p.contactId + " added to person #" + p.primaryContactId + ".";
      case "person.merged":
        return "Merged from person(s) " + ids(p.absorbedPrimaryIds) + " into person #" + p.primaryContactId +
          "; contacts moved: " + ids(p.movedContactIds) + ".";
      case "person.split":
        return "Person #" + p.previousPrimaryId + " split into " +
          (p.persons || []).map((x) => "#" + x.primaryContactId + " (contacts " + ids(x.contactIds) + ")").join(" and ") + ".";
      case "contacts.erased":
        return "Erasure on person #" + p.previousPrimaryId + ": values cleared from " + ids(p.clearedContactIds) +
          ", contacts removed: " + ids(p.tombstonedContactIds) + "; " +
          (p.primaryContactId === null || p.primaryContactId === undefined ? "nothing remains." : "the person is now #" + p.primaryContactId + ".");
      case "guard.marked":
        return "Guard #" + p.guardId + " marked (" + (p.reason || "no reason") + ").";
      case "guard.cleared":
        return "Guard #" + p.guardId + " cleared (" + (p.reason || "no reason") + ").";
      default:
        return JSON.stringify(p);
    }
  }

  const KIND_LABELS = {
    "person.created": "created",
    "contact.added": "added",
    "person.merged": "merged",
    "person.split": "split",
    "contacts.erased": "erased",
    "guard.marked": "guard marked",
    "guard.cleared": "guard cleared",
  };

  function renderHistory(result) {
    const list = clear($("history"));
    if (!result.ok) {
      list.append(el("li", { class: "error", text: "The history is not available: " + errorText(result) }));
      return;
    }
    const changes = result.data.changes || [];
    if (!changes.length) list.append(el("li", { text: "No recorded change." }));
    for (const change of changes) {
      const kind = String(change.kind || "");
      list.append(
        el(
          "li",
          { class: "change " + kind.replace(/[^a-z]/g, "-"), "data-kind": kind, "data-seq": change.seq },
          el("time", { datetime: change.at, text: shortTime(change.at) }),
          el("span", { class: "kind", text: KIND_LABELS[kind] || kind }),
          el("span", { class: "what", text: describeChange(change) }),
          change.cause ? el("span", { class: "cause", text: "cause " + change.cause }) : null
        )
      );
    }
    if (result.data.truncated) {
      list.append(el("li", { class: "note", text: "Only the oldest " + changes.length + " changes are listed." }));
    }
  }

  // ---- Erasure (admin) ---------------------------------------------------------------

  function canErase() {
    return state.role === "admin" || state.role === "open";
  }

  /** A person's values; with an admin key each has its own "Erase…" button. */
  function erasableValues(field, values) {
    if (!canErase() || !values || !values.length) return valueList(field, values);
    const kind = field === "email" ? "email" : "phone";
    return el(
      "ul",
      { class: "values erasable" + (values.length > 6 ? " many" : "") },
      values.map((value) => {
        const label = kind + " " + value;
        const body = field === "email" ? { email: value } : { phoneNumber: value };
        return el(
          "li",
          {},
          valueCell(field, value),
          el("button", {
            type: "button",
            class: "erase-value small",
            "aria-label": "Erase " + label,
            text: "Erase…",
            onclick: () => prepareErasure(body, label),
          })
        );
      })
    );
  }

  function renderEraseControls(contact) {
    const zone = clear($("person-erase"));
    zone.hidden = !canErase();
    if (zone.hidden) return;
    zone.append(
      el(
        "p",
        { class: "hint" },
        "Erasing a value (“Erase…” beside it) removes it from every contact, link and queued event, " +
          "then recomputes the person: a value that glued two people together splits them. " +
          "You see what will remain before anything is erased. "
      ),
      el("button", {
        type: "button",
        id: "erase-person",
        class: "danger",
        text: "Erase the whole person…",
        onclick: () =>
          prepareErasure(
            { personId: contact.primaryContactId, expectedPrimaryContactId: contact.primaryContactId },
            "every value of person #" + contact.primaryContactId
          ),
      })
    );
  }

  async function prepareErasure(body, label) {
    setStatus("Asking the server what this erasure would do…");
    const result = await api("POST", "/erasures", { ...body, dryRun: true });
    setStatus("");
    if (!result.ok) {
      showErasureError(result);
      return;
    }
    state.pending = { body, label };
    const answer = result.data;
    const confirmBody = clear($("confirm-body"));
    const erased = answer.erased || {};
    append(confirmBody, [
      el("p", {}, "You are about to erase ", el("strong", { text: label }), "."),
      el(
        "ul",
        {},
        el("li", { text: (erased.contacts || 0) + " contact(s) lose the value or disappear" }),
        el("li", { text: (erased.links || 0) + " link(s) are deleted" }),
        el("li", { text: (erased.events || 0) + " queued event(s) or dead letter(s) are deleted" })
      ),
      answer.persons && answer.persons.length
        ? [el("p", { text: answer.persons.length === 1 ? "Afterwards one person remains:" : "Afterwards " + answer.persons.length + " persons remain:" }), personsTable(answer.persons, "dry-run")]
        : el("p", { text: "Afterwards nothing of this person remains." }),
      el("p", { class: "warning", text: "This cannot be undone." }),
    ]);
    $("confirm-suppress").checked = false;
    $("confirm").returnValue = "";
    $("confirm").showModal();
    $("confirm-cancel").focus();
  }

  async function confirmClosed() {
    const dialog = $("confirm");
    const pending = state.pending;
    state.pending = null;
    if (dialog.returnValue !== "erase" || !pending) return;
    const body = { ...pending.body };
    if ($("confirm-suppress").checked) body.suppress = true;
    setStatus("Erasing…");
    const result = await api("POST", "/erasures", body);
    setStatus("");
    if (!result.ok) {
      showErasureError(result);
      return;
    }
    state.guards = undefined;
    state.lastErasure = { label: pending.label, answer: result.data };
    const persons = result.data.persons || [];
    // Stay on this person when its contact still lives; else the result alone.
    const still = persons.some((p) => p.primaryContactId === state.personId || (p.secondaryContactIds || []).includes(state.personId));
    if (still) showPerson(state.personId);
    else {
      const erasure = state.lastErasure;
      state.lastErasure = null;
      showView("person-view");
      $("person-title").textContent = "Erased";
      for (const box of ["person-summary", "graph", "contacts", "why-answer", "why-picked", "history", "person-erase"]) clear($(box));
      $("person-erase").hidden = true;
      $("graph-note").hidden = true;
      renderErasureResult(erasure);
    }
  }

  function renderErasureResult(erasure) {
    const box = clear($("erase-result"));
    box.hidden = !erasure;
    if (!erasure) return;
    const answer = erasure.answer;
    const erased = answer.erased || {};
    const persons = answer.persons || [];
    append(box, [
      el("h2", { text: "Erased " + erasure.label }),
      el("p", { text: (erased.contacts || 0) + " contact(s), " + (erased.links || 0) + " link(s) and " + (erased.events || 0) + " event(s) affected." }),
      persons.length
        ? [el("p", { text: persons.length === 1 ? "One person remains:" : persons.length + " persons remain:" }), personsTable(persons, "erase-persons")]
        : el("p", { text: "No person remains." }),
    ]);
    box.focus();
  }

  function showErasureError(result) {
    const box = clear($("erase-result"));
    box.hidden = false;
    let text = errorText(result);
    if (result.status === 403) text = "Your key may not erase (an admin key is needed): " + text;
    if (result.status === 409) text = "The person changed since this page was loaded; reload it and check again: " + text;
    box.append(el("p", { class: "error", role: "alert", text }));
  }

  // ---- Start -------------------------------------------------------------------------

  async function start() {
    $("key-form").addEventListener("submit", useKey);
    $("search-form").addEventListener("submit", search);
    $("forget-key").addEventListener("click", forgetKey);
    $("change-key").addEventListener("click", () => showKeyPanel("Enter another key."));
    $("confirm").addEventListener("close", confirmClosed);
    window.addEventListener("hashchange", route);
    await refreshRole();
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
