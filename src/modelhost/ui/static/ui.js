// modelhost UI: small progressive enhancements; every page works without it except the tester
// and the live tail. No framework, no network beyond this server.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

// Forms that change something important ask first, and show that they are working.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (form.method !== "post") return;
  // After the browser has read the form: a disabled button would drop out of its data.
  setTimeout(() => {
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.disabled = true;
      button.dataset.label = button.textContent;
      button.textContent = "Working…";
    }
  }, 0);
  const progress = form.querySelector("#publish-progress");
  if (progress) progress.hidden = false;
});
// Coming back to a page from the history must not leave its buttons disabled.
window.addEventListener("pageshow", () => {
  for (const button of document.querySelectorAll("button[data-label]")) {
    button.disabled = false;
    button.textContent = button.dataset.label;
  }
});

// Copy buttons: the clipboard API where the page is a secure context, else select + copy.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const text = source.textContent;
  let copied = false;
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); copied = true; } catch (_) { copied = false; }
  }
  if (!copied) {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    copied = document.execCommand("copy");
  }
  button.textContent = copied ? "Copied" : "Selected: press Ctrl+C";
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

// Snippet tabs.
for (const tab of document.querySelectorAll("[data-snippet]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("[data-snippet]")) {
      other.setAttribute("aria-selected", String(other === tab));
    }
    for (const panel of document.querySelectorAll("[data-snippet-panel]")) {
      panel.hidden = panel.dataset.snippetPanel !== tab.dataset.snippet;
    }
  });
}

// The tester: calls the model through the session (no token), audited as a test-call.
const send = document.getElementById("tester-send");
if (send) {
  send.addEventListener("click", async () => {
    const status = document.getElementById("tester-status");
    const output = document.getElementById("tester-response");
    const body = document.getElementById("tester-body").value;
    try {
      JSON.parse(body);
    } catch (error) {
      status.className = "bad";
      status.textContent = "The request body is not valid JSON: " + error.message;
      output.textContent = "";
      return;
    }
    const headers = {
      "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf(),
    };
    const tester = document.getElementById("tester");
    const route = document.getElementById("tester-route").value;
    send.disabled = true;
    status.className = "muted";
    status.textContent = "Sending…";
    const started = performance.now();
    const runAsync = document.getElementById("tester-async")?.checked;
    try {
      let url = tester.dataset.url + "?route=" + encodeURIComponent(route);
      if (runAsync) url += "&async=true";
      let response = await fetch(url, { method: "POST", headers, body, credentials: "same-origin" });
      if (runAsync && response.status === 202) {
        // Submitted: ask for it until it has ended, showing its status meanwhile.
        const submitted = await response.json();
        const where = tester.dataset.predictions + "/" + encodeURIComponent(submitted.asyncPredictionId);
        let delay = 250;
        for (;;) {
          status.className = "muted";
          status.textContent = `Prediction ${submitted.asyncPredictionId}: ${submitted.status}…`;
          await new Promise((resolve) => setTimeout(resolve, delay));
          delay = Math.min(delay * 2, 2000);
          response = await fetch(where, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
          const seen = await response.clone().json();
          if (!response.ok || seen.status === "succeeded" || seen.status === "failed") break;
          submitted.status = seen.status;
        }
      }
      const elapsed = performance.now() - started;
      const text = await response.text();
      let shown = text;
      let message = "";
      let failed = false;
      // A prediction's own status, as a synchronous call would have answered (not the poll's).
      let code = `${response.status} ${response.statusText || ""}`;
      try {
        const data = JSON.parse(text);
        shown = JSON.stringify(data, null, 2);
        if (data.status && data.http_status) code = String(data.http_status);
        if (data.status) message = " · prediction " + data.status;
        if (data.status === "failed") failed = true;
        if (data.error) message += " · " + data.error.message;
        else if (data.timing !== undefined) message += ` · server ${data.timing} ms, function ${data.model_time_in_ms} ms`;
      } catch (_) { /* not JSON: show the text as it is */ }
      status.className = response.ok && !failed ? "ok" : "bad";
      status.textContent = `${code} in ${elapsed.toFixed(0)} ms${message}`;
      output.textContent = shown;
    } catch (error) {
      status.className = "bad";
      status.textContent = "The server could not be reached: " + error.message;
    } finally {
      send.disabled = false;
    }
  });
}

// Live tail: ask for the lines written after the last one shown, every two seconds.
const log = document.getElementById("log");
if (log) {
  const follow = document.getElementById("log-follow");
  const state = document.getElementById("log-state");
  const last = () => {
    const lines = log.querySelectorAll("[data-time]");
    return lines.length ? lines[lines.length - 1].dataset.time : "";
  };
  log.scrollTop = log.scrollHeight;
  const poll = async () => {
    if (!follow.checked) { state.textContent = "Live tail paused."; return; }
    const after = last();
    const url = log.dataset.source + (after ? "?after=" + encodeURIComponent(after) : "");
    try {
      const response = await fetch(url, { headers: { "Accept": "application/json" } });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
      for (const line of data.lines) {
        const span = document.createElement("span");
        span.className = "line " + line.stream;
        span.dataset.time = line.time;
        span.textContent = `${line.time} v${line.version} ${line.instance} ${line.text}\n`;
        log.appendChild(span);
      }
      if (data.lines.length) log.scrollTop = log.scrollHeight;
      state.textContent = "Following the log: new lines appear as the instances write them.";
    } catch (error) {
      state.textContent = "The live tail stopped: " + error.message + " Reload the page to retry.";
      return;
    }
    setTimeout(poll, 2000);
  };
  follow.addEventListener("change", () => { if (follow.checked) poll(); });
  setTimeout(poll, 2000);
}

// A version that is building: reload until it is running or failed (build progress).
const version = document.getElementById("version");
if (version && version.dataset.status === "building") {
  const check = async () => {
    const response = await fetch(location.pathname, { headers: { "Accept": "application/json" } });
    if (response.ok) {
      const data = await response.json();
      if (data.version.status !== "building") { location.reload(); return; }
      document.getElementById("build-log").textContent = data.version.build_log;
    }
    setTimeout(check, 1000);
  };
  setTimeout(check, 1000);
}

// A new token's page answers a form: make reloading show the settings, not post it again.
const newToken = document.querySelector(".new-token[data-page]");
if (newToken) history.replaceState(null, "", newToken.dataset.page);
