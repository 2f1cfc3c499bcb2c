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
        var minutes = e.estimate && e.estimate.minutes ? Math.ceil(e.estimate.minutes.mean) : null;
        return [[link("/admin/e/" + encodeURIComponent(e.slug), e.name)], [e.slug], [badge], [e.procedure],
          [e.target_participants, true], [e.target_judgments, true], [minutes, true],
          [link("/e/" + encodeURIComponent(e.slug), "/e/" + e.slug)]];
      }));
      setStatus(data.experiments.length + " experiment(s).");
      if (!$("c-manifest").dataset.loaded) { $("c-manifest").dataset.loaded = "1"; loadStimulusSets(); }
    }).catch(fail);
  }

  function loadStimulusSets() {
    return api("GET", "/stimulus-sets").then(json).then(function (data) {
      var select = $("c-manifest");
      select.textContent = "";
      var first = document.createElement("option");
      first.value = "";
      first.textContent = data.stimulus_sets.length ? "Choose a stimulus set…"
        : "No stimulus set found under " + data.searched.join(", ") + " (set STIMULUS_DIRS)";
      select.appendChild(first);
      data.stimulus_sets.forEach(function (set) {
        var option = document.createElement("option");
        option.value = set.manifest;
        option.textContent = set.name + " (" + (set.rows === null ? "?" : set.rows) + " stimuli) · " + set.manifest;
        select.appendChild(option);
      });
    }).catch(fail);
  }

  function describeEstimate(est) {
    if (!est) return "no length estimate";
    var m = est.main_trials;
    return "about " + Math.round(m.mean) + " main trials per participant (80 % between " + Math.round(m.p10) +
      " and " + Math.round(m.p90) + "), " + est.practice_trials + " practice, " + est.screening_trials +
      " headphone checks: about " + Math.ceil(est.minutes.mean) + " min (90 % within " + Math.ceil(est.minutes.p90) +
      " min)";
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
      if (!$("c-manifest").value) throw new Error("Choose a stimulus set first.");
      body = { manifest: $("c-manifest").value, procedure: $("c-procedure").value,
               test_type: $("c-test-type").value, launch: $("c-launch").checked };
      if ($("c-name").value.trim()) body.name = $("c-name").value.trim();
      if ($("c-target-participants").value) body.target_participants = parseInt($("c-target-participants").value, 10);
      if ($("c-target").value) body.target_judgments = parseInt($("c-target").value, 10);
      if ($("c-reward").value) body.reward_cents = parseInt($("c-reward").value, 10);
      if ($("c-prolific").value.trim()) body.prolific_completion_code = $("c-prolific").value.trim();
      if ($("c-prolific-out").value.trim()) body.prolific_screened_out_code = $("c-prolific-out").value.trim();
      if ($("c-description").value.trim()) body.description = $("c-description").value.trim();
      if ($("c-consent").value.trim()) body.consent_text = $("c-consent").value.trim();
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
      var e = data.experiment;
      var text = "Created experiment “" + e.slug + "” (" + e.status + "): " + describeEstimate(e.estimate) + ".";
      setStatus(text);
      $("create-form").reset();
      return loadIndex().then(function () { setStatus(text); });
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
      renderVoided(both[1].voided_trials);
      renderFaulty(both[1].faulty_stimuli);
      showContent();
      setStatus("Updated " + new Date().toLocaleTimeString() + ".");
    }).catch(fail);
  }

  // issue 14: trials the server voided because a clip could not be delivered.
  function renderVoided(v) {
    var wrap = $("voided-wrap");
    if (!wrap) return;
    wrap.hidden = !v || !v.count;
    if (wrap.hidden) return;
    $("voided").querySelector("caption").textContent = "Voided trials: " + v.count +
      " (a clip could not be delivered; fix the file)";
    var body = $("voided").querySelector("tbody");
    body.textContent = "";
    v.latest.forEach(function (t) {
      var tr = document.createElement("tr");
      [String(t.trial_id), t.worker, t.kind, t.reason, when(t.voided_at)].forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  // issue 14: stimuli taken out of rotation (their tracks closed) after a fault.
  function renderFaulty(f) {
    var wrap = $("faulty-wrap");
    if (!wrap) return;
    wrap.hidden = !f || !f.count;
    if (wrap.hidden) return;
    var ended = (f.sessions_ended_by_faults || []).length;
    $("faulty").querySelector("caption").textContent = "Stimuli out of rotation: " + f.count +
      " (their tracks are closed; fix the files)" +
      (ended ? "; " + ended + " session(s) ended early for lack of healthy tracks" : "");
    var body = $("faulty").querySelector("tbody");
    body.textContent = "";
    f.stimuli.forEach(function (s) {
      var tr = document.createElement("tr");
      [s.stimulus_id, s.reference, s.family, String(s.level), s.reason, when(s.found_at)].forEach(function (text, i) {
        var td = document.createElement("td");
        td.textContent = text;
        if (i === 3) td.className = "num";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit",
                                                    minute: "2-digit" }) : "–";
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    var m = Math.floor(seconds / 60), sec = Math.round(seconds % 60);
    return m + ":" + (sec < 10 ? "0" : "") + sec;
  }

  function targetBar(barId, labelId, what, value, target) {
    var bar = $(barId);
    if (target) {
      bar.max = target;
      bar.value = Math.min(value, target);
      $(labelId).textContent = what + " toward the target: " + value + " of " + target + " (" + pct(value / target) + ")";
    } else {
      bar.removeAttribute("value");
      $(labelId).textContent = what + ": " + value + " (no target set)";
    }
  }

  function renderStats(e, s) {
    $("title").textContent = e.name + " (" + e.slug + ")";
    document.title = e.name + " · jndlab admin";
    var status = e.status;
    if (e.status === "closed" && e.closed_reason && e.closed_reason.indexOf("target_") === 0) {
      status = "closed: full (reached its " + e.closed_reason.replace("target_", "") + " target)";
    } else if (e.status === "closed") {
      status = "closed to new participants";
    } else if (e.status === "draft") {
      status = "draft (test mode)";
    }
    $("meta").textContent = "Status: " + status + " · " + e.test_type + " · procedure: " + e.procedure +
      " · manifest: " + e.manifest_path;
    $("draft-note").hidden = e.status !== "draft";
    $("launch").hidden = e.status !== "draft";
    $("toggle-status").hidden = e.status === "draft";
    $("toggle-status").textContent = e.status === "active" ? "Close to new participants" : "Reopen to new participants";
    $("estimate").textContent = "Expected length: " + describeEstimate(e.estimate) + "." +
      (s.median_duration_s !== null ? " Measured so far: median " + duration(s.median_duration_s) +
        " per complete session." : "");
    var codes = $("codes");
    codes.textContent = "";
    [["Prolific completion code", e.prolific_completion_code],
     ["Prolific screened-out code", e.prolific_screened_out_code]].forEach(function (c) {
      var p = document.createElement("p");
      p.appendChild(document.createTextNode(c[0] + ": "));
      var code = document.createElement("code");
      code.textContent = c[1] || "–";
      p.appendChild(code);
      codes.appendChild(p);
    });
    targetBar("participant-progress", "participant-label", "Complete participants", s.complete_participants,
              s.target_participants);
    targetBar("target-progress", "target-label", "Judgments", s.judgments, s.target_judgments);
    var cards = $("cards");
    cards.textContent = "";
    [["Participants", s.participants], ["Complete", s.complete_participants], ["In progress", s.in_progress],
     ["Judgments (main)", s.judgments], ["Kept judgments", s.kept_judgments],
     ["Excluded workers", s.excluded_workers + " of " + s.screened_workers],
     ["Catch-trial pass rate", pct(s.catch_pass_rate)], ["Screened out", s.screening_failures],
     ["Tracks finished", s.tracks.finished + " / " + s.tracks.total]].forEach(function (c) {
      cards.appendChild(card(c[0], c[1]));
    });
    fillTable("families", s.families.map(function (f) {
      return [[f.family], [f.tracks, true], [f.kept_finished, true],
        [f.median_jnd === null ? "–" : f.median_jnd.toFixed(1), true],
        [f.q25 === null ? "–" : f.q25.toFixed(1) + " – " + f.q75.toFixed(1), true]];
    }));
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
      var who = document.createElement("button");
      who.type = "button";
      who.className = "linklike";
      who.textContent = w.platform + ": " + w.worker_id;
      who.addEventListener("click", function () { showWorker(w.worker); });
      var badge = document.createElement("span");
      badge.className = "badge " + (w.excluded ? "excluded" : "kept");
      badge.textContent = w.excluded ? "excluded" : "kept";
      var stage = w.stage === "screened_out" ? "screened out" : (w.completed ? "complete" : w.stage);
      return [[who], [stage], [badge], [w.excluded ? w.reasons.join("; ") : (w.notes.join("; ") || "–")],
        [w.judgments, true], [w.catch_correct + " / " + w.catch_trials, true],
        [w.mean_response_time_ms === null ? "–" : Math.round(w.mean_response_time_ms), true],
        [when(w.started_at)], [duration(w.duration_s), true]];
    }));
    var rows = document.querySelectorAll("#workers tbody tr");
    s.workers.forEach(function (w, i) {
      if (rows[i]) {
        rows[i].classList.toggle("excluded", w.excluded);
        if (rows[i].children[3]) rows[i].children[3].className = "reasons";
      }
    });
  }

  function showWorker(worker) {
    api("GET", "/experiments/" + encodeURIComponent(SLUG) + "/workers/" + encodeURIComponent(worker)).then(json)
      .then(function (d) {
        $("drilldown").hidden = false;
        $("h-drilldown").textContent = "Worker " + d.worker;
        var v = d.verdict;
        $("drilldown-verdict").textContent = !v ? "No answers yet." : (v.excluded ? "Excluded: " + v.reasons.join("; ")
          : "Kept." + (v.notes.length ? " Notes: " + v.notes.join("; ") : "")) +
          " · sessions: " + d.sessions.map(function (x) {
            return x.stage + ", started " + when(x.started_at) + ", " + duration(x.duration_s);
          }).join(" | ");
        fillTable("worker-trials", d.trials.map(function (t) {
          return [[String(t.session).slice(0, 8) + "…"], [t.index, true], [t.kind], [t.family || "–"],
            [t.level === null ? "–" : t.level, true], [t.answer || "(open)"], [t.expected || "–"],
            [t.response_time_ms, true], [t.play_counts ? t.play_counts.join(" / ") : "–"], [when(t.answered_at)]];
        }));
        $("h-drilldown").focus();
      }).catch(fail);
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
    $("drilldown-close").addEventListener("click", function () { $("drilldown").hidden = true; });
    $("launch").addEventListener("click", function () {
      if (!window.confirm("Launch the study? Its test sessions are deleted and it opens to participants.")) return;
      api("POST", "/experiments/" + encodeURIComponent(SLUG) + "/launch", {}).then(json).then(function (d) {
        return loadDashboard().then(function () {
          setStatus("Launched: " + d.test_sessions_deleted + " test session(s) deleted.");
        });
      }).catch(fail);
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
