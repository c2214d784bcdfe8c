// The graphical console: noVNC on a websocket to the console proxy, scaled to the window.
import { closeText, offerReconnect, onReconnect, openingUrl, screen, setStatus, showTools }
  from "./common.js";

const cadButton = document.getElementById("console-cad");
let rfb = null;

async function connect() {
  const url = await openingUrl();
  if (!url) return;
  const { default: RFB } = await import(screen.dataset.rfb);
  // Our own socket, so the proxy's reason for closing it can be shown.
  const socket = new WebSocket(url, ["binary"]);
  let closed = null;
  socket.addEventListener("close", (event) => { closed = event; });
  rfb = new RFB(screen, socket);
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    setStatus("connected", "Connected");
    cadButton.disabled = false;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", () => {
    cadButton.disabled = true;
    rfb = null;
    // The socket's close event may come just after noVNC's.
    setTimeout(() => {
      const text = closed ? closeText(closed) : "The console closed.";
      setStatus(closed && closed.code === 4005 ? "closed" : "error", text);
      offerReconnect();
    }, 50);
  });
}

cadButton.addEventListener("click", () => {
  if (rfb) {
    rfb.sendCtrlAltDel();
    rfb.focus();
  }
});
showTools();
onReconnect(connect);
connect();
