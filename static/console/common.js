// Shared by the console pages: ask the portal for a single-use token, show the state.
export const screen = document.getElementById("console-screen");
const statusBadge = document.getElementById("console-status");
const reconnectButton = document.getElementById("console-reconnect");
const fullscreenButton = document.getElementById("console-fullscreen");

const BADGES = {
  connecting: "text-bg-secondary",
  connected: "text-bg-success",
  closed: "text-bg-warning",
  error: "text-bg-danger",
};

export function setStatus(state, text) {
  statusBadge.dataset.state = state;
  statusBadge.textContent = text;
  statusBadge.className = `badge ${BADGES[state]}`;
  statusBadge.hidden = false;
}

// The proxy explains a refusal in the close frame; say it in the page.
export function closeText(event) {
  if (event.reason) return event.reason;
  if (event.code === 1006) return "The console proxy cannot be reached.";
  return "The console closed.";
}

// Say the console is connecting and return its websocket URL, or null once the failure is shown.
export async function openingUrl() {
  setStatus("connecting", "Connecting…");
  try {
    return await websocketUrl();
  } catch (error) {
    setStatus("error", error.message);
    offerReconnect();
    return null;
  }
}

export async function websocketUrl() {
  const csrf = document.querySelector("#console-csrf input[name=csrfmiddlewaretoken]").value;
  const response = await fetch(screen.dataset.tokenUrl, {
    method: "POST",
    headers: { "X-CSRFToken": csrf },
    credentials: "same-origin",
  });
  let body = {};
  try {
    body = await response.json();
  } catch {
    // An error page is no JSON; the status says enough.
  }
  if (!response.ok) throw new Error(body.error || `The portal answered ${response.status}.`);
  return body.url;
}

export function onReconnect(connect) {
  reconnectButton.addEventListener("click", () => {
    reconnectButton.hidden = true;
    connect();
  });
}

export function offerReconnect() {
  reconnectButton.hidden = false;
}

// Without JavaScript the page shows only its explanation; with it, the console itself.
export function showTools() {
  document.querySelector(".console-tools-js").hidden = false;
  screen.hidden = false;
  fullscreenButton.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else screen.requestFullscreen().catch(() => {});
  });
}
