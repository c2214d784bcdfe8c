// Behaviour the pages declare with data- attributes, so no template carries inline script
// (the Content-Security-Policy refuses it). Delegated from the document, so parts that htmx
// swaps in later behave the same.

// <form data-confirm="question">: ask in a dialog and, once confirmed, post with confirmed=1.
// Without JavaScript the server answers the unconfirmed post with a page asking the same.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (!form) return;
  if (!window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (!form.querySelector('input[name="confirmed"]')) {
    const confirmed = document.createElement("input");
    confirmed.type = "hidden";
    confirmed.name = "confirmed";
    confirmed.value = "1";
    form.append(confirmed);
  }
});

// <div data-page-key="k"> polled by htmx: when the part swapped in carries another key (the
// VM became installed, or was deleted), the rest of the page is out of date: reload it.
document.addEventListener("htmx:afterSwap", (event) => {
  const holder = event.target.closest("[data-page-key]");
  const fresh = holder && holder.querySelector("[data-live-key]");
  if (fresh && fresh.dataset.liveKey !== holder.dataset.pageKey) window.location.reload();
});

// <select data-autosubmit>: submit its form as soon as the choice changes.
document.addEventListener("change", (event) => {
  const select = event.target.closest("select[data-autosubmit]");
  if (select && select.form) select.form.requestSubmit();
});

// <details class="dropdown">: a menu that opens without JavaScript. With it, a tap elsewhere or
// Escape closes the menu, and the arrow keys move between its entries. Bootstrap's own dropdown
// keys expect a data-bs-toggle button, so they are kept from these menus.
document.addEventListener("click", (event) => {
  for (const menu of document.querySelectorAll("details.dropdown[open]")) {
    if (!menu.contains(event.target)) menu.open = false;
  }
});
document.addEventListener("keydown", (event) => {
  const menu = event.target.closest && event.target.closest("details.dropdown[open]");
  if (!menu || !["Escape", "ArrowDown", "ArrowUp"].includes(event.key)) return;
  event.stopPropagation();
  event.preventDefault();
  if (event.key === "Escape") {
    menu.open = false;
    menu.querySelector("summary").focus();
    return;
  }
  const items = [...menu.querySelectorAll(".dropdown-item")];
  const at = items.indexOf(document.activeElement);
  const next = event.key === "ArrowDown" ? Math.min(at + 1, items.length - 1) : Math.max(at - 1, 0);
  if (items[next]) items[next].focus();
}, true);
