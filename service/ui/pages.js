// The dashboard's pages: each renders from the /v1 API into one element. Controls that change something
// carry the class `write-control` and are drawn only for a token with the write (or admin) scope.
"use strict";

const ALGORITHMS = ["iql", "cql", "combo", "awac", "bc"];
const FINISHED = ["succeeded", "failed", "cancelled"];

// Ids begin with their time, so two ids of one minute share a prefix: keep the kind (`iql-`) and the end.
const short = (id) => {
  if (!id || id.length <= 14) return id || "";
  const dash = id.indexOf("-");
  return `${dash > 0 && dash < 8 ? id.slice(0, dash + 1) : ""}…${id.slice(-8)}`;
};
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const link = (href, label, attributes = {}) => h("a", { href, ...attributes }, label);
const datasetLink = (name) => link(`#/datasets/${encodeURIComponent(name)}`, name);
const versionLink = (name, version) => link(`#/datasets/${encodeURIComponent(name)}/versions/${version}`, `${name}@${version}`);
const policyLink = (id) => (id ? link(`#/policies/${encodeURIComponent(id)}`, short(id), { title: id }) : "");
const jobLink = (id) => (id ? link(`#/jobs/${encodeURIComponent(id)}`, short(id), { title: id }) : "");

function table(id, headings, rows) {
  return h("table", { id }, h("thead", {}, h("tr", {}, headings.map((title) => h("th", {}, title)))), h("tbody", {}, rows));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, value]) => value !== undefined && value !== "").flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

function actionText(action) {
  return action.kind === "discrete" ? `discrete, n=${action.n}` : `continuous [${action.shape.join("×")}] in [${action.low.map(Charts.format)}]..[${action.high.map(Charts.format)}]`;
}

function sourcesText(sources) {
  return Object.entries(sources).map(([source, rows]) => `${source}: ${rows}`).join(", ");
}

// A table that pages with the list's cursor: `More` asks for the page after the last one shown.
async function pagedTable(id, path, params, headings, toRow) {
  const body = h("tbody", {});
  const count = h("span", { class: "count" });
  const more = h("button", { type: "button", class: "more" }, "More");
  let cursor;
  async function load() {
    const page = await listPage(path, { ...params, limit: 25, cursor });
    body.append(...page.data.map(toRow));
    cursor = page.next;
    more.hidden = !cursor;
    count.textContent = `${body.children.length} of ${page.count}`;
  }
  more.addEventListener("click", () => load().catch(showError));
  await load();
  return h("div", { class: "paged" }, h("table", { id }, h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))), body), h("p", {}, count, " ", more));
}

function showError(error) {
  if (error instanceof SignedOut) return;
  const message = h("p", { class: "error" }, error.message);
  document.getElementById("page").prepend(message);
}

// A form whose submit calls `action(values)`; errors are shown in the form, not thrown away.
function writeForm(id, legend, fields, action) {
  const status = h("p", { class: "form-status" });
  const form = h("form", { id, class: "write-control card" }, h("h3", {}, legend), fields, h("button", { type: "submit" }, legend), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "";
    status.className = "form-status";
    try {
      status.textContent = (await action(new FormData(form))) || "Done.";
    } catch (error) {
      if (error instanceof SignedOut) return;
      status.textContent = error.message;
      status.className = "form-status error";
    }
  });
  return form;
}

function field(label, name, input) {
  input.setAttribute("name", name);
  return h("label", {}, h("span", {}, label), input);
}

const Pages = {
  async datasets() {
    const list = await pagedTable("datasets", "/v1/datasets", {}, ["dataset", "environment", "observation", "action", "latest version", "rows", "episodes"], (d) =>
      h("tr", {}, h("td", {}, datasetLink(d.name)), h("td", {}, d.env_id || "—"), h("td", {}, `[${d.observation.shape.join("×")}] ${d.observation.dtype || ""}`),
        h("td", {}, actionText(d.action)), h("td", {}, versionLink(d.name, d.latest_version)), h("td", { class: "number" }, d.rows), h("td", { class: "number" }, d.episodes)));
    return h("section", {}, h("h2", {}, "Datasets"), list);
  },

  async dataset(name) {
    const path = `/v1/datasets/${encodeURIComponent(name)}`;
    const [dataset, versions] = await Promise.all([api(path), allPages(`${path}/versions`)]);
    versions.sort((a, b) => a.version - b.version);
    const sources = [...new Set(versions.flatMap((v) => Object.keys(v.sources)))].sort((a, b) => (a === "logged" ? -1 : b === "logged" ? 1 : a.localeCompare(b)));
    const growth = Charts.stackedBars(
      "Rows by source, version by version (logged rows beside each policy's collected rows)",
      versions.map((v) => `v${v.version}`),
      sources.map((source) => ({ name: source, values: versions.map((v) => v.sources[source] || 0) })),
    );
    growth.id = "growth";
    const table = await pagedTable("versions", `${path}/versions`, {}, ["version", "rows", "added", "episodes", "sources", "tags", "created"], (v) =>
      h("tr", {}, h("td", {}, versionLink(name, v.version)), h("td", { class: "number" }, v.rows), h("td", { class: "number" }, v.added_rows),
        h("td", { class: "number" }, v.episodes), h("td", {}, sourcesText(v.sources)), h("td", {}, v.tags.map((t) => h("span", { class: "tag" }, t))), h("td", {}, when(v.created_at))));
    const section = h("section", {}, h("h2", {}, `Dataset ${name}`),
      facts([["environment", dataset.env_id || "—"], ["observation", `[${dataset.observation.shape.join("×")}]`], ["action", actionText(dataset.action)],
        ["latest version", versionLink(name, dataset.latest_version)], ["rows", dataset.rows], ["episodes", dataset.episodes], ["created", when(dataset.created_at)],
        ["description", dataset.description || ""], ["metadata", Object.keys(dataset.metadata || {}).length ? JSON.stringify(dataset.metadata) : ""]]),
      growth, h("h3", {}, "Versions"), table);
    if (session.canWrite) {
      section.append(writeForm("tag-form", "Tag a version", [
        field("tag", "tag", h("input", { required: true, placeholder: "best" })),
        field("version", "version", h("input", { required: true, value: dataset.latest_version })),
      ], async (values) => {
        const moved = await api(`${path}/tags/${encodeURIComponent(values.get("tag"))}`, { method: "PUT", json: { version: versionValue(values.get("version")) } });
        return `Tag ${moved.name} now points at version ${moved.version}.`;
      }));
    }
    const policies = await pagedTable("dataset-policies", "/v1/policies", { dataset: name }, ["policy", "algorithm", "version", "parent"], (p) =>
      h("tr", {}, h("td", {}, policyLink(p.id)), h("td", {}, p.algorithm), h("td", {}, versionLink(p.dataset, p.version)), h("td", {}, policyLink(p.parent_policy) || "—")));
    section.append(h("h3", {}, "Policies trained on it"), policies);
    return section;
  },

  async version(name, reference) {
    const stats = await api(`/v1/datasets/${encodeURIComponent(name)}/versions/${encodeURIComponent(reference)}`);
    const plots = h("div", { class: "plots" });
    for (const [key, caption] of [["episode_return", "Episode returns"], ["episode_length", "Episode lengths"], ["reward", "Rewards"]]) {
      const distribution = stats[key];
      if (distribution.histogram) {
        const chart = Charts.histogram(`${caption} (${distribution.count}; mean ${Charts.format(distribution.mean)}, std ${Charts.format(distribution.std)})`, distribution.histogram);
        chart.id = `histogram-${key}`;
        plots.append(chart);
      } else {
        plots.append(h("p", { class: "note" }, distribution.count ? `${caption}: this version was committed before histograms were kept.` : `${caption}: none yet.`));
      }
    }
    for (const [key, caption] of [["observation", "Observation"], ["action", "Action"]]) {
      if (!stats[key]) continue;
      const chart = Charts.dimensions(`${caption}, per dimension: mean ± std, min..max`, stats[key]);
      chart.id = `dimensions-${key}`;
      plots.append(chart);
    }
    return h("section", {}, h("h2", {}, `${name}@${stats.version}`),
      facts([["dataset", datasetLink(name)], ["rows", stats.rows], ["added rows", stats.added_rows], ["episodes", stats.episodes],
        ["sources", sourcesText(stats.sources)], ["tags", stats.tags.join(", ")], ["created", when(stats.created_at)]]),
      plots);
  },

  async jobs() {
    const section = h("section", {}, h("h2", {}, "Jobs"));
    if (session.canWrite) section.append(await jobForm());
    section.append(await pagedTable("jobs", "/v1/jobs", {}, ["job", "kind", "algorithm", "on", "status", "progress", "attempts", "worker", "reason"], (job) =>
      h("tr", { "data-status": job.status }, h("td", {}, jobLink(job.id)), h("td", {}, job.kind), h("td", {}, job.algorithm || ""), h("td", {}, versionLink(job.dataset, job.version)),
        h("td", {}, h("span", { class: `status ${job.status}` }, job.status)), h("td", {}, progressBar(job.progress)), h("td", { class: "number" }, job.attempts),
        h("td", {}, job.worker || ""), h("td", { class: "reason" }, job.error || ""))));
    return section;
  },

  async job(id, signal) {
    const path = `/v1/jobs/${encodeURIComponent(id)}`;
    let job = await api(path);
    const history = await api(`${path}/metrics`);
    const summary = h("div", { id: "job-summary" });
    const curves = h("div", { id: "curves", class: "plots" });
    const cancel = h("button", { type: "button", id: "cancel-job", class: "write-control danger" }, "Cancel job");
    cancel.addEventListener("click", async () => {
      try { show(await api(`${path}/cancel`, { method: "POST" })); } catch (error) { showError(error); }
    });
    function show(current) {
      job = current;
      summary.replaceChildren(facts([["status", h("span", { class: `status ${job.status}`, id: "job-status" }, job.status)], ["progress", progressBar(job.progress)],
        ["step", job.step], ["kind", job.kind], ["algorithm", job.algorithm || ""], ["on", versionLink(job.dataset, job.version)], ["attempts", job.attempts],
        ["worker", job.worker || "—"], [job.status === "queued" ? "reason" : "error", job.error || ""], ["parent policy", policyLink(job.parent_policy)],
        ["policy", policyLink(job.policy_id)], ["created", when(job.created_at)], ["finished", when(job.finished_at)],
        ["result", Object.keys(job.result || {}).length ? JSON.stringify(job.result) : ""]]));
      cancel.hidden = !session.canWrite || FINISHED.includes(job.status);
    }
    function draw() {
      const names = [...new Set(history.flatMap((point) => Object.keys(point.values)))].sort();
      curves.replaceChildren(...(names.length ? names.map((name) => {
        const points = history.filter((point) => name in point.values).map((point) => [point.step, point.values[name]]);
        const chart = Charts.lines(name, [{ name, points }]);
        chart.dataset.metric = name;
        return chart;
      }) : [h("p", { class: "note" }, "No metrics reported yet.")]));
    }
    show(job);
    draw();
    // Each change of the job (a heartbeat) is an event; the metric points it brought are fetched after it.
    let queue = Promise.resolve();
    const fetchNewPoints = async () => {
      const last = history.length ? history[history.length - 1].step : undefined;
      const fresh = await api(last === undefined ? `${path}/metrics` : `${path}/metrics?after_step=${last}`, { signal });
      if (fresh.length) { history.push(...fresh); draw(); }
    };
    if (!FINISHED.includes(job.status)) {
      followEvents(`${path}/events`, (event) => {
        queue = queue.then(() => { if (event.event === "job") show(JSON.parse(event.data)); return fetchNewPoints(); }).catch(ignoreAbort);
      }, signal).then(() => queue.then(fetchNewPoints)).catch(ignoreAbort);
    }
    const section = h("section", {}, h("h2", {}, `Job ${id}`), summary);
    if (session.canWrite) section.append(cancel);
    section.append(h("h3", {}, "Learning curves"), curves);
    return section;
  },

  async policies() {
    const list = await pagedTable("policies", "/v1/policies", {}, ["policy", "algorithm", "trained on", "parent", "seed", "mean return", "created"], (p) => {
      const evaluations = (p.card.evaluations || []).filter((e) => typeof e.mean === "number");
      return h("tr", {}, h("td", {}, policyLink(p.id)), h("td", {}, p.algorithm), h("td", {}, versionLink(p.dataset, p.version)), h("td", {}, policyLink(p.parent_policy) || "—"),
        h("td", { class: "number" }, p.seed), h("td", { class: "number" }, evaluations.length ? Charts.format(evaluations[evaluations.length - 1].mean) : "—"), h("td", {}, when(p.created_at)));
    });
    return h("section", {}, h("h2", {}, "Policies"), list);
  },

  async policy(id) {
    const policy = await api(`/v1/policies/${encodeURIComponent(id)}`);
    const card = policy.card;
    const downloads = h("p", { id: "downloads" }, policy.formats.map((format) =>
      h("button", { type: "button", class: "download", "data-format": format, onclick: () => download(`/v1/policies/${encodeURIComponent(id)}/artifact?format=${format}`, `${id}-${format}`).catch(showError) }, `Download ${format}`)));
    const evaluations = card.evaluations || [];
    const evaluationTable = table("evaluations", ["method", "estimate", "interval", "episodes", "on", "job", "time"], evaluations.map((e) => {
      const estimate = e.estimate !== undefined ? e.estimate : e.mean;
      const interval = e.low !== undefined ? `[${Charts.format(e.low)}, ${Charts.format(e.high)}]` : e.std !== undefined ? `± ${Charts.format(e.std)} (std)` : "";
      return h("tr", {}, h("td", {}, e.method || "env"), h("td", { class: "number" }, Charts.format(estimate)), h("td", {}, interval), h("td", { class: "number" }, e.episodes),
        h("td", {}, e.version !== undefined ? versionLink(policy.dataset, e.version) : ""), h("td", {}, jobLink(e.job_id)), h("td", {}, when(e.time)));
    }));
    const returns = evaluations.filter((e) => Array.isArray(e.returns) && e.returns.length);
    const section = h("section", {}, h("h2", {}, `Policy ${id}`),
      facts([["algorithm", policy.algorithm], ["trained on", versionLink(policy.dataset, policy.version)], ["parent policy", policyLink(policy.parent_policy) || "—"],
        ["job", jobLink(policy.job_id)], ["seed", policy.seed], ["steps", card.steps], ["params", JSON.stringify(policy.params)], ["device", card.device || ""],
        ["torch", card.torch_version || ""], ["code", card.code_version || ""], ["created", when(policy.created_at)]]),
      downloads, h("h3", {}, "Lineage"), await lineage(policy), h("h3", {}, "Evaluations"), evaluations.length ? evaluationTable : h("p", { class: "note" }, "Not evaluated yet."));
    if (returns.length) {
      const chart = Charts.lines("Environment evaluations: the return of each episode", returns.map((e, index) => ({ name: `evaluation ${index + 1}`, points: e.returns.map((r, i) => [i + 1, r]) })), { dots: true });
      chart.id = "evaluation-returns";
      section.append(chart);
    }
    section.append(h("details", {}, h("summary", {}, "The whole card"), h("pre", { id: "card" }, JSON.stringify(card, null, 2))));
    return section;
  },

  async sweeps() {
    const list = await pagedTable("sweeps", "/v1/sweeps", {}, ["sweep", "on", "algorithms", "status", "trained", "evaluated", "method", "created"], (sweep) =>
      h("tr", { "data-status": sweep.status }, h("td", {}, link(`#/sweeps/${encodeURIComponent(sweep.id)}`, short(sweep.id), { title: sweep.id })),
        h("td", {}, versionLink(sweep.dataset, sweep.version)), h("td", {}, sweep.algorithms.join(", ")), h("td", {}, h("span", { class: `status ${sweep.status}` }, sweep.status)),
        h("td", {}, countsText(sweep.train)), h("td", {}, countsText(sweep.evaluations)), h("td", {}, sweep.method), h("td", {}, when(sweep.created_at))));
    return h("section", {}, h("h2", {}, "Sweeps"), list);
  },

  async sweep(id) {
    const sweep = await api(`/v1/sweeps/${encodeURIComponent(id)}`);
    const board = sweep.leaderboard;
    const interval = (entry) => (entry.low !== null && entry.low !== undefined ? `[${Charts.format(entry.low)}, ${Charts.format(entry.high)}]` : "");
    const leaderboard = table("leaderboard", ["rank", "algorithm", "params", "seed", `estimate (${sweep.method})`, "interval", "env return", "policy", "train job", ""], board.entries.map((entry) =>
      h("tr", {}, h("td", { class: "number" }, entry.rank ?? "—"), h("td", {}, entry.algorithm), h("td", {}, JSON.stringify(entry.params)), h("td", { class: "number" }, entry.seed),
        h("td", { class: "number" }, entry.estimate === null ? "" : Charts.format(entry.estimate)), h("td", {}, interval(entry)),
        h("td", { class: "number" }, entry.env_return === null ? "" : Charts.format(entry.env_return)), h("td", {}, policyLink(entry.policy_id)),
        h("td", {}, jobLink(entry.train_job), " ", entry.train_status), h("td", { class: "reason" }, entry.error || ""))));
    const compared = board.entries.filter((entry) => entry.estimate !== null && entry.env_return !== null);
    const section = h("section", {}, h("h2", {}, `Sweep ${id}`),
      facts([["status", h("span", { class: `status ${sweep.status}` }, sweep.status)], ["on", versionLink(sweep.dataset, sweep.version)], ["split", JSON.stringify(sweep.split)],
        ["grid", `${sweep.algorithms.join(", ")} × ${JSON.stringify(sweep.params)} × seeds ${sweep.seeds.join(", ")}`], ["steps", sweep.steps],
        ["trained", countsText(sweep.train)], ["evaluated", countsText(sweep.evaluations)], ["compared", board.compared],
        ["Spearman", board.spearman === null ? "—" : Charts.format(board.spearman)], ["regret@1", board.regret_at_1 === null ? "—" : Charts.format(board.regret_at_1)],
        ["created", when(sweep.created_at)]]),
      h("h3", {}, "Leaderboard"), leaderboard);
    if (compared.length) {
      const chart = Charts.scatter(`Each policy's estimate against its return in the environment (${compared.length})`,
        compared.map((entry) => ({ x: entry.estimate, y: entry.env_return, label: `${entry.algorithm} ${JSON.stringify(entry.params)} seed ${entry.seed}` })),
        // independent axes: an estimate is a discounted return, the environment's return is not
        { xLabel: `estimate (${sweep.method}, discount ${sweep.discount})`, yLabel: "env return" });
      chart.id = "estimates";
      section.append(chart);
    }
    if (session.canWrite && sweep.status === "running") {
      const cancel = h("button", { type: "button", id: "cancel-sweep", class: "write-control danger" }, "Cancel sweep");
      cancel.addEventListener("click", async () => {
        try { await api(`/v1/sweeps/${encodeURIComponent(id)}/cancel`, { method: "POST" }); route(); } catch (error) { showError(error); }
      });
      section.append(cancel);
    }
    return section;
  },
};

function countsText(counts) {
  const parts = ["succeeded", "running", "queued", "failed", "cancelled"].filter((status) => counts[status]).map((status) => `${counts[status]} ${status}`);
  return `${parts.join(", ") || "none"} of ${counts.total}`;
}

function versionValue(text) {
  return /^\d+$/.test(text) ? Number(text) : text;
}

function ignoreAbort(error) {
  if (error.name !== "AbortError" && !(error instanceof SignedOut)) showError(error);
}

function progressBar(progress) {
  const percent = Math.round((progress || 0) * 100);
  return h("span", { class: "progress", title: `${percent}%` }, h("span", { style: `width:${percent}%` }), h("b", {}, `${percent}%`));
}

// dataset version -> policy -> the versions it collected (rows from `policy:<id>`) -> policies fine-tuned from it.
async function lineage(policy) {
  const [versions, policies] = await Promise.all([
    allPages(`/v1/datasets/${encodeURIComponent(policy.dataset)}/versions`),
    allPages("/v1/policies", { dataset: policy.dataset }),
  ]);
  versions.sort((a, b) => a.version - b.version);
  const source = `policy:${policy.id}`;
  const collected = versions.filter((v, index) => (v.sources[source] || 0) > (index ? versions[index - 1].sources[source] || 0 : 0));
  const children = policies.filter((p) => p.parent_policy === policy.id).sort((a, b) => a.version - b.version);
  const versionNode = (v) => ({ id: `v${v}`, label: `${policy.dataset}@${v}`, kind: "version", href: `#/datasets/${encodeURIComponent(policy.dataset)}/versions/${v}` });
  const policyNode = (p, kind) => ({ id: p, label: `${kind === "self" ? "▶ " : ""}policy ${short(p)}`, title: p, kind: `policy ${kind}`, href: `#/policies/${encodeURIComponent(p)}` });
  const first = [versionNode(policy.version)];
  const edges = [[`v${policy.version}`, policy.id]];
  if (policy.parent_policy) {
    first.push(policyNode(policy.parent_policy, "parent"));
    edges.push([policy.parent_policy, policy.id]);
  }
  const layers = [first, [policyNode(policy.id, "self")]];
  if (collected.length) {
    layers.push(collected.map((v) => versionNode(v.version)));
    for (const v of collected) edges.push([policy.id, `v${v.version}`]);
  }
  if (children.length) {
    layers.push(children.map((child) => policyNode(child.id, "child")));
    for (const child of children) {
      const learnedFrom = collected.filter((v) => v.version <= child.version).pop();
      edges.push([learnedFrom ? `v${learnedFrom.version}` : policy.id, child.id]);
    }
  }
  const graph = Charts.layered("Lineage: the data it learned from, the data it collected, the policies fine-tuned from it", layers, edges);
  graph.id = "lineage";
  return graph;
}

async function jobForm() {
  const datasets = await allPages("/v1/datasets", {}, 500);
  const kind = h("select", {}, ["train", "collect", "evaluate"].map((k) => h("option", { value: k }, k)));
  const only = (kinds, element) => { element.dataset.kinds = kinds; return element; };
  const fields = [
    field("kind", "kind", kind),
    field("dataset", "dataset", h("select", { required: true }, datasets.map((d) => h("option", { value: d.name }, d.name)))),
    field("version", "version", h("input", { value: "latest", required: true })),
    only("train", field("algorithm", "algorithm", h("select", {}, ALGORITHMS.map((a) => h("option", { value: a }, a))))),
    only("train evaluate", field("steps", "steps", h("input", { type: "number", min: 1, placeholder: "default" }))),
    field("seed", "seed", h("input", { type: "number", min: 0, value: 0 })),
    only("train", field("fine-tune from policy", "parent_policy", h("input", { placeholder: "none" }))),
    only("collect evaluate", field("policy", "policy", h("input", {}))),
    only("collect evaluate", field("episodes", "episodes", h("input", { type: "number", min: 1, value: 5 }))),
    only("evaluate", field("method", "method", h("select", {}, ["env", "fqe", "model"].map((m) => h("option", { value: m }, m))))),
  ];
  const showFields = () => fields.forEach((f) => { if (f.dataset.kinds) f.hidden = !f.dataset.kinds.split(" ").includes(kind.value); });
  kind.addEventListener("change", showFields);
  showFields();
  return writeForm("job-form", "Submit a job", fields, async (values) => {
    const number = (name) => (values.get(name) ? Number(values.get(name)) : undefined);
    const chosen = values.get("kind");
    const job = { kind: chosen, dataset: values.get("dataset"), version: versionValue(values.get("version")), seed: number("seed") || 0 };
    if (chosen === "train") {
      Object.assign(job, { algorithm: values.get("algorithm"), steps: number("steps"), parent_policy: values.get("parent_policy") || undefined });
    } else if (chosen === "collect") {
      job.collect = { policy: values.get("policy"), episodes: number("episodes") };
    } else {
      job.evaluate = { policy: values.get("policy"), episodes: number("episodes"), method: values.get("method"), steps: number("steps") };
    }
    const created = await api("/v1/jobs", { method: "POST", json: JSON.parse(JSON.stringify(job)) });
    location.hash = `#/jobs/${encodeURIComponent(created.id)}`;
    return `Job ${created.id} submitted.`;
  });
}
