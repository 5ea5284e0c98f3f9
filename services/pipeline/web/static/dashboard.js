// leadflow dashboard: fills the server's pages from the REST API, with the session
// cookie the sign-in set. Text goes in with textContent only, never as HTML.
"use strict";

(() => {
  const LIVE_ROWS = 50;

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function signIn() {
    const here = location.pathname + location.search;
    location.assign("/dashboard/sign-in?next=" + encodeURIComponent(here));
  }

  async function api(path, params = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") {
        url.searchParams.set(name, value);
      }
    }
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      signIn();
      throw new ApiError(401, "signed out");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, detail);
    }
    return response.json();
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const number = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
  const integer = new Intl.NumberFormat("en");
  const percent = new Intl.NumberFormat("en", { style: "percent", maximumFractionDigits: 1 });
  const when = new Intl.DateTimeFormat("en-GB", {
    dateStyle: "medium",
    timeStyle: "medium",
    timeZone: "UTC",
  });

  const share = (rate) => (rate === null || rate === undefined ? "–" : percent.format(rate));
  const stamp = (text) => (text ? when.format(new Date(text)) + " UTC" : "–");
  const day = (text) => text.slice(0, 10);
  const days = (value) => (value === null || value === undefined ? "–" : number.format(value));

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function stageBadge(stage) {
    if (!stage) return el("span", { className: "stage none" }, "–");
    return el("span", { className: `stage stage-${stage}` }, stage);
  }

  function cell(content, numeric = false, attributes = {}) {
    const className = numeric ? "num" : "";
    return el("td", className ? { className, ...attributes } : attributes, content);
  }

  function fill(table, rows, empty) {
    const body = table.tBodies[0];
    body.replaceChildren(...rows);
    if (!rows.length) {
      const columns = table.tHead ? table.tHead.rows[table.tHead.rows.length - 1].cells.length : 1;
      body.append(el("tr", {}, el("td", { colspan: String(columns), className: "empty" }, empty)));
    }
  }

  function say(id, text, kind = "") {
    const node = document.getElementById(id);
    if (!node) return;
    node.textContent = text;
    node.className = kind ? `status ${kind}` : "status";
  }

  function failed(id, error) {
    if (error instanceof ApiError && error.status === 404) {
      say(id, "This server does not offer this view.", "error");
    } else if (error instanceof ApiError && error.status !== 401) {
      say(id, `Could not load: ${error.message} (${error.status}).`, "error");
    } else if (!(error instanceof ApiError)) {
      say(id, `Could not load: ${error.message}.`, "error");
    }
  }

  function leadLink(leadId) {
    const href = "/dashboard/leads/" + leadId.split("/").map(encodeURIComponent).join("/");
    return el("a", { href }, leadId);
  }

  function bar(fraction, label) {
    const inner = el("span", { className: "fill" });
    inner.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    return el("span", { className: "bar", title: label }, inner);
  }

  // --- the funnel, conversions, velocity, time in stage, sources -------------------

  function range() {
    const query = new URLSearchParams(location.search);
    const from = query.get("from") || "";
    const to = query.get("to") || "";
    document.getElementById("from").value = from;
    document.getElementById("to").value = to;
    const params = {};
    if (from) params.from = `${from}T00:00:00Z`;
    if (to) {
      const next = new Date(`${to}T00:00:00Z`);
      next.setUTCDate(next.getUTCDate() + 1);
      params.to = next.toISOString().replace(".000Z", "Z");
    }
    return params;
  }

  function showFunnel(funnel) {
    document.getElementById("total-leads").textContent = integer.format(funnel.total_leads);
    const total = funnel.total_leads || 0;
    const bars = funnel.stages.map((stage) =>
      el(
        "div",
        { className: "bar-row" },
        el("span", { className: "bar-label" }, stage.stage),
        bar(total ? stage.reached / total : 0, `${stage.reached} reached`),
        el("span", { className: "bar-value" }, integer.format(stage.reached)),
      ),
    );
    document.getElementById("funnel-bars").replaceChildren(...bars);
    fill(
      document.getElementById("funnel"),
      funnel.stages.map((stage) =>
        el(
          "tr",
          { "data-stage": stage.stage },
          el("th", { scope: "row" }, stageBadge(stage.stage)),
          cell(integer.format(stage.current), true, { "data-field": "current" }),
          cell(integer.format(stage.reached), true, { "data-field": "reached" }),
          cell(total ? share(stage.reached / total) : "–", true),
        ),
      ),
      "No leads yet.",
    );
    fill(
      document.getElementById("conversions"),
      funnel.conversions.map((conversion) =>
        el(
          "tr",
          { "data-from": conversion.from_stage, "data-to": conversion.to_stage },
          el("th", { scope: "row" }, stageBadge(conversion.from_stage)),
          cell(stageBadge(conversion.to_stage)),
          cell(share(conversion.rate), true, { "data-field": "rate" }),
        ),
      ),
      "No conversions yet.",
    );
    showSources(funnel);
  }

  function showSources(funnel) {
    const table = document.getElementById("sources");
    if (!Array.isArray(funnel.breakdown)) {
      say("sources-status", "This server does not break the funnel down by source.", "error");
      return;
    }
    const stages = funnel.stages.map((stage) => stage.stage);
    table.tHead.replaceChildren(
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Source"),
        el("th", { scope: "col", className: "num" }, "Leads"),
        ...stages.map((stage) => el("th", { scope: "col", className: "num" }, `Reached ${stage}`)),
        el("th", { scope: "col", className: "num" }, "Lead → customer"),
      ),
    );
    const rows = funnel.breakdown.map((source) => {
      const reached = Object.fromEntries(source.stages.map((s) => [s.stage, s.reached]));
      const lead = reached.lead || 0;
      return el(
        "tr",
        { "data-source": source.source ?? "" },
        el("th", { scope: "row" }, source.source ?? "(none)"),
        cell(integer.format(source.total_leads), true),
        ...stages.map((stage) => cell(integer.format(reached[stage] || 0), true)),
        cell(lead ? share((reached.customer || 0) / lead) : "–", true),
      );
    });
    fill(table, rows, "No leads in this range.");
    say("sources-status", "");
  }

  function showTimeInStage(body) {
    const part = (stay) => [
      cell(integer.format(stay.count), true),
      cell(duration(stay.median_seconds), true),
      cell(duration(stay.p90_seconds), true),
    ];
    fill(
      document.getElementById("time-in-stage"),
      body.stages.map((row) =>
        el(
          "tr",
          { "data-stage": row.stage },
          el("th", { scope: "row" }, stageBadge(row.stage)),
          ...part(row.finished),
          ...part(row.open),
        ),
      ),
      "No stays in this range.",
    );
    say("time-status", "");
  }

  function showVelocity(body) {
    const rows = body.steps.map((step) =>
      el(
        "tr",
        { "data-from": step.from_stage, "data-to": step.to_stage },
        el("th", { scope: "row" }, stageBadge(step.from_stage)),
        cell(stageBadge(step.to_stage)),
        cell(integer.format(step.leads), true),
        cell(days(step.median_days), true, { "data-field": "median" }),
        cell(days(step.p90_days), true),
      ),
    );
    const whole = body.lead_to_customer;
    if (whole) {
      rows.push(
        el(
          "tr",
          { className: "sum", "data-from": "lead", "data-to": "customer" },
          el("th", { scope: "row" }, "lead → customer"),
          cell("all the way"),
          cell(integer.format(whole.leads), true),
          cell(days(whole.median_days), true, { "data-field": "median" }),
          cell(days(whole.p90_days), true),
        ),
      );
    }
    fill(document.getElementById("velocity"), rows, "No lead has moved on yet.");
    say("velocity-status", "");
  }

  async function overview() {
    const params = range();
    const views = [
      api("/v1/funnel", { ...params, by: "source" }).then(showFunnel, (error) =>
        failed("overview-status", error),
      ),
      api("/v1/analytics/time-in-stage", params).then(showTimeInStage, (error) =>
        failed("time-status", error),
      ),
      api("/v1/analytics/velocity", params).then(showVelocity, (error) =>
        failed("velocity-status", error),
      ),
    ];
    await Promise.all(views);
    document.body.dataset.loaded = "true";
  }

  // --- cohorts ----------------------------------------------------------------------

  async function cohorts() {
    try {
      const body = await api("/v1/analytics/cohorts", { period: "week" });
      const table = document.getElementById("cohorts");
      table.tHead.replaceChildren(
        el(
          "tr",
          {},
          el("th", { scope: "col" }, "Week of"),
          el("th", { scope: "col", className: "num" }, "Leads"),
          ...body.stages.map((stage) => el("th", { scope: "col", className: "num" }, stage)),
        ),
      );
      const rows = body.cohorts.map((cohort) =>
        el(
          "tr",
          { "data-start": day(cohort.start) },
          el("th", { scope: "row" }, day(cohort.start)),
          cell(integer.format(cohort.leads), true),
          ...body.stages.map((stage) => {
            const reached = cohort.reached[stage] || { leads: 0, share: null };
            const td = cell(
              `${share(reached.share)} (${integer.format(reached.leads)})`,
              true,
              { "data-stage": stage },
            );
            td.classList.add("heat");
            td.style.setProperty("--share", String(reached.share || 0));
            return td;
          }),
        ),
      );
      fill(table, rows, "No cohorts yet.");
      say("cohorts-status", "");
    } catch (error) {
      failed("cohorts-status", error);
    }
    document.body.dataset.loaded = "true";
  }

  // --- stage changes: live, and per day ---------------------------------------------

  function changeRow(change) {
    return el(
      "tr",
      { "data-position": String(change.position), "data-lead": change.lead_id },
      cell(el("time", { datetime: change.recorded_at }, stamp(change.recorded_at))),
      cell(leadLink(change.lead_id)),
      cell(stageBadge(change.from_stage)),
      cell(stageBadge(change.to_stage)),
      cell(change.reason),
      cell(number.format(change.score.total), true),
    );
  }

  function live() {
    const section = document.getElementById("live");
    const body = document.getElementById("live-changes").tBodies[0];
    const after = section.dataset.after || "0";
    let fresh = 0;
    let placeholder = el(
      "tr",
      {},
      el("td", { colspan: "6", className: "empty" }, "No stage changes yet."),
    );
    body.append(placeholder);
    const source = new EventSource(`/v1/stream/stage-changes?after=${encodeURIComponent(after)}`);
    source.addEventListener("open", () => say("live-status", "Live: new changes appear at the top."));
    source.addEventListener("stage_change", (event) => {
      const change = JSON.parse(event.data);
      if (body.querySelector(`tr[data-position="${change.position}"]`)) return;
      if (placeholder) {
        placeholder.remove();
        placeholder = null;
      }
      body.prepend(changeRow(change));
      while (body.rows.length > LIVE_ROWS) body.deleteRow(-1);
      fresh += 1;
      say("live-status", `Live: ${fresh} change${fresh === 1 ? "" : "s"} shown.`);
      section.dataset.received = String(fresh);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        say("live-status", "The stream has closed. Reload the page (or sign in again).", "error");
      } else {
        say("live-status", "Reconnecting…");
      }
    });
  }

  async function daily() {
    try {
      const body = await api("/v1/analytics/stage-changes", { interval: "day" });
      const rows = body.buckets
        .slice()
        .reverse()
        .map((bucket) =>
          el(
            "tr",
            { "data-start": day(bucket.start) },
            el("th", { scope: "row" }, day(bucket.start)),
            cell(integer.format(bucket.total), true),
            cell(
              bucket.transitions
                .map((t) => `${t.from_stage ?? "new"} → ${t.to_stage}: ${integer.format(t.count)}`)
                .join(", "),
            ),
          ),
        );
      fill(document.getElementById("daily"), rows, "No stage changes yet.");
      say("daily-status", "");
    } catch (error) {
      failed("daily-status", error);
    }
  }

  async function changes() {
    live();
    await daily();
    document.body.dataset.loaded = "true";
  }

  // --- leads and one lead ----------------------------------------------------------

  async function leads() {
    const query = new URLSearchParams(location.search);
    const params = {
      stage: query.get("stage") || "",
      min_score: query.get("min_score") || "",
      limit: query.get("limit") || "25",
    };
    document.getElementById("stage").value = params.stage;
    document.getElementById("min_score").value = params.min_score;
    document.getElementById("limit").value = params.limit;
    const table = document.getElementById("leads");
    const more = document.getElementById("more");
    let shown = 0;
    let cursor = null;

    const load = async () => {
      try {
        const page = await api("/v1/leads", { ...params, cursor });
        const rows = page.items.map((lead) => {
          shown += 1;
          return el(
            "tr",
            { "data-lead": lead.lead_id, "data-stage": lead.stage },
            cell(String(shown), true),
            el("th", { scope: "row" }, leadLink(lead.lead_id)),
            cell(stageBadge(lead.stage)),
            cell(number.format(lead.fit), true),
            cell(number.format(lead.engagement), true),
            cell(number.format(lead.total), true, { "data-field": "total" }),
            cell(stamp(lead.updated_at)),
          );
        });
        if (cursor === null) fill(table, rows, "No lead matches these filters.");
        else table.tBodies[0].append(...rows);
        cursor = page.next_cursor;
        more.hidden = cursor === null;
        say("leads-status", `${integer.format(shown)} lead${shown === 1 ? "" : "s"} shown.`);
      } catch (error) {
        failed("leads-status", error);
      }
    };
    more.addEventListener("click", load);
    await load();
    document.body.dataset.loaded = "true";
  }

  async function lead() {
    const heading = document.getElementById("lead");
    const leadId = heading.dataset.leadId;
    const path = "/v1/leads/" + leadId.split("/").map(encodeURIComponent).join("/");
    try {
      const [current, history] = await Promise.all([api(path), api(`${path}/history`)]);
      const facts = document.getElementById("lead-facts");
      const fact = (term, value) => [el("dt", {}, term), el("dd", {}, value)];
      facts.replaceChildren(
        ...fact("Stage", stageBadge(current.stage)),
        ...fact("Total score", number.format(current.total)),
        ...fact("Fit", number.format(current.fit)),
        ...fact("Engagement", number.format(current.engagement)),
        ...fact("Model", current.model_version),
        ...fact("Updated", stamp(current.updated_at)),
      );
      fill(
        document.getElementById("history"),
        history.items.map((change) =>
          el(
            "tr",
            { "data-sequence": String(change.sequence) },
            cell(String(change.sequence), true),
            cell(el("time", { datetime: change.occurred_at }, stamp(change.occurred_at))),
            cell(stageBadge(change.from_stage)),
            cell(stageBadge(change.to_stage)),
            cell(change.reason),
            cell(number.format(change.score.total), true),
          ),
        ),
        "No stage change recorded.",
      );
      say("lead-status", "");
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        say("lead-status", error.message, "error");
      } else {
        failed("lead-status", error);
      }
    }
    try {
      const score = await api(`${path}/score`);
      fill(
        document.getElementById("breakdown"),
        score.breakdown.map((rule) =>
          el(
            "tr",
            { "data-rule": rule.rule },
            el("th", { scope: "row" }, rule.rule),
            cell(rule.axis),
            cell(integer.format(rule.count), true),
            cell(number.format(rule.points), true, { "data-field": "points" }),
          ),
        ),
        "No rule adds to this score.",
      );
      say("breakdown-status", "");
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        say("breakdown-status", error.message);
        fill(document.getElementById("breakdown"), [], "No score recorded yet.");
      } else {
        failed("breakdown-status", error);
      }
    }
    document.body.dataset.loaded = "true";
  }

  const views = { overview, cohorts, changes, leads, lead };
  document.addEventListener("DOMContentLoaded", () => {
    const view = views[document.body.dataset.view];
    if (view) view();
    else document.body.dataset.loaded = "true";
  });
})();
