/* jndlab admin pages: experiment list + creation, and the live dashboard.
   Talks to /admin/api (API.md) with the credential kept in sessionStorage.
   Everything from the server is inserted with textContent, never as HTML. */
(function () {
  "use strict";

  var AUTH_KEY = "jndlab:admin:auth";
  var REFRESH_MS = 5000;
  var main = document.getElementById("main");
  var VIEW = main.dataset.view;
  var SLUG = main.dataset.slug;
  var timer = null;
  var experiment = null;

  function $(id) { return document.getElementById(id); }

  function setStatus(text, isError) {
    var el = $("status");
    el.textContent = text || "";
    el.className = "status" + (isError ? " error" : "");
  }

  function getAuth() { try { return sessionStorage.getItem(AUTH_KEY); } catch (e) { return null; } }
  function setAuth(value) {
    try {
      if (value) sessionStorage.setItem(AUTH_KEY, value); else sessionStorage.removeItem(AUTH_KEY);
    } catch (e) { /* storage disabled: the credential lives until the page is left */ }
    memoryAuth = value;
  }
  var memoryAuth = null;

  // A one-click login link from `python -m listening_test demo`: /admin/#token=…
  // (a fragment never reaches the server or its logs); it is removed at once.
  if (location.hash.indexOf("#token=") === 0) {
    setAuth("Bearer " + decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function api(method, path, body) {
    var headers = { "Accept": "application/json" };
    var auth = getAuth() || memoryAuth;
    if (auth) headers["Authorization"] = auth;
    var init = { method: method, headers: headers, credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/admin/api" + path, init).then(function (resp) {
      if (resp.status === 401 || resp.status === 403) {
        return resp.json().catch(function () { return {}; }).then(function (data) {
          var err = new Error((data.error && data.error.message) || "not authorised");
          err.auth = true;
          throw err;
        });
      }
      return resp;
    });
  }

  function json(resp) {
    return resp.json().then(function (data) {
      if (!resp.ok) throw new Error((data.error && data.error.message) || ("HTTP " + resp.status));
      return data;
    });
  }

  function showLogin(message) {
    stopTimer();
    $("content").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    if (message) setStatus(message, true);
    $("login-secret").focus();
  }

  function showContent() {
    $("login").hidden = true;
    $("content").hidden = false;
    $("logout").hidden = false;
  }

  function fail(error) {
    if (error.auth) {
      setAuth(null);
      showLogin("Log in failed or expired: " + error.message);
    } else {
      setStatus(error.message, true);
    }
  }

  function cell(row, text, numeric) {
    var td = document.createElement("td");
    if (text instanceof Node) td.appendChild(text); else td.textContent = text === null || text === undefined ? "–" : String(text);
    if (numeric) td.className = "num";
    row.appendChild(td);
    return td;
  }

  function fillTable(id, rows) {
    var body = document.querySelector("#" + id + " tbody");
    body.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = cell(tr, "none yet");
      td.colSpan = document.querySelectorAll("#" + id + " thead th").length;
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (values) {
      var tr = document.createElement("tr");
      values.forEach(function (v) { cell(tr, v[0], v[1]); });
      body.appendChild(tr);
    });
  }

  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }

  function link(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  // --- index: list + create ---------------------------------------------------------

  function loadIndex() {
    return api("GET", "/experiments").then(json).then(function (data) {
      showContent();
      fillTable("experiments", data.experiments.map(function (e) {
        var badge = document.createElement("span");
        badge.className = "badge " + e.status;
        badge.textContent = e.status;
        return [[link("/admin/e/" + encodeURIComponent(e.slug), e.name)], [e.slug], [badge], [e.procedure],
          [e.target_judgments, true], [link("/e/" + encodeURIComponent(e.slug), "/e/" + e.slug)]];
      }));
      setStatus(data.experiments.length + " experiment(s).");
    }).catch(fail);
  }

  function parseJsonField(id, label) {
    var text = $(id).value.trim();
    if (!text) return undefined;
    var value;
    try { value = JSON.parse(text); } catch (e) { throw new Error(label + " is not valid JSON: " + e.message); }
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error(label + " must be a JSON object");
    return value;
  }

  function createExperiment(event) {
    event.preventDefault();
    var body;
    try {
      body = { manifest: $("c-manifest").value.trim(), procedure: $("c-procedure").value,
               test_type: $("c-test-type").value };
      if ($("c-name").value.trim()) body.name = $("c-name").value.trim();
      if ($("c-target").value) body.target_judgments = parseInt($("c-target").value, 10);
      if ($("c-reward").value) body.reward_cents = parseInt($("c-reward").value, 10);
      if ($("c-prolific").value.trim()) body.prolific_completion_code = $("c-prolific").value.trim();
      var config = parseJsonField("c-config", "Flow config");
      var procedureConfig = parseJsonField("c-proc-config", "Procedure config");
      if (config) body.config = config;
      if (procedureConfig) body.procedure_config = procedureConfig;
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    setStatus("Creating…");
    api("POST", "/experiments", body).then(json).then(function (data) {
      setStatus("Created experiment “" + data.experiment.slug + "”.");
      $("create-form").reset();
      return loadIndex().then(function () { setStatus("Created experiment “" + data.experiment.slug + "”."); });
    }).catch(fail);
  }

  // --- dashboard ------------------------------------------------------------------

  function card(label, value) {
    var div = document.createElement("div");
    div.className = "card";
    var l = document.createElement("p"); l.className = "label"; l.textContent = label;
    var v = document.createElement("p"); v.className = "value"; v.textContent = value;
    div.appendChild(l); div.appendChild(v);
    return div;
  }

  function loadDashboard() {
    return Promise.all([
      api("GET", "/experiments/" + encodeURIComponent(SLUG)).then(json),
      api("GET", "/experiments/" + encodeURIComponent(SLUG) + "/stats").then(json)
    ]).then(function (both) {
      experiment = both[0].experiment;
      renderStats(experiment, both[1]);
      showContent();
      setStatus("Updated " + new Date().toLocaleTimeString() + ".");
    }).catch(fail);
  }

  function renderStats(e, s) {
    $("title").textContent = e.name + " (" + e.slug + ")";
    document.title = e.name + " · jndlab admin";
    $("meta").textContent = "Status: " + e.status + " · procedure: " + e.procedure + " · manifest: " + e.manifest_path;
    $("toggle-status").textContent = e.status === "active" ? "Close to new participants" : "Reopen to new participants";
    var target = s.target_judgments;
    var bar = $("target-progress");
    if (target) {
      bar.max = target;
      bar.value = Math.min(s.judgments, target);
      $("target-label").textContent = "Judgments toward the target: " + s.judgments + " of " + target +
        " (" + pct(s.progress) + ")";
    } else {
      bar.removeAttribute("value");
      $("target-label").textContent = "Judgments: " + s.judgments + " (no target set)";
    }
    var cards = $("cards");
    cards.textContent = "";
    var completed = s.sessions_by_stage.complete || 0;
    [["Participants", s.participants], ["Completed sessions", completed], ["Judgments (main)", s.judgments],
     ["Catch-trial pass rate", pct(s.catch_pass_rate)], ["Screening failures", s.screening_failures],
     ["Tracks finished", s.tracks.finished + " / " + s.tracks.total]].forEach(function (c) {
      cards.appendChild(card(c[0], c[1]));
    });
    fillTable("stages", Object.keys(s.sessions_by_stage).map(function (k) {
      return [[k], [s.sessions_by_stage[k], true]];
    }));
    fillTable("kinds", Object.keys(s.responses_by_kind).map(function (k) {
      var r = s.responses_by_kind[k];
      var graded = k !== "main";
      return [[k], [r.n, true], [graded ? r.correct : "–", true], [graded && r.n ? pct(r.correct / r.n) : "–", true]];
    }));
    fillTable("screening", Object.keys(s.screening).map(function (k) {
      return [[k], [s.screening[k].sessions, true], [s.screening[k].failed, true]];
    }));
    fillTable("workers", s.workers.map(function (w) {
      var sid = document.createElement("span");
      sid.textContent = String(w.session).slice(0, 8) + "…";
      sid.title = String(w.session);
      return [[w.platform], [w.worker_id], [sid], [w.stage],
        [w.screening_passed === null ? "–" : (w.screening_passed ? "passed" : "failed")],
        [w.completed ? "yes" : "no"], [w.judgments, true], [w.catch_correct + " / " + w.catch_trials, true],
        [pct(w.catch_pass_rate), true],
        [w.mean_response_time_ms === null ? "–" : Math.round(w.mean_response_time_ms), true]];
    }));
  }

  function download(path) {
    setStatus("Preparing the download…");
    api("GET", "/experiments/" + encodeURIComponent(SLUG) + "/" + path).then(function (resp) {
      if (!resp.ok) return json(resp);
      return resp.blob().then(function (blob) {
        var match = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = match ? match[1] : path.split("?")[0];
        document.body.appendChild(a);
        a.click();
        setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
        setStatus("Downloaded " + a.download + ".");
      });
    }).catch(fail);
  }

  function stopTimer() { if (timer) { clearInterval(timer); timer = null; } }
  function startTimer() {
    stopTimer();
    if ($("auto-refresh").checked) {
      timer = setInterval(function () { if (!document.hidden && getAuth()) loadDashboard(); }, REFRESH_MS);
    }
  }

  // --- wiring ---------------------------------------------------------------------

  function start() {
    if (!getAuth() && !memoryAuth) { showLogin(); return; }
    if (VIEW === "dashboard") { loadDashboard().then(startTimer); } else { loadIndex(); }
  }

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var secret = $("login-secret").value;
    if (!secret) return;
    setAuth($("login-kind").value === "token" ? "Bearer " + secret : "Basic " + btoa(unescape(encodeURIComponent("admin:" + secret))));
    $("login-secret").value = "";
    setStatus("");
    start();
    document.querySelector("h1").focus();
  });
  $("logout").addEventListener("click", function () { setAuth(null); showLogin(); setStatus("Logged out."); });

  if (VIEW === "dashboard") {
    $("auto-refresh").addEventListener("change", startTimer);
    document.querySelectorAll("[data-download]").forEach(function (btn) {
      btn.addEventListener("click", function () { download(btn.dataset.download); });
    });
    $("toggle-status").addEventListener("click", function () {
      if (!experiment) return;
      var next = experiment.status === "active" ? "closed" : "active";
      api("POST", "/experiments/" + encodeURIComponent(SLUG) + "/status", { status: next }).then(json)
        .then(function () { return loadDashboard(); }).catch(fail);
    });
  } else {
    $("create-form").addEventListener("submit", createExperiment);
    // An A/B test has one procedure (fixed presentations); a JND test an adaptive one.
    $("c-test-type").addEventListener("change", function () {
      var ab = $("c-test-type").value === "ab_preference";
      if (ab !== ($("c-procedure").value === "paired")) $("c-procedure").value = ab ? "paired" : "bayesian";
    });
  }
  start();
})();
