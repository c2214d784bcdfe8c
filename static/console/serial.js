// The serial console: xterm.js on a websocket to the console proxy.
import { closeText, offerReconnect, onReconnect, openingUrl, screen, setStatus, showTools }
  from "./common.js";

showTools();
// xterm.js styles its screen with <style> elements it makes itself; the page's
// Content-Security-Policy accepts them only with the page's nonce.
const styleNonce = screen.dataset.styleNonce;
const createElement = document.createElement.bind(document);
document.createElement = (tag, options) => {
  const element = createElement(tag, options);
  if (styleNonce && String(tag).toLowerCase() === "style") element.nonce = styleNonce;
  return element;
};
const [{ Terminal }, { FitAddon }] = await Promise.all([
  import(screen.dataset.xterm),
  import(screen.dataset.fit),
]);
const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000,
  fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace", fontSize: 14 });
const fit = new FitAddon();
term.loadAddon(fit);
term.open(screen);
fit.fit();
new ResizeObserver(() => fit.fit()).observe(screen);

let socket = null;
term.onData((data) => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
});

async function connect() {
  const url = await openingUrl();
  if (!url) return;
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    setStatus("connected", "Connected");
    term.focus();
  });
  socket.addEventListener("message", (event) => {
    term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    setStatus(event.code === 4005 ? "closed" : "error", closeText(event));
    offerReconnect();
  });
}

onReconnect(connect);
connect();
