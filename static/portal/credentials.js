// Offer SSH keys and a generated password only for templates that take cloud-init.
(function () {
  const select = document.getElementById("id_template");
  const fieldset = document.getElementById("credentials");
  const data = document.getElementById("cloud-init-templates");
  if (!select || !fieldset || !data) return;
  const takes = new Set(JSON.parse(data.textContent).map(String));
  const note = document.getElementById("no-cloud-init");
  function update() {
    const ok = takes.has(select.value);
    // A disabled fieldset's inputs are not submitted, so nothing is asked of such a template.
    fieldset.disabled = !ok;
    if (note) note.classList.toggle("d-none", ok);
  }
  select.addEventListener("change", update);
  update();
})();
