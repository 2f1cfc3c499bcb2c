/* jndlab participant page: renders the server's state (API.md), plays clips with
   the Web Audio API, posts answers. No build step, no dependencies.

   The client never decides what comes next: it renders `state.stage` from the
   last reply. It is told nothing about levels or which clip is the reference. */
(function () {
  "use strict";

  var main = document.getElementById("main");
  var SLUG = main.dataset.slug;
  var LAND_URL = main.dataset.api;
  var TOKEN_KEY = "jndlab:" + SLUG + ":token";
  // "same_different" (clips A, B) or "ab_preference" (clips Reference, A, B: which of A
  // and B is closer to the reference?). The page's texts and buttons come from the server.
  var TEST_TYPE = main.dataset.testType || "same_different";
  var AB = TEST_TYPE === "ab_preference";
  var PROMPTS = {
    huggins: "Which of the three sounds contains a faint tone?",
    antiphase: "Which of the three tones is the quietest?"
  };
  var GAP_S = 0.5; // silence between screening intervals

  var token = null;
  var csrf = null;
  var state = null;
  var ctx = null;
  var buffers = {}; // url -> Promise<AudioBuffer>
  var view = null; // the trial on screen: counts, full plays, timing
  var playing = null; // {sources, stopped}
  var pendingState = null; // next state, shown after practice feedback
  var focusLost = 0;
  var shownFraction = 0; // the main-part progress bar: never back, at most one step forward
  var EXAMPLE_TEXT = {
    huggins: "Example: the first sound has the faint tone inside the noise; the second has none. " +
      "Listen for it before you start.",
    antiphase: "Example: the first tone is the quiet one; the second is at full level. " +
      "Listen to the difference before you start."
  };

  // aria-disabled rather than disabled: a press on a greyed-out button still reaches its
  // handler, which says why it is refused.
  function setUsable(el, ok) {
    el.disabled = false;
    el.setAttribute("aria-disabled", ok ? "false" : "true");
  }
  function usable(el) { return el.getAttribute("aria-disabled") !== "true"; }

  function storageGet(key) { try { return sessionStorage.getItem(key); } catch (e) { return null; } }
  function storageSet(key, value) { try { sessionStorage.setItem(key, value); } catch (e) { /* private mode */ } }

  function $(id) { return document.getElementById(id); }

  // --- small UI helpers --------------------------------------------------------

  function setStatus(text, isError) {
    var el = $("status");
    el.textContent = text || "";
    el.className = "status" + (isError ? " error" : "");
  }

  function visibleScreen() {
    var shown = document.querySelector(".screen:not([hidden])");
    return shown ? shown.id.replace("screen-", "") : null;
  }

  function showScreen(name, focusTarget) {
    var changed = visibleScreen() !== name;
    if (changed) setStatus("");
    var screens = document.querySelectorAll(".screen");
    for (var i = 0; i < screens.length; i++) screens[i].hidden = screens[i].id !== "screen-" + name;
    var target = focusTarget || (changed ? document.querySelector("#screen-" + name + " h1") : null);
    if (target) target.focus();
  }

  // ``retry``: a function, or false for a final answer (a closed or full study) with no button.
  function showError(message, retry, title) {
    stopAudio();
    $("h-error").textContent = title || "Something went wrong";
    $("error-message").textContent = message;
    $("error-retry-wrap").hidden = retry === false;
    $("error-retry").onclick = retry || function () { location.reload(); };
    $("progress-wrap").hidden = true;
    showScreen("error");
  }

  function setProgress(label, value, max) {
    var wrap = $("progress-wrap"), bar = $("progress");
    if (label === null) { wrap.hidden = true; return; }
    wrap.hidden = false;
    $("progress-label").textContent = label;
    if (max) {
      bar.max = max;
      bar.value = Math.min(value, max);
      bar.setAttribute("aria-valuetext", label);
    } else {
      bar.removeAttribute("value"); // indeterminate
    }
  }

  // --- HTTP ------------------------------------------------------------------------

  function request(method, url, body) {
    var headers = { "Accept": "application/json" };
    if (token) headers["X-Session-Token"] = token;
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      if (csrf) headers["X-CSRF-Token"] = csrf;
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (data) {
        return { status: resp.status, data: data };
      });
    });
  }

  // Network failures are retried: answers are idempotent (a repeat is a 200 duplicate).
  function requestWithRetry(method, url, body, attempt) {
    attempt = attempt || 0;
    return request(method, url, body).catch(function (error) {
      if (attempt >= 4) throw error;
      setStatus("Connection problem, retrying…", true);
      return new Promise(function (resolve) { setTimeout(resolve, 500 * Math.pow(2, attempt)); })
        .then(function () { return requestWithRetry(method, url, body, attempt + 1); });
    });
  }

  // --- answer retry with back-off (issue 14, fault 6) ---------------------------------
  // A 503 (the database is busy or read-only for a moment) or a 429 says "retry after
  // Retry-After seconds"; a network error is retried too. Answers are idempotent (a
  // repeat is a 200 duplicate), so retrying cannot record one twice. After
  // ANSWER_RETRY_LIMIT tries the promise is rejected with a plain message.
  var ANSWER_RETRY_LIMIT = 7;
  var ANSWER_MAX_WAIT_S = 30;

  function postAnswerWithBackoff(body, attempt) {
    attempt = attempt || 0;
    function again(waitS, reason) {
      if (attempt + 1 >= ANSWER_RETRY_LIMIT) {
        var giveUp = new Error(reason);
        giveUp.participantMessage = "Your answer could not be saved after several tries (" + reason + "). " +
          "Your earlier answers are safe. Please wait a minute, then press Try again.";
        return Promise.reject(giveUp);
      }
      // 2^attempt s (at least Retry-After) times a jitter in [0.5, 1.5), capped AFTER the
      // jitter: no wait exceeds ANSWER_MAX_WAIT_S (API.md), whatever Retry-After says.
      var jitter = 0.5 + Math.random();
      var delay = Math.min(ANSWER_MAX_WAIT_S, Math.max(waitS, Math.pow(2, attempt)) * jitter);
      setStatus("The server is busy; saving your answer again in " + Math.ceil(delay) + " s…", true);
      return new Promise(function (resolve) { setTimeout(resolve, delay * 1000); })
        .then(function () { return postAnswerWithBackoff(body, attempt + 1); });
    }
    return request("POST", "/api/session/answer", body).then(function (r) {
      if (r.status === 503 || r.status === 429) {
        var after = (r.data && r.data.error && r.data.error.retry_after_s) || 2;
        return again(after, "the server is busy");
      }
      return r;
    }, function () { return again(1, "no connection to the server"); });
  }

  // --- clips the server cannot deliver (issue 14, fault 3) -------------------------------
  // A clip answered 410 clip_unavailable: the server checks the trial's files, voids the
  // trial (it is recorded with its reason) and serves the next one.
  function clipError(status) {
    var e = new Error("audio " + status);
    e.status = status;
    return e;
  }

  // The calibration sample cannot be delivered: never block the participant on it.
  function volumeClipFault() {
    $("volume-continue").disabled = false;
    setStatus("The sample is unavailable at the moment. Set your volume to a comfortable level with " +
              "the first sounds of the study, then continue.", true);
  }

  function reportClipFault(trial) {
    if (!trial || trial.faultReported) return;
    trial.faultReported = true;
    setStatus("A sound of this trial could not be loaded; moving on…", true);
    requestWithRetry("POST", "/api/session/clip-fault", { trial_id: trial.id, nonce: trial.nonce })
      .then(function (r) {
        if (r.status === 200) {
          render(r.data.state);
          setStatus("A sound could not be loaded, so that trial was skipped. Thank you for your patience.");
        } else {
          trial.faultReported = false;
          handleReply(r);
        }
      }, function () {
        trial.faultReported = false;
        showError("The server cannot be reached. Your answers so far are saved; try again.", refresh);
      });
  }

  function errorMessage(r) {
    var e = r.data && r.data.error;
    return e && e.message ? e.message : "The server answered " + r.status + ".";
  }

  // --- landing and state ---------------------------------------------------------

  function land() {
    stopAudio();
    showScreen("loading");
    var params = {};
    new URLSearchParams(location.search).forEach(function (value, key) { params[key] = value; });
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (e) { token = null; }
    var client = {
      screen: screen.width + "x" + screen.height, viewport: innerWidth + "x" + innerHeight,
      dpr: window.devicePixelRatio || 1, lang: navigator.language || "", touch: "ontouchstart" in window
    };
    return requestWithRetry("POST", LAND_URL, { params: params, client: client }).then(function (r) {
      if (r.status === 200 || r.status === 201) {
        if (r.data.preview) {
          setProgress(null);
          showScreen("preview");
          return;
        }
        token = r.data.session_token;
        csrf = r.data.csrf_token;
        try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode */ }
        setStatus("");
        render(r.data.state);
      } else if (r.status === 403 && r.data && r.data.error && r.data.error.code === "study_full") {
        showError(errorMessage(r), false, "This study is full");
      } else if (r.status === 403 && r.data && r.data.error && r.data.error.code === "experiment_closed") {
        showError("This study is not accepting new participants at the moment. Thank you for your interest.",
                  false, "This study is closed");
      } else if (r.status === 403 && r.data && r.data.error && r.data.error.code === "already_participated") {
        showError(errorMessage(r), false, "You have already taken part");
      } else if (r.status === 404) {
        showError("This study could not be found. Please check the link you were given.");
      } else if (r.status === 422) {
        showError("The link is incomplete or malformed: " + errorMessage(r));
      } else {
        showError("The study could not be started: " + errorMessage(r), land);
      }
    }, function () {
      showError("The server cannot be reached. Check your connection, then try again.", land);
    });
  }

  function refresh() {
    return requestWithRetry("GET", "/api/session").then(function (r) {
      if (r.status === 200) render(r.data.state);
      else if (r.status === 401) land();
      else showError("Could not load your progress: " + errorMessage(r), refresh);
    }, function () { showError("The server cannot be reached. Check your connection, then try again.", refresh); });
  }

  function handleReply(r) {
    if (r.status === 200) return render(r.data.state);
    if (r.status === 401) return land();
    if (r.status === 409 || r.status === 404 || (r.data && r.data.error && r.data.error.code === "bad_nonce")) {
      return refresh(); // a stale tab: show what the server says is current
    }
    setStatus("Could not save: " + errorMessage(r), true);
  }

  function post(path, body) {
    return requestWithRetry("POST", path, body || {}).then(handleReply, function () {
      showError("The server cannot be reached. Your answers so far are saved; try again.", refresh);
    });
  }

  function render(s) {
    state = s;
    stopAudio();
    pendingState = null;
    switch (s.stage) {
      case "consent": setProgress(null); showScreen("consent"); break;
      case "volume": renderVolume(s); break;
      case "screening": renderScreening(s); break;
      case "instructions": renderInstructions(s); break;
      case "practice": renderTrial(s); break;
      case "main":
        if (s.progress.in_stage === 1 && !storageGet(TOKEN_KEY + ":main-intro")) renderMainIntro(s);
        else renderTrial(s);
        break;
      case "complete": case "screened_out": renderComplete(s); break;
      default: showError("Unexpected stage " + s.stage + "; please reload.");
    }
  }

  // --- audio -----------------------------------------------------------------------

  function audioContext() {
    if (!ctx) {
      var AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) throw new Error("This browser cannot play audio with the Web Audio API; please use a current browser.");
      ctx = new AC();
    }
    return ctx;
  }

  function resumeAudio() {
    var c = audioContext();
    return c.state === "suspended" ? c.resume() : Promise.resolve();
  }

  function loadBuffer(url) {
    if (!buffers[url]) {
      var headers = token ? { "X-Session-Token": token } : {};
      buffers[url] = fetch(url, { headers: headers, credentials: "same-origin" }).then(function (resp) {
        if (!resp.ok) throw clipError(resp.status);
        return resp.arrayBuffer();
      }).then(function (data) {
        return new Promise(function (resolve, reject) { audioContext().decodeAudioData(data, resolve, reject); });
      });
      buffers[url].catch(function () { delete buffers[url]; }); // let a retry fetch again
    }
    return buffers[url];
  }

  function stopAudio() {
    if (!playing) return;
    var p = playing;
    playing = null;
    p.stopped = true;
    p.sources.forEach(function (src) { try { src.stop(); } catch (e) { /* not started */ } });
    if (p.onstop) p.onstop();
  }

  // Play buffers back to back; onEach(i, "start"|"end") as they go; onDone(true) if it ran to the end.
  function playSequence(list, gap, onEach, onDone) {
    stopAudio();
    var c = audioContext();
    var t = c.currentTime + 0.05;
    var p = { sources: [], stopped: false, timers: [] };
    list.forEach(function (buf, i) {
      var src = c.createBufferSource();
      src.buffer = buf;
      src.connect(c.destination);
      var startsIn = Math.max(0, (t - c.currentTime) * 1000);
      p.timers.push(setTimeout(function () { if (!p.stopped) onEach(i, "start"); }, startsIn));
      src.onended = function () {
        if (p.stopped) return;
        onEach(i, "end");
        if (i === list.length - 1) { playing = null; onDone(true); }
      };
      src.start(t);
      p.sources.push(src);
      t += buf.duration + gap;
    });
    p.onstop = function () { p.timers.forEach(clearTimeout); onDone(false); };
    playing = p;
  }

  // --- volume ----------------------------------------------------------------------

  function renderVolume(s) {
    setProgress(null);
    showScreen("volume");
    var btn = $("volume-play");
    btn.textContent = "Play sample";
    btn.setAttribute("aria-pressed", "false");
    var url = s.volume && s.volume.clips[0] && s.volume.clips[0].url;
    if (url) loadBuffer(url).catch(function () { /* reported when played */ });
    btn.onclick = function () {
      if (playing) { stopAudio(); return; }
      resumeAudio().then(function () { return loadBuffer(url); }).then(function (buf) {
        playSequence([buf, buf, buf], 0.3, function (i, what) {
          if (what === "end" && i === 0) {
            $("volume-continue").disabled = false;
            $("volume-hint").textContent = "Adjust your volume now, then continue.";
          }
        }, function () {
          btn.textContent = "Play sample";
          btn.setAttribute("aria-pressed", "false");
        });
        btn.textContent = "Stop";
        btn.setAttribute("aria-pressed", "true");
        $("volume-hint").textContent = "Listen to the sample to its end, adjusting the volume.";
      }).catch(function (e) {
        if (e && e.status === 410) { volumeClipFault(); return; }
        setStatus("The sample could not be played: " + e.message, true);
      });
    };
    $("volume-continue").onclick = function () { stopAudio(); post("/api/session/volume"); };
  }

  // --- trials (screening, same/different, A/B preference) ----------------------

  function newView(s) {
    var t = s.trial;
    if (view && view.id === t.id) return view; // a re-render of the same trial keeps what was played
    return {
      id: t.id, trial: t, counts: t.clips.map(function () { return 0; }),
      full: t.clips.map(function () { return false; }), shownAt: performance.now(),
      lastEnded: null, busy: false, focusLostAtStart: focusLost
    };
  }

  // Why an answer is refused now (a sentence for the status line), or null when it is allowed.
  function answerRefusal() {
    if (!view) return "The trial is still loading.";
    if (view.busy) return "Your answer is being saved.";
    if (pendingState) return "Read the feedback, then press Next (or Enter) to go on.";
    if (state.stage === "screening") {
      if (view.playedBefore || !state.settings.require_full_playback || view.full.every(Boolean)) return null;
      return playing ? "Listen to all three sounds first; then choose 1, 2 or 3."
                     : "Play the three sounds first (the Play button or the P key); then choose 1, 2 or 3.";
    }
    if (!state.settings.require_full_playback) return null;
    var left = view.trial.clips.filter(function (c, i) { return !view.full[i]; })
      .map(function (c) { return c.label === "Reference" ? "the reference" : c.label; });
    if (!left.length) return null;
    return "Play " + left.join(" and ") + " to the end before you answer" +
      (playing ? " (a clip is playing now)." : ".");
  }

  function canAnswer() { return answerRefusal() === null; }

  function preload(t) {
    t.clips.forEach(function (c) { loadBuffer(c.url).catch(function () { /* reported when played */ }); });
  }

  function submitAnswer(value) {
    var refusal = answerRefusal();
    if (refusal) { if (!(view && view.busy)) setStatus(refusal, true); return; }
    var v = view;
    v.busy = true;
    stopAudio();
    updateButtons();
    var since = v.lastEnded !== null ? v.lastEnded : v.shownAt;
    var body = {
      trial_id: v.trial.id, nonce: v.trial.nonce, answer: value,
      response_time_ms: Math.max(0, Math.min(86400000, Math.round(performance.now() - since))),
      play_counts: v.counts.slice(),
      client: { focus_lost: focusLost - v.focusLostAtStart, full_plays: v.full.filter(Boolean).length }
    };
    setStatus("Saving your answer…");
    return postAnswerWithBackoff(body).then(function (r) {
      if (r.status === 200 && r.data.feedback) {
        setStatus("");
        showFeedback(r.data.feedback, r.data.state);
      } else {
        if (r.status === 200) setStatus("Answer saved.");
        else v.busy = false;
        handleReply(r);
      }
    }, function (e) {
      v.busy = false;
      updateButtons();
      showError((e && e.participantMessage) ||
                "The server cannot be reached. Your answers so far are saved; try again.", refresh);
    });
  }

  function updateButtons() {
    var ok = canAnswer();
    var sel = state && state.stage === "screening" ? "#screening-choices .choice" : "#trial-choices .choice";
    var buttons = document.querySelectorAll(sel);
    // aria-disabled, not disabled: a press on a greyed-out answer still says why it is refused.
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].disabled = false;
      buttons[i].setAttribute("aria-disabled", ok ? "false" : "true");
    }
  }

  function renderScreening(s) {
    view = newView(s);
    var t = s.trial;
    var total = s.settings.screening_trials || 0;
    var n = s.progress.in_stage;
    setProgress("Headphone check " + n + " of " + total, n - 1, total);
    $("screening-prompt").textContent = PROMPTS[t.prompt] || "Which of the three sounds is different?";
    $("h-screening").textContent = "Headphone check " + n + " of " + total;
    var play = $("screening-play");
    var test = t.prompt;
    var exampleKey = TOKEN_KEY + ":example:" + test;
    var heard = !!storageGet(exampleKey) || !EXAMPLE_TEXT[test];
    $("screening-example").hidden = !EXAMPLE_TEXT[test];
    $("example-text").textContent = EXAMPLE_TEXT[test] || "";
    $("example-play").onclick = function () { playExample(test, exampleKey); };
    $("example-play").textContent = heard ? "Hear the example again" : "Hear the example";
    setUsable(play, !(view.full.every(Boolean) || view.playedBefore || !heard));
    play.textContent = "Play the three sounds";
    showScreen("screening", visibleScreen() === "screening" ? (heard ? play : $("example-play")) : null);
    markIntervals(-1);
    updateButtons();
    preload(t);
    if (!heard) setStatus("First hear the example, then play the three sounds.");
    if (view.playedBefore === undefined) {
      // The once-only promise holds across reloads: the server remembers a started set.
      var v = view;
      request("GET", playedUrl(t.id)).then(function (r) {
        if (v !== view || r.status !== 200) return;
        v.playedBefore = !!r.data.played && !v.full.every(Boolean);
        if (v.playedBefore) alreadyPlayed();
      }, function () { /* the check is repeated when Play is pressed */ });
    }
  }

  function playedUrl(trialId) { return "/e/" + encodeURIComponent(SLUG) + "/screening/" + trialId + "/played"; }

  function alreadyPlayed() {
    setUsable($("screening-play"), false);
    setStatus("This set was already played once (before the page was reloaded), and each set plays only " +
              "once. Choose the sound you think it was: 1, 2 or 3.");
    updateButtons();
    $("screening-choices").focus();
  }

  function playExample(test, exampleKey) {
    if (playing) { stopAudio(); return; }
    var btn = $("example-play");
    var url = "/e/" + encodeURIComponent(SLUG) + "/example/" + test + ".wav";
    resumeAudio().then(function () { return loadBuffer(url); }).then(function (buf) {
      btn.textContent = "Playing the example…";
      playSequence([buf], 0, function () {}, function (complete) {
        btn.textContent = "Hear the example again";
        if (!complete) return;
        storageSet(exampleKey, "1");
        if (view && state.stage === "screening" && !view.playedBefore && !view.full.every(Boolean)) {
          setUsable($("screening-play"), true);
          setStatus("Now play the three sounds: each set plays once.");
          $("screening-play").focus();
        }
      });
    }).catch(function (e) { setStatus("The example could not be played (" + e.message + "). Try again.", true); });
  }

  function markIntervals(active) {
    var dots = document.querySelectorAll(".interval");
    for (var i = 0; i < dots.length; i++) dots[i].classList.toggle("active", i === active);
  }

  function playScreening() {
    var v = view;
    if (!v || state.stage !== "screening") return;
    if (playing) { setStatus("The sounds are playing."); return; }
    if (v.full.every(Boolean) || v.playedBefore) {
      setStatus("Each set plays only once: choose 1, 2 or 3.", true);
      return;
    }
    if (!usable($("screening-play"))) { setStatus("First hear the example (the button above).", true); return; }
    var play = $("screening-play");
    setUsable(play, false);
    setStatus("Loading the sounds…");
    resumeAudio().then(function () {
      return Promise.all(v.trial.clips.map(function (c) { return loadBuffer(c.url); }));
    }).then(function (bufs) {
      return request("POST", playedUrl(v.trial.id), {}).then(function (r) {
        if (r.status === 200 && r.data.played) { v.playedBefore = true; throw { already: true }; }
        return bufs;
      });
    }).then(function (bufs) {
      if (v !== view) return;
      setStatus("Playing…");
      playSequence(bufs, GAP_S, function (i, what) {
        if (what === "start") { v.counts[i] += 1; markIntervals(i); setStatus("Sound " + (i + 1)); }
        else { v.full[i] = true; markIntervals(-1); }
      }, function (complete) {
        markIntervals(-1);
        if (complete) {
          v.lastEnded = performance.now();
          setStatus("Which one? Choose 1, 2 or 3.");
          updateButtons();
          // Focus the group, not "Sound 1": Enter must not answer for the listener.
          $("screening-choices").focus();
        } else {
          setUsable(play, true);
        }
      });
    }).catch(function (e) {
      if (e && e.already) { alreadyPlayed(); return; }
      if (e && e.status === 410) { reportClipFault(v.trial); return; }
      setUsable(play, true);
      setStatus("The sounds could not be loaded (" + e.message + "). Try again.", true);
    });
  }

  // Expected main-part length: the server's estimate of what is left (from the procedure's
  // simulated stop rule, given how far each track has come), else the page's estimate.
  function expectedMainTotal(s, n) {
    var left = s.progress.expected_left;
    if (typeof left === "number" && left >= 0) return (n - 1) + Math.max(1, left);
    var about = parseInt(main.dataset.mainEstimate, 10);
    return about > 0 ? Math.max(about, n) : 0;
  }

  // The bar never moves back, and each answer moves it by one step of the current estimate:
  // what is left of the bar divided by the trials expected to be left (the open one included),
  // so a study that ends sooner than expected never leaps from the middle to "done". The
  // server's figure is exact near the end (1 on a trial whose answer can end the session:
  // listening_test/estimates.py, session_remaining), so the last move, to done, is one step.
  function mainProgress(s, unit, n) {
    var total = expectedMainTotal(s, n);
    if (!total) { setProgress(unit + " " + n, 0, 0); return; }
    var key = TOKEN_KEY + ":progress";
    var rec = null;
    try { rec = JSON.parse(storageGet(key) || "null"); } catch (e) { rec = null; }
    if (!rec || typeof rec.n !== "number" || rec.n > n) rec = { n: 1, shown: 0 };
    if (n > rec.n) {
      var left = Math.max(1, total - (n - 1));
      rec = { n: n, shown: rec.shown + (1 - rec.shown) / (left + 1) };
      storageSet(key, JSON.stringify(rec));
    }
    shownFraction = rec.shown;
    var about = Math.max(n, Math.round(total));
    setProgress(unit + " " + n + " of about " + about, Math.round(shownFraction * 1000), 1000);
  }

  function renderMainIntro(s) {
    var unit = AB ? "trials" : "pairs";
    var about = Math.round(expectedMainTotal(s, 1));
    var minutes = parseInt(main.dataset.minutes, 10);
    $("main-intro-length").textContent = about > 1
      ? "The study has about " + about + " " + unit + "; the bar at the top shows how far you are." +
        (minutes > 0 ? " The whole session takes about " + minutes + " minutes." : "")
      : "";
    setProgress(null);
    showScreen("main-intro");
  }

  function renderInstructions(s) {
    setProgress(null);
    $("instructions-full").hidden = !s.settings.require_full_playback;
    $("instructions-continue").textContent = s.settings.practice_trials ? "Start the practice" : "Start";
    showScreen("instructions");
  }

  // The play buttons of the trial screen, matched to the trial's clips by label
  // ("A", "B"; "Reference", "A", "B" for A/B preference): slot i plays clips[i].
  function clipButtons() {
    return Array.prototype.slice.call(document.querySelectorAll("#screen-trial .clip"));
  }

  function slotOfLabel(label) {
    if (!view) return -1;
    for (var i = 0; i < view.trial.clips.length; i++) if (view.trial.clips[i].label === label) return i;
    return -1;
  }

  function buttonForSlot(slot) {
    var label = view && view.trial.clips[slot] ? view.trial.clips[slot].label : null;
    var buttons = clipButtons();
    for (var i = 0; i < buttons.length; i++) if (buttons[i].dataset.label === label) return buttons[i];
    return null;
  }

  function clipName(label) {
    return label === "Reference" ? "The reference" : "Clip " + label;
  }

  // A trial this page cannot show (its test type does not match the page's): reload.
  function trialMismatch(t) {
    if ((t.prompt === "ab_preference") !== AB) return true;
    var labels = clipButtons().map(function (b) { return b.dataset.label; });
    if (t.clips.length !== labels.length) return true;
    return t.clips.some(function (c) { return labels.indexOf(c.label) < 0; });
  }

  function renderTrial(s) {
    var t = s.trial;
    if (trialMismatch(t)) {
      showError("This page does not match the study's current trial. Please reload the page.");
      return;
    }
    var fresh = !view || view.id !== t.id;
    view = newView(s);
    var n = s.progress.in_stage;
    var unit = AB ? "Trial" : "Pair";
    if (s.stage === "practice") {
      var total = s.settings.practice_trials;
      $("trial-phase").textContent = AB ? "Practice trial" : "Practice pair";
      $("trial-number").textContent = n + " of " + total;
      setProgress("Practice " + n + " of " + total, n - 1, total);
    } else {
      $("trial-phase").textContent = unit;
      $("trial-number").textContent = String(n);
      mainProgress(s, unit, n);
    }
    $("feedback").hidden = true;
    $("trial-hint").hidden = false;
    refreshClips();
    var wasTrial = visibleScreen() === "trial";
    showScreen("trial", wasTrial ? buttonForSlot(0) : null);
    if (fresh && wasTrial) {
      setStatus((s.stage === "practice" ? "Practice " + unit.toLowerCase() + " " : unit + " ") + n + ".");
    }
    updateButtons();
    preload(t);
  }

  function clipState(slot) {
    var btn = buttonForSlot(slot);
    if (!btn) return;
    var st = btn.querySelector(".clip-state");
    var isPlaying = playing && playing.slot === slot;
    btn.classList.toggle("playing", !!isPlaying);
    btn.classList.toggle("played", view.full[slot]);
    btn.setAttribute("aria-pressed", isPlaying ? "true" : "false");
    st.textContent = isPlaying ? "playing…" : (view.full[slot] ? "played ✓" : "not played yet");
  }

  function refreshClips() {
    for (var i = 0; i < view.trial.clips.length; i++) clipState(i);
  }

  function playedStatus(clip) {
    var text = clipName(clip.label) + " played.";
    if (canAnswer()) return text + " You can answer now.";
    if (!state.settings.require_full_playback) return text;
    var left = view.trial.clips.filter(function (c, i) { return !view.full[i]; })
      .map(function (c) { return c.label === "Reference" ? "the reference" : c.label; });
    return left.length ? text + " Still to play to the end: " + left.join(", ") + "." : text;
  }

  function playLabel(label) {
    var slot = slotOfLabel(label);
    if (slot >= 0) playClip(slot);
  }

  function playClip(slot) {
    var v = view;
    if (!v || (state.stage !== "practice" && state.stage !== "main")) return;
    // After practice feedback the clips can be replayed, to hear what the answer was about.
    var replay = !!pendingState && state.stage === "practice";
    if ((v.busy && !replay) || (pendingState && !replay)) return;
    var clip = v.trial.clips[slot];
    if (!clip) return;
    var interrupted = playing && typeof playing.slot === "number" && playing.slot !== slot &&
      !v.full[playing.slot] ? v.trial.clips[playing.slot] : null;
    resumeAudio().then(function () { return loadBuffer(clip.url); }).then(function (buf) {
      if (v !== view || (v.busy && !replay)) return;
      if (interrupted) {
        setStatus(clipName(interrupted.label) + " was stopped before its end: play it again to the end " +
                  "before you answer.");
      }
      playSequence([buf], 0, function (i, what) {
        if (what === "start") { clipState(slot); }
      }, function (complete) {
        if (complete) {
          if (replay) { setStatus(clipName(clip.label) + " replayed."); refreshClips(); return; }
          v.full[slot] = true;
          v.lastEnded = performance.now();
          setStatus(playedStatus(clip));
        }
        if (v === view) { refreshClips(); updateButtons(); }
      });
      playing.slot = slot;
      v.counts[slot] += 1;
      refreshClips();
    }).catch(function (e) {
      if (e && e.status === 410) { reportClipFault(v.trial); return; }
      setStatus(clipName(clip.label) + " could not be loaded (" + e.message + "). Try again.", true);
    });
  }

  function feedbackText(feedback) {
    var start = feedback.correct ? "Correct: " : "Not quite: ";
    if (AB) return start + "clip " + feedback.expected + " was closer to the reference.";
    return start + "the two clips were " + (feedback.expected === "same" ? "the same" : "different") + ".";
  }

  function showFeedback(feedback, nextState) {
    pendingState = nextState;
    updateButtons();
    var box = $("feedback");
    box.className = "feedback " + (feedback.correct ? "correct" : "wrong");
    $("feedback-text").textContent = feedbackText(feedback);
    $("trial-hint").hidden = true;
    box.hidden = false;
    setStatus(feedback.correct ? "Correct." : "Not quite.");
    $("feedback-continue").focus();
  }

  function continueAfterFeedback() {
    if (!pendingState) return;
    var next = pendingState;
    pendingState = null;
    render(next);
  }

  // --- completion ------------------------------------------------------------------

  function warnBeforeLeaving(e) {
    if (!state || state.stage === "complete" || state.stage === "screened_out" || state.stage === "consent") return;
    e.preventDefault();
    e.returnValue = "";
  }

  function renderComplete(s) {
    setProgress(null);
    window.removeEventListener("beforeunload", warnBeforeLeaving);
    var c = s.completion || {};
    var out = s.stage === "screened_out";
    $("completion-code").textContent = c.code || "";
    var message = out
      ? "The headphone check suggests that your sound set-up does not suit this study, so it ends here. "
      : "You have finished the study. Your answers are saved. ";
    if (c.mturk) {
      message += out ? "Please submit the HIT with the button below; it is marked as screened out."
                     : "Please submit the HIT with the button below.";
      $("code-label").textContent = "Your completion code:";
    } else if (c.prolific && c.prolific.redirect_url) {
      message += out ? "You are taken back to Prolific with the study's screened-out code, which tells Prolific " +
                       "that you were screened out."
                     : "You are taken back to Prolific with the study's completion code.";
      $("code-label").textContent = out ? "Prolific screened-out code (if the redirect fails, enter it in Prolific):"
                                        : "Prolific completion code (if the redirect fails, enter it in Prolific):";
    } else {
      message += out ? "Keep the code below as a record; you may close this page."
                     : "Keep the code below: it is your proof of taking part.";
      $("code-label").textContent = out ? "Your reference code:" : "Your completion code:";
    }
    $("h-complete").textContent = out ? "Thank you for your time" : "Thank you!";
    $("complete-message").textContent = message;
    var form = $("mturk-form");
    form.hidden = true;
    $("prolific-return").hidden = true;
    if (c.mturk) {
      form.action = c.mturk.action;
      form.method = "post";
      form.querySelectorAll("input[type=hidden]").forEach(function (el) { el.remove(); });
      Object.keys(c.mturk.fields).forEach(function (name) {
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = name;
        input.value = c.mturk.fields[name];
        form.appendChild(input);
      });
      form.hidden = false;
    } else if (c.prolific) {
      if (c.prolific.redirect_url) {
        $("prolific-link").href = c.prolific.redirect_url;
        $("prolific-return").hidden = false;
        setTimeout(function () { location.assign(c.prolific.redirect_url); }, 5000);
      }
      if (c.prolific.completion_code) $("completion-code").textContent = c.prolific.completion_code;
    }
    showScreen("complete");
  }

  // --- events ----------------------------------------------------------------------

  setUsable($("consent-submit"), false);
  $("consent-check").addEventListener("change", function (e) {
    setUsable($("consent-submit"), e.target.checked);
    if (e.target.checked) setStatus("");
  });
  $("consent-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (!$("consent-check").checked) {
      setStatus("Tick the box above to agree before you continue.", true);
      $("consent-check").focus();
      return;
    }
    try { resumeAudio(); } catch (err) { setStatus(err.message, true); }
    post("/api/session/consent", { consent: true });
  });
  $("instructions-continue").addEventListener("click", function () { post("/api/session/instructions"); });
  $("main-intro-start").addEventListener("click", function () {
    storageSet(TOKEN_KEY + ":main-intro", "1");
    renderTrial(state);
  });
  $("screening-play").addEventListener("click", playScreening);
  clipButtons().forEach(function (btn) {
    btn.addEventListener("click", function () { playLabel(btn.dataset.label); });
  });
  $("feedback-continue").addEventListener("click", continueAfterFeedback);
  document.querySelectorAll(".choice").forEach(function (btn) {
    btn.addEventListener("click", function () { submitAnswer(btn.dataset.answer); });
  });
  $("copy-code").addEventListener("click", function () {
    var code = $("completion-code").textContent;
    var done = function () { setStatus("Code copied."); };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(code).then(done, function () { setStatus("Select the code and copy it."); });
    } else {
      setStatus("Select the code and copy it.");
    }
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    var tag = e.target && e.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    var key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    var screenName = visibleScreen();
    var handled = true;
    if (screenName === "trial") {
      if (pendingState) {
        if (key === "Enter" && tag !== "BUTTON") continueAfterFeedback();
        else if (AB && (key === "r" || key === "0")) playLabel("Reference");
        else if (key === "a" || key === "1") playLabel("A");
        else if (key === "b" || key === "2") playLabel("B");
        else handled = false;
      } else if (AB) {
        if (key === "r" || key === "0") playLabel("Reference");
        else if (key === "a" || key === "1") playLabel("A");
        else if (key === "b" || key === "2") playLabel("B");
        else if (key === "ArrowLeft" || key === "j") submitAnswer("A");
        else if (key === "ArrowRight" || key === "k") submitAnswer("B");
        else handled = false;
      } else if (key === "a" || key === "1") playLabel("A");
      else if (key === "b" || key === "2") playLabel("B");
      else if (key === "s") submitAnswer("same");
      else if (key === "d") submitAnswer("different");
      else handled = false;
    } else if (screenName === "screening") {
      if (key === "p") playScreening();
      else if (key === "1" || key === "2" || key === "3") submitAnswer(key);
      else handled = false;
    } else {
      handled = false;
    }
    if (handled) e.preventDefault();
  });
  window.addEventListener("blur", function () { focusLost += 1; });
  // Back or closing the tab in the middle of the study asks first (answers so far are kept).
  window.addEventListener("beforeunload", warnBeforeLeaving);

  land();
})();
