// Behaviour the pages declare with data- attributes, so no template carries inline script
// (the Content-Security-Policy refuses it). Delegated from the document, so parts that htmx
// swaps in later behave the same.

// <form data-confirm="question">: ask before submitting; without JavaScript it submits at once.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// <select data-autosubmit>: submit its form as soon as the choice changes.
document.addEventListener("change", (event) => {
  const select = event.target.closest("select[data-autosubmit]");
  if (select && select.form) select.form.requestSubmit();
});
